"""Recurrent cells for reinforcement learning: LSTM, GRU and Elman RNN steps with
device-resident state, episode resets and fused sequences.

Public API: :class:`LSTMCell`, :class:`GRUCell`, :class:`RNNCell` (one layer, stepped
or run over a sequence), :class:`LSTM` and :class:`GRU` (stacked layers called like
``torch.nn.LSTM``), and :class:`RecurrentState` (h and c kept by a backend, on the
device for OpenCL). Semantics and weight layouts are PyTorch's: see
``shared/docs/SEMANTICS.md``, recurrent cells.

Backpropagation through time over a stored rollout: ``backward_sequence`` on every cell
and stacked model (gradients of every weight, the inputs and the initial state; resets,
truncation windows, burn-in and loss masks), on the device through the mixin
:class:`BPTTKernels` and ``kernels/bptt.cl``.

Every public method validates all of its arguments before any device work, so a bad
call raises and leaves the state untouched. The OpenCL implementation is the mixins
:class:`RNNKernels` and :class:`BPTTKernels` at the bottom; the NumPy reference is
``clnet_fallback.rnn``.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from ._validate import as_int, as_real_array, host_array
from .backend import Backend, BackendLike, get_backend

__all__ = ["LSTMCell", "GRUCell", "RNNCell", "LSTM", "GRU", "RecurrentState"]

_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


# ---------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------
def _reset_keep(mask, name: str, shape: Tuple[int, ...], dtype) -> Optional[np.ndarray]:
    """A reset mask as ``keep = 1 - mask`` in ``dtype``; None when nothing is reset."""
    if mask is None:
        return None
    arr = host_array(mask)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be an array of 0/1 or booleans, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (one flag per environment"
                         f"{' and time step' if len(shape) == 2 else ''}), got shape {arr.shape}")
    if arr.dtype.kind != "b" and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1 (1 = a new episode started before this step)")
    if not arr.any():
        return None
    return (1 - arr.astype(dtype))


def _check_matrix(value, name: str, shape: Tuple[int, ...]) -> np.ndarray:
    arr = as_real_array(value, name, np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got shape {arr.shape}")
    return arr


def _torch_module(module, expected: Tuple[str, ...]):
    name = type(module).__name__
    if name not in expected:
        raise TypeError(f"module must be a torch.nn.{' or torch.nn.'.join(expected)}, got {name}")


# ---------------------------------------------------------------------------------------
# The state kept between steps
# ---------------------------------------------------------------------------------------
class RecurrentState:
    """h (and c for an LSTM) of a batch of environments, kept by one backend.

    Made by ``cell.initial_state(batch_size)``. On an OpenCL backend it lives in device
    buffers and only moves when read (:attr:`h`, :attr:`c`) or written (:meth:`set`).
    It belongs to the cell and backend that made it; other cells refuse it. It never
    shares memory with arrays the caller passes in or gets back.
    """

    def __init__(self, cell, backend: Backend, dtype, batch_size: int, storage):
        self._cell = cell
        self._backend = backend
        self._dtype = np.dtype(dtype)
        self._batch = batch_size
        self._storage = storage

    @property
    def cell(self):
        return self._cell

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def batch_size(self) -> int:
        return self._batch

    @property
    def h(self) -> np.ndarray:
        """The hidden state ``(batch_size, hidden_size)``, copied back from the backend."""
        return self._backend.op("rnn_state_read")(self._storage, "h")

    @property
    def c(self) -> np.ndarray:
        """The LSTM cell state ``(batch_size, hidden_size)``; GRU and RNN cells have none."""
        if self._cell.kind != "lstm":
            raise AttributeError(f"a {type(self._cell).__name__} state has no cell state c (only LSTMs do)")
        return self._backend.op("rnn_state_read")(self._storage, "c")

    def reset(self, mask=None) -> None:
        """Zero h (and c) of the environments where ``mask`` is 1; all of them when omitted."""
        if mask is None:
            mask = np.ones(self._batch, dtype=bool)
        keep = _reset_keep(mask, "mask", (self._batch,), self._dtype)
        if keep is not None:
            self._backend.op("rnn_state_reset")(self._storage, keep)

    def set(self, h, c=None) -> None:
        """Overwrite the state, e.g. with one stored in a rollout buffer for re-evaluation."""
        shape = (self._batch, self._cell.hidden_size)
        hv = self._cell._state_array(h, "h", shape, self._dtype)
        cv = None
        if self._cell.kind == "lstm":
            if c is None:
                raise ValueError("an LSTM state needs both h and c: state.set(h, c)")
            cv = self._cell._state_array(c, "c", shape, self._dtype)
        elif c is not None:
            raise ValueError(f"a {type(self._cell).__name__} state has no cell state c; call state.set(h)")
        self._backend.op("rnn_state_write")(self._storage, hv, cv)

    def __repr__(self) -> str:
        return (f"<clnet.RecurrentState of a {type(self._cell).__name__}: batch {self._batch}, "
                f"hidden {self._cell.hidden_size}, {self._dtype.name} on {self._backend.spec}>")


# ---------------------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------------------
class _Cell:
    kind = "lstm"

    def __init__(self, input_size, hidden_size, bias: bool = True, *, seed=None, weights=None):
        self.input_size = as_int(input_size, "input_size", minimum=1)
        self.hidden_size = as_int(hidden_size, "hidden_size", minimum=1)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        self.bias = bool(bias)
        self._params: Dict[str, np.ndarray] = {}
        self._prepared: Dict[tuple, object] = {}
        if weights is not None:
            self.load_state_dict(weights)
        else:
            self.reset_parameters(seed)

    # -- weights ----------------------------------------------------------------------------
    @property
    def gates(self) -> int:
        return _GATES[self.kind]

    def _shapes(self) -> Dict[str, Tuple[int, ...]]:
        G, H, I = self.gates, self.hidden_size, self.input_size
        shapes = {"weight_ih": (G * H, I), "weight_hh": (G * H, H)}
        if self.bias:
            shapes.update(bias_ih=(G * H,), bias_hh=(G * H,))
        return shapes

    def reset_parameters(self, seed=None) -> None:
        """PyTorch's default: every weight and bias uniform in (-1/sqrt(H), 1/sqrt(H))."""
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.hidden_size)
        self._set_params({k: rng.uniform(-bound, bound, size=s) for k, s in self._shapes().items()})

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Set the weights from PyTorch's names: weight_ih, weight_hh, bias_ih, bias_hh."""
        self._set_params(self._check_params(state_dict))

    def _check_params(self, state_dict: Mapping, suffix: str = "") -> Dict[str, np.ndarray]:
        """The weights of ``state_dict`` (keys ending in ``suffix``) checked against the sizes."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping of names to arrays, got {type(state_dict).__name__}")
        shapes = {k + suffix: v for k, v in self._shapes().items()}
        missing = [k for k in shapes if k not in state_dict]
        extra = [k for k in state_dict if k not in shapes]
        if missing or extra:
            hint = "" if self.bias else " (bias=False)"
            raise ValueError(f"state_dict must have exactly the keys {list(shapes)}{hint}; "
                             f"missing {missing}, unexpected {extra}")
        G = self.gates
        names = {"weight_ih": f"({G}*hidden_size, input_size)", "weight_hh": f"({G}*hidden_size, hidden_size)",
                 "bias_ih": f"({G}*hidden_size,)", "bias_hh": f"({G}*hidden_size,)"}
        params = {}
        for k, shape in self._shapes().items():
            arr = as_real_array(state_dict[k + suffix], k + suffix, np.float64)
            if arr.shape != shape:
                raise ValueError(f"{k + suffix} must have shape {names[k]} = {shape}, got shape {arr.shape}")
            params[k] = arr
        return params

    def _set_params(self, params: Dict[str, np.ndarray]) -> None:
        self._params = {k: np.array(v, dtype=np.float64, copy=True) for k, v in params.items()}
        self._prepared.clear()

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of the weights under PyTorch's names (float64)."""
        return {k: v.copy() for k, v in self._params.items()}

    @classmethod
    def from_torch(cls, module) -> "_Cell":
        """A cell with the sizes and weights of a ``torch.nn.LSTMCell`` / ``GRUCell`` / ``RNNCell``."""
        _torch_module(module, (cls._torch_name,))
        kwargs = {}
        if cls is RNNCell:
            kwargs["nonlinearity"] = module.nonlinearity
        cell = cls(module.input_size, module.hidden_size, bias=module.bias, **kwargs)
        cell.load_state_dict({k: v for k, v in module.state_dict().items()})
        return cell

    def _weights(self, be: Backend, dt: np.dtype):
        key = (be.spec, id(be), dt.name)
        prepared = self._prepared.get(key)
        if prepared is None:
            params = {k: v for k, v in self._params.items()}
            prepared = be.op("rnn_prepare")(self.kind, params, self.hidden_size, dt)
            self._prepared[key] = prepared
        return prepared

    # -- checks -----------------------------------------------------------------------------
    def _inputs(self, x, name: str, dtype, ndim) -> np.ndarray:
        arr = as_real_array(x, name, dtype, ndim=ndim)
        if arr.shape[-1] != self.input_size:
            raise ValueError(f"{name} must have {self.input_size} features in its last axis (input_size), "
                             f"got shape {arr.shape}")
        return arr

    def _state_array(self, value, name, shape, dtype) -> np.ndarray:
        arr = as_real_array(value, name, dtype)
        if arr.shape != shape:
            raise ValueError(f"{name} must have shape (batch_size, hidden_size) = {shape}, got shape {arr.shape}")
        return arr

    def _own(self, state, backend: BackendLike) -> Backend:
        if not isinstance(state, RecurrentState):
            raise TypeError(f"state must be a clnet.RecurrentState from {type(self).__name__}.initial_state(), "
                            f"got {type(state).__name__}")
        if state.cell is not self:
            raise ValueError(f"state belongs to another cell ({state.cell!r}); make one with this "
                             f"cell's initial_state()")
        if backend is not None:
            be = get_backend(backend)
            if be is not state.backend:
                raise ValueError(f"state lives on backend {state.backend.spec!r} but backend {be.spec!r} "
                                 f"was requested; make the state with initial_state(..., backend=...)")
        return state.backend

    # -- device-resident stepping -------------------------------------------------------------
    def initial_state(self, batch_size, *, backend: BackendLike = None, dtype=None) -> RecurrentState:
        """A zero state for ``batch_size`` environments, kept by the backend (on the device)."""
        B = as_int(batch_size, "batch_size", minimum=1)
        be = get_backend(backend)
        dt = be.check_dtype(dtype)
        storage = be.op("rnn_state_new")(self.kind, B, self.hidden_size, dt)
        return RecurrentState(self, be, dt, B, storage)

    def step(self, x, state: RecurrentState, reset=None, *, backend: BackendLike = None) -> np.ndarray:
        """Advance ``state`` one time step in place and return the new h ``(B, hidden_size)``.

        ``x`` is ``(B, input_size)``. ``reset`` (optional, length B, 0/1 or bool): where it
        is 1, environment b started a new episode BEFORE this step, so its state is zeroed
        first (h = c = 0 for this step), exactly as ``h * (1 - done)`` in CleanRL or
        ``episode_starts`` in sb3-contrib. Only x (and the mask) go to the device; h comes back.
        The state's backend is used; ``backend=``, if given, must be that one.
        """
        be = self._own(state, backend)
        dt = state.dtype
        xv = self._inputs(x, "x", dt, (2,))
        if xv.shape[0] != state.batch_size:
            raise ValueError(f"x has batch size {xv.shape[0]} but the state holds {state.batch_size} "
                             f"environments: x must have shape ({state.batch_size}, {self.input_size})")
        keep = _reset_keep(reset, "reset", (state.batch_size,), dt)
        return be.op("rnn_step")(self._weights(be, dt), state._storage, xv, keep)

    def sequence(self, xs, state: RecurrentState, resets=None, *, batch_first: bool = False,
                 backend: BackendLike = None) -> np.ndarray:
        """Run T steps in one call and return every h: ``(T, B, hidden_size)``.

        ``xs`` is ``(T, B, input_size)`` (``(B, T, input_size)`` with ``batch_first=True``,
        and the output likewise). ``resets`` is ``(T, B)`` (``(B, T)`` with batch_first)
        with the convention of :meth:`step`: ``resets[t, b] = 1`` zeroes environment b's
        state before step t. The T steps are enqueued without a host round trip (on OpenCL,
        one launch per step, each with its input projection; see ``SEQUENCE_PROJECTION``),
        and the state is left at the final step.
        """
        be = self._own(state, backend)
        dt = state.dtype
        xv = self._inputs(xs, "xs", dt, (3,))
        if batch_first:
            xv = np.ascontiguousarray(xv.transpose(1, 0, 2))
        T, B = xv.shape[:2]
        if B != state.batch_size:
            layout = "(B, T, input_size)" if batch_first else "(T, B, input_size)"
            raise ValueError(f"xs has batch size {B} but the state holds {state.batch_size} environments; "
                             f"xs must be {layout}")
        keeps = None
        if resets is not None:
            shape = (B, T) if batch_first else (T, B)
            keeps = _reset_keep(resets, "resets", shape, dt)
            if keeps is not None and batch_first:
                keeps = np.ascontiguousarray(keeps.T)
        if T == 0:
            out = np.empty((0, B, self.hidden_size), dtype=dt)
        else:
            out = be.op("rnn_sequence")(self._weights(be, dt), state._storage, xv, keeps)
        return np.ascontiguousarray(out.transpose(1, 0, 2)) if batch_first else out

    # -- backpropagation through time -------------------------------------------------------
    def backward_sequence(self, xs, initial_state, resets, grad_hs, grad_final=None, *, truncate=None,
                          burn_in=0, mask=None, batch_first: bool = False, backend: BackendLike = None,
                          dtype=None) -> Dict[str, np.ndarray]:
        """Gradients of a loss through a stored rollout (backpropagation through time).

        The sequence is run forward again from ``initial_state`` with the same ``resets``
        (as :meth:`sequence` does), saving the activations on the device, then backwards:
        given ``grad_hs``, the gradient of the loss with respect to every output h_t, it
        returns the gradient with respect to every weight and bias under PyTorch's names
        (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``; no biases when
        ``bias=False``), the inputs (``x``, shaped like ``xs``) and the initial state
        (``h0``, and ``c0`` for an LSTM). Stored states are constants: nothing changes in
        the cell or in any state object.

        - ``xs``: ``(T, B, input_size)`` (``(B, T, input_size)`` with ``batch_first``), T >= 1.
        - ``initial_state``: the state before step 0: ``None`` (zeros), a
          :class:`RecurrentState` of this cell (read, not changed; its backend and dtype
          are then the defaults), or arrays: ``(h0, c0)`` for an LSTM, ``h0`` for a GRU or
          RNN, each ``(B, hidden_size)``.
        - ``resets``: ``(T, B)`` 0/1 or ``None``, the convention of :meth:`step`:
          ``resets[t, b] = 1`` zeroes environment b's state before step t. The gradient
          into the state it replaced is exactly zero: resets cut the gradient flow where
          they cut the state.
        - ``grad_hs``: ``(T, B, hidden_size)`` (``(B, T, hidden_size)`` with batch_first),
          or ``None`` for zeros.
        - ``grad_final``: gradient with respect to the final state after step T - 1:
          ``(dh_T, dc_T)`` for an LSTM (either may be ``None``), ``dh_T`` otherwise;
          ``(B, hidden_size)`` each. ``None`` for zeros.
        - ``truncate=k`` (truncated BPTT, rl_games' ``bptt_len``): the state still flows
          forward through every step, but no gradient crosses the boundary before step t
          for t = k, 2k, 3k, ... (counted from the first step of ``xs``, burn-in included):
          the gradient into the state before such a step is zero (as ``h.detach()`` there).
          ``None`` (default) lets it flow through all T steps.
        - ``burn_in=n`` (R2D2): steps 0 .. n - 1 only warm up the state. Their outputs'
          gradients are ignored, they contribute nothing to the weight gradients, ``x``'s
          gradient is zero there, no gradient flows into the state before step n, so
          ``h0`` (and ``c0``) get zero gradients when n > 0. 0 <= n < T.
        - ``mask``: ``(T, B)`` (``(B, T)`` with batch_first) loss mask for padded
          sequences: ``grad_hs[t, b]`` is multiplied by ``mask[t, b]`` (0 ignores a padded
          step; weights other than 0 and 1 scale it). The gradient still flows backwards
          through masked steps from later unmasked ones, and ``grad_final`` is not masked.

        Every argument is checked before any device work. Returns float arrays of the
        dtype computed in (float32 by default).
        """
        return _backward_sequence(self, [self], False, xs, initial_state, resets, grad_hs, grad_final,
                                  truncate, burn_in, mask, batch_first, backend, dtype)

    # -- functional form, like torch ------------------------------------------------------------
    def _functional(self, x, hx, backend, dtype):
        be = get_backend(backend)
        dt = be.check_dtype(dtype)
        xv = self._inputs(x, "x", dt, (1, 2))
        single = xv.ndim == 1
        if single:
            xv = xv[None]
        B, H = xv.shape[0], self.hidden_size
        parts = [] if hx is None else ([hx[0], hx[1]] if self.kind == "lstm" else [hx])
        want = (H,) if single else (B, H)
        arrays = []
        for name, value in zip(("h0", "c0"), parts):
            arr = as_real_array(value, name, dt)
            if arr.shape != want:
                raise ValueError(f"{name} must have shape {want} (batch, hidden_size) to match x, got {arr.shape}")
            arrays.append(arr.reshape(B, H))
        storage = be.op("rnn_state_new")(self.kind, B, H, dt)
        if arrays:
            be.op("rnn_state_write")(storage, arrays[0], arrays[1] if len(arrays) > 1 else None)
        h = be.op("rnn_step")(self._weights(be, dt), storage, xv, None)
        c = be.op("rnn_state_read")(storage, "c") if self.kind == "lstm" else None
        if single:
            h = h[0]
            c = None if c is None else c[0]
        return h, c

    def __repr__(self) -> str:
        return f"clnet.{type(self).__name__}({self.input_size}, {self.hidden_size}, bias={self.bias})"


