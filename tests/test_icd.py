"""Intel's CPU OpenCL runtime from pip (``clnet[cpu]``) found without any variable set by hand."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clnet.opencl import icd


def _fake_env(tmp_path, *, with_library=True):
    prefix = tmp_path / "venv"
    (prefix / "lib").mkdir(parents=True)
    if with_library:
        (prefix / "lib" / icd.LIBRARY).write_bytes(b"\x7fELF")
    system = tmp_path / "system-vendors"
    system.mkdir()
    (system / "pocl.icd").write_text("libpocl.so.2\n")
    return prefix, system


def test_registers_the_library_and_keeps_the_system_vendors(tmp_path):
    prefix, system = _fake_env(tmp_path)
    environ = {}
    reg = icd.register_pip_runtime(environ, [tmp_path / "elsewhere", prefix], system)
    folder = prefix / "etc" / "clnet" / "OpenCL" / "vendors"
    assert reg.folder == folder and environ == {"OCL_ICD_VENDORS": str(folder)}
    assert (folder / icd.ICD_NAME).read_text() == f"{prefix / 'lib' / icd.LIBRARY}\n"
    assert (folder / "system-pocl.icd").read_text() == "libpocl.so.2\n"
    assert sorted(p.name for p in folder.iterdir()) == [icd.ICD_NAME, "system-pocl.icd"]
    assert "registered" in reg.note() and str(folder) in reg.note()
    # Nothing was written outside the environment's prefix.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["system-vendors", "venv"]


def test_a_system_vendor_removed_later_is_removed_from_the_copy(tmp_path):
    prefix, system = _fake_env(tmp_path)
    icd.register_pip_runtime({}, [prefix], system)
    (system / "pocl.icd").unlink()
    (system / "nvidia.icd").write_text("libnvidia-opencl.so.1\n")
    reg = icd.register_pip_runtime({}, [prefix], system)
    assert sorted(p.name for p in reg.folder.iterdir()) == [icd.ICD_NAME, "system-nvidia.icd"]


def test_the_users_ocl_icd_vendors_wins_and_nothing_is_written(tmp_path):
    prefix, system = _fake_env(tmp_path)
    environ = {"OCL_ICD_VENDORS": "/my/vendors"}
    reg = icd.register_pip_runtime(environ, [prefix], system)
    assert environ == {"OCL_ICD_VENDORS": "/my/vendors"}
    assert reg.folder is None and "already set" in reg.note()
    assert not (prefix / "etc").exists()


def test_inherited_registration_is_recognised(tmp_path):
    prefix, system = _fake_env(tmp_path)
    first = {}
    icd.register_pip_runtime(first, [prefix], system)
    child = dict(first)  # what a subprocess inherits
    reg = icd.register_pip_runtime(child, [prefix], system)
    assert reg.folder == Path(first["OCL_ICD_VENDORS"]) and child == first


def test_without_the_library_nothing_happens(tmp_path):
    prefix, system = _fake_env(tmp_path, with_library=False)
    environ = {}
    reg = icd.register_pip_runtime(environ, [prefix], system)
    assert environ == {} and reg.library is None and reg.note() == ""
    assert not (prefix / "etc").exists()


def test_an_unwritable_environment_is_reported_not_raised(tmp_path):
    prefix, system = _fake_env(tmp_path)
    (prefix / "etc").write_text("a file where a folder is needed")
    environ = {}
    reg = icd.register_pip_runtime(environ, [prefix], system)
    assert environ == {} and reg.folder is None
    assert "could not write" in reg.note() and "OCL_ICD_VENDORS" in reg.note()


def test_info_lists_the_pip_runtime_with_no_variable_set():
    """Where Intel's runtime is pip-installed in this interpreter's environment (CI installs it),
    ``python -m clnet info`` shows its platform with OCL_ICD_VENDORS unset."""
    found = icd.find_library(icd.environment_prefixes())
    if found is None:
        if os.environ.get("CLNET_REQUIRE_OPENCL") == "1":
            pytest.fail("CLNET_REQUIRE_OPENCL=1 but Intel's runtime is not installed here: "
                        "pip install intel-opencl-rt intel-cmplr-lib-rt tbb")
        pytest.skip("Intel's CPU runtime is not pip-installed in this environment")
    env = {k: v for k, v in os.environ.items() if k not in ("OCL_ICD_VENDORS", "CLNET_BACKEND")}
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-m", "clnet", "info"], env=env, capture_output=True, text=True,
                         timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr
    assert "Intel(R) OpenCL" in out.stdout, out.stdout
    assert "is registered for this process" in out.stdout
    if any(Path("/etc/OpenCL/vendors").glob("*pocl*.icd")):
        assert "Portable Computing Language" in out.stdout, out.stdout  # the system's PoCL stays visible
