"""Hostile environments reported truly (issue 12, point 7).

PoCL needs a writable kernel cache folder with free space: without one it lists its
platform with no device (HOME read-only), fails every build (POCL_CACHE_DIR read-only),
or its LLVM kills the process (a nearly full filesystem). clnet names the folder, the
cause and a fix (POCL_CACHE_DIR), and automatic selection warns once when it falls back
to NumPy although an OpenCL platform exists. Each case runs in a subprocess with its own
environment. An unwritable folder is made portably by placing it under a regular file.
"""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import clnet

ROOT = Path(__file__).resolve().parent.parent
HAS_POCL = any(i.spec.startswith("opencl") and "Portable Computing Language" in i.description
               for i in clnet.backends())

SCRIPT = textwrap.dedent('''
    import sys, warnings
    import numpy as np
    import clnet
    from clnet.opencl import environment
    if len(sys.argv) > 1:
        environment.MIN_FREE_BYTES = int(sys.argv[1])
    for info in clnet.backends():
        if info.spec.startswith("opencl"):
            print("INFO", info.spec, "|", info.usable, "|", info.reason, "|", info.fix)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            out = clnet.fnn_forward([2, 1], [1.0, 2.0], np.array([[1.0, 1.0]]))
    assert np.allclose(out, 3.0)
    for w in caught:
        print("WARN", str(w.message).replace("\\n", " "))
''')


def run(tmp_path, env_changes, *args):
    script = tmp_path / "hostile.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for k in ("CLNET_BACKEND", "POCL_CACHE_DIR", "XDG_CACHE_HOME"):
        env.pop(k, None)
    # PoCL alone (the system's vendor folder; clnet never overrides a user-set OCL_ICD_VENDORS):
    # these cases are about PoCL's cache, and another usable device would hide the fallback.
    env["OCL_ICD_VENDORS"] = "/etc/OpenCL/vendors"
    env.update(env_changes)
    res = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120,
                         env=env, cwd=str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    infos = [line[5:].split(" | ") for line in res.stdout.splitlines() if line.startswith("INFO ")]
    warns = [line[5:] for line in res.stdout.splitlines() if line.startswith("WARN ")]
    return infos, warns


def _blocked(tmp_path) -> Path:
    (tmp_path / "a-file").write_text("")
    return tmp_path / "a-file" / "below"  # can never be created, even by root


pytestmark = pytest.mark.skipif(not HAS_POCL, reason="needs PoCL")


def test_unwritable_home_names_the_cache_folder_not_a_missing_platform(tmp_path):
    home = _blocked(tmp_path)
    infos, warns = run(tmp_path, {"HOME": str(home), "PYOPENCL_CACHE_DIR": str(tmp_path / "pyopencl")})
    pocl = [i for i in infos if i[0].startswith("opencl")]
    assert pocl and all(i[1] == "False" for i in pocl), infos
    text = " ".join(" ".join(i) for i in pocl)
    assert "no OpenCL platform was found" not in text
    assert "lists no device" in text and str(home / ".cache" / "pocl") in text and "(from HOME)" in text
    assert "POCL_CACHE_DIR" in text and "apt-get install" not in text
    assert len(warns) == 1 and "numpy" in warns[0] and "cache folder" in warns[0], warns


def test_unwritable_pocl_cache_is_the_reason_and_its_fix(tmp_path):
    cache = _blocked(tmp_path)
    infos, warns = run(tmp_path, {"POCL_CACHE_DIR": str(cache)})
    pocl = [i for i in infos if "Portable" in " ".join(i) or i[0].startswith("opencl:")]
    text = " ".join(" ".join(i) for i in pocl)
    assert str(cache) in text and "POCL_CACHE_DIR" in text, infos
    assert "pocl-binary-distribution" not in text and "pip install ." not in text
    assert len(warns) == 1 and str(cache) in warns[0], warns


def test_too_little_free_space_is_reported_before_compiling(tmp_path):
    cache = tmp_path / "pocl"
    infos, warns = run(tmp_path, {"POCL_CACHE_DIR": str(cache)}, str(1 << 62))
    text = " ".join(" ".join(i) for i in infos)
    assert "KB free" in text and str(cache) in text and "POCL_CACHE_DIR" in text, infos
    assert len(warns) == 1


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root and unshare")
def test_a_real_300_kb_filesystem_does_not_kill_the_process(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    script = tmp_path / "hostile.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               POCL_CACHE_DIR=str(mnt))
    shell = f"mount -t tmpfs -o size=300k tmpfs {mnt} && exec {sys.executable} {script}"
    res = subprocess.run(["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True, timeout=120,
                         env=env, cwd=str(tmp_path))
    if "mount:" in res.stderr or "unshare:" in res.stderr:
        pytest.skip(f"no private mount here: {res.stderr.strip()}")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "KB free" in res.stdout and "POCL_CACHE_DIR" in res.stdout


def test_every_device_names_an_unwritable_user_cache_as_its_reason(tmp_path):
    """With HOME unwritable, each OpenCL device (Intel's runtime too, where installed) says the
    cache folder is the cause and how to move it; none suggests reinstalling a runtime."""
    home = _blocked(tmp_path)
    script = tmp_path / "hostile.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), HOME=str(home),
               PYOPENCL_CACHE_DIR=str(tmp_path / "pyopencl"))
    for k in ("CLNET_BACKEND", "POCL_CACHE_DIR", "XDG_CACHE_HOME"):
        env.pop(k, None)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env,
                         cwd=str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    infos = [line[5:].split(" | ") for line in res.stdout.splitlines() if line.startswith("INFO ")]
    assert infos and all(i[1] == "False" for i in infos), infos
    for spec, _, reason, fix in infos:
        assert str(home / ".cache") in reason and "(from HOME)" in reason, (spec, reason)
        assert "apt-get" not in fix and "pip install" not in fix and "CACHE" in fix, (spec, fix)
