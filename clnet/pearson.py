"""Pairwise Pearson correlation with missing data: dense, thresholded and top-k.

Public API: :func:`pearson`, :func:`pearson_threshold`, :func:`pearson_topk`.
Semantics (pairwise-complete, non-finite = missing, ``min_overlap``, zero variance ->
NaN, clipping, ``transform="diff"``, ties): ``shared/docs/SEMANTICS.md``.

How it is computed, on every backend:

1. On the host, in float64, each row is centred on the mean of its own finite values
   and scaled by a power of two and its root mean square. Correlation does not change,
   but the values become O(1) with a near-zero mean, so the sums below lose almost
   nothing in float32 even for rows around 1e4 with unit variance (the one-pass formula
   on raw values loses everything there).
2. A backend builds a *plan* from the prepared rows (``backend.op("pearson_plan")``):
   the data it keeps on its device, and operations on a strip of rows against all
   columns: ``block`` (the dense strip), ``topk`` and ``threshold`` (only the selected
   pairs come back). The six pairwise-masked sums n, Sx, Sy, Sxx, Syy, Sxy of a strip
   are masked matrix products; complete data needs only one product.
3. Where r is formed from the sums, a pair whose variance over its common positions
   cancels (below rescue_fraction(dtype) of its sum of squares: typically a handful of
   common positions whose values nearly coincide) is marked RESCUE; the host recomputes
   exactly those pairs in float64 with a two-pass formula (rescue_pairs) and patches
   them in before any dense output or selection (OpenCL: a counter says whether a strip
   has any; device top-k strips are patched and written back before the merges).
4. The drivers here walk the rows strip by strip, so the sparse outputs never hold more
   than one strip of the N x N matrix, and show a progress bar (tqdm, when installed)
   once a run has taken a few seconds.

The OpenCL implementation is the mixin :class:`PearsonKernels` at the bottom; the
NumPy reference is ``clnet_fallback.pearson``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ._validate import as_float, as_int, as_real_array
from .backend import BackendLike, device_fallback, get_backend

__all__ = ["pearson", "pearson_threshold", "pearson_topk"]

TRANSFORMS = (None, "diff")
# A strip of rows is sized so that its working arrays stay within this many bytes.
STRIP_BUDGET = 96 * 2**20
# The progress bar appears only when a run lasts longer than this many seconds.
PROGRESS_DELAY_S = 3.0


# ---------------------------------------------------------------------------------------
# Validation and preparation (host, float64)
# ---------------------------------------------------------------------------------------
def _is_dataframe(obj) -> bool:
    return hasattr(obj, "columns") and hasattr(obj, "index") and hasattr(obj, "to_numpy") \
        and getattr(obj, "ndim", 2) == 2


def _as_matrix(value, name: str) -> Tuple[np.ndarray, Optional[object]]:
    """``value`` as a float64 (items, positions) array, and its row labels for a DataFrame."""
    labels = None
    if _is_dataframe(value):
        for col, dt in zip(value.columns, value.dtypes):
            kind = getattr(dt, "kind", "O")
            if kind not in "iufb" and not str(dt).lower().startswith(("float", "int", "uint")):
                raise TypeError(f"{name} must hold numbers only, but column {col!r} has dtype {dt}")
            if kind == "b" or str(dt).lower() == "boolean":
                raise TypeError(f"{name} must hold real numbers, but column {col!r} is boolean")
        labels = value.index
        value = value.to_numpy(dtype=np.float64, na_value=np.nan)
    elif hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "O":
        raise TypeError(f"{name} must be a numeric array, got dtype object; convert it with "
                        f".astype(float) if its elements are numbers")
    elif hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "SU":
        raise TypeError(f"{name} must be a numeric array, got a string dtype {value.dtype}")
    arr = as_real_array(value, name, np.float64, ndim=(2,))
    return arr, labels


def _check_transform(transform) -> Optional[str]:
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be None or 'diff', got {transform!r}")
    return transform


def diff_rows(a: np.ndarray) -> np.ndarray:
    """First differences along each row; missing where either value is missing."""
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.diff(a, axis=1)
    d[~np.isfinite(d)] = np.nan
    return d


def standardise_rows(a: np.ndarray) -> "Prepared":
    """Rows centred on the mean of their finite values and scaled to unit RMS (float64).

    Missing values (any non-finite) are 0 in ``filled`` and False in ``valid``. Each row
    is first shifted by its first finite value, so a row that is constant over its
    finite values becomes exactly zero: its variance is exactly zero over every subset.
    """
    a = np.asarray(a, dtype=np.float64)
    valid = np.isfinite(a)
    complete = bool(valid.all())
    count = np.full(len(a), a.shape[1]) if complete else valid.sum(axis=1)
    if a.size == 0:
        return Prepared(np.zeros(a.shape), valid, complete, count)
    with np.errstate(over="ignore", invalid="ignore"):
        z = _shift_by_first(a, valid, complete)
        ss = np.einsum("ij,ij->i", z, z)
    if not np.isfinite(ss).all() or ((ss > 0) & (ss < 1e-280)).any():
        # Huge or tiny rows: power-of-two scales (exact) keep the squares finite.
        z = _shift_by_first(np.ldexp(a, -_exponent(np.where(valid, a, 0.0))), valid, False)
        z = np.ldexp(z, -_exponent(z))
    n = np.maximum(count, 1)
    mean = z.sum(axis=1) / n
    z -= mean[:, None]
    if not complete:
        z *= valid
    ss = np.einsum("ij,ij->i", z, z)
    with np.errstate(divide="ignore"):
        scale = np.where(ss > 0, 1.0 / np.sqrt(ss / n), 0.0)
    z *= scale[:, None]
    return Prepared(z, valid, complete, count)


def _shift_by_first(a, valid, complete):
    first = a[np.arange(len(a)), np.argmax(valid, axis=1)]
    first = np.where(np.isfinite(first), first, 0.0)[:, None]
    return a - first if complete else np.where(valid, a - first, 0.0)


def _exponent(z):
    """Per row, the power of two that brings the largest magnitude into [0.5, 1)."""
    big = np.abs(z).max(axis=1)
    return np.frexp(np.where(big > 0, big, 1.0))[1][:, None]


class Prepared:
    """Rows ready for a backend: standardised values with 0 where missing, validity, and
    whether nothing is missing at all (the fast path)."""

    def __init__(self, filled: np.ndarray, valid: np.ndarray, complete: bool, count: np.ndarray):
        self.filled = filled
        self.valid = valid
        self.complete = complete
        self.count = count  # finite values per row

    @property
    def shape(self):
        return self.filled.shape


def _prepare(X, Y, transform, min_overlap, dtype_arg, backend):
    x, labels_x = _as_matrix(X, "X")
    labels_y = None
    y = None
    if Y is not None:
        y, labels_y = _as_matrix(Y, "Y")
        if y.shape[1] != x.shape[1]:
            raise ValueError(f"Y must have as many columns (positions) as X: X has {x.shape[1]}, "
                             f"Y has {y.shape[1]}")
    transform = _check_transform(transform)
    min_overlap = as_int(min_overlap, "min_overlap", minimum=1)
    be = get_backend(backend)
    dt = be.check_dtype(dtype_arg)
    if transform == "diff":
        x = diff_rows(x)
        y = None if y is None else diff_rows(y)
    px = standardise_rows(x)
    py = None if y is None else standardise_rows(y)
    return be, dt, px, py, min_overlap, labels_x, labels_y


def _plan(be, dt, px, py, min_overlap):
    return be.op("pearson_plan")(px, py, dt, min_overlap)


def _progress(total: int, desc: str, progress):
    """A tqdm bar that shows itself after a few seconds, or None."""
    if progress is False:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    # Automatic (None): only on a terminal, and only once the run has lasted a few seconds.
    return tqdm(total=total, desc=desc, unit="rows", leave=False,
                delay=PROGRESS_DELAY_S if progress is None else 0.0,
                disable=None if progress is None else False)


def _strips(plan, n_rows: int, desc: str, progress):
    """(start, stop) of each strip of rows, advancing a progress bar."""
    bar = _progress(n_rows, desc, progress) if n_rows else None
    step = plan.strip_rows
    try:
        for start in range(0, n_rows, step):
            stop = min(n_rows, start + step)
            yield start, stop
            if bar is not None:
                bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------
@device_fallback
def pearson(X, Y=None, *, min_overlap: int = 2, transform: Optional[str] = None,
            backend: BackendLike = None, dtype=None):
    """Pairwise-complete Pearson correlation between the rows of X (and of Y).

    Rows are items (curves), columns are positions. Any non-finite value is missing;
    ``r[i, j]`` uses the positions where both rows are finite, is NaN with fewer than
    ``min_overlap`` of them or when either row is constant there, and is clipped to
    [-1, 1]. ``transform="diff"`` correlates first differences (slopes). With ``Y``
    the result is ``(N, K)``, otherwise ``(N, N)``. A pandas DataFrame in gives a
    DataFrame labelled with the row labels out. ``dtype``: float32 (default) or float64.

    >>> import numpy as np, clnet
    >>> X = np.array([[1, 2, 3, np.nan], [2, 4, 7, 1], [3, 2, 1, 0]])
    >>> clnet.pearson(X, backend="numpy").round(3)
    array([[ 1.   ,  0.993, -1.   ],
           [ 0.993,  1.   ,  0.   ],
           [-1.   ,  0.   ,  1.   ]], dtype=float32)
    """
    be, dt, px, py, mo, lx, ly = _prepare(X, Y, transform, min_overlap, dtype, backend)
    n_rows = px.shape[0]
    n_cols = n_rows if py is None else py.shape[0]
    if n_rows == 0 or n_cols == 0:
        out = np.empty((n_rows, n_cols), dtype=dt)
    else:
        out = _plan(be, dt, px, py, mo).dense()
    if lx is not None:
        import pandas as pd

        cols = lx if py is None else (ly if ly is not None else pd.RangeIndex(n_cols))
        return pd.DataFrame(out, index=lx, columns=cols)
    return out


@device_fallback
def pearson_topk(X, k: int, Y=None, *, min_overlap: int = 2, transform: Optional[str] = None,
                 backend: BackendLike = None, dtype=None, progress=None):
    """Per row of X, the k most correlated rows (of X itself, or of Y): ``(indices, values)``.

    Both are ``(N, k)``, best first: the k largest ``r`` excluding the row itself (when
    no Y is given), ties broken by the lower index. A row with fewer than k defined
    neighbours is padded with index -1 and value NaN. Computed strip by strip: memory
    grows with N * k and one strip, never with N * N. ``1 <= k < N`` (``k <= K`` with Y).
    ``progress``: None shows a tqdm bar once the run takes a few seconds, True always,
    False never. A DataFrame in gives two DataFrames out, indexed by its row labels
    (the indices stay positions).
    """
    x_rows = _row_count(X, "X")
    k = as_int(k, "k", minimum=1)
    if Y is None and k >= x_rows:
        raise ValueError(f"k must be smaller than the number of rows of X ({x_rows}), got k={k}")
    if Y is not None and k > _row_count(Y, "Y"):
        raise ValueError(f"k must be at most the number of rows of Y ({_row_count(Y, 'Y')}), got k={k}")
    be, dt, px, py, mo, lx, _ = _prepare(X, Y, transform, min_overlap, dtype, backend)
    n_rows = px.shape[0]
    indices = np.full((n_rows, k), -1, dtype=np.int64)
    values = np.full((n_rows, k), np.nan, dtype=dt)
    plan = _plan(be, dt, px, py, mo)
    strips = _strips(plan, n_rows, "pearson top-k", progress)
    symmetric = getattr(plan, "topk_symmetric", None) if py is None else None
    found = symmetric(k, strips) if symmetric is not None else None  # each pair computed once
    if found is not None:
        indices[:], values[:] = found
    else:
        for start, stop in strips:
            indices[start:stop], values[start:stop] = plan.topk(start, stop, k)
    if lx is not None:
        import pandas as pd

        return pd.DataFrame(indices, index=lx), pd.DataFrame(values, index=lx)
    return indices, values


@device_fallback
def pearson_threshold(X, threshold: float, Y=None, *, min_overlap: int = 2,
                      transform: Optional[str] = None, backend: BackendLike = None, dtype=None,
                      progress=None):
    """The pairs with ``|r| >= threshold`` as a ``scipy.sparse.csr_matrix`` (sign kept).

    The diagonal is excluded (when no Y is given); NaN pairs are never kept. Computed
    strip by strip: memory grows with the number of kept pairs and one strip.
    ``threshold`` lies in [0, 1]. ``progress`` as in :func:`pearson_topk`.
    """
    t = as_float(threshold, "threshold")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold!r}")
    be, dt, px, py, mo, _, _ = _prepare(X, Y, transform, min_overlap, dtype, backend)
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a test dependency
        raise ImportError("pearson_threshold returns a scipy.sparse matrix: pip install scipy") from None
    n_rows = px.shape[0]
    n_cols = n_rows if py is None else py.shape[0]
    rows, cols, vals = [], [], []
    if n_rows and n_cols:
        plan = _plan(be, dt, px, py, mo)
        for start, stop in _strips(plan, n_rows, "pearson threshold", progress):
            r, c, v = plan.threshold(start, stop, t)
            rows.append(r)
            cols.append(c)
            vals.append(v)
    cat = (lambda parts, d: np.concatenate(parts).astype(d, copy=False) if parts else np.empty(0, d))
    return sp.csr_matrix((cat(vals, dt), (cat(rows, np.int64), cat(cols, np.int64))),
                         shape=(n_rows, n_cols))


def _row_count(value, name: str) -> int:
    shape = getattr(value, "shape", None)
    if shape is None:
        shape = np.shape(value)
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2-dimensional (items x positions), got shape {tuple(shape)}")
    return int(shape[0])


# ---------------------------------------------------------------------------------------
# Shared by the backends' plans
# ---------------------------------------------------------------------------------------
def var_epsilon(dtype) -> float:
    """Relative variance below which a row counts as constant over a pair's positions.

    The sums carry a rounding error of a few units of ``eps * Sxx``; a variance under
    64 of those cannot be told from zero (and is exactly zero for constant rows).
    """
    return 64.0 * float(np.finfo(dtype).eps)


# A pair whose r cannot be trusted from its sums is marked with this value (outside
# [-1, 1], exact in every dtype) and recomputed on the host, see rescue_fraction.
RESCUE = 2.0
# Accuracy the rescue guarantees for the pairs it leaves alone, per dtype.
RESCUE_TARGET = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
# Pairs recomputed on the host at once (bounds the host's working memory).
RESCUE_CHUNK = 4096


def rescue_fraction(dtype) -> float:
    """Relative pairwise variance below which a pair's r is recomputed on the host.

    With the rows centred on their own means, the sums of a pair carry rounding errors of
    a few units of ``eps * Sxx`` (``Sxx``: the sum of squares over the common positions),
    so ``vx = Sxx - Sx^2 / n`` is known to about ``eps * Sxx / vx`` relatively, and r
    alike (also through ``Sxy - Sx Sy / n``, bounded by the same ratios). A pair with
    ``vx < tau * Sxx`` or ``vy < tau * Syy`` is recomputed; the others keep an error of
    a few ``eps / tau``. ``tau = 16 eps / target`` leaves a factor 16 for those "few":
    about 0.019 in float32 (target 1e-4), 3.6e-5 in float64 (target 1e-10). Typical
    pairs have vx close to Sxx; those flagged are mostly pairs with a handful of common
    positions whose values nearly coincide.
    """
    dt = np.dtype(dtype)
    return 16.0 * float(np.finfo(dt).eps) / RESCUE_TARGET.get(dt, 1e-4)


def rescue_pairs(rows: "Prepared", cols: "Prepared", i: np.ndarray, j: np.ndarray,
                 min_overlap: int) -> np.ndarray:
    """r of the pairs (rows[i], cols[j]) in float64 with a two-pass formula.

    Over the common positions of each pair: values shifted by the pair's first common
    value (a row constant there becomes exactly zero), then the pairwise means are
    subtracted and the centred products summed. Vectorised over the pairs, in chunks.
    Zero variance means, as for the float64 sums, a variance at most var_epsilon(float64)
    times the sum of squares (exactly zero for a constant stretch).
    """
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    out = np.empty(len(i))
    eps = var_epsilon(np.float64)
    for s in range(0, len(i), RESCUE_CHUNK):
        a, b = i[s:s + RESCUE_CHUNK], j[s:s + RESCUE_CHUNK]
        w = rows.valid[a] & cols.valid[b]
        x = rows.filled[a]
        y = cols.filled[b]
        n = w.sum(axis=1)
        first = np.argmax(w, axis=1)[:, None]
        with np.errstate(all="ignore"):
            sxx = np.einsum("ij,ij->i", x * w, x)
            syy = np.einsum("ij,ij->i", y * w, y)
            x = np.where(w, x - np.take_along_axis(x, first, axis=1), 0.0)
            y = np.where(w, y - np.take_along_axis(y, first, axis=1), 0.0)
            cnt = np.maximum(n, 1)[:, None]
            x = np.where(w, x - x.sum(axis=1, keepdims=True) / cnt, 0.0)
            y = np.where(w, y - y.sum(axis=1, keepdims=True) / cnt, 0.0)
            vx = np.einsum("ij,ij->i", x, x)
            vy = np.einsum("ij,ij->i", y, y)
            cov = np.einsum("ij,ij->i", x, y)
            r = cov / np.sqrt(vx * vy)
        r = np.where(n == 2, np.copysign(1.0, cov), r)  # two points lie exactly on a line
        r = np.clip(r, -1.0, 1.0)
        ok = (n >= min_overlap) & (vx > eps * sxx) & (vy > eps * syy)
        out[s:s + RESCUE_CHUNK] = np.where(ok, r, np.nan)
    return out


def patch_rescued(r: np.ndarray, row0: int, col0: int, rows: "Prepared", cols: "Prepared",
                  min_overlap: int, where=None) -> int:
    """Replace the RESCUE marks of ``r`` (rows row0.., columns col0.. of the result) by
    their float64 two-pass values, in place; ``where`` (a boolean mask of the marks),
    when the caller has it. Returns the number of pairs recomputed."""
    a, b = np.nonzero(r == RESCUE if where is None else where)
    if len(a):
        r[a, b] = rescue_pairs(rows, cols, a + row0, b + col0, min_overlap)
    return len(a)


def strip_rows(n_cols: int, bytes_per_pair: int, multiple: int = 1) -> int:
    rows = max(multiple, STRIP_BUDGET // max(1, n_cols * bytes_per_pair))
    return max(multiple, (rows // multiple) * multiple)


def unit_rows(values: np.ndarray, dtype) -> np.ndarray:
    """Complete, centred rows scaled to unit Euclidean norm (zero rows stay zero):
    their dot products are the correlations."""
    norm = np.sqrt(np.einsum("ij,ij->i", values, values))[:, None]
    return (values / np.where(norm > 0, norm, 1)).astype(dtype)


def select_topk(r: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per row of ``r`` the k largest values (NaN = undefined), ties by lower column index.

    Linear time per row (a partition, then the ties at the boundary in index order);
    short rows are padded with -1 / NaN.
    """
    b, m = r.shape
    key = np.where(np.isnan(r), np.inf, -r.astype(np.float64))
    if k < m:
        kth = np.partition(key, k - 1, axis=1)[:, k - 1:k]
        below = key < kth
        ties = key == kth
        room = k - below.sum(axis=1, keepdims=True)
        chosen = below | (ties & (np.cumsum(ties, axis=1) <= room))
        cols = np.nonzero(chosen)[1].reshape(b, k)
    else:
        cols = np.broadcast_to(np.arange(m), (b, m))
    picked = np.take_along_axis(key, cols, axis=1)
    order = np.lexsort((cols, picked), axis=1) if b else np.empty((0, cols.shape[1]), dtype=np.int64)
    cols = np.take_along_axis(cols, order, axis=1)
    vals = np.take_along_axis(r, cols, axis=1)
    undefined = np.isnan(vals)
    idx = np.where(undefined, -1, cols).astype(np.int64)
    if idx.shape[1] < k:  # fewer candidates than k (k == number of columns)
        pad = k - idx.shape[1]
        idx = np.hstack([idx, np.full((b, pad), -1, np.int64)])
        vals = np.hstack([vals, np.full((b, pad), np.nan, vals.dtype)])
    return idx, np.where(undefined, np.nan, vals)


