/* Feed-forward networks with plain scalar loops: one work-item per input sample.
 *
 * Node values live in a scratch buffer laid out node-major, (node, sample), so that
 * neighbouring work-items touch neighbouring addresses and the loops vectorise across
 * samples. All control flow depends only on the network, never on the sample, so it is
 * uniform inside a work-group. */
#include "clnet_functions.h"

/* No fused multiply-add: w*v + acc must round (and overflow) exactly as the NumPy
 * reference does, so that inf and NaN appear in the same places on every backend. */
#pragma OPENCL FP_CONTRACT OFF

/* Each work-item evaluates CLNET_LANES consecutive samples. The lane loops are plain
 * scalar loops with a compile-time trip count, which a CPU compiler turns into SIMD
 * instructions; GPUs build with CLNET_LANES=1 and get one sample per work-item.
 * Scratch rows and input rows are padded to a multiple of CLNET_LANES by the host,
 * so every lane reads initialised memory; only valid lanes are written out. */
#ifndef CLNET_LANES
#define CLNET_LANES 1
#endif
#define LANES CLNET_LANES

/* The activations and aggregations a launch may meet, as bit masks (bit i: id i). The host
 * names them for a population that uses exactly one of each (neat-python's defaults: sum and
 * sigmoid), so that the other cases compile away and the node loop is one aggregation and one
 * activation; any other population runs the kernel built with every bit set. */
#ifndef CLNET_ACTS
#define CLNET_ACTS 0x3FFFFFF
#endif
#ifndef CLNET_AGGS
#define CLNET_AGGS 0x7F
#endif
#define CLNET_HAS_ACT(id) ((CLNET_ACTS >> (id)) & 1)
#define CLNET_HAS_AGG(id) ((CLNET_AGGS >> (id)) & 1)

/* Apply activation `act` to every lane of zz. The switch sits outside the lane loop
 * (each case calls clnet_activate_vectorisable with a constant id, which folds), so the
 * loop vectorises. The rare lanes it cannot do (sin of |z| > 8192 in float builds) are
 * redone one by one afterwards; for every other id `fix` folds to 0 and that code goes. */
#define CLNET_ACT_CASE(id)                                                      \
    case id: if (CLNET_HAS_ACT(id)) {                                           \
        real zin[LANES];                                                        \
        int fix = 0;                                                            \
        for (int s = 0; s < LANES; ++s) {                                       \
            zin[s] = zz[s];                                                     \
            fix |= clnet_activate_needs_builtin(id, zz[s]);                     \
            zz[s] = clnet_activate_vectorisable(id, zz[s]);                     \
        }                                                                       \
        if (fix)                                                                \
            for (int s = 0; s < LANES; ++s)                                     \
                if (clnet_activate_needs_builtin(id, zin[s]))                   \
                    zz[s] = clnet_activate(id, zin[s]);                         \
    } else {                                                                    \
        for (int s = 0; s < LANES; ++s) /* not in CLNET_ACTS: as an unknown id */ \
            zz[s] = NAN;                                                        \
    } break;

inline void clnet_activate_lanes(const int act, real *zz)
{
    switch (act) {
    CLNET_ACT_CASE(0) CLNET_ACT_CASE(1) CLNET_ACT_CASE(2) CLNET_ACT_CASE(3) CLNET_ACT_CASE(4)
    CLNET_ACT_CASE(5) CLNET_ACT_CASE(6) CLNET_ACT_CASE(7) CLNET_ACT_CASE(8) CLNET_ACT_CASE(9)
    CLNET_ACT_CASE(10) CLNET_ACT_CASE(11) CLNET_ACT_CASE(12) CLNET_ACT_CASE(13) CLNET_ACT_CASE(14)
    CLNET_ACT_CASE(15) CLNET_ACT_CASE(16) CLNET_ACT_CASE(17) CLNET_ACT_CASE(18) CLNET_ACT_CASE(19)
    CLNET_ACT_CASE(20) CLNET_ACT_CASE(21) CLNET_ACT_CASE(22) CLNET_ACT_CASE(23) CLNET_ACT_CASE(24)
    CLNET_ACT_CASE(25)
    default:
        for (int s = 0; s < LANES; ++s)
            zz[s] = NAN;
    }
}

/* Layered form: structure [n0..nL] and ONE flat weight list. The weight and bias
 * offsets of each layer are derived from the structure inside the loop. Inputs are
 * (n0, in_stride) so that a batch chunk starts at column b0; scratch rows hold
 * nb_pad samples. `out` holds the rows of samples out_b0 onwards (the host splits
 * outputs too large for one buffer). */
