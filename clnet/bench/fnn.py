"""``python -m clnet bench fnn``: NEAT populations on every OpenCL device against neat-python
and clnet's NumPy fallback.

Case 1: 150 networks grown by neat-python's own mutation operators with neat-python's
default functions (sum aggregation, sigmoid activation), 8 inputs, 2 outputs, 20 to 30
nodes with the inputs, skip connections. Targets: at least 1000x neat-python, at least 10x
the NumPy fallback and at least 1 G connection evaluations/s.

Case 2: the same kind of population with every aggregation (median included) and every
activation neat-python has. Target: at least 300x neat-python.

Each case sweeps the number of input samples per network (default 250, 1000, 2999); a target
holds only if it holds at every one. Each device is measured untuned (its declared default
parameters) and tuned (its tuning file, written by python -m clnet tune). Figures are
connection evaluations per second (evaluated connections x inputs / seconds). neat-python
evaluates one network and one input at a time, so its time per input does not depend on the
batch: it is timed on the first --neat-inputs inputs of each shape and scaled to the whole batch.

Case 3: neat-python's XOR task evolved end to end with each evaluator (clnet/bench/neat_xor.py).
Targets: clnet no slower than neat-python's own networks with the 4 XOR inputs, and at least
10x faster when each genome is evaluated on 1,000 inputs.

``--median 1000 10000 100000``: instead, one node aggregating that many inputs by median,
64 samples, on every backend (the kernel's median is O(fan-in x bits) per node).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np

from .. import _cli as cli
from . import Roofs, Target, add_device_options, best_time, compare, device_rows, devices, header, summarise

INPUTS = (250, 1000, 2999)      # 1000 is the headline shape
QUICK_INPUTS = (20, 50, 77)
N_INPUTS = 8                    # inputs of every network (neat_genomes' default)


@dataclass
class Context:
    """What every case gets: the devices, the options and the machine's roofs."""

    devs: list
    networks: int
    inputs: Sequence[int]
    neat_inputs: int
    repeat: int
    roofs: Roofs
    echo: Callable[[str], None] = print
    xor_generations: int = 100
    xor_backend: Optional[str] = None
    quick: bool = False


def measure_population(ctx: Context, config, genomes, targets: List[Target]) -> None:
    """One population at every shape of the sweep; ``targets`` are filled in by label:
    "neat" (x neat-python), "numpy" (x the fallback), "rate" (G connection evaluations/s)."""
    import neat

    import clnet

    echo = ctx.echo
    pop = clnet.FNNPopulation([clnet.FNN.from_neat(g, config) for g in genomes])
    conns = pop.num_connections
    neat_nets = [neat.nn.FeedForwardNetwork.create(g, config) for g in genomes]
    neat_conns = sum(len(links) for net in neat_nets for *_, links in net.node_evals)
    echo(f"  population: {len(pop)} networks, {pop.num_nodes} evaluated nodes, {conns} evaluated connections "
         f"({conns / len(pop):.1f} per network; neat-python evaluates {neat_conns})")
    rng = np.random.default_rng(1)
    for si, batch in enumerate(ctx.inputs):
        shape = {"networks": len(pop), "inputs": batch}
        x = rng.uniform(-1, 1, size=(batch, N_INPUTS))
        work = conns * batch
        neat_rows = [list(r) for r in x[:min(batch, ctx.neat_inputs)]]

        def run_neat():
            for net in neat_nets:
                for r in neat_rows:
                    net.activate(r)

        peers = {"neat-python": run_neat, "numpy fallback": lambda: pop(x, backend="numpy")}
        peer_t, dev_t = compare(ctx.devs, peers, lambda d: (lambda: pop(x, backend=d.backend)), ctx.repeat)
        t_neat = peer_t["neat-python"] * batch / len(neat_rows)   # scaled to the whole batch
        t_np = peer_t["numpy fallback"]
        echo(f"  -- shape {si + 1}/{len(ctx.inputs)}: {len(pop)} networks x {batch} inputs "
             f"({work / 1e6:.2f} M connection evaluations)")
        echo(f"     {'neat-python (' + str(len(neat_rows)) + ' inputs timed, scaled)':<58} {t_neat * 1e3:10.2f} ms "
             f"{neat_conns * batch / t_neat / 1e9:8.4f} G conn/s")
        echo(f"     {'numpy fallback':<58} {t_np * 1e3:10.2f} ms {work / t_np / 1e9:8.4f} G conn/s")
        device_rows(ctx.devs, dev_t, lambda t: f"{t * 1e3:10.2f} ms {work / t / 1e9:8.4f} G conn/s "
                    f"{t_neat / t:9.1f}x neat-python {t_np / t:7.1f}x numpy fallback", echo=echo, width=58)
        for d in ctx.devs:
            tu, tt = dev_t[d.spec]["untuned"], dev_t[d.spec]["tuned"]
            # Two flops (a multiply and an add) and one float32 read per connection evaluation.
            roof = (ctx.roofs.flops(2 * work / tt / 1e9) + " (2 flops per connection evaluation); "
                    + ctx.roofs.bytes(4 * work / tt / 1e9, "one float32 read per connection evaluation"))
            for t in targets:
                kind = t.key
                value = {"neat": lambda s: t_neat / s, "numpy": lambda s: t_np / s,
                         "rate": lambda s: work / s / 1e9}[kind]
                t.add(d.spec, shape, value(tt), value(tu), roof)


