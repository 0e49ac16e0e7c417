"""NumPy reference of the recurrent cells (LSTM, GRU, Elman RNN), float32 or float64.

Semantics: docs/SEMANTICS.md, recurrent cells (PyTorch's). ``keep`` rows are 1 where
the state carries over and 0 where an episode started before the step: those rows use
h = c = 0, whatever the stored state holds.
"""
from collections import deque
from dataclasses import dataclass
from itertools import repeat
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


class ReferenceState:
    """h (and c for an LSTM) of a batch, ``(B, hidden)`` each.

    Both live in ONE tuple, ``values``: an operation computes new arrays and publishes
    them with one assignment, so that an interrupt (Ctrl-C) leaves exactly the state
    before the call or exactly the state after it, never h of one and c of the other.
    """

    def __init__(self, h: np.ndarray, c: Optional[np.ndarray]):
        self.values = (h, c)

    @property
    def h(self) -> np.ndarray:
        return self.values[0]

    @h.setter
    def h(self, value) -> None:
        self.values = (value, self.values[1])

    @property
    def c(self) -> Optional[np.ndarray]:
        return self.values[1]

    @c.setter
    def c(self, value) -> None:
        self.values = (self.values[0], value)


def publish(storages, values) -> None:
    """``storages[i].values = values[i]`` for all i in one C-level loop (deque over map):
    Python runs signal handlers only between bytecodes, so a KeyboardInterrupt cannot
    land between two layers' states."""
    deque(map(setattr, storages, repeat("values"), values), maxlen=0)


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
        dt = storage.h.dtype
        publish([storage], [(np.array(h, dtype=dt), None if c is None else np.array(c, dtype=dt))])

    def rnn_state_reset(self, storage, keep):
        fresh = (keep == 0)[:, None]
        h, c = storage.values
        publish([storage], [(np.where(fresh, 0, h).astype(h.dtype),
                             None if c is None else np.where(fresh, 0, c).astype(c.dtype))])

    def rnn_step(self, weights, storage, x, keep):
        gx = x @ weights.w_ih.T + weights.b_ih
        with np.errstate(all="ignore"):
            new = _advance(weights, storage.values, gx, keep)
        publish([storage], [new])
        return new[0].copy()

    def rnn_sequence(self, weights, storage, xs, keeps):
        return self.rnn_sequence_stacked([weights], [storage], xs, keeps)

    def rnn_sequence_stacked(self, layers, storages, xs, keeps):
        """Every layer from the states' current values; the new states are published
        together after the last step of the last layer."""
        out, finals = xs, []
        for weights, storage in zip(layers, storages):
            out, final = _sequence(weights, storage.values, out, keeps)
            finals.append(final)
        publish(storages, finals)
        return out


def _sequence(weights, values, xs, keeps):
    """Outputs ``(T, B, hidden)`` of T steps from the state ``values`` = (h, c), and the
    state after the last one."""
    T, B, _ = xs.shape
    out = np.empty((T, B, weights.hidden), dtype=values[0].dtype)
    with np.errstate(all="ignore"):
        # Inputs of every step projected in one matrix product: one BLAS call, not T.
        gx = (xs.reshape(T * B, -1) @ weights.w_ih.T + weights.b_ih).reshape(T, B, -1)
        for t in range(T):
            values = _advance(weights, values, gx[t], None if keeps is None else keeps[t])
            out[t] = values[0]
    return out, values


def _advance(w, values, gx, keep):
    """One step: the new (h, c) = cell(gx + W_hh h) from ``values`` = (h, c), in new arrays."""
    h, c = values
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
        c1 = (f * c + i * g).astype(h.dtype, copy=False)
        return (o * np.tanh(c1)).astype(h.dtype, copy=False), c1
    if w.kind == "gru":
        r = sigmoid(gx[:, :H] + gh[:, :H])
        z = sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
        h1 = (1 - z) * n + z * h
    elif w.kind == "rnn_tanh":
        h1 = np.tanh(gx + gh)
    else:
        h1 = np.maximum(gx + gh, 0)
    return h1.astype(h.dtype, copy=False), None
