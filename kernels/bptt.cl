/* Backpropagation through time for the recurrent cells of kernels/rnn.cl.
 *
 * Three passes, all on the device:
 *  1. clnet_bptt_forward re-runs the sequence with the same resets through rnn.cl's step
 *     tile, compiled with CLNET_SAVE so that each step also stores its gate activations
 *     (and the LSTM's c) in `save`; hs (T + 1, B, Hp) holds h0 and then h of every step.
 *  2. clnet_bptt_backward walks the steps backwards. Step t turns the gradient of its
 *     output h_t into the gradients of its gate pre-activations dG_t (B, G * Hp), with the
 *     gate columns interleaved as in rnn.cl (block jb, gate g, lane l); the gradient into
 *     the state before step t + 1 is dG_{t+1} @ W_hh, a register-tiled product like the
 *     forward's. gkeep[t, b] = 0 cuts the gradient into the state before step t (a reset,
 *     a truncation boundary or the end of the burn-in). The LSTM's dc (the GRU's direct
 *     dh * z path) is carried from step to step in `carry`, each element owned by one
 *     work-item.
 *     The bias gradients, sums of dG, are accumulated on the way, per row tile.
 *  3. clnet_bptt_gemm accumulates the weight gradients over all T * B rows at once,
 *     [dW_ih | dW_hh] = dG^T @ [X | H_prev] in one product, and dx = dG @ W_ih: no
 *     per-step weight update.
 *
 * Like rnn.cl's sequence kernel, passes 1 and 2 run every step in ONE launch when a
 * work-group can hold all unit blocks of a row tile (local (1, Hp / VW), a barrier between
 * steps); otherwise the host launches them once per step with local (1, 1).
 *
 * Compile-time parameters: those of rnn.cl, CLNET_SLOTS (saved vectors per unit block:
 * 5 LSTM, 4 GRU, 0 RNN), CLNET_BN (unit blocks per work-item of the backward step) and
 * CLNET_GM x CLNET_GN, the register tile of the product (rows x vectors). */
#define CLNET_SAVE
#include "rnn.cl"

#ifndef CLNET_SLOTS
#define CLNET_SLOTS 1
#endif
#ifndef CLNET_BN
#define CLNET_BN 1
#endif
#ifndef CLNET_GM
#define CLNET_GM 4
#endif
#ifndef CLNET_GN
#define CLNET_GN 2
#endif
/* terms summed in registers before they are added to C (clnet_bptt_gemm): an accuracy
 * bound, not a speed parameter */
#ifndef CLNET_GEMM_KBLOCK
#define CLNET_GEMM_KBLOCK 128
#endif

#define CLNET_SLOT(base, s) CLNET_VLOAD(0, (base) + (s) * CLNET_VW)
/* columns of a row of bias partial sums: the GRU's input-side n gate has its own */
#ifdef CLNET_GRU
#define CLNET_BIAS_COLS (2 * CLNET_NC)
#else
#define CLNET_BIAS_COLS CLNET_NC
#endif

/* Steps t0 .. t1 - 1 of the forward, saving. x (with row stride I, a multiple of VW, and
 * padded columns of zeros) starts at x + x_base; keep is (T, B). Step 0 reads the state
 * from h0 (B, Hp) and copies it to hs[0].
 *
 * A cell group (clnet.CellGroup: cells of one shape over the same inputs) runs in one
 * launch with a third grid dimension, one member per index: member m's weights, states and
 * saved activations follow member m - 1's in the same buffers (Wt: Hp x NC, Wx: I x NC, the
 * biases NC, h0 and c B x Hp, hs (T + 1) x B x Hp, save T x B x SLOTS x Hp); x moves on by
 * x_member per member (0: the inputs are shared), keep and zero_row are shared. */