def select_threshold(r: np.ndarray, t: float, row0: int, exclude_diagonal: bool):
    with np.errstate(invalid="ignore"):
        keep = np.abs(r) >= t
    if exclude_diagonal:
        d = np.arange(r.shape[0])
        d_cols = row0 + d
        inside = d_cols < r.shape[1]
        keep[d[inside], d_cols[inside]] = False
    rows, cols = np.nonzero(keep)
    return rows + row0, cols, r[rows, cols]


# ---------------------------------------------------------------------------------------
# OpenCL implementation (mixed into every OpenCL backend, see clnet/families.py)
# ---------------------------------------------------------------------------------------
# Rows of k up to this many are selected on the device; larger k on the host.
TOPK_MAX = 64
# Up to this fraction of missing values, the five masked sums are computed as totals
# minus corrections over the missing positions (work grows with what is missing);
# above it, as masked products (fixed work per pair and position).
SPARSE_MISSING_MAX = 0.25
# Private memory of one work-item of clnet_pearson_topk_merge_cols: it holds
# CLNET_MERGE_COLS lists of CLNET_TOPK_MAX candidates (more overflows PoCL's stacks).
MERGE_LIST_SLOTS = 256
# Largest k for which X against itself computes each pair once (see topk_symmetric).
SYMMETRIC_TOPK_MAX = 16


