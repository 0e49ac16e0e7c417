"""Kernels that could not be interrupted for minutes (issue 12, point 4).

The median aggregation on OpenCL counted ranks pairwise, O(fan-in^2) per node: one node
with 10,000 incoming connections took 18 s. It now bisects over the bits of the values,
O(fan-in * bits), and a population call is split into launches of at most
LAUNCH_TERMS connection terms, waited for one by one, so that Ctrl-C takes effect
between them.
"""
import numpy as np
import pytest

import clnet
from clnet.opencl import fnn as opencl_fnn


def median_node(fan_in, seed=0, values=None):
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=fan_in) if values is None else values
    nodes = [(0, 0.0, 1.0, "identity", "median")]
    conns = [(-(i + 1), 0, float(w), True) for i, w in enumerate(weights)]
    return clnet.FNN.from_graph(fan_in, 1, nodes, conns)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_median_of_a_large_fan_in_equals_numpy(opencl_backend, dtype):
    if dtype == "float64" and not opencl_backend.supports_float64:
        pytest.skip("device has no float64")
    rng = np.random.default_rng(3)
    for fan_in in (3, 4, 1000, 4001):
        net = median_node(fan_in, seed=fan_in)
        x = rng.normal(size=(20, fan_in))
        x[:, : fan_in // 3] = np.round(x[:, : fan_in // 3])  # many ties, zeros of both signs
        x[0, 0], x[1, 1], x[2, 2] = np.inf, -np.inf, np.nan
        got = net(x, backend=opencl_backend, dtype=dtype)
        ref = net(x, backend="numpy", dtype="float64")
        assert np.isnan(got[2]).all() and np.isnan(ref[2]).all()
        np.testing.assert_allclose(got, ref, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-6)


def test_a_long_population_call_is_split_into_bounded_launches(opencl_backend, monkeypatch):
    monkeypatch.setattr(opencl_fnn, "LAUNCH_TERMS", 2**20)
    fan_in, B = 20_000, 256  # 20,000 * 34 * 256 = 174 M terms: many launches of at most 2^20 each
    net = median_node(fan_in)
    x = np.random.default_rng(0).normal(size=(B, fan_in))
    launches = []
    from clnet.opencl.args import BoundKernel
    real_call = BoundKernel.__call__

    def counting_call(self, queue, global_size, *args, **kwargs):
        if "nb" in kwargs:
            launches.append(kwargs["nb"])
        return real_call(self, queue, global_size, *args, **kwargs)

    monkeypatch.setattr(BoundKernel, "__call__", counting_call)
    got = net(x, backend=opencl_backend)
    ref = net(x, backend="numpy")
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    terms_per_sample = fan_in * opencl_fnn.MEDIAN_PASSES[4]
    assert len(launches) > 1, launches
    assert sum(launches) == B
    for nb in launches:  # each launch holds at most one lane group beyond the bound
        assert nb * terms_per_sample <= 2**20 + 64 * terms_per_sample, (nb, launches)
