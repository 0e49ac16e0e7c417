"""Backpropagation through time: the checks behind every ``backward_sequence``.

:meth:`clnet.LSTMCell.backward_sequence` (and those of GRUCell, RNNCell, LSTM, GRU)
validate their arguments here, turn resets, truncation, burn-in and the loss mask into
the masks of the contract's ``rnn_backward`` (clnet/contract.py, BPTT family), and hand
the gradients back under PyTorch's names. Semantics: docs/SEMANTICS.md, backpropagation
through time. Every argument is checked before any device work, and nothing in the
model or in any state changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ._validate import as_int, as_real_array
from .backend import call, get_backend, run
from .state import RecurrentState, per_step_array, reset_keep

__all__ = ["backward_sequence", "RecordedSequence"]

# Gradients of the weights come back under PyTorch's names (with _l0, _l1, ... when stacked).
PARAMETER_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _state_arrays(value, name: str, lstm: bool, shape: Tuple[int, ...], dt, what: str):
    """``(h, c)`` (LSTM) or ``h`` checked against ``shape``; None gives (None, None)."""
    if value is None:
        return None, None
    if lstm:
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise TypeError(f"{name} of an LSTM must be a pair ({what}), got {type(value).__name__}")
        parts = list(value)
    else:
        parts = [value, None]
    out = []
    for part, sub in zip(parts, ("h", "c")):
        if part is None:
            out.append(None)
            continue
        arr = as_real_array(part, f"{name} ({sub})", dt)
        if arr.shape != shape:
            dims = "(num_layers, batch, hidden_size)" if len(shape) == 3 else "(batch, hidden_size)"
            raise ValueError(f"{name} ({sub}) must have shape {dims} = {shape}, got shape {arr.shape}")
        out.append(arr)
    return out[0], out[1]


def _given_states(layers, stacked: bool, initial_state) -> List[RecurrentState]:
    """The RecurrentState objects passed as ``initial_state`` (none when arrays or None)."""
    L = len(layers)
    given: List[RecurrentState] = []
    if isinstance(initial_state, RecurrentState):
        if stacked:
            raise TypeError(f"initial_state of a stacked model must be a list of {L} states (one per layer), "
                            f"arrays, or None")
        given = [initial_state]
    elif stacked and isinstance(initial_state, (list, tuple)) and any(
            isinstance(s, RecurrentState) for s in initial_state):
        if len(initial_state) != L or not all(isinstance(s, RecurrentState) for s in initial_state):
            raise ValueError(f"initial_state must be a list of {L} clnet.RecurrentState (one per layer)")
        given = list(initial_state)
    for cell, state in zip(layers, given):
        if state.cell is not cell:
            raise ValueError(f"initial_state belongs to another cell ({state.cell!r}); make it with this "
                             f"model's initial_state()")
    return given


@dataclass
class Rollout:
    """The validated inputs of one backward pass, time-major, in the computing dtype."""

    xs: np.ndarray
    keeps: Optional[np.ndarray]
    dhs: np.ndarray
    gkeep: np.ndarray
    burn_in: int

    @property
    def steps(self) -> Tuple[int, int]:
        return self.xs.shape[0], self.xs.shape[1]


def _output_gradients(grad_hs, mask, burn_in: int, T: int, B: int, H: int, batch_first: bool, dt) -> np.ndarray:
    """``grad_hs`` time-major, multiplied by the loss mask and zeroed in the burn-in; a copy
    wherever it is changed (the caller's array never is)."""
    layout = "(B, T, {})" if batch_first else "(T, B, {})"
    if grad_hs is None:
        return np.zeros((T, B, H), dt)
    dhs = as_real_array(grad_hs, "grad_hs", dt)
    want = (B, T, H) if batch_first else (T, B, H)
    if dhs.shape != want:
        raise ValueError(f"grad_hs must have the shape of the outputs, {layout.format('hidden_size')} = "
                         f"{want}, got shape {dhs.shape}")
    if batch_first:
        dhs = dhs.transpose(1, 0, 2)
    changed = batch_first or mask is not None or burn_in != 0
    dhs = np.array(dhs, dtype=dt, order="C") if changed else np.ascontiguousarray(dhs, dtype=dt)
    if mask is not None:
        tb = (B, T) if batch_first else (T, B)
        m = per_step_array(mask, "mask", tb, holds="0/1, booleans or weights", each="weight",
                           layout="(B, T) = " if batch_first else "(T, B) = ").astype(dt)
        dhs *= (m.T if batch_first else m)[:, :, None]
    if burn_in:
        dhs[:burn_in] = 0
    return dhs


def _inputs_and_keeps(first, xs, resets, batch_first, dt):
    """``xs`` time-major and the reset masks ``keeps`` (T, B) or None, checked."""
    if not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first must be True or False, got {batch_first!r}")
    xv = first._inputs(xs, "xs", dt, (3,))
    if batch_first:
        xv = np.ascontiguousarray(xv.transpose(1, 0, 2))
    T, B = xv.shape[:2]
    if T == 0:
        raise ValueError("xs must hold at least one time step")
    keeps = reset_keep(resets, "resets", (B, T) if batch_first else (T, B), dt)
    if keeps is not None and batch_first:
        keeps = np.ascontiguousarray(keeps.T)
    return xv, keeps


def _gradient_masks(keeps, T, B, H, grad_hs, truncate, burn_in, mask, batch_first, dt):
    """The checked burn-in, the masked output gradients and ``gkeep``: (burn_in, dhs, gkeep)."""
    if truncate is not None:
        truncate = as_int(truncate, "truncate", minimum=1)
    burn_in = as_int(burn_in, "burn_in", minimum=0)
    if burn_in >= T:
        raise ValueError(f"burn_in must be smaller than the number of time steps T = {T} (at least one "
                         f"step must carry gradient), got {burn_in}")
    dhs = _output_gradients(grad_hs, mask, burn_in, T, B, H, batch_first, dt)
    # gkeep[t, b] = 0 where no gradient flows into the state before step t.
    gkeep = np.ones((T, B), dt) if keeps is None else keeps.copy()
    if truncate is not None:
        gkeep[truncate::truncate] = 0
    if burn_in:
        gkeep[burn_in] = 0
    return burn_in, dhs, gkeep


def _rollout(first, xs, resets, grad_hs, truncate, burn_in, mask, batch_first, dt) -> Rollout:
    xv, keeps = _inputs_and_keeps(first, xs, resets, batch_first, dt)
    T, B = xv.shape[:2]
    burn_in, dhs, gkeep = _gradient_masks(keeps, T, B, first.hidden_size, grad_hs, truncate, burn_in, mask,
                                          batch_first, dt)
    return Rollout(xv, keeps, dhs, gkeep, burn_in)


def _initial_arrays(initial_state, lstm: bool, L: int, B: int, H: int, stacked: bool, dt):
    shape = (L, B, H) if stacked else (B, H)
    h0, c0 = _state_arrays(initial_state, "initial_state", lstm, shape, dt, "h0, c0" if lstm else "h0")
    if lstm and initial_state is not None and (h0 is None or c0 is None):
        raise ValueError("initial_state of an LSTM needs both h0 and c0 (or None for zeros)")
    h0 = np.zeros((L, B, H), dt) if h0 is None else h0.reshape(L, B, H)
    c0 = (np.zeros((L, B, H), dt) if c0 is None else c0.reshape(L, B, H)) if lstm else None
    return h0, c0


def _resolve(layers, stacked: bool, initial_state, backend, dtype):
    """The RecurrentStates given as initial_state, the backend and the dtype."""
    given = _given_states(layers, stacked, initial_state)
    be = get_backend(backend) if (backend is not None or not given) else given[0].backend
    dt = be.check_dtype(dtype if (dtype is not None or not given) else given[0].dtype)
    return given, be, dt


def _check_batch(given, B: int) -> None:
    for state in given:
        if state.batch_size != B:
            raise ValueError(f"xs has batch size {B} but initial_state holds {state.batch_size} environments")


def _read_initial(given, initial_state, lstm, L, B, H, stacked, dt):
    if not given:
        return _initial_arrays(initial_state, lstm, L, B, H, stacked, dt)
    h0 = np.stack([s.h for s in given]).astype(dt)
    c0 = np.stack([s.c for s in given]).astype(dt) if lstm else None
    return h0, c0


def _final_gradients(grad_final, lstm, L, B, H, stacked, dt):
    dhT, dcT = _state_arrays(grad_final, "grad_final", lstm, (L, B, H) if stacked else (B, H), dt, "dh_T, dc_T")
    return (None if dhT is None else dhT.reshape(L, B, H)), (None if dcT is None else dcT.reshape(L, B, H))


def backward_sequence(model, layers: Sequence, stacked: bool, xs, initial_state, resets, grad_hs, grad_final,
                      truncate, burn_in, mask, batch_first, backend, dtype) -> Dict[str, np.ndarray]:
    """The body of every ``backward_sequence`` (see :meth:`clnet.LSTMCell.backward_sequence`)."""
    lstm = model.kind == "lstm"
    L, H = len(layers), model.hidden_size
    given, be, dt = _resolve(layers, stacked, initial_state, backend, dtype)
    roll = _rollout(layers[0], xs, resets, grad_hs, truncate, burn_in, mask, batch_first, dt)
    T, B = roll.steps
    _check_batch(given, B)
    if not given:  # arrays are checked now, states read only once every argument is known to be good
        h0, c0 = _initial_arrays(initial_state, lstm, L, B, H, stacked, dt)
    dhT, dcT = _final_gradients(grad_final, lstm, L, B, H, stacked, dt)
    if given:
        h0, c0 = _read_initial(given, initial_state, lstm, L, B, H, stacked, dt)
    weights = [cell._weights(be, dt) for cell in layers]
    res = call(be, "rnn_backward", weights, roll.xs, h0, c0, roll.keeps, roll.gkeep, roll.dhs, dhT, dcT,
               roll.burn_in)
    return _named_gradients(layers, stacked, lstm, batch_first, res)


class RecordedSequence:
    """A forward pass over a stored rollout that keeps, on the backend, what the backward
    needs (the activations of every step), so that the gradients are computed without
    running the forward again: made by :meth:`clnet.LSTMCell.record_sequence`.

    :attr:`hs` holds the outputs, as :meth:`~clnet.LSTMCell.sequence` returns them (no state
    object is changed); :meth:`backward` takes the arguments of ``backward_sequence`` that
    concern the gradient and returns the same gradients, equal to those of ``backward_sequence``
    over the same ``xs``, ``initial_state`` and ``resets``. It runs once: the backward pass
    reuses the recorded buffers as it goes (on OpenCL it zeroes, in place, the rows of the
    saved states that resets replaced), so a second call is refused, as is a call after the
    weights changed (``load_state_dict``): record again.
    """

    def __init__(self, model, layers, stacked, batch_first, backend, dtype, weights, xs, keeps, saved, hs):
        self._model, self._layers, self._stacked, self._batch_first = model, layers, stacked, batch_first
        self._backend, self._dtype, self._weights = backend, dtype, weights
        self._keeps, self._saved = keeps, saved
        self._T, self._B = xs.shape[:2]
        self.hs = np.ascontiguousarray(hs.transpose(1, 0, 2)) if batch_first else hs

    @property
    def steps(self) -> Tuple[int, int]:
        """(T, B): the time steps and sequences recorded."""
        return self._T, self._B

    def backward(self, grad_hs, grad_final=None, *, truncate=None, burn_in=0, mask=None,
                 inputs: bool = True) -> Dict[str, np.ndarray]:
        """The gradients of :meth:`clnet.LSTMCell.backward_sequence` (same names, same meaning of
        ``grad_hs``, ``grad_final``, ``truncate``, ``burn_in`` and ``mask``; ``batch_first`` as
        recorded), through the recorded forward pass.

        ``inputs=False`` leaves out ``"x"``, the gradient of the inputs, which a policy whose
        inputs are observations never uses: on OpenCL its product and its read are skipped.
        Every other gradient is the same."""
        if not isinstance(inputs, (bool, np.bool_)):
            raise TypeError(f"inputs must be True or False, got {inputs!r}")
        if self._saved is None:
            raise RuntimeError("this recorded sequence has been run backwards already; record it again")
        # peek, not _weights: a changed cell has no prepared copy yet, and preparing one would
        # upload weights only to refuse
        if any(cell._device_copies.peek(self._backend, self._dtype) is not w
               for cell, w in zip(self._layers, self._weights)):
            raise ValueError("the weights changed since this sequence was recorded (load_state_dict); "
                             "record it again")
        lstm = self._model.kind == "lstm"
        L, H, dt = len(self._layers), self._model.hidden_size, self._dtype
        T, B = self._T, self._B
        burn_in, dhs, gkeep = _gradient_masks(self._keeps, T, B, H, grad_hs, truncate, burn_in, mask,
                                              self._batch_first, dt)
        dhT, dcT = _final_gradients(grad_final, lstm, L, B, H, self._stacked, dt)
        saved, self._saved = self._saved, None  # every argument is good: the recording is used up now
        # with inputs=True a backend is asked exactly as before the option existed (the contract
        # has it since; a backend written earlier still runs every call that does not use it)
        extra = {} if inputs else {"inputs": False}
        args = (self._weights, saved, gkeep, dhs, dhT, dcT, burn_in)
        res = run(self._backend, "rnn_backward_saved", lambda be: be.op("rnn_backward_saved")(*args, **extra))
        if not inputs:
            res["x"] = None
        return _named_gradients(self._layers, self._stacked, lstm, self._batch_first, res)


def record_sequence(model, layers: Sequence, stacked: bool, xs, initial_state, resets, batch_first, backend,
                    dtype) -> RecordedSequence:
    """The body of every ``record_sequence`` (see :meth:`clnet.LSTMCell.record_sequence`)."""
    lstm = model.kind == "lstm"
    L, H = len(layers), model.hidden_size
    given, be, dt = _resolve(layers, stacked, initial_state, backend, dtype)
    xv, keeps = _inputs_and_keeps(layers[0], xs, resets, batch_first, dt)
    T, B = xv.shape[:2]
    _check_batch(given, B)
    h0, c0 = _read_initial(given, initial_state, lstm, L, B, H, stacked, dt)
    weights = [cell._weights(be, dt) for cell in layers]
    hs, saved = call(be, "rnn_forward_saving", weights, xv, h0, c0, keeps)
    return RecordedSequence(model, list(layers), stacked, batch_first, be, dt, weights, xv, keeps, saved, hs)


def _named_gradients(layers, stacked: bool, lstm: bool, batch_first: bool, res) -> Dict[str, np.ndarray]:
    """The backend's result under PyTorch's names (``weight_ih_l0``, ... when stacked)."""
    grads: Dict[str, np.ndarray] = {}
    for l, (cell, g) in enumerate(zip(layers, res["layers"])):
        suffix = f"_l{l}" if stacked else ""
        for name in PARAMETER_NAMES:
            if name in cell._shapes():
                grads[name + suffix] = g[name]
    dx = res["x"]
    if dx is not None:  # None: the caller asked for no input gradient (RecordedSequence.backward)
        grads["x"] = np.ascontiguousarray(dx.transpose(1, 0, 2)) if batch_first else dx
    grads["h0"] = res["h0"] if stacked else res["h0"][0]
    if lstm:
        grads["c0"] = res["c0"] if stacked else res["c0"][0]
    return grads
