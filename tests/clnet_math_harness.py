"""Run the functions of kernels/clnet_math.h on the OpenCL device, one value per work-item.

Shared by tests/test_clnet_math.py and tools/check_clnet_math.py.
"""
import numpy as np

import clnet
from clnet.opencl import kernel_dir

_SOURCE = r"""
#include "clnet_math.h"
__kernel void run_math(__global const float *x, __global float *y, const int which)
{
    const size_t i = get_global_id(0);
    const float v = x[i];
    float r;
    switch (which) {
    case 0: r = clnet_logf(v); break;
    case 1: r = clnet_log1pf(v); break;
    case 2: r = clnet_expm1f(v); break;
    case 3: r = clnet_sinf(v); break;
    case 5: r = clnet_exp_boundedf(v); break;
    case 6: r = clnet_sigmoid_boundedf(v); break;
    case 7: r = clnet_sigmoidf(v); break;
    default: r = clnet_sinf_reduced(v); break;
    }
    y[i] = r;
}

/* The lane-loop form the FNN kernels use: reduced sin vectorised over 16 lanes, then
 * the builtin for the lanes that need it. */
__kernel void run_sin_lanes(__global const float *x, __global float *y)
{
    const size_t i0 = get_global_id(0) * 16;
    float zz[16], zin[16];
    int fix = 0;
    for (int s = 0; s < 16; ++s) {
        zin[s] = x[i0 + s];
        fix |= clnet_sinf_needs_builtin(zin[s]);
        zz[s] = clnet_sinf_reduced(zin[s]);
    }
    if (fix)
        for (int s = 0; s < 16; ++s)
            if (clnet_sinf_needs_builtin(zin[s]))
                zz[s] = sin(zin[s]);
    for (int s = 0; s < 16; ++s)
        y[i0 + s] = zz[s];
}
"""

FUNCS = {"log": 0, "log1p": 1, "expm1": 2, "sin": 3, "sin_reduced": 4, "exp_bounded": 5, "sigmoid_bounded": 6,
         "sigmoid": 7}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


REFERENCE = {"log": np.log, "log1p": np.log1p, "expm1": np.expm1, "sin": np.sin,
             "sin_reduced": np.sin, "sin_lanes": np.sin, "exp_bounded": np.exp, "sigmoid_bounded": _sigmoid,
             "sigmoid": _sigmoid}

# (function, x, expected); NaN means any NaN. Signs of zeros and infinities must match.
SPECIALS = [
    ("log", np.nan, np.nan), ("log", -np.nan, np.nan), ("log", np.inf, np.inf), ("log", -np.inf, np.nan),
    ("log", 0.0, -np.inf), ("log", -0.0, -np.inf), ("log", -1.0, np.nan), ("log", -1e-45, np.nan),
    ("log", 1.0, 0.0), ("log", 1e-45, np.log(np.float64(np.float32(1e-45)))),
    ("log1p", np.nan, np.nan), ("log1p", np.inf, np.inf), ("log1p", -np.inf, np.nan), ("log1p", -1.0, -np.inf),
    ("log1p", -1.5, np.nan), ("log1p", 0.0, 0.0), ("log1p", -0.0, -0.0), ("log1p", 1e-45, 1e-45),
    ("log1p", -1e-45, -1e-45), ("log1p", 1e-30, 1e-30), ("log1p", 3.4028235e38, np.log(3.4028235e38)),
    ("expm1", np.nan, np.nan), ("expm1", np.inf, np.inf), ("expm1", -np.inf, -1.0), ("expm1", 0.0, 0.0),
    ("expm1", -0.0, -0.0), ("expm1", 1e-45, 1e-45), ("expm1", -1e-45, -1e-45), ("expm1", 1e-30, 1e-30),
    ("expm1", 88.72283, np.expm1(np.float64(np.float32(88.72283)))), ("expm1", 88.7229, np.inf),
    ("expm1", 1000.0, np.inf), ("expm1", -1000.0, -1.0), ("expm1", -20.0, -1.0),
    ("sin", np.nan, np.nan), ("sin", np.inf, np.nan), ("sin", -np.inf, np.nan), ("sin", 0.0, 0.0),
    ("sin", -0.0, -0.0), ("sin", 1e-45, 1e-45), ("sin", -1e-45, -1e-45), ("sin", 1e-30, 1e-30),
    ("sin", 3.4028235e38, np.sin(np.float64(np.float32(3.4028235e38)))), ("sin", 1e10, np.sin(1e10)),
]


def ulp_error(got, x, ref_func):
    """Error of float32 results ``got`` in ulp of the exact result (float64 reference).

    Non-finite references must be matched (NaN by NaN, infinities exactly): else inf.
    A finite reference beyond the float32 range counts as +-inf (the rounded result)."""
    with np.errstate(all="ignore"):
        ref = ref_func(x.astype(np.float64))
        ref32 = ref.astype(np.float32)  # rounds to inf beyond FLT_MAX
        g = got.astype(np.float64)
        _, e = np.frexp(np.abs(ref))
        ulp = np.ldexp(1.0, np.maximum(e - 24, -149))
        err = np.abs(g - ref) / ulp
        nonfinite = ~np.isfinite(ref32)
        same = (np.isnan(ref32) & np.isnan(got)) | (ref32 == got)
        err = np.where(nonfinite, np.where(same, 0.0, np.inf), err)
        err = np.where(np.isnan(got) & ~np.isnan(ref32), np.inf, err)
        # A rounded result that overflowed to inf while the reference is finite but huge:
        err = np.where(np.isinf(got) & np.isfinite(ref32), np.inf, err)
    return err


class MathHarness:
    def __init__(self, backend=None):
        import pyopencl as cl

        self.cl = cl
        be = backend or clnet.get_backend("opencl")
        self.ctx, self.queue = be.context, be.queue
        self.device_name = be.device_name
        self.prg = cl.Program(self.ctx, _SOURCE).build(options=["-I", str(kernel_dir())])
        self.k_math = cl.Kernel(self.prg, "run_math")
        self.k_lanes = cl.Kernel(self.prg, "run_sin_lanes")

    def run(self, name, x):
        cl = self.cl
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = x.size
        pad = (-n) % 16
        xp = np.concatenate([x, np.zeros(pad, np.float32)]) if pad else x
        mf = cl.mem_flags
        d_x = cl.Buffer(self.ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=xp)
        d_y = cl.Buffer(self.ctx, mf.WRITE_ONLY, xp.nbytes)
        if name == "sin_lanes":
            self.k_lanes(self.queue, (xp.size // 16,), None, d_x, d_y)
        else:
            self.k_math(self.queue, (xp.size,), None, d_x, d_y, np.int32(FUNCS[name]))
        y = np.empty_like(xp)
        cl.enqueue_copy(self.queue, y, d_y)
        self.queue.finish()
        return y[:n]

    def specials_ok(self, verbose=False):
        ok = True
        for name in ("log", "log1p", "expm1", "sin"):
            cases = [(x, e) for f, x, e in SPECIALS if f == name]
            x = np.array([c[0] for c in cases], dtype=np.float32)
            got = self.run(name, x)
            for (xi, e), g in zip(cases, got):
                e32 = np.float32(e)
                good = (np.isnan(e32) and np.isnan(g)) or (
                    not np.isnan(g) and g == e32 and np.signbit(g) == np.signbit(e32)
                ) or (np.isfinite(e32) and e32 != 0 and abs(float(g) - e) <= 4 * np.spacing(abs(e32)))
                if not good:
                    ok = False
                    if verbose:
                        print(f"  special {name}({xi!r}) = {g!r}, expected {e32!r}")
        return ok
