"""Markov clustering iterations on OpenCL (kernels/mcl.cl): the MCL family of clnet/contract.py.

The iterand stays on the device between iterations. Per iteration, the term count of
every column (one small read-back) sizes the column blocks; each block is expanded
(dense accumulators per work-item, as mcl's threads accumulate a column),
pruned and recovered on the device into a scratch of one block's terms, its kept counts
(read back, one number per column) place it in the next iterand, and it is gathered there
already inflated. So memory is two iterands, one block's scratch and the accumulators (each
of the last two at most SCRATCH_FRACTION of the device's memory), never the unpruned square.
"""
from __future__ import annotations

import numpy as np

from ..common.mcl import Columns
from ..contract import MCLOps, MCLPlan
from .runtime import cl

# Sizes derived from the device (None) unless set here (tests and Oclgrind force small ones):
# BLOCK_TERMS, the product terms expanded at once; LANES, the expansion's work-items.
BLOCK_TERMS = None
LANES = None
# The scratch of one block (each term: a row index and two values) and the lanes' dense
# accumulators (N values each) may each take this fraction of the device's global memory:
# a 256th leaves the two iterands, which are what grows with the graph, nearly all of it.
SCRATCH_FRACTION = 1 / 256
# Work-items per compute unit: two, so that columns of uneven cost (and a unit busy with
# other work) balance across units, and no more, since every lane holds an accumulator of
# N values that should stay in cache. On the 2-core EPYC at 30,000 nodes, 4, 8 and 64 lanes
# took 4.2, 4.1-6.9 and 7.8 s (64 was the earlier fixed count); a default, not a fact.
LANES_PER_UNIT = 2
# The next iterand is allocated from the kept entries of the columns done so far,
# extrapolated to all N columns, with this margin; a block that does not fit grows it.
CAPACITY_MARGIN = 1.25


def column_slots(terms: np.ndarray, n: int) -> np.ndarray:
    """The scratch slots of each column of a product: at most min(terms, N) entries, and one
    more, since the expansion writes the row of every term at the slot after the last one
    kept (kernels/mcl.cl). Blocks are budgeted by these, and the slices laid out by them."""
    return np.minimum(terms, n) + 1


def block_terms(be, item: int) -> int:
    """Product terms per block: SCRATCH_FRACTION of the device's memory over a term's bytes,
    within the device's largest allocation (a column with more terms is a block of its own)."""
    if BLOCK_TERMS is not None:
        return int(BLOCK_TERMS)
    per_term = 4 + 2 * item
    budget = min(be.global_mem * SCRATCH_FRACTION, be.max_alloc)
    return max(1 << 16, int(budget // per_term))


def lane_count(be, n: int, item: int) -> int:
    """Work-items of the expansion: LANES_PER_UNIT per compute unit, fewer when their N-value
    accumulators would take more than SCRATCH_FRACTION of the device's memory."""
    if LANES is not None:
        return int(LANES)
    units = max(1, int(be.device.max_compute_units))
    fit = int(min(be.global_mem * SCRATCH_FRACTION, be.max_alloc) // max(1, n * item))
    return max(1, min(LANES_PER_UNIT * units, fit))


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
        self.row = be.copy_of(start.indices.astype(np.int32, copy=False), "mcl iterand rows")
        self.val = be.copy_of(start.data.astype(self.dtype, copy=False), "mcl iterand values")
        item = self.dtype.itemsize
        self.block_terms = block_terms(be, item)
        self.lanes = lane_count(be, self.n, item)
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
        self.count(be.queue, *be.bounded_launch(n_cols), a_ptr=self.ptr, b_ptr=b_ptr, b_row=b_row, terms=out, col0=col0,
                   n_cols=n_cols)
        terms = np.empty(n_cols, np.int64)
        cl.enqueue_copy(be.queue, terms, out)
        return terms

    def _expand(self, b, col0, n_cols, terms, last: bool):
        """One product of the iterand with block b's columns, pruned if last, left in the
        block scratch: (term pointers on the host and the device, rows, values, kept, chaos)."""
        be, item = self.be, self.dtype.itemsize
        term_ptr = np.concatenate(([0], np.cumsum(column_slots(terms, self.n)))).astype(np.int64)
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
        chaos = np.zeros(n_cols, self.dtype)
        if last:
            cl.enqueue_copy(be.queue, chaos, chaos_buf)
        return term_ptr_buf, rows, vals, kept, chaos

    def _gather(self, scratch, kept, offset: int, out_row, out_val, inflation: float):
        """The kept entries of a block's scratch into (out_row, out_val) from ``offset``."""
        be = self.be
        term_ptr_buf, rows, vals = scratch
        out_ptr = offset + np.concatenate(([0], np.cumsum(kept, dtype=np.int64)))
        self.gather(be.queue, *be.bounded_launch(len(kept)), term_ptr=term_ptr_buf, rows=rows, vals=vals,
                    out_ptr=be.copy_of(out_ptr, "mcl block pointers"), out_row=out_row, out_val=out_val,
                    n_cols=len(kept), inflation=inflation)

    def _next_buffers(self, capacity: int):
        item = self.dtype.itemsize
        return (self.be.empty(4 * capacity, "mcl next iterand rows"),
                self.be.empty(item * capacity, "mcl next iterand values"))

    def iterate(self, inflation):
        """One iteration. The next iterand is written in place block by block: it is allocated
        once the first block's kept entries show its likely size (CAPACITY_MARGIN over their
        extrapolation), and grown (with a copy of what it holds) only if a block does not fit,
        so memory is the two iterands, one block's scratch and the accumulators."""
        be, n, p = self.be, self.n, self.params
        with be.lock:
            terms = self._count(self.ptr, self.row, 0, n)
            counts = np.zeros(n, np.int64)
            filled, capacity, row, val, chaos_max = 0, 0, None, None, 0.0
            for start, stop in _blocks(column_slots(terms, n), self.block_terms):
                width = stop - start
                b, col0, t = (self.ptr, self.row, self.val), start, terms[start:stop]
                for step in range(p.expansion - 1):
                    last = step == p.expansion - 2
                    if step:
                        t = self._count(b[0], b[1], 0, width)
                    *scratch, kept, chaos = self._expand(b, col0, width, t, last)
                    if not last:  # an unpruned intermediate power: the right factor of the next product
                        size = int(kept.sum())
                        piece = self._next_buffers(size)
                        self._gather(scratch, kept, 0, *piece, 1.0)
                        b = (be.copy_of(np.concatenate(([0], np.cumsum(kept, dtype=np.int64))),
                                        "mcl block pointers"),) + piece
                        col0 = 0
                size = int(kept.sum())
                if filled + size > capacity:
                    done = stop
                    estimate = int(np.ceil((filled + size) * n / done * CAPACITY_MARGIN)) if done < n else 0
                    capacity = max(filled + size, estimate, 1)
                    grown = self._next_buffers(capacity)
                    if filled:
                        self.append(be.queue, *be.bounded_launch(filled), piece_row=row, piece_val=val, out_row=grown[0],
                                    out_val=grown[1], offset=0, n=filled)
                    row, val = grown
                if size:
                    self._gather(scratch, kept, filled, row, val, inflation)
                counts[start:stop] = kept
                filled += size
                chaos_max = max(chaos_max, float(chaos.max()))
            if row is None:  # nothing kept anywhere (every product underflowed)
                row, val = self._next_buffers(1)
            self.host_ptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
            self.ptr = be.copy_of(self.host_ptr, "mcl iterand column pointers")
            self.row, self.val = row, val
            be.queue.finish()
        return chaos_max, filled

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
