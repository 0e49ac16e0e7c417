/* Pairwise Pearson correlation with missing data (host side: clnet/opencl/pearson.py).
 *
 * Rows arrive centred and scaled on the host, with 0 where a value is missing and a
 * 1/0 validity mask beside them. They are packed in groups of CLNET_VW rows: the
 * values of group g at position p are the CLNET_VW consecutive numbers starting at
 * (g * M + p) * CLNET_VW, so that one work-item streams contiguous memory and a
 * whole group of columns is one vector load.
 *
 * One work-item computes CLNET_RI rows x CLNET_VW columns with explicit vectors (a CPU
 * runtime such as PoCL does not vectorise the work-item loop around an inner loop):
 * per position, two vector loads and 6 * CLNET_RI vector FMAs. */
#include "clnet_common.h"

#ifndef CLNET_VW
#error "CLNET_VW (values per vector) is set by the host: clnet/opencl/pearson.py"
#endif
#ifndef CLNET_RC /* rows per work-item of clnet_pearson_complete */
#define CLNET_RC 8
#endif
#ifndef CLNET_RI
#define CLNET_RI 4
#endif

typedef CLNET_CAT(CLNET_REAL, CLNET_VW) realv;
/* The pair kernels below are written with explicit vectors and say so (vec_type_hint):
 * without the hint Intel's CPU compiler scalarises them and packs neighbouring work-items
 * into vectors again. */
#define CLNET_VLOAD CLNET_CAT(vload, CLNET_VW)
#define CLNET_VSTORE CLNET_CAT(vstore, CLNET_VW)

/* A pair whose variances cancel in its sums is marked with CLNET_RESCUE (outside
 * [-1, 1]) and recomputed on the host in float64 (clnet.common.pearson.rescue_fraction): with
 * vx < tau * Sxx (or vy < tau * Syy) the sums no longer determine r to the target
 * accuracy. Such pairs are rare (mostly a handful of common positions whose values
 * nearly coincide); a kernel that stores one also increments *flagged. */
#ifndef CLNET_RESCUE
#error "CLNET_RESCUE is set by the host from clnet.common.pearson.RESCUE"
#endif

/* r from the six sums, lane by lane; NaN below min_overlap or for (relative) zero
 * variance, clipped to [-1, 1] in a way that lets nothing else through; CLNET_RESCUE
 * where the variances cancel (which covers zero variance: the host decides). */
inline realv clnet_pearson_finish(realv n, realv sx, realv sy, realv sxx, realv syy,
                                  realv sxy, real min_overlap, real eps, real tau)
{
    const realv inv = (realv)1 / n;
    const realv vx = sxx - sx * sx * inv;
    const realv vy = syy - sy * sy * inv;
    const realv cov = sxy - sx * sy * inv;
    realv r = cov / sqrt(vx * vy);
    /* Two points are always exactly on a line: the formula's rounding is not. */
    r = select(r, copysign((realv)1, cov), n == (realv)2);
    r = select(r, (realv)-1, r < (realv)-1);
    r = select(r, (realv)1, r > (realv)1);
    r = select((realv)NAN, r, (n >= min_overlap) & (vx > eps * sxx) & (vy > eps * syy));
    return select(r, (realv)CLNET_RESCUE, (n >= min_overlap) & ((vx < tau * sxx) | (vy < tau * syy)));
}

/* Counts (at most once per call) a stored CLNET_RESCUE mark of row i, lanes j0.. . */
inline void clnet_pearson_flag(const realv r, const int i, const int j0, const int n_cols,
                               const int mirror, __global int *flagged)
{
    if (!any(r == (realv)CLNET_RESCUE))
        return;
    real lanes[CLNET_VW];
    CLNET_VSTORE(r, 0, lanes);
    for (int l = 0; l < CLNET_VW && j0 + l < n_cols; ++l) {
        if (lanes[l] == (real)CLNET_RESCUE && (!mirror || j0 + l >= i)) {
            atomic_inc(flagged);
            return;
        }
    }
}

/* Store one row of a result tile: lanes j >= n_cols are padding. With `mirror` (the
 * dense symmetric case) only lanes with j >= i are stored, each also at (j, i). */
