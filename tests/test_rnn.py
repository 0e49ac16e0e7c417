"""Recurrent cells: conformance on every backend, PyTorch itself as the oracle, Keras
layouts against a hand-written Keras reference, bad input, and state semantics."""
import numpy as np
import pytest
import torch

import clnet
from clnet import conformance
from clnet.conformance import rnn as rnn_checks  # noqa: F401  (registers the checks)
from conftest import force_params

RNN_CHECKS = [c for c in conformance.checks() if c.operation.startswith("rnn.")]
TOL32 = dict(rtol=1e-4, atol=2e-5)


# Every registered check runs on every backend in tests/test_conformance.py.
def test_checks_are_listed_for_the_command_line():
    names = {c.operation for c in RNN_CHECKS}
    assert {"rnn.lstm_step", "rnn.lstm_sequence", "rnn.gru_step", "rnn.gru_sequence", "rnn.rnn_step",
            "rnn.rnn_sequence", "rnn.sequence_equals_steps", "rnn.reset_is_fresh_state",
            "rnn.state_not_aliased"} <= names


# ---------------------------------------------------------------------------------------
# PyTorch is the oracle
# ---------------------------------------------------------------------------------------
def _torch_cells():
    torch.manual_seed(0)
    return [
        ("lstm", torch.nn.LSTMCell(5, 7), clnet.LSTMCell),
        ("lstm", torch.nn.LSTMCell(1, 33, bias=False), clnet.LSTMCell),
        ("gru", torch.nn.GRUCell(6, 17), clnet.GRUCell),
        ("gru", torch.nn.GRUCell(3, 1, bias=False), clnet.GRUCell),
        ("rnn", torch.nn.RNNCell(4, 9), clnet.RNNCell),
        ("rnn", torch.nn.RNNCell(4, 19, nonlinearity="relu"), clnet.RNNCell),
    ]


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("index", range(6))
def test_cell_matches_torch(any_backend, index, batched):
    kind, module, cls = _torch_cells()[index]
    cell = cls.from_torch(module)
    B = 11 if batched else None
    shape = (B,) if batched else ()
    x = torch.randn(*shape, module.input_size)
    h0 = torch.randn(*shape, module.hidden_size)
    c0 = torch.randn(*shape, module.hidden_size)
    with torch.no_grad():
        if kind == "lstm":
            h_ref, c_ref = module(x, (h0, c0))
            h, c = cell(x, (h0, c0), backend=any_backend)
            np.testing.assert_allclose(c, c_ref.numpy(), **TOL32)
        else:
            h_ref = module(x, h0)
            h = cell(x, h0, backend=any_backend)
    assert h.shape == tuple(h_ref.shape)
    np.testing.assert_allclose(h, h_ref.numpy(), **TOL32)


def test_cell_without_state_starts_from_zero(any_backend):
    module = torch.nn.LSTMCell(3, 5)
    cell = clnet.LSTMCell.from_torch(module)
    x = torch.randn(4, 3)
    with torch.no_grad():
        h_ref, c_ref = module(x)
    h, c = cell(x, backend=any_backend)
    np.testing.assert_allclose(h, h_ref.numpy(), **TOL32)
    np.testing.assert_allclose(c, c_ref.numpy(), **TOL32)