class LSTMCell(_Cell):
    """``torch.nn.LSTMCell`` semantics: gates i, f, g, o stacked in weight_ih ``(4H, I)``,
    weight_hh ``(4H, H)``, bias_ih and bias_hh ``(4H,)``.

    ``h1, c1 = cell(x, (h0, c0))`` is the functional step (x ``(B, I)`` or ``(I,)``);
    ``cell.initial_state(B)`` + ``cell.step(x, state, reset)`` keeps the state on the device.
    """

    kind = "lstm"
    _torch_name = "LSTMCell"

    def __call__(self, x, hx=None, *, backend: BackendLike = None, dtype=None):
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError("hx of an LSTMCell must be a pair (h0, c0)")
        return self._functional(x, hx, backend, dtype)

    @classmethod
    def from_keras(cls, kernel, recurrent_kernel, bias=None) -> "LSTMCell":
        """An LSTM cell from Keras weights: kernel ``(I, 4U)``, recurrent_kernel ``(U, 4U)``,
        bias ``(4U,)`` or None (use_bias=False). Keras uses the same gate order i, f, c, o,
        sigmoid as recurrent activation and tanh as activation (its defaults)."""
        k = as_real_array(kernel, "kernel", np.float64, ndim=(2,))
        if k.shape[1] % 4:
            raise ValueError(f"kernel must have shape (input_size, 4*units), got shape {k.shape}")
        I, U = k.shape[0], k.shape[1] // 4
        rk = _check_matrix(recurrent_kernel, "recurrent_kernel", (U, 4 * U))
        cell = cls(I, U, bias=bias is not None)
        weights = {"weight_ih": k.T, "weight_hh": rk.T}
        if bias is not None:
            weights["bias_ih"] = _check_matrix(bias, "bias", (4 * U,))
            weights["bias_hh"] = np.zeros(4 * U)
        cell.load_state_dict(weights)
        return cell


