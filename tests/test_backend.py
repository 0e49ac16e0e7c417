"""Backend registry, selection order, spec strings, failures and third-party plugins."""
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import clnet
from clnet.backend import BackendCandidate, BackendUnavailable
from clnet.opencl import KernelBuildError, OpenCLProvider

from conftest import OPENCL, install_plugin


def test_backends_lists_numpy_and_every_opencl_device():
    infos = {i.spec: i for i in clnet.backends()}
    assert infos["numpy"].usable
    opencl = [s for s in infos if s.startswith("opencl")]
    assert opencl, "the OpenCL provider must list at least one device or a reason"
    for spec in opencl:
        info = infos[spec]
        assert info.usable or info.reason, f"{spec} is unusable without a reason"


def test_builtin_backends_come_from_entry_points():
    from importlib import metadata

    eps = metadata.entry_points()
    group = eps.select(group="clnet.backends") if hasattr(eps, "select") else eps["clnet.backends"]
    names = {ep.name: ep.value for ep in group}
    assert names["numpy"] == "clnet_fallback:NumpyProvider"
    assert names["opencl"] == "clnet.opencl:OpenCLProvider"


def test_resolution_order_argument_context_environment(monkeypatch):
    monkeypatch.setenv("CLNET_BACKEND", "numpy")
    assert clnet.get_backend().spec == "numpy"
    if OPENCL:
        with clnet.use_backend(OPENCL[0]):
            assert clnet.get_backend().spec == OPENCL[0]  # context beats environment
            assert clnet.get_backend("numpy").spec == "numpy"  # argument beats context
        assert clnet.get_backend().spec == "numpy"
    monkeypatch.delenv("CLNET_BACKEND")
    best = clnet.get_backend()
    expected = OPENCL[0] if OPENCL else "numpy"
    assert best.spec == expected  # automatic: an OpenCL device if one works


def test_use_backend_routes_operations(monkeypatch):
    calls = []
    numpy_backend = clnet.get_backend("numpy")
    original = type(numpy_backend).fnn_layered

    def spy(self, *args):
        calls.append(self.spec)
        return original(self, *args)

    monkeypatch.setattr(type(numpy_backend), "fnn_layered", spy)
    with clnet.use_backend("numpy"):
        clnet.fnn_forward([2, 2, 1], [1, 2, 3, 4, 5, 6], [1.0, 1.0])
    assert calls == ["numpy"]


@pytest.mark.skipif(not OPENCL, reason="no OpenCL device")
def test_opencl_spec_strings_index_and_substring():
    be = clnet.get_backend(OPENCL[0])
    p, d = OPENCL[0].split(":")[1:]
    assert clnet.get_backend("opencl").spec in OPENCL
    assert clnet.get_backend(f"opencl:{p}").spec.startswith(f"opencl:{p}:")
    platform_word = be.platform.name.split()[0].upper()
    device_word = be.device.name.split("-")[0].split()[0].upper()
    assert clnet.get_backend(f"opencl:{platform_word}:{device_word}").spec == OPENCL[0]
    assert clnet.get_backend(f"OpenCL:{p}:{d}") is be  # one context per device, reused


def test_unknown_backend_names_the_registered_ones():
    with pytest.raises(ValueError, match="unknown backend 'cuda'.*numpy"):
        clnet.get_backend("cuda")
    with pytest.raises(ValueError, match="matches no device"):
        clnet.get_backend("opencl:no-such-platform")
    with pytest.raises(ValueError, match="opencl:P:D"):
        clnet.get_backend("opencl:0:0:0")
    with pytest.raises(ValueError):
        clnet.get_backend("")


class _BrokenProvider:
    """A provider whose only device fails like pip's PoCL 3.0 on this CPU."""

    name = "broken"

    def candidates(self):
        def load():
            raise BackendUnavailable("broken:0", "its OpenCL compiler fails (error: unknown target CPU 'generic')",
                                     "install Debian's pocl-opencl-icd")
        return [BackendCandidate("broken:0", "a device whose compiler fails", 10_000, load)]


@pytest.fixture
def broken_provider():
    clnet.register_provider(_BrokenProvider())
    yield
    clnet.unregister_provider("broken")


def test_unusable_device_is_listed_with_reason_and_skipped(broken_provider, monkeypatch):
    monkeypatch.delenv("CLNET_BACKEND", raising=False)
    info = {i.spec: i for i in clnet.backends()}["broken:0"]
    assert not info.usable
    assert "unknown target CPU 'generic'" in info.reason
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chosen = clnet.get_backend()  # highest priority, but unusable: skipped with a warning
    assert chosen.spec != "broken:0"
    assert any("broken:0" in str(w.message) for w in caught)


def test_naming_an_unusable_backend_explains_why_and_how_to_fix(broken_provider):
    with pytest.raises(BackendUnavailable) as exc:
        clnet.get_backend("broken:0")
    assert "unknown target CPU" in str(exc.value)
    assert "pocl-opencl-icd" in str(exc.value)