def test_weights_from_a_mapping_of_tensors_and_lists(any_backend):
    module = torch.nn.GRUCell(2, 3)
    sd = module.state_dict()
    cell = clnet.GRUCell(2, 3, weights=dict(sd))  # torch tensors as they are
    as_lists = clnet.GRUCell(2, 3)
    as_lists.load_state_dict({k: v.tolist() for k, v in sd.items()})
    x = torch.randn(5, 2)
    with torch.no_grad():
        ref = module(x).numpy()
    np.testing.assert_allclose(cell(x, backend=any_backend), ref, **TOL32)
    np.testing.assert_allclose(as_lists(x.numpy(), backend=any_backend), ref, **TOL32)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_stepping_with_resets_matches_a_torch_loop(any_backend, kind):
    torch.manual_seed(1)
    B, I, H, T = 9, 4, 21, 12
    module = torch.nn.LSTMCell(I, H) if kind == "lstm" else torch.nn.GRUCell(I, H)
    cell = (clnet.LSTMCell if kind == "lstm" else clnet.GRUCell).from_torch(module)
    rng = np.random.default_rng(2)
    xs = rng.normal(size=(T, B, I)).astype(np.float32)
    dones = rng.random((T, B)) < 0.3
    state = cell.initial_state(B, backend=any_backend)
    h = torch.zeros(B, H)
    c = torch.zeros(B, H)
    stepped = []
    with torch.no_grad():
        for t in range(T):
            keep = torch.from_numpy(1 - dones[t].astype(np.float32))[:, None]
            if kind == "lstm":
                h, c = module(torch.from_numpy(xs[t]), (h * keep, c * keep))
            else:
                h = module(torch.from_numpy(xs[t]), h * keep)
            got = cell.step(xs[t], state, reset=dones[t])
            np.testing.assert_allclose(got, h.numpy(), **TOL32)
            stepped.append(h.numpy())
    np.testing.assert_allclose(state.h, h.numpy(), **TOL32)
    if kind == "lstm":
        np.testing.assert_allclose(state.c, c.numpy(), **TOL32)
    # The same rollout as one sequence call, in both layouts.
    seq_state = cell.initial_state(B, backend=any_backend)
    np.testing.assert_allclose(cell.sequence(xs, seq_state, resets=dones), np.stack(stepped), **TOL32)
    bf_state = cell.initial_state(B, backend=any_backend)
    out = cell.sequence(xs.transpose(1, 0, 2), bf_state, resets=dones.T, batch_first=True)
    np.testing.assert_allclose(out, np.stack(stepped).transpose(1, 0, 2), **TOL32)
    np.testing.assert_allclose(bf_state.h, h.numpy(), **TOL32)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_stacked_matches_torch(any_backend, kind, batch_first, with_state):
    torch.manual_seed(3)
    I, H, L, T, B = 6, 13, 3, 7, 5
    tcls, ccls = (torch.nn.LSTM, clnet.LSTM) if kind == "lstm" else (torch.nn.GRU, clnet.GRU)
    module = tcls(I, H, num_layers=L, batch_first=batch_first)
    model = ccls.from_torch(module)
    xs = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
    h0, c0 = torch.randn(L, B, H), torch.randn(L, B, H)
    hx = ((h0, c0) if kind == "lstm" else h0) if with_state else None
    with torch.no_grad():
        ref_out, ref_state = module(xs, hx)
    out, state = model(xs, hx, backend=any_backend)
    np.testing.assert_allclose(out, ref_out.numpy(), **TOL32)
    if kind == "lstm":
        np.testing.assert_allclose(state[0], ref_state[0].numpy(), **TOL32)
        np.testing.assert_allclose(state[1], ref_state[1].numpy(), **TOL32)
    else:
        np.testing.assert_allclose(state, ref_state.numpy(), **TOL32)
    # load_state_dict with torch's names gives the same model
    again = ccls(I, H, L, batch_first=batch_first)
    again.load_state_dict(module.state_dict())
    np.testing.assert_allclose(again(xs, hx, backend=any_backend)[0], ref_out.numpy(), **TOL32)
    assert set(again.state_dict()) == set(module.state_dict())


def test_stacked_unbatched_matches_torch(any_backend):
    module = torch.nn.LSTM(3, 4, num_layers=2)
    model = clnet.LSTM.from_torch(module)
    xs = torch.randn(6, 3)
    with torch.no_grad():
        ref_out, (ref_h, ref_c) = module(xs)
    out, (h, c) = model(xs, backend=any_backend)
    assert out.shape == (6, 4) and h.shape == (2, 4)
    np.testing.assert_allclose(out, ref_out.numpy(), **TOL32)
    np.testing.assert_allclose(c, ref_c.numpy(), **TOL32)


def test_stacked_sequence_with_layer_states(any_backend):
    model = clnet.GRU(3, 8, num_layers=2, seed=4)
    xs = np.random.default_rng(5).normal(size=(5, 2, 3))
    states = model.initial_state(2, backend=any_backend)
    out = model.sequence(xs, states)
    ref, h_n = model(xs, backend=any_backend)
    np.testing.assert_allclose(out, ref, **TOL32)
    np.testing.assert_allclose(np.stack([s.h for s in states]), h_n, **TOL32)


