"""``python -m clnet bench fnn``: a NEAT-style population on every backend and neat-python.

150 networks (8 inputs, 2 outputs, 20 to 30 nodes with the inputs, skip connections,
mixed activations and aggregations, grown by neat-python's own mutation operators),
each evaluated on the same 1,000 inputs. Figures are connection evaluations per second
(evaluated connections x inputs / seconds) and ratios, all measured in this run.

Then neat-python's XOR task evolved end to end with each evaluator (clnet/bench/neat_xor.py):
targets, clnet no slower than neat-python's own networks with the 4 XOR inputs, and at least
10x faster when each genome is evaluated on 1,000 inputs.
"""
from __future__ import annotations

import sys

import numpy as np

from .. import _cli as cli
from . import best_time


def main(argv=None) -> int:
    parser = cli.parser("python -m clnet bench fnn", __doc__)
    parser.add_argument("--networks", type=int, default=150, help="networks in the population (default 150)")
    parser.add_argument("--inputs", type=int, default=1000, help="input samples per network")
    parser.add_argument("--backend", action="append", help="backend spec(s); default: numpy and every usable OpenCL device")
    parser.add_argument("--repeat", type=int, default=5, help="timings per figure; the best is kept (default 5)")
    parser.add_argument("--xor-generations", type=int, default=100,
                        help="generations of the neat-python XOR case, evolved with each evaluator "
                             "(default 100; 0 skips it)")
    parser.add_argument("--xor-backend", default=None,
                        help="backend of the XOR case's clnet evaluator (default: automatic selection)")
    args = parser.parse_args(argv)

    import clnet

    try:
        import neat
        from .neat_genomes import benchmark_population
    except ImportError:
        print("neat-python is not installed (pip install neat-python): it is needed to grow the "
              "benchmark genomes and as the peer", file=sys.stderr)
        return 2

    config, genomes = benchmark_population(args.networks)
    nets = [clnet.FNN.from_neat(g, config) for g in genomes]
    pop = clnet.FNNPopulation(nets)
    conns = pop.num_connections
    x = np.random.default_rng(1).uniform(-1, 1, size=(args.inputs, 8))
    work = conns * args.inputs
    print(f"population: {len(pop)} networks, {pop.num_nodes} evaluated nodes, {conns} evaluated connections "
          f"({conns / len(pop):.1f} per network); {args.inputs} inputs each -> {work / 1e6:.2f} M connection evaluations")

    specs = args.backend or [i.spec for i in clnet.backends() if i.usable and i.spec.startswith("opencl")] + ["numpy"]
    rates = {}
    for spec in specs:
        be = clnet.get_backend(spec)
        t = best_time(lambda: pop(x, backend=be), repeat=args.repeat)
        rates[spec] = work / t
        print(f"{spec:<14} {t * 1e3:9.2f} ms   {work / t / 1e9:7.3f} G connection evaluations/s   ({be.description})")

    neat_nets = [neat.nn.FeedForwardNetwork.create(g, config) for g in genomes]
    neat_conns = sum(len(links) for net in neat_nets for *_, links in net.node_evals)
    rows = [list(r) for r in x]

    def run_neat():
        for net in neat_nets:
            for r in rows:
                net.activate(r)

    t = best_time(run_neat, repeat=1)
    rates["neat-python"] = neat_conns * args.inputs / t
    print(f"{'neat-python':<14} {t * 1e3:9.2f} ms   {rates['neat-python'] / 1e9:7.3f} G connection evaluations/s   "
          f"(pure Python, one network and one input at a time; {neat_conns} connections)")

    print("\nratios (higher is faster):")
    for spec in specs:
        if spec.startswith("opencl"):
            print(f"  {spec} / neat-python : {rates[spec] / rates['neat-python']:8.1f}x   (target >= 200x)")
            if "numpy" in rates:
                print(f"  {spec} / numpy       : {rates[spec] / rates['numpy']:8.1f}x   (target >= 5x)")
            print(f"  {spec} rate          : {rates[spec] / 1e9:8.2f} G/s  (target >= 1 G/s)")
    if "numpy" in rates:
        print(f"  numpy / neat-python      : {rates['numpy'] / rates['neat-python']:8.1f}x")
    if args.xor_generations > 0:
        from .neat_xor import run as run_xor

        run_xor(args.xor_generations, backend=args.xor_backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
