"""Conformance checks of simple-path counting and listing.

hypothesis draws a small graph (up to 8 vertices, any density, directed or not, with
self-loops and isolated vertices) and listing limits; every backend is compared with a
plain depth-first enumeration written here, which shares no code with either backend:
the counts per (source, target, length) must be equal exactly (the tolerance table has
no tolerance for this family), and a listing must hold exactly the enumeration's paths,
each once, in chunks of at most ``chunk_size`` rows padded with -1. The complete graph's
closed form (floor(e (n-2)!) paths between two vertices) is checked for n up to 12.
"""
from __future__ import annotations

from math import factorial
from typing import List, Tuple

import numpy as np

from ..paths import count_simple_paths, simple_paths
from . import Check, Comparison, register

try:
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    st = None

MAX_VERTICES = 8


def graph_cases():
    return st.fixed_dictionaries(dict(
        n=st.integers(0, MAX_VERTICES), density=st.sampled_from([0.0, 0.15, 0.3, 0.5, 0.8, 1.0]),
        directed=st.booleans(), self_loops=st.booleans(), isolated=st.integers(0, 2),
        seed=st.integers(0, 2**32 - 1)))


def listing_cases():
    return st.fixed_dictionaries(dict(
        graph=graph_cases(), source=st.one_of(st.none(), st.integers(0, MAX_VERTICES - 1)),
        targets=st.one_of(st.none(), st.lists(st.integers(0, MAX_VERTICES - 1), min_size=1, max_size=3)),
        min_length=st.integers(0, 4), max_length=st.one_of(st.none(), st.integers(1, MAX_VERTICES)),
        max_results=st.one_of(st.none(), st.integers(0, 60)), chunk_size=st.integers(1, 40)))


def make_graph(case) -> np.ndarray:
    """A 0/1 matrix: random edges, optional self-loops, the last ``isolated`` vertices bare."""
    rng = np.random.default_rng(case["seed"])
    n = case["n"]
    adjacency = (rng.random((n, n)) < case["density"]).astype(np.int8)
    if not case["self_loops"]:
        np.fill_diagonal(adjacency, 0)
    bare = min(case["isolated"], n)
    if bare:
        adjacency[n - bare:, :] = 0
        adjacency[:, n - bare:] = 0
    return adjacency


def enumerate_paths(adjacency: np.ndarray, directed: bool) -> List[Tuple[int, ...]]:
    """Every simple path of at least one edge, by recursion over plain Python lists."""
    n = len(adjacency)
    succ = [[j for j in range(n) if j != i and (adjacency[i][j] or (not directed and adjacency[j][i]))]
            for i in range(n)]
    found: List[Tuple[int, ...]] = []

    def walk(path, seen):
        for nxt in succ[path[-1]]:
            if nxt not in seen:
                path.append(nxt)
                seen.add(nxt)
                found.append(tuple(path))
                walk(path, seen)
                seen.discard(nxt)
                path.pop()

    for start in range(n):
        walk([start], {start})
    return found


def _histogram(paths, n) -> np.ndarray:
    counts = np.zeros((n, n, n), dtype=np.int64)
    for p in paths:
        counts[p[0], p[-1], len(p) - 1] += 1
    return counts


def _eval_count(backend, dt, case) -> List[Comparison]:
    adjacency = make_graph(case)
    n = len(adjacency)
    reference = _histogram(enumerate_paths(adjacency, case["directed"]), n)
    got = count_simple_paths(adjacency, directed=case["directed"], by_length=True, backend=backend)
    totals = count_simple_paths(adjacency, directed=case["directed"], backend=backend)
    if got.dtype != np.uint64 or totals.dtype != np.uint64:
        raise AssertionError(f"small counts must come back as uint64, got {got.dtype} and {totals.dtype}")
    comparisons = [Comparison("counts by length", got, reference),
                   Comparison("counts", totals, reference.sum(axis=2))]
    if n:
        row = min(case["seed"] % n, n - 1)
        single = count_simple_paths(adjacency, source=row, directed=case["directed"], by_length=True,
                                    backend=backend)
        comparisons.append(Comparison("counts from one source", single, reference[row]))
    return comparisons


