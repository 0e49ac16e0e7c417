"""NumPy reference of backpropagation through time (``backward_sequence``), float32 or float64.

Each layer is run forward again keeping what the backward needs (:class:`LayerTrace`),
then walked backwards step by step; the weight gradients are one product over all steps.
"""
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from clnet.contract import BPTTOps

from .rnn import ReferenceState, sigmoid


@dataclass
class LayerTrace:
    """One layer's forward pass as the backward needs it: its inputs, h0 and every h
    (``hs``, T + 1 rows), the states each step used after its reset, and per step the
    gate activations (LSTM: i, f, g, o, c; GRU: r, z, n, W_hn h + b_hn)."""

    xs: np.ndarray
    hs: np.ndarray
    h_used: np.ndarray
    c_used: Optional[np.ndarray]
    acts: List[tuple]


class BPTTReference(BPTTOps):
    def rnn_backward(self, layers, xs, h0, c0, keeps, gkeep, dhs, dhT, dcT, burn_in):
        """Backpropagation through time through stacked layers (see clnet.bptt).

        ``keeps`` (T, B) zeroes the state before a step where 0 (resets); ``gkeep`` (T, B)
        is 0 where no gradient flows into the state before a step; ``dhs`` are the
        (masked) gradients of the last layer's outputs, ``dhT`` / ``dcT`` (L, B, H) those
        of the final states; steps before ``burn_in`` carry no gradient.
        """
        hs, caches = self.rnn_forward_saving(layers, xs, h0, c0, keeps)
        return self.rnn_backward_saved(layers, caches, gkeep, dhs, dhT, dcT, burn_in)

    def rnn_forward_saving(self, layers, xs, h0, c0, keeps):
        """Every layer forward, keeping its :class:`LayerTrace`: (last layer's hs, traces)."""
        with np.errstate(all="ignore"):
            caches, inputs = [], xs
            for l, w in enumerate(layers):
                caches.append(_forward_saving(w, inputs, h0[l], None if c0 is None else c0[l], keeps))
                inputs = caches[-1].hs[1:]
        return inputs.copy(), caches

    def rnn_backward_saved(self, layers, saved, gkeep, dhs, dhT, dcT, burn_in, inputs=True):
        caches = saved  # the LayerTraces of rnn_forward_saving
        L = len(layers)
        lstm = caches[0].c_used is not None
        with np.errstate(all="ignore"):
            grads, dh0s, dc0s = [None] * L, [None] * L, [None] * L
            dout = dhs
            for l in reversed(range(L)):
                grads[l], dout, dh0s[l], dc0s[l] = _backward_layer(
                    layers[l], caches[l], gkeep, dout, None if dhT is None else dhT[l],
                    None if dcT is None else dcT[l], burn_in)
        return {"layers": grads, "x": dout if inputs else None, "h0": np.stack(dh0s),
                "c0": np.stack(dc0s) if lstm else None}


