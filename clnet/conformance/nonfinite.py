"""Conformance checks of one non-finite value, for every family.

The property: rows of a batch are independent, so a NaN, +inf or -inf placed in row b
(an input feature of one environment at one step, an initial state value, one sample,
one series) changes nothing in the other rows, bit for bit, over several steps; and
the poisoned row's non-finite values sit exactly where the float64 reference puts them
(the comparison of clnet.conformance.compare requires equal NaN and inf positions).

It would have caught padded hidden units multiplied by zero weights (inf x 0 = NaN)
turning a whole recurrent state NaN from the next step on.
"""
from __future__ import annotations

import numpy as np

from .. import fnn as F
from ..backend import get_backend
from ..pearson import pearson
from ..tolerances import tolerance
from . import Check, Comparison, register
from .bptt import make_model
from .rnn import make_cell

try:
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    st = None

POISONS = (np.nan, np.inf, -np.inf)


def assert_rows_unchanged(name: str, family: str, clean: np.ndarray, poisoned: np.ndarray, row,
                          axis: int) -> None:
    """Every row but ``row`` (along ``axis``; None: every row) of ``poisoned`` equals
    ``clean``: the same NaN and inf positions, and finite values within the family's
    tolerance (NumPy's vectorised functions take another code path, a few ulps apart,
    for an array that holds a NaN; a leak is a NaN, an inf or a wrong value)."""
    a, b = np.asarray(clean), np.asarray(poisoned)
    if row is not None:
        a, b = np.delete(a, row, axis=axis), np.delete(b, row, axis=axis)
    tol = tolerance(family, a.dtype)
    with np.errstate(invalid="ignore"):
        close = np.abs(a - b) <= tol.atol + tol.rtol * np.abs(a)
    same = np.where(np.isfinite(a), close & np.isfinite(b), (a == b) | (np.isnan(a) & np.isnan(b)))
    if not same.all():
        idx = tuple(int(i) for i in np.argwhere(~same)[0])
        raise AssertionError(f"{name}: a non-finite value in row {row} changed another row "
                             f"(index {idx} of the other rows: {a[idx]!r} became {b[idx]!r})")


def _reference(run, dt):
    numpy_backend = get_backend("numpy")
    return run(numpy_backend, np.float64), run(numpy_backend, dt)


# --- recurrent cells: step and sequence ------------------------------------------------------
@st.composite if st else (lambda f: f)
def rnn_cases(draw):
    B = draw(st.one_of(st.integers(2, 9), st.sampled_from([17, 33])))
    return dict(kind=draw(st.sampled_from(("lstm", "gru", "rnn_tanh", "rnn_relu"))), B=B,
                I=draw(st.integers(1, 6)), H=draw(st.one_of(st.integers(1, 20), st.sampled_from([33]))),
                T=draw(st.integers(2, 5)), bias=draw(st.booleans()), row=draw(st.integers(0, B - 1)),
                where=draw(st.sampled_from(["x", "x", "h0", "c0"])), poison=draw(st.sampled_from(POISONS)),
                seed=draw(st.integers(0, 2**32 - 1)))


def rnn_arrays(case):
    """cell, xs, h0, c0 of a case, the poison placed in row ``case['row']``."""
    rng = np.random.default_rng(case["seed"])
    cell = make_cell(case["kind"], case["I"], case["H"], case["bias"], int(rng.integers(2**32)))
    B, H, T = case["B"], case["H"], case["T"]
    xs = rng.normal(size=(T, B, case["I"]))
    h0 = np.tanh(rng.normal(size=(B, H)))
    c0 = rng.normal(size=(B, H)) if cell.kind == "lstm" else None
    where = "h0" if case["where"] == "c0" and c0 is None else case["where"]
    if where == "x":
        xs[int(rng.integers(0, T - 1)), case["row"], int(rng.integers(0, case["I"]))] = case["poison"]
    else:
        (h0 if where == "h0" else c0)[case["row"], int(rng.integers(0, H))] = case["poison"]
    return cell, xs, h0, c0


def _rnn_outputs(cell, xs, h0, c0, be, dt, stepped: bool):
    state = cell.initial_state(xs.shape[1], backend=be, dtype=dt)
    state.set(h0, c0)
    if stepped:
        hs = np.stack([cell.step(x, state) for x in xs])
    else:
        hs = cell.sequence(xs, state)
    out = {"hs": hs, "state.h": state.h}
    if cell.kind == "lstm":
        out["state.c"] = state.c
    return out


def _eval_rnn(backend, dt, case):
    cell, xs, h0, c0 = rnn_arrays(case)
    clean = dict(case, poison=0.5)
    _, xs_c, h0_c, c0_c = rnn_arrays(clean)
    comparisons = []
    for stepped in (True, False):
        def run(be, d):
            return _rnn_outputs(cell, xs, h0, c0, be, d, stepped)

        got = run(backend, dt)
        base = _rnn_outputs(cell, xs_c, h0_c, c0_c, backend, dt, stepped)
        ref, ctl = _reference(run, dt)
        how = "step" if stepped else "sequence"
        for name in got:
            axis = 1 if name == "hs" else 0
            assert_rows_unchanged(f"{how} {name}", "rnn", base[name], got[name], case["row"], axis)
            comparisons.append(Comparison(f"{how} {name}", got[name], ref[name], ctl[name]))
    return comparisons