def _eval_complete(backend, dt, n) -> List[Comparison]:
    complete = 1 - np.eye(n, dtype=np.int8)
    between = sum(factorial(n - 2) // factorial(n - 2 - k) for k in range(n - 1))  # floor(e (n-2)!)
    expected = np.full((n, n), between, dtype=np.int64)
    np.fill_diagonal(expected, 0)
    return [Comparison(f"complete graph on {n} vertices", count_simple_paths(complete, backend=backend),
                       expected)]


def _eval_listing(backend, dt, case) -> List[Comparison]:
    adjacency = make_graph(case["graph"])
    n = len(adjacency)
    directed = case["graph"]["directed"]
    source = None if case["source"] is None or n == 0 else case["source"] % n
    targets = None if case["targets"] is None or n == 0 else sorted({t % n for t in case["targets"]})
    low = case["min_length"]
    high = case["max_length"] if case["max_length"] is None else max(case["max_length"], low, 1)
    chunk_size, limit = case["chunk_size"], case["max_results"]
    wanted = [p for p in enumerate_paths(adjacency, directed)
              if (source is None or p[0] == source) and (targets is None or p[-1] in targets)
              and len(p) - 1 >= low and (high is None or len(p) - 1 <= high)]
    width = (n - 1 if high is None else min(high, n - 1)) + 1
    listed: List[Tuple[int, ...]] = []
    for chunk in simple_paths(adjacency, source, targets, directed=directed, min_length=low, max_length=high,
                              max_results=limit, chunk_size=chunk_size, backend=backend):
        if chunk.dtype != np.int32 or chunk.ndim != 2 or chunk.shape[1] != width:
            raise AssertionError(f"a chunk must be int32 (rows, {width}), got {chunk.dtype} {chunk.shape}")
        if not 1 <= len(chunk) <= chunk_size:
            raise AssertionError(f"a chunk has {len(chunk)} rows; chunk_size is {chunk_size}")
        lengths = (chunk >= 0).sum(axis=1)
        if np.any(chunk[np.arange(width)[None, :] >= lengths[:, None]] != -1):
            raise AssertionError("a row has a vertex after its first -1")
        listed.extend(tuple(int(v) for v in row[:k]) for row, k in zip(chunk, lengths))
    if len(set(listed)) != len(listed):
        raise AssertionError("a path was listed twice")
    expected_count = len(wanted) if limit is None else min(limit, len(wanted))
    if len(listed) != expected_count or not set(listed) <= set(wanted):
        missing = sorted(set(wanted) - set(listed))[:3]
        extra = sorted(set(listed) - set(wanted))[:3]
        raise AssertionError(f"listed {len(listed)} paths, expected {expected_count}; missing e.g. {missing}, "
                             f"not simple paths of the request e.g. {extra}")
    return [Comparison("paths listed", np.array([len(listed)]), np.array([expected_count]))]


def _describe(call: str):
    def describe(case) -> str:
        return f"case = {case!r}\n{call}"
    return describe


if st is not None:
    register(Check("paths.count", "paths", graph_cases, _eval_count,
                   _describe("from clnet.conformance.paths import make_graph\n"
                             "clnet.count_simple_paths(make_graph(case), directed=case['directed'], "
                             "by_length=True, backend=BACKEND)")))
    register(Check("paths.complete", "paths", lambda: st.integers(2, 12), _eval_complete,
                   _describe("clnet.count_simple_paths(1 - np.eye(case), backend=BACKEND)")))
    register(Check("paths.list", "paths", listing_cases, _eval_listing,
                   _describe("from clnet.conformance.paths import make_graph\n"
                             "list(clnet.simple_paths(make_graph(case['graph']), case['source'], "
                             "case['targets'], directed=case['graph']['directed'], "
                             "min_length=case['min_length'], max_length=case['max_length'], "
                             "max_results=case['max_results'], chunk_size=case['chunk_size'], "
                             "backend=BACKEND))")))
