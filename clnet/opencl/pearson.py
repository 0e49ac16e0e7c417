"""Pairwise Pearson on OpenCL (kernels/pearson.cl): the Pearson family of clnet/contract.py.

An :class:`OpenCLPearsonPlan` keeps the prepared rows on the device, packed in groups of
CLNET_VW rows, and computes strips of r: complete data as one product of unit rows,
missing data as masked sums (or, with few missing values, totals minus corrections over
the missing positions). Pairs marked CLNET_RESCUE are recomputed on the host in float64
(clnet.common.pearson) and patched in; top-k lists are selected on the device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..common import pearson as host
from ..common.pearson import Prepared, patch_rescued, rescue_fraction, select_threshold, select_topk, var_epsilon
from ..contract import PearsonOps, PearsonPlan
from .runtime import aligned_empty, cl

# Rows of k up to this many are selected on the device; larger k on the host.
TOPK_MAX = 64
# Tile heights, strip size, the top-k lists' work-group size and the fraction of missing
# values up to which the five masked sums are computed as totals minus corrections over the
# missing positions (work grows with what is missing; above it, masked products with fixed
# work per pair and position) are the "pearson" family of clnet/opencl/tuning.py.
# Private memory of one work-item of clnet_pearson_topk_merge_cols: it holds
# CLNET_MERGE_COLS lists of CLNET_TOPK_MAX candidates (more overflows PoCL's stacks).
MERGE_LIST_SLOTS = 256
# Largest k for which X against itself computes each pair once (see topk_symmetric).
SYMMETRIC_TOPK_MAX = 16


class PearsonKernels(PearsonOps):
    def pearson_plan(self, rows, cols, dtype, min_overlap):
        return OpenCLPearsonPlan(self, rows, cols, dtype, min_overlap)


# The kernels that keep top-k lists in private memory run in small work-groups (the tuned
# ``list_group``): left to itself PoCL picks large work-groups for large launches and lays
# out every work-item's private arrays at once, which overflows its thread stacks.
def _list_launch(items: int, group: int):
    return (-(-items // group) * group,), (group,)


def _pack(values: np.ndarray, group: int, dtype, divisor: Optional[np.ndarray] = None,
          groups: int = 0) -> np.ndarray:
    """(N, M) -> groups of ``group`` rows, position-major inside a group (see pearson.cl), in
    ``dtype``, rows divided by ``divisor`` (N, 1) when given; zero rows pad the last group
    and make up ``groups`` groups in all when more are asked for.

    One strided pass writes the device layout straight from ``values`` (any real or bool
    dtype): the cast and the division happen in that pass, with no padded or cast copy first.
    """
    n, m = values.shape
    whole, tail = divmod(n, group)
    out = aligned_empty((max(groups, whole + (tail > 0)), m, group), dtype)
    out[whole + (tail > 0):] = 0

    def fill(dest, src, div):
        if div is None:
            np.copyto(dest, src, casting="unsafe")
        else:  # float64 division, then rounded once: (values / divisor).astype(dtype)
            np.divide(src, div, out=dest, casting="unsafe")

    rows = whole * group
    fill(out[:whole].transpose(0, 2, 1), values[:rows].reshape(whole, group, m),
         None if divisor is None else divisor[:rows].reshape(whole, group, 1))
    if tail:
        last = out[whole].T  # (group, m)
        last[tail:] = 0
        fill(last[:tail], values[rows:], None if divisor is None else divisor[rows:])
    return out


def _unit_packed(values: np.ndarray, group: int, dtype, groups: int):
    """Complete centred rows scaled to unit norm (common.pearson.unit_rows, bit for bit) in
    the packed layout of ``groups`` groups, and 1/0 per row (as many): whether the row is
    not all zero (a zero norm)."""
    divisors, nonzero = host.unit_divisors(values)
    packed = _pack(values, group, dtype, divisors, groups)
    ok = aligned_empty(len(packed) * group, dtype)
    ok[len(values):] = 0
    ok[:len(values)] = nonzero
    return packed, ok


def _complete_groups(n: int, group: int, row_tile: int, col_groups: int, rows: bool, cols: bool) -> int:
    """Groups of ``group`` rows that an operand of ``n`` rows is packed into for
    clnet_pearson_complete: a tile of ``row_tile`` rows that starts at the last row reads
    ``row_tile - 1`` rows past it, and ``col_groups`` groups of columns that start at the
    last group read ``col_groups - 1`` groups past it (pearson.cl)."""
    need = -(-n // group)
    if rows:
        need = max(need, -(-(n + row_tile - 1) // group))
    if cols:
        need = max(need, -(-n // group) + col_groups - 1)
    return need


@dataclass
class SparseTables:
    """Per-row totals (sum, sum of squares, count; rows padded to ``padded``) and the lists
    of missing positions (``ptr[i]:ptr[i+1]`` into ``pos``), on the device."""

    stats: "cl.Buffer"
    padded: int
    ptr: "cl.Buffer"
    pos: "cl.Buffer"


class OpenCLPearsonPlan(PearsonPlan):
    """Prepared rows on one OpenCL device, and the strip operations of the drivers."""

    #: largest k for which topk_symmetric computes over the upper triangle
    symmetric_topk_max = SYMMETRIC_TOPK_MAX

    def __init__(self, backend, rows: Prepared, cols: Optional[Prepared], dtype, min_overlap: int):
        self.be = backend
        self.dtype = dt = np.dtype(dtype)
        self.vw = 16 if dt == np.float32 else 8
        self.config = cfg = backend.params("pearson", rows=rows.shape[0])
        self.row_block = cfg["row_block"]  # CLNET_RI: rows per work-item of the masked kernel
        self.complete_rows = cfg["complete_rows"]  # CLNET_RC: rows per work-item for complete data
        self.complete_cols = cfg["complete_cols"]  # CLNET_CC: column groups per work-item, likewise
        self.sparse_rows = cfg["sparse_rows"]  # CLNET_SR: rows per work-item of clnet_pearson_sparse
        self.list_group = cfg["list_group"]
        self.rows_first = cfg["order"] == "rows"  # the row blocks along launch dimension 0
        self.defines = (f"CLNET_VW={self.vw}", f"CLNET_RI={self.row_block}", f"CLNET_RC={self.complete_rows}",
                        f"CLNET_CC={self.complete_cols}",
                        f"CLNET_SR={self.sparse_rows}",
                        f"CLNET_RESCUE={host.RESCUE:g}", f"CLNET_TOPK_MAX={TOPK_MAX}",
                        f"CLNET_COLS_DIM={1 if self.rows_first else 0}")
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
        up = backend.adopt  # every array below is made here for the device and never changed
        if self.complete:
            rc, cc = self.complete_rows, self.complete_cols

            def packed(prepared, as_rows, as_cols):
                groups = _complete_groups(len(prepared.filled), self.vw, rc, cc, as_rows, as_cols)
                return _unit_packed(prepared.filled, self.vw, dt, groups)

            a, a_ok = packed(rows, True, self.symmetric)
            self.d_a, self.d_a_ok = up(a, "prepared rows"), up(a_ok)
            if self.symmetric:
                self.d_b, self.d_b_ok = self.d_a, self.d_a_ok
            else:
                b, b_ok = packed(cols, False, True)
                self.d_b, self.d_b_ok = up(b, "prepared columns"), up(b_ok)
        else:
            def split(prepared):
                return (up(_pack(prepared.filled, self.vw, dt), "prepared values"),
                        up(_pack(prepared.valid, self.vw, dt), "validity mask"))

            self.d_ax, self.d_av = split(rows)
            self.d_bx, self.d_bv = (self.d_ax, self.d_av) if self.symmetric else split(cols)
            operands = [rows] if self.symmetric else [rows, cols]
            missing = sum(p.valid.size - np.count_nonzero(p.valid) for p in operands)
            self.sparse = missing <= cfg["sparse_missing_max"] * sum(p.valid.size for p in operands)
            if self.sparse:
                self.d_a_sparse = self._sparse_tables(rows)
                self.d_b_sparse = self.d_a_sparse if self.symmetric else self._sparse_tables(cols)
        # host.STRIP_BUDGET caps memory whatever the tuning says
        limit = min(cfg["strip_mb"] * 2**20, host.STRIP_BUDGET, backend.max_alloc)
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
        return SparseTables(up(stats.astype(self.dtype)), padded, up(ptr),
                            up(pos.astype(np.int32), "missing positions"))

    # -- kernels ------------------------------------------------------------------------------
    def _enqueue_block(self, start: int, stop: int, out, ld: int, mirror: bool, col0: int = 0) -> None:
        """Rows start..stop-1 against columns col0.. into ``out`` (row stride ``ld``). Pairs
        marked RESCUE are counted in the plan's counter, see :meth:`_rescued`."""
        be = self.be
        if not self.complete:
            cl.enqueue_copy(be.queue, self._d_flagged, self._zero, is_blocking=False)
        col_groups = -(-(self.n_cols - col0) // self.vw)
        tile = dict(M=self.positions, row0=start, n_rows=stop - start, n_cols=self.n_cols, col0=col0,
                    mirror=int(mirror), out=out, ld=ld)
        masked = dict(min_overlap=float(self.min_overlap), eps=self.eps, tau=self.tau, flagged=self._d_flagged)
        if not self.complete and self.sparse:
            row_blocks = -(-(stop - start) // self.sparse_rows)
            knl = be.kernel("pearson", "clnet_pearson_sparse", self.dtype, self.defines)
            a, b = self.d_a_sparse, self.d_b_sparse
            args = dict(ax=self.d_ax, av=self.d_av, a_stats=a.stats, a_padded=a.padded, a_miss_ptr=a.ptr,
                        a_miss_pos=a.pos, bx=self.d_bx, bv=self.d_bv, b_stats=b.stats, b_miss_ptr=b.ptr,
                        b_miss_pos=b.pos, b_padded=b.padded, **tile, **masked)
        elif self.complete:
            row_blocks = -(-(stop - start) // self.complete_rows)
            col_groups = -(-col_groups // self.complete_cols)
            knl = be.kernel("pearson", "clnet_pearson_complete", self.dtype, self.defines)
            args = dict(a=self.d_a, a_ok=self.d_a_ok, b=self.d_b, b_ok=self.d_b_ok, **tile)
        else:
            row_blocks = -(-(stop - start) // self.row_block)
            knl = be.kernel("pearson", "clnet_pearson_masked", self.dtype, self.defines)
            args = dict(ax=self.d_ax, av=self.d_av, bx=self.d_bx, bv=self.d_bv, **tile, **masked)
        grid = (row_blocks, col_groups) if self.rows_first else (col_groups, row_blocks)
        knl(be.queue, grid, be.any_local((1, 1)), **args)

    def _rescued(self) -> bool:
        """Whether the last block launch marked any pair for recomputation (see
        clnet.common.pearson.rescue_fraction). Complete data never needs it."""
        if self.complete:
            return False
        count = np.zeros(1, np.int32)
        cl.enqueue_copy(self.be.queue, count, self._d_flagged)
        return bool(count[0])

    def _rescue_on_device(self, buf, start: int, stop: int, ld: int, col0: int = 0) -> None:
        """After a block launch into ``buf``: when pairs were marked, recompute them on the
        host and write the strip back, so that the device selections see exact values."""
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
        if self.never_defined:
            return self._all_nan(stop - start)
        be = self.be
        out = be.result_array((stop - start, self.n_cols), self.dtype)
        with be.lock:
            with be.writing_result(out, "pearson strip", "a strip of correlations", self._strip_buffer) as buf:
                self._enqueue_block(start, stop, buf, self.n_cols, False)
            rescued = self._rescued()
        if rescued:
            patch_rescued(out, start, 0, self.rows, self.cols, self.min_overlap)
        return out

    def dense(self) -> np.ndarray:
        if self.never_defined:
            return self._all_nan(self.n_rows)
        nbytes = self.n_rows * self.n_cols * self.dtype.itemsize
        if self.symmetric and nbytes <= self.be.max_alloc:
            # One launch over the upper triangle, each value stored at (i, j) and (j, i), in
            # place in the result on a CPU device (no device copy of N^2 values to read back).
            be = self.be
            out = be.result_array((self.n_rows, self.n_cols), self.dtype)
            with be.lock:
                with be.writing_result(out, "pearson matrix", "the correlation matrix") as buf:
                    self._enqueue_block(0, self.n_rows, buf, self.n_cols, True)
                rescued = self._rescued()
            if rescued:  # marked at (i, j) and (j, i) alike
                patch_rescued(out, 0, 0, self.rows, self.cols, self.min_overlap)
            return out
        out = self.be.result_array((self.n_rows, self.n_cols), self.dtype)
        for start in range(0, self.n_rows, self.strip_rows):
            stop = min(self.n_rows, start + self.strip_rows)
            out[start:stop] = self.block(start, stop)
        return out

    def topk(self, start: int, stop: int, k: int):
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
            knl(be.queue, *_list_launch(rows, self.list_group), strip=buf, ld=self.n_cols, n_rows=rows,
                n_cols=self.n_cols, k=k, self_col0=start if self.symmetric else -1, out_idx=d_idx, out_val=d_val)
            cl.enqueue_copy(be.queue, idx, d_idx)
            cl.enqueue_copy(be.queue, val, d_val)
        return idx.astype(np.int64), val

    def threshold(self, start: int, stop: int, t: float):
        return select_threshold(self.block(start, stop), t, start, self.symmetric)

    def topk_symmetric(self, k: int, strips):
        """Top-k of X against itself over the upper triangle only (see pearson.cl), or
        None (nothing consumed from ``strips``) where the per-strip way must be used."""
        # Measured on PoCL (N=50,000): twice as fast as full strips for k=10, but the
        # column merge of long lists (k=40) costs more than the pairs it saves.
        if k > SYMMETRIC_TOPK_MAX or self.never_defined or not self.symmetric:
            return None
        be = self.be
        cap = SYMMETRIC_TOPK_MAX
        cols_per_item = MERGE_LIST_SLOTS // cap
        defines = tuple(d for d in self.defines if not d.startswith("CLNET_TOPK_MAX=")) + (
            f"CLNET_TOPK_MAX={cap}", f"CLNET_MERGE_COLS={cols_per_item}")
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
                merge_rows(be.queue, *_list_launch(rows, self.list_group), strip=buf, ld=ld, n_rows=rows, row0=start,
                           n_cand=ld, k=k, run_idx=d_idx, run_val=d_val)
                if stop < n:
                    merge_cols = be.kernel("pearson", "clnet_pearson_topk_merge_cols", self.dtype, defines)
                    merge_cols(be.queue, *_list_launch(-(-(n - stop) // cols_per_item), self.list_group),
                               strip=buf, ld=ld, n_rows=rows, row0=start, first_c=rows, n_total=n, k=k,
                               run_idx=d_idx, run_val=d_val)
                be.queue.finish()  # keeps the progress bar honest; the device is busy anyway
        with be.lock:
            cl.enqueue_copy(be.queue, run_idx, d_idx)
            cl.enqueue_copy(be.queue, run_val, d_val)
        return run_idx.astype(np.int64), run_val
