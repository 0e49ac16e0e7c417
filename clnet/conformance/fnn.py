"""Conformance checks of the feed-forward networks.

hypothesis draws the shape of a case (structure, topology, batch size, magnitudes,
which values are non-finite) and a seed; NumPy generates the arrays from the seed,
so that batches of thousands of samples stay cheap to draw and to shrink.
"""
from __future__ import annotations

import numpy as np

from .. import fnn as F
from .. import genomes
from ..backend import get_backend
from ..functions import ACTIVATIONS
from . import Check, Comparison, register

try:
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    st = None

# Magnitudes per case: ordinary, tiny (not subnormal: devices may flush those), large.
SCALES = (1.0, 1e-3, 30.0, 1e3)


def _batch():
    return st.one_of(st.integers(1, 8), st.integers(9, 300), st.sampled_from([1000, 2048, 3001]))


def _fill(rng, shape, scale, nonfinite: bool):
    a = rng.normal(0, scale, size=shape)
    if nonfinite and a.size:
        k = max(1, a.size // 10)
        idx = rng.choice(a.size, size=k, replace=False)
        a.flat[idx] = rng.choice([np.nan, np.inf, -np.inf], size=k)
    return a


def _reference(fn):
    """Run ``fn(backend, dtype)`` on the NumPy fallback in float64 and in ``dtype``."""
    ref_backend = get_backend("numpy")
    return lambda dt: (fn(ref_backend, np.float64), fn(ref_backend, dt))


# --- layered form ------------------------------------------------------------------------
@st.composite if st else (lambda f: f)
def layered_cases(draw):
    depth = draw(st.integers(1, 4))
    structure = [draw(st.integers(1, 9)) for _ in range(depth + 1)]
    per_layer = draw(st.booleans())
    acts = ([draw(st.sampled_from(ACTIVATIONS)) for _ in range(depth)] if per_layer
            else draw(st.sampled_from(ACTIVATIONS)))
    return dict(structure=structure, activation=acts, batch=draw(_batch()),
                scale=draw(st.sampled_from(SCALES)), nonfinite=draw(st.booleans()),
                with_bias=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)))


def _layered_arrays(case):
    rng = np.random.default_rng(case["seed"])
    s = case["structure"]
    w = _fill(rng, F.weight_count(s), case["scale"] / np.sqrt(max(s)), case["nonfinite"])
    b = _fill(rng, sum(s[1:]), case["scale"], False) if case["with_bias"] else None
    x = _fill(rng, (case["batch"], s[0]), 1.0, case["nonfinite"] and rng.random() < 0.5)
    return w, b, x


def _eval_layered(backend, dt, case):
    w, b, x = _layered_arrays(case)

    def run(be, d):
        return F.fnn_forward(case["structure"], w, x, biases=b, activation=case["activation"],
                             backend=be, dtype=d)

    ref, ctl = _reference(run)(dt)
    return [Comparison("outputs", run(backend, dt), ref, ctl)]


def _describe_layered(case):
    return (f"import numpy as np, clnet\nfrom clnet.conformance.fnn import _layered_arrays\n"
            f"case = {case!r}\nw, b, x = _layered_arrays(case)\n"
            f"clnet.fnn_forward(case['structure'], w, x, biases=b, activation=case['activation'], "
            f"backend=BACKEND, dtype=DTYPE)")


# --- graph form --------------------------------------------------------------------------
@st.composite if st else (lambda f: f)
def genome_cases(draw, n_inputs=None, n_outputs=None):
    n_in = n_inputs or draw(st.integers(1, 5))
    n_out = n_outputs or draw(st.integers(1, 3))
    n_hidden = draw(st.integers(0, 10))
    n_conn = draw(st.integers(0, 40))
    return dict(n_inputs=n_in, n_outputs=n_out, n_hidden=n_hidden, n_conn=n_conn,
                activations=draw(st.sampled_from(["all", "mild"])),
                batch=draw(_batch()), scale=draw(st.sampled_from(SCALES[:3])),
                nonfinite=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)))


_MILD = ["identity", "relu", "sigmoid", "tanh", "clamped", "neat.sigmoid", "neat.tanh", "hat", "abs"]


def random_genome(case, rng=None):
    """(nodes, connections) of the case's random DAG (see clnet.genomes)."""
    rng = rng or np.random.default_rng(case["seed"])
    nodes, conns = genomes.random_genome(
        case["n_inputs"], case["n_outputs"], case["n_hidden"], case["n_conn"], rng,
        activations=ACTIVATIONS if case["activations"] == "all" else _MILD, weight_scale=case["scale"])
    if case.get("nonfinite") and conns:
        i = int(rng.integers(0, len(conns)))
        conns[i] = conns[i][:2] + (float(rng.choice([np.nan, np.inf, -np.inf])),) + conns[i][3:]
    return nodes, conns


def _genome_inputs(case, rng):
    return _fill(rng, (case["batch"], case["n_inputs"]), 1.0, False)


