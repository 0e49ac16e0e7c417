"""A real wheel ships the kernels and both backends, and works from outside the checkout."""
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow  # builds a wheel
def test_wheel_contains_kernels_fallback_and_entry_points(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    wheel = next(tmp_path.glob("clnet-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for cl in (ROOT / "kernels").iterdir():
        assert f"clnet/kernels/{cl.name}" in names
    assert "clnet_fallback/__init__.py" in names and "clnet_fallback/fnn.py" in names
    assert "clnet/conformance/__init__.py" in names
    for module in ("opencl/__init__.py", "opencl/runtime.py", "opencl/rnn.py", "common/packing.py", "contract.py"):
        assert f"clnet/{module}" in names, module
    assert "clnet_fallback/bptt.py" in names
    ep = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(ep).decode()
    assert "[clnet.backends]" in text and "numpy = clnet_fallback:NumpyProvider" in text

    # Install it into a fresh virtual environment and use it from an empty folder.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    res = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    code = ("import clnet, clnet.opencl as o, pathlib; "
            "k = o.kernel_dir(); assert 'site-packages' in str(k), k; "
            "print(clnet.fnn_forward([2, 2, 1], [1, 2, 3, 4, 5, 6], [1.0, 1.0]), k)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CLNET_BACKEND")}
    res = subprocess.run([str(py), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[57.]" in res.stdout


def _pyproject():
    import tomllib  # Python 3.11+; the project's CI runs 3.11
    return tomllib.loads((pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())


def test_dependencies_cover_what_the_code_needs():
    """pearson_threshold returns scipy.sparse: scipy is a dependency, not a test extra."""
    project = _pyproject()["project"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]}
    assert {"numpy", "pyopencl", "scipy"} <= names
    cpu = project["optional-dependencies"]["cpu"]
    assert {d.split(">")[0].strip() for d in cpu} == {"intel-opencl-rt", "intel-cmplr-lib-rt", "tbb"}


def test_progress_without_tqdm_gives_a_one_line_hint(monkeypatch):
    import sys

    import numpy as np
    import pytest

    import clnet

    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import tqdm.auto raises ImportError
    x = np.random.default_rng(0).normal(size=(20, 6))
    with pytest.warns(RuntimeWarning, match="pip install tqdm"):
        clnet.pearson_topk(x, 2, backend="numpy", progress=True)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # automatic progress (None) stays silent
        clnet.pearson_topk(x, 2, backend="numpy")
