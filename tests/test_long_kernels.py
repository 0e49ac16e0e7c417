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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_counting_ranks_and_bisecting_give_the_same_medians(opencl_backend, dtype):
    """Up to graph_median_ranks terms a median counts ranks among the kept terms; above, it
    bisects over the bits of their keys. Both find the same order statistics, bit for bit,
    with ties, zeros of both signs, infinities and NaN among the terms."""
    if dtype == "float64" and not opencl_backend.supports_float64:
        pytest.skip("device has no float64")
    rng = np.random.default_rng(11)
    fan_ins = (3, 4, 5, 8, 9, 15, 16, 17, 30)
    width = max(fan_ins)
    nets = []
    for fan_in in fan_ins:
        weights = rng.normal(size=fan_in)
        weights[: fan_in // 2] = np.round(weights[: fan_in // 2]) + 1  # equal weights: ties
        # bias -0.0: a median of -0 stays -0 (bias + 1 * z), so the sign of zero is compared too
        nets.append(clnet.FNN.from_graph(width, 1, [(0, -0.0, 1.0, "identity", "median")],
                                         [(-(i + 1), 0, float(w), True) for i, w in enumerate(weights)]))
    pop = clnet.FNNPopulation(nets)
    x = np.round(rng.normal(size=(37, width)) * 2) / 2
    x[0, 0], x[1, 1], x[2, 2], x[3, :3] = np.inf, -np.inf, np.nan, [0.0, -0.0, 0.0]
    results = {}
    for ranks in (0, 8, 16):
        with opencl_backend.tuning.overriding("fnn", {"graph_median_ranks": ranks}):
            results[ranks] = pop(x, backend=opencl_backend, dtype=dtype)
    bits = np.uint32 if dtype == "float32" else np.uint64
    np.testing.assert_array_equal(results[0].view(bits), results[8].view(bits))
    np.testing.assert_array_equal(results[0].view(bits), results[16].view(bits))
    assert (np.signbit(results[0]) & (results[0] == 0)).any()  # some medians are -0
    ref = pop(x, backend="numpy", dtype="float64")
    np.testing.assert_allclose(results[16], ref, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-6)
