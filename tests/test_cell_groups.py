"""clnet.CellGroup: cells of one shape over the same inputs, recorded and run backwards together.

On OpenCL the members run side by side in the launches of one cell (a third grid dimension
in kernels/bptt.cl); elsewhere member by member. Either way each member's outputs and
gradients must be exactly those of its own record_sequence on that backend: that is what
these tests assert, bit for bit. Agreement with the float64 reference (and through it with
torch.autograd) is the conformance check ``bptt.group`` (tests/test_conformance.py) plus
tests/test_bptt.py for the single cells.
"""
import numpy as np
import pytest

import clnet
from clnet.backend import Backend

T, B, I, H = 6, 5, 3, 11


def _cells(kind, n, hidden=H, inputs=I):
    make = {"lstm": lambda s: clnet.LSTMCell(inputs, hidden, seed=s),
            "gru": lambda s: clnet.GRUCell(inputs, hidden, seed=s),
            "rnn_tanh": lambda s: clnet.RNNCell(inputs, hidden, seed=s),
            "rnn_relu": lambda s: clnet.RNNCell(inputs, hidden, nonlinearity="relu", seed=s)}[kind]
    return [make(10 + s) for s in range(n)]


def _start(kind, rng, batch=B, hidden=H):
    h = rng.normal(size=(batch, hidden))
    return (h, rng.normal(size=(batch, hidden))) if kind == "lstm" else h


def _assert_same(got, want, what):
    assert set(got) == set(want), f"{what}: names {sorted(got)} differ from {sorted(want)}"
    for k in want:
        if want[k] is None:
            assert got[k] is None, f"{what}: {k}"
        else:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, f"{what}: {k}"
            assert np.array_equal(got[k], want[k]), f"{what}: {k} differs by {np.abs(got[k] - want[k]).max()}"


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("members", [1, 3])
def test_each_member_gets_exactly_its_own_recording(any_backend, kind, members):
    rng = np.random.default_rng(members)
    cells = _cells(kind, members)
    group = clnet.CellGroup(cells)
    xs, resets = rng.normal(size=(T, B, I)), rng.random((T, B)) < 0.25
    starts = [_start(kind, rng) for _ in cells]
    grads = rng.normal(size=(members, T, B, H))
    finals = [_start(kind, rng) for _ in cells]
    mask = rng.random((T, B)) < 0.8
    for dt in ("float32", "float64") if any_backend.supports_float64 else ("float32",):
        for options in (dict(), dict(truncate=2, burn_in=1, mask=mask), dict(inputs=False)):
            rec = group.record_sequence(xs, starts, resets, backend=any_backend, dtype=dt)
            assert rec.hs.shape == (members, T, B, H) and rec.steps == (T, B)
            got = rec.backward(grads, finals, **options)
            assert len(got) == members
            for m, cell in enumerate(cells):
                own = cell.record_sequence(xs, starts[m], resets, backend=any_backend, dtype=dt)
                assert np.array_equal(rec.hs[m], own.hs), f"member {m} outputs"
                want = own.backward(grads[m], finals[m], **options)
                _assert_same(got[m], want, f"member {m} {options}")
                if options.get("inputs") is False:
                    assert "x" not in got[m]


def test_batch_first_states_and_a_list_of_gradients(any_backend):
    rng = np.random.default_rng(3)
    cells = _cells("lstm", 2)
    group = clnet.CellGroup(cells)
    xs = rng.normal(size=(B, T, I))  # batch first
    resets = rng.random((B, T)) < 0.3
    states = [cell.initial_state(B, backend=any_backend) for cell in cells]
    for cell, state in zip(cells, states):  # device-resident initial states, as PPO's stored ones
        cell.sequence(rng.normal(size=(3, B, I)), state)
    before = [(s.h.copy(), s.c.copy()) for s in states]
    rec = group.record_sequence(xs, states, resets, batch_first=True, backend=any_backend)
    assert rec.hs.shape == (2, B, T, H)
    grads = [rng.normal(size=(B, T, H)), None]  # no gradient into the second member's outputs
    got = rec.backward(grads, inputs=False)
    for m, cell in enumerate(cells):
        own = cell.record_sequence(xs, states[m], resets, batch_first=True, backend=any_backend)
        assert np.array_equal(rec.hs[m], own.hs)
        _assert_same(got[m], own.backward(grads[m] if grads[m] is not None else np.zeros((B, T, H)), inputs=False),
                     f"member {m}")
    for state, (h, c) in zip(states, before):  # recording changes no state
        assert np.array_equal(state.h, h) and np.array_equal(state.c, c)


