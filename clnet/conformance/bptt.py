"""Conformance checks of backpropagation through time (``backward_sequence``).

Three properties for every backend, drawn by hypothesis over cell kinds, awkward sizes
(B = 1, I = 1, hidden sizes no multiple of any vector width), stacked layers, reset
rates, truncation windows, burn-in prefixes, loss masks and final-state gradients:

- ``bptt.<kind>``: every gradient equals the float64 NumPy reference (itself tested
  against ``torch.autograd`` in tests/test_bptt.py; torch is not needed here).
- ``bptt.group``: a :class:`clnet.CellGroup` of one to three cells over shared inputs,
  recorded and run backwards together: every member's outputs and gradients equal that
  member's own float64 reference.
- ``bptt.finite_differences``: the gradient agrees with central finite differences of
  the loss computed by the float64 NumPy forward, along a random direction per
  gradient (smooth cells only: differences across the relu's kink mean nothing). Truncation and burn-in make the gradient that of a surrogate loss in which
  the state at each cut is a constant; the finite differences run that surrogate: the
  sequence in windows between cuts, each window started from the unperturbed state.
"""
from __future__ import annotations

import numpy as np

from .. import rnn as R
from ..backend import get_backend
from . import Check, Comparison, register
from .rnn import make_cell

try:
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    st = None

KINDS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
STACKED = ("stacked_lstm", "stacked_gru")


def make_model(kind: str, I: int, H: int, layers: int, bias: bool, seed: int, scale: float = 1.0):
    """A cell (``kind`` of clnet.conformance.rnn.KINDS) or a stacked ``stacked_lstm`` /
    ``stacked_gru`` with weights uniform in +-scale/sqrt(H)."""
    if not kind.startswith("stacked_"):
        return make_cell(kind, I, H, bias, seed, scale)
    cls = R.LSTM if kind == "stacked_lstm" else R.GRU
    model = cls(I, H, layers, bias, seed=seed)
    if scale != 1.0:
        model.load_state_dict({k: v * scale for k, v in model.state_dict().items()})
    return model


@st.composite if st else (lambda f: f)
def bptt_cases(draw, kinds=KINDS):
    T = draw(st.one_of(st.just(1), st.integers(2, 9)))
    return dict(kind=draw(st.sampled_from(kinds)),
                T=T,
                B=draw(st.one_of(st.just(1), st.integers(2, 9), st.sampled_from([33, 70, 129]))),
                I=draw(st.one_of(st.just(1), st.integers(2, 20))),
                H=draw(st.one_of(st.just(1), st.integers(2, 24), st.sampled_from([17, 33, 64]))),
                layers=draw(st.integers(1, 3)),
                bias=draw(st.booleans()),
                scale=draw(st.sampled_from([1.0, 0.5])),
                reset_rate=draw(st.sampled_from([0.0, 0.2, 1.0])),
                truncate=draw(st.one_of(st.none(), st.integers(1, 4))),
                burn_in=draw(st.one_of(st.just(0), st.integers(0, T - 1))),
                mask_rate=draw(st.sampled_from([None, 0.5])),
                final=draw(st.booleans()),
                seed=draw(st.integers(0, 2**32 - 1)))


def case_arrays(case):
    """model and the keyword arguments of ``backward_sequence`` for a case (float64)."""
    rng = np.random.default_rng(case["seed"])
    kind, T, B, H = case["kind"], case["T"], case["B"], case["H"]
    model = make_model(kind, case["I"], H, case.get("layers", 1), case["bias"], int(rng.integers(2**32)),
                       case["scale"])
    stacked = kind.startswith("stacked_")
    lstm = kind in ("lstm", "stacked_lstm")
    lead = (model.num_layers, B, H) if stacked else (B, H)
    h0 = np.tanh(rng.normal(0, 1, size=lead))
    state = (h0, rng.normal(0, 1, size=lead)) if lstm else h0
    final = None
    if case["final"]:
        final = (rng.normal(size=lead), rng.normal(size=lead)) if lstm else rng.normal(size=lead)
    args = dict(xs=rng.normal(0, case["scale"], size=(T, B, case["I"])), initial_state=state,
                resets=rng.random((T, B)) < case["reset_rate"], grad_hs=rng.normal(size=(T, B, H)),
                grad_final=final, truncate=case["truncate"], burn_in=case["burn_in"],
                mask=None if case["mask_rate"] is None else (rng.random((T, B)) < case["mask_rate"]))
    return model, args


def _eval_reference(backend, dt, case):
    model, args = case_arrays(case)
    got = model.backward_sequence(**args, backend=backend, dtype=dt)
    ref = model.backward_sequence(**args, backend="numpy", dtype=np.float64)
    ctl = model.backward_sequence(**args, backend="numpy", dtype=dt)
    assert set(got) == set(ref), f"gradient names {sorted(got)} differ from the reference's {sorted(ref)}"
    return [Comparison(name, got[name], ref[name], ctl[name]) for name in ref]


