/* Recurrent cells (LSTM, GRU, Elman RNN) for batched, device-resident stepping.
 *
 * Layout. Hidden units are padded to Hp, a multiple of the vector width CLNET_VW, and
 * grouped in blocks of CLNET_VW units. A transposed weight matrix Wt has one row per
 * input (or hidden) feature and G * Hp columns, where column
 *     (block jb, gate g, lane l)  ->  jb * G * CLNET_VW + g * CLNET_VW + l
 * so that one work-item loads the G gates of its CLNET_VW units with G contiguous
 * vector loads per row, and the whole cell update happens in its registers.
 * Padded units have zero weights and biases; their pre-activations are set to exactly
 * zero (a non-finite input times a zero weight is NaN), so their h and c stay zero.
 *
 * One work-item owns CLNET_RM batch rows by one block of units (all gates): an
 * RM x (G * VW) register tile, each row of Wt loaded once per RM rows and each input
 * value broadcast across the vector. Explicit vector types keep this independent of
 * the implicit work-item vectoriser; on PoCL (AVX-512) the inner loop compiles to G
 * vector loads, RM broadcasts and RM * G 512-bit FMAs per k, as in a BLAS micro-kernel.
 *
 * Kernels: clnet_rnn_recur (one step; a single step() is one launch), clnet_rnn_run (all
 * steps of a small-batch sequence in one launch), clnet_rnn_project (the inputs of many
 * steps at once, for the batched projection mode), clnet_rnn_zero_rows (state.reset),
 * clnet_rnn_transpose (laying out weights).
 *
 * A work-item may own CLNET_RT such tiles, one above the other (a strip of RT * RM rows),
 * and then walks the reduction in blocks of CLNET_KC: each block of Wt (KC x G * VW, 16-32
 * KiB) is loaded into the L1 cache by the first tile and read from there by the others,
 * where with one tile per work-item every tile streams its whole panel of Wt (K x G * VW,
 * 64-128 KiB at the benchmarks' sizes) from L2, one vector load per 4 FMAs: the L2's
 * bandwidth, not the FMA units, bounded the step. Each output still sums its terms in the
 * order k = 0, 1, ...: a strip gives bitwise the results of single tiles.
 *
 * Compile-time parameters: CLNET_VW, CLNET_GATES (4 LSTM, 3 GRU, 1 RNN), CLNET_RM, CLNET_RT,
 * CLNET_KC and one of CLNET_LSTM, CLNET_GRU, CLNET_RNN_TANH, CLNET_RNN_RELU. */
#include "clnet_common.h"

/* The vector width comes from the host (clnet/opencl/rnn.py, vector_width), which lays
 * out the weights and states in blocks of that many units. */
#ifndef CLNET_VW
#error "CLNET_VW (units per vector) is set by the host: clnet/opencl/rnn.py"
#endif
typedef CLNET_CAT(CLNET_REAL, CLNET_VW) realv;
#define CLNET_VLOAD CLNET_CAT(vload, CLNET_VW)
#define CLNET_VSTORE CLNET_CAT(vstore, CLNET_VW)