__kernel void clnet_bptt_forward(const int B, const int H, const int Hp, const int T, const int t0, const int t1,
                                 __global const real *Wt,
                                 __global const real *h0,
                                 __global real *hs,
                                 __global real *c,
                                 __global const real *keep, const int has_keep,
                                 __global const real *bias_h,
                                 __global const real *zero_row,
                                 __global const real *x, const long x_base, const int I,
                                 __global const real *Wx,
                                 __global const real *bias_x,
                                 __global real *save, const long x_member)
{
    const int m0 = get_global_id(0) * CLNET_RM;
    const int jb = get_global_id(1);
    {
        const size_t m = get_global_id(2), state = (size_t)B * Hp;
        Wt += m * Hp * CLNET_NC;
        Wx += m * I * CLNET_NC;
        bias_h += m * CLNET_NC;
        bias_x += m * CLNET_NC;
        h0 += m * state;
        c += m * state;
        hs += m * (T + 1) * state;
        save += m * T * state * CLNET_SLOTS;
        x += m * x_member;
    }
    if (t0 == 0) {
        for (int r = 0; r < CLNET_RM && m0 + r < B; ++r)
            CLNET_VSTORE(CLNET_VLOAD(0, h0 + (size_t)(m0 + r) * Hp + jb * CLNET_VW), 0,
                         hs + (size_t)(m0 + r) * Hp + jb * CLNET_VW);
    }
    for (int t = t0; t < t1; ++t) {
        const long step = (long)t * B;
        clnet_rnn_tile(m0, jb, B, H, Hp, Wt, zero_row, 0, t ? hs : h0, t ? step * Hp : 0, hs, (step + B) * Hp, c, c,
                       keep, step,
                       has_keep, bias_h, zero_row, x, x_base + step * I, I, Wx, bias_x,
                       save, step * CLNET_SLOTS * Hp);
        barrier(CLK_GLOBAL_MEM_FENCE);
    }
}

/* Backward step t for rows m0 .. m0 + RM - 1 and unit blocks jb0 .. jb0 + BN - 1; t = -1
 * writes the gradient of h0 to dh0 instead (the LSTM's dc0 is left in carry). dbias has a
 * row of CLNET_BIAS_COLS partial sums per row tile (for the GRU: the sums of dG, then
 * those of the input side's n gate in the n slots).
 * Wb is W_hh with interleaved gate rows, (G * Hp, Hp); dhs (T, B, Hp) the gradients of
 * the outputs (masked), dhT the gradient of the final h, added at t = T - 1. */