def group_arrays(case):
    """A :class:`clnet.CellGroup` of ``case["members"]`` cells of the case's kind (each with its
    own weights and initial state) and the arguments of its record_sequence and backward."""
    from ..bptt import CellGroup

    rng = np.random.default_rng(case["seed"] ^ 0x6A0F)
    cells, starts, finals = [], [], []
    model, args = case_arrays(case)
    for m in range(case["members"]):
        member, margs = case_arrays(dict(case, seed=int(rng.integers(2**32))))
        cells.append(member)
        starts.append(margs["initial_state"])
        finals.append(margs["grad_final"])
    grads = rng.normal(size=(case["members"],) + args["grad_hs"].shape)
    record = dict(xs=args["xs"], initial_states=starts, resets=args["resets"])
    backward = dict(grad_hs=grads, grad_final=finals if case["final"] else None, truncate=args["truncate"],
                    burn_in=args["burn_in"], mask=args["mask"])
    return CellGroup(cells), record, backward


def _eval_group(backend, dt, case):
    """Every member's gradients (and outputs) from one grouped recording against that
    member's own float64 reference backward_sequence (and sequence)."""
    group, record, backward = group_arrays(case)
    rec = group.record_sequence(**record, backend=backend, dtype=dt)
    got = rec.backward(**backward)
    out = []
    for m, cell in enumerate(group.cells):
        alone = dict(xs=record["xs"], initial_state=record["initial_states"][m], resets=record["resets"],
                     grad_hs=backward["grad_hs"][m], truncate=backward["truncate"], burn_in=backward["burn_in"],
                     mask=backward["mask"],
                     grad_final=None if backward["grad_final"] is None else backward["grad_final"][m])
        ref = cell.backward_sequence(**alone, backend="numpy", dtype=np.float64)
        ctl = cell.backward_sequence(**alone, backend="numpy", dtype=dt)
        assert set(got[m]) == set(ref), f"member {m}: gradient names {sorted(got[m])} differ from {sorted(ref)}"
        out += [Comparison(f"member {m}: {name}", got[m][name], ref[name], ctl[name]) for name in ref]
        hs_ref = cell.record_sequence(record["xs"], record["initial_states"][m], record["resets"], backend="numpy",
                                      dtype=np.float64).hs
        out.append(Comparison(f"member {m}: outputs", rec.hs[m], hs_ref))
    return out


@st.composite if st else (lambda f: f)
def group_cases(draw):
    return dict(draw(bptt_cases(KINDS)), layers=1, members=draw(st.integers(1, 3)))


def _describe_group(case):
    return (f"from clnet.conformance.bptt import group_arrays\ncase = {case!r}\n"
            f"group, record, backward = group_arrays(case)\n"
            f"grads = group.record_sequence(**record, backend=BACKEND, dtype=DTYPE).backward(**backward)")


# ---------------------------------------------------------------------------------------
# Finite differences of the (surrogate) loss
# ---------------------------------------------------------------------------------------
def _run(model, xs, state, resets, be):
    """Outputs and final state (h, c) of ``model`` from ``state`` = (h, c) arrays."""
    stacked = isinstance(model, R._Stacked)
    layers = model.layers if stacked else [model]
    states = []
    for l, cell in enumerate(layers):
        s = cell.initial_state(xs.shape[1], backend=be, dtype=np.float64)
        h = state[0][l] if stacked else state[0]
        c = None if state[1] is None else (state[1][l] if stacked else state[1])
        s.set(h, c)
        states.append(s)
    out = model.sequence(xs, states, resets) if stacked else model.sequence(xs, states[0], resets)
    hs = np.stack([s.h for s in states]) if stacked else states[0].h
    cs = None
    if state[1] is not None:
        cs = np.stack([s.c for s in states]) if stacked else states[0].c
    return out, (hs, cs)


