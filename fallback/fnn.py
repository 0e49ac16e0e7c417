"""NumPy reference of the feed-forward networks (vectorised over the batch)."""
import numpy as np

from clnet.contract import FNNOps
from clnet.functions import AGGREGATIONS

from .functions import activate, aggregate


class FNNReference(FNNOps):
    def fnn_layered(self, net, x, dtype):
        dtype = np.dtype(dtype)
        sizes, weights, biases, acts = net.sizes, net.weights, net.biases, net.activations
        h = x.astype(dtype, copy=False)
        w_off = b_off = 0
        with np.errstate(all="ignore"):
            for l in range(1, len(sizes)):
                n_prev, n_cur = sizes[l - 1], sizes[l]
                W = weights[w_off:w_off + n_cur * n_prev].reshape(n_cur, n_prev).astype(dtype)
                b = biases[b_off:b_off + n_cur].astype(dtype)
                h = activate(acts[l - 1], b + _matmul_t(h, W))
                w_off += n_cur * n_prev
                b_off += n_cur
        return h

    def fnn_graph(self, pop, x, dtype):
        dtype = np.dtype(dtype)
        B = x.shape[0]
        P = pop.size
        n_in = pop.n_inputs
        out = np.empty((P, B, pop.n_outputs), dtype=dtype)
        xt = x.T.astype(dtype)
        bias = pop.node_bias.astype(dtype)
        resp = pop.node_resp.astype(dtype)
        weight = pop.conn_w.astype(dtype)
        with np.errstate(all="ignore"):
            for p in range(P):
                first, end = pop.net_node_start[p], pop.net_node_start[p + 1]
                values = np.empty((n_in + end - first, B), dtype=dtype)
                values[:n_in] = xt
                for k in range(first, end):
                    c0, c1 = pop.node_conn_start[k], pop.node_conn_start[k + 1]
                    terms = weight[c0:c1, None] * values[pop.conn_src[c0:c1]]
                    agg = aggregate(AGGREGATIONS[pop.node_agg[k]], terms, dtype)
                    values[n_in + k - first] = activate(pop.node_act[k], bias[k] + resp[k] * agg)
                out[p] = values[pop.net_out[p]].T
        return out


def _matmul_t(h, W):
    """h @ W.T, with IEEE propagation of inf and NaN even where BLAS would shortcut."""
    if np.isfinite(h).all() and np.isfinite(W).all():
        return h @ W.T
    # Non-finite data: explicit products so that 0 * inf = NaN exactly as in the kernels.
    return (h[:, None, :] * W[None, :, :]).sum(axis=2)