class PearsonKernels:
    def pearson_plan(self, rows, cols, dtype, min_overlap):
        return OpenCLPearsonPlan(self, rows, cols, dtype, min_overlap)


# Work-group size of the kernels that keep top-k lists in private memory. Left to
# itself PoCL picks large work-groups for large launches and lays out every
# work-item's private arrays at once, which overflows its thread stacks.
LIST_GROUP = 8


def _list_global(items: int):
    return (-(-items // LIST_GROUP) * LIST_GROUP,)


def _pack(values: np.ndarray, group: int) -> np.ndarray:
    """(N, M) -> groups of ``group`` rows, position-major inside a group (see pearson.cl)."""
    n, m = values.shape
    g = -(-n // group)
    padded = np.zeros((g * group, m), dtype=values.dtype)
    padded[:n] = values
    return np.ascontiguousarray(padded.reshape(g, group, m).transpose(0, 2, 1))


def _padded(values: np.ndarray, group: int) -> np.ndarray:
    out = np.zeros(-(-len(values) // group) * group, dtype=values.dtype)
    out[:len(values)] = values
    return out


class OpenCLPearsonPlan:
    """Prepared rows on one OpenCL device, and the strip operations of the drivers."""

    ROW_BLOCK = 4  # CLNET_RI: rows per work-item (twice that for complete data)

    def __init__(self, backend, rows: Prepared, cols: Optional[Prepared], dtype, min_overlap: int):
        self.be = backend
        self.dtype = dt = np.dtype(dtype)
        self.vw = 16 if dt == np.float32 else 8
        self.defines = (f"CLNET_VW={self.vw}", f"CLNET_RI={self.ROW_BLOCK}", f"CLNET_TOPK_MAX={TOPK_MAX}")
        self.symmetric = cols is None
        cols = rows if cols is None else cols
        self.n_rows, self.n_cols = rows.shape[0], cols.shape[0]
        self.positions = rows.shape[1]
        self.min_overlap = min_overlap
        self.eps = var_epsilon(dt)
        self.tau = rescue_fraction(dt)
        self.rows, self.cols = rows, cols  # float64, for the pairs recomputed on the host
        self.complete = rows.complete and cols.complete
        self.never_defined = self.positions < min_overlap
        up = backend.to_device
        if self.complete:
            a = unit_rows(rows.filled, dt)
            b = a if self.symmetric else unit_rows(cols.filled, dt)
            self.d_a = up(_pack(a, self.vw), "prepared rows")
            self.d_a_ok = up(_padded(np.any(a != 0, axis=1).astype(dt), self.vw))
            if self.symmetric:
                self.d_b, self.d_b_ok = self.d_a, self.d_a_ok
            else:
                self.d_b = up(_pack(b, self.vw), "prepared columns")
                self.d_b_ok = up(_padded(np.any(b != 0, axis=1).astype(dt), self.vw))
        else:
            def split(prepared):
                return (up(_pack(prepared.filled.astype(dt), self.vw), "prepared values"),
                        up(_pack(prepared.valid.astype(dt), self.vw), "validity mask"))

            self.d_ax, self.d_av = split(rows)
            self.d_bx, self.d_bv = (self.d_ax, self.d_av) if self.symmetric else split(cols)
            operands = [rows] if self.symmetric else [rows, cols]
            missing = sum(p.valid.size - np.count_nonzero(p.valid) for p in operands)
            self.sparse = missing <= SPARSE_MISSING_MAX * sum(p.valid.size for p in operands)
            if self.sparse:
                self.d_a_sparse = self._sparse_tables(rows)
                self.d_b_sparse = self.d_a_sparse if self.symmetric else self._sparse_tables(cols)
        limit = min(STRIP_BUDGET, backend.max_alloc)
        self.strip_rows = max(self.vw, (limit // max(1, self.n_cols * dt.itemsize)) // self.vw * self.vw)
        self.strip_rows = min(self.strip_rows, -(-self.n_rows // self.vw) * self.vw)
        self._d_strip = None
        self._d_flagged = None if self.complete else backend.empty(4, "rescue counter")
        self._zero = np.zeros(1, np.int32)  # kept alive for the non-blocking resets

    def _sparse_tables(self, prepared: Prepared):
        """Per-row totals (sum, sum of squares, count) and the lists of missing positions."""
        x = prepared.filled
        padded = -(-len(x) // self.vw) * self.vw
        stats = np.zeros((3, padded))
        stats[0, :len(x)] = x.sum(axis=1)
        stats[1, :len(x)] = np.einsum("ij,ij->i", x, x)
        stats[2, :len(x)] = prepared.count
        pos = np.flatnonzero(~prepared.valid) % x.shape[1]  # row by row, in order
        ptr = np.zeros(len(x) + 1, dtype=np.int32)
        ptr[1:] = np.cumsum(x.shape[1] - prepared.count)
        up = self.be.to_device
        return (up(stats.astype(self.dtype)), np.int32(padded), up(ptr),
                up(pos.astype(np.int32), "missing positions"))

    # -- kernels ------------------------------------------------------------------------------
    def _enqueue_block(self, start: int, stop: int, out, ld: int, mirror: bool, col0: int = 0) -> None:
        """Rows start..stop-1 against columns col0.. into ``out`` (row stride ``ld``). Pairs
        marked RESCUE are counted in the plan's counter, see :meth:`_rescued`."""
        import pyopencl as cl

        be = self.be
        if not self.complete:
            cl.enqueue_copy(be.queue, self._d_flagged, self._zero, is_blocking=False)
        col_groups = -(-(self.n_cols - col0) // self.vw)
        if not self.complete and self.sparse:
            row_blocks = -(-(stop - start) // 8)  # CLNET_SR
            knl = be.kernel("pearson", "clnet_pearson_sparse", self.dtype, self.defines)
            a_stats, a_padded, a_ptr, a_pos = self.d_a_sparse
            b_stats, b_padded, b_ptr, b_pos = self.d_b_sparse
            args = (self.d_ax, self.d_av, a_stats, a_padded, a_ptr, a_pos,
                    self.d_bx, self.d_bv, b_stats, b_ptr, b_pos, b_padded, np.int32(self.positions),
                    np.int32(start), np.int32(stop - start), np.int32(self.n_cols), np.int32(col0),
                    self.dtype.type(self.min_overlap), self.dtype.type(self.eps),
                    np.int32(mirror), out, np.int64(ld), self.dtype.type(self.tau), self._d_flagged)
        elif self.complete:
            row_blocks = -(-(stop - start) // (2 * self.ROW_BLOCK))
            knl = be.kernel("pearson", "clnet_pearson_complete", self.dtype, self.defines)
            args = (self.d_a, self.d_a_ok, self.d_b, self.d_b_ok, np.int32(self.positions),
                    np.int32(start), np.int32(stop - start), np.int32(self.n_cols), np.int32(col0),
                    np.int32(mirror), out, np.int64(ld))
        else:
            row_blocks = -(-(stop - start) // self.ROW_BLOCK)
            knl = be.kernel("pearson", "clnet_pearson_masked", self.dtype, self.defines)
            args = (self.d_ax, self.d_av, self.d_bx, self.d_bv, np.int32(self.positions),
                    np.int32(start), np.int32(stop - start), np.int32(self.n_cols), np.int32(col0),
                    self.dtype.type(self.min_overlap), self.dtype.type(self.eps),
                    np.int32(mirror), out, np.int64(ld), self.dtype.type(self.tau), self._d_flagged)
        knl(be.queue, (col_groups, row_blocks), None, *args)

    def _rescued(self) -> bool:
        """Whether the last block launch marked any pair for recomputation (see
        clnet.pearson.rescue_fraction). Complete data never needs it."""
        import pyopencl as cl

        if self.complete:
            return False
        count = np.zeros(1, np.int32)
        cl.enqueue_copy(self.be.queue, count, self._d_flagged)
        return bool(count[0])

    def _rescue_on_device(self, buf, start: int, stop: int, ld: int, col0: int = 0) -> None:
        """After a block launch into ``buf``: when pairs were marked, recompute them on the
        host and write the strip back, so that the device selections see exact values."""
        import pyopencl as cl

        if not self._rescued():
            return
        strip = np.empty((stop - start, ld), dtype=self.dtype)
        cl.enqueue_copy(self.be.queue, strip, buf)
        patch_rescued(strip[:, :self.n_cols - col0], start, col0, self.rows, self.cols, self.min_overlap)
        cl.enqueue_copy(self.be.queue, buf, strip)

    def _strip_buffer(self):
        if self._d_strip is None:
            self._d_strip = self.be.empty(self.strip_rows * self.n_cols * self.dtype.itemsize,
                                          "a strip of correlations")
        return self._d_strip

    def _all_nan(self, n_rows: int) -> np.ndarray:
        return np.full((n_rows, self.n_cols), np.nan, dtype=self.dtype)

    # -- strip operations -----------------------------------------------------------------------
    def block(self, start: int, stop: int) -> np.ndarray:
        import pyopencl as cl

        if self.never_defined:
            return self._all_nan(stop - start)
        out = np.empty((stop - start, self.n_cols), dtype=self.dtype)
        with self.be.lock:
            buf = self._strip_buffer()
            self._enqueue_block(start, stop, buf, self.n_cols, False)
            cl.enqueue_copy(self.be.queue, out, buf)
            rescued = self._rescued()
        if rescued:
            patch_rescued(out, start, 0, self.rows, self.cols, self.min_overlap)
        return out

    def dense(self) -> np.ndarray:
        import pyopencl as cl

        if self.never_defined:
            return self._all_nan(self.n_rows)
        nbytes = self.n_rows * self.n_cols * self.dtype.itemsize
        if self.symmetric and nbytes <= self.be.max_alloc:
            # One launch over the upper triangle, each value stored at (i, j) and (j, i).
            out = np.empty((self.n_rows, self.n_cols), dtype=self.dtype)
            with self.be.lock:
                buf = self.be.empty(nbytes, "the correlation matrix")
                self._enqueue_block(0, self.n_rows, buf, self.n_cols, True)
                cl.enqueue_copy(self.be.queue, out, buf)
                rescued = self._rescued()
            if rescued:  # marked at (i, j) and (j, i) alike
                patch_rescued(out, 0, 0, self.rows, self.cols, self.min_overlap)
            return out
        out = np.empty((self.n_rows, self.n_cols), dtype=self.dtype)
        for start in range(0, self.n_rows, self.strip_rows):
            stop = min(self.n_rows, start + self.strip_rows)
            out[start:stop] = self.block(start, stop)
        return out

    def topk(self, start: int, stop: int, k: int):
        import pyopencl as cl

        rows = stop - start
        if self.never_defined:
            return np.full((rows, k), -1, np.int64), np.full((rows, k), np.nan, self.dtype)
        if k > TOPK_MAX:
            r = self.block(start, stop)
            if self.symmetric:
                d = np.arange(rows)
                r[d, start + d] = np.nan
            return select_topk(r, k)
        idx = np.empty((rows, k), dtype=np.int32)
        val = np.empty((rows, k), dtype=self.dtype)
        be = self.be
        with be.lock:
            buf = self._strip_buffer()
            d_idx = be.empty(idx.nbytes, "top-k indices")
            d_val = be.empty(val.nbytes, "top-k values")
            self._enqueue_block(start, stop, buf, self.n_cols, False)
            self._rescue_on_device(buf, start, stop, self.n_cols)
            knl = be.kernel("pearson", "clnet_pearson_topk", self.dtype, self.defines)
            knl(be.queue, _list_global(rows), (LIST_GROUP,), buf, np.int64(self.n_cols), np.int32(rows),
                np.int32(self.n_cols), np.int32(k), np.int32(start if self.symmetric else -1),
                d_idx, d_val)
            cl.enqueue_copy(be.queue, idx, d_idx)
            cl.enqueue_copy(be.queue, val, d_val)
        return idx.astype(np.int64), val

    def threshold(self, start: int, stop: int, t: float):
        return select_threshold(self.block(start, stop), t, start, self.symmetric)

    def topk_symmetric(self, k: int, strips):
        """Top-k of X against itself over the upper triangle only (see pearson.cl), or
        None (nothing consumed from ``strips``) where the per-strip way must be used."""
        import pyopencl as cl

        # Measured on PoCL (N=50,000): twice as fast as full strips for k=10, but the
        # column merge of long lists (k=40) costs more than the pairs it saves.
        if k > SYMMETRIC_TOPK_MAX or self.never_defined or not self.symmetric:
            return None
        be = self.be
        cap = SYMMETRIC_TOPK_MAX
        cols_per_item = MERGE_LIST_SLOTS // cap
        defines = self.defines[:-1] + (f"CLNET_TOPK_MAX={cap}", f"CLNET_MERGE_COLS={cols_per_item}")
        n = self.n_rows
        run_idx = np.full((n, k), -1, dtype=np.int32)
        run_val = np.full((n, k), np.nan, dtype=self.dtype)
        with be.lock:
            d_idx = be.empty(run_idx.nbytes, "top-k indices")
            d_val = be.empty(run_val.nbytes, "top-k values")
            cl.enqueue_copy(be.queue, d_idx, run_idx)
            cl.enqueue_copy(be.queue, d_val, run_val)
        for start, stop in strips:
            rows = stop - start
            ld = n - start
            with be.lock:
                buf = self._strip_buffer()
                self._enqueue_block(start, stop, buf, ld, False, col0=start)
                self._rescue_on_device(buf, start, stop, ld, col0=start)
                merge_rows = be.kernel("pearson", "clnet_pearson_topk_merge_rows", self.dtype, defines)
                merge_rows(be.queue, _list_global(rows), (LIST_GROUP,), buf, np.int64(ld),
                           np.int32(rows), np.int32(start), np.int32(ld), np.int32(k), d_idx, d_val)
                if stop < n:
                    merge_cols = be.kernel("pearson", "clnet_pearson_topk_merge_cols", self.dtype, defines)
                    merge_cols(be.queue, _list_global(-(-(n - stop) // cols_per_item)), (LIST_GROUP,),
                               buf, np.int64(ld), np.int32(rows), np.int32(start), np.int32(rows),
                               np.int32(n), np.int32(k), d_idx, d_val)
                be.queue.finish()  # keeps the progress bar honest; the device is busy anyway
        with be.lock:
            cl.enqueue_copy(be.queue, run_idx, d_idx)
            cl.enqueue_copy(be.queue, run_val, d_val)
        return run_idx.astype(np.int64), run_val
