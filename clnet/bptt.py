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

__all__ = ["backward_sequence", "RecordedSequence", "CellGroup", "RecordedGroup"]

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
    tb = (B, T) if batch_first else (T, B)
    # the mask is checked even where no output gradient would be scaled by it
    m = None if mask is None else per_step_array(mask, "mask", tb, holds="0/1, booleans or weights", each="weight",
                                                 layout="(B, T) = " if batch_first else "(T, B) = ").astype(dt)
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
    if m is not None:
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


# ---------------------------------------------------------------------------------------------
# Cell groups
# ---------------------------------------------------------------------------------------------
class CellGroup:
    """Cells of one kind and one shape that read the same inputs, recorded and run
    backwards together: an actor and a critic LSTM over the same observations (PPO), an
    ensemble.

    ``CellGroup([actor, critic])`` keeps the cells themselves (their weights stay theirs:
    ``load_state_dict`` on a member is seen at the group's next call). Its
    :meth:`record_sequence` is :meth:`clnet.LSTMCell.record_sequence` for every member over
    the same ``xs`` and ``resets``, from each member's own initial state, and returns a
    :class:`RecordedGroup` whose ``backward`` gives every member's gradients. On OpenCL the
    members run side by side in the launches of ONE cell (one upload of the inputs, one
    forward launch, one backward launch, one product, one read each way), where separate
    calls pay each device command and wait once per member; elsewhere, member by member.
    Either way every member's outputs and gradients are exactly those of its own
    ``record_sequence`` on that backend.

    Example::

        actor, critic = clnet.LSTMCell(4, 64, seed=1), clnet.LSTMCell(4, 64, seed=2)
        group = clnet.CellGroup([actor, critic])
        rec = group.record_sequence(xs, [None, None], resets)   # xs (T, B, 4), zero initial states
        hs = rec.hs                                             # (2, T, B, 64): actor's, critic's
        g_actor, g_critic = rec.backward(grad_hs, inputs=False)  # grad_hs (2, T, B, 64)
    """

    def __init__(self, cells):
        from .rnn import _Cell

        try:
            members = list(cells)
        except TypeError:
            raise TypeError(f"cells must be a sequence of clnet cells (LSTMCell, GRUCell, RNNCell), "
                            f"got {type(cells).__name__}") from None
        if not members:
            raise ValueError("cells must hold at least one cell")
        for i, cell in enumerate(members):
            if not isinstance(cell, _Cell):
                raise TypeError(f"cells[{i}] must be a clnet LSTMCell, GRUCell or RNNCell (a stacked model is "
                                f"not a member: group its layers' cells), got {type(cell).__name__}")
        first = members[0]
        for i, cell in enumerate(members[1:], 1):
            if (cell.kind, cell.input_size, cell.hidden_size, cell.bias) != (
                    first.kind, first.input_size, first.hidden_size, first.bias):
                raise ValueError(f"the cells of a group must share kind, input_size, hidden_size and bias: cells[0] "
                                 f"is {first!r} ({first.kind}), cells[{i}] is {cell!r} ({cell.kind})")
        self.cells = tuple(members)
        # The prepared weights are kept in each member's cache under a key naming the members,
        # not this object: a group made again over the same cells (in a loop, say) finds them
        # instead of adding another copy to every member's cache.
        self._key = ("cell group",) + tuple(id(cell) for cell in self.cells)

    def __len__(self) -> int:
        return len(self.cells)

    def __repr__(self) -> str:
        return f"clnet.CellGroup({list(self.cells)!r})"

    @property
    def kind(self) -> str:
        return self.cells[0].kind

    @property
    def hidden_size(self) -> int:
        return self.cells[0].hidden_size

    def _weights(self, be, dt):
        """The backend's prepared weights of every member, kept while no member changes.

        They are stored in each member's own cache of device copies, which a member's
        ``load_state_dict`` clears: the group prepares again when any of them is missing."""
        key = self._key + (np.dtype(dt).str,)
        held = [cell._device_copies.peek(be, key) for cell in self.cells]
        if held[0] is not None and all(h is held[0] for h in held):
            return held[0]
        params = [dict(cell._params) for cell in self.cells]
        if _groups_natively(be):
            weights = call(be, "rnn_prepare_group", self.kind, params, self.hidden_size, dt, stateless=False)
        else:
            weights = [cell._weights(be, dt) for cell in self.cells]
        for cell in self.cells:  # replacing what an earlier load left in the unchanged members
            cell._device_copies.discard(be, key)
            cell._device_copies.get(be, key, lambda: weights)
        return weights

    def record_sequence(self, xs, initial_states=None, resets=None, *, batch_first: bool = False,
                        backend=None, dtype=None) -> "RecordedGroup":
        """Every member's :meth:`clnet.LSTMCell.record_sequence` over the same ``xs`` and
        ``resets``. ``initial_states``: None (zeros for all) or a sequence with one entry per
        member, each what that member's ``record_sequence`` takes as ``initial_state``
        (None, arrays, or a :class:`clnet.RecurrentState` of that member). Returns a
        :class:`RecordedGroup`; nothing in any cell or state changes."""
        n = len(self.cells)
        if initial_states is None:
            initial_states = [None] * n
        elif isinstance(initial_states, RecurrentState) or not isinstance(initial_states, (list, tuple)):
            raise TypeError(f"initial_states must be None or a list of {n} initial states (one per member), "
                            f"got {type(initial_states).__name__}")
        if len(initial_states) != n:
            raise ValueError(f"initial_states must hold one initial state per member ({n}), got {len(initial_states)}")
        lstm = self.kind == "lstm"
        H = self.hidden_size
        givens = [_for_member(m, _given_states, [cell], False, state)
                  for m, (cell, state) in enumerate(zip(self.cells, initial_states))]
        # the backend and dtype as a single cell's call resolves them (_resolve), from the first given state
        first = next((g[0] for g in givens if g), None)
        be = get_backend(backend) if (backend is not None or first is None) else first.backend
        dt = be.check_dtype(dtype if (dtype is not None or first is None) else first.dtype)
        for m, given in enumerate(givens):
            if given and (given[0].backend.spec != be.spec or given[0].dtype != dt):
                raise ValueError(f"initial_states[{m}] lives on backend {given[0].backend.spec!r} in "
                                 f"{given[0].dtype} but the group runs on {be.spec!r} in {dt}: a group runs on "
                                 f"one backend and dtype")
        xv, keeps = _inputs_and_keeps(self.cells[0], xs, resets, batch_first, dt)
        T, B = xv.shape[:2]
        starts = [None] * n
        for m, (given, state) in enumerate(zip(givens, initial_states)):
            _for_member(m, _check_batch, given, B)
            if not given:  # arrays are checked first; states are read once every argument is good
                starts[m] = _for_member(m, _initial_arrays, state, lstm, 1, B, H, False, dt)
        for m, (given, state) in enumerate(zip(givens, initial_states)):
            if given:
                starts[m] = _read_initial(given, state, lstm, 1, B, H, False, dt)
        h0 = np.concatenate([h for h, _ in starts])
        c0 = np.concatenate([c for _, c in starts]) if lstm else None
        weights = self._weights(be, dt)
        if _groups_natively(be):
            hs, saved = call(be, "rnn_forward_saving_group", weights, xv, h0, c0, keeps, stateless=False)
        else:
            hs, saved = run(be, "rnn_forward_saving_group", lambda b: _member_by_member().rnn_forward_saving_group(
                b, weights, xv, h0, c0, keeps), stateless=False)
        return RecordedGroup(self, be, dt, weights, batch_first, xv.shape[:2], keeps, saved, hs)


