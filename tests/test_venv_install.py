"""A fresh venv, ``pip install ".[cpu]"`` and ``python -m clnet demo`` on an OpenCL device that
came from pip alone (Intel's CPU runtime), with no OpenCL variable set by hand.

It downloads the runtime (a few hundred MB; pip's cache makes reruns faster), so it is one
test, marked slow, and runs in CI. Set CLNET_SKIP_VENV_TEST=1 to skip it when offline.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_fresh_venv_with_the_cpu_extra_runs_the_demo_on_opencl(tmp_path):
    if os.environ.get("CLNET_SKIP_VENV_TEST") == "1":
        pytest.skip("CLNET_SKIP_VENV_TEST=1")
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items()
           if k not in ("OCL_ICD_VENDORS", "CLNET_BACKEND", "PYTHONPATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                              f"{ROOT}[cpu]"], env=env, capture_output=True, text=True, timeout=1500)
    if install.returncode != 0:
        pytest.fail(f"pip install .[cpu] failed:\n{install.stdout[-3000:]}\n{install.stderr[-3000:]}")
    t_install = time.perf_counter() - t0
    # Run outside the checkout so that the installed package, not the source tree, is imported.
    info = subprocess.run([python, "-m", "clnet", "info"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert info.returncode == 0, info.stderr
    assert "Intel(R) OpenCL" in info.stdout and str(venv) in info.stdout, info.stdout
    demo_env = dict(env, CLNET_BACKEND="opencl:intel")  # the device that pip alone provided
    demo = subprocess.run([python, "-m", "clnet", "demo", "--networks", "100", "--inputs", "500"],
                          env=demo_env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "Intel(R) OpenCL" in demo.stdout and "-> matches" in demo.stdout, demo.stdout
    print(f"venv + pip install .[cpu]: {t_install:.0f} s; info and demo: {time.perf_counter() - t0 - t_install:.0f} s")
