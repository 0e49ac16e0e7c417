"""Random evolved-looking network topologies, for demos, benchmarks and property tests.

A random topological order of the nodes makes every connection acyclic; sources are
drawn from the input pins and every node earlier in that order, so the networks have
skip connections, disabled links, dangling nodes and mixed activations, as NEAT
genomes do.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

from .functions import ACTIVATIONS, AGGREGATIONS


def random_genome(n_inputs: int, n_outputs: int, n_hidden: int, n_connections: int, rng,
                  *, activations: Sequence[str] = ACTIVATIONS, aggregations: Sequence[str] = AGGREGATIONS,
                  weight_scale: float = 1.0, disabled_fraction: float = 0.15) -> Tuple[List[dict], List[tuple]]:
    """(nodes, connections) for :meth:`clnet.FNN.from_graph`."""
    keys = list(range(n_outputs)) + [n_outputs + 3 * i + 2 for i in range(n_hidden)]  # sparse hidden keys
    order = [int(k) for k in rng.permutation(keys)]
    nodes = [dict(key=int(k), bias=float(rng.normal(0, 0.5)),
                  response=float(rng.choice([1.0, rng.normal(1, 0.5)])),
                  activation=str(rng.choice(list(activations))),
                  aggregation=str(rng.choice(list(aggregations))))
             for k in keys]
    sources = [-(i + 1) for i in range(n_inputs)]
    conns = []
    for _ in range(n_connections):
        j = int(rng.integers(0, len(order)))
        pool = sources + order[:j]
        src = pool[int(rng.integers(0, len(pool)))]
        conns.append((int(src), order[j], float(rng.normal(0, weight_scale)),
                      bool(rng.random() >= disabled_fraction)))
    return nodes, conns