inline void clnet_pearson_store(__global real *out, const long ld, const int i, const int row0,
                                const int j0, const int col0, const int n_cols, const int mirror,
                                realv r)
{
    __global real *dst = out + (long)(i - row0) * ld + (j0 - col0);
    if (!mirror && j0 + CLNET_VW <= n_cols) {
        CLNET_VSTORE(r, 0, dst);
        return;
    }
    real lanes[CLNET_VW];
    CLNET_VSTORE(r, 0, lanes);
    for (int l = 0; l < CLNET_VW; ++l) {
        const int j = j0 + l;
        if (j >= n_cols)
            break;
        if (!mirror) {
            dst[l] = lanes[l];
        } else if (j >= i) {
            dst[l] = lanes[l];
            out[(long)j * ld + i] = lanes[l];
        }
    }
}

/* Rows row0 .. row0 + n_rows - 1 (row0 a multiple of CLNET_VW) against columns
 * col0 .. n_cols - 1 (col0 a multiple of CLNET_VW), stored from column 0 of `out`.
 * Every kernel below takes these arguments. Global size: (column groups from col0,
 * row blocks of the kernel's rows per work-item), the two swapped with CLNET_COLS_DIM 1;
 * clnet_pearson_complete takes CLNET_CC column groups per work-item. With
 * `mirror`, tiles wholly below the diagonal are skipped and the upper ones stored twice. */
/* Tile and lane of a (non-negative) row index. Unsigned arithmetic on purpose: a signed
 * `i / VW` next to `i % VW` makes clang emit a `freeze` instruction, which Oclgrind 21.10
 * cannot simulate with uninitialised-value checking on. */
#define CLNET_TILE_OF(i) ((int)((uint)(i) / CLNET_VW))
#define CLNET_LANE_OF(i) ((int)((uint)(i) % CLNET_VW))

/* Which launch dimension runs over the column groups (the other runs over the row
 * blocks). Work-groups are taken in the order of dimension 0 first: with the row blocks
 * there (CLNET_COLS_DIM 1), the work-items that run one after another share a column panel,
 * which stays in cache, and the strip's few rows are read again instead of every column of
 * the matrix (clnet/opencl/tuning.py, pearson "order"). */
#ifndef CLNET_COLS_DIM
#define CLNET_COLS_DIM 0
#endif

/* The tile of pairs a work-item owns: rows i0 .. i0 + ROWS - 1 of the strip against the
 * VW columns from j0 (column group jg). Work-items past the strip's end return, and with
 * `mirror` (X against itself) so do tiles wholly below the diagonal, which the host fills
 * from their mirror image. Declares jg, i0 and j0. */
#define CLNET_PAIR_TILE(ROWS)                                            \
    const int jg = col0 / CLNET_VW + (int)get_global_id(CLNET_COLS_DIM); \
    const int i0 = row0 + (int)get_global_id(1 - CLNET_COLS_DIM) * (ROWS); \
    const int j0 = jg * CLNET_VW;                                       \
    if (i0 >= row0 + n_rows || j0 >= n_cols)                            \
        return;                                                         \
    if (mirror && j0 + CLNET_VW <= i0)                                  \
        return