__kernel void clnet_fnn_layered(const int n_layers,
                                __global const int *structure,
                                __global const int *acts,
                                __global const real *weights,
                                __global const real *biases,
                                __global const real *inputs,
                                const int in_stride,
                                const int b0,
                                const int nb,
                                const int nb_pad,
                                const int out_b0,
                                __global real *scratch,
                                __global real *out)
{
    const int lane0 = get_global_id(0) * LANES;
    if (lane0 >= nb)
        return;
    const int valid = min(LANES, nb - lane0);
    int w_off = 0;
    int b_off = 0;
    int row = 0; /* first scratch row of the current layer */
    __global const real *src = inputs + b0 + lane0;
    int src_stride = in_stride;
    real zz[LANES];
    for (int l = 1; l <= n_layers; ++l) {
        const int n_prev = structure[l - 1];
        const int n_cur = structure[l];
        const int last = (l == n_layers);
        for (int j = 0; j < n_cur; ++j) {
            __global const real *w = weights + w_off + j * n_prev;
            for (int s = 0; s < LANES; ++s)
                zz[s] = (real)0;
            for (int i = 0; i < n_prev; ++i) {
                const real wi = w[i];
                __global const real *v = src + (size_t)i * src_stride;
                for (int s = 0; s < LANES; ++s)
                    zz[s] += wi * v[s];
            }
            const real bias = biases[b_off + j];
            for (int s = 0; s < LANES; ++s)
                zz[s] = bias + zz[s];
            clnet_activate_lanes(acts[l - 1], zz);
            if (last) {
                for (int s = 0; s < valid; ++s)
                    out[(size_t)(b0 - out_b0 + lane0 + s) * n_cur + j] = zz[s];
            } else {
                __global real *dst = scratch + (size_t)(row + j) * nb_pad + lane0;
                for (int s = 0; s < LANES; ++s)
                    dst[s] = zz[s];
            }
        }
        w_off += n_cur * n_prev;
        b_off += n_cur;
        src = scratch + (size_t)row * nb_pad + lane0;
        src_stride = nb_pad;
        row += n_cur;
    }
}

/* An unsigned integer key per real value that orders like the values (-inf < ... < -0 <
 * +0 < ... < +inf; NaN is handled apart): the sign bit flipped for positive values, all
 * bits flipped for negative ones. The median bisects over its bits. */
#ifdef CLNET_USE_DOUBLE
typedef ulong clnet_key;
#define CLNET_KEY_BITS 64
#define CLNET_KEY_MAX ULONG_MAX
inline clnet_key clnet_order_key(real t)
{
    const ulong b = as_ulong(t);
    return (b >> 63) ? ~b : (b | 0x8000000000000000UL);
}
inline real clnet_from_order_key(clnet_key k)
{
    return as_double((k >> 63) ? (k & 0x7FFFFFFFFFFFFFFFUL) : ~k);
}
#else
typedef uint clnet_key;
#define CLNET_KEY_BITS 32
#define CLNET_KEY_MAX UINT_MAX
inline clnet_key clnet_order_key(real t)
{
    const uint b = as_uint(t);
    return (b >> 31) ? ~b : (b | 0x80000000u);
}
inline real clnet_from_order_key(clnet_key k)
{
    return as_float((k >> 31) ? (k & 0x7FFFFFFFu) : ~k);
}
#endif

/* Up to this many terms a median counts ranks (n^2 comparisons, the terms' keys in private
 * memory); above, it bisects over the bits of the keys (n * (bits + 1) passes). The host sets
 * it (tunable fnn.graph_median_ranks; 0: always bisect). */
#ifndef CLNET_MEDIAN_FEW
#define CLNET_MEDIAN_FEW 16
#endif

/* Address of the LANES values feeding connection c: an input row or an earlier node. */
#define CLNET_SRC(c)                                                               \
    (conn_src[c] < n_in ? inputs + (size_t)conn_src[c] * in_stride + b0 + lane0 \
                        : nv + (size_t)(conn_src[c] - n_in) * nb_pad + lane0)

/* Graph form, a whole population packed back to back: network p owns nodes
 * [net_node_start[p], net_node_start[p+1]) in topological order and their incoming
 * connections. A connection's source is a slot local to its network: < n_in for an
 * input pin, n_in + k for the network's k-th node. This launch covers networks
 * p0 + get_global_id(1) and samples b0 .. b0 + nb - 1; scratch rows (nb_pad samples
 * each) start at the first node of network p0. `out` is the (networks, out_batch,
 * n_out) block that starts at network out_p0 and sample out_b0: the whole result, or
 * the piece of it this launch writes when it is too large for one buffer. */