def _target(key: str, label: str, threshold: float, unit: str = "x") -> Target:
    return Target(label, threshold, unit, key=key)


def case_default_population(ctx: Context) -> None:
    from .neat_genomes import default_population

    ctx.echo("\n== case 1: population grown with neat-python's default functions (sum aggregation, sigmoid)")
    config, genomes = default_population(ctx.networks)
    targets = [_target("neat", ">= 1000x neat-python", 1000), _target("numpy", ">= 10x the NumPy fallback", 10),
               _target("rate", ">= 1 G connection evaluations/s", 1.0, "G/s")]
    measure_population(ctx, config, genomes, targets)
    summarise(targets, ctx.devs, ctx.echo)


def case_every_function(ctx: Context) -> None:
    from .neat_genomes import every_function_population

    ctx.echo("\n== case 2: population using every aggregation (median included) and activation of neat-python")
    config, genomes = every_function_population(ctx.networks)
    targets = [_target("neat", ">= 300x neat-python", 300)]
    measure_population(ctx, config, genomes, targets)
    summarise(targets, ctx.devs, ctx.echo)


def case_xor(ctx: Context) -> None:
    if ctx.xor_generations <= 0:
        return
    from .neat_xor import run as run_xor

    run_xor(ctx.xor_generations, backend=ctx.xor_backend, echo=ctx.echo,
            sizes=(4, 100) if ctx.quick else (4, 1000))


CASES = (case_default_population, case_every_function, case_xor)


def _sizes(text: str) -> List[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return sizes


def main(argv=None) -> int:
    parser = cli.parser("python -m clnet bench fnn", __doc__)
    parser.add_argument("--networks", type=int, default=None, help="networks per population (default 150; --quick 20)")
    parser.add_argument("--inputs", type=_sizes, default=None,
                        help="input samples per network, one shape per value, comma-separated "
                             f"(default {','.join(map(str, INPUTS))}; --quick {','.join(map(str, QUICK_INPUTS))})")
    parser.add_argument("--neat-inputs", type=int, default=100,
                        help="inputs of each shape timed on neat-python (its time is per input; default 100)")
    parser.add_argument("--xor-generations", type=int, default=100,
                        help="generations of the neat-python XOR case, evolved with each evaluator "
                             "(default 100; 0 skips it)")
    parser.add_argument("--xor-backend", default=None,
                        help="backend of the XOR case's clnet evaluator (default: automatic selection)")
    parser.add_argument("--median", type=int, nargs="+", metavar="FAN_IN",
                        help="time one median node of each fan-in instead of the populations")
    add_device_options(parser, 5, "small populations and batches (for tests; the figures mean little)")
    args = parser.parse_args(argv)
    if args.median:
        return median_bench(args)
    if args.networks is not None and args.networks < 1:
        parser.error(f"--networks must be at least 1, got {args.networks}")
    if args.neat_inputs < 1 or args.repeat < 1:
        parser.error("--neat-inputs and --repeat must be at least 1")
    try:
        import neat  # noqa: F401
    except ImportError:
        print("neat-python is not installed (pip install neat-python): it is needed to grow the "
              "benchmark genomes and as the peer", file=sys.stderr)
        return 2
    devs = devices(args.backend)
    header("bench fnn", devs)
    ctx = Context(devs, args.networks or (20 if args.quick else 150),
                  args.inputs or (QUICK_INPUTS if args.quick else INPUTS),
                  min(args.neat_inputs, 10) if args.quick else args.neat_inputs,
                  args.repeat, Roofs(args.quick), xor_generations=args.xor_generations,
                  xor_backend=args.xor_backend, quick=args.quick)
    for case in CASES:
        case(ctx)
    return 0


def median_bench(args) -> int:
    """One node aggregating ``fan_in`` inputs by median, 64 samples, per backend."""
    import clnet

    specs = args.backend or [i.spec for i in clnet.backends() if i.usable and i.spec.startswith("opencl")] + ["numpy"]
    rng = np.random.default_rng(0)
    for fan_in in args.median:
        conns = [(-(i + 1), 0, float(w), True) for i, w in enumerate(rng.normal(size=fan_in))]
        net = clnet.FNN.from_graph(fan_in, 1, [(0, 0.0, 1.0, "identity", "median")], conns)
        x = rng.normal(size=(64, fan_in))
        times = {}
        for spec in specs:
            be = clnet.get_backend(spec)
            net(x[:1], backend=be)  # build and upload outside the timing
            times[spec] = best_time(lambda: net(x, backend=be), repeat=max(1, min(args.repeat, 3)))
        line = ", ".join(f"{spec} {t * 1e3:.1f} ms" for spec, t in times.items())
        ratios = ", ".join(f"{spec} {times['numpy'] / t:.1f}x numpy" for spec, t in times.items()
                           if spec != "numpy" and "numpy" in times)
        print(f"median, fan-in {fan_in:>7,}, 64 samples: {line}" + (f"  ({ratios})" if ratios else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
