"""The backend contract (clnet/contract.py), the one call path, named kernel arguments,
data kept on the device between layers and calls, and CLNET_TEST."""
import os
import subprocess
import sys

import numpy as np
import pytest

import clnet
from clnet import contract
from clnet.backend import Backend, DeviceError
from clnet.conformance import api_check


# --- the contract -----------------------------------------------------------------------------
def test_every_registered_backend_passes_the_api_check(any_backend):
    res = api_check(any_backend)
    assert res.passed, res.failure
    assert {f.name for f in contract.families_of(any_backend)} == {"fnn", "rnn", "bptt", "bptt_group", "pearson", "mcl",
                                                                  "paths"}
    assert res.cases == sum(len(f.operations()) for f in contract.FAMILIES)


def test_the_api_check_catches_a_changed_signature_and_a_missing_operation():
    import clnet_fallback

    class Renamed(clnet_fallback.NumpyBackend):
        spec = "renamed"

        def fnn_layered(self, network, x, dtype):  # parameter renamed
            return super().fnn_layered(network, x, dtype)

    res = api_check(Renamed())
    assert not res.passed and "fnn.fnn_layered" in res.failure and "'net', 'x', 'dtype']" in res.failure

    class Half(Backend, contract.FNNOps):
        spec = "half"

        def fnn_graph(self, pop, x, dtype):
            return None

    assert contract.missing_operations(Half) == {"fnn": ["fnn_layered"]}
    with pytest.raises(contract.ContractError, match="fnn_layered"):
        contract.check_backend(Half)
    assert "fnn.fnn_layered: missing" in api_check(Half()).failure


def test_a_backend_without_a_family_reports_the_operation_and_is_skipped_by_the_suite():
    import clnet_fallback
    from clnet import conformance

    class OnlyFNN(Backend, clnet_fallback.FNNReference):
        spec = "onlyfnn"
        description = "fnn only"

    be = OnlyFNN()
    with pytest.raises(NotImplementedError, match="onlyfnn.*rnn_state_new"):
        clnet.LSTMCell(2, 3).initial_state(1, backend=be)
    assert api_check(be).passed
    results = [conformance.run_check(be, c, "float32", max_examples=3) if c.operation.startswith("fnn")
               else None for c in conformance.checks()]
    assert all(r.passed for r in results if r is not None)


def test_every_operation_has_a_docstring_and_types():
    for fam in contract.FAMILIES + (contract.PearsonPlan,):
        assert fam.operations(), fam
        for op in fam.operations():
            fn = vars(fam)[op]
            assert fn.__doc__ and fn.__doc__.strip(), f"{fam.name}.{op} has no docstring"
            assert fn.__annotations__.get("return") is not None, f"{fam.name}.{op} has no return type"


# --- one call path --------------------------------------------------------------------------
class Failing(Backend, contract.FNNOps):
    """A backend whose driver raises its own error type; translate_error maps it."""

    spec = "failing"
    description = "always fails"

    class DriverError(Exception):
        pass

    def fnn_layered(self, net, x, dtype):
        raise self.DriverError("device lost")

    def fnn_graph(self, pop, x, dtype):
        raise self.DriverError("device lost")

    def translate_error(self, exc, operation):
        if isinstance(exc, self.DriverError):
            return DeviceError(f"backend {self.spec!r} failed during {operation}: {exc}")
        return None


def test_driver_errors_of_any_backend_become_device_errors_naming_the_operation():
    with pytest.raises(DeviceError, match="failing.*fnn_layered.*device lost"):
        clnet.fnn_forward([1, 1], [1.0], [1.0], backend=Failing())
    with pytest.raises(DeviceError, match="fnn_graph"):
        clnet.FNNPopulation([clnet.FNN.from_structure([1, 1], [1.0])])([1.0], backend=Failing())


def test_other_errors_pass_through_the_call_path_unchanged():
    with pytest.raises(ZeroDivisionError):
        clnet.backend.run(Failing(), "custom", lambda be: 1 / 0)


# --- kernel arguments by name ---------------------------------------------------------------------
def test_kernel_signatures_are_parsed_from_the_sources():
    from clnet.opencl.args import parse_signatures
    from clnet.opencl import kernel_dir

    sigs = parse_signatures((kernel_dir() / "fnn.cl").read_text())
    layered = sigs["clnet_fnn_layered"]
    assert layered.names[:3] == ("n_layers", "structure", "acts")
    assert [a.pointer for a in layered.args][:2] == [False, True]
    every = {name for f in ("fnn", "rnn", "bptt", "pearson") for name in parse_signatures((kernel_dir() / f"{f}.cl").read_text())}
    assert {"clnet_rnn_recur", "clnet_bptt_gemm", "clnet_pearson_sparse", "clnet_fnn_graph"} <= every


