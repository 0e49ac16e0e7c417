"""Fuzzing the public API with malformed arguments (used by tests/test_fuzz.py).

Every entry point is described by a valid call (a list of argument slots). hypothesis
replaces one or two slots with malformed values: wrong ranks and shapes, empty arrays,
zero, negative and huge sizes, NaN and inf, object/bool/complex/integer/string dtypes,
non-contiguous, Fortran-ordered and read-only arrays, lists of mixed types. Each call
must either return the same result as the NumPy float64 reference given the same
arguments, or raise ValueError, TypeError or MemoryError with a message. Anything else
(another exception, an OpenCL error leaking, a hang, a changed device state) fails.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np

import clnet

try:
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    st = None

ALLOWED = (ValueError, TypeError, MemoryError)
COUNTER = {"calls": 0, "returned": 0, "raised": 0}
HANG_SECONDS = 120.0


def _odd_arrays(base: np.ndarray):
    """Well-formed data in awkward layouts: must give the reference result."""
    a = np.asarray(base, dtype=np.float64)
    views = [np.asfortranarray(a), a.astype(np.float32), a.astype(np.int64) if np.all(np.isfinite(a)) else a]
    ro = a.copy()
    ro.flags.writeable = False
    views.append(ro)
    if a.ndim >= 1 and a.shape[-1] > 0:
        wide = np.repeat(a, 2, axis=-1)
        views.append(wide[..., ::2])  # non-contiguous, same values
    return views


def malformed_values(base) -> "st.SearchStrategy":
    """Values that stand in for an argument whose valid value is ``base``."""
    try:
        a = np.asarray(base) if not isinstance(base, (str, dict)) else None
    except ValueError:  # ragged lists of records (nodes, connections)
        a = None
    garbage = [
        None, "abc", b"bytes", 3.5, -1, 0, 10**12, -10**12, float("nan"), float("inf"),
        [], [[]], [1, "a", None], [[1, 2], [3]], {"a": 1}, object(), 1j,
        np.array([]), np.zeros((0, 0)), np.zeros((0, 3)), np.zeros((2, 0)), np.zeros((1, 1, 1, 1)),
        np.array([True, False]), np.array([1 + 2j, 3]), np.array(["x", "y"]), np.array([object(), 1], dtype=object),
        np.array([np.nan, np.inf, -np.inf]), np.full((3, 3), np.nan),
    ]
    if a is not None and a.dtype.kind in "iuf" and a.size:
        garbage += _odd_arrays(a)
        garbage += [a.reshape(-1), a[..., None], a.T if a.ndim == 2 else a, np.nan * np.ones_like(a, dtype=float),
                    np.ones(a.shape, dtype=bool), a.astype(complex), a.astype(object), a.astype(str)]
        if a.ndim >= 1:
            garbage += [np.concatenate([a, a], axis=-1), a[..., :-1] if a.shape[-1] > 1 else a[..., :0]]
        garbage += [a * 1e30, -a, a.astype(np.float16)]
    if isinstance(base, list) and base:
        # one record of a list replaced by something malformed, or dropped, or duplicated
        for bad in (None, "x", 7, 0, -5, 10**9, 2**40, 2.5, (1,), {"key": "k"}, {"src": 1.5, "dst": None},
                    (np.nan, 0, 1.0), [object()]):
            garbage.append(base[:-1] + [bad])
        garbage += [base[1:], base + base[:1], list(reversed(base))]
    return st.sampled_from(garbage)


@dataclass
class EntryPoint:
    name: str
    call: Callable[..., Any]              # call(backend, *slots)
    slots: List[Any]                      # a valid value for each slot
    compare: bool = True                  # compare a returned result with the reference
    state: Optional[Callable[[Any], Any]] = None  # state(backend): device state that must not change on errors


ENTRY_POINTS: Dict[str, EntryPoint] = {}


def entry(ep: EntryPoint) -> EntryPoint:
    ENTRY_POINTS[ep.name] = ep
    return ep


def _as_float(x):
    return np.asarray(x, dtype=np.float64)


def _same(a, b, near_overflow: bool = False) -> bool:
    """Equal within float32 rounding. With ``near_overflow`` (inputs near the float32 limit),
    elements where either side overflowed are not compared: whether a sum of huge terms
    reaches inf there depends on the order of accumulation, which backends may choose."""
    if isinstance(a, tuple) or isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y, near_overflow) for x, y in zip(a, b))
    if hasattr(a, "toarray"):
        a, b = a.toarray(), b.toarray()
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind not in "fc":
        return np.array_equal(a, b)
    a, b = a.astype(np.float64), b.astype(np.float64)
    if near_overflow:
        keep = np.isfinite(a) & np.isfinite(b) & (np.abs(a) < 1e30) & (np.abs(b) < 1e30)
        a, b = a[keep], b[keep]
    return np.allclose(a, b, rtol=2e-3, atol=2e-3, equal_nan=True)


def _near_overflow(slots) -> bool:
    for v in slots:
        for part in (v if isinstance(v, tuple) else (v,)):
            try:
                arr = np.asarray(part, dtype=np.float64)
            except (TypeError, ValueError):
                continue
            if arr.size and np.nanmax(np.where(np.isfinite(arr), np.abs(arr), 0)) > 1e20:
                return True
    return False


def run_call(ep: EntryPoint, backend, slots) -> str:
    """One fuzz call; returns 'returned' or 'raised', raises AssertionError on a defect."""
    COUNTER["calls"] += 1
    before = ep.state(backend) if ep.state else None
    start = time.monotonic()
    try:
        got = ep.call(backend, *slots)
    except ALLOWED as exc:
        elapsed = time.monotonic() - start
        assert elapsed < HANG_SECONDS, f"{ep.name} took {elapsed:.0f} s to reject its input"
        assert str(exc).strip(), f"{ep.name} raised {type(exc).__name__} without a message"
        assert "clGet" not in str(exc) and "CL_" not in str(exc), f"an OpenCL error code leaked: {exc}"
        if before is not None:
            assert _same(before, ep.state(backend)), f"{ep.name} changed the device state before failing"
        COUNTER["raised"] += 1
        return "raised"
    except Exception as exc:  # anything else is a defect
        raise AssertionError(f"{ep.name}{tuple(map(_short, slots))} raised {type(exc).__name__}: {exc}") from exc
    elapsed = time.monotonic() - start
    assert elapsed < HANG_SECONDS, f"{ep.name} took {elapsed:.0f} s"
    if ep.compare and getattr(backend, "spec", "numpy") != "numpy":
        try:
            ref = ep.call(clnet.get_backend("numpy"), *slots)
        except ALLOWED as exc:
            raise AssertionError(f"{ep.name} returned on {backend.spec} but the reference raised {exc}")
        assert _same(got, ref, _near_overflow(slots)), f"{ep.name}{tuple(map(_short, slots))} differs from the reference"
    COUNTER["returned"] += 1
    return "returned"


def _short(v):
    r = repr(v)
    return r if len(r) < 80 else r[:77] + "..."


# --- feed-forward networks ------------------------------------------------------------------
_RNG = np.random.default_rng(0)
_S = [3, 4, 2]
_W = _RNG.normal(size=clnet.weight_count(_S))
_X = _RNG.normal(size=(5, 3))

entry(EntryPoint("fnn_forward", lambda be, s, w, x, b, act: clnet.fnn_forward(s, w, x, biases=b, activation=act,
                                                                              backend=be),
                 [_S, _W, _X, np.zeros(6), "tanh"]))
entry(EntryPoint("FNN.from_graph", lambda be, n_in, n_out, nodes, conns, x:
                 clnet.FNN.from_graph(n_in, n_out, nodes, conns)(x, backend=be),
                 [3, 2, [dict(key=0), dict(key=1, activation="relu"), dict(key=4, aggregation="max")],
                  [(-1, 4, 0.5), (-2, 0, 1.0), (4, 1, -2.0), (-3, 1, 0.1, False)], _X]))
entry(EntryPoint("FNNPopulation", lambda be, nets, x: clnet.FNNPopulation(nets)(x, backend=be),
                 [[clnet.FNN.from_structure(_S, _W), clnet.FNN.from_structure([3, 2], np.ones(6))], _X]))
entry(EntryPoint("FNN.__call__.dtype", lambda be, x, dtype: clnet.FNN.from_structure(_S, _W)(x, backend=be, dtype=dtype),
                 [_X, "float32"]))


# --- recurrent cells ------------------------------------------------------------------------
_B, _I, _H = 4, 3, 5
_XR = _RNG.normal(size=(_B, _I))
_XS = _RNG.normal(size=(6, _B, _I))
_RESETS = _RNG.random((6, _B)) < 0.3
_LSTM = clnet.LSTMCell(_I, _H, seed=1)
_GRU = clnet.GRUCell(_I, _H, seed=2)
_STATES: Dict[tuple, Any] = {}


def _state(cell, backend):
    key = (id(cell), getattr(backend, "spec", backend))
    if key not in _STATES:
        _STATES[key] = cell.initial_state(_B, backend=backend)
    return _STATES[key]


def _snapshot(cell):
    def snap(backend):
        st = _state(cell, backend)
        return (st.h, st.c) if isinstance(cell, clnet.LSTMCell) else (st.h,)
    return snap


entry(EntryPoint("LSTMCell.__call__", lambda be, x, h, c: _LSTM(x, (h, c), backend=be),
                 [_XR, np.zeros((_B, _H)), np.ones((_B, _H))]))
entry(EntryPoint("GRUCell.__call__", lambda be, x, h: _GRU(x, h, backend=be), [_XR, np.zeros((_B, _H))]))
entry(EntryPoint("LSTMCell.step", lambda be, x, reset: _LSTM.step(x, _state(_LSTM, be), reset=reset, backend=be),
                 [_XR, np.array([1, 0, 0, 1])], compare=False, state=_snapshot(_LSTM)))
entry(EntryPoint("GRUCell.sequence", lambda be, xs, resets: _GRU.sequence(xs, _state(_GRU, be), resets=resets, backend=be),
                 [_XS, _RESETS.astype(np.float64)], compare=False, state=_snapshot(_GRU)))
entry(EntryPoint("LSTMCell.state.set", lambda be, h, c: _state(_LSTM, be).set(h, c),
                 [np.zeros((_B, _H)), np.zeros((_B, _H))], compare=False, state=_snapshot(_LSTM)))
entry(EntryPoint("LSTMCell.state.reset", lambda be, mask: _state(_LSTM, be).reset(mask),
                 [np.array([True, False, True, False])], compare=False, state=_snapshot(_LSTM)))
entry(EntryPoint("LSTMCell(sizes)", lambda be, i, h, seed: clnet.LSTMCell(i, h, seed=seed)(_XR[:, :3] if i == 3 else
                                                                                           np.ones((2, i)), backend=be),
                 [3, 4, 0], compare=False))  # seed=None draws fresh weights: nothing to compare
entry(EntryPoint("LSTMCell.load_state_dict", lambda be, w_ih, w_hh, b: clnet.LSTMCell(_I, _H, weights=dict(
    weight_ih=w_ih, weight_hh=w_hh, bias_ih=b, bias_hh=b))(_XR, backend=be),
                 [_RNG.normal(size=(4 * _H, _I)), _RNG.normal(size=(4 * _H, _H)), np.zeros(4 * _H)]))
entry(EntryPoint("LSTM.__call__", lambda be, xs, h0, c0: clnet.LSTM(_I, _H, num_layers=2, seed=3)(xs, (h0, c0), backend=be),
                 [_XS, np.zeros((2, _B, _H)), np.zeros((2, _B, _H))]))


# --- pairwise Pearson -------------------------------------------------------------------------
_XP = _RNG.normal(size=(9, 12))
_XP[_RNG.random(_XP.shape) < 0.2] = np.nan
_YP = _RNG.normal(size=(4, 12))

entry(EntryPoint("pearson", lambda be, X, Y, mo, tr: clnet.pearson(X, Y, min_overlap=mo, transform=tr, backend=be),
                 [_XP, _YP, 2, "diff"]))
entry(EntryPoint("pearson_topk", lambda be, X, k, mo: clnet.pearson_topk(X, k, min_overlap=mo, backend=be,
                                                                         progress=False),
                 [_XP, 3, 3]))
entry(EntryPoint("pearson_threshold", lambda be, X, t, tr: clnet.pearson_threshold(X, t, transform=tr, backend=be,
                                                                                   progress=False),
                 [_XP, 0.4, None]))


# --- backpropagation through time -----------------------------------------------------------
_BPTT_CELL = clnet.LSTMCell(3, 5, seed=0)
_BPTT_T, _BPTT_B = 4, 2


def _bptt(be, xs, state, resets, grad_hs, grad_final, truncate, burn_in, mask):
    grads = _BPTT_CELL.backward_sequence(xs, state, resets, grad_hs, grad_final, truncate=truncate,
                                         burn_in=burn_in, mask=mask, backend=be)
    return tuple(grads[k] for k in sorted(grads))


entry(EntryPoint("LSTMCell.backward_sequence", _bptt,
                 [_RNG.normal(size=(_BPTT_T, _BPTT_B, 3)),
                  (_RNG.normal(size=(_BPTT_B, 5)), _RNG.normal(size=(_BPTT_B, 5))),
                  np.array([[0, 1], [0, 0], [1, 0], [0, 0]]), _RNG.normal(size=(_BPTT_T, _BPTT_B, 5)),
                  (_RNG.normal(size=(_BPTT_B, 5)), None), 2, 1, np.array([[1, 1], [1, 0], [0, 1], [1, 1]])]))

_BPTT_GRU = clnet.GRU(3, 4, num_layers=2, seed=1)


def _bptt_stacked(be, xs, h0, resets, grad_hs, grad_final, mask):
    grads = _BPTT_GRU.backward_sequence(xs, h0, resets, grad_hs, grad_final, mask=mask, backend=be)
    return tuple(grads[k] for k in sorted(grads))


entry(EntryPoint("GRU.backward_sequence", _bptt_stacked,
                 [_RNG.normal(size=(_BPTT_T, _BPTT_B, 3)), _RNG.normal(size=(2, _BPTT_B, 4)),
                  np.array([[1, 0], [0, 0], [0, 1], [0, 0]]), _RNG.normal(size=(_BPTT_T, _BPTT_B, 4)),
                  _RNG.normal(size=(2, _BPTT_B, 4)), None]))