class GRUCell(_Cell):
    """``torch.nn.GRUCell`` semantics: gates r, z, n stacked in weight_ih ``(3H, I)``,
    weight_hh ``(3H, H)``; ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``,
    ``h' = (1 - z) * n + z * h``. ``h1 = cell(x, h0)``."""

    kind = "gru"
    _torch_name = "GRUCell"

    def __call__(self, x, hx=None, *, backend: BackendLike = None, dtype=None):
        return self._functional(x, hx, backend, dtype)[0]

    @classmethod
    def from_keras(cls, kernel, recurrent_kernel, bias=None) -> "GRUCell":
        """A GRU cell from a Keras GRU with ``reset_after=True`` (the TF2 default): kernel
        ``(I, 3U)``, recurrent_kernel ``(U, 3U)``, bias ``(2, 3U)`` (input and recurrent
        biases) or None. Keras orders the gates z, r, h; they are permuted to r, z, n."""
        k = as_real_array(kernel, "kernel", np.float64, ndim=(2,))
        if k.shape[1] % 3:
            raise ValueError(f"kernel must have shape (input_size, 3*units), got shape {k.shape}")
        I, U = k.shape[0], k.shape[1] // 3
        rk = _check_matrix(recurrent_kernel, "recurrent_kernel", (U, 3 * U))
        order = np.concatenate([np.arange(U, 2 * U), np.arange(0, U), np.arange(2 * U, 3 * U)])
        cell = cls(I, U, bias=bias is not None)
        weights = {"weight_ih": k.T[order], "weight_hh": rk.T[order]}
        if bias is not None:
            b = as_real_array(bias, "bias", np.float64)
            if b.shape != (2, 3 * U):
                raise ValueError(f"bias must have shape (2, 3*units) = {(2, 3 * U)} (a Keras GRU with "
                                 f"reset_after=True), got shape {b.shape}")
            weights["bias_ih"] = b[0][order]
            weights["bias_hh"] = b[1][order]
        cell.load_state_dict(weights)
        return cell