class _CountingProvider:
    """A provider of one NumPy-like device that counts how often its devices are listed."""

    name = "counted"

    def __init__(self):
        self.listed = 0

    def candidates(self):
        self.listed += 1
        return [BackendCandidate("counted:0", "a counted device", -5, lambda: _Counted())]


class _Counted(type(clnet.get_backend("numpy"))):
    spec = "counted:0"


def test_a_spec_string_is_resolved_once_and_again_after_a_failure():
    """Naming a backend by the same string again returns the loaded backend without
    listing devices again; once the backend has failed during use (taken out of the
    registry), the string is resolved anew; registering a provider forgets every choice."""
    from clnet.backend import _registry

    provider = _CountingProvider()
    clnet.register_provider(provider)
    try:
        first = clnet.get_backend("counted:0")
        listed = provider.listed
        assert all(clnet.get_backend("counted:0") is first for _ in range(5))
        assert provider.listed == listed
        _registry.mark_failed("counted:0", "lost")
        with pytest.raises(BackendUnavailable, match="failed during use"):
            clnet.get_backend("counted:0")
        assert provider.listed == listed + 1
        clnet.register_provider(provider, replace=True)  # forgets the failure and the choice
        again = clnet.get_backend("counted:0")
        assert again is not first and provider.listed == listed + 2
    finally:
        clnet.unregister_provider("counted")


def test_registering_a_provider_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        clnet.register_provider(type("P", (), {"name": "numpy", "candidates": lambda self: []})())


@pytest.mark.skipif(not OPENCL, reason="no OpenCL device")
def test_build_failure_carries_log_options_and_device():
    be = clnet.get_backend(OPENCL[0])
    with pytest.raises(KernelBuildError) as exc:
        be._build("__kernel void broken(__global float *x) { x[0] = undefined_name; }", "broken.cl",
                  ["-D", "CLNET_REAL=float"])
    text = str(exc.value)
    assert be.device_name in text
    assert "CLNET_REAL=float" in text
    assert "undefined_name" in text  # the compiler's log names the bad identifier
    assert os.path.exists(exc.value.source_path)


@pytest.mark.skipif(not OPENCL, reason="no OpenCL device")
def test_compiler_failure_makes_a_device_unusable(monkeypatch):
    """A platform whose compiler fails is reported unusable with the compiler's reason."""
    from clnet import opencl

    def failing_build(self, source, name, options):
        raise KernelBuildError(self.device_name, name, options,
                               "error: unknown target CPU 'generic'\nnote: valid target CPU values are: ...",
                               "(not saved)")

    monkeypatch.setattr(opencl.OpenCLRuntime, "_build", failing_build)
    provider = OpenCLProvider()
    cand = provider.candidates()[0]
    with pytest.raises(BackendUnavailable, match="unknown target CPU 'generic'"):
        cand.load()


@pytest.mark.skipif(not OPENCL, reason="no OpenCL device")
def test_programs_are_compiled_once_per_device_source_and_options(monkeypatch):
    be = clnet.get_backend(OPENCL[0])
    be.program("fnn", "float32")
    clnet.fnn_forward([2, 3, 1], np.ones(9), np.ones((4, 2)), backend=be)
    builds = []
    original = type(be)._build

    def counting(self, *a, **k):
        builds.append(a[1])
        return original(self, *a, **k)

    monkeypatch.setattr(type(be), "_build", counting)
    for _ in range(3):
        clnet.fnn_forward([2, 3, 1], np.ones(9), np.ones((4, 2)), backend=be)
        be.program("fnn", "float32")
    assert builds == []


def test_float64_on_a_device_without_doubles_is_a_clear_error():
    be = clnet.get_backend("numpy")
    no_fp64 = type(be)()
    no_fp64.supports_float64 = False
    no_fp64.spec = "nofp64"
    with pytest.raises(TypeError, match="no double precision"):
        clnet.fnn_forward([1, 1], [1.0], [1.0], backend=no_fp64, dtype="float64")
    with pytest.raises(TypeError, match="float32' or 'float64"):
        clnet.fnn_forward([1, 1], [1.0], [1.0], backend="numpy", dtype="int32")


PLUGIN = textwrap.dedent('''
    """A third-party clnet backend: the FNN family, delegated to the NumPy reference, counting calls."""
    import clnet
    from clnet.backend import Backend, BackendCandidate
    from clnet.contract import FNNOps
    import clnet_fallback

    CALLS = []

    class DummyBackend(Backend, FNNOps):
        spec = "dummy"
        description = "third-party test backend"

        def fnn_layered(self, net, x, dtype):
            CALLS.append("fnn_layered")
            return clnet_fallback.make_backend().fnn_layered(net, x, dtype)

        def fnn_graph(self, pop, x, dtype):
            CALLS.append("fnn_graph")
            return clnet_fallback.make_backend().fnn_graph(pop, x, dtype)

    class HalfBackend(Backend, FNNOps):
        """Declares the FNN family but implements only half of it: refused when loaded."""
        spec = "half"

        def fnn_layered(self, net, x, dtype):
            raise AssertionError("a partial backend must never run")

    class DummyProvider:
        name = "dummy"

        def candidates(self):
            return [BackendCandidate("dummy", DummyBackend.description, 1, DummyBackend)]

    class HalfProvider:
        name = "half"

        def candidates(self):
            return [BackendCandidate("half", "partial", 1, HalfBackend)]
''')


