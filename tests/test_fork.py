"""Forked processes (issue 12, point 1).

A child forked from a process that had started OpenCL cannot use OpenCL: the drivers'
threads stay in the parent and any call (enqueue_copy, a new context) blocks forever.
clnet refuses OpenCL there with a DeviceError that names 'spawn' and 'forkserver',
automatic selection falls back to NumPy with a warning, and 'spawn' and 'forkserver'
children use OpenCL normally. Every scenario runs in a subprocess with a timeout, so
that a hang fails the test instead of blocking the suite.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import OPENCL

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent('''
    import multiprocessing as mp, os, sys, warnings
    import numpy as np
    import clnet

    SPEC, FIRST_USE = sys.argv[1], sys.argv[2]
    STRUCTURE, W, X = [2, 3, 1], np.linspace(-1, 1, 9), np.array([[0.5, -1.0], [2.0, 0.25]])
    EXPECTED = clnet.fnn_forward(STRUCTURE, W, X, backend="numpy")

    def explicit(_=None):
        """An OpenCL call on the device the parent used: refused, or correct."""
        try:
            out = clnet.fnn_forward(STRUCTURE, W, X, backend=SPEC)
        except clnet.DeviceError as exc:
            return "refused: " + str(exc)
        return "ok" if np.allclose(out, EXPECTED, rtol=1e-5) else "WRONG"

    def automatic(_=None):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = clnet.fnn_forward(STRUCTURE, W, X)
        ok = np.allclose(out, EXPECTED, rtol=1e-5)
        return ("ok" if ok else "WRONG") + (" warned" if caught else "")

    def state_step(_=None):
        try:
            cell.step(np.ones((2, 3)), state)
        except clnet.DeviceError as exc:
            return "refused: " + str(exc)
        return "ok"

    def record_new(_=None):
        """A new recording on the device by name: after the refusals above the registry has
        marked it failed, so this one is BackendUnavailable, giving the same reason."""
        try:
            cell.record_sequence(np.ones((2, 2, 3)), None, None, backend=SPEC)
        except (clnet.DeviceError, clnet.BackendUnavailable) as exc:
            return "refused: " + str(exc)
        return "ok"

    def record_backward(_=None):
        """The backward of a recording the parent made: its activations are on the device."""
        try:
            recording.backward(np.ones((2, 2, 5)))
        except clnet.DeviceError as exc:
            return "refused: " + str(exc)
        return "ok"

    def report(method, results):
        print(method, "|", " || ".join(results), flush=True)

    if __name__ == "__main__":
        cell = clnet.LSTMCell(3, 5, seed=0)
        if FIRST_USE == "backends":
            clnet.backends()
            state = None
        elif FIRST_USE == "compute":
            clnet.fnn_forward(STRUCTURE, W, X, backend=SPEC)
            state = None
        else:
            state = cell.initial_state(2, backend=SPEC)
            cell.step(np.ones((2, 3)), state)
            recording = cell.record_sequence(np.ones((2, 2, 3)), None, None, backend=SPEC)
        tasks = [explicit, automatic] + ([state_step, record_new, record_backward] if state is not None else [])
        pid = os.fork()
        if pid == 0:
            report("fork", [t() for t in tasks])
            os._exit(0)
        os.waitpid(pid, 0)
        with mp.get_context("fork").Pool(1) as pool:
            report("fork-pool", [pool.apply(t) for t in tasks])
        for method in ("spawn", "forkserver"):
            with mp.get_context(method).Pool(1) as pool:
                report(method, [pool.apply(explicit), pool.apply(automatic)])
''')


@pytest.mark.skipif(not OPENCL, reason="no usable OpenCL device")
@pytest.mark.parametrize("first_use", ["backends", "compute", "state"])
def test_forked_children_refuse_opencl_clearly_and_never_hang(tmp_path, first_use):
    script = tmp_path / "forking.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CLNET_BACKEND", None)
    try:
        res = subprocess.run([sys.executable, str(script), OPENCL[0], first_use], capture_output=True,
                             text=True, timeout=120, env=env, cwd=str(tmp_path))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"a child hung (first use {first_use}); output so far: {exc.stdout!r}")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = dict(line.split(" | ", 1) for line in res.stdout.splitlines() if " | " in line)
    assert set(lines) == {"fork", "fork-pool", "spawn", "forkserver"}, res.stdout + res.stderr
    for method in ("fork", "fork-pool"):
        results = lines[method].split(" || ")
        refused = [r for r in results if r.startswith("refused")]
        assert len(refused) == len(results) - 1, (method, results)  # every OpenCL call but automatic
        for r in refused:
            assert "'spawn'" in r and "'forkserver'" in r and "forked" in r, r
        assert "ok warned" in results, (method, results)  # automatic selection fell back to NumPy
    for method in ("spawn", "forkserver"):
        assert lines[method].split(" || ")[0] == "ok", (method, lines[method])
        assert lines[method].split(" || ")[1].startswith("ok"), (method, lines[method])