def _eval_graph(backend, dt, case):
    rng = np.random.default_rng(case["seed"])
    nodes, conns = random_genome(case, rng)
    net = F.FNN.from_graph(case["n_inputs"], case["n_outputs"], nodes, conns)
    x = _genome_inputs(case, rng)
    ref, ctl = _reference(lambda be, d: net(x, backend=be, dtype=d))(dt)
    return [Comparison("outputs", net(x, backend=backend, dtype=dt), ref, ctl)]


def _describe_graph(case):
    return (f"import numpy as np, clnet\nfrom clnet.conformance.fnn import random_genome, _genome_inputs\n"
            f"case = {case!r}\nrng = np.random.default_rng(case['seed'])\nnodes, conns = random_genome(case, rng)\n"
            f"net = clnet.FNN.from_graph(case['n_inputs'], case['n_outputs'], nodes, conns)\n"
            f"net(_genome_inputs(case, rng), backend=BACKEND, dtype=DTYPE)")


# --- mixed populations -------------------------------------------------------------------
@st.composite if st else (lambda f: f)
def population_cases(draw):
    n_in = draw(st.integers(1, 4))
    n_out = draw(st.integers(1, 3))
    members = draw(st.lists(st.one_of(
        genome_cases(n_inputs=n_in, n_outputs=n_out),
        st.builds(lambda hidden, act, seed: dict(layered=[n_in] + hidden + [n_out], activation=act, seed=seed),
                  st.lists(st.integers(1, 6), max_size=2), st.sampled_from(_MILD), st.integers(0, 2**32 - 1))),
        min_size=1, max_size=12))
    return dict(n_inputs=n_in, members=members, batch=draw(_batch()), seed=draw(st.integers(0, 2**32 - 1)))


def build_population(case):
    nets = []
    for m in case["members"]:
        if "layered" in m:
            rng = np.random.default_rng(m["seed"])
            s = m["layered"]
            nets.append(F.FNN.from_structure(s, rng.normal(size=F.weight_count(s)),
                                             rng.normal(size=sum(s[1:])), m["activation"]))
        else:
            nodes, conns = random_genome(m)
            nets.append(F.FNN.from_graph(m["n_inputs"], m["n_outputs"], nodes, conns))
    pop = F.FNNPopulation(nets)
    x = np.random.default_rng(case["seed"]).normal(size=(case["batch"], case["n_inputs"]))
    return nets, pop, x


def _eval_population(backend, dt, case):
    nets, pop, x = build_population(case)
    got = pop(x, backend=backend, dtype=dt)
    ref, ctl = _reference(lambda be, d: pop(x, backend=be, dtype=d))(dt)
    comparisons = [Comparison("outputs", got, ref, ctl)]
    # Each member evaluated alone (another kernel for a layered one) is held to the same
    # reference rows by the same tolerance: a bound that follows the magnitude of the terms
    # summed, where a bare allclose between the two would fail correct backends whose BLAS
    # or compiler sums in another order (an error of 3.8e-6 on an output near zero).
    for i, net in enumerate(nets[:3]):
        comparisons.append(Comparison(f"network {i} evaluated alone", net(x, backend=backend, dtype=dt),
                                      ref[i], ctl[i]))
    return comparisons


def _describe_population(case):
    return (f"from clnet.conformance.fnn import build_population\ncase = {case!r}\n"
            f"nets, pop, x = build_population(case)\npop(x, backend=BACKEND, dtype=DTYPE)")


# --- the seed example --------------------------------------------------------------------
@st.composite if st else (lambda f: f)
def seed_cases(draw):
    fl = st.floats(-100, 100, allow_nan=False, allow_subnormal=False)
    return dict(w=[draw(fl) for _ in range(6)], v=[draw(fl) for _ in range(2)])


def _eval_seed(backend, dt, case):
    w1, w2, w3, w4, w5, w6 = case["w"]
    v1, v2 = case["v"]
    # Written out by hand from the user's formula: independent of every backend.
    expected = np.array([w5 * (v1 * w1 + v2 * w2) + w6 * (v1 * w3 + v2 * w4)])
    got = F.fnn_forward([2, 2, 1], case["w"], case["v"], backend=backend, dtype=dt)
    wa, va = np.abs(case["w"]), np.abs(case["v"])
    # Rounding bound: the same formula on absolute values, times a few ulps.
    scale = wa[4] * (va[0] * wa[0] + va[1] * wa[1]) + wa[5] * (va[0] * wa[2] + va[1] * wa[3])
    eps = np.finfo(dt).eps
    if abs(got[0] - expected[0]) > 8 * eps * scale + 1e-30:
        raise AssertionError(f"seed example: got {got[0]!r}, formula gives {expected[0]!r}")
    # The control stands for what an exact-order float computation may lose here.
    return [Comparison("outputs", got, expected, expected + 4 * eps * scale)]


if st is not None:
    register(Check("fnn.seed_example", "fnn", seed_cases, _eval_seed, repr))
    register(Check("fnn.layered", "fnn", layered_cases, _eval_layered, _describe_layered))
    register(Check("fnn.graph", "fnn", genome_cases, _eval_graph, _describe_graph))
    register(Check("fnn.population", "fnn", population_cases, _eval_population, _describe_population))
