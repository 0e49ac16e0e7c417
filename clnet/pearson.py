"""Pairwise Pearson correlation with missing data: dense, thresholded and top-k.

Public API: :func:`pearson`, :func:`pearson_threshold`, :func:`pearson_topk`.
Semantics (pairwise-complete, non-finite = missing, ``min_overlap``, zero variance ->
NaN, clipping, ``transform="diff"``, ties): ``docs/SEMANTICS.md``.

How it is computed, on every backend:

1. On the host, in float64, each row is centred on the mean of its own finite values
   and scaled by a power of two and its root mean square (clnet.common.pearson).
   Correlation does not change, but the values become O(1) with a near-zero mean, so
   the sums below lose almost nothing in float32 even for rows around 1e4 with unit
   variance (the one-pass formula on raw values loses everything there).
2. A backend builds a *plan* from the prepared rows (the contract's ``pearson_plan``):
   the data it keeps on its device, and operations on a strip of rows against all
   columns: ``block`` (the dense strip), ``topk`` and ``threshold`` (only the selected
   pairs come back). The six pairwise-masked sums n, Sx, Sy, Sxx, Syy, Sxy of a strip
   are masked matrix products; complete data needs only one product.
3. Where r is formed from the sums, a pair whose variance over its common positions
   cancels (below rescue_fraction(dtype) of its sum of squares: typically a handful of
   common positions whose values nearly coincide) is marked RESCUE; the host recomputes
   exactly those pairs in float64 with a two-pass formula (rescue_pairs) and patches
   them in before any dense output or selection.
4. The drivers here walk the rows strip by strip, so the sparse outputs never hold more
   than one strip of the N x N matrix, and show a progress bar (tqdm, when installed)
   once a run has taken a few seconds. Each driver runs through clnet.backend.run, so a
   device failure during any plan method reruns the whole operation on the next backend
   when selection was automatic.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ._validate import as_float, as_int, as_real_array
from .backend import BackendLike, get_backend, run
from .common.pearson import Prepared, diff_rows, standardise_rows

__all__ = ["pearson", "pearson_threshold", "pearson_topk"]

TRANSFORMS = (None, "diff")
# The progress bar appears only when a run lasts longer than this many seconds.
PROGRESS_DELAY_S = 3.0


# ---------------------------------------------------------------------------------------
# Validation and preparation (host, float64)
# ---------------------------------------------------------------------------------------
def _is_dataframe(obj) -> bool:
    return hasattr(obj, "columns") and hasattr(obj, "index") and hasattr(obj, "to_numpy") \
        and getattr(obj, "ndim", 2) == 2


def _as_matrix(value, name: str) -> Tuple[np.ndarray, Optional[object]]:
    """``value`` as a float32 or float64 (items, positions) array (float32 and float64 as given,
    anything else as float64), and its row labels for a DataFrame."""
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
    elif isinstance(value, np.ma.MaskedArray):
        # Masked entries are missing values, exactly like NaN (docs/SEMANTICS.md).
        if value.dtype.kind not in "iuf":
            raise TypeError(f"{name} must be a numeric array of real numbers, got a masked array of "
                            f"dtype {value.dtype}")
        value = np.ma.filled(value.astype(np.float64), np.nan)
    elif hasattr(value, "dtype"):
        # Only NumPy dtypes have a kind; a torch tensor or other array-like goes to as_real_array.
        kind = getattr(value.dtype, "kind", None)
        if kind == "O":
            raise TypeError(f"{name} must be a numeric array, got dtype object; convert it with "
                            f".astype(float) if its elements are numbers")
        if kind is not None and kind in "SU":
            raise TypeError(f"{name} must be a numeric array, got a string dtype {value.dtype}")
    # float32 and float64 stay as given (standardise_rows reads either straight into its
    # float64 result: no float64 copy of a float32 input); anything else becomes float64.
    given = getattr(value, "dtype", None)
    kept = isinstance(given, np.dtype) and given in (np.dtype(np.float32), np.dtype(np.float64))
    dtype = given if kept else np.float64
    arr = as_real_array(value, name, dtype, ndim=(2,))
    return arr, labels


def _check_transform(transform) -> Optional[str]:
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be None or 'diff', got {transform!r}")
    return transform



@dataclass
class Request:
    """A validated Pearson call: prepared rows (and columns), the overlap rule, the row labels
    of DataFrame inputs, and the requested dtype (checked against each backend that runs it)."""

    rows: Prepared
    cols: Optional[Prepared]
    min_overlap: int
    dtype: object
    labels_x: Optional[object] = None
    labels_y: Optional[object] = None

    @property
    def shape(self) -> Tuple[int, int]:
        n = self.rows.shape[0]
        return n, (n if self.cols is None else self.cols.shape[0])

    def plan(self, backend):
        """The backend's plan for this request (the contract's ``pearson_plan``)."""
        return backend.op("pearson_plan")(self.rows, self.cols, backend.check_dtype(self.dtype), self.min_overlap)


def _prepare(X, Y, transform, min_overlap, dtype_arg, backend) -> Tuple[Request, np.dtype]:
    """Every argument checked (the backend and dtype too) before anything is computed."""
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
    dt = get_backend(backend).check_dtype(dtype_arg)
    if transform == "diff":
        x = diff_rows(x)
        y = None if y is None else diff_rows(y)
    py = None if y is None else standardise_rows(y)
    return Request(standardise_rows(x), py, min_overlap, dtype_arg, labels_x, labels_y), dt


def _progress(total: int, desc: str, progress):
    """A tqdm bar that shows itself after a few seconds, or None."""
    if progress is False:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if progress:  # asked for explicitly: say why there is none (once per call site)
            warnings.warn("progress=True shows a progress bar only with tqdm installed: pip install tqdm",
                          RuntimeWarning, stacklevel=4)
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
    req, dt = _prepare(X, Y, transform, min_overlap, dtype, backend)
    n_rows, n_cols = req.shape
    if n_rows == 0 or n_cols == 0:
        out = np.empty((n_rows, n_cols), dtype=dt)
    else:
        out = run(backend, "pearson", lambda be: req.plan(be).dense())
    if req.labels_x is not None:
        import pandas as pd

        lx, ly = req.labels_x, req.labels_y
        cols = lx if req.cols is None else (ly if ly is not None else pd.RangeIndex(n_cols))
        return pd.DataFrame(out, index=lx, columns=cols)
    return out


def checked_k(k, x_rows: int, y_rows=None) -> int:
    """``k`` as an int, or ValueError: X against itself needs k below its row count (a row
    is not its own neighbour), X against Y at most Y's row count."""
    k = as_int(k, "k", minimum=1)
    if y_rows is None and k >= x_rows:
        raise ValueError(f"k must be smaller than the number of rows of X ({x_rows}), got k={k}")
    if y_rows is not None and k > y_rows:
        raise ValueError(f"k must be at most the number of rows of Y ({y_rows}), got k={k}")
    return k


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
    k = checked_k(k, x_rows, None if Y is None else _row_count(Y, "Y"))
    req, dt = _prepare(X, Y, transform, min_overlap, dtype, backend)
    indices, values = run(backend, "pearson_topk", lambda be: _topk(req, be, k, progress))
    if req.labels_x is not None:
        import pandas as pd

        return pd.DataFrame(indices, index=req.labels_x), pd.DataFrame(values, index=req.labels_x)
    return indices, values