def test_float64_matches_torch_double(any_backend):
    module = torch.nn.LSTM(4, 10, num_layers=2).double()
    model = clnet.LSTM.from_torch(module)
    xs = torch.randn(5, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        ref = module(xs)[0].numpy()
    out = model(xs, backend=any_backend, dtype="float64")[0]
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------
# Keras layouts, against the Keras equations written out by hand (TF is not installed)
# ---------------------------------------------------------------------------------------
def _sig(z):
    return 1 / (1 + np.exp(-z))


def keras_lstm_step(x, h, c, kernel, recurrent_kernel, bias):
    z = x @ kernel + h @ recurrent_kernel + bias
    i, f, g, o = np.split(z, 4, axis=-1)  # Keras: i, f, c, o
    c = _sig(f) * c + _sig(i) * np.tanh(g)
    return _sig(o) * np.tanh(c), c


def keras_gru_step(x, h, kernel, recurrent_kernel, bias):
    """tf.keras GRUCell with reset_after=True: gate order z, r, h."""
    mx = x @ kernel + bias[0]
    mh = h @ recurrent_kernel + bias[1]
    xz, xr, xh = np.split(mx, 3, axis=-1)
    hz, hr, hh = np.split(mh, 3, axis=-1)
    z = _sig(xz + hz)
    r = _sig(xr + hr)
    hhat = np.tanh(xh + r * hh)
    return z * h + (1 - z) * hhat


def test_keras_lstm_import(any_backend):
    rng = np.random.default_rng(6)
    I, U, B = 5, 7, 4
    kernel, rk, bias = rng.normal(size=(I, 4 * U)), rng.normal(size=(U, 4 * U)), rng.normal(size=4 * U)
    cell = clnet.LSTMCell.from_keras(kernel, rk, bias)
    x, h, c = rng.normal(size=(B, I)), rng.normal(size=(B, U)), rng.normal(size=(B, U))
    h_ref, c_ref = keras_lstm_step(x, h, c, kernel, rk, bias)
    got_h, got_c = cell(x, (h, c), backend=any_backend, dtype="float64" if any_backend.supports_float64 else None)
    np.testing.assert_allclose(got_h, h_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_c, c_ref, rtol=1e-5, atol=1e-5)
    no_bias = clnet.LSTMCell.from_keras(kernel, rk)
    np.testing.assert_allclose(no_bias(x, (h, c), backend=any_backend)[0],
                               keras_lstm_step(x, h, c, kernel, rk, np.zeros(4 * U))[0], **TOL32)


def test_keras_gru_import(any_backend):
    rng = np.random.default_rng(7)
    I, U, B = 4, 6, 3
    kernel, rk, bias = rng.normal(size=(I, 3 * U)), rng.normal(size=(U, 3 * U)), rng.normal(size=(2, 3 * U))
    cell = clnet.GRUCell.from_keras(kernel, rk, bias)
    x, h = rng.normal(size=(B, I)), rng.normal(size=(B, U))
    ref = keras_gru_step(x, h, kernel, rk, bias)
    np.testing.assert_allclose(cell(x, h, backend=any_backend), ref, **TOL32)
    with pytest.raises(ValueError, match=r"bias must have shape \(2, 3\*units\)"):
        clnet.GRUCell.from_keras(kernel, rk, bias[0])  # reset_after=False layout


# ---------------------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------------------
def test_default_init_is_torch_uniform_and_seeded():
    a = clnet.LSTMCell(8, 25, seed=42).state_dict()
    b = clnet.LSTMCell(8, 25, seed=42).state_dict()
    other = clnet.LSTMCell(8, 25, seed=43).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert np.abs(a[k]).max() <= 1 / 5
        assert np.abs(a[k]).max() > 0.15  # fills the range
    assert not np.array_equal(a["weight_ih"], other["weight_ih"])
    assert set(a) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}
    assert set(clnet.GRUCell(2, 3, bias=False).state_dict()) == {"weight_ih", "weight_hh"}


# ---------------------------------------------------------------------------------------
# Bad input: clear errors, before any device work, state unchanged
# ---------------------------------------------------------------------------------------
@pytest.fixture
def lstm_state(any_backend):
    cell = clnet.LSTMCell(3, 5, seed=0)
    state = cell.initial_state(4, backend=any_backend)
    state.set(np.full((4, 5), 0.5), np.full((4, 5), -0.25))
    return cell, state


def _unchanged(state):
    np.testing.assert_array_equal(state.h, np.full((4, 5), 0.5, dtype=state.dtype))
    np.testing.assert_array_equal(state.c, np.full((4, 5), -0.25, dtype=state.dtype))


def test_wrong_input_width(lstm_state):
    cell, state = lstm_state
    with pytest.raises(ValueError, match=r"x must have 3 features"):
        cell.step(np.zeros((4, 2)), state)
    with pytest.raises(ValueError, match=r"xs must have 3 features"):
        cell.sequence(np.zeros((2, 4, 6)), state)
    _unchanged(state)


def test_batch_size_differs_from_the_state(lstm_state):
    cell, state = lstm_state
    with pytest.raises(ValueError, match=r"batch size 5 but the state holds 4"):
        cell.step(np.zeros((5, 3)), state)
    with pytest.raises(ValueError, match=r"batch size 2 but the state holds 4"):
        cell.sequence(np.zeros((3, 2, 3)), state)
    with pytest.raises(ValueError, match=r"x must be 2-dimensional"):
        cell.step(np.zeros(3), state)
    _unchanged(state)


