"""Conformance checks of the recurrent cells (LSTM, GRU, Elman RNN).

hypothesis draws the sizes (B = 1, I = 1 and hidden sizes that are no multiple of any
vector width included), the cell kind, magnitudes and a seed; NumPy makes the arrays.
Besides comparisons with the float64 NumPy reference, the checks assert properties:
a sequence equals its steps, a reset row equals a fresh zero state, and a state never
shares memory with the caller's arrays.
"""
from __future__ import annotations

import numpy as np

from .. import rnn as R
from ..backend import get_backend
from . import Check, Comparison, register

try:
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    st = None

KINDS = ("lstm", "gru", "rnn_tanh", "rnn_relu")


def make_cell(kind: str, I: int, H: int, bias: bool, seed: int, scale: float = 1.0):
    """A cell of ``kind`` with weights uniform in +-scale/sqrt(H) (PyTorch's init times scale)."""
    if kind == "lstm":
        cell = R.LSTMCell(I, H, bias, seed=seed)
    elif kind == "gru":
        cell = R.GRUCell(I, H, bias, seed=seed)
    else:
        cell = R.RNNCell(I, H, bias, nonlinearity=kind[4:], seed=seed)
    if scale != 1.0:
        cell.load_state_dict({k: v * scale for k, v in cell.state_dict().items()})
    return cell


def _sizes(draw, kinds):
    return dict(kind=draw(st.sampled_from(kinds)),
                B=draw(st.one_of(st.just(1), st.integers(2, 9), st.integers(10, 70), st.sampled_from([129, 257]))),
                I=draw(st.one_of(st.just(1), st.integers(2, 40))),
                H=draw(st.one_of(st.just(1), st.integers(2, 40), st.sampled_from([17, 33, 64, 97, 129]))),
                bias=draw(st.booleans()),
                scale=draw(st.sampled_from([1.0, 0.3, 3.0])),
                reset_rate=draw(st.sampled_from([0.0, 0.3, 1.0])),
                seed=draw(st.integers(0, 2**32 - 1)))


@st.composite if st else (lambda f: f)
def step_cases(draw, kinds=KINDS):
    return _sizes(draw, kinds)


@st.composite if st else (lambda f: f)
def sequence_cases(draw, kinds=KINDS):
    case = _sizes(draw, kinds)
    case["T"] = draw(st.one_of(st.just(1), st.integers(2, 12)))
    case["B"] = min(case["B"], 70)
    return case


def case_arrays(case):
    """cell, x (or xs), h0, c0 and the reset mask(s) of a case."""
    rng = np.random.default_rng(case["seed"])
    cell = make_cell(case["kind"], case["I"], case["H"], case["bias"], int(rng.integers(2**32)), case["scale"])
    B, H = case["B"], case["H"]
    lead = (case["T"],) if "T" in case else ()
    x = rng.normal(0, case["scale"], size=lead + (B, case["I"]))
    h0 = np.tanh(rng.normal(0, 1, size=(B, H)))
    c0 = rng.normal(0, 1, size=(B, H)) if case["kind"] == "lstm" else None
    resets = rng.random(lead + (B,)) < case["reset_rate"]
    return cell, x, h0, c0, resets


def _state(cell, backend, dt, h0, c0):
    state = cell.initial_state(h0.shape[0], backend=backend, dtype=dt)
    state.set(h0, c0)
    return state


def _outputs(cell, state, main):
    out = {"h": main, "state.h": state.h}
    if cell.kind == "lstm":
        out["state.c"] = state.c
    return out


def _run_step(case, backend, dt):
    cell, x, h0, c0, resets = case_arrays(case)
    state = _state(cell, backend, dt, h0, c0)
    return _outputs(cell, state, cell.step(x, state, reset=resets))


def _run_sequence(case, backend, dt):
    cell, xs, h0, c0, resets = case_arrays(case)
    state = _state(cell, backend, dt, h0, c0)
    return _outputs(cell, state, cell.sequence(xs, state, resets=resets))


def _against_reference(run, case, backend, dt):
    ref_backend = get_backend("numpy")
    got = run(case, backend, dt)
    ref = run(case, ref_backend, np.float64)
    ctl = run(case, ref_backend, dt)
    return [Comparison(name, got[name], ref[name], ctl[name]) for name in got]


def _eval_step(backend, dt, case):
    return _against_reference(_run_step, case, backend, dt)


def _eval_sequence(backend, dt, case):
    return _against_reference(_run_sequence, case, backend, dt)


def _same(a, b) -> bool:
    """Exactly equal (NaN where NaN): for values that must be copied, not recomputed."""
    return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))


def _stepped(case, backend, dt):
    """The T single steps of a sequence case: every h stacked, and the final state."""
    cell, xs, h0, c0, resets = case_arrays(case)
    state = _state(cell, backend, dt, h0, c0)
    hs = np.stack([cell.step(xs[t], state, reset=resets[t]) for t in range(case["T"])])
    return _outputs(cell, state, hs)


