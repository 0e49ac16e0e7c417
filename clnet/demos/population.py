"""``python -m clnet demo``: the main job on the default backend.

Builds a population of evolved-looking networks (different topologies, skip
connections, disabled links, mixed activations), evaluates all of them on one batch
of inputs in one launch on the default backend, checks the result against the NumPy
reference in float64, and prints the speed-up over the NumPy fallback.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from .. import _cli as cli


def main(argv=None) -> int:
    parser = cli.parser("python -m clnet demo", __doc__)
    parser.add_argument("--networks", type=int, default=500, help="networks in the population (default 500)")
    parser.add_argument("--inputs", type=int, default=2000, help="input samples per network")
    parser.add_argument("--backend", default=None, help="backend spec (default: automatic selection)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random networks and inputs (default 0)")
    args = parser.parse_args(argv)

    import clnet
    from clnet.genomes import random_genome

    backend = clnet.get_backend(args.backend)
    print(f"backend: {backend.spec} ({backend.description})")
    rng = np.random.default_rng(args.seed)
    mild = ["identity", "relu", "sigmoid", "tanh", "clamped", "neat.sigmoid", "neat.tanh", "gauss", "sin", "abs"]
    nets = []
    for _ in range(args.networks):
        hidden = int(rng.integers(5, 20))
        nodes, conns = random_genome(8, 2, hidden, int(rng.integers(3 * hidden, 5 * hidden)), rng,
                                     activations=mild, aggregations=["sum"])
        nets.append(clnet.FNN.from_graph(8, 2, nodes, conns))
    pop = clnet.FNNPopulation(nets)
    x = rng.uniform(-1, 1, size=(args.inputs, 8))
    print(f"population: {len(pop)} networks, {pop.num_nodes} nodes, {pop.num_connections} connections "
          f"in all; {args.inputs} inputs each")

    out = pop(x, backend=backend)  # first call compiles the kernel (cached afterwards)

    def best_of_3(fn):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        return min(times), result

    t_backend, out = best_of_3(lambda: pop(x, backend=backend))
    t_ref, ref = best_of_3(lambda: pop(x, backend="numpy", dtype="float64"))
    t_numpy, _ = best_of_3(lambda: pop(x, backend="numpy"))

    err = float(np.max(np.abs(out - ref)))
    ok = np.allclose(out, ref, rtol=1e-4, atol=1e-4)
    print(f"outputs: shape {out.shape}, max |{backend.spec} - float64 reference| = {err:.2e} "
          f"-> {'matches' if ok else 'DOES NOT MATCH'}")
    rate = pop.num_connections * args.inputs / t_backend
    print(f"{backend.spec}: {t_backend * 1e3:.1f} ms ({rate / 1e9:.2f} G connection evaluations/s); "
          f"NumPy fallback float32: {t_numpy * 1e3:.1f} ms (float64 reference: {t_ref * 1e3:.1f} ms)")
    print(f"speed-up over the NumPy fallback: {t_numpy / t_backend:.1f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