def test_a_missing_extra_or_mistyped_kernel_argument_names_the_kernel_and_the_argument(opencl_backend):
    from clnet.opencl import KernelArgumentError

    be = opencl_backend
    knl = be.kernel("rnn", "clnet_rnn_zero_rows", np.float32, ("CLNET_VW=16",))
    buf = be.empty(64)
    with pytest.raises(KernelArgumentError, match="clnet_rnn_zero_rows.*missing.*keep"):
        knl(be.queue, (4,), None, B=1, W=4, buf=buf)
    with pytest.raises(KernelArgumentError, match="clnet_rnn_zero_rows.*unexpected.*extra"):
        knl(be.queue, (4,), None, B=1, W=4, buf=buf, keep=buf, extra=1)
    with pytest.raises(KernelArgumentError, match="'W' is an integer"):
        knl(be.queue, (4,), None, B=1, W=4.5, buf=buf, keep=buf)
    with pytest.raises(KernelArgumentError, match="'buf' is a device buffer"):
        knl(be.queue, (4,), None, B=1, W=4, buf=np.zeros(4, np.float32), keep=buf)
    with pytest.raises(KernelArgumentError, match="'B' = 4294967296 does not fit in int32"):
        knl(be.queue, (4,), None, B=2**32, W=4, buf=buf, keep=buf)


def test_constants_shared_with_the_kernels_are_defined_once():
    """pearson.cl and rnn.cl refuse to build without the host's values (no second copy)."""
    from clnet.opencl import kernel_dir

    pearson = (kernel_dir() / "pearson.cl").read_text()
    rnn = (kernel_dir() / "rnn.cl").read_text()
    assert "#define CLNET_RESCUE" not in pearson and "#error" in pearson
    assert "#define CLNET_SR " not in pearson and "#define CLNET_VW" not in rnn


# --- data stays on the device ---------------------------------------------------------------------
@pytest.fixture
def transfers(monkeypatch):
    """Counts host <-> device copies: uploads of new buffers (and arrays handed over in place),
    and enqueue_copy both ways."""
    import pyopencl as cl

    from clnet.opencl.runtime import OpenCLRuntime

    seen = {"up": [], "read": [], "write": []}
    real_copy, real_up, real_adopt = cl.enqueue_copy, OpenCLRuntime.to_device, OpenCLRuntime.adopt

    def copy(queue, dest, src, **kw):
        if isinstance(dest, np.ndarray):
            seen["read"].append(dest.nbytes)
        elif isinstance(src, np.ndarray):
            seen["write"].append(src.nbytes)
        return real_copy(queue, dest, src, **kw)

    def up(self, array, what="array"):
        seen["up"].append(np.asarray(array).nbytes)
        return real_up(self, array, what)

    def adopt(self, array, what="array"):  # handed over: read in place on a CPU device, else copied by to_device
        if self.shares_host_memory:
            seen["up"].append(np.asarray(array).nbytes)
        return real_adopt(self, array, what)

    monkeypatch.setattr(cl, "enqueue_copy", copy)
    monkeypatch.setattr(OpenCLRuntime, "to_device", up)
    monkeypatch.setattr(OpenCLRuntime, "adopt", adopt)
    return seen


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("B", [3, 130])  # one launch for all steps, and one launch per step
def test_stacked_sequence_keeps_the_layers_on_the_device(opencl_backend, transfers, kind, B):
    model = getattr(clnet, kind)(5, 20, num_layers=3, seed=1)
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(6, B, 5)).astype(np.float32)
    states = model.initial_state(B, backend=opencl_backend)
    model.sequence(xs, states)  # weights prepared and uploaded once
    for k in transfers:
        transfers[k].clear()
    out = model.sequence(xs, states)
    assert transfers["up"] == [xs.nbytes], transfers  # the inputs, once
    assert transfers["write"] == []
    assert len(transfers["read"]) == 1 and transfers["read"][0] >= out.nbytes  # the outputs, once
    ref_states = model.initial_state(B, backend="numpy")
    model.sequence(xs, ref_states)
    np.testing.assert_allclose(out, model.sequence(xs, ref_states), atol=2e-5, rtol=1e-4)
    for got, ref in zip(states, ref_states):
        np.testing.assert_allclose(got.h, ref.h, atol=2e-5, rtol=1e-4)


def test_layered_network_keeps_its_structure_and_weights_on_the_device(opencl_backend, transfers):
    net = clnet.FNN.from_structure([3, 8, 2], np.arange(40) / 40, activation="tanh")
    x = np.ones((10, 3))
    first = net(x, backend=opencl_backend)
    assert len(transfers["up"]) == 5  # structure, activations, weights, biases, inputs
    transfers["up"].clear()
    np.testing.assert_array_equal(net(x, backend=opencl_backend), first)
    assert len(transfers["up"]) == 1  # the inputs only


# --- CLNET_TEST -------------------------------------------------------------------------------------
def _collected_ids(env_value):
    env = dict(os.environ, CLNET_TEST=env_value)
    env.pop("CLNET_REQUIRE_OPENCL", None)
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "tests/test_fnn.py"], env=env, capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return res, [ln for ln in res.stdout.splitlines() if "::" in ln]


def test_clnet_test_restricts_the_backends_the_suite_runs_on():
    res, ids = _collected_ids("numpy")
    assert res.returncode == 0, res.stdout + res.stderr
    assert any("[numpy" in i for i in ids) and not any("opencl" in i for i in ids)
    opencl = clnet.backend.specs_matching("opencl")
    if opencl:
        res, ids = _collected_ids("numpy;opencl:pocl")
        assert res.returncode == 0, res.stdout + res.stderr
        assert any("[numpy" in i for i in ids)
        pocl = clnet.backend.specs_matching("opencl:pocl")
        assert all(any(f"[{s}" in i for i in ids) for s in pocl)
    res, _ = _collected_ids("opencl:no-such-platform")
    assert res.returncode != 0 and "matches no backend" in res.stdout + res.stderr
