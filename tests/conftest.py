"""Shared fixtures: every test that takes ``any_backend`` runs once per usable backend.

With CLNET_REQUIRE_OPENCL=1 (set by CI) a machine without a usable OpenCL device fails
the run instead of silently testing only the NumPy fallback.
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


def _usable_specs():
    return [info.spec for info in clnet.backends() if info.usable]


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