class RNNCell(_Cell):
    """``torch.nn.RNNCell``: ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``, act tanh or relu."""

    _torch_name = "RNNCell"

    def __init__(self, input_size, hidden_size, bias: bool = True, nonlinearity: str = "tanh", *,
                 seed=None, weights=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.kind = "rnn_" + nonlinearity
        super().__init__(input_size, hidden_size, bias, seed=seed, weights=weights)

    def __call__(self, x, hx=None, *, backend: BackendLike = None, dtype=None):
        return self._functional(x, hx, backend, dtype)[0]

    def __repr__(self) -> str:
        return (f"clnet.RNNCell({self.input_size}, {self.hidden_size}, bias={self.bias}, "
                f"nonlinearity={self.nonlinearity!r})")


# ---------------------------------------------------------------------------------------
# Stacked layers, called like torch.nn.LSTM / torch.nn.GRU
# ---------------------------------------------------------------------------------------
class _Stacked:
    _cell_class = LSTMCell
    _torch_name = "LSTM"

    def __init__(self, input_size, hidden_size, num_layers=1, bias: bool = True,
                 batch_first: bool = False, *, seed=None):
        self.input_size = as_int(input_size, "input_size", minimum=1)
        self.hidden_size = as_int(hidden_size, "hidden_size", minimum=1)
        self.num_layers = as_int(num_layers, "num_layers", minimum=1)
        self.batch_first = bool(batch_first)
        rng = np.random.default_rng(seed)
        self.layers: List[_Cell] = [
            self._cell_class(self.input_size if l == 0 else self.hidden_size, self.hidden_size, bias,
                             seed=rng.integers(0, 2**63))
            for l in range(self.num_layers)]
        self.bias = self.layers[0].bias

    @property
    def kind(self) -> str:
        return self._cell_class.kind

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Weights under ``torch.nn.LSTM``'s names: weight_ih_l0, weight_hh_l0, bias_ih_l0, ..."""
        out = {}
        for l, cell in enumerate(self.layers):
            for k, v in cell.state_dict().items():
                out[f"{k}_l{l}"] = v
        return out

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Set every layer from a ``torch.nn.LSTM`` / ``GRU`` state_dict (weight_ih_l0, ...)."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping of names to arrays, got {type(state_dict).__name__}")
        expected = set(self.state_dict())
        extra = sorted(k for k in state_dict if k not in expected)
        missing = sorted(k for k in expected if k not in state_dict)
        if extra or missing:
            raise ValueError(f"state_dict must have exactly the keys {sorted(expected)}; missing {missing}, "
                             f"unexpected {extra} (bidirectional and proj_size layers are not supported)")
        # Check every layer before changing any, so that a bad layer leaves the model intact.
        checked = []
        for l, cell in enumerate(self.layers):
            keys = [f"{k}_l{l}" for k in cell._shapes()]
            checked.append(cell._check_params({k: state_dict[k] for k in keys}, suffix=f"_l{l}"))
        for cell, params in zip(self.layers, checked):
            cell._set_params(params)

    @classmethod
    def from_torch(cls, module) -> "_Stacked":
        """A model with the sizes, layout and weights of a ``torch.nn.LSTM`` / ``torch.nn.GRU``."""
        _torch_module(module, (cls._torch_name,))
        if module.bidirectional:
            raise ValueError("bidirectional layers are not supported (a recurrent policy steps forward in time)")
        if getattr(module, "proj_size", 0):
            raise ValueError("LSTMs with proj_size > 0 are not supported")
        model = cls(module.input_size, module.hidden_size, module.num_layers, module.bias, module.batch_first)
        model.load_state_dict(dict(module.state_dict()))
        return model

    def initial_state(self, batch_size, *, backend: BackendLike = None, dtype=None) -> List[RecurrentState]:
        """One zero state per layer, kept by the backend."""
        be = get_backend(backend)
        return [cell.initial_state(batch_size, backend=be, dtype=dtype) for cell in self.layers]

    def sequence(self, xs, states: List[RecurrentState], resets=None, *, batch_first=None,
                 backend: BackendLike = None) -> np.ndarray:
        """Like :meth:`LSTMCell.sequence` through every layer; ``states`` from :meth:`initial_state`."""
        bf = self.batch_first if batch_first is None else bool(batch_first)
        if not isinstance(states, (list, tuple)) or len(states) != self.num_layers:
            raise ValueError(f"states must be a list of {self.num_layers} states (one per layer) from "
                             f"initial_state()")
        for cell, state in zip(self.layers, states):
            cell._own(state, backend)
        # Validate everything on the first layer before running any.
        xv = self.layers[0]._inputs(xs, "xs", states[0].dtype, (3,))
        T, B = (xv.shape[1], xv.shape[0]) if bf else xv.shape[:2]
        for state in states:
            if state.batch_size != B:
                raise ValueError(f"xs has batch size {B} but a layer state holds {state.batch_size} environments")
        if resets is not None:
            _reset_keep(resets, "resets", (B, T) if bf else (T, B), states[0].dtype)
        out = xv
        for cell, state in zip(self.layers, states):
            out = cell.sequence(out, state, resets, batch_first=bf)
        return out

    def backward_sequence(self, xs, initial_state, resets, grad_hs, grad_final=None, *, truncate=None,
                          burn_in=0, mask=None, batch_first=None, backend: BackendLike = None,
                          dtype=None) -> Dict[str, np.ndarray]:
        """Backpropagation through time through every layer, like :meth:`LSTMCell.backward_sequence`.

        ``grad_hs`` is the gradient of the last layer's outputs; ``initial_state`` is
        ``None``, a list of one :class:`RecurrentState` per layer, or arrays as in a call:
        ``(h0, c0)`` (LSTM) or ``h0`` (GRU), each ``(num_layers, B, hidden_size)``;
        ``grad_final`` likewise for ``(h_n, c_n)``. Resets, truncation and burn-in apply to
        every layer; the mask to ``grad_hs``. The result holds torch.nn.LSTM's names
        (``weight_ih_l0``, ``weight_hh_l1``, ...), ``x``, and ``h0`` (``c0``) of shape
        ``(num_layers, B, hidden_size)``. ``batch_first`` defaults to the model's.
        """
        bf = self.batch_first if batch_first is None else bool(batch_first)
        return _backward_sequence(self, self.layers, True, xs, initial_state, resets, grad_hs, grad_final,
                                  truncate, burn_in, mask, bf, backend, dtype)

    def __call__(self, xs, hx=None, *, backend: BackendLike = None, dtype=None):
        be = get_backend(backend)
        dt = be.check_dtype(dtype)
        first = self.layers[0]
        xv = first._inputs(xs, "xs", dt, (2, 3))
        single = xv.ndim == 2
        if single:
            xv = xv[:, None, :]
        elif self.batch_first:
            xv = np.ascontiguousarray(xv.transpose(1, 0, 2))
        T, B = xv.shape[:2]
        L, H = self.num_layers, self.hidden_size
        lstm = self.kind == "lstm"
        parts = []
        if hx is not None:
            if lstm and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
                raise TypeError("hx of an LSTM must be a pair (h0, c0)")
            parts = list(hx) if lstm else [hx]
        want = (L, H) if single else (L, B, H)
        arrays = []
        for name, value in zip(("h0", "c0"), parts):
            arr = as_real_array(value, name, dt)
            if arr.shape != want:
                raise ValueError(f"{name} must have shape {want} (num_layers, batch, hidden_size), got {arr.shape}")
            arrays.append(arr.reshape(L, B, H))
        h_n = np.empty((L, B, H), dtype=dt)
        c_n = np.empty((L, B, H), dtype=dt) if lstm else None
        out = xv
        for l, cell in enumerate(self.layers):
            state = cell.initial_state(B, backend=be, dtype=dt)
            if arrays:
                state.set(arrays[0][l], arrays[1][l] if lstm else None)
            out = cell.sequence(out, state) if T else np.empty((0, B, H), dtype=dt)
            h_n[l] = state.h
            if lstm:
                c_n[l] = state.c
        if single:
            out, h_n = out[:, 0], h_n[:, 0]
            c_n = None if c_n is None else c_n[:, 0]
        elif self.batch_first:
            out = np.ascontiguousarray(out.transpose(1, 0, 2))
        return (out, (h_n, c_n)) if lstm else (out, h_n)

    def __repr__(self) -> str:
        return (f"clnet.{type(self).__name__}({self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}, bias={self.bias}, batch_first={self.batch_first})")


class LSTM(_Stacked):
    """Stacked LSTM layers with ``torch.nn.LSTM``'s state_dict names and call:
    ``out, (h_n, c_n) = lstm(xs, (h0, c0))``, xs ``(T, B, I)`` (or batch_first)."""

    _cell_class = LSTMCell
    _torch_name = "LSTM"


class GRU(_Stacked):
    """Stacked GRU layers like ``torch.nn.GRU``: ``out, h_n = gru(xs, h0)``."""

    _cell_class = GRUCell
    _torch_name = "GRU"


# ---------------------------------------------------------------------------------------
# Backpropagation through time: argument checks shared by cells and stacked layers
# ---------------------------------------------------------------------------------------
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