def test_per_step_launches_and_large_weights(opencl_backend):
    """The per-step launches (no one-launch batch at all) and weights laid out by the device's
    transposes (above the backend's small_upload_bytes()), each member's own."""
    from clnet.opencl.tuning import overriding

    rng = np.random.default_rng(4)
    for cells, batch, one_launch in ((_cells("lstm", 2, hidden=7), 150, False), (_cells("gru", 2, hidden=9), 13, False),
                                     (_cells("rnn_tanh", 3, hidden=20), 6, False),
                                     (_cells("lstm", 2, hidden=260), 4, True)):
        hidden = cells[0].hidden_size
        xs, resets = rng.normal(size=(3, batch, I)), rng.random((3, batch)) < 0.2
        grads = rng.normal(size=(len(cells), 3, batch, hidden))
        with overriding(opencl_backend, "bptt", **({} if one_launch else {"one_launch_batch": 0})):
            rec = clnet.CellGroup(cells).record_sequence(xs, None, resets, backend=opencl_backend)
            assert rec._saved.sizes.one_launch == one_launch and rec._saved.sizes.members == len(cells)
            got = rec.backward(grads, burn_in=1)
            for m, cell in enumerate(cells):
                own = cell.record_sequence(xs, None, resets, backend=opencl_backend)
                assert np.array_equal(rec.hs[m], own.hs)
                _assert_same(got[m], own.backward(grads[m], burn_in=1), f"hidden {hidden} batch {batch} member {m}")


def test_a_group_made_again_over_the_same_cells_reuses_their_prepared_weights(any_backend):
    cells = _cells("lstm", 2)
    xs = np.zeros((T, B, I))
    clnet.CellGroup(cells).record_sequence(xs, None, None, backend=any_backend)
    copies = [len(c._device_copies._by_backend[any_backend]) for c in cells]
    for _ in range(5):  # an evaluation loop that makes its group each time
        clnet.CellGroup(cells).record_sequence(xs, None, None, backend=any_backend)
    assert [len(c._device_copies._by_backend[any_backend]) for c in cells] == copies
    # the same cells in another order are another group, with the other order's results
    swapped = clnet.CellGroup(cells[::-1]).record_sequence(xs, None, None, backend=any_backend)
    straight = clnet.CellGroup(cells).record_sequence(xs, None, None, backend=any_backend)
    assert np.array_equal(swapped.hs[::-1], straight.hs)


def test_a_members_new_weights_are_seen_and_an_old_recording_is_refused(any_backend):
    rng = np.random.default_rng(5)
    cells = _cells("gru", 2)
    group = clnet.CellGroup(cells)
    xs = rng.normal(size=(T, B, I))
    old = group.record_sequence(xs, None, None, backend=any_backend)
    first = old.hs.copy()
    cells[1].load_state_dict({k: v * 0.5 for k, v in cells[1].state_dict().items()})
    with pytest.raises(ValueError, match="weights changed since this group was recorded"):
        old.backward(np.ones((2, T, B, H)))
    new = group.record_sequence(xs, None, None, backend=any_backend)
    assert np.array_equal(new.hs[0], first[0])  # the unchanged member
    assert np.array_equal(new.hs[1], cells[1].record_sequence(xs, None, None, backend=any_backend).hs)
    assert not np.array_equal(new.hs[1], first[1])
    new.backward(np.ones((2, T, B, H)))
    with pytest.raises(RuntimeError, match="run backwards already"):
        new.backward(np.ones((2, T, B, H)))


def test_gradients_as_one_array_like(any_backend):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    cells = _cells("gru", 2)
    xs = rng.normal(size=(T, B, I))
    grads = rng.normal(size=(2, T, B, H))
    group = clnet.CellGroup(cells)
    from_tensor = group.record_sequence(xs, None, None, backend=any_backend).backward(torch.from_numpy(grads))
    from_array = group.record_sequence(xs, None, None, backend=any_backend).backward(grads)
    for got, want in zip(from_tensor, from_array):
        _assert_same(got, want, "tensor")


def test_a_backend_without_the_group_family_runs_member_by_member():
    """A plugin written before the "bptt_group" family existed (RNN and BPTT only) still runs
    groups, with the results of the reference."""
    from clnet_fallback.bptt import BPTTReference
    from clnet_fallback.rnn import RNNReference

    class NoGroups(Backend, RNNReference, BPTTReference):
        spec = "test:no-groups"
        description = "RNN and BPTT families only"
        supports_float64 = True

    plugin = NoGroups()
    assert "bptt_group" not in {f.name for f in clnet.contract.families_of(plugin)}
    rng = np.random.default_rng(6)
    cells = _cells("lstm", 2)
    xs, resets = rng.normal(size=(T, B, I)), rng.random((T, B)) < 0.3
    grads = rng.normal(size=(2, T, B, H))
    group = clnet.CellGroup(cells)
    mine = group.record_sequence(xs, None, resets, backend=plugin, dtype="float64")
    ref = group.record_sequence(xs, None, resets, backend="numpy", dtype="float64")
    assert np.array_equal(mine.hs, ref.hs)
    for got, want in zip(mine.backward(grads, inputs=False), ref.backward(grads, inputs=False)):
        _assert_same(got, want, "member by member")


