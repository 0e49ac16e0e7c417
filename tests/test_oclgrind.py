"""Every kernel under Oclgrind: out-of-bounds, uninitialised-read and data-race checking.

Runs tests/oclgrind_pass.py under ``oclgrind --data-races --uninitialized`` and fails
on any diagnostic Oclgrind prints. A control case proves the detector sees real bugs.
"""
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
OCLGRIND = shutil.which("oclgrind")
REQUIRED = os.environ.get("CLNET_REQUIRE_OPENCL") == "1"

# Oclgrind's diagnostics all start with one of these (see its plugins' messages).
DIAGNOSTIC = re.compile(r"Invalid (read|write)|Uninitiali[sz]ed|[Dd]ata race|Controlflow depends|"
                        r"Oclgrind - |out of bounds|Work-group divergence|Invalid .* size", re.M)

pytestmark = pytest.mark.skipif(not OCLGRIND and not REQUIRED, reason="oclgrind not installed (apt-get install oclgrind)")


def _under_oclgrind(args, timeout=1800):
    assert OCLGRIND, "CLNET_REQUIRE_OPENCL=1 but oclgrind is not installed (apt-get install oclgrind)"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("CLNET_BACKEND", None)
    return subprocess.run([OCLGRIND, "--data-races", "--uninitialized", sys.executable, *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow  # a simulator: about 2-3 minutes on 2 cores
def test_every_kernel_is_clean_under_oclgrind():
    res = _under_oclgrind([os.path.join(HERE, "oclgrind_pass.py"), "float32", "float64"])
    diagnostics = DIAGNOSTIC.findall(res.stderr)
    print(res.stdout[-3000:])
    assert "Oclgrind" in res.stdout, "the pass did not run on the Oclgrind platform:\n" + res.stdout[-2000:]
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    assert not diagnostics, res.stderr[:10000]


def test_detector_catches_a_real_out_of_bounds_read():
    script = textwrap.dedent('''
        import numpy as np, pyopencl as cl
        ctx = cl.create_some_context(False); q = cl.CommandQueue(ctx)
        prg = cl.Program(ctx, "__kernel void k(__global const float *x, __global float *y)"
                              "{ int i = get_global_id(0); y[i] = x[i + 1]; }").build()
        x = np.arange(4, dtype=np.float32)
        mf = cl.mem_flags
        bx = cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=x)
        by = cl.Buffer(ctx, mf.WRITE_ONLY, x.nbytes)
        prg.k(q, (4,), None, bx, by); q.finish()
    ''')
    res = _under_oclgrind(["-c", script], timeout=300)
    assert DIAGNOSTIC.search(res.stderr), res.stderr
