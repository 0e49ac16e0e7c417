"""The command line, run as a user would, from outside the repository."""
import os
import subprocess
import sys

from conftest import OPENCL


def _run(*args, cwd, timeout=600, env=None):
    env = dict(env or os.environ)
    env.pop("CLNET_BACKEND", None)
    return subprocess.run([sys.executable, "-m", "clnet", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_info_lists_backends_and_the_default(tmp_path):
    res = _run("info", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "numpy" in res.stdout and "usable" in res.stdout
    for spec in OPENCL:
        assert spec in res.stdout
    expected_default = OPENCL[0] if OPENCL else "numpy"
    assert f"default backend: {expected_default}" in res.stdout


def test_demo_checks_against_the_reference(tmp_path):
    res = _run("demo", "--networks", "40", "--inputs", "300", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "matches" in res.stdout and "speed-up over the NumPy fallback" in res.stdout


def test_bench_fnn_prints_ratios(tmp_path):
    res = _run("bench", "fnn", "--networks", "10", "--inputs", "50", "--repeat", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "neat-python" in res.stdout and "G connection evaluations/s" in res.stdout
    if OPENCL:
        assert "/ neat-python" in res.stdout and "/ numpy" in res.stdout


def test_unknown_command_arguments_fail_clearly(tmp_path):
    res = _run("bench", "nope", cwd=tmp_path)
    assert res.returncode != 0 and "unknown benchmark 'nope'; choose from: bptt, fnn, pearson, ppo, rnn" in res.stderr
