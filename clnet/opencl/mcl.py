"""Markov clustering iterations on OpenCL (kernels/mcl.cl): the MCL family of clnet/contract.py.

The iterand stays on the device between iterations. Per iteration, the term count of
every column (one small read-back) sizes the column blocks; each block is expanded
(dense accumulators per work-item, as mcl's threads accumulate a column),
pruned and recovered on the device into a scratch of one block's terms, its kept counts
(read back, one number per column) place it in the next iterand, and it is gathered there
already inflated. So memory is two iterands, one block's scratch and the accumulators (at most
ACCUMULATOR_BYTES), never the unpruned square.
"""
from __future__ import annotations

import numpy as np

from ..common.mcl import Columns
from ..contract import MCLOps, MCLPlan
from .runtime import cl

# Product terms expanded at once (each: a row index and two values in the scratch). A
# default sized for CPUs; a column with more terms is a block of its own.
BLOCK_TERMS = 1 << 22
# Work-items of the expansion, each with a dense accumulator of N values; fewer when the
# accumulators would exceed ACCUMULATOR_BYTES. Defaults for a CPU device.
LANES = 64
ACCUMULATOR_BYTES = 256 << 20


class MCLKernels(MCLOps):
    def mcl_plan(self, start, dtype, params):
        return OpenCLMCLPlan(self, start, dtype, params)


def _blocks(terms: np.ndarray, budget: int):
    cum = np.cumsum(terms)
    start, n = 0, len(terms)
    while start < n:
        base = cum[start - 1] if start else 0
        stop = min(n, max(int(np.searchsorted(cum, base + budget, side="right")), start + 1))
        yield start, stop
        start = stop