def surrogate_loss(model, args, be="numpy"):
    """The loss whose exact gradient ``backward_sequence`` returns: sum of grad_hs * mask *
    outputs after the burn-in, plus grad_final * final state, with the state at every cut
    (truncation boundary, end of burn-in) held at its unperturbed value."""
    xs, resets = args["xs"], args["resets"]
    T = xs.shape[0]
    lstm = model.kind == "lstm"
    init = args["initial_state"]
    state = (init[0], init[1]) if lstm else (init, None)
    cuts = {t for t in range(1, T) if args["truncate"] and t % args["truncate"] == 0}
    if args["burn_in"]:
        cuts.add(args["burn_in"])
    bounds = [0] + sorted(cuts) + [T]
    fixed = {}
    if cuts:  # the unperturbed states at the cuts, from the unperturbed model and inputs
        base_xs, base_init = args["_base_xs"], args["_base_init"]
        s = (base_init[0], base_init[1]) if lstm else (base_init, None)
        for a, b in zip(bounds[:-1], bounds[1:]):
            _, s = _run(args["_base_model"], base_xs[a:b], s, resets[a:b], get_backend("numpy"))
            fixed[b] = s
    dhs = args["grad_hs"] * (1.0 if args["mask"] is None else args["mask"][:, :, None])
    loss = 0.0
    s = state
    for a, b in zip(bounds[:-1], bounds[1:]):
        if a in fixed:
            s = fixed[a]
        out, s = _run(model, xs[a:b], s, resets[a:b], be)
        if b > args["burn_in"]:
            lo = max(a, args["burn_in"]) - a
            loss += float(np.sum(out[lo:] * dhs[a + lo:b]))
    final = args["grad_final"]
    if final is not None:
        fh, fc = (final if lstm else (final, None))
        loss += float(np.sum(s[0] * fh)) + (float(np.sum(s[1] * fc)) if fc is not None else 0.0)
    return loss


def _perturbed(model, args, name, direction, eps):
    """A copy of (model, args) with ``name`` moved by eps * direction."""
    m = model
    a = dict(args)
    if name in model.state_dict():
        sd = model.state_dict()
        sd[name] = sd[name] + eps * direction
        m = make_like(model)
        m.load_state_dict(sd)
    elif name == "x":
        a["xs"] = args["xs"] + eps * direction
    else:  # h0 / c0
        lstm = model.kind == "lstm"
        if lstm:
            h, c = args["initial_state"]
            a["initial_state"] = (h + eps * direction, c) if name == "h0" else (h, c + eps * direction)
        else:
            a["initial_state"] = args["initial_state"] + eps * direction
    return m, a


def make_like(model):
    if isinstance(model, R._Stacked):
        return type(model)(model.input_size, model.hidden_size, model.num_layers, model.bias)
    if isinstance(model, R.RNNCell):
        return R.RNNCell(model.input_size, model.hidden_size, model.bias, nonlinearity=model.nonlinearity)
    return type(model)(model.input_size, model.hidden_size, model.bias)


def _eval_finite_differences(backend, dt, case):
    """Directional derivatives along one random direction per gradient: the backend's
    gradient (in dt) against central differences of the float64 surrogate loss."""
    model, args = case_arrays(case)
    args.update(_base_model=model, _base_xs=args["xs"], _base_init=args["initial_state"])
    call = {k: v for k, v in args.items() if not k.startswith("_")}
    got = model.backward_sequence(**call, backend=backend, dtype=dt)
    ctl = model.backward_sequence(**call, backend="numpy", dtype=dt)
    rng = np.random.default_rng(case["seed"] ^ 0x5EED)
    eps = 1e-6
    out = []
    for name in got:
        direction = rng.normal(size=got[name].shape)
        plus = surrogate_loss(*_perturbed(model, args, name, direction, eps))
        minus = surrogate_loss(*_perturbed(model, args, name, direction, -eps))
        fd = (plus - minus) / (2 * eps)
        out.append(Comparison(f"d loss / d {name} along a random direction",
                              np.array([np.sum(got[name].astype(np.float64) * direction)]),
                              np.array([fd]), np.array([np.sum(ctl[name].astype(np.float64) * direction)])))
    return out


def _describe(case):
    return (f"from clnet.conformance.bptt import case_arrays\ncase = {case!r}\n"
            f"model, args = case_arrays(case)\n"
            f"grads = model.backward_sequence(**args, backend=BACKEND, dtype=DTYPE)")


if st is not None:
    for _name, _kinds in (("lstm", ("lstm",)), ("gru", ("gru",)), ("rnn", ("rnn_tanh", "rnn_relu")),
                          ("stacked_lstm", ("stacked_lstm",)), ("stacked_gru", ("stacked_gru",))):
        register(Check(f"bptt.{_name}", "bptt", lambda k=_kinds: bptt_cases(k), _eval_reference, _describe))
    # clnet.CellGroup: on OpenCL every member in the launches of one cell (a third grid
    # dimension), elsewhere member by member; each member against its own reference
    register(Check("bptt.group", "bptt", group_cases, _eval_group, _describe_group))
    # Not the relu RNN: central differences straddle its kink wherever a pre-activation lies
    # within the step of zero (hypothesis finds such cases); its gradient is checked against
    # the reference above and against torch in the tests.
    register(Check("bptt.finite_differences", "bptt_fd",
                   lambda: bptt_cases(("lstm", "gru", "rnn_tanh") + STACKED), _eval_finite_differences,
                   _describe))
