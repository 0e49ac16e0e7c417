"""Markov clustering (MCL) of a similarity graph, with mcl 22-282's semantics.

Public API: :func:`mcl`, returning an :class:`MCLResult`. Semantics: docs/SEMANTICS.md,
"Markov clustering"; the reference is the ``mcl`` program itself (tests compare with it).

How it is computed, on every backend:

1. On the host, in float64: the graph is checked (square, finite, non-negative) and
   turned into columns (column j holds node j's edges, as in mcl's matrix format), loops
   are set as mcl sets them, and every column is scaled to sum 1.
2. A backend keeps the iterand (the contract's ``mcl_plan``) and runs one iteration per
   call: the expansion by column blocks, each block pruned, selected and recovered before
   it is stored, so memory stays O(N k); then inflation. Each call returns the chaos and
   the number of entries kept, which drive the stopping rule and the progress bar here.
3. The limit is read back once and interpreted on the host (clnet.common.mcl.interpret).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import numpy as np

from ._validate import as_float, as_int, host_array
from .backend import BackendLike, get_backend, run
from .common.mcl import (CHAOS_LIMIT, DEFAULT_PRUNE, DEFAULT_RECOVER, DEFAULT_RECOVER_PCT, DEFAULT_SELECT,
                         INFLATION_BUMP, INFLATION_BUMP_AFTER, Columns, MCLParams, interpret, labels_of)

__all__ = ["mcl", "MCLResult", "LOOP_MODES"]

LOOP_MODES = ("mcl", "keep")
# The progress bar appears only when a run lasts longer than this many seconds.
PROGRESS_DELAY_S = 3.0


@dataclass
class MCLResult:
    """A clustering: ``labels[i]`` is node i's cluster (0..K-1, 0 the largest, ties by
    smallest member), ``clusters[c]`` the ascending members of cluster c; ``iterations``
    run, whether the chaos fell below mcl's limit (``converged``) and the last ``chaos``."""

    labels: np.ndarray
    clusters: List[np.ndarray] = field(repr=False)
    iterations: int
    converged: bool
    chaos: float

    @property
    def n_clusters(self) -> int:
        return len(self.clusters)


# ---------------------------------------------------------------------------------------
# Validation (host, before any device work)
# ---------------------------------------------------------------------------------------
def _check_params(inflation, expansion, loops, prune, select, recover, recover_pct, max_iterations):
    inflation = as_float(inflation, "inflation")
    if not np.isfinite(inflation) or inflation <= 1.0:
        raise ValueError(f"inflation must be a finite number > 1 (mcl's -I; 2.0 is its default), got {inflation}")
    expansion = as_int(expansion, "expansion", minimum=2)
    if not isinstance(loops, str) or loops not in LOOP_MODES:
        raise ValueError(f"loops must be one of {LOOP_MODES}, got {loops!r}")
    prune = DEFAULT_PRUNE if prune is None else as_float(prune, "prune")
    if not 0.0 <= prune < 1.0:
        raise ValueError(f"prune must be in [0, 1) (the cutoff below which expanded entries are dropped; "
                         f"0 switches it off), got {prune}")
    select = DEFAULT_SELECT if select is None else as_int(select, "select", minimum=1)
    recover = DEFAULT_RECOVER if recover is None else as_int(recover, "recover", minimum=1)
    pct = DEFAULT_RECOVER_PCT if recover_pct is None else as_float(recover_pct, "recover_pct")
    if not 0.0 <= pct < 100.0:
        raise ValueError(f"recover_pct must be a percentage in [0, 100) (mcl's -pct), got {pct}")
    max_iterations = as_int(max_iterations, "max_iterations", minimum=1)
    return inflation, MCLParams(expansion, prune, select, recover, pct / 100.0), max_iterations


def _is_scipy_sparse(obj) -> bool:
    return type(obj).__module__.startswith("scipy.sparse") and hasattr(obj, "tocoo")


def _bad_weights_error(values: np.ndarray, how_to_drop: str) -> ValueError:
    negative = int(np.count_nonzero(values < 0))
    nonfinite = int(np.count_nonzero(~np.isfinite(values)))
    return ValueError(f"graph weights must be finite and non-negative; found {negative} negative and "
                      f"{nonfinite} non-finite (NaN or inf) weights. Drop them first, e.g. {how_to_drop}")


def _check_weights(values: np.ndarray, how_to_drop: str) -> None:
    if values.size and not (np.all(np.isfinite(values)) and np.all(values >= 0)):
        raise _bad_weights_error(values, how_to_drop)