__kernel __attribute__((vec_type_hint(realv))) void clnet_pearson_masked(__global const real *ax, __global const real *av,
                                   __global const real *bx, __global const real *bv,
                                   const int M, const int row0, const int n_rows,
                                   const int n_cols, const int col0, const real min_overlap,
                                   const real eps, const int mirror, __global real *out,
                                   const long ld, const real tau, __global int *flagged)
{
    CLNET_PAIR_TILE(CLNET_RI);
    const long a_off = ((long)CLNET_TILE_OF(i0) * M) * CLNET_VW + CLNET_LANE_OF(i0);
    __global const real *pax = ax + a_off;
    __global const real *pav = av + a_off;
    __global const real *pbx = bx + (long)jg * M * CLNET_VW;
    __global const real *pbv = bv + (long)jg * M * CLNET_VW;

    realv n[CLNET_RI], sx[CLNET_RI], sy[CLNET_RI], sxx[CLNET_RI], syy[CLNET_RI], sxy[CLNET_RI];
#pragma unroll
    for (int r = 0; r < CLNET_RI; ++r) {
        n[r] = sx[r] = sy[r] = sxx[r] = syy[r] = sxy[r] = (realv)0;
    }
    for (int p = 0; p < M; ++p) {
        const realv y = CLNET_VLOAD(p, pbx);
        const realv w = CLNET_VLOAD(p, pbv);
        const realv yy = y * y;
#pragma unroll
        for (int r = 0; r < CLNET_RI; ++r) {
            const real xi = pax[p * CLNET_VW + r];
            const real vi = pav[p * CLNET_VW + r];
            n[r] = fma((realv)vi, w, n[r]);
            sx[r] = fma((realv)xi, w, sx[r]);
            sy[r] = fma((realv)vi, y, sy[r]);
            sxx[r] = fma((realv)(xi * xi), w, sxx[r]);
            syy[r] = fma((realv)vi, yy, syy[r]);
            sxy[r] = fma((realv)xi, y, sxy[r]);
        }
    }
#pragma unroll
    for (int r = 0; r < CLNET_RI; ++r) {
        const int i = i0 + r;
        if (i < row0 + n_rows) {
            const realv rr = clnet_pearson_finish(n[r], sx[r], sy[r], sxx[r], syy[r], sxy[r],
                                                  min_overlap, eps, tau);
            clnet_pearson_store(out, ld, i, row0, j0, col0, n_cols, mirror, rr);
            clnet_pearson_flag(rr, i, j0, n_cols, mirror, flagged);
        }
    }
}

/* Complete data: rows are centred and of unit norm, so r is one dot product.
 * `a_ok` / `b_ok` are 0 for a constant row (its r is NaN). Each work-item computes
 * CLNET_RC rows x CLNET_CC groups of CLNET_VW columns (its own tile: one accumulator per
 * row and group, against six for the masked sums). Per position it loads CLNET_CC column
 * vectors and CLNET_RC row values for CLNET_RC x CLNET_CC multiply-adds: with two groups
 * the loads per multiply-add nearly halve, which is what bounds this loop on a CPU.
 * The host pads both packed operands to whole tiles (rows: CLNET_RC, rounded up to whole
 * groups; columns: CLNET_CC groups), so no load leaves them; padding is never stored.
 * With CLNET_RC > CLNET_VW (float64's 8-row groups) a tile spans several groups. */
#ifndef CLNET_CC
#define CLNET_CC 1
#endif
__kernel __attribute__((vec_type_hint(realv))) void clnet_pearson_complete(__global const real *a, __global const real *a_ok,
                                     __global const real *b, __global const real *b_ok,
                                     const int M, const int row0, const int n_rows,
                                     const int n_cols, const int col0, const int mirror,
                                     __global real *out, const long ld)
{
    const int jg = col0 / CLNET_VW + (int)get_global_id(CLNET_COLS_DIM) * CLNET_CC;
    const int i0 = row0 + (int)get_global_id(1 - CLNET_COLS_DIM) * CLNET_RC;
    const int j0 = jg * CLNET_VW;
    if (i0 >= row0 + n_rows || j0 >= n_cols)
        return;
    if (mirror && j0 + CLNET_CC * CLNET_VW <= i0)
        return;
    __global const real *pa = a + ((long)CLNET_TILE_OF(i0) * M) * CLNET_VW + CLNET_LANE_OF(i0);
    __global const real *pb = b + (long)jg * M * CLNET_VW;
    const long group_stride = (long)M * CLNET_VW;
    realv acc[CLNET_RC][CLNET_CC];
#pragma unroll
    for (int r = 0; r < CLNET_RC; ++r)
#pragma unroll
        for (int c = 0; c < CLNET_CC; ++c)
            acc[r][c] = (realv)0;
    for (int p = 0; p < M; ++p) {
        realv y[CLNET_CC];
#pragma unroll
        for (int c = 0; c < CLNET_CC; ++c)
            y[c] = CLNET_VLOAD(p, pb + c * group_stride);
#pragma unroll
        for (int r = 0; r < CLNET_RC; ++r) {
            /* r / CLNET_VW and r % CLNET_VW are constants once unrolled */
            const realv x = (realv)pa[(r / CLNET_VW) * group_stride + p * CLNET_VW + r % CLNET_VW];
#pragma unroll
            for (int c = 0; c < CLNET_CC; ++c)
                acc[r][c] = fma(x, y[c], acc[r][c]);
        }
    }
#pragma unroll
    for (int c = 0; c < CLNET_CC; ++c) {
        const int jc = j0 + c * CLNET_VW;
        if (jc >= n_cols)
            break;
        const realv ok_b = CLNET_VLOAD(jg + c, b_ok);
#pragma unroll
        for (int r = 0; r < CLNET_RC; ++r) {
            const int i = i0 + r;
            if (i >= row0 + n_rows)
                break;
            realv v = acc[r][c];
            v = select(v, (realv)-1, v < (realv)-1);
            v = select(v, (realv)1, v > (realv)1);
            v = select((realv)NAN, v, (ok_b * a_ok[i]) > (realv)0);
            clnet_pearson_store(out, ld, i, row0, jc, col0, n_cols, mirror, v);
        }
    }
}

