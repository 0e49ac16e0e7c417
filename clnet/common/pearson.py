"""Host-side Pearson helpers shared by every backend (float64, NumPy only).

Row standardisation (centre each row on the mean of its finite values, scale to unit
RMS), the float64 rescue of pairs whose sums cancel, strip sizing, and the top-k and
threshold selections of a strip. The public module :mod:`clnet.pearson` prepares rows
with these; the backends' plans (``clnet_fallback.pearson``, ``clnet.opencl.pearson``)
select and rescue with them. Nothing here knows about a device.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

# A strip of rows is sized so that its working arrays stay within this many bytes.
STRIP_BUDGET = 96 * 2**20


def diff_rows(a: np.ndarray) -> np.ndarray:
    """First differences along each row (float64); missing where either value is missing."""
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.diff(np.asarray(a, dtype=np.float64), axis=1)
    d[~np.isfinite(d)] = np.nan
    return d


def standardise_rows(a: np.ndarray) -> "Prepared":
    """Rows centred on the mean of their finite values and scaled to unit RMS (float64).

    ``a`` is float32 or float64 (read as it is: float32 values are exact in float64).
    Missing values (any non-finite) are 0 in ``filled`` and False in ``valid``. Each row
    is first shifted by its first finite value, so a row that is constant over its
    finite values becomes exactly zero: its variance is exactly zero over every subset.
    Every step is one whole-array pass (masks applied by multiplying with ``valid``, which
    costs a quarter of a boolean-indexed store): this runs before every call on the host.
    """
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    valid = np.isfinite(a)
    complete = bool(valid.all())
    count = np.full(len(a), a.shape[1]) if complete else np.count_nonzero(valid, axis=1)
    if a.size == 0:
        return Prepared(np.zeros(a.shape), valid, complete, count)
    with np.errstate(over="ignore", invalid="ignore"):
        z = _shift_by_first(a, valid, complete)
        ss = _centre(z, valid, count, complete)
        if _needs_scaling(z, ss):
            # Huge or tiny rows: power-of-two scales (exact) keep the squares finite.
            a64 = np.where(valid, a, 0.0)
            z = _shift_by_first(np.ldexp(a64, -_exponent(a64)), valid, False)
            z = np.ldexp(z, -_exponent(z))
            ss = _centre(z, valid, count, complete)
    n = np.maximum(count, 1)
    with np.errstate(divide="ignore"):
        scale = np.where(ss > 0, 1.0 / np.sqrt(ss / n), 0.0)
    z *= scale[:, None]
    return Prepared(z, valid, complete, count)


def _shift_by_first(a, valid, complete):
    """float64 rows minus their first finite value, 0 where missing."""
    if complete:
        z = a.astype(np.float64)
        z -= z[:, :1].copy()
        return z
    first = a[np.arange(len(a)), np.argmax(valid, axis=1)].astype(np.float64)
    first = np.where(np.isfinite(first), first, 0.0)[:, None]
    # Missing values become +0 by clearing their bits (an AND with an all-ones or all-zeros
    # mask): twice as fast as a boolean-indexed store or np.where on these arrays.
    bits = np.dtype(f"u{a.dtype.itemsize}")
    keep = valid.view(np.uint8).astype(bits)
    np.negative(keep, out=keep)
    np.bitwise_and(a.view(bits), keep, out=keep)  # in place: each fresh array costs its page faults
    z = keep.view(a.dtype).astype(np.float64)
    z -= first
    np.multiply(z, valid, out=z)
    return z


def _centre(z, valid, count, complete):
    """Centre the rows of ``z`` (0 where missing) in place; their sums of squares."""
    z -= (z.sum(axis=1) / np.maximum(count, 1))[:, None]
    if not complete:
        np.multiply(z, valid, out=z)
    return np.einsum("ij,ij->i", z, z)


def _needs_scaling(z, ss) -> bool:
    """Whether some row's squares overflowed or underflowed (a sum of squares that is not
    finite, or positive but below 1e-280, or zero for a row that is not constant)."""
    small = ~np.isfinite(ss) | (ss < 1e-280)
    if not small.any():
        return False
    rows = np.flatnonzero(small)
    return bool((~np.isfinite(ss[rows])).any() or (ss[rows] > 0).any() or np.any(z[rows] != 0))


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



def var_epsilon(dtype) -> float:
    """Relative variance below which a row counts as constant over a pair's positions.

    The sums carry a rounding error of a few units of ``eps * Sxx``; a variance under
    64 of those cannot be told from zero (and is exactly zero for constant rows).
    """
    return 64.0 * float(np.finfo(dtype).eps)


# A pair whose r cannot be trusted from its sums is marked with this value (outside
# [-1, 1], exact in every dtype) and recomputed on the host, see rescue_fraction. The
# OpenCL kernels receive it as the build define CLNET_RESCUE (clnet/opencl/pearson.py).
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


def unit_divisors(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 1) divisors that scale the rows to unit Euclidean norm (1 for a zero row, which
    stays zero), and (N,) whether each row's norm is positive."""
    norm = np.sqrt(np.einsum("ij,ij->i", values, values))[:, None]
    return np.where(norm > 0, norm, 1), norm[:, 0] > 0


def unit_rows(values: np.ndarray, dtype) -> np.ndarray:
    """Complete, centred rows scaled to unit Euclidean norm (zero rows stay zero):
    their dot products are the correlations."""
    return (values / unit_divisors(values)[0]).astype(dtype)


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

