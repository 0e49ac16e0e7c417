"""Command line: ``python -m clnet {info,demo,bench,conformance,tune}``."""
from __future__ import annotations

import importlib
import sys
import warnings
from typing import List, Optional

from . import _cli as cli

# name -> module with main(argv); modules load only when asked for
BENCHMARKS = {
    "fnn": "clnet.bench.fnn",
    "pearson": "clnet.bench.pearson",
    "rnn": "clnet.bench.rnn",
    "bptt": "clnet.bench.bptt",
    "paths": "clnet.bench.paths",
    "distributed": "clnet.bench.distributed",
    "ppo": "clnet.bench.ppo",
    "mcl": "clnet.bench.mcl",
}
DEMOS = {
    "population": "clnet.demos.population",
    "memory": "clnet.demos.memory",
    "ppo": "clnet.demos.ppo",
    "curves": "clnet.demos.curves",
}
DEFAULT_DEMO = "population"


def cmd_info(args) -> int:
    import clnet
    print(f"clnet {clnet.__version__}")
    infos = clnet.backends()
    print(f"{'spec':<16} {'status':<10}  description")
    for info in infos:
        print(info)
        if not info.usable and info.fix:
            print(f"{'':<16} fix: {info.fix}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the table above already says why devices were skipped
            chosen = clnet.get_backend()
        print(f"default backend: {chosen.spec} ({chosen.description})")
    except Exception as exc:
        print(f"default backend: none ({exc})")
    for info in infos:
        if info.usable and info.spec.startswith("opencl"):
            tuning = getattr(clnet.get_backend(info.spec), "tuning", None)
            if tuning is not None:
                state = "tuned" if tuning.tuned else "not tuned (declared defaults; python -m clnet tune)"
                print(f"tuning of {info.spec}: {state}; file {tuning.path}")
    for note in clnet.notes():
        print("note: " + note)
    return 0


def _opencl_targets(specs) -> list:
    import clnet
    if specs:
        return [clnet.get_backend(s) for s in specs]
    return [clnet.get_backend(i.spec) for i in clnet.backends() if i.usable and i.spec.startswith("opencl")]


def cmd_tune(args) -> int:
    try:
        targets = _opencl_targets(args.backend)
    except Exception as exc:  # a spec that selects nothing, or a device that cannot run
        print(f"--backend: {exc}", file=sys.stderr)
        return 2
    if not targets:
        print("no usable OpenCL device to tune (python -m clnet info says why)", file=sys.stderr)
        return 2
    untunable = [be.spec for be in targets if not hasattr(be, "tune")]
    if untunable:
        print(f"--backend {untunable[0]!r} has no tunable kernels (only OpenCL devices are tuned)", file=sys.stderr)
        return 2
    budget = args.budget / len(targets)
    for be in targets:
        try:
            be.tune(args.family or None, budget=budget, progress=not args.no_progress)
        except ValueError as exc:
            print(f"tune: {exc}", file=sys.stderr)
            return 2
    return 0


SCALE_NOTE = ("worst error: the largest |backend - float64 reference| over the cases; 'of tolerance': the "
              "largest ratio of an error to the error allowed there (atol + rtol * |reference| + control * "
              "|same computation in NumPy at the backend's precision - reference|, clnet/tolerances.py), "
              "so a check passes at <= 1.00, however large the values compared")


def cmd_conformance(args) -> int:
    from clnet import conformance

    if conformance._HYPOTHESIS_ERROR is not None:
        print(f"the conformance suite needs hypothesis ({conformance._HYPOTHESIS_ERROR}): pip install hypothesis",
              file=sys.stderr)
        return 2
    known = [conformance.API_CHECK] + [c.operation for c in conformance.checks()]
    unknown = [o for o in args.operation or [] if not any(name.startswith(o) for name in known)]
    if unknown:
        print(f"--operation {', '.join(map(repr, unknown))} names no check; valid names (or their start, "
              f"such as 'fnn'): {', '.join(known)}", file=sys.stderr)
        return 2
    for spec in args.backend or []:
        try:
            conformance.usable_backends(spec)
        except Exception as exc:  # a spec that selects nothing, or a device that cannot run
            print(f"--backend {spec!r}: {exc}", file=sys.stderr)
            return 2
    print(SCALE_NOTE)
    results = conformance.run(args.backend or None, max_examples=args.max_examples,
                              operations=args.operation or None, profile=args.profile, sweep=args.sweep)
    failures = [r for r in results if not r.passed and not r.skipped]
    for r in failures:
        print(f"\n--- {r.backend} {r.operation} {r.dtype} failed:\n{r.failure}")
    skipped = [r for r in results if r.skipped]
    passed = len(results) - len(failures) - len(skipped)
    print(f"\n{passed} passed, {len(failures)} failed" + (f", {len(skipped)} skipped" if skipped else ""))
    return 1 if failures or not results else 0


def _run_module(table, name, argv, what) -> int:
    if name not in table:
        print(f"unknown {what} {name!r}; choose from: {', '.join(sorted(table))}", file=sys.stderr)
        return 2
    return int(importlib.import_module(table[name]).main(argv) or 0)


def main(argv: Optional[List[str]] = None) -> int:
    parser = cli.parser("python -m clnet", __doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="list backends and OpenCL devices, usable or not and why")
    p = sub.add_parser("demo", help="run a demo on the default backend (default: %s)" % DEFAULT_DEMO)
    p.add_argument("name", nargs="?", default=DEFAULT_DEMO, choices=sorted(DEMOS),
                   help="options after the name go to the demo (python -m clnet demo NAME --help)")
    p = sub.add_parser("bench", help="benchmarks, printed as ratios against peers")
    p.add_argument("name", choices=sorted(BENCHMARKS),
                   help="options after the name go to the benchmark (python -m clnet bench NAME --help)")
    p = sub.add_parser("conformance", help="check every backend against the float64 reference")
    p.add_argument("--backend", action="append", help="backend spec (repeatable); default: every usable one")
    p.add_argument("--max-examples", type=int, default=None,
                   help="hypothesis examples per check (default: the profile's)")
    p.add_argument("--operation", action="append", help="only operations starting with this (repeatable)")
    p.add_argument("--profile", default=None, choices=["dev", "ci", "thorough"],
                   help="hypothesis profile: dev (few examples), ci (default), thorough (many)")
    p.add_argument("--sweep", action="store_true",
                   help="run each check under every value of every tunable kernel parameter "
                        "(python -m clnet tune may pick any of them), a few examples each")
    p = sub.add_parser("tune", help="measure the kernels' tunable parameters on each OpenCL device and "
                                    "keep the fastest in its tuning cache file")
    p.add_argument("--backend", action="append",
                   help="OpenCL backend spec (repeatable); default: every usable OpenCL device")
    p.add_argument("--family", action="append", choices=["fnn", "rnn", "bptt", "pearson", "transfers"],
                   help="only this family (repeatable; transfers: how small arrays reach the device); "
                        "default: all")
    p.add_argument("--budget", type=float, default=240.0,
                   help="seconds of measuring in all, shared by the devices and families (default: 240)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("demo", "bench"):
        # The named demo or benchmark parses its own options.
        table, what = (DEMOS, "demo") if argv[0] == "demo" else (BENCHMARKS, "benchmark")
        rest = argv[1:]
        if rest and not rest[0].startswith("-"):
            return _run_module(table, rest[0], rest[1:], what)
        if argv[0] == "demo" and not any(a in ("-h", "--help") for a in rest[:1]):
            return _run_module(table, DEFAULT_DEMO, rest, what)
    args = parser.parse_args(argv)
    if args.command == "info":
        return cmd_info(args)
    if args.command == "conformance":
        return cmd_conformance(args)
    if args.command == "tune":
        return cmd_tune(args)
    return _run_module(DEMOS if args.command == "demo" else BENCHMARKS, args.name, [], args.command)


if __name__ == "__main__":
    sys.exit(main())