def _for_member(m: int, check, *args):
    """``check(*args)``, its TypeError or ValueError naming the member it concerns."""
    try:
        return check(*args)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"initial_states[{m}]: {exc}") from None


def _groups_natively(be) -> bool:
    """Whether the backend declares the "bptt_group" family (else: member by member)."""
    from .contract import BPTTGroupOps

    return isinstance(be, BPTTGroupOps)


def _member_by_member():
    from .contract import MemberByMember

    return MemberByMember


class RecordedGroup:
    """The forward pass of every member of a :class:`CellGroup`, kept for one backward pass
    (made by :meth:`CellGroup.record_sequence`; the group form of
    :class:`RecordedSequence`, with its rules: one backward, refused once a member's
    weights changed).

    :attr:`hs` is ``(n, T, B, hidden_size)`` (``(n, B, T, hidden_size)`` with batch_first):
    ``hs[m]`` member m's outputs."""

    def __init__(self, group, backend, dtype, weights, batch_first, steps, keeps, saved, hs):
        self._group, self._backend, self._dtype, self._weights = group, backend, dtype, weights
        self._batch_first, self._keeps, self._saved = batch_first, keeps, saved
        self._T, self._B = steps
        self.hs = np.ascontiguousarray(hs.transpose(0, 2, 1, 3)) if batch_first else hs

    @property
    def steps(self) -> Tuple[int, int]:
        """(T, B): the time steps and sequences recorded."""
        return self._T, self._B

    def backward(self, grad_hs, grad_final=None, *, truncate=None, burn_in=0, mask=None,
                 inputs: bool = True) -> List[Dict[str, np.ndarray]]:
        """Every member's gradients, a list in the group's order: entry m is what member m's
        :meth:`RecordedSequence.backward` returns for ``grad_hs[m]`` and ``grad_final[m]``.

        ``grad_hs``: an array shaped like :attr:`hs` or a sequence of one gradient (or None)
        per member. ``grad_final``: None, or one entry per member (None, or that member's
        ``grad_final``). ``truncate``, ``burn_in``, ``mask`` and ``inputs`` apply to all
        members (``inputs=True``: each member's ``"x"`` is the gradient through it alone;
        the shared inputs' total gradient is their sum)."""
        n, group = len(self._group.cells), self._group
        if not isinstance(inputs, (bool, np.bool_)):
            raise TypeError(f"inputs must be True or False, got {inputs!r}")
        if self._saved is None:
            raise RuntimeError("this recorded group has been run backwards already; record it again")
        key = group._key + (np.dtype(self._dtype).str,)
        if any(cell._device_copies.peek(self._backend, key) is not self._weights for cell in group.cells):
            raise ValueError("a member's weights changed since this group was recorded (load_state_dict); "
                             "record it again")
        grads = _per_member(grad_hs, n, "grad_hs", allow_array=True)
        finals = _per_member(grad_final, n, "grad_final", allow_array=False)
        lstm, H, dt, T, B = group.kind == "lstm", group.hidden_size, self._dtype, self._T, self._B
        # the arguments every member shares are checked once, so that their errors name no member
        _gradient_masks(self._keeps, T, B, H, None, truncate, burn_in, mask, self._batch_first, dt)
        dhs, gkeep, checked_burn_in = [], None, 0
        for m in range(n):
            try:
                checked_burn_in, dh, gkeep = _gradient_masks(self._keeps, T, B, H, grads[m], truncate, burn_in, mask,
                                                             self._batch_first, dt)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"member {m}: {exc}") from None
            dhs.append(dh)
        ends = []
        for m, f in enumerate(finals):
            try:
                ends.append(_final_gradients(f, lstm, 1, B, H, False, dt))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"member {m}: {exc}") from None
        dhT = None if all(h is None for h, _ in ends) else np.concatenate(
            [np.zeros((1, B, H), dt) if h is None else h for h, _ in ends])
        dcT = None if (not lstm or all(c is None for _, c in ends)) else np.concatenate(
            [np.zeros((1, B, H), dt) if c is None else c for _, c in ends])
        saved, self._saved = self._saved, None  # every argument is good: the recording is used up now
        args = (self._weights, saved, gkeep, np.stack(dhs), dhT, dcT, checked_burn_in)
        extra = {} if inputs else {"inputs": False}
        if _groups_natively(self._backend):
            results = run(self._backend, "rnn_backward_saved_group",
                          lambda be: be.op("rnn_backward_saved_group")(*args, **extra))
        else:
            results = run(self._backend, "rnn_backward_saved_group",
                          lambda be: _member_by_member().rnn_backward_saved_group(be, *args, **extra))
        out = []
        for cell, res in zip(group.cells, results):
            if not inputs:
                res["x"] = None
            out.append(_named_gradients([cell], False, lstm, self._batch_first, res))
        return out


def _per_member(value, n: int, name: str, allow_array: bool) -> list:
    """``value`` split into one entry per member: None for all, a sequence of n, or (when
    ``allow_array``) an array whose first axis has length n."""
    if value is None:
        return [None] * n
    if allow_array and not isinstance(value, (list, tuple)):  # an array, or an array-like (a tensor)
        value = as_real_array(value, name, np.float64)
        if value.ndim < 1 or value.shape[0] != n:
            raise ValueError(f"{name} must have one entry per member along its first axis ({n}), "
                             f"got shape {value.shape}")
        return list(value)
    if not isinstance(value, (list, tuple)) or len(value) != n:
        got = f"length {len(value)}" if isinstance(value, (list, tuple)) else type(value).__name__
        raise ValueError(f"{name} must be None or hold one entry per member ({n}), got {got}")
    return list(value)