def test_reset_mask_of_wrong_length_or_values(lstm_state):
    cell, state = lstm_state
    with pytest.raises(ValueError, match=r"reset must have shape \(4,\)"):
        cell.step(np.zeros((4, 3)), state, reset=[1, 0, 0])
    with pytest.raises(ValueError, match=r"resets must have shape \(2, 4\)"):
        cell.sequence(np.zeros((2, 4, 3)), state, resets=np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"only 0 and 1"):
        cell.step(np.zeros((4, 3)), state, reset=[0, 2, 0, 0])
    with pytest.raises(ValueError, match=r"mask must have shape \(4,\)"):
        state.reset([1, 1])
    _unchanged(state)


def test_state_from_another_cell_or_backend(lstm_state, any_backend):
    cell, state = lstm_state
    twin = clnet.LSTMCell(3, 5, seed=0)
    with pytest.raises(ValueError, match=r"state belongs to another cell"):
        twin.step(np.zeros((4, 3)), state)
    with pytest.raises(TypeError, match=r"RecurrentState"):
        cell.step(np.zeros((4, 3)), (np.zeros((4, 5)), np.zeros((4, 5))))
    others = [s for s in ["numpy"] + [i.spec for i in clnet.backends() if i.usable]
              if clnet.get_backend(s) is not any_backend]
    if others:
        with pytest.raises(ValueError, match=r"state lives on backend"):
            cell.step(np.zeros((4, 3)), state, backend=others[0])
    _unchanged(state)


def test_weight_shapes_name_the_tensor_and_shape():
    cell = clnet.LSTMCell(3, 5, seed=0)
    before = cell.state_dict()
    good = dict(before)
    with pytest.raises(ValueError, match=r"weight_hh must have shape \(4\*hidden_size, hidden_size\) = \(20, 5\), "
                                         r"got shape \(20, 4\)"):
        cell.load_state_dict({**good, "weight_hh": np.zeros((20, 4))})
    with pytest.raises(ValueError, match=r"bias_ih must have shape .* = \(20,\)"):
        cell.load_state_dict({**good, "bias_ih": np.zeros(15)})
    with pytest.raises(ValueError, match=r"missing \['bias_hh'\]"):
        cell.load_state_dict({k: v for k, v in good.items() if k != "bias_hh"})
    with pytest.raises(TypeError, match=r"weight_ih must hold real numbers"):
        cell.load_state_dict({**good, "weight_ih": np.zeros((20, 3), dtype=bool)})
    for k, v in cell.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    model = clnet.LSTM(3, 5, num_layers=2, seed=0)
    sd = model.state_dict()
    with pytest.raises(ValueError, match=r"weight_ih_l1 must have shape .* = \(20, 5\)"):
        model.load_state_dict({**sd, "weight_ih_l1": np.zeros((20, 3))})
    np.testing.assert_array_equal(model.state_dict()["weight_ih_l0"], sd["weight_ih_l0"])
    with pytest.raises(ValueError, match=r"bidirectional"):
        clnet.LSTM.from_torch(torch.nn.LSTM(3, 5, bidirectional=True))
    with pytest.raises(TypeError, match=r"torch.nn.GRUCell"):
        clnet.GRUCell.from_torch(torch.nn.LSTMCell(3, 5))


def test_bad_sizes_and_states():
    with pytest.raises(ValueError, match=r"hidden_size must be >= 1"):
        clnet.LSTMCell(3, 0)
    with pytest.raises(ValueError, match=r"nonlinearity"):
        clnet.RNNCell(3, 4, nonlinearity="sigmoid")
    cell = clnet.LSTMCell(3, 5)
    state = cell.initial_state(2, backend="numpy")
    with pytest.raises(ValueError, match=r"h must have shape \(batch_size, hidden_size\) = \(2, 5\)"):
        state.set(np.zeros((2, 4)), np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"needs both h and c"):
        state.set(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 5\)"):
        cell(np.zeros((2, 3)), (np.zeros((3, 5)), np.zeros((3, 5))))
    gru_state = clnet.GRUCell(3, 5).initial_state(2, backend="numpy")
    with pytest.raises(AttributeError, match=r"no cell state c"):
        gru_state.c