def _real(values, name) -> np.ndarray:
    arr = host_array(values)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _triplets(graph):
    """(n, rows, cols, values) of the graph's arcs, duplicates already merged."""
    if _is_scipy_sparse(graph):
        if len(graph.shape) != 2 or graph.shape[0] != graph.shape[1]:
            raise ValueError(f"graph must be a square matrix, got shape {graph.shape}")
        coo = graph.tocoo(copy=True)
        coo.sum_duplicates()
        values = _real(coo.data, "graph")
        _check_weights(values, "g.data[~np.isfinite(g.data) | (g.data < 0)] = 0; g.eliminate_zeros()")
        return graph.shape[0], coo.row.astype(np.int64), coo.col.astype(np.int64), values
    if isinstance(graph, tuple) and len(graph) == 2:
        return _pair_triplets(*graph)
    arr = host_array(graph)
    if arr.dtype.kind not in "iufb" or arr.dtype.kind == "b":
        raise TypeError(f"graph must be a scipy.sparse matrix, a numeric square array or the (indices, values) "
                        f"pair of clnet.pearson_topk, got {type(graph).__name__} with dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"graph must be a square matrix, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    _check_weights(arr, "np.where(np.isfinite(g) & (g > 0), g, 0)")
    rows, cols = np.nonzero(arr)
    return arr.shape[0], rows.astype(np.int64), cols.astype(np.int64), arr[rows, cols]


def _pair_triplets(indices, values):
    """The top-k pair, symmetrised as mcl symmetrises label input: the larger weight of
    i->j and j->i in both directions. Index -1 (padding) is no edge."""
    idx = host_array(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"graph[0] (the indices of pearson_topk) must be integers, got dtype {idx.dtype}")
    vals = _real(values, "graph[1]")
    if idx.ndim != 2 or vals.shape != idx.shape:
        raise ValueError(f"graph as (indices, values) needs two arrays of the same (N, k) shape, got "
                         f"{idx.shape} and {vals.shape}")
    n = idx.shape[0]
    if idx.size and (idx.min() < -1 or idx.max() >= n):
        raise ValueError(f"graph[0] (indices) must be in -1..{n - 1} (-1 is padding), found values from "
                         f"{idx.min()} to {idx.max()}")
    present = idx >= 0
    src = np.repeat(np.arange(n, dtype=np.int64), idx.shape[1])[present.ravel()]
    dst = idx[present].astype(np.int64)
    w = vals[present]
    _check_weights(w, "indices = np.where(values > 0, indices, -1)")
    rows, cols, w = np.concatenate([src, dst]), np.concatenate([dst, src]), np.concatenate([w, w])
    keep = w != 0
    rows, cols, w = rows[keep], cols[keep], w[keep]
    order = np.lexsort((-w, rows, cols))
    rows, cols, w = rows[order], cols[order], w[order]
    first = np.concatenate(([True], (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])))[:len(rows)]  # none: no edge
    return n, rows[first], cols[first], w[first]


def _csc_arrays(graph):
    """(n, indptr, indices, values) of the graph by columns, rows ascending within each
    column, duplicates merged. A scipy.sparse graph goes through its own CSC form (int32
    indices, no (row, column) triplets), which keeps a graph of millions of nodes small."""
    if _is_scipy_sparse(graph):
        if len(graph.shape) != 2 or graph.shape[0] != graph.shape[1]:
            raise ValueError(f"graph must be a square matrix, got shape {graph.shape}")
        csc = graph.tocsc(copy=True)
        csc.sum_duplicates()  # also sorts the rows of every column
        values = _real(csc.data, "graph")
        _check_weights(values, "g.data[~np.isfinite(g.data) | (g.data < 0)] = 0; g.eliminate_zeros()")
        return graph.shape[0], csc.indptr.astype(np.int64), csc.indices.astype(np.int32, copy=False), values
    n, rows, cols, vals = _triplets(graph)
    order = np.lexsort((rows, cols))
    indptr = np.concatenate(([0], np.cumsum(np.bincount(cols, minlength=n)))).astype(np.int64)
    return n, indptr, rows[order].astype(np.int32), vals[order]