/* Whether the CLNET_VW candidates src[j ..] of a row of n can be passed over at once: the
 * list (best first) is full, the block whole and aligned, and none of its values beats the
 * k-th best (NaN compares false, so it never does). One vector comparison instead of
 * CLNET_VW scalar ones; the candidates of a block that may enter go one by one. */
inline int clnet_topk_skip_block(__global const real *src, const int j, const int n, const real *best,
                                 const int count, const int k)
{
    return count == k && j % CLNET_VW == 0 && j + CLNET_VW <= n &&
           !any(CLNET_VLOAD(0, src + j) > (realv)best[k - 1]);
}

/* Top-k of each strip row on the device, so that only k candidates per row come back.
 * One work-item per row keeps its best k in order (largest r first; on equal r the
 * lower column wins because columns are scanned in increasing order and only a
 * strictly larger r moves ahead). NaN is never a candidate; `self_col0` >= 0 excludes
 * column self_col0 + row (a row is not its own neighbour). Unused slots: -1 / NaN. */
__kernel __attribute__((vec_type_hint(realv))) void clnet_pearson_topk(__global const real *strip, const long ld, const int n_rows,
                                 const int n_cols, const int k, const int self_col0,
                                 __global int *out_idx, __global real *out_val)
{
    const int row = get_global_id(0);
    if (row >= n_rows)
        return;
    real best[CLNET_TOPK_MAX];
    int where[CLNET_TOPK_MAX];
    int count = 0;
    const int self = self_col0 >= 0 ? self_col0 + row : -1;
    __global const real *src = strip + (long)row * ld;
    for (int j = 0; j < n_cols; ++j) {
        if (clnet_topk_skip_block(src, j, n_cols, best, count, k)) {
            j += CLNET_VW - 1;
            continue;
        }
        const real v = src[j];
        if (isnan(v) || j == self)
            continue;
        if (count == k && !(v > best[k - 1]))
            continue;
        int pos = count < k ? count++ : k - 1;
        while (pos > 0 && v > best[pos - 1]) {
            best[pos] = best[pos - 1];
            where[pos] = where[pos - 1];
            --pos;
        }
        best[pos] = v;
        where[pos] = j;
    }
    for (int q = 0; q < k; ++q) {
        out_idx[(long)row * k + q] = q < count ? where[q] : -1;
        out_val[(long)row * k + q] = q < count ? best[q] : (real)NAN;
    }
}

/* One pair's six sums straight from the masked data (rows i and j at stride
 * CLNET_VW): the sparse kernel's fallback for pairs it cannot compute accurately. */