__kernel void clnet_fnn_graph(__global const int *net_node_start,
                              __global const int *net_out,
                              __global const int *node_act,
                              __global const int *node_agg,
                              __global const int *node_conn_start,
                              __global const real *node_bias,
                              __global const real *node_resp,
                              __global const int *conn_src,
                              __global const real *conn_w,
                              __global const real *inputs,
                              const int in_stride,
                              const int n_in,
                              const int n_out,
                              const int p0,
                              const int b0,
                              const int nb,
                              const int nb_pad,
                              const int out_p0,
                              const int out_b0,
                              const int out_batch,
                              __global real *scratch,
                              __global real *out)
{
    const int lane0 = get_global_id(0) * LANES;
    const int p = p0 + get_global_id(1);
    if (lane0 >= nb)
        return;
    const int valid = min(LANES, nb - lane0);
    const int first = net_node_start[p];
    const int end = net_node_start[p + 1];
    __global real *nv = scratch + (size_t)(first - net_node_start[p0]) * nb_pad;
    real zz[LANES];
    for (int k = first; k < end; ++k) {
        const int c0 = node_conn_start[k];
        const int c1 = node_conn_start[k + 1];
        const int n = c1 - c0;
        const int agg = node_agg[k];
        if ((CLNET_HAS_AGG(CLNET_AGG_SUM) && agg == CLNET_AGG_SUM)
            || (CLNET_HAS_AGG(CLNET_AGG_MEAN) && agg == CLNET_AGG_MEAN)) {
            for (int s = 0; s < LANES; ++s)
                zz[s] = (real)0;
            for (int c = c0; c < c1; ++c) {
                const real w = conn_w[c];
                __global const real *v = CLNET_SRC(c);
                for (int s = 0; s < LANES; ++s)
                    zz[s] += w * v[s];
            }
            if (CLNET_HAS_AGG(CLNET_AGG_MEAN) && agg == CLNET_AGG_MEAN && n > 0)
                for (int s = 0; s < LANES; ++s)
                    zz[s] /= (real)n;
        } else if (CLNET_HAS_AGG(CLNET_AGG_PRODUCT) && agg == CLNET_AGG_PRODUCT) {
            for (int s = 0; s < LANES; ++s)
                zz[s] = (real)1;
            for (int c = c0; c < c1; ++c) {
                const real w = conn_w[c];
                __global const real *v = CLNET_SRC(c);
                for (int s = 0; s < LANES; ++s)
                    zz[s] *= w * v[s];
            }
        } else if ((CLNET_HAS_AGG(CLNET_AGG_MAX) && agg == CLNET_AGG_MAX)
                   || (CLNET_HAS_AGG(CLNET_AGG_MIN) && agg == CLNET_AGG_MIN)
                   || (CLNET_HAS_AGG(CLNET_AGG_MAXABS) && agg == CLNET_AGG_MAXABS)) {
            /* Sequential "replace when strictly better", as Python's max/min do:
             * a NaN first term sticks, a later NaN is skipped. */
            for (int s = 0; s < LANES; ++s)
                zz[s] = (real)0;
            for (int c = c0; c < c1; ++c) {
                const real w = conn_w[c];
                __global const real *v = CLNET_SRC(c);
                for (int s = 0; s < LANES; ++s) {
                    const real t = w * v[s];
                    const int better = c == c0 ? 1
                                     : agg == CLNET_AGG_MAX ? t > zz[s]
                                     : agg == CLNET_AGG_MIN ? t < zz[s]
                                                            : fabs(t) > fabs(zz[s]);
                    zz[s] = better ? t : zz[s];
                }
            }
        } else if (CLNET_HAS_AGG(CLNET_AGG_MEDIAN) && agg == CLNET_AGG_MEDIAN) {
            /* The middle order statistics without a per-item array of unknown length:
             * each is found by bisection over the bits of an order-preserving integer
             * key (clnet_order_key), one counting pass over the fan-in per bit, so
             * O(n * bits) per node (33 passes in float, 65 in double) instead of O(n^2).
             * Any NaN term makes the median NaN; up to two terms it is their mean. */
            const int lo_rank = (n - 1) / 2; /* lower middle; equals upper for odd n */
            const int hi_rank = n / 2;
            real total[LANES];
            int has_nan[LANES];
            clnet_key lo_key[LANES];
            for (int s = 0; s < LANES; ++s) {
                total[s] = (real)0;
                has_nan[s] = 0;
                lo_key[s] = 0;
            }
            for (int c = c0; c < c1; ++c) {
                const real w = conn_w[c];
                __global const real *v = CLNET_SRC(c);
                for (int s = 0; s < LANES; ++s) {
                    const real t = w * v[s];
                    has_nan[s] |= isnan(t);
                    total[s] += t;
                }
            }
#if CLNET_MEDIAN_FEW > 2
            if (n > 2 && n <= CLNET_MEDIAN_FEW) {
                /* Few terms (most evolved nodes): each term's order key is kept, and a term
                 * is the r-th smallest for every r from the number of keys below it to the
                 * number at most it, minus one: n^2 comparisons instead of n * (bits + 1)
                 * passes, and the same order statistics as the bisection below. */
                clnet_key keys[CLNET_MEDIAN_FEW][LANES];
                clnet_key lo[LANES], hi[LANES];
                for (int c = 0; c < n; ++c) {
                    const real w = conn_w[c0 + c];
                    __global const real *v = CLNET_SRC(c0 + c);
                    for (int s = 0; s < LANES; ++s)
                        keys[c][s] = clnet_order_key(w * v[s]);
                }
                for (int s = 0; s < LANES; ++s)
                    lo[s] = hi[s] = 0;
                for (int i = 0; i < n; ++i) {
                    int below[LANES], at_most[LANES];
                    for (int s = 0; s < LANES; ++s)
                        below[s] = at_most[s] = 0;
                    for (int j = 0; j < n; ++j)
                        for (int s = 0; s < LANES; ++s) { /* the lane loops innermost: SIMD */
                            below[s] += keys[j][s] < keys[i][s];
                            at_most[s] += keys[j][s] <= keys[i][s];
                        }
                    for (int s = 0; s < LANES; ++s) {
                        lo[s] = below[s] <= lo_rank && lo_rank < at_most[s] ? keys[i][s] : lo[s];
                        hi[s] = below[s] <= hi_rank && hi_rank < at_most[s] ? keys[i][s] : hi[s];
                    }
                }
                for (int s = 0; s < LANES; ++s) {
                    const real lo_val = clnet_from_order_key(lo[s]);
                    const real hi_val = clnet_from_order_key(hi[s]);
                    zz[s] = has_nan[s] ? (real)NAN : lo_rank == hi_rank ? lo_val : (lo_val + hi_val) / (real)2;
                }
            } else
#endif
            if (n > 2) {
                /* smallest key K with count(key <= K) > lo_rank, decided bit by bit */
                for (int bit = CLNET_KEY_BITS - 1; bit >= 0; --bit) {
                    int count[LANES];
                    clnet_key mid[LANES];
                    for (int s = 0; s < LANES; ++s) {
                        mid[s] = lo_key[s] | (((clnet_key)1 << bit) - 1);
                        count[s] = 0;
                    }
                    for (int c = c0; c < c1; ++c) {
                        const real w = conn_w[c];
                        __global const real *v = CLNET_SRC(c);
                        for (int s = 0; s < LANES; ++s)
                            count[s] += clnet_order_key(w * v[s]) <= mid[s];
                    }
                    for (int s = 0; s < LANES; ++s)
                        if (count[s] <= lo_rank)
                            lo_key[s] |= (clnet_key)1 << bit;
                }
                /* the upper middle: the lower one if it repeats past hi_rank, else the
                 * smallest key above it */
                int at_most[LANES];
                clnet_key above[LANES];
                for (int s = 0; s < LANES; ++s) {
                    at_most[s] = 0;
                    above[s] = CLNET_KEY_MAX;
                }
                for (int c = c0; c < c1; ++c) {
                    const real w = conn_w[c];
                    __global const real *v = CLNET_SRC(c);
                    for (int s = 0; s < LANES; ++s) {
                        const clnet_key k2 = clnet_order_key(w * v[s]);
                        at_most[s] += k2 <= lo_key[s];
                        above[s] = k2 > lo_key[s] && k2 < above[s] ? k2 : above[s];
                    }
                }
                for (int s = 0; s < LANES; ++s) {
                    const real lo_val = clnet_from_order_key(lo_key[s]);
                    const real hi_val = at_most[s] > hi_rank ? lo_val : clnet_from_order_key(above[s]);
                    zz[s] = has_nan[s] ? (real)NAN : lo_rank == hi_rank ? lo_val : (lo_val + hi_val) / (real)2;
                }
            } else {
                for (int s = 0; s < LANES; ++s)
                    zz[s] = n == 0 ? (real)0 : has_nan[s] ? (real)NAN : total[s] / (real)n;
            }
        } else {
            for (int s = 0; s < LANES; ++s)
                zz[s] = NAN;
        }
        const real bias = node_bias[k];
        const real resp = node_resp[k];
        for (int s = 0; s < LANES; ++s)
            zz[s] = bias + resp * zz[s];
        clnet_activate_lanes(node_act[k], zz);
        __global real *dst = nv + (size_t)(k - first) * nb_pad + lane0;
        for (int s = 0; s < LANES; ++s)
            dst[s] = zz[s];
    }
    for (int o = 0; o < n_out; ++o) {
        __global const real *v = nv + (size_t)(net_out[(size_t)p * n_out + o] - n_in) * nb_pad + lane0;
        for (int s = 0; s < valid; ++s)
            out[((size_t)(p - out_p0) * out_batch + (b0 - out_b0) + lane0 + s) * n_out + o] = v[s];
    }
}