def test_third_party_plugin_registers_through_entry_points(tmp_path):
    install_plugin(tmp_path, "clnet_dummy_plugin", PLUGIN, "[clnet.backends]\ndummy = clnet_dummy_plugin:DummyProvider\n"
                   "half = clnet_dummy_plugin:HalfProvider\n")
    script = textwrap.dedent('''
        import clnet, clnet_dummy_plugin
        specs = [i.spec for i in clnet.backends() if i.usable]
        assert "dummy" in specs, specs
        out = clnet.fnn_forward([2, 2, 1], [1, 2, 3, 4, 5, 6], [1.0, 1.0], backend="dummy")
        assert out.tolist() == [57.0], out
        assert clnet_dummy_plugin.CALLS == ["fnn_layered"]
        with clnet.use_backend("dummy"):
            clnet.fnn_forward([1, 1], [2.0], [3.0])
        assert len(clnet_dummy_plugin.CALLS) == 2
        pop = clnet.FNNPopulation([clnet.FNN.from_structure([1, 1], [1.0])])
        assert pop([1.0], backend="dummy").tolist() == [[1.0]]
        # An operation of a family the plugin does not declare is a clear error, not an AttributeError.
        try:
            clnet.pearson([[1.0, 2.0, 3.0], [3.0, 1.0, 2.0]], backend="dummy")
        except NotImplementedError as exc:
            assert "dummy" in str(exc) and "pearson_plan" in str(exc)
        else:
            raise AssertionError("missing operation not reported")
        # A backend that implements a family in part is refused, naming what it lacks.
        half = {i.spec: i for i in clnet.backends()}["half"]
        assert not half.usable and "fnn_graph" in half.reason and "fnn" in half.reason, half
        try:
            clnet.get_backend("half")
        except clnet.BackendUnavailable as exc:
            assert "fnn_graph" in str(exc)
        else:
            raise AssertionError("partial backend accepted")
        print("plugin ok")
    ''')
    env = dict(os.environ, PYTHONPATH=str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CLNET_BACKEND", None)
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "plugin ok" in res.stdout


def test_broken_plugin_does_not_break_import(tmp_path):
    install_plugin(tmp_path, "clnet_bad_plugin", None, "[clnet.backends]\nbad = no_such_module_anywhere:Provider\n")
    script = ("import clnet\ninfo = {i.spec: i for i in clnet.backends()}\n"
              "assert not info['bad'].usable and 'No module named' in info['bad'].reason, info\n"
              "assert info['numpy'].usable\nprint('ok')")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stdout + res.stderr


def test_opencl_platforms_match_by_name_vendor_and_short_name(monkeypatch):
    """``opencl:pocl`` and ``opencl:intel`` select the two CPU runtimes whatever their order."""
    from types import SimpleNamespace

    from clnet.opencl import devices

    def platform(name, vendor, device):
        dev = SimpleNamespace(name=device)
        return SimpleNamespace(name=name, vendor=vendor, get_devices=lambda: [dev])

    fakes = [platform("Intel(R) OpenCL", "Intel(R) Corporation", "AMD EPYC"),
             platform("Portable Computing Language", "The pocl project", "pthread-skylake-avx512-AMD EPYC")]
    monkeypatch.setattr(devices, "_platforms", lambda: fakes)
    cands = [SimpleNamespace(spec="opencl:0:0", priority=200), SimpleNamespace(spec="opencl:1:0", priority=200)]
    provider = devices.OpenCLProvider()

    def specs(selector):
        return [c.spec for c in provider.match(selector, cands)]

    assert specs("pocl") == ["opencl:1:0"] and specs("pocl:0") == ["opencl:1:0"]  # the README's example
    assert specs("intel") == ["opencl:0:0"] and specs("Intel:epyc") == ["opencl:0:0"]
    assert specs("the pocl project") == ["opencl:1:0"]  # the vendor's own name
    assert specs("corporation") == ["opencl:0:0"]
    assert specs("nvidia") == []


@pytest.mark.skipif(not OPENCL, reason="no OpenCL device")
def test_readme_spec_example_selects_pocl_where_installed():
    descriptions = {clnet.get_backend(s).platform.name for s in OPENCL}
    if "Portable Computing Language" in descriptions:
        assert clnet.get_backend("opencl:pocl:0").platform.name == "Portable Computing Language"
    if "Intel(R) OpenCL" in descriptions:
        assert clnet.get_backend("opencl:intel").platform.name == "Intel(R) OpenCL"