def test_bad_groups_and_arguments_are_refused_before_device_work(any_backend, monkeypatch):
    from clnet_fallback.bptt import BPTTReference
    from clnet.contract import MemberByMember
    from clnet.opencl.bptt import BPTTKernels

    def forbidden(*args, **kwargs):
        raise AssertionError("device work ran although the arguments were bad")

    lstm = _cells("lstm", 2)
    with pytest.raises(ValueError, match="at least one cell"):
        clnet.CellGroup([])
    with pytest.raises(TypeError, match=r"cells\[1\] must be a clnet LSTMCell, GRUCell or RNNCell"):
        clnet.CellGroup([lstm[0], clnet.LSTM(I, H, 2)])
    with pytest.raises(TypeError, match="cells must be a sequence"):
        clnet.CellGroup(lstm[0])
    for other in (clnet.GRUCell(I, H), clnet.LSTMCell(I + 1, H), clnet.LSTMCell(I, H + 1), clnet.LSTMCell(I, H, bias=False)):
        with pytest.raises(ValueError, match="must share kind, input_size, hidden_size and bias"):
            clnet.CellGroup([lstm[0], other])
    for op in ("rnn_forward_saving_group", "rnn_backward_saved_group"):
        monkeypatch.setattr(BPTTKernels, op, forbidden)
        monkeypatch.setattr(MemberByMember, op, forbidden)
    monkeypatch.setattr(BPTTReference, "rnn_forward_saving", forbidden)
    group = clnet.CellGroup(lstm)
    xs = np.zeros((T, B, I))
    z = np.zeros((B, H))
    cases = [(dict(initial_states=[None]), ValueError, r"one initial state per member \(2\), got 1"),
             (dict(initial_states=z), TypeError, "initial_states must be None or a list"),
             (dict(initial_states=[(z, z), z]), TypeError, r"initial_states\[1\]: initial_state of an LSTM must be a pair"),
             (dict(initial_states=[None, lstm[0].initial_state(B, backend=any_backend)]), ValueError,
              r"initial_states\[1\]: initial_state belongs to another cell"),
             (dict(initial_states=[lstm[0].initial_state(B + 1, backend=any_backend), None]), ValueError,
              r"initial_states\[0\]: xs has batch size 5 but initial_state holds 6"),
             (dict(xs=np.zeros((T, B, I + 1))), ValueError, "xs must have 3 features"),
             (dict(resets=np.zeros((T, B + 1))), ValueError, r"resets must have shape \(6, 5\)")]
    for change, exc, message in cases:
        args = dict(dict(xs=xs, initial_states=None, resets=None), **change)
        with pytest.raises(exc, match=message):
            group.record_sequence(args["xs"], args["initial_states"], args["resets"], backend=any_backend)
    with pytest.raises((TypeError, ValueError), match="^dtype"):  # not blamed on a member
        group.record_sequence(xs, None, None, backend=any_backend, dtype="int32")
    monkeypatch.undo()
    rec = group.record_sequence(xs, None, None, backend=any_backend)
    for op in ("rnn_backward_saved_group",):
        monkeypatch.setattr(BPTTKernels, op, forbidden)
        monkeypatch.setattr(MemberByMember, op, forbidden)
    for grads, final, exc, message in [
            (np.zeros((3, T, B, H)), None, ValueError, r"grad_hs must have one entry per member along its first axis"),
            ([np.zeros((T, B, H))], None, ValueError, r"grad_hs must be None or hold one entry per member \(2\)"),
            ([np.zeros((T, B, H)), np.zeros((T, B, H + 1))], None, ValueError, "member 1: grad_hs must have the shape"),
            (None, [None], ValueError, r"grad_final must be None or hold one entry per member"),
            (None, [None, z], TypeError, "member 1: grad_final of an LSTM must be a pair")]:
        with pytest.raises(exc, match=message):
            rec.backward(grads, final)
    with pytest.raises(TypeError, match="inputs must be True or False"):
        rec.backward(None, inputs=1)
    for shared, message in ((dict(burn_in=T), "^burn_in must be smaller"), (dict(truncate=0), "^truncate"),
                            (dict(mask=np.ones((T, B + 1))), "^mask must have shape")):
        with pytest.raises(ValueError, match=message):  # a shared argument's error names no member
            rec.backward(None, **shared)
    monkeypatch.undo()
    assert len(rec.backward(None)) == 2  # every refusal above left the recording usable
