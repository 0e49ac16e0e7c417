"""Weights near float32's limit (issue 12, point 8): the OpenCL cells group the biases as
the reference (and torch) do, (W_ih x + b_ih) + (W_hh h + b_hh), instead of folding
b_ih + b_hh in advance, which overflowed to inf where the reference stays finite."""
import warnings

import numpy as np
import pytest

import clnet


def _case(kind, seed, scale):
    rng = np.random.default_rng(seed)
    cls = clnet.GRUCell if kind == "gru" else clnet.LSTMCell
    cell = cls(4, 5, seed=0)
    weights = {k: rng.uniform(-1, 1, size=v.shape) * scale for k, v in cell.state_dict().items()}
    cell.load_state_dict(weights)
    x = rng.normal(size=(64, 4)) * rng.choice([1e-3, 1e-1, 1.0])
    h0 = np.tanh(rng.normal(size=(64, 5)))
    return cell, weights, x, (h0 if kind == "gru" else (h0, h0))


def _h(out, kind):
    return out if kind == "gru" else out[0]


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_weights_near_1e38_match_the_float32_reference(opencl_backend, kind):
    mismatched = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the reference's own overflows
        for seed in range(6):
            for scale in (2e38, 3e38):
                cell, _, x, hx = _case(kind, seed, scale)
                got = _h(cell(x, hx, backend=opencl_backend), kind)
                ref = _h(cell(x, hx, backend="numpy", dtype="float32"), kind)
                mismatched += int((~np.isclose(got, ref, rtol=1e-4, atol=1e-4, equal_nan=True)).sum())
    assert mismatched == 0, f"{mismatched} of {6 * 2 * 64 * 5} elements differ from the float32 reference"


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_weights_near_1e38_match_torch(opencl_backend, kind):
    torch = pytest.importorskip("torch")
    cell, weights, x, hx = _case(kind, 5, 3e38)
    module = (torch.nn.GRUCell if kind == "gru" else torch.nn.LSTMCell)(4, 5)
    module.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in weights.items()})
    h0 = torch.tensor(hx if kind == "gru" else hx[0], dtype=torch.float32)
    with torch.no_grad():
        out = module(torch.tensor(x, dtype=torch.float32), h0 if kind == "gru" else (h0, h0))
    expected = (out if kind == "gru" else out[0]).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = _h(cell(x, hx, backend=opencl_backend), kind)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
