"""Shared fixtures: every test that takes ``any_backend`` runs once per usable backend.

``CLNET_TEST`` restricts the backends the suite runs on, in the manner of PYOPENCL_TEST:
spec strings separated by ``;``, each naming every device it matches, e.g.
``CLNET_TEST="numpy;opencl:pocl"`` or ``CLNET_TEST="opencl:intel"``. Unset, every usable
backend runs. With CLNET_REQUIRE_OPENCL=1 (set by CI) a run without a usable OpenCL
device fails instead of silently testing only the NumPy fallback.
"""
import os

import numpy as np
import pytest

import clnet
from clnet.conformance import settings  # noqa: F401  (registers the hypothesis profiles)

try:
    from hypothesis import settings as _hsettings

    _hsettings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
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


def pytest_sessionstart(session):
    if os.environ.get("CLNET_REQUIRE_OPENCL") == "1" and not OPENCL:
        reasons = "; ".join(f"{i.spec}: {i.reason}" for i in clnet.backends() if not i.usable)
        raise pytest.UsageError(f"CLNET_REQUIRE_OPENCL=1 but no OpenCL device is usable ({reasons or 'none found'})")


def pytest_report_header(config):
    return f"clnet backends under test: {', '.join(USABLE)}"


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
