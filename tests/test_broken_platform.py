"""A real OpenCL platform whose compiler fails: pip's pocl-binary-distribution 3.0.

On CPUs its LLVM 14 does not know, every build fails with "unknown target CPU 'generic'".
.ci/run installs it into CLNET_BROKEN_POCL_DIR (outside the test environment); here it is
added to the ICD loader's vendor list next to the working platforms.
"""
import glob
import os
import pathlib
import subprocess
import sys

import pytest

BROKEN_DIR = os.environ.get("CLNET_BROKEN_POCL_DIR", "/tmp/clnet-broken-pocl")
LIBS = glob.glob(os.path.join(BROKEN_DIR, "pyopencl", ".libs", "libpocl*.so*"))


@pytest.mark.skipif(not LIBS, reason="pocl-binary-distribution not installed in CLNET_BROKEN_POCL_DIR (.ci/run does it)")
def test_platform_whose_compiler_fails_is_listed_unusable_and_skipped(tmp_path):
    vendors = tmp_path / "vendors"
    vendors.mkdir()
    (vendors / "0-pip-pocl.icd").write_text(LIBS[0] + "\n")
    for icd in glob.glob("/etc/OpenCL/vendors/*.icd"):
        (vendors / pathlib.Path(icd).name).write_text(pathlib.Path(icd).read_text())
    env = dict(os.environ, OCL_ICD_VENDORS=str(vendors))
    env.pop("CLNET_BACKEND", None)
    code = r'''
import clnet, warnings
infos = clnet.backends()
for i in infos: print("INFO", i.spec, i.usable, i.reason)
opencl = [i for i in infos if i.spec.startswith("opencl")]
assert len(opencl) >= 2, "the pip PoCL platform is not listed next to the working one"
unusable = [i for i in opencl if not i.usable]
broken = unusable[0] if unusable else None
if broken is None:
    print("pip PoCL compiles on this CPU: nothing to check")
else:
    assert "compiler fails" in broken.reason and "unknown target CPU" in broken.reason, broken.reason
    chosen = clnet.get_backend()  # automatic selection never lands on it
    assert chosen.spec != broken.spec and chosen.spec.startswith("opencl")
    try:
        clnet.get_backend(broken.spec)
    except clnet.BackendUnavailable as exc:
        assert "unknown target CPU" in str(exc) and "pocl-opencl-icd" in str(exc)
    else:
        raise AssertionError("naming the broken device did not raise")
    print("checked", broken.spec)
'''
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "checked" in res.stdout or "nothing to check" in res.stdout
