/* Markov clustering iterations with mcl's semantics (host side: clnet/opencl/mcl.py;
 * the rule each kernel follows: clnet/common/mcl.py, prune_thresholds).
 *
 * The iterand is a square matrix by columns (CSC: col_ptr, row_idx, val). One block of
 * columns is expanded at a time, so memory is the iterand plus one block's product terms:
 *
 * clnet_mcl_expand_prune: n_lanes work-items, each with its own dense accumulator of N
 *   values, take the block's columns in turn (as mcl's expansion threads do). A column j
 *   of M*M is accumulated there, its touched rows collected into the column's slice of
 *   the scratch (sized by the host from the column's term count, at most N, plus one slot
 *   for the branch-free record of rows, see clnet_mcl_column), its chaos
 *   measured; when selection or recovery needs them, the S-th and R-th largest values are
 *   found by selection (never a full sort) in a copy of its values, giving mcl's thresholds
 *   (cutoff, top S, recovery up to R); the surviving entries, rescaled to sum 1 and sorted
 *   by row, stay at the front of its slice.
 * clnet_mcl_gather_inflate: one work-item per column; copies the kept entries of the block
 *   into the next iterand at the offsets the host computed from the kept counts, raised
 *   to the inflation power and rescaled to sum 1.
 * clnet_mcl_count_terms: the number of product terms of each column of the block, from
 *   which the host sizes the block and its term slices (the one read-back per block).
 * clnet_mcl_append: copies one block's entries into the next iterand at an offset (on the
 *   device, where several blocks make one iterand).
 * An expansion power above 2 multiplies again with the previous product of the block as
 *   the right factor (do_prune = 0 leaves it unpruned, gathered with inflation 1). */
#include "clnet_common.h"

/* Sift-down of a max-heap of (key, value) pairs ordered by key. */
static void clnet_mcl_sift_rows(__global int *key, __global real *val, long root, long n)
{
    for (;;) {
        long child = 2 * root + 1;
        if (child >= n) return;
        if (child + 1 < n && key[child + 1] > key[child]) child++;
        if (key[root] >= key[child]) return;
        const int tk = key[root]; key[root] = key[child]; key[child] = tk;
        const real tv = val[root]; val[root] = val[child]; val[child] = tv;
        root = child;
    }
}

/* Heap sort of n (key, value) pairs by ascending key (the keys: row indices). */
static void clnet_mcl_sort_rows(__global int *key, __global real *val, long n)
{
    for (long start = n / 2 - 1; start >= 0; --start) clnet_mcl_sift_rows(key, val, start, n);
    for (long end = n - 1; end > 0; --end) {
        const int tk = key[0]; key[0] = key[end]; key[end] = tk;
        const real tv = val[0]; val[0] = val[end]; val[end] = tv;
        clnet_mcl_sift_rows(key, val, 0, end);
    }
}

/* The k-th largest of v[lo..hi] (0-based position k in descending order), v reordered
 * so that v[lo..k-1] >= v[k] >= v[k+1..hi] (Hoare's selection, as Wirth writes it, with a
 * median-of-three pivot). O(n) on average: selection needs the S-th and R-th largest
 * values of a column, never the whole column in order. The pivot is a value of the range,
 * so the inner scans stop inside it; equal values stop both scans, so ties cost no more. */
static real clnet_mcl_select_desc(__global real *v, long lo, long hi, long k)
{
    while (lo < hi) {
        const real a = v[lo], b = v[lo + (hi - lo) / 2], c = v[hi];
        const real pivot = fmax(fmin(a, b), fmin(fmax(a, b), c));
        long i = lo, j = hi;
        do {
            while (v[i] > pivot) i++;
            while (v[j] < pivot) j--;
            if (i <= j) {
                const real t = v[i]; v[i] = v[j]; v[j] = t;
                i++; j--;
            }
        } while (i <= j);
        if (j < k) lo = i;
        if (k < i) hi = j;
    }
    return v[k];
}

/* Column j of A * B for the block's columns col0.. of B, accumulated densely in ``column``
 * (n_rows values, zero on entry and on exit), its entries collected into the slice
 * [term_ptr[j], term_ptr[j+1]) of (rows, vals). With do_prune = 0 the
 * summed product is left sorted by row at the front of the slice (an intermediate power);
 * with do_prune = 1 it is pruned as mcl prunes and rescaled. kept[j]: entries left. */
