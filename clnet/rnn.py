"""Recurrent cells for reinforcement learning: LSTM, GRU and Elman RNN steps with
device-resident state, episode resets and fused sequences.

Public API: :class:`LSTMCell`, :class:`GRUCell`, :class:`RNNCell` (one layer, stepped
or run over a sequence), :class:`LSTM` and :class:`GRU` (stacked layers called like
``torch.nn.LSTM``), and :class:`RecurrentState` (h and c kept by a backend, on the
device for OpenCL). Semantics and weight layouts are PyTorch's: see
``docs/SEMANTICS.md``, recurrent cells.

Backpropagation through time over a stored rollout: ``backward_sequence`` on every cell
and stacked model (gradients of every weight, the inputs and the initial state; resets,
truncation windows, burn-in and loss masks); its checks live in :mod:`clnet.bptt`.

Every public method validates all of its arguments before any device work, so a bad
call raises and leaves the state untouched. The operations are the RNN and BPTT families
of clnet/contract.py: the NumPy reference is ``clnet_fallback.rnn`` / ``.bptt``, the
OpenCL implementation ``clnet.opencl.rnn`` / ``.bptt``.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from ._validate import as_int, as_real_array
from .backend import Backend, BackendLike, call, get_backend
from .bptt import RecordedSequence, backward_sequence, record_sequence
from .common.cache import DeviceCache
from .state import RecurrentState, exclusive, reset_keep

__all__ = ["LSTMCell", "GRUCell", "RNNCell", "LSTM", "GRU", "RecurrentState"]

_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


# ---------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------
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
        # The backends' forms of the weights (rnn_prepare), per backend and dtype.
        self._device_copies = DeviceCache()
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
        self._device_copies.clear()

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
        """The backend's prepared weights for dtype ``dt``, made once."""
        return self._device_copies.get(be, dt, lambda: call(
            be, "rnn_prepare", self.kind, dict(self._params), self.hidden_size, dt, stateless=False))

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
            # Specs, not objects: a state unpickled or made through another spec string
            # of the same device is on the backend requested.
            if be.spec != state.backend.spec:
                raise ValueError(f"state lives on backend {state.backend.spec!r} but backend {be.spec!r} "
                                 f"was requested; make the state with initial_state(..., backend=...)")
        return state.backend

    # -- device-resident stepping -------------------------------------------------------------
    def initial_state(self, batch_size, *, backend: BackendLike = None, dtype=None) -> RecurrentState:
        """A zero state for ``batch_size`` environments, kept by the backend (on the device)."""
        B = as_int(batch_size, "batch_size", minimum=1)
        be = get_backend(backend)
        dt = be.check_dtype(dtype)
        storage = call(be, "rnn_state_new", self.kind, B, self.hidden_size, dt, stateless=False)
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
        keep = reset_keep(reset, "reset", (state.batch_size,), dt)
        weights = self._weights(be, dt)
        with state._lock:
            return call(be, "rnn_step", weights, state._storage, xv, keep, stateless=False)

    def sequence(self, xs, state: RecurrentState, resets=None, *, batch_first: bool = False,
                 backend: BackendLike = None) -> np.ndarray:
        """Run T steps in one call and return every h: ``(T, B, hidden_size)``.

        ``xs`` is ``(T, B, input_size)`` (``(B, T, input_size)`` with ``batch_first=True``,
        and the output likewise). ``resets`` is ``(T, B)`` (``(B, T)`` with batch_first)
        with the convention of :meth:`step`: ``resets[t, b] = 1`` zeroes environment b's
        state before step t. The T steps are enqueued without a host round trip (on OpenCL,
        one launch for all steps or one per step, the input projection fused into each step or
        done per chunk of steps: the device's tuned ``rnn`` parameters, see ``python -m clnet
        tune``), and the state is left at the final step.
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
            keeps = reset_keep(resets, "resets", shape, dt)
            if keeps is not None and batch_first:
                keeps = np.ascontiguousarray(keeps.T)
        if T == 0:
            out = np.empty((0, B, self.hidden_size), dtype=dt)
        else:
            weights = self._weights(be, dt)
            with state._lock:
                out = call(be, "rnn_sequence", weights, state._storage, xv, keeps, stateless=False)
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
        return backward_sequence(self, [self], False, xs, initial_state, resets, grad_hs, grad_final,
                                 truncate, burn_in, mask, batch_first, backend, dtype)

    def record_sequence(self, xs, initial_state, resets=None, *, batch_first: bool = False,
                        backend: BackendLike = None, dtype=None) -> RecordedSequence:
        """The forward half of :meth:`backward_sequence`, kept for its backward half.

        Runs ``xs`` from ``initial_state`` with ``resets`` (the arguments and defaults of
        :meth:`backward_sequence`) and returns a :class:`clnet.RecordedSequence`: its ``hs``
        are the outputs ``(T, B, hidden_size)`` (``(B, T, hidden_size)`` with batch_first),
        those :meth:`sequence` would return from that state, and its ``backward(grad_hs,
        grad_final=None, *, truncate=None, burn_in=0, mask=None, inputs=True)`` returns the
        gradients :meth:`backward_sequence` returns, without running the forward a second time
        (the activations stay on the device in between; ``inputs=False`` leaves out ``"x"``,
        the inputs' gradient, and its computation). For a loss computed from the outputs,
        as PPO's from re-evaluated sequences: one forward instead of two per minibatch.
        Nothing changes in the cell or in any state object; ``backward`` runs once, and only
        while the weights are those recorded with.
        """
        return record_sequence(self, [self], False, xs, initial_state, resets, batch_first, backend, dtype)

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
        storage = call(be, "rnn_state_new", self.kind, B, H, dt, stateless=False)
        if arrays:
            call(be, "rnn_state_write", storage, arrays[0], arrays[1] if len(arrays) > 1 else None, stateless=False)
        h = call(be, "rnn_step", self._weights(be, dt), storage, xv, None, stateless=False)
        c = call(be, "rnn_state_read", storage, "c", stateless=False) if self.kind == "lstm" else None
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
        keeps = reset_keep(resets, "resets", (B, T) if bf else (T, B), states[0].dtype)
        if keeps is not None and bf:
            keeps = np.ascontiguousarray(keeps.T)
        if any(s.backend is not states[0].backend or s.dtype != states[0].dtype for s in states):
            out = xv  # layers kept on different backends or dtypes: each runs on its own
            for cell, state in zip(self.layers, states):
                out = cell.sequence(out, state, resets, batch_first=bf)
            return out
        if bf:
            xv = np.ascontiguousarray(xv.transpose(1, 0, 2))
        out = self._run_layers(states[0].backend, states, xv, keeps)
        return np.ascontiguousarray(out.transpose(1, 0, 2)) if bf else out

    def _run_layers(self, be: Backend, states: List[RecurrentState], xv: np.ndarray, keeps) -> np.ndarray:
        """Every layer over the time-major ``xv``; the layers pass their outputs on the device."""
        T, B = xv.shape[:2]
        if T == 0:
            return np.empty((0, B, self.hidden_size), dtype=states[0].dtype)
        weights = [cell._weights(be, states[0].dtype) for cell in self.layers]
        return exclusive(states, lambda: call(be, "rnn_sequence_stacked", weights, [s._storage for s in states],
                                              xv, keeps, stateless=False))

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
        return backward_sequence(self, self.layers, True, xs, initial_state, resets, grad_hs, grad_final,
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
        states = self.initial_state(B, backend=be, dtype=dt)
        if arrays:
            for l, state in enumerate(states):
                state.set(arrays[0][l], arrays[1][l] if lstm else None)
        out = self._run_layers(be, states, xv, None)
        h_n = np.stack([state.h for state in states])
        c_n = np.stack([state.c for state in states]) if lstm else None
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
