/* Feed-forward networks with plain scalar loops: one work-item per input sample.
 *
 * Node values live in a scratch buffer laid out node-major, (node, sample), so that
 * neighbouring work-items touch neighbouring addresses and the loops vectorise across
 * samples. All control flow depends only on the network, never on the sample, so it is
 * uniform inside a work-group. */
#include "clnet_functions.h"

/* Layered form: structure [n0..nL] and ONE flat weight list. The weight and bias
 * offsets of each layer are derived from the structure inside the loop. Inputs are
 * (n0, in_stride) so a batch chunk starts at column b0. */
__kernel void clnet_fnn_layered(const int n_layers,
                                __global const int *structure,
                                __global const int *acts,
                                __global const real *weights,
                                __global const real *biases,
                                __global const real *inputs,
                                const int in_stride,
                                const int b0,
                                const int nb,
                                __global real *scratch,
                                __global real *out)
{
    const int b = get_global_id(0);
    if (b >= nb)
        return;
    int w_off = 0;
    int b_off = 0;
    int row = 0; /* first scratch row of the current layer */
    __global const real *src = inputs + b0 + b;
    int src_stride = in_stride;
    for (int l = 1; l <= n_layers; ++l) {
        const int n_prev = structure[l - 1];
        const int n_cur = structure[l];
        const int act = acts[l - 1];
        const int last = (l == n_layers);
        for (int j = 0; j < n_cur; ++j) {
            __global const real *w = weights + w_off + j * n_prev;
            real acc = (real)0;
            for (int i = 0; i < n_prev; ++i)
                acc += w[i] * src[(size_t)i * src_stride];
            const real y = clnet_activate(act, biases[b_off + j] + acc);
            if (last)
                out[(size_t)(b0 + b) * n_cur + j] = y;
            else
                scratch[(size_t)(row + j) * nb + b] = y;
        }
        w_off += n_cur * n_prev;
        b_off += n_cur;
        src = scratch + (size_t)row * nb + b;
        src_stride = nb;
        row += n_cur;
    }
}

/* Value of connection c for this sample: a weighted input pin or earlier node. */
#define CLNET_TERM(c)                                                                   \
    (conn_w[c] * (conn_src[c] < n_in ? inputs[(size_t)conn_src[c] * in_stride + b0 + b] \
                                      : nv[(size_t)(conn_src[c] - n_in) * nb + b]))

/* Graph form, a whole population packed back to back: network p owns nodes
 * [net_node_start[p], net_node_start[p+1]) in topological order and their incoming
 * connections. A connection's source is a slot local to its network: < n_in for an
 * input pin, n_in + k for the network's k-th node. This launch covers networks
 * p0 + get_global_id(1) and samples b0 .. b0 + nb - 1; scratch rows start at the
 * first node of network p0. */
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
                              const int batch_total,
                              __global real *scratch,
                              __global real *out)
{
    const int b = get_global_id(0);
    const int p = p0 + get_global_id(1);
    if (b >= nb)
        return;
    const int first = net_node_start[p];
    const int end = net_node_start[p + 1];
    __global real *nv = scratch + (size_t)(first - net_node_start[p0]) * nb;
    for (int k = first; k < end; ++k) {
        const int c0 = node_conn_start[k];
        const int c1 = node_conn_start[k + 1];
        const int n = c1 - c0;
        real agg;
        switch (node_agg[k]) {
        case CLNET_AGG_SUM:
        case CLNET_AGG_MEAN:
            agg = (real)0;
            for (int c = c0; c < c1; ++c)
                agg += CLNET_TERM(c);
            if (node_agg[k] == CLNET_AGG_MEAN && n > 0)
                agg /= (real)n;
            break;
        case CLNET_AGG_PRODUCT:
            agg = (real)1;
            for (int c = c0; c < c1; ++c)
                agg *= CLNET_TERM(c);
            break;
        case CLNET_AGG_MAX:
        case CLNET_AGG_MIN:
        case CLNET_AGG_MAXABS: {
            /* Sequential "replace when strictly better", as Python's max/min do:
             * a NaN first term sticks, a later NaN is skipped. */
            const int mode = node_agg[k];
            agg = n > 0 ? CLNET_TERM(c0) : (real)0;
            for (int c = c0 + 1; c < c1; ++c) {
                const real t = CLNET_TERM(c);
                const int better = mode == CLNET_AGG_MAX ? t > agg
                                 : mode == CLNET_AGG_MIN ? t < agg
                                                         : fabs(t) > fabs(agg);
                if (better)
                    agg = t;
            }
            break;
        }
        case CLNET_AGG_MEDIAN: {
            /* No per-item array of unknown length: find the middle order statistics by
             * counting, O(n^2) over a node's fan-in. Any NaN term makes the median NaN. */
            if (n == 0) {
                agg = (real)0;
                break;
            }
            int has_nan = 0;
            real total = (real)0;
            for (int c = c0; c < c1; ++c) {
                const real t = CLNET_TERM(c);
                has_nan |= isnan(t);
                total += t;
            }
            if (has_nan) {
                agg = NAN;
                break;
            }
            if (n <= 2) {
                agg = total / (real)n;
                break;
            }
            const int lo_rank = (n - 1) / 2; /* lower middle; equals upper for odd n */
            const int hi_rank = n / 2;
            real lo_val = (real)0, hi_val = (real)0;
            for (int c = c0; c < c1; ++c) {
                const real t = CLNET_TERM(c);
                int less = 0, equal = 0;
                for (int d = c0; d < c1; ++d) {
                    const real u = CLNET_TERM(d);
                    less += u < t;
                    equal += u == t;
                }
                /* t occupies sorted positions less .. less + equal - 1 */
                if (less <= lo_rank && lo_rank < less + equal)
                    lo_val = t;
                if (less <= hi_rank && hi_rank < less + equal)
                    hi_val = t;
            }
            agg = lo_rank == hi_rank ? lo_val : (lo_val + hi_val) / (real)2;
            break;
        }
        default:
            agg = NAN;
        }
        nv[(size_t)(k - first) * nb + b] = clnet_activate(node_act[k], node_bias[k] + node_resp[k] * agg);
    }
    for (int o = 0; o < n_out; ++o) {
        const int s = net_out[(size_t)p * n_out + o] - n_in;
        out[((size_t)p * batch_total + b0 + b) * n_out + o] = nv[(size_t)s * nb + b];
    }
}