__kernel void clnet_mcl_count_terms(
    __global const long *a_ptr, __global const long *b_ptr, __global const int *b_row,
    __global long *terms, int col0, int n_cols)
{
    const int j = get_global_id(0);
    if (j >= n_cols) return;
    long n = 0;
    for (long e = b_ptr[col0 + j]; e < b_ptr[col0 + j + 1]; ++e) n += a_ptr[b_row[e] + 1] - a_ptr[b_row[e]];
    terms[j] = n;
}

static void clnet_mcl_column(
    __global const long *a_ptr, __global const int *a_row, __global const real *a_val,
    __global const long *b_ptr, __global const int *b_row, __global const real *b_val, int col0,
    __global const long *term_ptr, __global int *rows, __global real *vals, __global real *sorted,
    __global real *column, __global int *kept, __global real *chaos,
    int j, int do_prune, real cutoff, int select_n, int recover_n, real recover_mass)
{
    const long base = term_ptr[j];
    long u = 0;
    for (long e = b_ptr[col0 + j]; e < b_ptr[col0 + j + 1]; ++e) {
        const int k = b_row[e];
        const real w = b_val[e];
        for (long q = a_ptr[k]; q < a_ptr[k + 1]; ++q) {
            const int r = a_row[q];
            const real term = a_val[q] * w;
            /* Without a branch: about a third of the terms touch a row first (its row is
             * recorded), and a branch on that mispredicts too often. The row is written at
             * every term and kept by advancing u only on a first touch; an underflowed term
             * (zero) adds nothing and records nothing. The slice has one slot beyond the
             * column's possible rows for the write after the last one. */
            const real old = column[r];
            rows[base + u] = r;
            u += (old == (real)0) & (term != (real)0);
            column[r] = old + term;
        }
    }
    long nz = 0;
    for (long t = 0; t < u; ++t) {  /* collect and clear; an exact zero (underflow) is no entry */
        const int r = rows[base + t];
        const real v = column[r];
        column[r] = 0;
        if (v != (real)0) {
            rows[base + nz] = r;
            vals[base + nz] = v;
            nz++;
        }
    }
    u = nz;
    if (!do_prune) {
        kept[j] = (int)u;
        chaos[j] = 0;
        return;
    }
    real vmax = 0, squares = 0, mass_prune = 0;
    long n_prune = 0;
    for (long t = 0; t < u; ++t) {
        const real v = vals[base + t];
        vmax = fmax(vmax, v);
        squares += v * v;
        if (v >= cutoff) { n_prune++; mass_prune += v; }
    }
    /* Most columns keep what passes the cutoff: sorting is needed only for selection, or
     * for a recovery that cannot keep everything. */
    const int recovering = n_prune < recover_n && mass_prune < recover_mass;
    const int selecting = !recovering && n_prune > select_n;
    real threshold = recovering ? -INFINITY : cutoff;
    if (selecting || (recovering && u > recover_n)) {
        __global real *copy = sorted + base;
        for (long t = 0; t < u; ++t) copy[t] = vals[base + t];
        if (recovering) {
            threshold = clnet_mcl_select_desc(copy, 0, u - 1, recover_n - 1);  /* u > recover_n here */
        } else {
            /* The S-th largest, then (when needed) the R-th largest in the part of the copy
             * that can hold it: selection leaves the larger values before position S-1. */
            const long ks = select_n - 1, kr = recover_n - 1;
            const real v_s = clnet_mcl_select_desc(copy, 0, u - 1, ks);
            long n_sel = 0;
            real mass_sel = 0;
            for (long t = 0; t < u; ++t) {  /* ties at v_s are all kept */
                const real v = vals[base + t];
                if (v >= v_s) { n_sel++; mass_sel += v; }
            }
            const real v_r = u <= kr ? -INFINITY
                             : kr == ks ? v_s
                             : kr > ks ? clnet_mcl_select_desc(copy, ks + 1, u - 1, kr)
                                       : clnet_mcl_select_desc(copy, 0, ks - 1, kr);
            threshold = v_s;
            if (n_sel < recover_n && mass_sel < recover_mass)
                threshold = n_prune > recover_n ? v_r : cutoff;
        }
    }
    long m = 0;
    real mass = 0;
    for (long t = 0; t < u; ++t) {
        if (vals[base + t] >= threshold) {
            rows[base + m] = rows[base + t];
            vals[base + m] = vals[base + t];
            mass += vals[base + t];
            m++;
        }
    }
    if (mass > 0)
        for (long t = 0; t < m; ++t) vals[base + t] /= mass;
    kept[j] = (int)m;
    clnet_mcl_sort_rows(rows + base, vals + base, m);
    chaos[j] = fmax(vmax - squares, (real)0) * (real)m;
}

