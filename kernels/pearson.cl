/* Pairwise Pearson correlation with missing data (see clnet/pearson.py).
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
#define CLNET_VW 16
#endif
#ifndef CLNET_RI
#define CLNET_RI 4
#endif

#define CLNET_CAT2(a, b) a##b
#define CLNET_CAT(a, b) CLNET_CAT2(a, b)
typedef CLNET_CAT(CLNET_REAL, CLNET_VW) realv;
#define CLNET_VLOAD CLNET_CAT(vload, CLNET_VW)
#define CLNET_VSTORE CLNET_CAT(vstore, CLNET_VW)

/* r from the six sums, lane by lane; NaN below min_overlap or for (relative) zero
 * variance, clipped to [-1, 1] in a way that lets nothing else through. */
inline realv clnet_pearson_finish(realv n, realv sx, realv sy, realv sxx, realv syy,
                                  realv sxy, real min_overlap, real eps)
{
    const realv inv = (realv)1 / n;
    const realv vx = sxx - sx * sx * inv;
    const realv vy = syy - sy * sy * inv;
    const realv cov = sxy - sx * sy * inv;
    realv r = cov / sqrt(vx * vy);
    r = select(r, (realv)-1, r < (realv)-1);
    r = select(r, (realv)1, r > (realv)1);
    return select((realv)NAN, r, (n >= min_overlap) & (vx > eps * sxx) & (vy > eps * syy));
}

/* Store one row of a result tile: lanes j >= n_cols are padding. With `mirror` (the
 * dense symmetric case) only lanes with j >= i are stored, each also at (j, i). */
inline void clnet_pearson_store(__global real *out, const long ld, const int i, const int row0,
                                const int j0, const int n_cols, const int mirror, realv r)
{
    __global real *dst = out + (long)(i - row0) * ld + j0;
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
 * 0 .. n_cols - 1. Global size: (column groups, row blocks of CLNET_RI). With
 * `mirror`, tiles wholly below the diagonal are skipped and the upper ones stored twice. */
__kernel void clnet_pearson_masked(__global const real *ax, __global const real *av,
                                   __global const real *bx, __global const real *bv,
                                   const int M, const int row0, const int n_rows,
                                   const int n_cols, const real min_overlap, const real eps,
                                   const int mirror, __global real *out, const long ld)
{
    const int jg = get_global_id(0);
    const int i0 = row0 + (int)get_global_id(1) * CLNET_RI;
    const int j0 = jg * CLNET_VW;
    if (i0 >= row0 + n_rows || j0 >= n_cols)
        return;
    if (mirror && j0 + CLNET_VW <= i0)
        return;
    const long a_off = ((long)(i0 / CLNET_VW) * M) * CLNET_VW + i0 % CLNET_VW;
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
        if (i < row0 + n_rows)
            clnet_pearson_store(out, ld, i, row0, j0, n_cols, mirror,
                                clnet_pearson_finish(n[r], sx[r], sy[r], sxx[r], syy[r], sxy[r],
                                                     min_overlap, eps));
    }
}

/* Complete data: rows are centred and of unit norm, so r is one dot product.
 * `a_ok` / `b_ok` are 0 for a constant row (its r is NaN). Each work-item computes
 * 2 * CLNET_RI rows x CLNET_VW columns. */
__kernel void clnet_pearson_complete(__global const real *a, __global const real *a_ok,
                                     __global const real *b, __global const real *b_ok,
                                     const int M, const int row0, const int n_rows,
                                     const int n_cols, const int mirror,
                                     __global real *out, const long ld)
{
    const int jg = get_global_id(0);
    const int i0 = row0 + (int)get_global_id(1) * (2 * CLNET_RI);
    const int j0 = jg * CLNET_VW;
    if (i0 >= row0 + n_rows || j0 >= n_cols)
        return;
    if (mirror && j0 + CLNET_VW <= i0)
        return;
    __global const real *pa = a + ((long)(i0 / CLNET_VW) * M) * CLNET_VW + i0 % CLNET_VW;
    __global const real *pb = b + (long)jg * M * CLNET_VW;
    realv acc[2 * CLNET_RI];
#pragma unroll
    for (int r = 0; r < 2 * CLNET_RI; ++r)
        acc[r] = (realv)0;
    for (int p = 0; p < M; ++p) {
        const realv y = CLNET_VLOAD(p, pb);
#pragma unroll
        for (int r = 0; r < 2 * CLNET_RI; ++r)
            acc[r] = fma((realv)pa[p * CLNET_VW + r], y, acc[r]);
    }
    const realv ok_b = CLNET_VLOAD(jg, b_ok);
#pragma unroll
    for (int r = 0; r < 2 * CLNET_RI; ++r) {
        const int i = i0 + r;
        if (i >= row0 + n_rows)
            break;
        realv v = acc[r];
        v = select(v, (realv)-1, v < (realv)-1);
        v = select(v, (realv)1, v > (realv)1);
        v = select((realv)NAN, v, (ok_b * a_ok[i]) > (realv)0);
        clnet_pearson_store(out, ld, i, row0, j0, n_cols, mirror, v);
    }
}

/* Top-k of each strip row on the device, so that only k candidates per row come back.
 * One work-item per row keeps its best k in order (largest r first; on equal r the
 * lower column wins because columns are scanned in increasing order and only a
 * strictly larger r moves ahead). NaN is never a candidate; `self_col0` >= 0 excludes
 * column self_col0 + row (a row is not its own neighbour). Unused slots: -1 / NaN. */
__kernel void clnet_pearson_topk(__global const real *strip, const long ld, const int n_rows,
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
