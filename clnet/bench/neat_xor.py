"""neat-python's XOR task evolved with each evaluator, end to end (a case of ``bench fnn``).

A population of 150 genomes (2 inputs, 1 sigmoid output, neat-python's XOR settings) is
evolved for a fixed number of generations by ``neat.Population.run`` twice, from the same
random seed: once evaluating every genome with ``neat.nn.FeedForwardNetwork`` (neat-python's
own way), once with ``clnet.FNNPopulation.from_neat`` and one call for the whole
population, in float64 as neat-python computes, so that both runs evolve the same genomes
(the best fitness printed for each shows it). Each genome is evaluated on the 4 XOR inputs,
then, in a second pair of runs, on 1,000 inputs (noisy XOR). The times include neat-python's
reproduction and speciation, the same work in both runs; the evaluation's own share is
printed too.
"""
from __future__ import annotations

import os
import random
import tempfile
import time

import numpy as np

# neat-python's XOR settings (its examples/xor configuration), with fitness termination off
# so that every run lasts the same number of generations.
_XOR_CONFIG = """
[NEAT]
fitness_criterion     = max
fitness_threshold     = 1e9
no_fitness_termination = True
pop_size              = 150
reset_on_extinction   = False

[DefaultGenome]
activation_default      = sigmoid
activation_mutate_rate  = 0.0
activation_options      = sigmoid
aggregation_default     = sum
aggregation_mutate_rate = 0.0
aggregation_options     = sum
bias_init_mean          = 0.0
bias_init_stdev         = 1.0
bias_max_value          = 30.0
bias_min_value          = -30.0
bias_mutate_power       = 0.5
bias_mutate_rate        = 0.7
bias_replace_rate       = 0.1
compatibility_disjoint_coefficient = 1.0
compatibility_weight_coefficient   = 0.5
conn_add_prob           = 0.5
conn_delete_prob        = 0.5
enabled_default         = True
enabled_mutate_rate     = 0.01
feed_forward            = True
initial_connection      = full
node_add_prob           = 0.2
node_delete_prob        = 0.2
num_hidden              = 0
num_inputs              = 2
num_outputs             = 1
response_init_mean      = 1.0
response_init_stdev     = 0.0
response_max_value      = 30.0
response_min_value      = -30.0
response_mutate_power   = 0.0
response_mutate_rate    = 0.0
response_replace_rate   = 0.0
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

XOR_INPUTS = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_OUTPUTS = np.array([0.0, 1.0, 1.0, 0.0])


def xor_config():
    import neat

    fd, path = tempfile.mkstemp(suffix=".ini", prefix="clnet-xor-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(_XOR_CONFIG)
        return neat.Config(neat.DefaultGenome, neat.DefaultReproduction, neat.DefaultSpeciesSet,
                           neat.DefaultStagnation, path)
    finally:
        os.unlink(path)


def task(n_inputs: int, seed: int = 0):
    """(inputs, targets): the 4 XOR cases, or ``n_inputs`` noisy ones (XOR of x > 0.5)."""
    if n_inputs == 4:
        return XOR_INPUTS, XOR_OUTPUTS
    x = np.random.default_rng(seed).uniform(0, 1, size=(n_inputs, 2))
    return x, np.logical_xor(x[:, 0] > 0.5, x[:, 1] > 0.5).astype(np.float64)


def neat_evaluator(x, y, clock):
    """neat-python's own evaluation: one network object per genome, one input at a time."""
    import neat

    # Python floats, as neat-python's own example has: a NumPy scalar fitness would slow
    # neat-python's reproduction (its arithmetic on fitness) in this run only.
    rows = x.tolist()
    targets = y.tolist()
    n = len(rows)

    def eval_genomes(genomes, config):
        t0 = time.perf_counter()
        for _, genome in genomes:
            net = neat.nn.FeedForwardNetwork.create(genome, config)
            err = 0.0
            for r, t in zip(rows, targets):
                err += (net.activate(r)[0] - t) ** 2
            genome.fitness = 4.0 - 4.0 * err / n
        clock[0] += time.perf_counter() - t0

    return eval_genomes


def clnet_evaluator(x, y, backend, clock):
    """The whole generation in one clnet call: pack the genomes, evaluate, score with NumPy."""
    import clnet

    def eval_genomes(genomes, config):
        t0 = time.perf_counter()
        pop = clnet.FNNPopulation.from_neat(genomes, config)
        # float64, as neat-python computes: both evaluators then give the same fitness, so
        # both runs evolve the same genomes and the times compare the same work.
        out = pop(x, backend=backend, dtype=np.float64)[:, :, 0]  # (P, B)
        fitness = 4.0 - 4.0 * np.mean((out - y) ** 2, axis=1)
        for (_, genome), f in zip(genomes, fitness.tolist()):
            genome.fitness = f
        clock[0] += time.perf_counter() - t0

    return eval_genomes


def evolve(evaluator_factory, generations: int, seed: int):
    """Seconds for ``generations`` generations end to end, seconds inside the evaluator,
    and the best fitness. A fresh config each time: neat-python's config carries counters
    (new node keys, innovation numbers) from one population to the next."""
    import neat

    config = xor_config()
    random.seed(seed)
    population = neat.Population(config)
    clock = [0.0]
    evaluate = evaluator_factory(clock)
    t0 = time.perf_counter()
    best = population.run(evaluate, generations)
    return time.perf_counter() - t0, clock[0], best.fitness


def run(generations: int = 100, backend=None, sizes=(4, 1000), seed: int = 1, echo=print) -> dict:
    """Both evaluators on each input size; returns {size: {name: (total_s, eval_s, best)}}."""
    import neat

    import clnet

    config = xor_config()
    be = clnet.get_backend(backend)
    results = {}
    echo(f"\nneat-python's XOR task, {generations} generations of {config.pop_size} genomes, "
         f"each evaluator from the same seed (clnet on {be.spec}: {be.description})")
    for n in sizes:
        x, y = task(n)
        # Warm both evaluators outside the timing: clnet builds its kernel once per process,
        # neat-python's first networks pay for imports and first calls.
        warm = list(neat.Population(config).population.items())
        clnet_evaluator(x, y, be, [0.0])(warm, config)
        neat_evaluator(x, y, [0.0])(warm, config)
        res = {}
        res["neat-python"] = evolve(lambda clock: neat_evaluator(x, y, clock), generations, seed)
        res["clnet"] = evolve(lambda clock: clnet_evaluator(x, y, be, clock), generations, seed)
        results[n] = res
        for name, (total, inside, best) in res.items():
            echo(f"  {n:>5} inputs  {name:<12} {total:7.2f} s end to end ({inside:6.2f} s evaluating, "
                 f"{inside / generations * 1e3:6.2f} ms per generation); best fitness {best:.3f} of 4")
        ratio = res["neat-python"][0] / res["clnet"][0]
        target = ">= 1x: no slower" if n == 4 else ">= 10x"
        echo(f"  {n:>5} inputs  clnet end to end {ratio:.1f}x faster than neat-python's networks "
             f"(target {target}); evaluation alone {res['neat-python'][1] / res['clnet'][1]:.1f}x")
    return results