# ---------------------------------------------------------------------------------------
# State semantics
# ---------------------------------------------------------------------------------------
def test_state_set_reset_and_read(any_backend):
    cell = clnet.LSTMCell(2, 3, seed=1)
    state = cell.initial_state(3, backend=any_backend, dtype="float64" if any_backend.supports_float64 else None)
    assert state.h.shape == (3, 3) and not state.h.any() and not state.c.any()
    h = np.arange(9.0).reshape(3, 3)
    state.set(h, -h)
    np.testing.assert_array_equal(state.h, h)
    state.reset([0, 1, 0])
    np.testing.assert_array_equal(state.h, h * np.array([[1], [0], [1]]))
    np.testing.assert_array_equal(state.c, -h * np.array([[1], [0], [1]]))
    state.reset()
    assert not state.h.any()
    assert state.batch_size == 3 and state.cell is cell and state.backend is any_backend


def test_use_backend_is_honoured(any_backend):
    cell = clnet.GRUCell(2, 3)
    with clnet.use_backend(any_backend):
        state = cell.initial_state(2)
        model = clnet.GRU(2, 3)
        model(np.zeros((2, 1, 2)))
    assert state.backend is any_backend


def test_weights_change_after_use(any_backend):
    """Weights loaded after a first call are used by the next call (no stale device copy)."""
    cell = clnet.RNNCell(2, 3, seed=0)
    x = np.ones((1, 2))
    first = cell(x, backend=any_backend)
    cell.load_state_dict({k: v * 0 for k, v in cell.state_dict().items()})
    np.testing.assert_array_equal(cell(x, backend=any_backend), np.zeros((1, 3)))
    assert first.any()


def test_empty_sequence_leaves_the_state(any_backend):
    cell = clnet.LSTMCell(2, 3, seed=0)
    state = cell.initial_state(2, backend=any_backend)
    state.set(np.ones((2, 3)), np.ones((2, 3)))
    assert cell.sequence(np.zeros((0, 2, 2)), state).shape == (0, 2, 3)
    np.testing.assert_array_equal(state.h, np.ones((2, 3)))


def test_opencl_state_lives_on_the_device(opencl_backend):
    import pyopencl as cl

    cell = clnet.LSTMCell(4, 20, seed=0)
    state = cell.initial_state(3, backend=opencl_backend)
    storage = state._storage
    assert all(isinstance(b, cl.Buffer) for b in storage.h_bufs) and isinstance(storage.c, cl.Buffer)
    cell.step(np.ones((3, 4)), state)
    assert isinstance(storage.h_bufs[storage.cur], cl.Buffer)


def test_long_sequences_are_projected_in_chunks(opencl_backend, monkeypatch):
    """The projected gates of a long sequence are computed chunk by chunk within a budget."""
    import clnet.opencl.rnn as rnn_module

    cell = clnet.LSTMCell(3, 18, seed=0)
    rng = np.random.default_rng(8)
    xs = rng.normal(size=(7, 5, 3))
    resets = rng.random((7, 5)) < 0.3
    whole = cell.sequence(xs, cell.initial_state(5, backend="numpy", dtype="float64"), resets)
    # 5 rows x 4 gates x 32 padded units x 4 bytes = 2560 bytes per step: chunks of 2 steps
    force_params(monkeypatch, opencl_backend, "rnn", projection="batched")
    monkeypatch.setattr(rnn_module, "GATE_BUDGET", 2 * 5 * 4 * 32 * 4)
    state = cell.initial_state(5, backend=opencl_backend)
    np.testing.assert_allclose(cell.sequence(xs, state, resets), whole, **TOL32)
    np.testing.assert_allclose(state.h, whole[-1], **TOL32)


@pytest.mark.parametrize("mask", [[True, False, True], [1, 0, 1], [1.0, 0.0, 1.0], "tensor"])
def test_reset_masks_of_any_real_kind(any_backend, mask):
    if mask == "tensor":
        mask = torch.tensor([1, 0, 1])
    cell = clnet.GRUCell(2, 4, seed=0)
    state = cell.initial_state(3, backend=any_backend)
    state.set(np.ones((3, 4)))
    h = cell.step(np.ones((3, 2)), state, reset=mask)
    fresh = cell.step(np.ones((1, 2)), cell.initial_state(1, backend=any_backend))
    np.testing.assert_allclose(h[[0, 2]], np.repeat(fresh, 2, axis=0), **TOL32)
    assert not np.allclose(h[1], fresh[0])


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_large_batch_matches_torch(any_backend, kind):
    """Batches past the small-batch tile and hidden sizes with a partial last block."""
    torch.manual_seed(9)
    B, I, H, T = 100, 7, 37, 3
    tcls, ccls = {"lstm": (torch.nn.LSTM, clnet.LSTM), "gru": (torch.nn.GRU, clnet.GRU),
                  "rnn": (torch.nn.RNNCell, clnet.RNNCell)}[kind]
    xs = torch.randn(T, B, I)
    if kind == "rnn":
        module = tcls(I, H)
        cell = ccls.from_torch(module)
        state = cell.initial_state(B, backend=any_backend)
        got = cell.sequence(xs, state)
        h = torch.zeros(B, H)
        with torch.no_grad():
            for t in range(T):
                h = module(xs[t], h)
                np.testing.assert_allclose(got[t], h.numpy(), **TOL32)
        np.testing.assert_allclose(cell.step(xs[0], state), module(xs[0], h).detach().numpy(), **TOL32)
        return
    module = tcls(I, H, num_layers=2)
    with torch.no_grad():
        ref = module(xs)[0].numpy()
    np.testing.assert_allclose(ccls.from_torch(module)(xs, backend=any_backend)[0], ref, **TOL32)


