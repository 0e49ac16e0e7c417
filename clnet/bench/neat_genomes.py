"""Random neat-python genomes for the FNN benchmark, demo and tests (needs neat-python).

Genomes are grown with neat-python's own mutation operators from a config written
on the fly, so they have the shapes evolution really produces: skip connections,
disabled links, dangling nodes and mixed activations.
"""
from __future__ import annotations

import os
import random
import tempfile
from typing import List, Optional, Sequence, Tuple

_TEMPLATE = """
[NEAT]
fitness_criterion     = max
fitness_threshold     = 1e9
pop_size              = 10
reset_on_extinction   = False
no_fitness_termination = True

[DefaultGenome]
activation_default      = random
activation_mutate_rate  = 0.3
activation_options      = {acts}
aggregation_default     = random
aggregation_mutate_rate = 0.3
aggregation_options     = {aggs}
bias_init_mean          = 0.0
bias_init_stdev         = 1.0
bias_max_value          = 30.0
bias_min_value          = -30.0
bias_mutate_power       = 0.5
bias_mutate_rate        = 0.7
bias_replace_rate       = 0.1
compatibility_disjoint_coefficient = 1.0
compatibility_weight_coefficient   = 0.5
conn_add_prob           = 0.6
conn_delete_prob        = 0.1
enabled_default         = True
enabled_mutate_rate     = 0.05
feed_forward            = True
initial_connection      = {initial}
node_add_prob           = 0.5
node_delete_prob        = 0.05
num_hidden              = {hidden}
num_inputs              = {n_in}
num_outputs             = {n_out}
response_init_mean      = 1.0
response_init_stdev     = 0.3
response_max_value      = 30.0
response_min_value      = -30.0
response_mutate_power   = 0.3
response_mutate_rate    = 0.3
response_replace_rate   = 0.1
weight_init_mean        = 0.0
weight_init_stdev       = 1.0
weight_max_value        = 30
weight_min_value        = -30
weight_mutate_power     = 0.5
weight_mutate_rate      = 0.8
weight_replace_rate     = 0.1

[DefaultSpeciesSet]
compatibility_threshold = 3.0

[DefaultStagnation]
species_fitness_func = max
max_stagnation       = 20
species_elitism      = 2

[DefaultReproduction]
elitism            = 2
survival_threshold = 0.2
"""


def make_config(n_inputs: int, n_outputs: int, *, hidden: int = 0,
                activations: Optional[Sequence[str]] = None,
                aggregations: Optional[Sequence[str]] = None,
                initial: str = "full_direct"):
    """A neat-python Config with the given activation and aggregation options."""
    import neat
    from neat.innovation import InnovationTracker

    acts = activations or list(neat.activations.ActivationFunctionSet().functions)
    aggs = aggregations or list(neat.aggregations.AggregationFunctionSet().functions)
    text = _TEMPLATE.format(acts=" ".join(acts), aggs=" ".join(aggs), hidden=hidden,
                            n_in=n_inputs, n_out=n_outputs, initial=initial)
    fd, path = tempfile.mkstemp(suffix=".ini", prefix="clnet-neat-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        config = neat.Config(neat.DefaultGenome, neat.DefaultReproduction,
                             neat.DefaultSpeciesSet, neat.DefaultStagnation, path)
    finally:
        os.unlink(path)
    config.genome_config.innovation_tracker = InnovationTracker()
    return config


def grow_genome(config, key: int, mutations: int, seed: int):
    """A genome grown by ``mutations`` rounds of neat-python's own mutation operators."""
    import neat

    state = random.getstate()
    random.seed(seed)
    try:
        genome = neat.DefaultGenome(key)
        genome.configure_new(config.genome_config)
        for _ in range(mutations):
            genome.mutate(config.genome_config)
    finally:
        random.setstate(state)
    return genome


def grown_population(size: int, *, activations: Optional[Sequence[str]] = None,
                     aggregations: Optional[Sequence[str]] = None, n_inputs: int = 8, n_outputs: int = 2,
                     node_range: Tuple[int, int] = (20, 30), seed: int = 0):
    """(config, genomes): ``size`` genomes grown by neat-python's mutations, each with
    ``node_range`` nodes in all (inputs included), their functions drawn from ``activations``
    and ``aggregations`` (None: every function neat-python has)."""
    config = make_config(n_inputs, n_outputs, hidden=0, initial="partial_direct 0.5",
                         activations=activations, aggregations=aggregations)
    genomes: List = []
    rng = random.Random(seed)
    key = 0
    while len(genomes) < size:
        key += 1
        g = grow_genome(config, key, mutations=rng.randint(15, 40), seed=rng.randrange(2**31))
        total = len(g.nodes) + n_inputs
        if node_range[0] <= total <= node_range[1]:
            genomes.append(g)
    return config, genomes


def benchmark_population(size: int = 150, n_inputs: int = 8, n_outputs: int = 2,
                         node_range: Tuple[int, int] = (20, 30), seed: int = 0):
    """(config, genomes) of NEAT-style networks with ``node_range`` nodes in all (inputs included)."""
    # Mixed activations and neat-python's default aggregation (sum), as evolved populations have
    # (the tuner's FNN workload).
    return grown_population(size, aggregations=["sum"], n_inputs=n_inputs, n_outputs=n_outputs,
                            node_range=node_range, seed=seed)


def default_population(size: int = 150, seed: int = 0):
    """Genomes with neat-python's default functions, sum aggregation and sigmoid activation."""
    return grown_population(size, activations=["sigmoid"], aggregations=["sum"], seed=seed)


def every_function_population(size: int = 150, seed: int = 0):
    """Genomes drawing on every aggregation (median included) and activation of neat-python."""
    return grown_population(size, seed=seed)
