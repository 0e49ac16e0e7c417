"""Host code the simple-path backends share: bitmasks, colex ranks, 128-bit words, frontiers.

Counting (docs/SEMANTICS.md, Simple paths) is a dynamic program over (visited set, last
vertex) for one source at a time. The source's N - 1 other vertices are relabelled 0..n-1
(``relabel``), a visited set is an n-bit mask, and the masks of one popcount k (one
*layer*: every path of k edges) are stored in colex order, the order in which Gosper's
next-combination step visits them, so that the state (mask, j-th set bit of mask) lives
at ``rank(mask) * k + j``. ``rank(mask) = sum_i C(b_i, i + 1)`` over the set bits
b_0 < b_1 < ... of the mask (``binomial_table``).

Counts are exact 128-bit integers held as two uint64 words (lo, hi). ``to_counts`` turns
them into uint64 when every value fits, else into Python ints; ``add_words`` sums words
along an axis exactly by splitting them into 32-bit limbs (no Python loop over elements).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

# Counting keeps masks of the n = N - 1 non-source vertices in 32-bit words.
COUNT_MAX_VERTICES = 32
# Listing keeps the visited set of a path in one 64-bit word.
LIST_MAX_VERTICES = 64
# Bytes of one counting state: a 128-bit count.
STATE_BYTES = 16

_M32 = np.uint64(0xFFFFFFFF)


def binomial_table(size: int = COUNT_MAX_VERTICES + 1) -> np.ndarray:
    """``C(a, b)`` at ``[a, b]`` for 0 <= a, b < size (zero where b > a), as uint32."""
    table = np.zeros((size, size), dtype=np.uint64)
    table[:, 0] = 1
    for a in range(1, size):
        table[a, 1:] = table[a - 1, 1:] + table[a - 1, :-1]
    if table.max() > np.iinfo(np.uint32).max:
        raise ValueError(f"binomial table of size {size} does not fit 32 bits")
    return table.astype(np.uint32)


BINOMIALS = binomial_table()


def largest_layer(n: int) -> int:
    """The number of states of the largest layer over n relabelled vertices: max_k C(n, k) * k."""
    from math import comb

    return max((comb(n, k) * k for k in range(n + 1)), default=0)


def count_layer_bytes(n_vertices: int) -> int:
    """Bytes of one layer buffer when counting on a graph of ``n_vertices``."""
    return largest_layer(max(n_vertices - 1, 0)) * STATE_BYTES


def relabel(adjacency: np.ndarray, source: int) -> Tuple[np.ndarray, int]:
    """For one source: ``pred[w]`` (bit v set when v -> w) over the other vertices relabelled
    0..N-2 (a vertex above the source moves down by one), and the mask of the source's
    successors, as uint32 words."""
    others = np.delete(np.arange(adjacency.shape[0]), source)
    sub = adjacency[np.ix_(others, others)]
    weights = np.left_shift(np.uint64(1), np.arange(len(others), dtype=np.uint64))
    pred = (sub.astype(np.uint64) * weights[:, None]).sum(axis=0).astype(np.uint32)
    start = int((adjacency[source, others].astype(np.uint64) * weights).sum())
    return pred, start


def successor_masks(adjacency: np.ndarray) -> np.ndarray:
    """``succ[v]``: bit w set when v -> w, as uint64 (N <= 64); any number of rows."""
    n = adjacency.shape[1]
    weights = np.left_shift(np.uint64(1), np.arange(n, dtype=np.uint64))
    return (adjacency.astype(np.uint64) * weights[None, :]).sum(axis=1).astype(np.uint64)


def insert_source_axis(per_other: np.ndarray, sources: np.ndarray, n: int) -> np.ndarray:
    """(S, N-1, ...) over relabelled vertices -> (S, N, ...) with zeros at each row's source."""
    out = np.zeros((len(sources), n) + per_other.shape[2:], dtype=per_other.dtype)
    for row, source in enumerate(sources):  # one slice assignment per source, not per element
        out[row, :source] = per_other[row, :source]
        out[row, source + 1:] = per_other[row, source:]
    return out


# ---------------------------------------------------------------------------------------
# 128-bit words
# ---------------------------------------------------------------------------------------
def add_words(lo: np.ndarray, hi: np.ndarray, axis: int) -> Tuple[np.ndarray, np.ndarray]:
    """Exact sum of 128-bit (lo, hi) values along ``axis`` (fewer than 2^32 terms)."""
    limbs = [np.sum(part, axis=axis, dtype=np.uint64)
             for part in (lo & _M32, lo >> np.uint64(32), hi & _M32, hi >> np.uint64(32))]
    return carry_limbs(*limbs)


def carry_limbs(l0, l1, l2, l3) -> Tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of l0 + l1 * 2^32 + l2 * 2^64 + l3 * 2^96 for limbs below 2^63 (modulo 2^128)."""
    shift = np.uint64(32)
    l1 = l1 + (l0 >> shift)
    l2 = l2 + (l1 >> shift)
    l3 = l3 + (l2 >> shift)
    lo = (l0 & _M32) | ((l1 & _M32) << shift)
    hi = (l2 & _M32) | ((l3 & _M32) << shift)
    return lo, hi


def to_counts(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """uint64 counts when every high word is zero, else an object array of exact Python ints."""
    if not np.any(hi):
        return lo.astype(np.uint64)
    return (hi.astype(object) << 64) | lo.astype(object)


def from_ints(values) -> Tuple[np.ndarray, np.ndarray]:
    """Python ints (or an object array of them, each below 2^128) as (lo, hi) uint64 words."""
    arr = np.asarray(values, dtype=object)
    mask = (1 << 64) - 1
    lo = (arr & mask).astype(np.uint64)
    hi = (arr >> 64).astype(np.uint64)
    return lo, hi


# ---------------------------------------------------------------------------------------
# Frontiers of partial paths (listing)
# ---------------------------------------------------------------------------------------
def start_frontier(sources: np.ndarray, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Paths of no edge at each source: (S, width) int32 padded with -1, and visited masks."""
    paths = np.full((len(sources), width), -1, dtype=np.int32)
    paths[:, 0] = sources
    visited = np.left_shift(np.uint64(1), sources.astype(np.uint64))
    return paths, visited


def extend_frontier(paths: np.ndarray, visited: np.ndarray, depth: int,
                    succ: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Every one-edge extension of paths that end at column ``depth``, in order (by parent,
    then by the new vertex ascending): children of depth + 1 and their visited masks."""
    n = len(succ)
    if len(paths) == 0:
        return paths.copy(), visited.copy()
    free = succ[paths[:, depth]] & ~visited
    bits = ((free[:, None] >> np.arange(n, dtype=np.uint64)) & np.uint64(1)).astype(bool)
    parent, vertex = np.nonzero(bits)
    children = paths[parent]
    children[:, depth + 1] = vertex
    return children, visited[parent] | np.left_shift(np.uint64(1), vertex.astype(np.uint64))


def accepted(paths: np.ndarray, depth: int, targets: np.ndarray, min_length: int) -> np.ndarray:
    """Which paths of ``depth`` edges are listed: long enough and ending at a target."""
    if depth < min_length or len(paths) == 0:
        return np.zeros(len(paths), dtype=bool)
    return targets[paths[:, depth]]


def expected_listing_total(counts_by_length: np.ndarray, targets: np.ndarray, min_length: int,
                           max_length: int) -> Optional[int]:
    """The number of paths a listing yields, from (S, N, N) by-length counts (as ints)."""
    window = counts_by_length[:, targets, max(min_length, 1):max_length + 1]
    return int(np.sum(window.astype(object))) if window.size else 0
