"""NumPy reference of Markov clustering iterations (float64 is the reference).

The expansion is computed in blocks of columns, each an expand-sort-compress product:
every product term of the block's columns is generated with array arithmetic, the terms
are sorted by (column, row) and summed, and the block is pruned
(clnet.common.mcl.prune_columns) before it is stored. The unpruned square therefore never
exists: memory is the pruned iterand plus one block of product terms.
"""
import numpy as np

from clnet.common.mcl import Columns, MCLParams, inflate, prune_columns
from clnet.contract import MCLOps, MCLPlan

# Product terms generated at once: about 24 bytes each over three arrays and their sort.
BLOCK_TERMS = 1 << 21
# Up to this many nodes, an iterand whose expansion has more terms than a quarter of N*N is
# expanded with dense products (BLAS) in blocks of columns instead of sorting its terms.
DENSE_NODES = 3000


def multiply_block(a: Columns, b_indptr, b_indices, b_data, dtype):
    """Columns of ``a @ b`` for the columns of b given in CSC form (indptr from 0):
    (indptr, rows, values) with rows ascending within each column; exact zeros dropped."""
    n_cols = len(b_indptr) - 1
    a_start = a.indptr[b_indices]
    lengths = a.indptr[b_indices + 1] - a_start
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(n_cols + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, dtype)
    entry_col = np.repeat(np.arange(n_cols, dtype=np.int64), np.diff(b_indptr))
    first = np.cumsum(lengths) - lengths
    source = np.repeat(a_start - first, lengths) + np.arange(total, dtype=np.int64)
    rows = a.indices[source].astype(np.int64)
    terms = a.data[source].astype(dtype) * np.repeat(b_data.astype(dtype), lengths)
    key = np.repeat(entry_col, lengths) * a.n + rows
    order = np.argsort(key, kind="stable")
    key = key[order]
    boundary = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    sums = np.add.reduceat(terms[order], boundary).astype(dtype)
    key = key[boundary]
    nonzero = sums != 0
    key, sums = key[nonzero], sums[nonzero]
    out_col = key // a.n
    indptr = np.concatenate(([0], np.cumsum(np.bincount(out_col, minlength=n_cols)))).astype(np.int64)
    return indptr, (key % a.n).astype(np.int32), sums


def column_blocks(cols: Columns, weights: np.ndarray, budget: int):
    """(start, stop) ranges of columns whose summed ``weights`` stay within ``budget``
    (a single heavier column is a block of its own)."""
    n = cols.n
    cum = np.cumsum(weights)
    start = 0
    while start < n:
        base = cum[start - 1] if start else 0
        stop = int(np.searchsorted(cum, base + budget, side="right"))
        stop = min(n, max(stop, start + 1))
        yield start, stop
        start = stop


def expand_and_prune(m: Columns, power: int, params: MCLParams, dtype, block_terms=BLOCK_TERMS):
    """The pruned columns of m**power (each column: m applied power-1 times to m's column,
    pruned once at the end) and the chaos of each expanded column."""
    col_len = np.diff(m.indptr)
    terms_per_col = np.zeros(m.n, dtype=np.int64)
    np.add.at(terms_per_col, m.column_of_entry(), col_len[m.indices])
    if m.n <= DENSE_NODES and terms_per_col.sum() * 4 > m.n * m.n:
        return _expand_dense(m, power, params, dtype)
    pieces, chaos = [], np.zeros(m.n)
    for start, stop in column_blocks(m, terms_per_col, block_terms):
        lo, hi = m.indptr[start], m.indptr[stop]
        indptr = m.indptr[start:stop + 1] - lo
        indices, data = m.indices[lo:hi], m.data[lo:hi]
        for _ in range(power - 1):
            indptr, indices, data = multiply_block(m, indptr, indices, data, dtype)
        block = Columns(stop - start, indptr, indices, data)
        pruned, block_chaos = prune_columns(block, params)
        chaos[start:stop] = block_chaos
        pieces.append(pruned)
    indptr = np.concatenate([[0]] + [np.diff(p.indptr) for p in pieces]).cumsum().astype(np.int64)
    return Columns(m.n, indptr, np.concatenate([p.indices for p in pieces]).astype(np.int32),
                   np.concatenate([p.data for p in pieces]).astype(dtype)), chaos


def _expand_dense(m: Columns, power: int, params: MCLParams, dtype):
    dense = np.zeros((m.n, m.n), dtype=dtype)
    dense[m.indices, m.column_of_entry()] = m.data
    pieces, chaos = [], np.zeros(m.n)
    step = max(1, (1 << 22) // max(1, m.n))
    for start in range(0, m.n, step):
        block = dense[:, start:start + step]
        for _ in range(power - 1):
            block = dense @ block
        cols, rows = np.nonzero(block.T)
        counts = np.bincount(cols, minlength=block.shape[1])
        expanded = Columns(block.shape[1], np.concatenate(([0], np.cumsum(counts))).astype(np.int64),
                           rows.astype(np.int32), block.T[cols, rows])
        pruned, chaos[start:start + step] = prune_columns(expanded, params)
        pieces.append(pruned)
    indptr = np.concatenate([[0]] + [np.diff(p.indptr) for p in pieces]).cumsum().astype(np.int64)
    return Columns(m.n, indptr, np.concatenate([p.indices for p in pieces]).astype(np.int32),
                   np.concatenate([p.data for p in pieces]).astype(dtype)), chaos


class NumpyMCLPlan(MCLPlan):
    def __init__(self, start: Columns, dtype, params: MCLParams):
        self.dtype = np.dtype(dtype)
        self.params = params
        self.iterand = Columns(start.n, start.indptr.astype(np.int64), start.indices.astype(np.int32),
                               start.data.astype(self.dtype))

    def iterate(self, inflation):
        expanded, chaos = expand_and_prune(self.iterand, self.params.expansion, self.params, self.dtype)
        self.iterand = inflate(expanded, inflation)
        return float(chaos.max()) if len(chaos) else 0.0, self.iterand.nnz

    def current(self):
        it = self.iterand
        return Columns(it.n, it.indptr.copy(), it.indices.copy(), it.data.astype(np.float64))


class MCLReference(MCLOps):
    def mcl_plan(self, start, dtype, params):
        return NumpyMCLPlan(start, dtype, params)