inline void clnet_bptt_tile(const int t, const int m0, const int jb0, const int B, const int Hp,
                            const int T, const int t_low,
                            __global const real *Wb,
                            __global real *hs,
                            __global const real *c0,
                            __global const real *save,
                            __global const real *keep, const int has_keep,
                            __global const real *gkeep,
                            __global const real *dhs, const long dhs_off,
                            __global const real *dhT,
                            __global real *carry,
                            __global real *dG,
                            __global real *dGx,
                            __global real *dh0,
                            __global real *dbias)
{
    /* An RM x BN register tile: per k, BN vectors of Wb and RM broadcasts of dG feed
     * RM * BN FMAs (with BN = 1 the loads would outnumber the FMAs). */
    realv acc[CLNET_RM][CLNET_BN];
    __global const real *drow[CLNET_RM];
    _Pragma("unroll") for (int r = 0; r < CLNET_RM; ++r) {
        _Pragma("unroll") for (int j = 0; j < CLNET_BN; ++j)
            acc[r][j] = (realv)0;
        drow[r] = dG + ((size_t)(t + 1) * B + min(m0 + r, B - 1)) * CLNET_NC;
    }
    /* BN need not divide the number of unit blocks (from 32 blocks on it is odd, see
     * padded_hidden): blocks past the last are computed on the last one's weights and not
     * stored, which costs less than BN = 1, whose loads outnumber its FMAs. */
    const int blocks = Hp / CLNET_VW;
    int woff[CLNET_BN];
    _Pragma("unroll") for (int j = 0; j < CLNET_BN; ++j)
        woff[j] = (min(jb0 + j, blocks - 1) - jb0) * CLNET_VW;
    if (t + 1 < T && m0 + CLNET_RM <= B) {
        /* a whole tile of rows: one pointer with constant offsets reads all of them */
        __global const real *wk = Wb + jb0 * CLNET_VW;
        __global const real *d0 = drow[0];
        for (int k = 0; k < CLNET_NC; ++k) {
            realv w[CLNET_BN];
            _Pragma("unroll") for (int j = 0; j < CLNET_BN; ++j)
                w[j] = CLNET_VLOAD(0, wk + woff[j]);
            wk += Hp;
            _Pragma("unroll") for (int r = 0; r < CLNET_RM; ++r) {
                const realv d = (realv)(d0[r * CLNET_NC + k]);
                _Pragma("unroll") for (int j = 0; j < CLNET_BN; ++j)
                    acc[r][j] = fma(d, w[j], acc[r][j]);
            }
        }
    } else if (t + 1 < T) {
        __global const real *wk = Wb + jb0 * CLNET_VW;
        for (int k = 0; k < CLNET_NC; ++k) {
            realv w[CLNET_BN];
            _Pragma("unroll") for (int j = 0; j < CLNET_BN; ++j)
                w[j] = CLNET_VLOAD(0, wk + woff[j]);
            wk += Hp;
            _Pragma("unroll") for (int r = 0; r < CLNET_RM; ++r) {
                const realv d = (realv)(drow[r][k]);
                _Pragma("unroll") for (int j = 0; j < CLNET_BN; ++j)
                    acc[r][j] = fma(d, w[j], acc[r][j]);
            }
        }
    }
    _Pragma("unroll") for (int r = 0; r < CLNET_RM; ++r)
    _Pragma("unroll") for (int j = 0; j < CLNET_BN; ++j) {
        const int row = m0 + r;
        const int jb = jb0 + j;
        if (row >= B || jb >= blocks)
            continue;
        const int col = jb * CLNET_GATES * CLNET_VW;
        const int unit = jb * CLNET_VW;
        const size_t at = (size_t)row * Hp + unit;
        /* A cut gradient is exactly zero, even where the product overflowed. */
        realv dh = (t + 1 < T && gkeep[(long)(t + 1) * B + row] != (real)0) ? acc[r][j] : (realv)0;
        if (t < 0) {
#if defined(CLNET_GRU)
            dh += CLNET_VLOAD(0, carry + at);
#endif
            CLNET_VSTORE(dh, 0, dh0 + at);
            continue;
        }
        const long tb = (long)t * B + row;
        /* hs[t] becomes H_prev of the weight gradient: the state step t used, zero where it
         * was reset. Each step zeroes its own output's row when the next step reset it (no
         * later step reads it), and the last step processed also its own input. */
        const int zero_next = t + 1 < T && has_keep && keep[tb + B] == (real)0;
        const int zero_own = t == t_low && has_keep && keep[tb] == (real)0;
        dh += CLNET_VLOAD(0, dhs + dhs_off + (size_t)tb * Hp + unit);
        if (t == T - 1)
            dh += CLNET_VLOAD(0, dhT + at);
        const int fresh = has_keep && keep[tb] == (real)0;
        const int flows = gkeep[tb] != (real)0;
        __global real *dg = dG + (size_t)tb * CLNET_NC + col;
        /* The bias gradients are sums of dG over rows and steps: each row tile adds its
         * rows into its own row of dbias (zeroed by the host). */
        __global real *bsum = dbias + (size_t)(m0 / CLNET_RM) * CLNET_BIAS_COLS + col;
#define CLNET_GATE_OUT(g, v)                                                              \
        {                                                                                 \
            const realv v_ = (v);                                                         \
            CLNET_VSTORE(v_, 0, dg + (g) * CLNET_VW);                                      \
            CLNET_VSTORE(CLNET_VLOAD(0, bsum + (g) * CLNET_VW) + v_, 0, bsum + (g) * CLNET_VW); \
        }
#if defined(CLNET_LSTM)
        __global const real *sv = save + (size_t)tb * CLNET_SLOTS * Hp + jb * CLNET_SLOTS * CLNET_VW;
        const realv i = CLNET_SLOT(sv, 0), f = CLNET_SLOT(sv, 1), g = CLNET_SLOT(sv, 2);
        const realv o = CLNET_SLOT(sv, 3), tc = clnet_tanh_v(CLNET_SLOT(sv, 4));
        realv cp = (realv)0;
        if (!fresh)
            cp = t ? CLNET_SLOT(sv - (size_t)B * CLNET_SLOTS * Hp, 4) : CLNET_VLOAD(0, c0 + at);
        const realv dc = CLNET_VLOAD(0, carry + at) + dh * o * ((realv)1 - tc * tc);
        CLNET_GATE_OUT(0, dc * g * i * ((realv)1 - i));
        CLNET_GATE_OUT(1, dc * cp * f * ((realv)1 - f));
        CLNET_GATE_OUT(2, dc * i * ((realv)1 - g * g));
        CLNET_GATE_OUT(3, dh * tc * o * ((realv)1 - o));
        CLNET_VSTORE(flows ? dc * f : (realv)0, 0, carry + at);
#elif defined(CLNET_GRU)
        dh += CLNET_VLOAD(0, carry + at);
        __global const real *sv = save + (size_t)tb * CLNET_SLOTS * Hp + jb * CLNET_SLOTS * CLNET_VW;
        const realv rg = CLNET_SLOT(sv, 0), z = CLNET_SLOT(sv, 1), n = CLNET_SLOT(sv, 2);
        const realv hn = CLNET_SLOT(sv, 3);
        const realv hp = fresh ? (realv)0 : CLNET_VLOAD(0, hs + (size_t)tb * Hp + unit);
        const realv dan = dh * ((realv)1 - z) * ((realv)1 - n * n);
        const realv dar = dan * hn * rg * ((realv)1 - rg);
        const realv daz = dh * (hp - n) * z * ((realv)1 - z);
        __global real *dgx = dGx + (size_t)tb * CLNET_NC + col;
        CLNET_GATE_OUT(0, dar);
        CLNET_GATE_OUT(1, daz);
        CLNET_GATE_OUT(2, dan * rg);
        CLNET_VSTORE(dar, 0, dgx);
        CLNET_VSTORE(daz, 0, dgx + CLNET_VW);
        CLNET_VSTORE(dan, 0, dgx + 2 * CLNET_VW);
        /* the input-side n gate differs (no r); its sums follow the NC recurrent ones */
        __global real *bn = bsum + CLNET_NC + 2 * CLNET_VW;
        CLNET_VSTORE(CLNET_VLOAD(0, bn) + dan, 0, bn);
        CLNET_VSTORE(flows ? dh * z : (realv)0, 0, carry + at);
#else
        const realv h = CLNET_VLOAD(0, hs + ((size_t)tb + B) * Hp + unit);
#if defined(CLNET_RNN_RELU)
        CLNET_GATE_OUT(0, select((realv)0, dh, h > (realv)0));
#else
        CLNET_GATE_OUT(0, dh * ((realv)1 - h * h));
#endif
#endif
#undef CLNET_GATE_OUT
        if (zero_next)
            CLNET_VSTORE((realv)0, 0, hs + ((size_t)tb + B) * Hp + unit);
        if (zero_own)
            CLNET_VSTORE((realv)0, 0, hs + (size_t)tb * Hp + unit);
    }
}

