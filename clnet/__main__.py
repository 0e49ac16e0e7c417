"""Command line: ``python -m clnet {info,demo,bench,conformance}``."""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import List, Optional

# name -> module with main(argv); modules load only when asked for
BENCHMARKS = {
    "fnn": "clnet.bench.fnn",
    "pearson": "clnet.bench.pearson",
    "rnn": "clnet.bench.rnn",
    "bptt": "clnet.bench.bptt",
    "mcl": "clnet.bench.mcl",
}
DEMOS = {
    "population": "clnet.demos.population",
    "memory": "clnet.demos.memory",
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
    for note in clnet.notes():
        print("note: " + note)
    return 0


def cmd_conformance(args) -> int:
    from clnet import conformance

    results = conformance.run(args.backend or None, max_examples=args.max_examples,
                              operations=args.operation or None, profile=args.profile)
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
    parser = argparse.ArgumentParser(prog="python -m clnet", description=__doc__)
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
    p.add_argument("--max-examples", type=int, default=None, help="hypothesis examples per check")
    p.add_argument("--operation", action="append", help="only operations starting with this (repeatable)")
    p.add_argument("--profile", default=None, choices=["dev", "ci", "thorough"],
                   help="hypothesis profile (default: ci)")
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
    return _run_module(DEMOS if args.command == "demo" else BENCHMARKS, args.name, [], args.command)


if __name__ == "__main__":
    sys.exit(main())
