"""Markov clustering host code shared by the public API and every backend.

What lives here: mcl 22-282's default parameters, the column-stochastic matrix every
backend iterates (:class:`Columns`), the per-column pruning rule written once on
vectorised segments (:func:`prune_columns`, the NumPy backend's rule and the OpenCL
kernel's specification), and the interpretation of the limit matrix as a clustering
(:func:`interpret`). The semantics are mcl's own (docs/SEMANTICS.md, "Markov
clustering"); they were read from mcl's manual and checked against the binary by test.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

# mcl 22-282's defaults: resource scheme 6 (`mcl --show-schemes`, `mcl -z`): -P 10000 -S 1100
# -R 1400 -pct 90. mcl turns -P n into the cutoff 0.99999 / n, so an entry of exactly 1e-4
# survives; the cutoff here is that number.
DEFAULT_PRUNE_NUMBER = 10000
DEFAULT_PRUNE = 0.99999 / DEFAULT_PRUNE_NUMBER
DEFAULT_SELECT = 1100
DEFAULT_RECOVER = 1400
DEFAULT_RECOVER_PCT = 90
# mcl stops when the largest column chaos of an expanded iterand falls below this.
CHAOS_LIMIT = 1e-4
# After 40 iterations mcl raises the inflation by 0.1% per iteration, which breaks the rare
# periodic states (a flip-flop subgraph); the same here so long runs end as mcl's do.
INFLATION_BUMP_AFTER = 40
INFLATION_BUMP = 1.001
# Interpretation (mcl's mclDag): an entry survives when it is within these weights of the
# column's loop and maximum.
DAG_SELF_WEIGHT = 0.999
DAG_MAX_WEIGHT = 0.001
DAG_DELTA = 0.01


@dataclass(frozen=True)
class MCLParams:
    """The per-iteration parameters of a run (validated by clnet.mcl)."""

    expansion: int = 2
    prune: float = DEFAULT_PRUNE
    select: int = DEFAULT_SELECT
    recover: int = DEFAULT_RECOVER
    recover_fraction: float = DEFAULT_RECOVER_PCT / 100.0


@dataclass
class Columns:
    """A square sparse matrix by columns (CSC): column j holds rows ``indices[indptr[j]:
    indptr[j+1]]`` (ascending) with values ``data[...]``. int64 ``indptr``, int32 ``indices``."""

    n: int
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def column_of_entry(self) -> np.ndarray:
        return np.repeat(np.arange(self.n, dtype=np.int64), np.diff(self.indptr))

    def column_sums(self) -> np.ndarray:
        return np.bincount(self.column_of_entry(), weights=self.data.astype(np.float64), minlength=self.n)

    def to_dense(self) -> np.ndarray:
        out = np.zeros((self.n, self.n), dtype=np.float64)
        out[self.indices, self.column_of_entry()] = self.data
        return out


def normalise_columns(cols: Columns) -> Columns:
    """Every non-empty column divided by its sum (float64 in, same dtype out)."""
    sums = cols.column_sums()
    col = cols.column_of_entry()
    data = (cols.data / sums[col]).astype(cols.data.dtype) if cols.nnz else cols.data.copy()
    return Columns(cols.n, cols.indptr, cols.indices, data)


# ---------------------------------------------------------------------------------------
# Pruning, selection, recovery: mcl's rule per expanded column, on vectorised segments
# ---------------------------------------------------------------------------------------
def _kth_largest(sorted_desc: np.ndarray, starts: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """Per column, its k-th largest value (``sorted_desc`` holds each column's values in
    descending order from ``starts``); -inf where a column has fewer than k values."""
    out = np.full(len(starts), -np.inf)
    has = counts >= k
    out[has] = sorted_desc[starts[has] + k - 1]
    return out


def prune_thresholds(col: np.ndarray, values: np.ndarray, n_cols: int, params: MCLParams) -> np.ndarray:
    """Per column, the value an entry must reach to survive mcl's pruning of one expanded
    column (entries ``values`` of column ``col``; each column stochastic, any order).

    mcl's rule (mcl/expand.c, mclExpandVector1), with n entries, p of them >= the cutoff and
    v_k the column's k-th largest value:

    * recovery when too much mass was lost: p < R and the mass of those p < pct: keep the
      R largest (n > R) or everything;
    * otherwise selection when p > S: keep the values >= v_S; if the s values kept then
      number fewer than R and carry less than pct of the mass, recover up to the R largest
      of the p (or all p when p <= R);
    * otherwise the cutoff alone.

    Ties at a threshold are all kept, as in mcl (it keeps every value >= the threshold).
    """
    vals = values.astype(np.float64)
    counts = np.bincount(col, minlength=n_cols)
    kept = vals >= params.prune
    n_prune = np.bincount(col, weights=kept, minlength=n_cols)
    mass_prune = np.bincount(col, weights=np.where(kept, vals, 0.0), minlength=n_cols)
    recover, select = params.recover, params.select
    recovering = (n_prune < recover) & (mass_prune < params.recover_fraction)
    selecting = ~recovering & (n_prune > select)
    # Only columns that select, or recover without keeping everything, need their values sorted.
    ranked = selecting | (recovering & (counts > recover))
    in_ranked = ranked[col]
    ranked_counts = np.where(ranked, counts, 0)
    sub_col, sub_vals = col[in_ranked], vals[in_ranked]
    sorted_desc = sub_vals[np.lexsort((-sub_vals, sub_col))]
    starts = (np.cumsum(ranked_counts) - ranked_counts).astype(np.int64)
    v_r = _kth_largest(sorted_desc, starts, ranked_counts, recover)
    v_s = _kth_largest(sorted_desc, starts, ranked_counts, select)

    threshold = np.full(n_cols, params.prune, dtype=np.float64)
    threshold[recovering] = np.where(counts[recovering] > recover, v_r[recovering], -np.inf)

    if np.any(selecting):
        selected = vals >= v_s[col]
        n_sel = np.bincount(col, weights=selected, minlength=n_cols)
        mass_sel = np.bincount(col, weights=np.where(selected, vals, 0.0), minlength=n_cols)
        again = selecting & (n_sel < recover) & (mass_sel < params.recover_fraction)
        threshold[selecting] = v_s[selecting]
        threshold[again] = np.where(n_prune[again] > recover, v_r[again], params.prune)
    return threshold


def prune_columns(expanded: Columns, params: MCLParams) -> Tuple[Columns, np.ndarray]:
    """mcl's pruning of every column of an expanded iterand, then each column rescaled to
    sum 1; and each column's chaos, ``(max - sum of squares) * entries kept``, measured on
    the expanded column as mcl measures it. Returns (pruned columns, chaos per column)."""
    n = expanded.n
    col = expanded.column_of_entry()
    vals = expanded.data.astype(np.float64)
    if expanded.nnz == 0:
        return Columns(n, np.zeros(n + 1, np.int64), expanded.indices[:0], expanded.data[:0]), np.zeros(n)
    threshold = prune_thresholds(col, vals, n, params)
    keep = vals >= threshold[col]
    kept_per_col = np.bincount(col[keep], minlength=n)
    column_max = np.zeros(n)
    np.maximum.at(column_max, col, vals)
    squares = np.bincount(col, weights=vals * vals, minlength=n)
    chaos = np.maximum(column_max - squares, 0.0) * kept_per_col
    indptr = np.concatenate(([0], np.cumsum(kept_per_col))).astype(np.int64)
    data = vals[keep]
    mass = np.bincount(col[keep], weights=data, minlength=n)
    nonzero = mass[col[keep]]
    data = np.where(nonzero > 0, data / np.where(nonzero > 0, nonzero, 1.0), data)
    return Columns(n, indptr, expanded.indices[keep], data.astype(expanded.data.dtype)), chaos


def inflate(cols: Columns, power: float) -> Columns:
    """Entrywise ``power``, then every column rescaled to sum 1 (mcl's mclvInflate)."""
    data = cols.data.astype(np.float64) ** power
    sums = np.bincount(cols.column_of_entry(), weights=data, minlength=cols.n)
    col = cols.column_of_entry()
    data = data / np.where(sums[col] > 0, sums[col], 1.0)
    return Columns(cols.n, cols.indptr, cols.indices, data.astype(cols.data.dtype))


# ---------------------------------------------------------------------------------------
# Interpretation of the limit as a clustering (mcl's mclDag, mclInterpret, clmEnstrict)
# ---------------------------------------------------------------------------------------
def _dag(limit: Columns) -> Columns:
    """Per column, the entries close to its loop or its maximum, renormalised, then those
    of at least 1/(n+1) where n is the number kept (mcl interprets this graph)."""
    n = limit.n
    col = limit.column_of_entry()
    vals = np.asarray(limit.data, dtype=np.float64)  # no copy of a float64 limit
    selfval = np.zeros(n)
    loop = limit.indices == col
    selfval[col[loop]] = vals[loop]
    maxval = np.zeros(n)
    np.maximum.at(maxval, col, vals)
    bar = np.where(selfval < maxval, DAG_SELF_WEIGHT * selfval + DAG_MAX_WEIGHT * maxval,
                   selfval / (1.0 + DAG_DELTA))
    keep = vals >= bar[col]
    col, rows, vals = col[keep], limit.indices[keep], vals[keep]
    sums = np.bincount(col, weights=vals, minlength=n)
    counts = np.bincount(col, minlength=n)
    keep = vals / sums[col] >= 1.0 / (counts[col] + 1)
    col, rows, vals = col[keep], rows[keep], vals[keep]
    indptr = np.concatenate(([0], np.cumsum(np.bincount(col, minlength=n)))).astype(np.int64)
    return Columns(n, indptr, rows, vals)


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component representative (smallest node) of each of n nodes, edges a-b."""
    label = np.arange(n)
    while True:
        low = np.minimum(label[a], label[b])
        changed = False
        for ends in (a, b):
            before = label.copy()
            np.minimum.at(label, ends, low)
            changed |= bool(np.any(label != before))
        label = label[label]  # pointer jumping: components settle in O(log n) rounds
        if not changed:
            return label


def _sorted_clusters(members: List[np.ndarray]) -> List[np.ndarray]:
    """mcl's output order: larger clusters first, then lexicographically by members."""
    return sorted(members, key=lambda m: (-len(m), m.tolist()))


def interpret(limit: Columns) -> List[np.ndarray]:
    """The clustering of a limit matrix as mcl outputs it by default (-overlap cut, -sort
    revsize): attractors (nodes keeping their loop in the DAG) joined into systems, each
    system a cluster; every other node joins the first cluster, in mcl's order of the
    systems, among those whose attractors it reaches in the DAG; nodes that reach no
    attractor form one extra cluster (mcl's "garbage entries"). Clusters largest first,
    ties by their smallest member."""
    n = limit.n
    if n == 0:
        return []
    dag = _dag(limit)
    col = dag.column_of_entry()
    rows = dag.indices.astype(np.int64)
    attractor = np.zeros(n, dtype=bool)
    attractor[col[rows == col]] = True
    both = attractor[rows] & attractor[col] & (rows != col)
    rep = _components(n, rows[both], col[both])
    systems = {}
    for node in np.flatnonzero(attractor):
        systems.setdefault(int(rep[node]), []).append(node)
    ordered = _sorted_clusters([np.array(v, dtype=np.int64) for v in systems.values()])
    inf = len(ordered)
    own = np.full(n, inf, dtype=np.int64)
    for cid, members in enumerate(ordered):
        own[members] = cid
    # reach[d]: the smallest system id reachable from d through the DAG (closure of d's column).
    reach = np.full(n, inf, dtype=np.int64)
    while True:
        through = np.minimum(own, reach)[rows]
        before = reach.copy()
        np.minimum.at(reach, col, through)
        if np.array_equal(reach, before):
            break
    assigned = np.where(attractor, own, reach)
    clusters = [np.flatnonzero(assigned == cid) for cid in range(inf)]
    missing = np.flatnonzero(assigned == inf)
    if len(missing):
        clusters.append(missing)
    return _sorted_clusters([c for c in clusters if len(c)])


def labels_of(clusters: List[np.ndarray], n: int) -> np.ndarray:
    labels = np.full(n, -1, dtype=np.int64)
    for cid, members in enumerate(clusters):
        labels[members] = cid
    return labels
