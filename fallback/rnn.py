"""NumPy reference of the recurrent cells (LSTM, GRU, Elman RNN), float32 or float64.

Semantics: docs/SEMANTICS.md, recurrent cells (PyTorch's). ``keep`` rows are 1 where
the state carries over and 0 where an episode started before the step: those rows use
h = c = 0, whatever the stored state holds.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from clnet.contract import RNNOps


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


@dataclass
class ReferenceWeights:
    """A cell's weights in PyTorch's layout, cast to the computing dtype."""

    kind: str
    hidden: int
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray


@dataclass
class ReferenceState:
    """h (and c for an LSTM) of a batch, ``(B, hidden)`` each."""

    h: np.ndarray
    c: Optional[np.ndarray]


class RNNReference(RNNOps):
    def rnn_prepare(self, kind, params, hidden, dtype):
        dt = np.dtype(dtype)
        gates = params["weight_ih"].shape[0]
        zeros = np.zeros(gates, dtype=np.float64)
        return ReferenceWeights(
            kind=kind, hidden=hidden,
            w_ih=params["weight_ih"].astype(dt), w_hh=params["weight_hh"].astype(dt),
            b_ih=params.get("bias_ih", zeros).astype(dt), b_hh=params.get("bias_hh", zeros).astype(dt))

    def rnn_state_new(self, kind, batch, hidden, dtype):
        dt = np.dtype(dtype)
        c = np.zeros((batch, hidden), dtype=dt) if kind == "lstm" else None
        return ReferenceState(h=np.zeros((batch, hidden), dtype=dt), c=c)

    def rnn_state_read(self, storage, which):
        return getattr(storage, which).copy()

    def rnn_state_write(self, storage, h, c):
        storage.h[...] = h
        if c is not None:
            storage.c[...] = c

    def rnn_state_reset(self, storage, keep):
        fresh = keep == 0
        storage.h[fresh] = 0
        if storage.c is not None:
            storage.c[fresh] = 0

    def rnn_step(self, weights, storage, x, keep):
        gx = x @ weights.w_ih.T + weights.b_ih
        with np.errstate(all="ignore"):
            _advance(weights, storage, gx, keep)
        return storage.h.copy()

    def rnn_sequence(self, weights, storage, xs, keeps):
        T, B, _ = xs.shape
        out = np.empty((T, B, weights.hidden), dtype=storage.h.dtype)
        with np.errstate(all="ignore"):
            # Inputs of every step projected in one matrix product: one BLAS call, not T.
            gx = (xs.reshape(T * B, -1) @ weights.w_ih.T + weights.b_ih).reshape(T, B, -1)
            for t in range(T):
                _advance(weights, storage, gx[t], None if keeps is None else keeps[t])
                out[t] = storage.h
        return out

    def rnn_sequence_stacked(self, layers, storages, xs, keeps):
        out = xs
        for weights, storage in zip(layers, storages):
            out = self.rnn_sequence(weights, storage, out, keeps)
        return out


def _advance(w, s, gx, keep):
    """One step in place: s.h (and s.c) <- cell(gx + W_hh h)."""
    h, c = s.h, s.c
    if keep is not None:
        fresh = keep == 0
        h = np.where(fresh[:, None], 0, h)
        if c is not None:
            c = np.where(fresh[:, None], 0, c)
    gh = h @ w.w_hh.T + w.b_hh
    H = w.hidden
    if w.kind == "lstm":
        i = sigmoid(gx[:, :H] + gh[:, :H])
        f = sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
        g = np.tanh(gx[:, 2 * H:3 * H] + gh[:, 2 * H:3 * H])
        o = sigmoid(gx[:, 3 * H:] + gh[:, 3 * H:])
        c1 = f * c + i * g
        s.c[...] = c1
        s.h[...] = o * np.tanh(c1)
    elif w.kind == "gru":
        r = sigmoid(gx[:, :H] + gh[:, :H])
        z = sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
        s.h[...] = (1 - z) * n + z * h
    elif w.kind == "rnn_tanh":
        s.h[...] = np.tanh(gx + gh)
    else:
        s.h[...] = np.maximum(gx + gh, 0)