@pytest.mark.parametrize("mode", ["one launch", "fused", "batched"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_relu"])
def test_every_sequence_mode(opencl_backend, monkeypatch, mode, kind):
    """All steps in one launch, a launch per step with the projection inside, or the inputs
    projected for many steps at once (in chunks): the same sequence."""
    import clnet.opencl.rnn as rnn_module
    from clnet.conformance.rnn import make_cell

    force_params(monkeypatch, opencl_backend, "rnn", projection="batched" if mode == "batched" else "fused",
                 one_launch_batch=128 if mode == "one launch" else 0)
    monkeypatch.setattr(rnn_module, "GATE_BUDGET", 2 * 70 * 4 * 48 * 4)  # chunks of 2 steps at most
    cell = make_cell(kind, 5, 37, True, 10)
    rng = np.random.default_rng(11)
    for B in (3, 70):
        xs = rng.normal(size=(7, B, 5))
        resets = rng.random((7, B)) < 0.3
        want = cell.sequence(xs, cell.initial_state(B, backend="numpy", dtype="float64"), resets)
        state = cell.initial_state(B, backend=opencl_backend)
        np.testing.assert_allclose(cell.sequence(xs, state, resets), want, **TOL32)
        np.testing.assert_allclose(state.h, want[-1], **TOL32)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("dtype,hidden", [(np.float32, 512), (np.float32, 500), (np.float64, 256)])
def test_large_hidden_sizes_laid_out_with_an_odd_block_count_agree(opencl_backend, kind, dtype, hidden, rng):
    """From 32 vectors of hidden units on, the device layout adds a padding block to make
    their count odd (clnet/opencl/rnn.py: padded_hidden, against cache-set conflicts): steps,
    sequences with resets, recordings and their gradients still equal the float64 reference,
    and the state read back has exactly the hidden size."""
    from clnet.opencl.rnn import padded_hidden, vector_width

    vw = vector_width(dtype)
    assert (padded_hidden(hidden, vw) // vw) % 2 == 1 and padded_hidden(hidden, vw) > hidden
    make = {"lstm": clnet.LSTMCell, "gru": clnet.GRUCell, "rnn_tanh": clnet.RNNCell}[kind]
    cell = make(7, hidden, seed=3)
    T, B = 4, 5
    xs = rng.normal(size=(T, B, 7))
    resets = np.zeros((T, B), bool)
    resets[2, 1] = True
    grad = rng.normal(size=(T, B, hidden))
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)

    def run(backend, dt):
        state = cell.initial_state(B, backend=backend, dtype=dt)
        first = cell.step(xs[0], state)
        hs = cell.sequence(xs, state, resets=resets)
        grads = cell.backward_sequence(xs, None, resets, grad, backend=backend, dtype=dt)
        recorded = cell.record_sequence(xs, None, resets, backend=backend, dtype=dt)
        again = recorded.backward(grad)
        return first, hs, state.h, grads, recorded.hs, again

    got, ref = run(opencl_backend, dtype), run("numpy", np.float64)
    for g, r in zip(got[:3] + got[4:5], ref[:3] + ref[4:5]):
        assert np.asarray(g).shape == np.asarray(r).shape
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), **tol)
    for g_dict, r_dict in ((got[3], ref[3]), (got[5], ref[5])):
        assert set(g_dict) == set(r_dict)
        for k in r_dict:
            np.testing.assert_allclose(g_dict[k], r_dict[k], err_msg=k, **tol)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_stacked_layers_of_a_large_hidden_size_agree_through_time(opencl_backend, kind, rng):
    """A layer above one of H=500 (laid out as 528 units) reads that layer's padded rows:
    its input weights are padded alike, so the sequence and every layer's gradients equal
    the float64 reference (its input padding had been the plain vector multiple, 512)."""
    model = getattr(clnet, kind)(7, 500, num_layers=2, seed=2)
    T, B = 4, 3
    xs = rng.normal(size=(T, B, 7))
    grad = rng.normal(size=(T, B, 500))
    got = model.sequence(xs, model.initial_state(B, backend=opencl_backend))
    ref = model.sequence(xs, model.initial_state(B, backend="numpy", dtype=np.float64))
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=2e-4, atol=2e-5)
    g = model.backward_sequence(xs, None, None, grad, backend=opencl_backend)
    r = model.backward_sequence(xs, None, None, grad, backend="numpy", dtype=np.float64)
    assert set(g) == set(r)
    for k in r:
        np.testing.assert_allclose(g[k], r[k], rtol=2e-4, atol=2e-4 * max(1.0, float(np.abs(r[k]).max())),
                                   err_msg=k)