__kernel void clnet_mcl_expand_prune(
    __global const long *a_ptr, __global const int *a_row, __global const real *a_val,
    __global const long *b_ptr, __global const int *b_row, __global const real *b_val, int col0,
    __global const long *term_ptr, __global int *rows, __global real *vals, __global real *sorted,
    __global real *acc, __global int *kept, __global real *chaos,
    int n_cols, int n_rows, int n_lanes, int do_prune, real cutoff, int select_n, int recover_n,
    real recover_mass)
{
    const int lane = get_global_id(0);
    if (lane >= n_lanes) return;
    /* This lane's dense accumulator: all zero between columns (each column clears what it
     * touched), as mcl accumulates a column (mcl/expand.c, matrix_vector_array). */
    __global real *column = acc + (long)lane * n_rows;
    for (int j = lane; j < n_cols; j += n_lanes)
        clnet_mcl_column(a_ptr, a_row, a_val, b_ptr, b_row, b_val, col0, term_ptr, rows, vals, sorted, column,
                         kept, chaos, j, do_prune, cutoff, select_n, recover_n, recover_mass);
}

/* Kept entries of column j (front of its term slice) to [out_ptr[j], out_ptr[j+1]) of the
 * next iterand, each raised to inflation and the column rescaled to sum 1; with
 * inflation = 1 a plain copy (an intermediate power). */
__kernel void clnet_mcl_gather_inflate(
    __global const long *term_ptr, __global const int *rows, __global const real *vals,
    __global const long *out_ptr, __global int *out_row, __global real *out_val,
    int n_cols, real inflation)
{
    const int j = get_global_id(0);
    if (j >= n_cols) return;
    const long src = term_ptr[j], dst = out_ptr[j], m = out_ptr[j + 1] - out_ptr[j];
    if (inflation == (real)1) {
        for (long t = 0; t < m; ++t) { out_row[dst + t] = rows[src + t]; out_val[dst + t] = vals[src + t]; }
        return;
    }
    /* pow() is a slow general routine on CPU devices (about 0.3 us a call on PoCL, most of an
     * iteration's time); the entries are > 0, so exp2(inflation * log2(v)) serves, within a
     * few ulp, and mcl's default inflation 2 is an exact square. */
    const int square = inflation == (real)2;
    real sum = 0;
    for (long t = 0; t < m; ++t) {
        const real v = vals[src + t];
        const real p = square ? v * v : v > (real)0 ? exp2(inflation * log2(v)) : (real)0;
        out_row[dst + t] = rows[src + t];
        out_val[dst + t] = p;
        sum += p;
    }
    if (sum > 0)
        for (long t = 0; t < m; ++t) out_val[dst + t] /= sum;
}


/* Entries [0, n) of a block to [offset, offset + n) of the next iterand. A kernel rather
 * than clEnqueueCopyBuffer: the same on every device, and Oclgrind's uninitialised-value
 * tracking keeps its state through kernel stores (a host copy at an offset resets the
 * shadow of the whole destination buffer to the copied range, so earlier blocks would read
 * as uninitialised: a false report, traced in its source, Uninitialized::hostMemoryStore). */
__kernel void clnet_mcl_append(
    __global const int *piece_row, __global const real *piece_val, __global int *out_row, __global real *out_val,
    long offset, long n)
{
    const long t = get_global_id(0);
    if (t >= n) return;
    out_row[offset + t] = piece_row[t];
    out_val[offset + t] = piece_val[t];
}
