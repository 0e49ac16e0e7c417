"""Conformance checks of Markov clustering.

hypothesis draws a planted-partition graph (size, clusters, degrees, noise, weights,
inflation, a seed). Every backend must give the float64 NumPy reference's partition
exactly; every column of the iterand must stay stochastic after every iteration; and a
permutation of the node order must permute the clustering and change nothing else. The
anchor, the mcl program itself, is compared in tests/test_mcl.py.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_backend
from ..common.mcl import MCLParams
from ..common.mcl_graphs import planted_edges
from ..mcl import mcl, start_matrix
from . import Check, Comparison, register

try:
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    st = None


@st.composite if st else (lambda f: f)
def mcl_cases(draw):
    return dict(n=draw(st.integers(4, 60)), clusters=draw(st.integers(1, 6)), degree_in=draw(st.integers(1, 6)),
                degree_out=draw(st.sampled_from([0.0, 0.3, 1.0])), weighted=draw(st.booleans()),
                inflation=draw(st.sampled_from([1.3, 2.0, 3.0])), seed=draw(st.integers(0, 2**32 - 1)))


def case_graph(case) -> np.ndarray:
    rng = np.random.default_rng(case["seed"])
    rows, cols, w, _ = planted_edges(case["n"], min(case["clusters"], case["n"]), case["degree_in"],
                                     case["degree_out"], rng, case["weighted"])
    g = np.zeros((case["n"], case["n"]))
    g[rows, cols] = w
    return g


def _describe(fn_call):
    def describe(case):
        return (f"import clnet\nfrom clnet.conformance.mcl import case_graph\ncase = {case!r}\n"
                f"g = case_graph(case)\n{fn_call}")
    return describe


def smallest_member(labels: np.ndarray) -> np.ndarray:
    """Per node, the smallest node of its cluster: the partition without cluster ids."""
    low = np.full(labels.max() + 1 if len(labels) else 0, len(labels))
    np.minimum.at(low, labels, np.arange(len(labels)))
    return low[labels]


def _eval_partition(backend, dt, case):
    g = case_graph(case)
    got = mcl(g, case["inflation"], backend=backend, dtype=dt)
    ref = mcl(g, case["inflation"], backend=get_backend("numpy"), dtype=np.float64)
    return [Comparison("labels", got.labels, ref.labels)]


def _eval_stochastic(backend, dt, case):
    start = start_matrix(case_graph(case))
    plan = backend.op("mcl_plan")(start, dt, MCLParams())
    sums = []
    for _ in range(4):
        plan.iterate(case["inflation"])
        cur = plan.current()
        nonempty = np.diff(cur.indptr) > 0
        sums.append(cur.column_sums()[nonempty])
    sums = np.concatenate(sums)
    return [Comparison("column sums after each iteration", sums, np.ones_like(sums))]


def _eval_permutation(backend, dt, case):
    g = case_graph(case)
    perm = np.random.default_rng(case["seed"] ^ 0x5EED).permutation(case["n"])
    a = mcl(g, case["inflation"], backend=backend, dtype=dt).labels
    b = mcl(g[np.ix_(perm, perm)], case["inflation"], backend=backend, dtype=dt).labels
    back = np.empty_like(b)
    back[perm] = b  # node perm[i] of the original is node i of the permuted graph
    return [Comparison("partition of the permuted graph, mapped back", smallest_member(back), smallest_member(a))]


if st is not None:
    register(Check("mcl.partition", "mcl", mcl_cases, _eval_partition,
                   _describe("clnet.mcl(g, case['inflation'], backend=BACKEND, dtype=DTYPE).labels  # vs numpy float64")))
    register(Check("mcl.stochastic", "mcl", mcl_cases, _eval_stochastic,
                   _describe("from clnet.mcl import start_matrix  # iterate BACKEND.op('mcl_plan')(start_matrix(g), DTYPE, ...)")))
    register(Check("mcl.permutation", "mcl", mcl_cases, _eval_permutation,
                   _describe("clnet.mcl(g[np.ix_(perm, perm)], case['inflation'], backend=BACKEND, dtype=DTYPE)")))