class OpenCLMCLPlan(MCLPlan):
    def __init__(self, be, start: Columns, dtype, params):
        self.be, self.dtype, self.params, self.n = be, np.dtype(dtype), params, start.n
        self.host_ptr = start.indptr.astype(np.int64)
        self.ptr = be.copy_of(self.host_ptr, "mcl iterand column pointers")
        self.row = be.copy_of(start.indices.astype(np.int32), "mcl iterand rows")
        self.val = be.copy_of(start.data.astype(self.dtype), "mcl iterand values")
        item = self.dtype.itemsize
        self.lanes = int(max(1, min(LANES, ACCUMULATOR_BYTES // max(1, self.n * item))))
        # Uploaded zeros rather than enqueue_fill_buffer: the same on every device, and seen as
        # initialised by Oclgrind (which does not track fills). The kernels leave them zero.
        self.acc = be.copy_of(np.zeros(self.lanes * self.n, self.dtype), "mcl accumulators")
        k = lambda name: be.kernel("mcl", name, self.dtype)  # noqa: E731
        self.count, self.expand, self.gather, self.append = (
            k("clnet_mcl_count_terms"), k("clnet_mcl_expand_prune"), k("clnet_mcl_gather_inflate"),
            k("clnet_mcl_append"))

    def _count(self, b_ptr, b_row, col0: int, n_cols: int) -> np.ndarray:
        be = self.be
        out = be.empty(8 * n_cols, "mcl term counts")
        self.count(be.queue, (n_cols,), None, a_ptr=self.ptr, b_ptr=b_ptr, b_row=b_row, terms=out, col0=col0,
                   n_cols=n_cols)
        terms = np.empty(n_cols, np.int64)
        cl.enqueue_copy(be.queue, terms, out)
        return terms

    def _product(self, b, col0, n_cols, terms, last: bool, inflation: float):
        """One product of the iterand with block b's columns; pruned and inflated if last."""
        be, item = self.be, self.dtype.itemsize
        term_ptr = np.concatenate(([0], np.cumsum(np.minimum(terms, self.n)))).astype(np.int64)
        total = int(term_ptr[-1])
        term_ptr_buf = be.copy_of(term_ptr, "mcl term pointers")
        rows = be.workspace("mcl rows", 4 * total, "mcl expansion scratch (rows)")
        vals = be.workspace("mcl values", item * total, "mcl expansion scratch (values)")
        ordered = be.workspace("mcl sorted", item * total, "mcl expansion scratch (sorted values)")
        kept_buf, chaos_buf = be.empty(4 * n_cols, "mcl kept"), be.empty(item * n_cols, "mcl chaos")
        p = self.params
        lanes = min(self.lanes, n_cols)
        self.expand(be.queue, (lanes,), (1,), a_ptr=self.ptr, a_row=self.row, a_val=self.val, b_ptr=b[0],
                    b_row=b[1], b_val=b[2], col0=col0, term_ptr=term_ptr_buf, rows=rows, vals=vals,
                    sorted=ordered, acc=self.acc, kept=kept_buf, chaos=chaos_buf, n_cols=n_cols, n_rows=self.n,
                    n_lanes=lanes, do_prune=int(last),
                    cutoff=p.prune, select_n=min(p.select, 2**31 - 1), recover_n=min(p.recover, 2**31 - 1),
                    recover_mass=p.recover_fraction)
        kept = np.empty(n_cols, np.int32)
        cl.enqueue_copy(be.queue, kept, kept_buf)
        chaos = np.empty(n_cols, self.dtype)
        if last:
            cl.enqueue_copy(be.queue, chaos, chaos_buf)
        out_ptr = np.concatenate(([0], np.cumsum(kept, dtype=np.int64)))
        out_ptr_buf = be.copy_of(out_ptr, "mcl block pointers")
        out_row = be.empty(4 * int(out_ptr[-1]), "mcl block rows")
        out_val = be.empty(item * int(out_ptr[-1]), "mcl block values")
        self.gather(be.queue, (n_cols,), None, term_ptr=term_ptr_buf, rows=rows, vals=vals, out_ptr=out_ptr_buf,
                    out_row=out_row, out_val=out_val, n_cols=n_cols, inflation=inflation if last else 1.0)
        return (out_ptr_buf, out_row, out_val), kept, chaos

    def iterate(self, inflation):
        be = self.be
        with be.lock:
            terms = self._count(self.ptr, self.row, 0, self.n)
            pieces, kept_all, chaos_max = [], [], 0.0
            for start, stop in _blocks(terms, BLOCK_TERMS):
                b, col0, t = (self.ptr, self.row, self.val), start, terms[start:stop]
                for step in range(self.params.expansion - 1):
                    last = step == self.params.expansion - 2
                    if step:
                        t = self._count(b[0], b[1], 0, stop - start)
                    b, kept, chaos = self._product(b, col0, stop - start, t, last, inflation)
                    col0 = 0
                pieces.append(b)
                kept_all.append(kept)
                chaos_max = max(chaos_max, float(chaos.max()))
            counts = np.concatenate(kept_all).astype(np.int64)
            self.host_ptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
            nnz = int(self.host_ptr[-1])
            if len(pieces) == 1:  # one block: its gathered columns are the next iterand as they are
                _, row, val = pieces[0]
            else:
                row = be.empty(4 * nnz, "mcl iterand rows")
                val = be.empty(self.dtype.itemsize * nnz, "mcl iterand values")
                offset = 0
                for (_, piece_row, piece_val), kept in zip(pieces, kept_all):
                    size = int(kept.sum())
                    if size:
                        self.append(be.queue, (size,), None, piece_row=piece_row, piece_val=piece_val, out_row=row,
                                    out_val=val, offset=offset, n=size)
                    offset += size
            self.ptr = be.copy_of(self.host_ptr, "mcl iterand column pointers")
            self.row, self.val = row, val
            be.queue.finish()
        return chaos_max, nnz

    def current(self):
        be = self.be
        nnz = int(self.host_ptr[-1])
        rows, vals = np.empty(nnz, np.int32), np.empty(nnz, self.dtype)
        with be.lock:
            if nnz:
                cl.enqueue_copy(be.queue, rows, self.row)
                cl.enqueue_copy(be.queue, vals, self.val)
            be.queue.finish()
        return Columns(self.n, self.host_ptr.copy(), rows, vals.astype(np.float64))
