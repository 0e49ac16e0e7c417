"""The state a recurrent model keeps between calls, and the per-step masks of a rollout.

:class:`RecurrentState` holds h (and c) of a batch of environments on one backend (on
the device for OpenCL), made by ``cell.initial_state(B)``. :func:`reset_keep` and
:func:`per_step_array` check the reset flags and loss masks that steps, sequences and
backpropagation through time take (docs/SEMANTICS.md, recurrent cells: the reset
convention).
"""
from __future__ import annotations

import threading
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from ._validate import host_array
from .backend import Backend, call, get_backend

__all__ = ["RecurrentState", "reset_keep", "per_step_array"]

T = TypeVar("T")


def per_step_array(value, name: str, shape: Tuple[int, ...], *, holds: str = "0/1 or booleans",
                   each: str = "flag", layout: str = "") -> np.ndarray:
    """``value`` as a host array of numbers or booleans of exactly ``shape``: one ``each``
    per environment (and time step); ``layout`` names the axes in the message, e.g. "(T, B) = "."""
    arr = host_array(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be an array of {holds}, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {layout}{shape} (one {each} per environment"
                         f"{' and time step' if len(shape) == 2 else ''}), got shape {arr.shape}")
    return arr


def reset_keep(mask, name: str, shape: Tuple[int, ...], dtype) -> Optional[np.ndarray]:
    """A reset mask as ``keep = 1 - mask`` in ``dtype``; None when nothing is reset."""
    if mask is None:
        return None
    arr = per_step_array(mask, name, shape)
    if arr.dtype.kind != "b" and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1 (1 = a new episode started before this step)")
    if not arr.any():
        return None
    return (1 - arr.astype(dtype))


class RecurrentState:
    """h (and c for an LSTM) of a batch of environments, kept by one backend.

    Made by ``cell.initial_state(batch_size)``. On an OpenCL backend it lives in device
    buffers and only moves when read (:attr:`h`, :attr:`c`) or written (:meth:`set`).
    It belongs to the cell and backend that made it; other cells refuse it. It never
    shares memory with arrays the caller passes in or gets back.

    Updates are atomic: ``step``, ``sequence`` (every layer of a stacked model), ``set``
    and ``reset`` compute the new h and c apart and publish them together at the end,
    so a call interrupted by Ctrl-C (KeyboardInterrupt) or failing leaves exactly the
    state before the call or exactly the state after it, never h of one and c of the other.


    Threads: calls that change one state are serialised by a lock of the state (two
    threads stepping one state each see the other's steps; none is lost). Which order
    they run in is up to the threads: give each thread its own state to get a defined
    result.

    Pickling stores the cell, the backend's spec, the dtype and h (and c) as host
    arrays; unpickling makes a new state on that backend in the receiving process.
    """

    def __init__(self, cell, backend: Backend, dtype, batch_size: int, storage):
        self._cell = cell
        self._backend = backend
        self._dtype = np.dtype(dtype)
        self._batch = batch_size
        self._storage = storage
        self._lock = threading.Lock()

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
        return call(self._backend, "rnn_state_read", self._storage, "h", stateless=False)

    @property
    def c(self) -> np.ndarray:
        """The LSTM cell state ``(batch_size, hidden_size)``; GRU and RNN cells have none."""
        if self._cell.kind != "lstm":
            raise AttributeError(f"a {type(self._cell).__name__} state has no cell state c (only LSTMs do)")
        return call(self._backend, "rnn_state_read", self._storage, "c", stateless=False)

    def reset(self, mask=None) -> None:
        """Zero h (and c) of the environments where ``mask`` is 1; all of them when omitted."""
        if mask is None:
            mask = np.ones(self._batch, dtype=bool)
        keep = reset_keep(mask, "mask", (self._batch,), self._dtype)
        if keep is not None:
            with self._lock:
                call(self._backend, "rnn_state_reset", self._storage, keep, stateless=False)

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
        with self._lock:
            call(self._backend, "rnn_state_write", self._storage, hv, cv, stateless=False)

    # -- pickling and copying (added for clnet.distributed) -------------------------------------
    def __reduce__(self):
        """Pickled as its cell, dtype, batch size, a host copy of h (and c) and the spec of its
        backend; unpickling makes a new state on the receiving side (see :func:`_restore_state`)."""
        c = self.c if self._cell.kind == "lstm" else None
        return (_restore_state, (self._cell, self._dtype.str, self._batch, self.h, c, None, self._backend.spec))

    def __deepcopy__(self, memo) -> "RecurrentState":
        import copy

        cell = copy.deepcopy(self._cell, memo)
        c = self.c if self._cell.kind == "lstm" else None
        return _restore_state(cell, self._dtype.str, self._batch, self.h, c, backend=self._backend)

    def __repr__(self) -> str:
        return (f"<clnet.RecurrentState of a {type(self._cell).__name__}: batch {self._batch}, "
                f"hidden {self._cell.hidden_size}, {self._dtype.name} on {self._backend.spec}>")


def _restore_state(cell, dtype, batch_size, h, c=None, backend=None, origin=None) -> RecurrentState:
    """A state of ``cell`` holding ``h`` (and ``c``), made on ``backend``; when none is given,
    on the backend a surrounding ``with clnet.use_backend(...)`` names, else on the spec it
    was pickled from (``origin``) when that backend is usable in this process, else on this
    process's own choice (a worker without the sender's device)."""
    from .backend import _context, backends, get_backend

    if backend is None and origin is not None and _context.get() is None:
        if any(info.spec == origin and info.usable for info in backends()):
            backend = origin
    be = get_backend(backend)
    dt = np.dtype(dtype)
    if dt == np.float64 and not be.supports_float64:
        raise TypeError(f"cannot restore a float64 RecurrentState on backend {be.spec!r}: it has no double "
                        f"precision; unpickle it inside clnet.use_backend('numpy') (or another backend with "
                        f"float64), or keep float32 states for this device")
    state = cell.initial_state(batch_size, backend=be, dtype=dt)
    state.set(h, c)
    return state


def exclusive(states: Sequence[RecurrentState], work: Callable[[], T]) -> T:
    """``work()`` run holding the locks of ``states`` (taken in one global order, so that two
    threads locking overlapping lists cannot deadlock).

    Each lock is taken by a plain ``with lock:`` on the lock itself. The interpreter checks
    for signals neither between a C-level ``__enter__`` and the start of the block nor
    inside ``__exit__``, so a KeyboardInterrupt can never leave one taken. (An ExitStack did:
    an interrupt landing between ``lock.__enter__()`` and the stack recording its exit left
    the lock held and hung the next call on that state.)
    """
    locks = [state._lock for state in sorted(set(states), key=id)]
    return _holding(locks, work)


def _holding(locks: List[threading.Lock], work: Callable[[], T]) -> T:
    if not locks:
        return work()
    with locks[0]:
        return _holding(locks[1:], work)