inline real clnet_pearson_pair(__global const real *x, __global const real *vx_,
                               __global const real *y, __global const real *vy_, const int M,
                               const real min_overlap, const real eps, const real tau)
{
    real n = 0, sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
    for (int p = 0; p < M; ++p) {
        const real a = x[p * CLNET_VW], va = vx_[p * CLNET_VW];
        const real b = y[p * CLNET_VW], vb = vy_[p * CLNET_VW];
        n = fma(va, vb, n);
        sx = fma(a, vb, sx);
        sy = fma(va, b, sy);
        sxx = fma(a * a, vb, sxx);
        syy = fma(va, b * b, syy);
        sxy = fma(a, b, sxy);
    }
    const real inv = (real)1 / n;
    const real vx = sxx - sx * sx * inv;
    const real vy = syy - sy * sy * inv;
    const real cov = sxy - sx * sy * inv;
    real r = n == (real)2 ? copysign((real)1, cov) : cov / sqrt(vx * vy);
    r = r < (real)-1 ? (real)-1 : (r > (real)1 ? (real)1 : r);
    if (n >= min_overlap && (vx < tau * sxx || vy < tau * syy))
        return (real)CLNET_RESCUE;
    return (n >= min_overlap && vx > eps * sxx && vy > eps * syy) ? r : (real)NAN;
}

/* Few missing values: Sxy is one dense product of the zero-filled rows, and the other
 * five sums are the row totals minus corrections over the *missing* positions only:
 *   Sx(i,j)  = sum_i - sum over p missing in j of x_i[p]   (Sxx, n alike)
 *   Sy(i,j)  = sum_j - sum over p missing in i of x_j[p]   (Syy alike)
 * One work-item computes 8 rows x CLNET_VW columns. The Sx/Sxx/n corrections come out
 * as 8-vectors over rows (one per column) and are transposed through private memory.
 * `*_stats` hold per row: sum, sum of squares, count of finite values (three arrays
 * of the padded row count, back to back).
 *
 * Totals minus corrections lose accuracy when the pair's common positions hold little
 * of a row's sum of squares (the error scales with the row's total, not with the
 * pair's part of it). Pairs where either row keeps less than half of its total are
 * recomputed from the masked data by clnet_pearson_pair; with missing values spread
 * over the rows these are rare. */
#ifndef CLNET_SR /* rows per work-item of clnet_pearson_sparse: clnet/opencl/pearson.py */
#error "CLNET_SR is set by the host: clnet/opencl/pearson.py"
#endif
/* the CLNET_SR rows of a tile as one vector (SR must be a vector length: 2, 4, 8, 16) */
typedef CLNET_CAT(CLNET_REAL, CLNET_SR) realsr;
#define CLNET_SR_LOAD CLNET_CAT(vload, CLNET_SR)
#define CLNET_SR_STORE CLNET_CAT(vstore, CLNET_SR)

