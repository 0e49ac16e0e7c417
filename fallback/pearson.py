"""NumPy reference of pairwise Pearson correlation (float64 is the reference).

Vectorised with BLAS: the six pairwise-masked sums of a strip of rows against every
column are three matrix products, so there is no Python loop over pairs. Complete data
(no missing value anywhere) needs one product of unit-norm rows. Pairs whose sums cancel
(see clnet.common.pearson.rescue_fraction) are recomputed in float64 with a two-pass
formula.
"""
import numpy as np

from clnet.common.pearson import (RESCUE, patch_rescued, rescue_fraction, select_threshold, select_topk,
                                  strip_rows, unit_rows, var_epsilon)
from clnet.contract import PearsonOps, PearsonPlan


class PearsonReference(PearsonOps):
    def pearson_plan(self, rows, cols, dtype, min_overlap):
        return NumpyPearsonPlan(rows, cols, dtype, min_overlap)


class NumpyPearsonPlan(PearsonPlan):
    def __init__(self, rows, cols, dtype, min_overlap):
        self.dtype = np.dtype(dtype)
        self.symmetric = cols is None
        cols = rows if cols is None else cols
        self.n_rows, self.n_cols = rows.shape[0], cols.shape[0]
        self.positions = rows.shape[1]
        self.min_overlap = min_overlap
        self.eps = var_epsilon(self.dtype)
        self.tau = rescue_fraction(self.dtype)
        self.rows, self.cols = rows, cols  # float64, for the pairs recomputed on the host
        self.complete = rows.complete and cols.complete
        if self.complete:
            self.a = unit_rows(rows.filled, self.dtype)
            self.b = self.a if self.symmetric else unit_rows(cols.filled, self.dtype)
            self.a_ok = np.any(self.a != 0, axis=1)
            self.b_ok = self.a_ok if self.symmetric else np.any(self.b != 0, axis=1)
            per_pair = 3 * self.dtype.itemsize
        else:
            self.ax, self.av = rows.filled.astype(self.dtype), rows.valid.astype(self.dtype)
            self.bx, self.bv = ((self.ax, self.av) if self.symmetric else
                                (cols.filled.astype(self.dtype), cols.valid.astype(self.dtype)))
            self.bxx = self.bx * self.bx
            # Right-hand operands stacked once, so that a strip is three products.
            self.right_v = self.bv.T
            self.right_x = np.ascontiguousarray(self.bx.T)
            self.right_xx = np.ascontiguousarray(self.bxx.T)
            per_pair = 12 * self.dtype.itemsize
        self.strip_rows = strip_rows(self.n_cols, per_pair)

    def block(self, start, stop):
        """r for rows start..stop-1 against every column, in the plan's dtype."""
        if self.complete:
            with np.errstate(all="ignore"):
                r = self.a[start:stop] @ self.b.T
            ok = self.a_ok[start:stop, None] & self.b_ok[None, :]
            if self.positions < self.min_overlap:
                ok = np.zeros_like(ok)
            r = np.clip(r, -1, 1, out=r)
            r[~ok] = np.nan
            return r
        xi, vi = self.ax[start:stop], self.av[start:stop]
        b = stop - start
        with np.errstate(all="ignore"):
            left = np.concatenate([xi, vi, xi * xi])
            first = left @ self.right_v           # Sx, n, Sxx
            second = np.concatenate([vi, xi]) @ self.right_x   # Sy, Sxy
            syy = vi @ self.right_xx
            sx, n, sxx = first[:b], first[b:2 * b], first[2 * b:]
            sy, sxy = second[:b], second[b:]
            r, flagged = finish(n, sx, sy, sxx, syy, sxy, self.min_overlap, self.eps, self.tau)
        if flagged.any():
            patch_rescued(r, start, 0, self.rows, self.cols, self.min_overlap, where=flagged)
        return r

    def dense(self):
        out = np.empty((self.n_rows, self.n_cols), dtype=self.dtype)
        for start in range(0, self.n_rows, self.strip_rows):
            stop = min(self.n_rows, start + self.strip_rows)
            out[start:stop] = self.block(start, stop)
        return out

    def _strip(self, start, stop):
        r = self.block(start, stop)
        if self.symmetric:
            d = np.arange(stop - start)
            r[d, start + d] = np.nan  # a row is never its own neighbour
        return r

    def topk(self, start, stop, k):
        return select_topk(self._strip(start, stop), k)

    def threshold(self, start, stop, t):
        return select_threshold(self.block(start, stop), t, start, self.symmetric)


def finish(n, sx, sy, sxx, syy, sxy, min_overlap, eps, tau):
    """r from the six sums over the common positions of each pair (rows pre-centred),
    and the mask of the pairs whose variances cancel (below ``tau`` times their sums of
    squares): those hold RESCUE and must be recomputed (clnet.common.pearson.patch_rescued)."""
    inv = 1 / n
    vx = sxx - sx * sx * inv
    vy = syy - sy * sy * inv
    cov = sxy - sx * sy * inv
    r = cov / np.sqrt(vx * vy)
    r = np.where(n == 2, np.copysign(1, cov), r)  # two points lie exactly on a line
    ok = (n >= min_overlap) & (vx > eps * sxx) & (vy > eps * syy)
    r = np.clip(r, -1, 1, out=r)
    r[~ok] = np.nan
    flagged = (n >= min_overlap) & ((vx < tau * sxx) | (vy < tau * syy))
    r[flagged] = RESCUE
    return r, flagged