def _backward_sequence(model, layers, stacked, xs, initial_state, resets, grad_hs, grad_final, truncate,
                       burn_in, mask, batch_first, backend, dtype):
    lstm = model.kind == "lstm"
    L, H = len(layers), model.hidden_size
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
    be = get_backend(backend) if (backend is not None or not given) else given[0].backend
    dt = be.check_dtype(dtype if (dtype is not None or not given) else given[0].dtype)
    if not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first must be True or False, got {batch_first!r}")
    xv = layers[0]._inputs(xs, "xs", dt, (3,))
    layout = "(B, T, {})" if batch_first else "(T, B, {})"
    if batch_first:
        xv = np.ascontiguousarray(xv.transpose(1, 0, 2))
    T, B = xv.shape[:2]
    if T == 0:
        raise ValueError("xs must hold at least one time step")
    state_shape = (L, B, H) if stacked else (B, H)
    for state in given:
        if state.batch_size != B:
            raise ValueError(f"xs has batch size {B} but initial_state holds {state.batch_size} environments")
    pair = "h0, c0" if lstm else "h0"
    if not given:
        h0, c0 = _state_arrays(initial_state, "initial_state", lstm, state_shape, dt, pair)
        if lstm and initial_state is not None and (h0 is None or c0 is None):
            raise ValueError("initial_state of an LSTM needs both h0 and c0 (or None for zeros)")
        h0 = np.zeros((L, B, H), dt) if h0 is None else h0.reshape(L, B, H)
        c0 = (np.zeros((L, B, H), dt) if c0 is None else c0.reshape(L, B, H)) if lstm else None
    tb = (B, T) if batch_first else (T, B)
    keeps = _reset_keep(resets, "resets", tb, dt)
    if keeps is not None and batch_first:
        keeps = np.ascontiguousarray(keeps.T)
    if grad_hs is None:
        dhs = np.zeros((T, B, H), dt)
    else:
        dhs = as_real_array(grad_hs, "grad_hs", dt)
        want = (B, T, H) if batch_first else (T, B, H)
        if dhs.shape != want:
            raise ValueError(f"grad_hs must have the shape of the outputs, {layout.format('hidden_size')} = "
                             f"{want}, got shape {dhs.shape}")
        if batch_first:
            dhs = dhs.transpose(1, 0, 2)
        # a copy only where it will be changed (the caller's array never is)
        changed = batch_first or mask is not None or burn_in != 0
        dhs = np.array(dhs, dtype=dt, order="C") if changed else np.ascontiguousarray(dhs, dtype=dt)
    dhT, dcT = _state_arrays(grad_final, "grad_final", lstm, state_shape, dt, "dh_T, dc_T")
    dhT = None if dhT is None else dhT.reshape(L, B, H)
    dcT = None if dcT is None else dcT.reshape(L, B, H)
    if truncate is not None:
        truncate = as_int(truncate, "truncate", minimum=1)
    burn_in = as_int(burn_in, "burn_in", minimum=0)
    if burn_in >= T:
        raise ValueError(f"burn_in must be smaller than the number of time steps T = {T} (at least one "
                         f"step must carry gradient), got {burn_in}")
    if mask is not None:
        m = host_array(mask)
        if m.dtype.kind not in "biuf":
            raise TypeError(f"mask must be an array of 0/1, booleans or weights, got dtype {m.dtype}")
        if m.shape != tb:
            raise ValueError(f"mask must have shape {'(B, T)' if batch_first else '(T, B)'} = {tb} (one "
                             f"weight per environment and time step), got shape {m.shape}")
        m = m.astype(dt)
        dhs *= (m.T if batch_first else m)[:, :, None]
    if burn_in:
        dhs[:burn_in] = 0
    # gkeep[t, b] = 0 where no gradient flows into the state before step t.
    gkeep = np.ones((T, B), dt) if keeps is None else keeps.copy()
    if truncate is not None:
        gkeep[truncate::truncate] = 0
    if burn_in:
        gkeep[burn_in] = 0
    if given:  # read only now that every argument is known to be good
        h0 = np.stack([s.h for s in given]).astype(dt)
        c0 = np.stack([s.c for s in given]).astype(dt) if lstm else None
    weights = [cell._weights(be, dt) for cell in layers]
    res = be.op("rnn_backward")(weights, xv, h0, c0, keeps, gkeep, dhs, dhT, dcT, burn_in)
    grads: Dict[str, np.ndarray] = {}
    for l, (cell, g) in enumerate(zip(layers, res["layers"])):
        suffix = f"_l{l}" if stacked else ""
        for name in _NAMES:
            if name in cell._shapes():
                grads[name + suffix] = g[name]
    dx = res["x"]
    grads["x"] = np.ascontiguousarray(dx.transpose(1, 0, 2)) if batch_first else dx
    grads["h0"] = res["h0"] if stacked else res["h0"][0]
    if lstm:
        grads["c0"] = res["c0"] if stacked else res["c0"][0]
    return grads


# ---------------------------------------------------------------------------------------
# OpenCL implementation (mixed into every OpenCL backend, see clnet/families.py)
# ---------------------------------------------------------------------------------------
# Where a sequence's input projection x @ W_ih^T happens: "fused" into each step's launch
# (the step kernel's reduction runs over I + H), or "batched" for many steps at once by one
# large product per chunk before the recurrence (what oneDNN does), or "auto": fused on CPU
# devices, batched elsewhere. Measured on PoCL (2 cores, AVX-512), fused is as fast at
# B=16 and faster from B=64 on (1.2x at B=64, 1.15x at B=256, 1.3x at B=1024): the batched
# product runs near peak, but writing and re-reading its gates costs more than it saves,
# while a longer reduction per launch amortises each step's fixed costs.
SEQUENCE_PROJECTION = "auto"
# A sequence of at most this many environments runs all its steps in ONE launch on CPU
# devices (a work-group per row tile, a barrier between steps). Measured on PoCL: 2x faster
# than a launch per step at B=16..64, about as fast at B=256 (H=256) and slower past that,
# as each work-group re-reads the weights every step.
ONE_LAUNCH_BATCH = 128
# Batched projection: the gates of a long sequence in chunks of at most this many bytes.
GATE_BUDGET = 64 * 2**20
# Rows of the register tile of one work-item (RM rows x G gates vectors, within the 32
# vector registers of AVX-512), measured on PoCL: the input projection runs best with
# the largest tile; the step kernel too, except at small batch where more work-items
# spread better over the cores.
_PROJECT_ROWS = {"lstm": 6, "gru": 8, "rnn_tanh": 12, "rnn_relu": 12}
_STEP_ROWS = {"lstm": (4, 6), "gru": (4, 6), "rnn_tanh": (8, 12), "rnn_relu": (8, 12)}
_SMALL_BATCH = 64


def _step_rows(kind: str, batch: int) -> int:
    small, large = _STEP_ROWS[kind]
    return small if batch < _SMALL_BATCH else large
# One work-item per work-group: each work-item is already a vectorised register tile, and
# PoCL runs larger groups no faster (measured) while the default choice is up to 1.7x slower.
_LOCAL = (1, 1)
_SCALARS = {
    "project": [np.int32, np.int32, np.int32, None, np.int64, None, None, None],
    "recur": [np.int32, np.int32, None, None, np.int64, None, np.int64, None, np.int64, None,
              None, np.int64, np.int32, None, None, None, np.int64, np.int32, None, None],
    "run": [np.int32, np.int32, np.int32, None, None, None, None, None, np.int32, None, None, None,
            np.int32, None, None],
}
_KIND_DEFINE = {"lstm": "CLNET_LSTM", "gru": "CLNET_GRU", "rnn_tanh": "CLNET_RNN_TANH",
                "rnn_relu": "CLNET_RNN_RELU"}


def _vector_width(dtype) -> int:
    return 8 if np.dtype(dtype) == np.float64 else 16