/* Backward steps t1 - 1 down to t0 (t0 = -1 ends with the gradient of h0); t_low is the
 * first step of the whole backward pass. A work-item owns RM rows and BN unit blocks.
 * global (ceil(B / RM), ceil(Hp / VW / BN)[, n]), local (1, ceil(Hp / VW / BN)[, 1]) for a whole
 * range or (1, 1[, 1]) per step. The third dimension runs the members of a cell group, laid
 * out as for clnet_bptt_forward (Wb: NC x Hp, c0, dhT, carry and dh0: B x Hp, dhs: T x B x Hp
 * from dhs_off, dG and dGx: T x B x NC, dbias: a row per row tile); keep and gkeep are shared. */
__kernel void clnet_bptt_backward(const int B, const int Hp, const int T, const int t0, const int t1,
                                  const int t_low,
                                  __global const real *Wb,
                                  __global real *hs,
                                  __global const real *c0,
                                  __global const real *save,
                                  __global const real *keep, const int has_keep,
                                  __global const real *gkeep,
                                  __global const real *dhs, const long dhs_off,
                                  __global const real *dhT,
                                  __global real *carry,
                                  __global real *dG,
                                  __global real *dGx,
                                  __global real *dh0,
                                  __global real *dbias)
{
    const int m0 = get_global_id(0) * CLNET_RM;
    const int jb0 = get_global_id(1) * CLNET_BN;
    {
        const size_t m = get_global_id(2), state = (size_t)B * Hp;
        Wb += m * Hp * CLNET_NC;
        hs += m * (T + 1) * state;
        c0 += m * state;
        save += m * T * state * CLNET_SLOTS;
        dhs += m * T * state;
        dhT += m * state;
        carry += m * state;
        dG += m * T * B * CLNET_NC;
        dGx += m * T * B * CLNET_NC;
        dh0 += m * state;
        dbias += m * get_global_size(0) * CLNET_BIAS_COLS;
    }
    for (int t = t1 - 1; t >= t0; --t) {
        clnet_bptt_tile(t, m0, jb0, B, Hp, T, t_low, Wb, hs, c0, save, keep, has_keep, gkeep, dhs, dhs_off, dhT,
                        carry, dG, dGx, dh0, dbias);
        barrier(CLK_GLOBAL_MEM_FENCE);
    }
}