def _eval_sequence_is_steps(backend, dt, case):
    """A sequence of T steps and T single steps on the same backend: both, the final state
    included, are held to the float64 reference by the tolerance table (a path may sum in
    another order: BLAS blocks by matrix shape)."""
    ref_backend = get_backend("numpy")
    ref = _run_sequence(case, ref_backend, np.float64)
    ctl = _run_sequence(case, ref_backend, dt)
    sequence = _run_sequence(case, backend, dt)
    steps = _stepped(case, backend, dt)
    return ([Comparison(f"sequence {name}", sequence[name], ref[name], ctl[name]) for name in sequence]
            + [Comparison(f"single steps {name}", steps[name], ref[name], ctl[name]) for name in steps])


def _fresh_rows(case, backend, dt, rows):
    """h of one step from a zero state for the given rows of the case's inputs."""
    cell, x, _, _, _ = case_arrays(case)
    fresh = cell.initial_state(len(rows), backend=backend, dtype=dt)
    return cell.step(x[rows], fresh)


def _with_reset(case):
    cell, x, h0, c0, resets = case_arrays(case)
    resets = resets.copy()
    resets[0] = True  # at least one reset row
    return cell, x, h0, c0, resets


def _eval_reset_is_fresh(backend, dt, case):
    """Rows reset before a step give what a fresh zero state gives for them, and
    state.reset(mask) then a plain step is step(reset=mask): each judged against the
    float64 reference by the tolerance table."""
    cell, x, h0, c0, resets = _with_reset(case)
    rows = np.flatnonzero(resets)
    ref_backend = get_backend("numpy")

    def stepped(be, d):
        state = _state(cell, be, d, h0, c0)
        return cell.step(x, state, reset=resets)

    def reset_then_step(be, d):
        state = _state(cell, be, d, h0, c0)
        state.reset(resets)
        return cell.step(x, state)

    ref_fresh, ctl_fresh = (_fresh_rows(case, ref_backend, d, rows) for d in (np.float64, dt))
    ref_h, ctl_h = (stepped(ref_backend, d) for d in (np.float64, dt))
    h = stepped(backend, dt)
    return [Comparison("reset rows", h[rows], ref_fresh, ctl_fresh),
            Comparison("fresh zero state", _fresh_rows(case, backend, dt, rows), ref_fresh, ctl_fresh),
            Comparison("step(reset=mask)", h, ref_h, ctl_h),
            Comparison("state.reset(mask) then step", reset_then_step(backend, dt), ref_h, ctl_h)]


def _eval_no_alias(backend, dt, case):
    """Neither the arrays given to set() nor those returned share memory with the state."""
    cell, x, h0, c0, resets = case_arrays(case)
    h_in = h0.astype(dt)
    c_in = None if c0 is None else c0.astype(dt)
    state = _state(cell, backend, dt, h_in, c_in)
    h_in[...] = 7.0
    if c_in is not None:
        c_in[...] = 7.0
    assert _same(state.h, h0.astype(dt)), "state.h changed when the array given to set() changed"
    read = state.h
    read[...] = 5.0
    assert _same(state.h, h0.astype(dt)), "writing into the array read from state.h changed the state"
    if c0 is not None:
        rc = state.c
        rc[...] = 5.0
        assert _same(state.c, c0.astype(dt)), "writing into state.c's array changed the state"
    h = cell.step(x, state, reset=resets)
    kept = h.copy()
    h[...] = 3.0
    assert _same(state.h, kept), "writing into the array step() returned changed the state"
    ref_backend = get_backend("numpy")
    ref, ctl = (_run_step(case, ref_backend, d) for d in (np.float64, dt))
    return [Comparison("state.h after the step", state.h, ref["state.h"], ctl["state.h"])]


def _describe(run_name):
    def describe(case):
        return (f"import clnet\nfrom clnet.conformance.rnn import case_arrays\ncase = {case!r}\n"
                f"cell, x, h0, c0, resets = case_arrays(case)\n"
                f"state = cell.initial_state(case['B'], backend=BACKEND, dtype=DTYPE)\n"
                f"state.set(h0, c0)\ncell.{run_name}(x, state, resets)")
    return describe


if st is not None:
    for _kind, _name, _kinds in (("lstm", "lstm", ("lstm",)), ("gru", "gru", ("gru",)),
                                 ("rnn", "rnn", ("rnn_tanh", "rnn_relu"))):
        register(Check(f"rnn.{_name}_step", "rnn", lambda k=_kinds: step_cases(k), _eval_step,
                       _describe("step")))
        register(Check(f"rnn.{_name}_sequence", "rnn", lambda k=_kinds: sequence_cases(k), _eval_sequence,
                       _describe("sequence")))
    register(Check("rnn.sequence_equals_steps", "rnn", sequence_cases, _eval_sequence_is_steps,
                   _describe("sequence")))
    register(Check("rnn.reset_is_fresh_state", "rnn", step_cases, _eval_reset_is_fresh, _describe("step")))
    register(Check("rnn.state_not_aliased", "rnn", step_cases, _eval_no_alias, _describe("step")))