__kernel __attribute__((vec_type_hint(realv))) void clnet_pearson_sparse(__global const real *ax, __global const real *av,
                                   __global const real *a_stats, const int a_padded,
                                   __global const int *a_miss_ptr, __global const int *a_miss_pos,
                                   __global const real *bx, __global const real *bv,
                                   __global const real *b_stats,
                                   __global const int *b_miss_ptr, __global const int *b_miss_pos,
                                   const int b_padded,
                                   const int M, const int row0, const int n_rows,
                                   const int n_cols, const int col0, const real min_overlap,
                                   const real eps, const int mirror, __global real *out,
                                   const long ld, const real tau, __global int *flagged)
{
    CLNET_PAIR_TILE(CLNET_SR);
    const long a_off = (long)CLNET_TILE_OF(i0) * M * CLNET_VW + CLNET_LANE_OF(i0);
    __global const real *pa = ax + a_off;
    __global const real *pav = av + a_off;
    __global const real *pb = bx + (long)jg * M * CLNET_VW;

    realv sxy[CLNET_SR];
#pragma unroll
    for (int r = 0; r < CLNET_SR; ++r)
        sxy[r] = (realv)0;
    for (int p = 0; p < M; ++p) {
        const realv y = CLNET_VLOAD(p, pb);
#pragma unroll
        for (int r = 0; r < CLNET_SR; ++r)
            sxy[r] = fma((realv)pa[p * CLNET_VW + r], y, sxy[r]);
    }

    /* Corrections for the columns' missing positions, as vectors over the rows. */
    real tx[CLNET_SR * CLNET_VW], txx[CLNET_SR * CLNET_VW], tn[CLNET_SR * CLNET_VW];
    for (int l = 0; l < CLNET_VW; ++l) {
        realsr cx = (realsr)0, cxx = (realsr)0, cn = (realsr)0;
        const int j = j0 + l;
        if (j < n_cols) {
            for (int q = b_miss_ptr[j]; q < b_miss_ptr[j + 1]; ++q) {
                const int p = b_miss_pos[q];
                const realsr x = CLNET_SR_LOAD(0, pa + p * CLNET_VW);
                cx += x;
                cxx = fma(x, x, cxx);
                cn += CLNET_SR_LOAD(0, pav + p * CLNET_VW);
            }
        }
        CLNET_SR_STORE(cx, l, tx);
        CLNET_SR_STORE(cxx, l, txx);
        CLNET_SR_STORE(cn, l, tn);
    }

    const realv sum_b = CLNET_VLOAD(jg, b_stats);
    const realv ssq_b = CLNET_VLOAD(jg, b_stats + b_padded);
#pragma unroll
    for (int r = 0; r < CLNET_SR; ++r) {
        const int i = i0 + r;
        if (i < row0 + n_rows) {
            realv cy = (realv)0, cyy = (realv)0;
            for (int q = a_miss_ptr[i]; q < a_miss_ptr[i + 1]; ++q) {
                const realv y = CLNET_VLOAD(a_miss_pos[q], pb);
                cy += y;
                cyy = fma(y, y, cyy);
            }
            real gx[CLNET_VW], gxx[CLNET_VW], gn[CLNET_VW];
            for (int l = 0; l < CLNET_VW; ++l) {
                gx[l] = tx[l * CLNET_SR + r];
                gxx[l] = txx[l * CLNET_SR + r];
                gn[l] = tn[l * CLNET_SR + r];
            }
            const real ssq_a = a_stats[a_padded + i];
            const realv sxx = (realv)ssq_a - CLNET_VLOAD(0, gxx);
            const realv syy = ssq_b - cyy;
            realv rr = clnet_pearson_finish(
                (realv)a_stats[2 * a_padded + i] - CLNET_VLOAD(0, gn),
                (realv)a_stats[i] - CLNET_VLOAD(0, gx), sum_b - cy, sxx, syy, sxy[r],
                min_overlap, eps, tau);
            const real two = 2;
            if (any(((realv)ssq_a > two * sxx) | (ssq_b > two * syy))) {
                real lanes[CLNET_VW], sa[CLNET_VW], sb[CLNET_VW];
                CLNET_VSTORE(rr, 0, lanes);
                CLNET_VSTORE(sxx, 0, sa);
                CLNET_VSTORE(syy, 0, sb);
                for (int l = 0; l < CLNET_VW && j0 + l < n_cols; ++l) {
                    if (ssq_a > two * sa[l] || b_stats[b_padded + j0 + l] > two * sb[l])
                        lanes[l] = clnet_pearson_pair(pa + r, pav + r, pb + l,
                                                      bv + (long)jg * M * CLNET_VW + l, M,
                                                      min_overlap, eps, tau);
                }
                rr = CLNET_VLOAD(0, lanes);
            }
            clnet_pearson_store(out, ld, i, row0, j0, col0, n_cols, mirror, rr);
            clnet_pearson_flag(rr, i, j0, n_cols, mirror, flagged);
        }
    }
}

/* Symmetric top-k without computing any pair twice. Strip s..e-1 is computed against
 * columns s..N-1 only; its rows merge their candidates along the strip's rows, and
 * the later rows j >= e merge the strip's column j (r is symmetric). Each row's
 * running list (best first, empty slots -1 / NaN) lives on the device between strips.
 * Candidates always arrive in increasing index order (earlier strips first, then the
 * row's own strip from column s on), so "only a strictly larger r moves ahead" breaks
 * ties by the lower index, as in clnet_pearson_topk. */
inline void clnet_topk_load(__global const int *idx, __global const real *val, const int k,
                            real *best, int *where, int *count)
{
    *count = 0;
    for (int q = 0; q < k; ++q) {
        if (idx[q] < 0)
            break;
        best[q] = val[q];
        where[q] = idx[q];
        *count = q + 1;
    }
}

inline void clnet_topk_insert(real *best, int *where, int *count, const int k, const real v,
                              const int j)
{
    if (isnan(v) || (*count == k && !(v > best[k - 1])))
        return;
    int pos = *count < k ? (*count)++ : k - 1;
    while (pos > 0 && v > best[pos - 1]) {
        best[pos] = best[pos - 1];
        where[pos] = where[pos - 1];
        --pos;
    }
    best[pos] = v;
    where[pos] = j;
}

