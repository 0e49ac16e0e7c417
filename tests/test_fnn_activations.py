"""Every activation through the FNN kernels on inputs chosen to hit the edge cases of
the float32 math (clnet_math.h): specials, subnormals, tiny, huge (sin beyond the fast
reduction, taking the per-lane builtin fix-up), values around the polynomial ranges.

Compared with the NumPy float64 reference under the project tolerance (clnet.tolerances),
non-finite values exactly.
"""
import numpy as np
import pytest

import clnet
from clnet.functions import ACTIVATIONS
from clnet.tolerances import tolerance


def _edge_inputs():
    special = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1e-40, -1e-40, 1.1754942e-38,
               1e-30, -1e-30, 1e-8, -1e-8, 3e-8, 0.5, -0.5, 0.70710677, 1.4142135, 1.0, -1.0,
               2.0, -2.0, 88.7, 88.8, -88.8, 103.0, -104.0, 3.4028235e38, -3.4028235e38,
               8191.9, 8192.0, 8192.001, -8192.001, 1e5, -1e5, 1e10, -1e10, 1e30]
    rng = np.random.default_rng(5)
    mags = 10.0 ** rng.uniform(-45, 38.5, size=4000)
    grid = np.linspace(-20, 20, 4001)
    k = np.arange(-40, 41) * (np.pi / 2)  # near the zeros and extrema of sin
    x = np.concatenate([special, mags, -mags, grid, k, np.nextafter(k, np.inf)])
    # Shuffle so the rare lanes (huge sin arguments, NaN) share 16-lane groups with
    # ordinary ones.
    x = x.astype(np.float32)
    return x[rng.permutation(x.size)]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_edge_values(opencl_backend, activation):
    x = _edge_inputs()[:, None]

    def run(backend, dt):
        return clnet.fnn_forward([1, 1], [1.0], x, biases=[0.0], activation=activation,
                                 backend=backend, dtype=dt)[:, 0].astype(np.float64)

    got = run(opencl_backend, np.float32)
    ref = run("numpy", np.float64)
    low = run("numpy", np.float32)
    tol = tolerance("fnn", np.float32)
    with np.errstate(all="ignore"):
        ref32 = ref.astype(np.float32).astype(np.float64)  # beyond float32 range -> inf
        nonfinite = ~np.isfinite(ref32)
        same = (np.isnan(ref32) & np.isnan(got)) | (ref32 == got)
        bound = tol.atol + tol.rtol * np.abs(ref) + tol.control * np.abs(low - ref)
        ok = np.where(nonfinite, same, np.isfinite(got) & (np.abs(got - ref) <= bound))
        # where float32 itself gives a non-finite value (low) the kernel may match that
        ok |= (~np.isfinite(low)) & ((np.isnan(low) & np.isnan(got)) | (low == got))
    bad = np.flatnonzero(~ok)
    assert bad.size == 0, [(float(x[i, 0]), got[i], ref[i], low[i]) for i in bad[:8]]
