"""Planted-partition graphs for the Markov clustering tests, conformance and benchmarks.

Memory grows with the number of edges, never with N * N, so the benchmark's graph of a
million nodes is made the same way as a test's graph of ten.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


def planted_edges(n: int, n_clusters: int, degree_in: int, degree_out: float, rng,
                  weighted: bool = True) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Undirected edges (rows, cols, weights, both directions) of n nodes in ``n_clusters``
    planted clusters of uneven sizes: each node draws ``degree_in`` neighbours in its own
    cluster and on average ``degree_out`` anywhere (noise, lighter weights). Returns
    (rows, cols, weights, planted labels); duplicate pairs keep their larger weight."""
    sizes = rng.integers(2, 6, size=n_clusters).astype(np.float64)
    bounds = np.concatenate(([0], np.round(np.cumsum(sizes) / sizes.sum() * n))).astype(np.int64)
    labels = np.repeat(np.arange(n_clusters), np.diff(bounds))
    lo, size = bounds[labels], np.diff(bounds)[labels]
    src_in = np.repeat(np.arange(n), degree_in)
    dst_in = lo[src_in] + (rng.random(len(src_in)) * size[src_in]).astype(np.int64)
    n_out = rng.poisson(degree_out * n) if degree_out > 0 else 0
    src_out, dst_out = rng.integers(0, n, n_out), rng.integers(0, n, n_out)
    w_in = rng.uniform(0.5, 1.0, len(src_in)) if weighted else np.ones(len(src_in))
    w_out = rng.uniform(0.05, 0.3, n_out) if weighted else np.ones(n_out)
    del lo, size
    # Each undirected pair once, as (low, high) in one int64 key, its larger weight kept;
    # then both directions laid out row by row. Memory stays a few arrays of the edge count
    # (the million-node benchmark graph has 50 million arcs), with no sort of all the arcs.
    rows = np.concatenate([src_in, src_out])
    del src_in, src_out
    cols = np.concatenate([dst_in, dst_out])
    del dst_in, dst_out
    w = np.concatenate([w_in, w_out])
    del w_in, w_out
    off = rows != cols
    key = np.minimum(rows, cols) * n + np.maximum(rows, cols)
    del rows, cols
    key, w = key[off], w[off]
    del off
    order = np.argsort(key, kind="stable")
    key, w = key[order], w[order]
    del order
    first = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1]))[:len(key)])
    w = np.maximum.reduceat(w, first) if len(first) else w[:0]
    key = key[first]
    del first
    low, high = key // n, key % n
    del key
    # Row r holds its pairs with smaller nodes (cols < r, from the high end) first, then
    # those with larger nodes (cols > r, from the low end), each part in ascending columns.
    by_high = np.argsort(high, kind="stable")
    n_low, n_high = np.bincount(low, minlength=n), np.bincount(high, minlength=n)
    row_start = np.concatenate(([0], np.cumsum(n_low + n_high)[:-1]))
    total = 2 * len(low)
    rows, cols, weights = np.empty(total, np.int64), np.empty(total, np.int64), np.empty(total, w.dtype)
    high_sorted = high[by_high]
    group_start = np.concatenate(([0], np.cumsum(n_high)[:-1]))
    at = row_start[high_sorted] + np.arange(len(low)) - group_start[high_sorted]
    rows[at], cols[at], weights[at] = high_sorted, low[by_high], w[by_high]
    del high_sorted, by_high, at
    group_start = np.concatenate(([0], np.cumsum(n_low)[:-1]))
    at = row_start[low] + n_high[low] + np.arange(len(low)) - group_start[low]
    rows[at], cols[at], weights[at] = low, high, w
    return rows, cols, weights, labels


def planted_graph(n: int, n_clusters: int, degree_in: int = 8, degree_out: float = 1.0, seed: int = 0,
                  weighted: bool = True):
    """A planted-partition graph as a scipy.sparse CSR matrix, and the planted labels."""
    import scipy.sparse as sp

    rows, cols, w, labels = planted_edges(n, n_clusters, degree_in, degree_out, np.random.default_rng(seed),
                                          weighted)
    return sp.csr_matrix((w, (rows, cols)), shape=(n, n)), labels


def adjusted_rand_index(a, b) -> float:
    """The adjusted Rand index of two labelings (Hubert and Arabie), from the contingency
    table: 1 for identical partitions, about 0 for independent ones."""
    a, b = np.asarray(a), np.asarray(b)
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.bincount(ai * (bi.max() + 1) + bi, minlength=(ai.max() + 1) * (bi.max() + 1))

    def pairs(x):
        x = x.astype(np.float64)
        return float(np.sum(x * (x - 1) / 2))

    index = pairs(table)
    row = pairs(np.bincount(ai))
    col = pairs(np.bincount(bi))
    total = len(a) * (len(a) - 1) / 2
    expected = row * col / total if total else 0.0
    maximum = (row + col) / 2
    return 1.0 if maximum == expected else (index - expected) / (maximum - expected)