inline void clnet_topk_save(__global int *idx, __global real *val, const int k,
                            const real *best, const int *where, const int count)
{
    for (int q = 0; q < k; ++q) {
        idx[q] = q < count ? where[q] : -1;
        val[q] = q < count ? best[q] : (real)NAN;
    }
}

/* Rows row0 + get_global_id(0) of a strip whose columns start at col0 (= row0). */
__kernel __attribute__((vec_type_hint(realv))) void clnet_pearson_topk_merge_rows(__global const real *strip, const long ld,
                                            const int n_rows, const int row0, const int n_cand,
                                            const int k, __global int *run_idx,
                                            __global real *run_val)
{
    const int r = get_global_id(0);
    if (r >= n_rows)
        return;
    const int row = row0 + r;
    real best[CLNET_TOPK_MAX];
    int where[CLNET_TOPK_MAX];
    int count;
    clnet_topk_load(run_idx + (long)row * k, run_val + (long)row * k, k, best, where, &count);
    __global const real *src = strip + (long)r * ld;
    for (int c = 0; c < n_cand; ++c) {
        if (clnet_topk_skip_block(src, c, n_cand, best, count, k)) {
            c += CLNET_VW - 1;
            continue;
        }
        if (row0 + c != row)
            clnet_topk_insert(best, where, &count, k, src[c], row0 + c);
    }
    clnet_topk_save(run_idx + (long)row * k, run_val + (long)row * k, k, best, where, count);
}

/* Later rows j = row0 + c for c = first_c + CLNET_MERGE_COLS * get_global_id(0) ...
 * (j < n_total) take the strip's column c: the strip's rows row0 .. row0 + n_rows - 1
 * as candidates. One work-item keeps the lists of CLNET_MERGE_COLS neighbouring columns
 * and walks the strip row by row, so that it reads memory in order. */
#ifndef CLNET_MERGE_COLS
#define CLNET_MERGE_COLS 4
#endif
__kernel __attribute__((vec_type_hint(realv))) void clnet_pearson_topk_merge_cols(__global const real *strip, const long ld,
                                            const int n_rows, const int row0, const int first_c,
                                            const int n_total, const int k,
                                            __global int *run_idx, __global real *run_val)
{
    const int c0 = first_c + CLNET_MERGE_COLS * (int)get_global_id(0);
    const int n_mine = min(CLNET_MERGE_COLS, n_total - row0 - c0);
    if (n_mine <= 0)
        return;
    real best[CLNET_MERGE_COLS][CLNET_TOPK_MAX];
    int where[CLNET_MERGE_COLS][CLNET_TOPK_MAX];
    int count[CLNET_MERGE_COLS];
    for (int q = 0; q < n_mine; ++q) {
        const long row = row0 + c0 + q;
        clnet_topk_load(run_idx + row * k, run_val + row * k, k, best[q], where[q], &count[q]);
    }
    /* Each list's bar: the value a candidate must beat (any number while it is not full). */
    real bar[CLNET_MERGE_COLS];
    for (int q = 0; q < CLNET_MERGE_COLS; ++q)
        bar[q] = q < n_mine && count[q] == k ? best[q][k - 1] : (real)-INFINITY;
    for (int r = 0; r < n_rows; ++r) {
        __global const real *src = strip + (long)r * ld + c0;
        if (n_mine == CLNET_MERGE_COLS) { /* one comparison per column, no branches: vectorises */
            int hit = 0;
            for (int q = 0; q < CLNET_MERGE_COLS; ++q)
                hit |= src[q] > bar[q];
            if (!hit)
                continue;
        }
        for (int q = 0; q < n_mine; ++q) {
            clnet_topk_insert(best[q], where[q], &count[q], k, src[q], row0 + r);
            bar[q] = count[q] == k ? best[q][k - 1] : (real)-INFINITY;
        }
    }
    for (int q = 0; q < n_mine; ++q) {
        const long row = row0 + c0 + q;
        clnet_topk_save(run_idx + row * k, run_val + row * k, k, best[q], where[q], count[q]);
    }
}