# --- backpropagation through time ------------------------------------------------------------
@st.composite if st else (lambda f: f)
def bptt_cases(draw):
    B = draw(st.integers(2, 9))
    return dict(kind=draw(st.sampled_from(("lstm", "gru", "rnn_tanh", "stacked_lstm"))), B=B,
                I=draw(st.integers(1, 6)), H=draw(st.one_of(st.integers(1, 20), st.sampled_from([33]))),
                T=draw(st.integers(2, 5)), row=draw(st.integers(0, B - 1)),
                poison=draw(st.sampled_from(POISONS)), seed=draw(st.integers(0, 2**32 - 1)))


def bptt_arrays(case):
    rng = np.random.default_rng(case["seed"])
    model = make_model(case["kind"], case["I"], case["H"], 2, True, int(rng.integers(2**32)))
    T, B = case["T"], case["B"]
    xs = rng.normal(size=(T, B, case["I"]))
    xs[int(rng.integers(0, T)), case["row"], int(rng.integers(0, case["I"]))] = case["poison"]
    return model, xs, rng.normal(size=(T, B, case["H"]))


def _eval_bptt(backend, dt, case):
    model, xs, grads = bptt_arrays(case)
    _, xs_clean, _ = bptt_arrays(dict(case, poison=0.5))

    def run(be, d, inputs=xs):
        return model.backward_sequence(inputs, None, None, grads, backend=be, dtype=d)

    got = run(backend, dt)
    base = run(backend, dt, xs_clean)
    ref, ctl = _reference(run, dt)
    # The weight gradients sum over rows (the reference has NaN there too); the input and
    # initial-state gradients are per row.
    for name, axis in (("x", 1), ("h0", -2), ("c0", -2)):
        if name in got:
            assert_rows_unchanged(f"gradient {name}", "bptt", base[name], got[name], case["row"], axis)
    return [Comparison(name, got[name], ref[name], ctl[name]) for name in ref]


# --- feed-forward networks ------------------------------------------------------------------
@st.composite if st else (lambda f: f)
def fnn_cases(draw):
    batch = draw(st.one_of(st.integers(2, 9), st.sampled_from([33, 300])))
    depth = draw(st.integers(1, 3))
    return dict(structure=[draw(st.integers(1, 7)) for _ in range(depth + 1)],
                activation=draw(st.sampled_from(["tanh", "relu", "sigmoid", "identity"])),
                batch=batch, row=draw(st.integers(0, batch - 1)), poison=draw(st.sampled_from(POISONS)),
                population=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)))


def fnn_arrays(case):
    rng = np.random.default_rng(case["seed"])
    s = case["structure"]
    nets = [F.FNN.from_structure(s, rng.normal(size=F.weight_count(s)), rng.normal(size=sum(s[1:])),
                                 case["activation"]) for _ in range(3 if case["population"] else 1)]
    x = rng.normal(size=(case["batch"], s[0]))
    x[case["row"], int(rng.integers(0, s[0]))] = case["poison"]
    return nets, x


def _eval_fnn(backend, dt, case):
    nets, x = fnn_arrays(case)
    _, x_clean = fnn_arrays(dict(case, poison=0.5))
    model = F.FNNPopulation(nets) if case["population"] else nets[0]

    def run(be, d, inputs=x):
        return model(inputs, backend=be, dtype=d)

    got = run(backend, dt)
    ref, ctl = _reference(run, dt)
    axis = 1 if case["population"] else 0
    assert_rows_unchanged("outputs", "fnn", run(backend, dt, x_clean), got, case["row"], axis)
    return [Comparison("outputs", got, ref, ctl)]


# --- pairwise Pearson ----------------------------------------------------------------------
@st.composite if st else (lambda f: f)
def pearson_cases(draw):
    n = draw(st.integers(2, 12))
    return dict(n=n, m=draw(st.integers(3, 40)), row=draw(st.integers(0, n - 1)),
                poison=draw(st.sampled_from(POISONS)), seed=draw(st.integers(0, 2**32 - 1)))


def _eval_pearson(backend, dt, case):
    """A non-finite value is a missing position of its series: only the row and column of
    that series may change."""
    rng = np.random.default_rng(case["seed"])
    x = np.cumsum(rng.normal(size=(case["n"], case["m"])), axis=1)
    poisoned = x.copy()
    poisoned[case["row"], int(rng.integers(0, case["m"]))] = case["poison"]
    got = pearson(poisoned, backend=backend, dtype=dt)
    base = pearson(x, backend=backend, dtype=dt)
    others = np.delete(np.delete(got, case["row"], 0), case["row"], 1)
    assert_rows_unchanged("r without the poisoned series", "pearson",
                          np.delete(np.delete(base, case["row"], 0),
                                                                    case["row"], 1), others, None, 0)
    ref = pearson(poisoned, backend="numpy", dtype=np.float64)
    return [Comparison("r", got, ref)]


if st is not None:
    register(Check("rnn.nonfinite_rows", "rnn", rnn_cases, _eval_rnn,
                   lambda c: f"from clnet.conformance.nonfinite import rnn_arrays\ncase = {c!r}"))
    register(Check("bptt.nonfinite_rows", "bptt", bptt_cases, _eval_bptt,
                   lambda c: f"from clnet.conformance.nonfinite import bptt_arrays\ncase = {c!r}"))
    register(Check("fnn.nonfinite_rows", "fnn", fnn_cases, _eval_fnn,
                   lambda c: f"from clnet.conformance.nonfinite import fnn_arrays\ncase = {c!r}"))
    register(Check("pearson.nonfinite_rows", "pearson", pearson_cases, _eval_pearson,
                   lambda c: f"from clnet.conformance.nonfinite import pearson_cases\ncase = {c!r}"))