def _topk(req: Request, be, k: int, progress):
    n_rows = req.shape[0]
    indices = np.full((n_rows, k), -1, dtype=np.int64)
    values = np.full((n_rows, k), np.nan, dtype=be.check_dtype(req.dtype))
    plan = req.plan(be)
    strips = _strips(plan, n_rows, "pearson top-k", progress)
    symmetric = getattr(plan, "topk_symmetric", None) if req.cols is None else None
    found = symmetric(k, strips) if symmetric is not None else None  # each pair computed once
    if found is not None:
        indices[:], values[:] = found
    else:
        for start, stop in strips:
            indices[start:stop], values[start:stop] = plan.topk(start, stop, k)
    return indices, values


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
    req, dt = _prepare(X, Y, transform, min_overlap, dtype, backend)
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a dependency; a broken install lacks it
        raise ImportError("pearson_threshold returns a scipy.sparse matrix: pip install scipy") from None
    n_rows, n_cols = req.shape
    rows, cols, vals = [], [], []
    if n_rows and n_cols:
        rows, cols, vals = run(backend, "pearson_threshold", lambda be: _threshold(req, be, t, progress))
    cat = (lambda parts, d: np.concatenate(parts).astype(d, copy=False) if parts else np.empty(0, d))
    return sp.csr_matrix((cat(vals, dt), (cat(rows, np.int64), cat(cols, np.int64))),
                         shape=(n_rows, n_cols))


def _threshold(req: Request, be, t: float, progress):
    """The kept pairs of every strip, as lists of (rows, cols, values) parts."""
    rows, cols, vals = [], [], []
    plan = req.plan(be)
    for start, stop in _strips(plan, req.shape[0], "pearson threshold", progress):
        r, c, v = plan.threshold(start, stop, t)
        rows.append(r)
        cols.append(c)
        vals.append(v)
    return rows, cols, vals


def _row_count(value, name: str) -> int:
    shape = getattr(value, "shape", None)
    if shape is None:
        shape = np.shape(value)
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2-dimensional (items x positions), got shape {tuple(shape)}")
    return int(shape[0])