def test_uninterleaving_inverts_the_layouts_that_interleave_and_gate_rows_define():
    """uninterleave_rows (BPTT's weight gradients, one copy) and uninterleave (the biases) give
    back the gate-stacked weights that gate_rows and interleave laid out, padded or not, along
    either axis, for column ranges, and with a leading member axis."""
    from clnet.opencl import rnn as R

    rng = np.random.default_rng(5)
    for vw in (8, 16):
        for G, H, K, lead in ((4, 32, 40, ()), (4, 37, 21, (2,)), (3, 16, 40, (3,)), (1, 50, 7, ())):
            hp = R.padded_hidden(H, vw)
            w = rng.normal(size=lead + (G * H, K))
            members = w.reshape((-1, G * H, K))
            rows = np.stack([R.gate_rows(m, G, H, hp, vw, K, np.float64, np.empty((G * hp, K))) for m in members])
            rows = rows.reshape(lead + (G * hp, K))
            for start, stop in ((0, min(5, K)), (K // 2, K), (0, K)):
                got = R.uninterleave_rows(rows, G, H, vw, start, stop)
                assert got.flags.c_contiguous
                assert np.array_equal(got, w[..., start:stop]), (vw, G, H, lead, start, stop)
            columns = np.stack([R.interleave(m, G, H, hp, vw) for m in members]).reshape(lead + (K, G * hp))
            assert np.array_equal(R.uninterleave(columns, G, H, vw, -1), np.swapaxes(w, -1, -2))
            assert np.array_equal(R.uninterleave(np.swapaxes(columns, -1, -2), G, H, vw, -2), w)
            bias = columns[..., 0, :]  # one row of the layout: a bias vector per member
            assert np.array_equal(R.uninterleave(bias, G, H, vw, -1), w[..., :, 0])


def test_weights_are_laid_out_on_the_device_as_the_host_layout_defines(opencl_backend):
    """rnn_prepare copies rows on the host (gate_rows) and transposes them on the device: the
    result is the interleaved layout (interleave), at sizes whose tiles do not fill the kernel's
    16 x 16 squares, in both dtypes; BPTT's transposed copies are its exact transposes."""
    import pyopencl as cl
    from clnet.opencl import rnn as R

    be = clnet.get_backend(opencl_backend)
    rng = np.random.default_rng(11)
    for dtype in (np.float32, np.float64):
        try:
            be.check_dtype(dtype)
        except Exception:
            continue
        vw = R.vector_width(dtype)
        # (4, 32, 16): nothing padded, gate_rows's one-pass path
        for G, H, K in ((4, 37, 5), (3, 16, 19), (1, 50, 1), (4, 32, 16)):
            w = rng.normal(size=(G * H, K))
            hp, kp = R.padded_hidden(H, vw), R.padded_hidden(K, vw)
            rows = R.gate_rows(w, G, H, hp, vw, kp, dtype)
            want = np.zeros((kp, G * hp), dtype)
            want[:K] = R.interleave(w, G, H, hp, vw, dtype)
            assert np.array_equal(rows.T, want)
            # written into given memory (a mapped buffer), its old contents overwritten
            into = np.full((G * hp, kp), np.nan, dtype)
            assert R.gate_rows(w, G, H, hp, vw, kp, dtype, out=into) is into
            assert np.array_equal(into, rows), (dtype, G, H, K)
            with be.lock:
                dev = be.transposed(be.to_device(rows), G * hp, kp, dtype, "test")
                back = be.transposed(dev, kp, G * hp, dtype, "test")
                got, again = np.empty((kp, G * hp), dtype), np.empty((G * hp, kp), dtype)
                cl.enqueue_copy(be.queue, got, dev)
                cl.enqueue_copy(be.queue, again, back, is_blocking=True)
            assert np.array_equal(got, want), (dtype, G, H, K)
            assert np.array_equal(again, rows), (dtype, G, H, K)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("mode", ["one launch", "fused", "batched"])
def test_strips_of_row_tiles_give_the_bits_of_single_tiles(opencl_backend, monkeypatch, kind, mode):
    """A work-item owning several row tiles walks the reduction in blocks (kernels/rnn.cl,
    CLNET_RT and CLNET_KC); each output still sums its terms in the same order, so every
    strip height and block length gives bitwise the results of one tile per work-item, also
    where the reduction is shorter than a block, not a multiple of it, and where the batch
    ends inside a strip. And those results equal the float64 reference."""
    from clnet.conformance.rnn import make_cell
    from clnet.opencl.tuning import K_BLOCKS, ROW_STRIPS

    cell = make_cell(kind, 70, 37, True, 12)  # I = 70 and Hp = 48: longer and shorter than blocks of 32-256
    rng = np.random.default_rng(13)
    B, T = 29, 5
    xs = rng.normal(size=(T, B, 70))
    resets = rng.random((T, B)) < 0.3
    mode_params = dict(projection="batched" if mode == "batched" else "fused",
                       one_launch_batch=128 if mode == "one launch" else 0)

    def run(**params):
        with opencl_backend.tuning.overriding("rnn", dict(mode_params, **params)):
            state = cell.initial_state(B, backend=opencl_backend)
            step = cell.step(xs[0], state, reset=resets[0])
            return step, cell.sequence(xs, state, resets)

    ref_state = cell.initial_state(B, backend="numpy", dtype="float64")
    want = cell.step(xs[0], ref_state, reset=resets[0]), cell.sequence(xs, ref_state, resets)
    base = run(step_strip=1, project_strip=1)
    for b, w in zip(base, want):
        np.testing.assert_allclose(b, w, **TOL32)
    # every height above one and every block length, each at least once (one build each)
    pairs = list(zip(ROW_STRIPS[1:] * 2, K_BLOCKS))
    assert {p[0] for p in pairs} == set(ROW_STRIPS[1:]) and {p[1] for p in pairs} == set(K_BLOCKS)
    for strip, k_block in pairs:
        got = run(step_strip=strip, project_strip=strip, k_block=k_block)
        for g, b in zip(got, base):
            assert np.array_equal(g, b), (strip, k_block)


@pytest.mark.parametrize("hidden", [130, 256])
def test_a_groups_large_weights_are_written_into_the_mapped_buffer_in_the_host_layout(opencl_backend, hidden):
    """Weights above the backend's small_upload_bytes() are laid out straight into a mapped device buffer,
    member after member (rnn_prepare_group): each member's device rows and their transpose
    are its own gate_rows and interleave, padded units (130) included; buffers the pool
    handed out before (their old contents) do not leak into the new layout."""
    import pyopencl as cl
    from clnet.opencl import rnn as R

    be = clnet.get_backend(opencl_backend)
    rng = np.random.default_rng(hidden)
    dt, G, I = np.dtype(np.float32), 4, 3
    vw = R.vector_width(dt)
    hp, ip = R.padded_hidden(hidden, vw), R.padded_hidden(I, vw)
    assert G * hp * hp * dt.itemsize > be.small_upload_bytes()  # the mapped path
    for attempt in range(3):  # later attempts get buffers back from the pool
        members = [{"weight_ih": rng.normal(size=(G * hidden, I)), "weight_hh": rng.normal(size=(G * hidden, hidden)),
                    "bias_ih": rng.normal(size=G * hidden), "bias_hh": rng.normal(size=G * hidden)}
                   for _ in range(2)]
        w = be.rnn_prepare_group("lstm", members, hidden, dt)
        got_t = np.empty((2, hp, G * hp), dt)
        got_rows = np.empty((2, G * hp, hp), dt)
        with be.lock:
            cl.enqueue_copy(be.queue, got_t, w.w_hh)
            cl.enqueue_copy(be.queue, got_rows, w.rows[1], is_blocking=True)
        for m, p in enumerate(members):
            want = R.interleave(p["weight_hh"], G, hidden, hp, vw, dt)
            full = np.zeros((hp, G * hp), dt)
            full[:hidden] = want
            assert np.array_equal(got_t[m], full), (attempt, m)
            assert np.array_equal(got_rows[m], R.gate_rows(p["weight_hh"], G, hidden, hp, vw, hp, dt)), (attempt, m)
        del w