/* C[m, n] = sum_k A(m, k) * Bn[k, n] for m < M and n < N (N and N1 multiples of VW), with
 * A(m, k) = A[a_off + m * sam + k * sak] (strides make A^T) and Bn = [B1 | B2] side by side: columns n < N1 come from B1, the others from
 * B2 (column n - N1), both row-major, so that dW_ih and dW_hh are ONE product over dG.
 * C is row-major. A work-item owns a GM x (GN * VW) register tile.
 * global (ceil(M / GM), ceil(N / (GN * VW))[, n]): with a third dimension, product m of n
 * reads and writes each matrix m times its member stride (a_ms, b1_ms, b2_ms, c_ms; 0 for
 * a matrix the products share) further on: a cell group's products in one launch. */
__kernel void clnet_bptt_gemm(const int M, const int N, const int K,
                              __global const real *A, const long a_off, const long sam, const long sak,
                              __global const real *B1, const long b1_off, const long ldb1, const int N1,
                              __global const real *B2, const long b2_off, const long ldb2,
                              __global real *C, const long c_off, const long ldc,
                              const long a_ms, const long b1_ms, const long b2_ms, const long c_ms)
{
    const int m0 = get_global_id(0) * CLNET_GM;
    const int nb0 = get_global_id(1) * CLNET_GN;
    const int NB = N / CLNET_VW;
    if (m0 >= M || nb0 >= NB)
        return;
    {
        const long m = get_global_id(2);
        A += m * a_ms;
        B1 += m * b1_ms;
        B2 += m * b2_ms;
        C += m * c_ms;
    }
    __global const real *ak[CLNET_GM];
    __global const real *bk[CLNET_GN];
    long ld[CLNET_GN];
    realv acc[CLNET_GM][CLNET_GN];
    _Pragma("unroll") for (int r = 0; r < CLNET_GM; ++r)
        ak[r] = A + a_off + (size_t)min(m0 + r, M - 1) * sam; /* clamped rows are not stored */
    _Pragma("unroll") for (int j = 0; j < CLNET_GN; ++j) {
        const int col = min(nb0 + j, NB - 1) * CLNET_VW;
        bk[j] = col < N1 ? B1 + b1_off + col : B2 + b2_off + (col - N1);
        ld[j] = col < N1 ? ldb1 : ldb2;
    }
    const bool whole_tile = sam == 1 && m0 + CLNET_GM <= M;
    /* row k of the tile's GN vectors of Bn, and the pointers moved on to row k + 1 */
#define CLNET_GEMM_NEXT_B_ROW(bv)                                \
    _Pragma("unroll") for (int j = 0; j < CLNET_GN; ++j) {       \
        bv[j] = CLNET_VLOAD(0, bk[j]);                           \
        bk[j] += ld[j];                                          \
    }
    /* Blocked summation: the register tile sums CLNET_GEMM_KBLOCK terms, then is added to C
     * (written by the first block). One float32 sum over all K = T * B rows of the weight
     * gradients grows its rounding error with K (K = 8192 passed the float32 tolerance by
     * 1.5x); blocks bound it by about KBLOCK + K / KBLOCK terms, without a second set of
     * accumulator registers. */
    for (int kb = 0; kb < K; kb += CLNET_GEMM_KBLOCK) {
        const int kend = min(K, kb + CLNET_GEMM_KBLOCK);
        _Pragma("unroll") for (int r = 0; r < CLNET_GM; ++r)
            _Pragma("unroll") for (int j = 0; j < CLNET_GN; ++j)
                acc[r][j] = (realv)0;
        if (whole_tile) {
            /* A^T with a whole tile of rows (the weight gradients): the GM values of A for one
             * k are adjacent, read through ONE pointer (GM pointers would not fit the general
             * purpose registers next to the loop's others). */
            __global const real *ap = ak[0];
            for (int k = kb; k < kend; ++k) {
                realv bv[CLNET_GN];
                CLNET_GEMM_NEXT_B_ROW(bv);
                _Pragma("unroll") for (int r = 0; r < CLNET_GM; ++r) {
                    const realv a = (realv)(ap[r]);
                    _Pragma("unroll") for (int j = 0; j < CLNET_GN; ++j)
                        acc[r][j] = fma(a, bv[j], acc[r][j]);
                }
                ap += sak;
            }
            ak[0] = ap;
        } else {
            for (int k = kb; k < kend; ++k) {
                realv bv[CLNET_GN];
                CLNET_GEMM_NEXT_B_ROW(bv);
                _Pragma("unroll") for (int r = 0; r < CLNET_GM; ++r) {
                    const realv a = (realv)(*ak[r]);
                    ak[r] += sak;
                    _Pragma("unroll") for (int j = 0; j < CLNET_GN; ++j)
                        acc[r][j] = fma(a, bv[j], acc[r][j]);
                }
            }
        }
        _Pragma("unroll") for (int r = 0; r < CLNET_GM; ++r) {
            if (m0 + r >= M)
                continue;
            _Pragma("unroll") for (int j = 0; j < CLNET_GN; ++j)
                if (nb0 + j < NB) {
                    __global real *cp = C + c_off + (size_t)(m0 + r) * ldc + (nb0 + j) * CLNET_VW;
                    CLNET_VSTORE(kb ? CLNET_VLOAD(0, cp) + acc[r][j] : acc[r][j], 0, cp);
                }
        }
    }
    if (K == 0) { /* an empty sum is zero */
        _Pragma("unroll") for (int r = 0; r < CLNET_GM; ++r)
            _Pragma("unroll") for (int j = 0; j < CLNET_GN; ++j)
                if (m0 + r < M && nb0 + j < NB)
                    CLNET_VSTORE((realv)0, 0, C + c_off + (size_t)(m0 + r) * ldc + (nb0 + j) * CLNET_VW);
    }
}
