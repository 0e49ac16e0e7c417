"""One non-finite input feature of one environment (issue 12, point 2): the state of
that environment is what the float64 reference gives, and no other row changes.

Padded hidden units (hidden_size not a multiple of the vector width) once multiplied a
non-finite input by their zero weights: inf x 0 = NaN, and the row turned NaN from the
next step on; BPTT's gradients all became NaN where the reference has NaN only in
weight_ih. The general property is the conformance check ``*.nonfinite_rows``.
"""
import numpy as np
import pytest

import clnet

CELLS = {"lstm": clnet.LSTMCell, "gru": clnet.GRUCell, "rnn": clnet.RNNCell}


@pytest.mark.parametrize("kind", sorted(CELLS))
@pytest.mark.parametrize("poison", [np.inf, -np.inf])
def test_one_infinite_input_does_not_poison_the_state(any_backend, kind, poison):
    cell = CELLS[kind](3, 5, seed=1)  # 5 units: padded to 16 (float32) on OpenCL
    state = cell.initial_state(4, backend=any_backend)
    ref = cell.initial_state(4, backend="numpy", dtype="float64")
    x = np.ones((4, 3))
    x[1, 0] = poison
    for xs in (x, np.ones((4, 3)), np.ones((4, 3))):
        h = cell.step(xs, state)
        h_ref = cell.step(xs, ref)
        assert np.array_equal(np.isnan(h), np.isnan(h_ref)), h
        np.testing.assert_allclose(h, h_ref, rtol=1e-4, atol=1e-5)
    assert np.isfinite(h).all()
    seq_state = cell.initial_state(4, backend=any_backend)
    hs = cell.sequence(np.stack([x, np.ones((4, 3))]), seq_state)
    assert np.isfinite(hs).all() and np.isfinite(seq_state.h).all()


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_bptt_gradients_nan_only_where_the_reference_has_them(any_backend, kind):
    cell = CELLS[kind](3, 5, seed=1)
    xs = np.ones((3, 4, 3))
    xs[1, 1, 0] = np.inf
    grads = np.ones((3, 4, 5))
    got = cell.backward_sequence(xs, None, None, grads, backend=any_backend)
    ref = cell.backward_sequence(xs, None, None, grads, backend="numpy", dtype="float64")
    for name in ref:
        assert np.array_equal(np.isnan(got[name]), np.isnan(ref[name])), name
    assert np.isnan(ref["weight_ih"]).any() and np.isfinite(ref["weight_hh"]).all()


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_recording_with_an_infinite_input_matches_backward_sequence(any_backend, kind):
    """record_sequence keeps the forward for the backward: with an infinite input feature in
    one row its outputs stay finite like sequence's, and its gradients are NaN exactly where
    backward_sequence's (and the float64 reference's) are."""
    cell = CELLS[kind](3, 5, seed=1)
    xs = np.ones((3, 4, 3))
    xs[1, 1, 0] = np.inf
    grads = np.ones((3, 4, 5))
    rec = cell.record_sequence(xs, None, None, backend=any_backend)
    assert np.isfinite(rec.hs).all()
    got = rec.backward(grads)
    whole = cell.backward_sequence(xs, None, None, grads, backend=any_backend)
    ref = cell.backward_sequence(xs, None, None, grads, backend="numpy", dtype="float64")
    for name in ref:
        assert np.array_equal(np.isnan(got[name]), np.isnan(ref[name])), name
        np.testing.assert_array_equal(got[name], whole[name])
    assert np.isnan(ref["weight_ih"]).any() and np.isfinite(ref["weight_hh"]).all()