def _interleave(w: np.ndarray, gates: int, hidden: int, hp: int, vw: int) -> np.ndarray:
    """(G*H, K) gate-stacked weights -> (K, G*Hp) with columns (block, gate, lane)."""
    K = w.shape[1]
    padded = np.zeros((gates, hp, K))
    padded[:, :hidden] = w.reshape(gates, hidden, K)
    return np.ascontiguousarray(
        padded.reshape(gates, hp // vw, vw, K).transpose(3, 1, 0, 2).reshape(K, gates * hp))


class RNNKernels:
    def rnn_prepare(self, kind, params, hidden, dtype):
        dt = np.dtype(dtype)
        G, H, vw = _GATES[kind], hidden, _vector_width(dt)
        hp = -(-H // vw) * vw
        zeros = np.zeros(G * H)
        b_ih = params.get("bias_ih", zeros)
        b_hh = params.get("bias_hh", zeros)
        # Recurrent biases that are simply added are folded into the input projection;
        # the GRU's b_hn sits inside r * (W_hn h + b_hn) and stays separate.
        b_x = b_ih + b_hh
        b_hn = np.zeros(hp)
        if kind == "gru":
            b_x = b_ih + np.concatenate([b_hh[:2 * H], np.zeros(H)])
            b_hn[:H] = b_hh[2 * H:]
        w_hh = np.zeros((G * H, hp))
        w_hh[:, :H] = params["weight_hh"]
        with self.lock:
            up = self.to_device
            return SimpleNamespace(
                kind=kind, hidden=H, hp=hp, gates=G, inputs=params["weight_ih"].shape[1], dtype=dt,
                kernels={},
                w_ih=up(_interleave(params["weight_ih"], G, H, hp, vw).astype(dt), "weight_ih"),
                w_hh=up(_interleave(w_hh, G, H, hp, vw).astype(dt), "weight_hh"),
                b_x=up(_interleave(b_x[:, None], G, H, hp, vw).astype(dt), "biases"),
                b_hn=up(b_hn.astype(dt), "biases"), zeros=up(np.zeros(hp, dtype=dt), "zeros"),
                params=params, back=None)

    def _rnn_kernel(self, w, name: str, rows: int):
        """The project or recur kernel of ``w``'s cell kind with an RM = ``rows`` tile."""
        knl = w.kernels.get((name, rows))
        if knl is None:
            defines = (f"CLNET_GATES={w.gates}", f"CLNET_RM={rows}", _KIND_DEFINE[w.kind])
            knl = self.kernel("rnn", f"clnet_rnn_{name}", w.dtype, defines)
            # Typed scalars: pyopencl then sets all arguments in one fast call (generic
            # argument conversion costs tens of microseconds per launch).
            knl.set_scalar_arg_dtypes(_SCALARS[name])
            w.kernels[(name, rows)] = knl
        return knl

    def rnn_state_new(self, kind, batch, hidden, dtype):
        import pyopencl as cl

        dt = np.dtype(dtype)
        vw = _vector_width(dt)
        hp = -(-hidden // vw) * vw
        zeros = np.zeros((batch, hp), dtype=dt)
        self.check_alloc(zeros.nbytes, "hidden state")
        flags = cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR
        with self.lock:
            bufs = [cl.Buffer(self.context, flags, hostbuf=zeros) for _ in range(2)]
            c = cl.Buffer(self.context, flags, hostbuf=zeros) if kind == "lstm" else None
        # h is double-buffered: a step reads one buffer and writes the other.
        return SimpleNamespace(kind=kind, batch=batch, hidden=hidden, hp=hp, dtype=dt, h_bufs=bufs, cur=0,
                               c=c, scratch={})

    def _rnn_scratch(self, storage, name, nbytes):
        buf = storage.scratch.get(name)
        if buf is None or buf.size < nbytes:
            buf = self.empty(nbytes, name)
            storage.scratch[name] = buf
        return buf

    def rnn_state_read(self, storage, which):
        import pyopencl as cl

        host = np.empty((storage.batch, storage.hp), dtype=storage.dtype)
        with self.lock:
            buf = storage.h_bufs[storage.cur] if which == "h" else storage.c
            cl.enqueue_copy(self.queue, host, buf, is_blocking=True)
        return host if storage.hp == storage.hidden else np.ascontiguousarray(host[:, :storage.hidden])

    def rnn_state_write(self, storage, h, c):
        import pyopencl as cl

        def padded(a):
            out = np.zeros((storage.batch, storage.hp), dtype=storage.dtype)
            out[:, :storage.hidden] = a
            return out

        with self.lock:
            cl.enqueue_copy(self.queue, storage.h_bufs[storage.cur], padded(h), is_blocking=True)
            if c is not None:
                cl.enqueue_copy(self.queue, storage.c, padded(c), is_blocking=True)

    def rnn_state_reset(self, storage, keep):
        width = storage.hp
        n = storage.batch * width
        with self.lock:
            knl = self.kernel("rnn", "clnet_rnn_zero_rows", storage.dtype)
            d_keep = self.to_device(keep.astype(storage.dtype), "reset mask")
            for buf in [storage.h_bufs[storage.cur]] + ([storage.c] if storage.c is not None else []):
                knl(self.queue, (n,), None, np.int32(storage.batch), np.int32(width), buf, d_keep)
            self.queue.finish()

    def rnn_step(self, w, s, x, keep):
        """One launch: the step kernel projects x itself; only x (and the mask) go up and h
        comes down. Buffers are reused between steps and h is double-buffered."""
        import pyopencl as cl

        B, I = x.shape
        item = s.dtype.itemsize
        with self.lock:
            d_x = self._rnn_scratch(s, "x", B * I * item)
            cl.enqueue_copy(self.queue, d_x, x, is_blocking=True)
            d_keep = w.zeros
            if keep is not None:
                d_keep = self._rnn_scratch(s, "keep", B * item)
                cl.enqueue_copy(self.queue, d_keep, keep, is_blocking=True)
            rows = _step_rows(w.kind, B)
            recur = self._rnn_kernel(w, "recur", rows)
            grid = (-(-B // rows), s.hp // _vector_width(s.dtype))
            recur(self.queue, grid, _LOCAL, B, s.hp, w.w_hh, w.zeros, 0,
                  s.h_bufs[s.cur], 0, s.h_bufs[1 - s.cur], 0, s.c if s.c is not None else w.zeros,
                  d_keep, 0, int(keep is not None), w.b_hn, w.zeros, d_x, 0, I, w.w_ih, w.b_x)
            s.cur = 1 - s.cur
            host = np.empty((B, s.hp), dtype=s.dtype)
            cl.enqueue_copy(self.queue, host, s.h_bufs[s.cur], is_blocking=True)
        return host if s.hp == s.hidden else np.ascontiguousarray(host[:, :s.hidden])

    def rnn_sequence(self, w, s, xs, keeps):
        """T steps without a host round trip, then one read-back of every h.

        Small batches on CPU devices run all T steps in one launch (:data:`ONE_LAUNCH_BATCH`);
        otherwise each step is one launch, enqueued back to back. Where the inputs are
        projected is chosen by :data:`SEQUENCE_PROJECTION`: inside each step ("fused"), or
        for many steps at once by one large product per chunk ("batched", what oneDNN does).
        """
        import pyopencl as cl

        T, B, I = xs.shape
        dt, hp = s.dtype, s.hp
        item = dt.itemsize
        rows = _step_rows(w.kind, B)
        blocks = hp // _vector_width(dt)
        grid = (-(-B // rows), blocks)
        fused = _fused_projection(self)
        with self.lock:
            d_x = self.to_device(xs, "inputs")
            d_keep = w.zeros if keeps is None else self.to_device(keeps, "reset masks")
            d_out = self.empty(T * B * hp * item, "hidden states of the sequence")
            c_arg = s.c if s.c is not None else w.zeros
            run = self._rnn_kernel(w, "run", rows) if fused and B <= ONE_LAUNCH_BATCH else None
            if run is not None and blocks <= run.get_work_group_info(
                    cl.kernel_work_group_info.WORK_GROUP_SIZE, self.device):
                run(self.queue, grid, (1, blocks), B, hp, T, w.w_hh, s.h_bufs[s.cur], d_out, c_arg,
                    d_keep, int(keeps is not None), w.b_hn, w.zeros, d_x, I, w.w_ih, w.b_x)
            else:
                self._rnn_launch_steps(w, s, d_x, d_keep, keeps is not None, d_out, T, B, I, rows, fused)
            cl.enqueue_copy(self.queue, s.h_bufs[s.cur], d_out, byte_count=B * hp * item,
                            src_offset=(T - 1) * B * hp * item)
            host = np.empty((T, B, hp), dtype=dt)
            cl.enqueue_copy(self.queue, host, d_out, is_blocking=True)
        return host if hp == s.hidden else np.ascontiguousarray(host[:, :, :s.hidden])

    def _rnn_launch_steps(self, w, s, d_x, d_keep, has_keep, d_out, T, B, I, rows, fused):
        """One launch per step (and, batched, one projection per chunk of steps)."""
        hp = s.hp
        item = s.dtype.itemsize
        nc = w.gates * hp
        blocks = hp // _vector_width(s.dtype)
        grid = (-(-B // rows), blocks)
        c_arg = s.c if s.c is not None else w.zeros
        recur = self._rnn_kernel(w, "recur", rows)
        chunk = T if fused else max(1, min(T, GATE_BUDGET // (B * nc * item)))
        if not fused:
            project = self._rnn_kernel(w, "project", _PROJECT_ROWS[w.kind])
            d_gx = self.empty(chunk * B * nc * item, "projected gates")
        h_prev, prev_off = s.h_bufs[s.cur], 0
        for t0 in range(0, T, chunk):
            m = min(chunk, T - t0) * B
            if not fused:
                project(self.queue, (-(-m // _PROJECT_ROWS[w.kind]), blocks), _LOCAL,
                        m, I, hp, d_x, t0 * B * I, w.w_ih, w.b_x, d_gx)
            for t in range(t0, t0 + m // B):
                if fused:
                    x_args = (w.zeros, 0, d_x, t * B * I, I, w.w_ih, w.b_x)
                else:
                    x_args = (d_gx, (t - t0) * B * nc, w.zeros, 0, 0, w.zeros, w.zeros)
                recur(self.queue, grid, _LOCAL, B, hp, w.w_hh, *x_args[:2], h_prev, prev_off,
                      d_out, t * B * hp, c_arg, d_keep, t * B, int(has_keep), w.b_hn,
                      w.zeros, *x_args[2:])
                h_prev, prev_off = d_out, t * B * hp


def _pad_to(n: int, vw: int) -> int:
    return -(-n // vw) * vw


def _uninterleave(a: np.ndarray, gates: int, hidden: int, vw: int, axis: int) -> np.ndarray:
    """Inverse of :func:`_interleave` along ``axis`` (G * Hp interleaved -> G * H stacked)."""
    a = np.moveaxis(a, axis, 0)
    hp = a.shape[0] // gates
    out = a.reshape(hp // vw, gates, vw, -1).transpose(1, 0, 2, 3).reshape(gates, hp, -1)[:, :hidden]
    return np.moveaxis(out.reshape((gates * hidden,) + a.shape[1:]), 0, axis)


_SLOTS = {"lstm": 5, "gru": 4, "rnn_tanh": 0, "rnn_relu": 0}


_I32, _I64 = np.int32, np.int64
_BPTT_SCALARS = {
    "forward": [_I32, _I32, _I32, _I32, None, None, None, None, None, _I32, None, None, None, _I64, _I32, None,
                None, None],
    "backward": [_I32] * 6 + [None] * 5 + [_I32, None, None, _I64] + [None] * 6,
    "gemm": [_I32, _I32, _I32, None, _I64, _I64, _I64, None, _I64, _I64, _I32, None, _I64, _I64, None, _I64, _I64],
}


def _bptt_rows(kind: str, batch: int, units: int) -> int:
    """Rows per work-item of the BPTT passes: of the step kernel's two tile heights, the one
    whose row tiles spread most evenly over the compute units (larger on a tie). A
    one-launch pass runs one work-group per row tile from start to end, so an uneven split
    leaves a core idle: at B=64 on 2 cores, 16 tiles of 4 rows ran the forward 12% faster
    than 11 tiles of 6."""
    def balance(rows):
        tiles = -(-batch // rows)
        return tiles / (-(-tiles // units) * units)
    return max(reversed(_STEP_ROWS[kind]), key=balance)


def _backward_blocks(rows: int, blocks: int) -> int:
    """Unit blocks per work-item of the backward step: as many as divide ``blocks`` while
    the rows x blocks accumulators stay within 24 of AVX-512's 32 vector registers."""
    return next(bn for bn in (4, 2, 1) if blocks % bn == 0 and rows * bn <= 24)
# Register tiles of the gradient products (rows x vectors of VW, see clnet_bptt_gemm),
# measured on PoCL (AVX-512, 2 cores) at T=64, B=64, I=32, H=128: the weight gradients
# run best with 12 x 2 (1.9 ms against 2.7 ms for 16 x 1 and 3.2 ms for 4 x 4: 24 FMAs per
# 14 loads), dx = dG @ W_ih with 8 x 2.
_GEMM_TILE = {"weights": (12, 2), "inputs": (8, 2)}


class BPTTKernels:
    """Backpropagation through time on OpenCL (kernels/bptt.cl), for ``backward_sequence``."""

    def _bptt_back(self, w):
        """W_ih and W_hh with interleaved gate rows for the backward, made once per weights."""
        if w.back is None:
            vw = _vector_width(w.dtype)
            ip = _pad_to(w.inputs, vw)
            w_ih = np.zeros((w.gates * w.hidden, ip))
            w_ih[:, :w.inputs] = w.params["weight_ih"]
            w_hh = np.zeros((w.gates * w.hidden, w.hp))
            w_hh[:, :w.hidden] = w.params["weight_hh"]
            fwd = _interleave(w_ih, w.gates, w.hidden, w.hp, vw)  # (Ip, G*Hp), padded input rows zero
            with self.lock:
                w.back = SimpleNamespace(
                    ip=ip, w_ih=self.to_device(fwd.astype(w.dtype), "weight_ih"),
                    w_ih_t=self.to_device(np.ascontiguousarray(fwd.T).astype(w.dtype), "weight_ih"),
                    w_hh_t=self.to_device(np.ascontiguousarray(
                        _interleave(w_hh, w.gates, w.hidden, w.hp, vw).T).astype(w.dtype), "weight_hh"))
        return w.back

    def _bptt_kernel(self, w, name: str, rows: int, tile=(1, 1), blocks: int = 1):
        gm, gn = tile
        defines = (f"CLNET_GATES={w.gates}", f"CLNET_RM={rows}", _KIND_DEFINE[w.kind],
                   f"CLNET_SLOTS={_SLOTS[w.kind]}", f"CLNET_BN={blocks}", f"CLNET_GM={gm}", f"CLNET_GN={gn}")
        knl = self.kernel("bptt", f"clnet_bptt_{name}", w.dtype, defines)
        typed = self.__dict__.setdefault("_bptt_typed", set())
        if id(knl) not in typed:  # typed scalars: one fast call sets all arguments (see _SCALARS)
            knl.set_scalar_arg_dtypes(_BPTT_SCALARS[name])
            typed.add(id(knl))
        return knl

    def _bptt_gemm(self, w, tile, M, N, K, A, a_off, sam, sak, Bm, b_off, ldb, C, c_off, ldc, right=None):
        """C = A @ Bm (see clnet_bptt_gemm); ``right`` = (B2, offset, ldb2, N2) appends the
        columns of a second matrix to Bm's N."""
        gm, gn = _GEMM_TILE[tile]
        vw = _vector_width(w.dtype)
        knl = self._bptt_kernel(w, "gemm", 1, (gm, gn))
        B2, b2_off, ldb2, N2 = right if right is not None else (Bm, b_off, ldb, 0)
        grid = (-(-M // gm), -(-((N + N2) // vw) // gn))
        knl(self.queue, grid, _LOCAL, np.int32(M), np.int32(N + N2), np.int32(K), A, np.int64(a_off),
            np.int64(sam), np.int64(sak), Bm, np.int64(b_off), np.int64(ldb), np.int32(N), B2, np.int64(b2_off),
            np.int64(ldb2), C, np.int64(c_off), np.int64(ldc))

    def _bptt_upload(self, name, array, what, keep_alive):
        """``array`` copied into the workspace ``name`` without waiting; ``keep_alive`` holds
        the host array until the caller's final ``queue.finish()``."""
        import pyopencl as cl

        buf = self.workspace(name, array.nbytes, what)
        keep_alive.append(array)
        cl.enqueue_copy(self.queue, buf, array, is_blocking=False)
        return buf

    def _bptt_rw(self, array, what):
        """A new read-write device buffer holding a copy of ``array``."""
        import pyopencl as cl

        self.check_alloc(array.nbytes, what)
        return cl.Buffer(self.context, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR,
                         hostbuf=np.ascontiguousarray(array))

    def rnn_backward(self, layers, xs, h0, c0, keeps, gkeep, dhs, dhT, dcT, burn_in):
        import pyopencl as cl

        T, B, I = xs.shape
        L = len(layers)
        dt = layers[0].dtype
        vw = _vector_width(dt)
        item = dt.itemsize
        H, hp = layers[0].hidden, layers[0].hp
        lstm = layers[0].kind == "lstm"
        gru = layers[0].kind == "gru"

        def padded(a, width):
            if a.shape[-1] == width:
                return np.ascontiguousarray(a, dtype=dt)
            out = np.zeros(a.shape[:-1] + (width,), dtype=dt)
            out[..., :a.shape[-1]] = a
            return out

        backs = [self._bptt_back(w) for w in layers]
        rows = _bptt_rows(layers[0].kind, B, int(self.device.max_compute_units))
        blocks = hp // vw
        grid = (-(-B // rows), blocks)
        k0 = burn_in * B
        K = (T - burn_in) * B
        with self.lock:
            up = self.to_device
            d_keep = layers[0].zeros if keeps is None else up(keeps, "reset masks")
            d_gkeep = up(gkeep, "gradient masks")
            # Large buffers are workspaces kept between calls: allocating and first touching
            # tens of MiB costs more on CPU devices than some of the kernels.
            ws = self.workspace
            keep_alive, reads = [], []  # host arrays of transfers not waited for
            d_x = self._bptt_upload("bptt.x", padded(xs, backs[0].ip), "inputs", keep_alive)
            bn = _backward_blocks(rows, blocks)
            fwd = self._bptt_kernel(layers[0], "forward", rows)
            bwd = self._bptt_kernel(layers[0], "backward", rows, blocks=bn)
            one_launch = (bool(self.device.type & cl.device_type.CPU) and B <= ONE_LAUNCH_BATCH
                          and blocks <= fwd.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE,
                                                                self.device)
                          and blocks // bn <= bwd.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE,
                                                                      self.device))
            local = (1, blocks) if one_launch else _LOCAL
            bgrid, blocal = (grid[0], blocks // bn), ((1, blocks // bn) if one_launch else _LOCAL)
            # 1. forward through every layer, saving
            saved = []
            x_buf, x_base, x_width = d_x, 0, backs[0].ip
            for l, (w, back) in enumerate(zip(layers, backs)):
                slots = _SLOTS[w.kind]
                d_h0 = up(padded(h0[l], hp), "initial state")
                d_hs = ws(f"bptt.hs{l}", (T + 1) * B * hp * item, "hidden states of the sequence")
                d_c0 = up(padded(c0[l], hp), "initial cell state") if lstm else w.zeros
                d_c = self.empty(B * hp * item, "cell state") if lstm else w.zeros
                if lstm:
                    cl.enqueue_copy(self.queue, d_c, d_c0, byte_count=B * hp * item)
                d_save = ws(f"bptt.save{l}", T * B * slots * hp * item, "saved activations")
                steps = [(0, T)] if one_launch else [(t, t + 1) for t in range(T)]
                for t0, t1 in steps:
                    fwd(self.queue, grid, local, np.int32(B), np.int32(hp), np.int32(t0), np.int32(t1),
                        w.w_hh, d_h0, d_hs, d_c, d_keep, np.int32(keeps is not None), w.b_hn, w.zeros,
                        x_buf, np.int64(x_base), np.int32(x_width), back.w_ih, w.b_x, d_save)
                saved.append((d_hs, d_c0, d_save, x_buf, x_base, x_width))
                x_buf, x_base, x_width = d_hs, B * hp, hp
            # 2. backward, top layer first; a layer's dx is the gradient of the outputs below
            nc = layers[0].gates * hp
            d_dhs, dhs_base = self._bptt_upload("bptt.dhs", padded(dhs, hp), "output gradients", keep_alive), 0
            results = [None] * L
            dh0 = np.zeros((L, B, H), dtype=dt)
            dc0 = np.zeros((L, B, H), dtype=dt) if lstm else None
            for l in reversed(range(L)):
                w, back = layers[l], backs[l]
                d_hs, d_c0, d_save, x_buf, x_base, x_width = saved[l]
                d_dhT = up(padded(dhT[l], hp) if dhT is not None else np.zeros((B, hp), dt),
                           "final state gradient")
                carry = padded(dcT[l], hp) if (lstm and dcT is not None) else np.zeros((B, hp), dt)
                d_carry = self._bptt_rw(carry, "carried gradient")
                d_dG = ws("bptt.dG", T * B * nc * item, "gate gradients")
                d_dGx = ws("bptt.dGx", T * B * nc * item, "input gate gradients") if gru else d_dG
                d_dh0 = self.empty(B * hp * item, "initial state gradient")
                bias_cols = 2 * nc if gru else nc
                bias_sums = np.zeros((bgrid[0], bias_cols), dt)
                d_bias = self._bptt_rw(bias_sums, "bias gradients")
                first = -1 if burn_in == 0 else burn_in
                steps = [(first, T)] if one_launch else [(t, t + 1) for t in range(T - 1, first - 1, -1)]
                for t0, t1 in steps:
                    bwd(self.queue, bgrid, blocal, np.int32(B), np.int32(hp), np.int32(T), np.int32(t0),
                        np.int32(t1), np.int32(burn_in), back.w_hh_t, d_hs, d_c0, d_save, d_keep,
                        np.int32(keeps is not None), d_gkeep, d_dhs, np.int64(dhs_base), d_dhT, d_carry, d_dG,
                        d_dGx, d_dh0, d_bias)
                d_w = ws("bptt.w", nc * (x_width + hp) * item, "weight gradients")
                gemm = self._bptt_gemm
                if gru:  # dW_ih and dW_hh come from different gate gradients
                    gemm(w, "weights", nc, x_width, K, d_dGx, k0 * nc, 1, nc, x_buf, x_base + k0 * x_width,
                         x_width, d_w, 0, x_width + hp)
                    gemm(w, "weights", nc, hp, K, d_dG, k0 * nc, 1, nc, d_hs, k0 * hp, hp, d_w, x_width,
                         x_width + hp)
                else:
                    gemm(w, "weights", nc, x_width, K, d_dG, k0 * nc, 1, nc, x_buf, x_base + k0 * x_width,
                         x_width, d_w, 0, x_width + hp, right=(d_hs, k0 * hp, hp, hp))
                d_dx = ws(f"bptt.dx{l % 2}", T * B * x_width * item, "input gradients")
                gemm(w, "inputs", K, x_width, nc, d_dGx, k0 * nc, nc, 1, back.w_ih_t, 0, x_width, d_dx,
                     k0 * x_width, x_width)
                # Read back without waiting (the in-order queue finishes each read before the
                # next layer reuses the workspaces); one finish at the end.
                host = np.empty((nc, x_width + hp), dtype=dt)
                cl.enqueue_copy(self.queue, host, d_w, is_blocking=False)
                cl.enqueue_copy(self.queue, bias_sums, d_bias, is_blocking=False)
                states = None
                if burn_in == 0:
                    states = (np.empty((B, hp), dtype=dt), np.empty((B, hp), dtype=dt) if lstm else None)
                    cl.enqueue_copy(self.queue, states[0], d_dh0, is_blocking=False)
                    if lstm:
                        cl.enqueue_copy(self.queue, states[1], d_carry, is_blocking=False)
                reads.append((l, w, x_width, host, bias_sums, states))
                d_dhs, dhs_base = d_dx, 0
            dx = np.zeros((T, B, backs[0].ip), dtype=dt)
            cl.enqueue_copy(self.queue, dx[burn_in:], d_dhs, src_offset=k0 * backs[0].ip * item,
                            is_blocking=False)
            self.queue.finish()
        for l, w, x_width, host, bias_sums, states in reads:
            G = w.gates
            both = _uninterleave(host, G, H, vw, 0)
            sums = bias_sums.sum(axis=0)
            b_hh = sums[:nc]
            b_ih = b_hh
            if gru:  # the input side differs in the n gate only
                b_ih = b_hh.reshape(-1, G, vw).copy()
                b_ih[:, 2] = sums[nc:].reshape(-1, G, vw)[:, 2]
                b_ih = b_ih.reshape(-1)
            results[l] = {
                "weight_ih": np.ascontiguousarray(both[:, :w.inputs]),
                "weight_hh": np.ascontiguousarray(both[:, x_width:x_width + H]),
                "bias_ih": _uninterleave(b_ih, G, H, vw, 0),
                "bias_hh": _uninterleave(b_hh, G, H, vw, 0)}
            if states is not None:
                dh0[l] = states[0][:, :H]
                if lstm:
                    dc0[l] = states[1][:, :H]
        return {"layers": results, "x": np.ascontiguousarray(dx[:, :, :I]), "h0": dh0, "c0": dc0}


def _fused_projection(runtime) -> bool:
    if SEQUENCE_PROJECTION == "auto":
        import pyopencl as cl

        return bool(runtime.device.type & cl.device_type.CPU)
    return SEQUENCE_PROJECTION == "fused"
