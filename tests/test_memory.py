"""Memory held between calls is bounded (issue 12, point 5).

One large population evaluation used to leave its output and scratch buffers (hundreds
of MB) allocated for the life of the process. Workspaces beyond 32 MiB each (128 MiB per
device together) are now freed after their call, and clnet.release_memory() frees the
kept ones. RSS is measured in a fresh subprocess, so that other tests do not disturb it.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import clnet
from conftest import OPENCL

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent('''
    import gc, os, sys, time
    import numpy as np
    import clnet

    def rss_mb():
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    spec = sys.argv[1]
    rng = np.random.default_rng(0)
    s = [4, 3, 2]
    pop = clnet.FNNPopulation([clnet.FNN.from_structure(s, rng.normal(size=clnet.weight_count(s)), None, "tanh")
                               for _ in range(150)])
    pop(rng.normal(size=(10, 4)), backend=spec)  # kernels built, weights uploaded
    gc.collect()
    before = rss_mb()
    out = pop(rng.normal(size=(100_000, 4)), backend=spec)  # 114 MB of outputs
    size = out.nbytes / 2**20
    del out
    # A driver may hand freed memory back to the system a little later (its own threads
    # release buffers once their last event completes), so a loaded machine gets a few
    # seconds to settle; every reading is printed for the failure message.
    readings = []
    for attempt in range(30):
        gc.collect()
        if hasattr(clnet, "release_memory"):
            clnet.release_memory()
        readings.append(rss_mb())
        if readings[-1] - before < 50:
            break
        time.sleep(0.2)
    print(f"before {before:.1f} after {min(readings):.1f} output {size:.1f} readings",
          " ".join(f"{r:.1f}" for r in readings))
''')


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
@pytest.mark.parametrize("spec", ["numpy"] + OPENCL[:1])
def test_rss_returns_near_its_level_after_a_large_call(tmp_path, spec):
    script = tmp_path / "memory.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, str(script), spec], capture_output=True, text=True, timeout=120,
                         env=env, cwd=str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    words = res.stdout.split()
    before, after, size = (float(words[words.index(k) + 1]) for k in ("before", "after", "output"))
    assert size > 100  # the call was large enough for the bound to mean something
    assert after - before < 50, (f"RSS grew from {before} to {after} MB after the call and release_memory(), "
                                 f"over 6 s: {res.stdout.strip()}")


def test_release_memory_frees_kept_workspaces(opencl_backend):
    from clnet.opencl import runtime

    be = opencl_backend
    rng = np.random.default_rng(0)
    structure = [5, 7, 3]
    w = rng.standard_normal(5 * 7 + 7 * 3)
    x = rng.standard_normal((40, 5))
    first = clnet.fnn_forward(structure, w, x, backend=be)
    # the output and hidden-layer scratch of a small evaluation are kept for the next call
    assert len(be._workspaces) > 0
    assert be._workspaces.total(be, lambda b: b.size) <= runtime.WORKSPACE_KEEP_TOTAL
    clnet.release_memory()
    assert len(be._workspaces) == 0
    again = clnet.fnn_forward(structure, w, x, backend=be)  # and made again on the next call
    assert len(be._workspaces) > 0
    np.testing.assert_array_equal(first, again)
    ref = clnet.fnn_forward(structure, w, x, backend="numpy", dtype="float64")
    np.testing.assert_allclose(again, ref, rtol=1e-5, atol=1e-6)


def test_release_memory_is_public_and_harmless_on_numpy():
    clnet.release_memory()
    assert "release_memory" in clnet.__all__