def _forward_saving(w, xs, h0, c0, keeps):
    """The forward of one layer keeping what the backward needs: the states each step
    used (after its reset) and the gate activations."""
    T, B, _ = xs.shape
    H = w.hidden
    s = ReferenceState(h=h0.copy(), c=None if c0 is None else c0.copy())
    hs = np.empty((T + 1, B, H), dtype=xs.dtype)
    hs[0] = h0
    h_used = np.empty_like(hs[1:])
    c_used = np.empty_like(hs[1:]) if c0 is not None else None
    acts = []
    gx = (xs.reshape(T * B, -1) @ w.w_ih.T + w.b_ih).reshape(T, B, -1)
    for t in range(T):
        if keeps is not None:
            fresh = (keeps[t] == 0)[:, None]
            s.h = np.where(fresh, 0, s.h)
            if s.c is not None:
                s.c = np.where(fresh, 0, s.c)
        h_used[t] = s.h
        if c_used is not None:
            c_used[t] = s.c
        gh = s.h @ w.w_hh.T + w.b_hh
        if w.kind == "lstm":
            z = gx[t] + gh
            i, f, o = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H]), sigmoid(z[:, 3 * H:])
            g = np.tanh(z[:, 2 * H:3 * H])
            s.c = f * s.c + i * g
            s.h = o * np.tanh(s.c)
            acts.append((i, f, g, o, s.c))
        elif w.kind == "gru":
            r = sigmoid(gx[t, :, :H] + gh[:, :H])
            z = sigmoid(gx[t, :, H:2 * H] + gh[:, H:2 * H])
            hn = gh[:, 2 * H:]
            n = np.tanh(gx[t, :, 2 * H:] + r * hn)
            s.h = (1 - z) * n + z * s.h
            acts.append((r, z, n, hn))
        elif w.kind == "rnn_tanh":
            s.h = np.tanh(gx[t] + gh)
        else:
            s.h = np.maximum(gx[t] + gh, 0)
        hs[t + 1] = s.h
    return LayerTrace(xs=xs, hs=hs, h_used=h_used, c_used=c_used, acts=acts)


def _backward_layer(w, cache, gkeep, dhs, dhT, dcT, burn_in):
    """Gradients of one layer: (weight grads, dx, dh0, dc0)."""
    xs, hs = cache.xs, cache.hs
    T, B, I = xs.shape
    H = w.hidden
    G = w.w_hh.shape[0]
    dG_hh = np.zeros((T, B, G), dtype=xs.dtype)
    dG_ih = dG_hh if w.kind != "gru" else np.zeros_like(dG_hh)
    dh_next = np.zeros((B, H), xs.dtype) if dhT is None else dhT.copy()
    dc_next = np.zeros((B, H), xs.dtype) if dcT is None else dcT.copy()
    for t in range(T - 1, burn_in - 1, -1):
        dh = dhs[t] + dh_next
        direct = 0
        if w.kind == "lstm":
            i, f, g, o, c = cache.acts[t]
            tc = np.tanh(c)
            dc = dc_next + dh * o * (1 - tc * tc)
            dG_hh[t] = np.concatenate([dc * g * i * (1 - i), dc * cache.c_used[t] * f * (1 - f),
                                       dc * i * (1 - g * g), dh * tc * o * (1 - o)], axis=1)
            dc_next = np.where(gkeep[t][:, None] != 0, dc * f, 0)
        elif w.kind == "gru":
            r, z, n, hn = cache.acts[t]
            dan = dh * (1 - z) * (1 - n * n)
            dar = dan * hn * r * (1 - r)
            daz = dh * (cache.h_used[t] - n) * z * (1 - z)
            dG_hh[t] = np.concatenate([dar, daz, dan * r], axis=1)
            dG_ih[t] = np.concatenate([dar, daz, dan], axis=1)
            direct = dh * z
        elif w.kind == "rnn_tanh":
            dG_hh[t] = dh * (1 - hs[t + 1] ** 2)
        else:
            dG_hh[t] = np.where(hs[t + 1] > 0, dh, 0)
        dh_prev = dG_hh[t] @ w.w_hh + direct
        dh_next = np.where(gkeep[t][:, None] != 0, dh_prev, 0)
    flat_hh = dG_hh.reshape(T * B, G)
    flat_ih = dG_ih.reshape(T * B, G)
    grads = {"weight_ih": flat_ih.T @ xs.reshape(T * B, I), "weight_hh": flat_hh.T @ cache.h_used.reshape(T * B, H),
             "bias_ih": flat_ih.sum(axis=0), "bias_hh": flat_hh.sum(axis=0)}
    dx = (flat_ih @ w.w_ih).reshape(T, B, I)
    if burn_in:
        dh_next = np.zeros_like(dh_next)
        dc_next = np.zeros_like(dc_next)
    return grads, dx, dh_next, dc_next
