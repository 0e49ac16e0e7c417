"""Shared fixtures: every test that takes ``any_backend`` runs once per usable backend.

``CLNET_TEST`` restricts the backends the suite runs on, in the manner of PYOPENCL_TEST:
spec strings separated by ``;``, each naming every device it matches, e.g.
``CLNET_TEST="numpy;opencl:pocl"`` or ``CLNET_TEST="opencl:intel"``. Unset, every usable
backend runs.

``CLNET_REQUIRE_OPENCL`` makes a run that would silently test too little fail at its start:
``1`` (set by CI and the README's test command) requires a usable device of each of the two
CPU OpenCL implementations CI installs, PoCL (apt) and Intel's runtime (pip, ``clnet[cpu]``),
and Oclgrind; any other value is a ``;``-separated list of specs that must each match a usable
device (``CLNET_REQUIRE_OPENCL="opencl"``: any one OpenCL device).
"""
import os
from pathlib import Path

import numpy as np
import pytest

import clnet
from clnet.conformance import settings  # noqa: F401  (registers the hypothesis profiles)

# Python subprocesses started by tests import this checkout's package, not another install.
ROOT = Path(__file__).resolve().parent.parent
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

# One profile for every property test, the conformance checks included: HYPOTHESIS_PROFILE=thorough
# makes the whole suite thorough (clnet/conformance/__init__.py registers the profiles).
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
os.environ.setdefault("CLNET_CONFORMANCE_PROFILE", PROFILE)
try:
    from hypothesis import settings as _hsettings

    _hsettings.load_profile(PROFILE)
except ImportError:  # pragma: no cover
    pass


def _selected(value: str):
    """The specs ``CLNET_TEST`` names; an entry that names nothing is a usage error."""
    chosen = set()
    for item in (part.strip() for part in value.split(";")):
        if not item:
            continue
        try:
            found = clnet.backend.specs_matching(item)
        except ValueError as exc:
            raise pytest.UsageError(f"CLNET_TEST entry {item!r}: {exc}") from None
        if not found:
            raise pytest.UsageError(f"CLNET_TEST entry {item!r} matches no backend or device; "
                                    f"'python -m clnet info' lists them")
        chosen.update(found)
    return chosen


def _usable_specs():
    usable = [info.spec for info in clnet.backends() if info.usable]
    selection = os.environ.get("CLNET_TEST", "").strip()
    if not selection:
        return usable
    chosen = _selected(selection)
    return [s for s in usable if s in chosen]


USABLE = _usable_specs()
OPENCL = [s for s in USABLE if s.startswith("opencl")]


# What CLNET_REQUIRE_OPENCL=1 requires: spec -> how to install it.
REQUIRED_BY_DEFAULT = {
    "opencl:pocl": "apt-get install pocl-opencl-icd",
    "opencl:intel": 'pip install ".[cpu]" (Intel\'s CPU runtime from PyPI)',
}


def required_specs(value: str):
    """(spec, how to get it) pairs that CLNET_REQUIRE_OPENCL=value asks for."""
    value = value.strip()
    if not value or value == "0":
        return []
    if value == "1":
        return list(REQUIRED_BY_DEFAULT.items())
    return [(item.strip(), "'python -m clnet info' lists the devices") for item in value.split(";") if item.strip()]


def missing_required(value: str, usable):
    """Messages for each required spec that matches no usable OpenCL backend under test."""
    missing = []
    for spec, how in required_specs(value):
        try:
            found = set(clnet.backend.specs_matching(spec))
        except ValueError as exc:
            missing.append(f"{spec}: {exc}")
            continue
        if not found & set(s for s in usable if s.startswith("opencl")):
            missing.append(f"{spec} (usable OpenCL devices under test: {', '.join(OPENCL) or 'none'}; to get it: {how})")
    return missing


def pytest_sessionstart(session):
    value = os.environ.get("CLNET_REQUIRE_OPENCL", "")
    missing = missing_required(value, USABLE)
    if missing:
        reasons = "; ".join(f"{i.spec}: {i.reason}" for i in clnet.backends() if not i.usable)
        raise pytest.UsageError(f"CLNET_REQUIRE_OPENCL={value} but these are not usable: " + "; ".join(missing)
                                + (f" (unusable: {reasons})" if reasons else ""))


def pytest_report_header(config):
    return f"clnet backends under test: {', '.join(USABLE)}; hypothesis profile: {PROFILE}"


@pytest.fixture(params=USABLE)
def any_backend(request):
    return clnet.get_backend(request.param)


@pytest.fixture(params=OPENCL or [pytest.param(None, marks=pytest.mark.skip(reason="no OpenCL device"))])
def opencl_backend(request):
    return clnet.get_backend(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def pytest_terminal_summary(terminalreporter):
    try:
        import fuzz_api
    except ImportError:
        return
    c = fuzz_api.COUNTER
    if c["calls"]:
        terminalreporter.write_line(f"fuzz: {c['calls']} public API calls with malformed arguments "
                                    f"({c['returned']} returned the reference result, {c['raised']} raised a clear error)")


def install_plugin(folder, module: str, source: str, entry_points: str, *, dist: str = None) -> str:
    """Make ``folder`` hold a module and the dist-info of a distribution declaring
    ``entry_points`` (the text of entry_points.txt), as ``pip install`` of a plugin
    would; returns the folder to put on PYTHONPATH."""
    import pathlib

    folder = pathlib.Path(folder)
    if source is not None:
        (folder / f"{module}.py").write_text(source)
    info = folder / f"{dist or module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {(dist or module).replace('_', '-')}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    return str(folder)


def force_params(monkeypatch, backend, family, **values):
    """Make an OpenCL ``backend`` run ``family`` with these tunable parameters
    (clnet/opencl/tuning.py) for the rest of the test; other backends are left alone."""
    from clnet.opencl.tuning import DeviceTuning

    tuning = getattr(backend, "tuning", None)
    if isinstance(tuning, DeviceTuning):
        tuning.force(family, values, setitem=monkeypatch.setitem)
