"""NumPy reference of simple-path counting and listing (docs/SEMANTICS.md, Simple paths).

Counting runs the same layered dynamic program as kernels/paths.cl, vectorised over the
masks of a layer: for each position t of the last vertex w inside the mask, the counts
of the predecessor states (mask without w, v) are gathered as one (masks, k - 1) block and
summed in 32-bit limbs, so every value is exact in 128 bits and no Python loop runs over
masks or states (only over positions, at most N per layer).

Listing walks blocks of partial paths depth first: a block is extended by every edge at
once (clnet.common.paths.extend_frontier), the accepted children are kept for output and
the children are pushed back in blocks, so memory holds at most one block per depth
besides the rows waiting to be returned.
"""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np

from clnet.common import paths as host
from clnet.contract import PathsListing, PathsOps

# Partial paths extended at once while listing.
LIST_BLOCK = 8192
_M32 = np.uint64(0xFFFFFFFF)


def _host_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX hosts
        return 8 << 30


class PathsReference(PathsOps):
    def paths_count_limit(self, n):
        if n > host.COUNT_MAX_VERTICES:
            return f"masks hold at most {host.COUNT_MAX_VERTICES} vertices"
        # Two layers of words plus a rank table and per-layer temporaries of about the same size.
        need = 4 * host.count_layer_bytes(n) + 4 * (1 << max(n - 1, 0))
        budget = _host_memory() // 2
        if need > budget:
            return f"counting needs about {need / 2**30:.1f} GiB, more than half of this host's memory"
        return None

    def paths_count(self, adjacency, sources):
        n_all = adjacency.shape[0]
        out_lo = np.zeros((len(sources), max(n_all - 1, 0), n_all), dtype=np.uint64)
        out_hi = np.zeros_like(out_lo)
        if n_all > 1:
            tables = _LayerTables(n_all - 1)
            for row, source in enumerate(sources):
                pred, start = host.relabel(adjacency, int(source))
                out_lo[row], out_hi[row] = _count_from(tables, pred, start)
        return (host.insert_source_axis(out_lo, sources, n_all), host.insert_source_axis(out_hi, sources, n_all))

    def paths_listing(self, adjacency, sources, targets, min_length, max_length):
        return NumpyPathsListing(adjacency, sources, targets, min_length, max_length)


class _LayerTables:
    """The masks of each popcount over n vertices in colex order, their set bits (uint8), and
    the rank of every mask inside its layer (shared by every source of one call)."""

    def __init__(self, n: int):
        self.n = n
        every = np.arange(1 << n, dtype=np.uint32)
        popcount = _popcount(every)
        self.rank = np.zeros(1 << n, dtype=np.uint32)
        self.masks: List[np.ndarray] = []
        self.bits: List[np.ndarray] = []
        for k in range(n + 1):
            masks = every[popcount == k]
            self.rank[masks] = np.arange(len(masks), dtype=np.uint32)
            self.masks.append(masks)
            bitmat = np.unpackbits(masks.view(np.uint8).reshape(-1, 4), axis=1, bitorder="little")
            self.bits.append(np.nonzero(bitmat)[1].astype(np.uint8).reshape(len(masks), k))


def _popcount(words: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    counts = np.zeros(words.shape, dtype=np.uint8)  # numpy < 2.0: one pass per bit
    for bit in range(32):
        counts += ((words >> np.uint32(bit)) & np.uint32(1)).astype(np.uint8)
    return counts


def _count_from(tables: _LayerTables, pred: np.ndarray, start: int):
    """(n, n + 1) words: paths from the source to relabelled vertex w with k edges at [w, k]."""
    n = tables.n
    lo_out = np.zeros((n, n + 1), dtype=np.uint64)
    hi_out = np.zeros_like(lo_out)
    pred64 = pred.astype(np.uint64)
    prev_lo = prev_hi = None
    for k in range(1, n + 1):
        masks, bits = tables.masks[k], tables.bits[k]
        if k == 1:
            lo = ((np.uint64(start) >> bits[:, 0].astype(np.uint64)) & np.uint64(1))[:, None]
            hi = np.zeros_like(lo)
        else:
            lo = np.empty((len(masks), k), dtype=np.uint64)
            hi = np.empty_like(lo)
            for t in range(k):
                w = bits[:, t]
                sub_rank = tables.rank[masks ^ np.left_shift(np.uint32(1), w.astype(np.uint32))]
                others = np.delete(bits, t, axis=1)  # the vertices of the sub-mask, by position
                edge = ((pred64[w][:, None] >> others.astype(np.uint64)) & np.uint64(1))
                lo[:, t], hi[:, t] = _dot_words(prev_lo[sub_rank], prev_hi[sub_rank], edge)
        _scatter_totals(lo_out, hi_out, k, bits, lo, hi)
        prev_lo, prev_hi = lo, hi
    return lo_out, hi_out


def _dot_words(lo: np.ndarray, hi: np.ndarray, edge: np.ndarray):
    """Per row, the exact 128-bit sum of the words where ``edge`` is 1."""
    shift = np.uint64(32)
    limbs = [np.sum(part * edge, axis=1, dtype=np.uint64)
             for part in (lo & _M32, lo >> shift, hi & _M32, hi >> shift)]
    return host.carry_limbs(*limbs)


def _scatter_totals(lo_out, hi_out, k, bits, lo, hi):
    """Add every state's count of layer k to its end vertex's total ([w, k])."""
    n = lo_out.shape[0]
    shift = np.uint64(32)
    limbs = []
    for part in (lo & _M32, lo >> shift, hi & _M32, hi >> shift):
        total = np.zeros(n, dtype=np.uint64)
        np.add.at(total, bits.ravel(), part.ravel())
        limbs.append(total)
    lo_out[:, k], hi_out[:, k] = host.carry_limbs(*limbs)


class NumpyPathsListing(PathsListing):
    """Blocks of partial paths walked depth first; accepted rows wait in ``ready``."""

    def __init__(self, adjacency, sources, targets, min_length, max_length):
        self.succ = host.successor_masks(adjacency)
        self.targets = targets
        self.min_length = min_length
        self.max_length = max_length
        self.width = max_length + 1
        paths, visited = host.start_frontier(sources, self.width)
        self.stack = [(paths, visited, 0)] if max_length >= 1 else []
        self.ready: List[np.ndarray] = []
        self.ready_rows = 0

    def next_chunk(self, max_rows):
        while self.ready_rows < max_rows and self.stack:
            paths, visited, depth = self.stack.pop()
            children, child_visited = host.extend_frontier(paths, visited, depth, self.succ)
            keep = host.accepted(children, depth + 1, self.targets, self.min_length)
            if keep.any():
                self.ready.append(children[keep])
                self.ready_rows += int(keep.sum())
            if depth + 1 < self.max_length and len(children):
                # Pushed last block first, so that the walk continues with the first one.
                for first in range((len(children) - 1) // LIST_BLOCK * LIST_BLOCK, -1, -LIST_BLOCK):
                    self.stack.append((children[first:first + LIST_BLOCK],
                                       child_visited[first:first + LIST_BLOCK], depth + 1))
        if not self.ready_rows:
            return None
        rows = np.concatenate(self.ready) if len(self.ready) > 1 else self.ready[0]
        chunk, rest = rows[:max_rows], rows[max_rows:]
        self.ready = [rest] if len(rest) else []
        self.ready_rows = len(rest)
        return np.ascontiguousarray(chunk)