def start_matrix(graph, loops: str = "mcl") -> Columns:
    """The graph as mcl's start matrix: float64 columns (column j = node j's edges), loops
    set (``loops="mcl"``: each loop replaced by the column's largest other weight, 1 for a
    node with no edges; ``"keep"``: as given), every column scaled to sum 1."""
    n, indptr, indices, vals = _csc_arrays(graph)
    col = np.repeat(np.arange(n, dtype=np.int32), np.diff(indptr))
    keep = vals != 0
    if loops == "mcl":
        keep &= indices != col
    if not keep.all():
        indices, vals, col = indices[keep], vals[keep], col[keep]
    del keep
    counts = np.bincount(col, minlength=n)
    if loops == "mcl":
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        loop = np.zeros(n)
        filled = counts > 0
        if vals.size:
            loop[filled] = np.maximum.reduceat(vals, starts[filled])
        loop[loop == 0] = 1.0
        # Each loop goes before the first entry of its column with a larger row, which keeps
        # the rows of every column ascending.
        below = np.bincount(col[indices < col], minlength=n)
        at = starts + below
        indices = np.insert(indices, at, np.arange(n, dtype=np.int32))
        vals = np.insert(vals, at, loop)
        counts += 1
        col = None
    indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    del col
    sums = np.bincount(np.repeat(np.arange(n, dtype=np.int32), counts), weights=vals, minlength=n)
    vals /= np.repeat(np.where(sums > 0, sums, 1.0), counts)
    return Columns(n, indptr, indices, vals)


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------
def mcl(graph, inflation: float = 2.0, *, expansion: int = 2, loops: str = "mcl", prune=None, select=None,
        recover=None, recover_pct=None, max_iterations: int = 100, backend: BackendLike = None, dtype=None,
        progress=None) -> MCLResult:
    """Markov clustering of ``graph`` as mcl 22-282 clusters it: an :class:`MCLResult`.

    ``graph``: a scipy.sparse matrix (any format), a dense square array, or the
    ``(indices, values)`` pair of :func:`clnet.pearson_topk` (index -1 is no edge; the
    graph is symmetrised with the larger weight of i->j and j->i, as mcl reads label
    input). Entry ``graph[i, j]`` sits in column j, node j's column, exactly as in mcl's
    matrix format; an asymmetric matrix is clustered as mcl clusters that matrix.
    Weights must be finite and non-negative (zeros are no edge).

    Parameters, with mcl's defaults (``mcl -z``, scheme 6):

    * ``inflation`` (mcl's -I, default 2.0): > 1; the one parameter that sets granularity.
    * ``expansion``: the matrix power per iteration, an integer >= 2 (mcl uses 2).
    * ``loops``: ``"mcl"`` (default: mcl's, every loop set to the largest weight of its
      node's other edges, 1 for an isolated node) or ``"keep"`` (the given loops, as
      ``mcl --discard-loops=n``).
    * ``prune``: the cutoff below which an expanded entry is dropped, in [0, 1);
      default 0.99999 / 10000 (mcl's -P 10000); 0 switches it off.
    * ``select`` (mcl's -S, default 1100): entries kept per column when more survive.
    * ``recover`` (mcl's -R, default 1400) and ``recover_pct`` (mcl's -pct, default 90):
      when the entries kept carry less than recover_pct percent of a column's mass and
      number fewer than ``recover``, the largest dropped ones come back, up to ``recover``.
    * ``max_iterations`` (default 100; mcl's is 10000): the last iterand is interpreted
      when it is reached, with ``converged=False``.

    Convergence as mcl: the largest column chaos below 1e-4; after 40 iterations the
    inflation grows by 0.1% per iteration. Overlap is cut (a node in two clusters stays
    in the first, mcl's default); clusters are ordered largest first, ties by smallest
    member. ``dtype``: float32 (default) or float64. ``progress``: None shows a tqdm bar
    (iteration, chaos, nonzeros) once a run lasts a few seconds, True always, False never.

    >>> import numpy as np, clnet
    >>> g = np.kron(np.eye(2), np.ones((3, 3)))            # two triangles
    >>> clnet.mcl(g, backend="numpy").labels
    array([0, 0, 0, 1, 1, 1])
    """
    inflation, params, max_iterations = _check_params(inflation, expansion, loops, prune, select, recover,
                                                      recover_pct, max_iterations)
    if progress not in (None, True, False):
        raise TypeError(f"progress must be None, True or False, got {progress!r}")
    dt = get_backend(backend).check_dtype(dtype)
    start = start_matrix(graph, loops)
    n = start.n
    if n == 0:
        return MCLResult(np.zeros(0, np.int64), [], 0, True, 0.0)
    if start.nnz == n and np.array_equal(start.indices, np.arange(n)):
        # Only loops: every node is an attractor of its own (mcl converges in one iteration).
        clusters = [np.array([i], dtype=np.int64) for i in range(n)]
        return MCLResult(np.arange(n, dtype=np.int64), clusters, 1, True, 0.0)
    # The host copy of the start matrix is handed to the backend and dropped once the backend
    # holds it (for a large graph it is as large as the graph); a rerun on another backend
    # after a device failure builds it again from the graph.
    pending = [start]
    del start

    def take_start():
        return pending.pop() if pending else start_matrix(graph, loops)

    iterations, converged, chaos, limit = run(
        backend, "mcl", lambda be: _iterate(be, take_start, dt, params, inflation, max_iterations, progress))
    clusters = interpret(limit)
    return MCLResult(labels_of(clusters, n), clusters, iterations, converged, chaos)


def _iterate(be, take_start, dt, params, inflation, max_iterations, progress):
    plan = be.op("mcl_plan")(take_start(), be.check_dtype(dt), params)
    bar = _progress(max_iterations, progress)
    chaos, converged, done = float("inf"), False, 0
    try:
        for done in range(1, max_iterations + 1):
            chaos, nonzeros = plan.iterate(inflation)
            if bar is not None:  # the postfix first, so that the update shows this iteration's
                bar.set_postfix(chaos=f"{chaos:.3g}", nonzeros=nonzeros, refresh=False)
                bar.update(1)
            if done >= INFLATION_BUMP_AFTER:
                inflation *= INFLATION_BUMP
            if chaos < CHAOS_LIMIT:
                converged = True
                break
    finally:
        if bar is not None:
            bar.close()
    return done, converged, chaos, plan.current()


def _progress(total: int, progress):
    if progress is False:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="mcl iterations", unit="it", leave=False,
                delay=PROGRESS_DELAY_S if progress is None else 0.0,
                disable=None if progress is None else False)