/* Lane numbers 0 .. CLNET_VW - 1 as a vector (CLNET_VLOAD reads the first CLNET_VW). */
__constant real clnet_lanes[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

#ifndef CLNET_GATES
#define CLNET_GATES 4
#endif
#ifndef CLNET_RM
#define CLNET_RM 4
#endif
#ifndef CLNET_RT
#define CLNET_RT 1 /* row tiles per work-item (kernels/bptt.cl: always 1) */
#endif
#ifndef CLNET_KC
#define CLNET_KC 64 /* reduction block of a strip (CLNET_RT > 1) */
#endif
#define CLNET_STRIP (CLNET_RT * CLNET_RM) /* batch rows per work-item */

#define CLNET_NC (CLNET_GATES * Hp) /* columns of Wt and of projected gates */

/* With CLNET_SAVE (kernels/bptt.cl) a step also stores what backpropagation through time
 * needs, CLNET_SLOTS vectors per unit block in save (B, CLNET_SLOTS * Hp) of its step,
 * slot s of block jb at column jb * CLNET_SLOTS * VW + s * VW: LSTM i, f, g, o and the new
 * c; GRU r, z, n and W_hn h + b_hn. An Elman RNN needs nothing but its h. */
#ifdef CLNET_SAVE
#define CLNET_SAVE_PARAMS , __global real *save, const long save_off
#define CLNET_SAVE_ARGS(off) , save, (off)
#define CLNET_STORE_SLOT(s, v) \
    CLNET_VSTORE((v), 0, save + save_off + (size_t)row * CLNET_SLOTS * Hp + jb * CLNET_SLOTS * CLNET_VW + (s) * CLNET_VW)
#else
#define CLNET_SAVE_PARAMS
#define CLNET_SAVE_ARGS(off)
#define CLNET_STORE_SLOT(s, v)
#endif

inline realv clnet_sigmoid_v(realv z)
{
    return (realv)1 / ((realv)1 + exp(-z));
}

/* tanh through one exp: twice as fast as PoCL's tanh on vectors. Near 0 it loses
 * relative (not absolute) precision, a few ulps of 1, far inside the tolerance. */
inline realv clnet_tanh_v(realv z)
{
    return (realv)1 - (realv)2 / (exp((realv)2 * z) + (realv)1);
}

/* Accumulate acc[r][g] += sum_k a[r][k] * Wt[k, block jb, gate g] over k0 <= k < k1. */
#define CLNET_TILE_RANGE(acc, arow, k0, k1, Wblock)                                    \
    for (int k = (k0); k < (k1); ++k) {                                                \
        realv wv[CLNET_GATES];                                                         \
        _Pragma("unroll") for (int g = 0; g < CLNET_GATES; ++g)                        \
            wv[g] = CLNET_VLOAD(0, (Wblock) + (size_t)k * CLNET_NC + g * CLNET_VW);    \
        _Pragma("unroll") for (int r = 0; r < CLNET_RM; ++r) {                         \
            const realv a = (realv)(arow[r][k]);                                       \
            _Pragma("unroll") for (int g = 0; g < CLNET_GATES; ++g)                    \
                acc[r][g] = fma(a, wv[g], acc[r][g]);                                  \
        }                                                                              \
    }
#define CLNET_TILE_PRODUCT(acc, arow, K, Wblock) CLNET_TILE_RANGE(acc, arow, 0, K, Wblock)

/* The same for the CLNET_RT tiles of a strip, acc[t][r][g] and arow[t][r]. With one tile
 * the plain loop; with more, block by block of the reduction, each tile's accumulators
 * loaded into registers for the block and stored back after it (2 * RM * G vector moves
 * per KC * RM * G FMAs). */
#if CLNET_RT == 1
#define CLNET_STRIP_PRODUCT(acc, arow, K, Wblock) CLNET_TILE_PRODUCT(acc[0], arow[0], K, Wblock)
#else
#define CLNET_STRIP_PRODUCT(acc, arow, K, Wblock)                                      \
    for (int kb = 0; kb < (K); kb += CLNET_KC) {                                       \
        const int kend = min((K), kb + CLNET_KC);                                      \
        for (int t = 0; t < CLNET_RT; ++t) {                                           \
            realv tile[CLNET_RM][CLNET_GATES];                                         \
            __global const real *tile_row[CLNET_RM];                                   \
            _Pragma("unroll") for (int r = 0; r < CLNET_RM; ++r) {                     \
                tile_row[r] = arow[t][r];                                              \
                _Pragma("unroll") for (int g = 0; g < CLNET_GATES; ++g)                \
                    tile[r][g] = acc[t][r][g];                                         \
            }                                                                          \
            CLNET_TILE_RANGE(tile, tile_row, kb, kend, Wblock)                         \
            _Pragma("unroll") for (int r = 0; r < CLNET_RM; ++r)                       \
                _Pragma("unroll") for (int g = 0; g < CLNET_GATES; ++g)                \
                    acc[t][r][g] = tile[r][g];                                         \
        }                                                                              \
    }
#endif

/* Input projection of many time steps at once: out[m] = A[m] @ Wt + bias for the
 * M = T * B rows of a chunk. global (ceil(M / (RT * RM)), Hp / VW). */
__kernel void clnet_rnn_project(const int M, const int K, const int Hp,
                                __global const real *A, const long a_off,
                                __global const real *Wt,
                                __global const real *bias,
                                __global real *out)
{
    const int m0 = get_global_id(0) * CLNET_STRIP;
    const int jb = get_global_id(1);
    if (m0 >= M)
        return;
    const int col = jb * CLNET_GATES * CLNET_VW;
    __global const real *arow[CLNET_RT][CLNET_RM];
    realv acc[CLNET_RT][CLNET_RM][CLNET_GATES];
    for (int t = 0; t < CLNET_RT; ++t) {
        _Pragma("unroll") for (int r = 0; r < CLNET_RM; ++r) {
            /* clamped rows are computed, not stored */
            arow[t][r] = A + a_off + (size_t)min(m0 + t * CLNET_RM + r, M - 1) * K;
            _Pragma("unroll") for (int g = 0; g < CLNET_GATES; ++g)
                acc[t][r][g] = (realv)0;
        }
    }
    __global const real *wblock = Wt + col;
    CLNET_STRIP_PRODUCT(acc, arow, K, wblock)
    for (int t = 0; t < CLNET_RT; ++t) {
        const int mt = m0 + t * CLNET_RM;
        /* the bias after the product, as the reference groups W x + b (near 1e38 the order
         * decides what overflows) */
        _Pragma("unroll") for (int r = 0; r < CLNET_RM; ++r) {
            if (mt + r < M) {
                _Pragma("unroll") for (int g = 0; g < CLNET_GATES; ++g)
                    CLNET_VSTORE(acc[t][r][g] + CLNET_VLOAD(0, bias + col + g * CLNET_VW), 0,
                                 out + (size_t)(mt + r) * CLNET_NC + col + g * CLNET_VW);
            }
        }
    }
}

/* One recurrent time step for the batch rows m0 .. m0 + RM - 1 (m0 < B) and the units of
 * block jb, fused with the gate nonlinearities:
 *   gates = gx + h_prev @ Whh_t
 * then the cell update. gx are the projected inputs with their biases: read from a
 * buffer filled by clnet_rnn_project (I = 0), or computed here as x @ Wx + bias_x
 * (I > 0) so that a step is one launch.
 * keep[b] = 0 where environment b started a new episode before this step: its h and c
 * count as exactly zero (even if they held NaN), 1 elsewhere; has_keep = 0 means all
 * ones. h_prev and h_next are distinct buffers (or distinct regions of one buffer); the
 * LSTM's c is read from c_in and written to c_out (the same buffer for an update in
 * place; distinct ones so that a step leaves the state it started from untouched).
 * bias_h holds the recurrent biases b_hh (G * Hp, interleaved), added after the recurrent
 * product, so that the GRU's W_hn h + b_hn is one accumulator. zero_row holds Hp zeros. */
inline void clnet_rnn_tile(const int m0, const int jb, const int B, const int H, const int Hp,
                           __global const real *Wt,
                           __global const real *gx, const long gx_off,
                           __global const real *h_prev, const long hp_off,
                           __global real *h_next, const long hn_off,
                           __global const real *c_in, __global real *c_out,
                           __global const real *keep, const long keep_off, const int has_keep,
                           __global const real *bias_h,
                           __global const real *zero_row,
                           __global const real *x, const long x_off, const int I,
                           __global const real *Wx,
                           __global const real *bias_x
                           CLNET_SAVE_PARAMS)
{
    const int col = jb * CLNET_GATES * CLNET_VW;
    const int unit = jb * CLNET_VW;
    __global const real *arow[CLNET_RT][CLNET_RM];
    realv acc[CLNET_RT][CLNET_RM][CLNET_GATES];
    int fresh[CLNET_RT][CLNET_RM];
    for (int t = 0; t < CLNET_RT; ++t) {
        _Pragma("unroll") for (int r = 0; r < CLNET_RM; ++r) {
            const int row = min(m0 + t * CLNET_RM + r, B - 1);
            /* A row being reset reads a row of zeros instead of its state: no branch in the
             * product, and exactly zero even where the old state held NaN. */
            fresh[t][r] = has_keep && keep[keep_off + row] == (real)0;
            arow[t][r] = fresh[t][r] ? zero_row : h_prev + hp_off + (size_t)row * Hp;
            _Pragma("unroll") for (int g = 0; g < CLNET_GATES; ++g)
                acc[t][r][g] = (realv)0;
        }
    }
    __global const real *wblock = Wt + col;
    CLNET_STRIP_PRODUCT(acc, arow, Hp, wblock)
    /* W_ih x + b_ih (I > 0) with the whole register tile: the recurrent sums wait on the
     * stack (a few cache lines per tile) meanwhile */
    realv xacc[CLNET_RT][CLNET_RM][CLNET_GATES];
    if (I > 0) {
        __global const real *xrow[CLNET_RT][CLNET_RM];
        for (int t = 0; t < CLNET_RT; ++t) {
            _Pragma("unroll") for (int r = 0; r < CLNET_RM; ++r) {
                xrow[t][r] = x + x_off + (size_t)min(m0 + t * CLNET_RM + r, B - 1) * I;
                _Pragma("unroll") for (int g = 0; g < CLNET_GATES; ++g)
                    xacc[t][r][g] = (realv)0;
            }
        }
        __global const real *xblock = Wx + col;
        CLNET_STRIP_PRODUCT(xacc, xrow, I, xblock)
    }
    for (int t = 0; t < CLNET_RT; ++t) {
        const int mt = m0 + t * CLNET_RM;
        realv gate[CLNET_RM][CLNET_GATES];
        /* gates = (W_ih x + b_ih) + (W_hh h + b_hh), grouped as the reference groups them:
         * folding b_ih + b_hh in advance, or starting a product from its bias, overflows
         * float32 where the reference does not (weights near 1e38) */
        _Pragma("unroll") for (int r = 0; r < CLNET_RM; ++r)
            _Pragma("unroll") for (int g = 0; g < CLNET_GATES; ++g)
                gate[r][g] = acc[t][r][g] + CLNET_VLOAD(0, bias_h + col + g * CLNET_VW);
#if defined(CLNET_GRU)
        realv hn[CLNET_RM]; /* W_hn h + b_hn stays apart: it is scaled by r */
        _Pragma("unroll") for (int r = 0; r < CLNET_RM; ++r) {
            hn[r] = gate[r][2];
            gate[r][2] = (realv)0;
        }
#endif
        if (I > 0) {
            _Pragma("unroll") for (int g = 0; g < CLNET_GATES; ++g) {
                const realv b = CLNET_VLOAD(0, bias_x + col + g * CLNET_VW);
                _Pragma("unroll") for (int r = 0; r < CLNET_RM; ++r)
                    gate[r][g] = gate[r][g] + (xacc[t][r][g] + b);
            }
        } else {
            _Pragma("unroll") for (int r = 0; r < CLNET_RM; ++r) {
                __global const real *gxr = gx + gx_off + (size_t)min(mt + r, B - 1) * CLNET_NC + col;
                _Pragma("unroll") for (int g = 0; g < CLNET_GATES; ++g)
                    gate[r][g] += CLNET_VLOAD(0, gxr + g * CLNET_VW);
            }
        }
        if (unit + CLNET_VW > H) {
            /* The block holds padded units (unit + lane >= H). Their weights are zero, but a
             * non-finite input or state value times zero is NaN, which would reach the real
             * units through the next step's product: their pre-activations are exactly zero,
             * so that their h and c stay exactly zero (and BPTT's saved gates finite). */
            const realv lane = CLNET_VLOAD(0, clnet_lanes);
            _Pragma("unroll") for (int r = 0; r < CLNET_RM; ++r) {
                _Pragma("unroll") for (int g = 0; g < CLNET_GATES; ++g)
                    gate[r][g] = select(gate[r][g], (realv)0, lane >= (realv)(H - unit));
#if defined(CLNET_GRU)
                hn[r] = select(hn[r], (realv)0, lane >= (realv)(H - unit));
#endif
            }
        }
        _Pragma("unroll") for (int r = 0; r < CLNET_RM; ++r) {
            const int row = mt + r;
            if (row >= B)
                continue;
            const size_t at = (size_t)row * Hp + unit;
#if defined(CLNET_LSTM)
            const realv i = clnet_sigmoid_v(gate[r][0]);
            const realv f = clnet_sigmoid_v(gate[r][1]);
            const realv g = clnet_tanh_v(gate[r][2]);
            const realv o = clnet_sigmoid_v(gate[r][3]);
            const realv c0 = fresh[t][r] ? (realv)0 : CLNET_VLOAD(0, c_in + at);
            const realv c1 = f * c0 + i * g;
            CLNET_VSTORE(c1, 0, c_out + at);
            CLNET_STORE_SLOT(0, i);
            CLNET_STORE_SLOT(1, f);
            CLNET_STORE_SLOT(2, g);
            CLNET_STORE_SLOT(3, o);
            CLNET_STORE_SLOT(4, c1);
            CLNET_VSTORE(o * clnet_tanh_v(c1), 0, h_next + hn_off + at);
#elif defined(CLNET_GRU)
            const realv rg = clnet_sigmoid_v(gate[r][0]);
            const realv z = clnet_sigmoid_v(gate[r][1]);
            const realv hnb = hn[r]; /* W_hn h + b_hn */
            const realv n = clnet_tanh_v(gate[r][2] + rg * hnb);
            CLNET_STORE_SLOT(0, rg);
            CLNET_STORE_SLOT(1, z);
            CLNET_STORE_SLOT(2, n);
            CLNET_STORE_SLOT(3, hnb);
            const realv hp = fresh[t][r] ? (realv)0 : CLNET_VLOAD(0, h_prev + hp_off + at);
            CLNET_VSTORE(((realv)1 - z) * n + z * hp, 0, h_next + hn_off + at);
#else
            const realv a = gate[r][0];
#if defined(CLNET_RNN_RELU)
            /* select keeps NaN (a < 0 is false for NaN), as torch.relu does */
            CLNET_VSTORE(select(a, (realv)0, a < (realv)0), 0, h_next + hn_off + at);
#else
            CLNET_VSTORE(clnet_tanh_v(a), 0, h_next + hn_off + at);
#endif
#endif
        }
    }
}

#ifndef CLNET_SAVE /* kernels/bptt.cl has its own loops over the steps */
/* One time step. global (ceil(B / (RT * RM)), Hp / VW). */
__kernel void clnet_rnn_recur(const int B, const int H, const int Hp,
                              __global const real *Wt,
                              __global const real *gx, const long gx_off,
                              __global const real *h_prev, const long hp_off,
                              __global real *h_next, const long hn_off,
                              __global const real *c_prev, __global real *c_next,
                              __global const real *keep, const long keep_off, const int has_keep,
                              __global const real *bias_h,
                              __global const real *zero_row,
                              __global const real *x, const long x_off, const int I,
                              __global const real *Wx,
                              __global const real *bias_x)
{
    const int m0 = get_global_id(0) * CLNET_STRIP;
    if (m0 < B)
        clnet_rnn_tile(m0, get_global_id(1), B, H, Hp, Wt, gx, gx_off, h_prev, hp_off, h_next, hn_off,
                       c_prev, c_next, keep, keep_off, has_keep, bias_h, zero_row, x, x_off, I, Wx, bias_x);
}

/* All T steps of a sequence in ONE launch. Batch rows never depend on other rows, so
 * work-group g owns rows g * S .. g * S + S - 1 (S = RT * RM) with every unit block (local size
 * (1, Hp / VW)), and a work-group barrier between steps is all the synchronisation the
 * recurrence needs: no launch per step. Inputs x (T, B, I) are projected inside each
 * step; h of step t goes to out + t * B * Hp, and h0 (c0) is the state before step 0;
 * c holds the LSTM's cell state after each step.
 * keep is (T, B). global (ceil(B / S), Hp / VW), local (1, Hp / VW). */
__kernel void clnet_rnn_run(const int B, const int H, const int Hp, const int T,
                            __global const real *Wt,
                            __global const real *h0,
                            __global real *out,
                            __global const real *c0, __global real *c,
                            __global const real *keep, const int has_keep,
                            __global const real *bias_h,
                            __global const real *zero_row,
                            __global const real *x, const int I,
                            __global const real *Wx,
                            __global const real *bias_x)
{
    const int m0 = get_group_id(0) * CLNET_STRIP;
    const int jb = get_local_id(1);
    for (int t = 0; t < T; ++t) {
        const long step = (long)t * B;
        clnet_rnn_tile(m0, jb, B, H, Hp, Wt, zero_row, 0, t ? out : h0, t ? (step - B) * Hp : 0,
                       out, step * Hp, t ? c : c0, c, keep, step, has_keep, bias_h, zero_row, x, step * I, I,
                       Wx, bias_x);
        barrier(CLK_GLOBAL_MEM_FENCE);
    }
}

#endif

/* dst (cols, rows) = src (rows, cols) transposed. The host builds each weight matrix with
 * whole rows copied in the interleaved gate order (cheap) and the device turns it into the
 * layout the products read: a host transpose of a 256-unit LSTM's W_hh took longer than
 * a training step's recurrent arithmetic, and weights change at every optimiser step.
 * A work-item moves one CLNET_TRANSPOSE_TILE square, whose rows and columns stay in the
 * L1 cache (one element per work-item wrote a cache line per element: 3x slower on CPUs).
 * global (ceil(cols / TILE), ceil(rows / TILE)[, n]): a third dimension transposes n
 * matrices stored one after the other (the members of a cell group, clnet.CellGroup). */
#define CLNET_TRANSPOSE_TILE 16 /* the whole-square path below moves rows with vload16 / vstore16 */
__kernel void clnet_rnn_transpose(const int rows, const int cols, __global const real *src,
                                  __global real *dst)
{
    const int c0 = get_global_id(0) * CLNET_TRANSPOSE_TILE;
    const int r0 = get_global_id(1) * CLNET_TRANSPOSE_TILE;
    if (c0 >= cols || r0 >= rows)
        return;
    src += (size_t)get_global_id(2) * rows * cols;
    dst += (size_t)get_global_id(2) * rows * cols;
    const int nc = min(CLNET_TRANSPOSE_TILE, cols - c0);
    const int nr = min(CLNET_TRANSPOSE_TILE, rows - r0);
    if (nc == CLNET_TRANSPOSE_TILE && nr == CLNET_TRANSPOSE_TILE) {
        /* a whole square: its 16 rows in registers (one vector load each), then every output
         * row gathered from their lanes and written with one vector store; element by
         * element, a 256-unit LSTM group's two W_hh took PoCL 0.5-1.1 ms (AMD EPYC) */
        real tile[CLNET_TRANSPOSE_TILE * CLNET_TRANSPOSE_TILE];
        _Pragma("unroll") for (int r = 0; r < CLNET_TRANSPOSE_TILE; ++r)
            vstore16(vload16(0, src + (size_t)(r0 + r) * cols + c0), r, tile);
        _Pragma("unroll") for (int c = 0; c < CLNET_TRANSPOSE_TILE; ++c) {
            real col[CLNET_TRANSPOSE_TILE];
            _Pragma("unroll") for (int r = 0; r < CLNET_TRANSPOSE_TILE; ++r)
                col[r] = tile[r * CLNET_TRANSPOSE_TILE + c];
            vstore16(vload16(0, col), 0, dst + (size_t)(c0 + c) * rows + r0);
        }
        return;
    }
    for (int c = 0; c < nc; ++c) {
        __global real *out = dst + (size_t)(c0 + c) * rows + r0;
        __global const real *in = src + (size_t)r0 * cols + c0 + c;
        for (int r = 0; r < nr; ++r)
            out[r] = in[(size_t)r * cols];
    }
}

/* buf[b, :] = 0 where keep[b] == 0, for B rows of width W: resets states in place. */
__kernel void clnet_rnn_zero_rows(const int B, const int W, __global real *buf,
                                  __global const real *keep)
{
    const int i = get_global_id(0);
    if (i < B * W && keep[i / W] == (real)0)
        buf[i] = (real)0;
}
