"""clnet.distributed on a real dask.distributed LocalCluster: 2 worker processes, 1 thread each.

Results are compared with the single-process calls of clnet. Bitwise where the workers use
the same kind of device: the NumPy references here run with BLAS on one thread, as dask's
workers do (a BLAS product is summed in a different order with other thread counts). The
plans' strips are made small (STRIP_BUDGET, on the workers and here alike), so that small
inputs give several tasks with a ragged last one.
"""
import os
import signal
import sys
import threading
import time
import tracemalloc
import warnings

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
import cloudpickle  # noqa: E402  (a dependency of distributed)
from threadpoolctl import threadpool_limits  # noqa: E402

import clnet  # noqa: E402
import clnet.distributed as cd  # noqa: E402
from clnet.backend import BackendCandidate, DeviceError  # noqa: E402
from clnet.common import pearson as host  # noqa: E402

# The workers cannot import this test module: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

N, M = 300, 24
# 32 rows per strip for complete data on the NumPy backend (12 bytes per pair), 8 with missing data.
SMALL_BUDGET = 32 * N * 12


class _SmallStrips(distributed.WorkerPlugin):
    """Small strips on every worker, those a nanny restarts included."""

    def setup(self, worker):
        from clnet.common import pearson as shared

        shared.STRIP_BUDGET = SMALL_BUDGET


def test_without_a_client_the_error_says_how_to_make_one():
    with pytest.raises(ValueError):  # this runs before the module's cluster exists
        distributed.default_client()
    X = np.random.default_rng(0).normal(size=(20, 5))
    with pytest.raises(RuntimeError, match=r"no dask.distributed client.*Client\('scheduler-address:8786'\)"):
        cd.pearson_topk(X, 3)
    # Bad arguments are refused before any client is looked for.
    with pytest.raises(ValueError, match="k must be smaller"):
        cd.pearson_topk(X, 20)
    with pytest.raises(ValueError, match="threshold must lie"):
        cd.pearson_threshold(X, 1.5)
    with pytest.raises(ValueError, match="transform"):
        cd.pearson_topk(X, 3, transform="log")
    with pytest.raises(TypeError, match="rows_per_task"):
        cd.pearson_topk(X, 3, rows_per_task=2.5)
    with pytest.raises(TypeError, match="client must be a dask.distributed.Client"):
        cd.pearson_topk(X, 3, client="tcp://nowhere:8786")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, worker_dashboard_address=None)
    cl = distributed.Client(cluster)
    saved = host.STRIP_BUDGET
    cl.register_plugin(_SmallStrips())
    host.STRIP_BUDGET = SMALL_BUDGET
    try:
        yield cl
    finally:
        host.STRIP_BUDGET = saved
        cl.close()
        cluster.close()


def _curves(n=N, m=M, missing=0.0, seed=0):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(size=(n, m)), axis=1) + rng.normal(size=(n, 1)) * 50
    x[rng.random(x.shape) < missing] = np.nan
    return x


def _reference(fn, *args, **kwargs):
    with threadpool_limits(limits=1, user_api="blas"):
        return fn(*args, **kwargs)


def _assert_same_topk(got, expected):
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])  # NaN padding compares equal


def _assert_same_csr(got, expected):
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(got.indptr, expected.indptr)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.data, expected.data)


@pytest.mark.parametrize("missing, transform", [(0.0, None), (0.15, None), (0.15, "diff"), (0.0, "diff")])
@pytest.mark.parametrize("k", [4, N - 2])
def test_topk_is_bitwise_the_single_process_result_over_ragged_tasks(client, missing, transform, k):
    X = _curves(missing=missing, seed=int(missing * 100) + k)
    got = cd.pearson_topk(X, k, transform=transform, backend="numpy", rows_per_task=50)
    tasks = sorted((t["start"], t["stop"]) for t in cd.last_tasks)
    step = tasks[0][1] - tasks[0][0]
    assert len(tasks) > 3 and step >= 50 and tasks[-1][1] - tasks[-1][0] < step  # N not a multiple: ragged
    assert {t["backend"] for t in cd.last_tasks} == {"numpy"}
    _assert_same_topk(got, _reference(clnet.pearson_topk, X, k, transform=transform, backend="numpy"))


@pytest.mark.parametrize("missing, transform, threshold", [(0.0, None, 0.9), (0.2, "diff", 0.3), (0.2, None, 0.0)])
def test_threshold_graph_is_bitwise_the_single_process_result(client, missing, transform, threshold):
    X = _curves(missing=missing, seed=3)
    got = cd.pearson_threshold(X, threshold, transform=transform, backend="numpy", rows_per_task=40,
                               dtype="float64")
    expected = _reference(clnet.pearson_threshold, X, threshold, transform=transform, backend="numpy",
                          dtype="float64")
    assert expected.nnz > 0
    _assert_same_csr(got, expected)


def test_rows_against_other_rows_and_dataframe_labels(client):
    pd = pytest.importorskip("pandas")
    X, Y = _curves(n=120, missing=0.1, seed=4), _curves(n=70, missing=0.1, seed=5)
    frame = pd.DataFrame(X, index=[f"curve{i}" for i in range(len(X))])
    idx, val = cd.pearson_topk(frame, 70, Y, backend="numpy", rows_per_task=20)
    ref_idx, ref_val = _reference(clnet.pearson_topk, frame, 70, Y, backend="numpy")
    assert list(idx.index) == list(frame.index)
    _assert_same_topk((idx.to_numpy(), val.to_numpy()), (ref_idx.to_numpy(), ref_val.to_numpy()))
    _assert_same_csr(cd.pearson_threshold(X, 0.5, Y, backend="numpy", rows_per_task=30),
                     _reference(clnet.pearson_threshold, X, 0.5, Y, backend="numpy"))


def test_npy_file_memmap_and_dask_array_inputs_give_the_same_result(client, tmp_path):
    X = _curves(missing=0.1, seed=6).astype(np.float32)
    X[5, 3] = np.inf  # non-finite is missing, wherever the rows are read
    path = tmp_path / "curves.npy"
    np.save(path, X)
    expected = _reference(clnet.pearson_topk, X, 6, backend="numpy")
    lazy = da.from_array(X, chunks=(70, 8))  # column chunks too: rows are joined on the workers
    for source in (str(path), path, np.load(path, mmap_mode="r"), lazy):
        _assert_same_topk(cd.pearson_topk(source, 6, backend="numpy", rows_per_task=64), expected)
    _assert_same_csr(cd.pearson_threshold(lazy, 0.8, backend="numpy"),
                     _reference(clnet.pearson_threshold, X, 0.8, backend="numpy"))
    with pytest.raises(ValueError, match=".npy"):
        cd.pearson_topk(str(tmp_path / "curves.csv"), 3)


@pytest.mark.parametrize("missing, k", [(0.1, 5), (0.0, 12), (0.1, 20)])
def test_every_worker_on_its_own_best_backend_matches_the_single_process_call(client, missing, k):
    # On OpenCL, k <= 16 runs each task over the upper triangle of its strips (each pair
    # once, as the single process does) and the client merges the partial lists.
    X = _curves(missing=missing, seed=7 + k)
    got = cd.pearson_topk(X, k, rows_per_task=64)
    backends_used = {t["backend"] for t in cd.last_tasks}
    expected_backend = clnet.get_backend().spec  # what a single process here picks by itself
    assert backends_used == {expected_backend} and len(cd.last_tasks) > 2
    _assert_same_topk(got, _reference(clnet.pearson_topk, X, k))


def _pairs_from(a, b, n):
    """Upper-triangle pairs of rows a..b-1 (row r meets the rows from r on), counted one by one."""
    return sum(n - r for r in range(a, b))


def test_default_upper_triangle_tasks_hold_about_equal_pairs(client):
    # At the benchmark's shape (strips of 496 rows): eight tasks of whole strips, none with
    # far more pairs than another, the first ones with fewer rows.
    n, strip = 50_000, 496
    edges = cd._equal_work_edges(n, strip, 8)
    assert edges[0] == 0 and edges[-1] == n and len(edges) == 9
    assert all(e % strip == 0 for e in edges[:-1])
    pairs = [_pairs_from(a, b, n) for a, b in zip(edges[:-1], edges[1:])]
    # Each edge is the strip edge nearest its share: a task is off by at most one strip's pairs,
    # where tasks of equal rows would give the first twice the average.
    mean = sum(pairs) / len(pairs)
    assert max(abs(p - mean) for p in pairs) <= strip * n, pairs
    assert max(pairs) < 0.6 * _pairs_from(0, -(-n // 8), n)
    assert edges[1] - edges[0] < edges[-1] - edges[-2]
    if not clnet.get_backend().spec.startswith("opencl"):
        pytest.skip("the upper-triangle top-k is OpenCL's; NumPy workers get tasks of equal rows")
    X = _curves(missing=0.1, seed=14)
    got = cd.pearson_topk(X, 5)  # default task size, on the workers' OpenCL backend
    spans = sorted((t["start"], t["stop"]) for t in cd.last_tasks)
    assert spans[0][0] == 0 and spans[-1][1] == N and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert len(spans) >= 3 and spans[0][1] - spans[0][0] < spans[-1][1] - spans[-1][0]
    _assert_same_topk(got, _reference(clnet.pearson_topk, X, 5))


def _backend_and_programs():
    be = clnet.get_backend()
    return id(be), be.spec, len(getattr(be, "_programs", {}))


def test_workers_keep_their_backend_and_compiled_programs_between_calls(client):
    if not clnet.get_backend().spec.startswith("opencl"):
        pytest.skip("the NumPy backend compiles nothing")
    for seed in (21, 22):  # every worker runs tasks of this shape and builds what it needs
        cd.pearson_topk(_curves(missing=0.1, seed=seed), 5, rows_per_task=64)
    before = client.run(_backend_and_programs)
    cd.pearson_topk(_curves(missing=0.1, seed=23), 5, rows_per_task=64)
    assert {t["worker"] for t in cd.last_tasks} == set(before)  # both workers ran tasks
    after = client.run(_backend_and_programs)
    assert after == before and all(n > 0 for _, _, n in after.values())


def _numpy_by_default():
    os.environ["CLNET_BACKEND"] = "numpy"  # this worker behaves as one without OpenCL
    return os.getpid()


def _automatic_again():
    os.environ.pop("CLNET_BACKEND", None)


def test_a_worker_without_opencl_runs_numpy_within_the_tolerance_table(client):
    if not any(info.usable and info.spec.startswith("opencl") for info in clnet.backends()):
        pytest.skip("every worker runs the NumPy backend here: nothing mixed to check")
    from clnet.tolerances import tolerance

    X = _curves(missing=0.1, seed=11)
    first, second = sorted(client.scheduler_info()["workers"])
    client.run(_numpy_by_default, workers=[first])
    # Slow tasks on the OpenCL worker: dask moves queued ones to the other (which one runs
    # what is dask's choice, so a run that happens to use one kind only is tried again).
    client.run(_slow_tasks, os.devnull, 0.3, workers=[second])
    try:
        for attempt in range(4):
            idx, val = cd.pearson_topk(X, 6, rows_per_task=32)
            if {t["backend"].split(":")[0] for t in cd.last_tasks} == {"numpy", "opencl"}:
                break
    finally:
        client.run(_automatic_again)
        client.run(_restore_tasks)
    assert {t["backend"].split(":")[0] for t in cd.last_tasks} == {"numpy", "opencl"}
    exact = clnet.pearson(X, backend="numpy", dtype="float64")
    np.fill_diagonal(exact, np.nan)
    atol = tolerance("pearson", "float32").atol
    rows = np.arange(len(X))[:, None]
    # Each value is the r of the pair it names, and no better pair was left out.
    np.testing.assert_allclose(val, exact[rows, idx], atol=atol, rtol=0)
    kth_best = -np.sort(-np.nan_to_num(exact, nan=-np.inf), axis=1)[:, 5]
    assert (val[:, -1] >= kth_best - 2 * atol).all()


def test_client_memory_stays_small_for_a_dask_array_input(client):
    n, m, k = 2000, 400, 5
    X = da.random.RandomState(1).standard_normal((n, m), chunks=(250, m))  # made on the workers
    tracemalloc.start()
    try:
        idx, val = cd.pearson_topk(X, k, backend="numpy", rows_per_task=250)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (idx >= 0).all()
    # X is 6.4 MB and the N x N matrix 16 MB; the client holds the (N, k) answer, one
    # task's report and the scheduler's bookkeeping.
    assert peak < 3 * 2**20, f"client peak {peak / 2**20:.1f} MiB"
    np.testing.assert_array_equal(idx, _reference(clnet.pearson_topk, X.compute(), k, backend="numpy")[0])


def _population(rng):
    nets = []
    for p in range(11):  # graphs of different sizes and layered networks, mixed
        if p % 3 == 2:
            nets.append(clnet.FNN.from_structure([3, 2 + p % 4, 2], rng.normal(size=3 * (2 + p % 4) + 2 * (2 + p % 4)),
                                                 activation="tanh"))
            continue
        hidden = list(range(2, 2 + p % 5))
        nodes = [{"key": 0, "bias": rng.normal()}, {"key": 1, "activation": "sigmoid"}] + \
                [{"key": h, "bias": rng.normal(), "activation": "relu"} for h in hidden]
        conns = [(-1 - (h % 3), h, rng.normal(), True) for h in hidden]
        conns += [(h, h % 2, rng.normal(), True) for h in hidden] + [(-1, 0, 0.5, True), (-2, 1, -1.5, True)]
        nets.append(clnet.FNN.from_graph(3, 2, nodes, conns))
    return nets


def test_population_of_mixed_topologies_equals_the_single_process_call(client):
    rng = np.random.default_rng(8)
    nets = _population(rng)
    x = rng.normal(size=(9, 3))
    expected = clnet.FNNPopulation(nets)(x, backend="numpy")
    for given in (nets, clnet.FNNPopulation(nets)):
        got = cd.evaluate_population(given, x, nets_per_task=4, backend="numpy")  # 4 + 4 + 3
        assert len(cd.last_tasks) == 3
        np.testing.assert_array_equal(got, expected)
    one = cd.evaluate_population(nets, x[0], backend="numpy", dtype="float64")
    np.testing.assert_array_equal(one, clnet.FNNPopulation(nets)(x[0], backend="numpy", dtype="float64"))
    auto = cd.evaluate_population(nets, x)  # each worker's best backend
    np.testing.assert_array_equal(auto, clnet.FNNPopulation(nets)(x))
    with pytest.raises(ValueError, match="inputs must have 3 columns"):
        cd.evaluate_population(nets, rng.normal(size=(4, 2)))
    with pytest.raises(TypeError, match="nets_per_task"):
        cd.evaluate_population(nets, x, nets_per_task="4")


# -- faults -----------------------------------------------------------------------------------
class _FlakyPearson(type(clnet.get_backend("numpy"))):
    spec = "flaky"
    description = "a device that is lost as soon as Pearson runs on it"

    def pearson_plan(self, rows, cols, dtype, min_overlap):
        raise DeviceError("device 'flaky' was lost (CL_DEVICE_NOT_AVAILABLE)")


class _FlakyProvider:
    name = "flaky"

    def candidates(self):
        return [BackendCandidate("flaky", _FlakyPearson.description, 10**6, _FlakyPearson)]


def _install_flaky():
    clnet.register_provider(_FlakyProvider(), replace=True)
    return os.getpid()


def _remove_flaky():
    clnet.unregister_provider("flaky")


def test_a_task_whose_device_fails_reruns_on_the_next_backend_with_a_warning(client):
    X = _curves(missing=0.1, seed=9)
    # On every worker: dask may place every task on one worker, and installing it on one
    # only made the warning depend on where the tasks ran (a flaky test).
    client.run(_install_flaky)
    try:
        with pytest.warns(RuntimeWarning, match=r"worker .*backend .flaky. failed during pearson_"):
            got = cd.pearson_topk(X, 5, rows_per_task=64)
        assert "flaky" not in {t["backend"] for t in cd.last_tasks}
        _assert_same_topk(got, _reference(clnet.pearson_topk, X, 5))
    finally:
        client.run(_remove_flaky)


class _BrokenOnOneWorker(type(clnet.get_backend("numpy"))):
    """The NumPy backend under the name 'shaky', whose device is lost on one worker: the
    first worker to build a Pearson plan or evaluate a population on it (claimed through
    a file, so that exactly one is broken whichever dask picks)."""

    spec = "shaky"
    description = "NumPy, but lost on the worker that claims the marker file"
    marker = None

    def _broken_here(self):
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
        except FileExistsError:
            pass
        with open(self.marker) as claimed:
            return claimed.read() == str(os.getpid())

    def pearson_plan(self, *args):
        if self._broken_here():
            raise DeviceError(f"device 'shaky' was lost in process {os.getpid()} (CL_DEVICE_NOT_AVAILABLE)")
        return super().pearson_plan(*args)

    def fnn_graph(self, *args):
        if self._broken_here():
            raise DeviceError(f"device 'shaky' was lost in process {os.getpid()} (CL_DEVICE_NOT_AVAILABLE)")
        return super().fnn_graph(*args)


class _ShakyProvider:
    name = "shaky"

    def candidates(self):
        return [BackendCandidate("shaky", _BrokenOnOneWorker.description, -1, _BrokenOnOneWorker)]


def _install_shaky(marker):
    _BrokenOnOneWorker.marker = marker
    clnet.register_provider(_ShakyProvider(), replace=True)


def _remove_shaky():
    clnet.unregister_provider("shaky")


def test_a_named_backend_that_fails_on_one_worker_is_retried_on_another_with_a_warning(client, tmp_path):
    X = _curves(missing=0.1, seed=12)
    expected = _reference(clnet.pearson_topk, X, 5, backend="numpy")
    rng = np.random.default_rng(13)
    nets, x = _population(rng), rng.normal(size=(5, 3))
    try:
        client.run(_install_shaky, str(tmp_path / "pearson"))
        with pytest.warns(RuntimeWarning, match=r"backend 'shaky' failed on worker tcp://.*DeviceError.*"
                                                r"lost in process.*sent to other workers"):
            got = cd.pearson_topk(X, 5, backend="shaky", rows_per_task=64)
        broken = int((tmp_path / "pearson").read_text())
        pids = client.run(os.getpid)
        healthy = [w for w, pid in pids.items() if pid != broken]
        assert len(healthy) == 1 and {t["worker"] for t in cd.last_tasks} == set(healthy)
        assert {t["backend"] for t in cd.last_tasks} == {"shaky"}  # the named backend, never another
        _assert_same_topk(got, expected)  # the shaky backend is NumPy: bitwise the same
        client.run(_install_shaky, str(tmp_path / "population"))
        with pytest.warns(RuntimeWarning, match="backend 'shaky' failed on worker"):
            out = cd.evaluate_population(nets, x, nets_per_task=3, backend="shaky")
        np.testing.assert_array_equal(out, clnet.FNNPopulation(nets)(x, backend="numpy"))
        # Broken on every worker: the call raises, naming each worker and its error.
        client.run(_install_flaky)
        with pytest.raises(DeviceError, match=r"failed on every worker \(on worker tcp://.*flaky.*"
                                              r"on worker tcp://.*flaky"):
            cd.pearson_topk(X, 5, backend="flaky", rows_per_task=64)
    finally:
        client.run(_remove_shaky)
        client.run(_remove_flaky)


def _slow_tasks(marker, delay=0.4):
    """On a worker: each task announces itself in ``marker``, then takes a while."""
    import clnet.distributed as module

    original = getattr(module, "_original_task", module._pearson_task)
    module._original_task = original

    def slow(*args, **kwargs):
        open(marker, "a").close()
        time.sleep(delay)
        return original(*args, **kwargs)

    module._pearson_task = slow
    return os.getpid()


def _restore_tasks():
    import clnet.distributed as module

    module._pearson_task = getattr(module, "_original_task", module._pearson_task)


def test_a_worker_killed_mid_run_still_gives_the_identical_result(client, tmp_path):
    X = _curves(missing=0.1, seed=10)
    expected = _reference(clnet.pearson_topk, X, 5, backend="numpy")
    victim = sorted(client.scheduler_info()["workers"])[0]
    marker = str(tmp_path / "started")
    pid = client.run(_slow_tasks, marker, workers=[victim])[victim]
    killed = threading.Event()

    def kill_when_busy():
        deadline = time.time() + 60
        while not os.path.exists(marker) and time.time() < deadline:
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)  # mid-task: the marker is written before the task's work
        killed.set()

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dask's own notices about the lost worker
            got = cd.pearson_topk(X, 5, backend="numpy", rows_per_task=32)
    finally:
        killer.join()
    assert killed.is_set()
    assert victim not in {t["worker"] for t in cd.last_tasks}  # nothing came back from the dead worker
    _assert_same_topk(got, expected)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it


def test_the_benchmark_runs_and_checks_its_result(tmp_path):
    import pathlib
    import subprocess

    root = pathlib.Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "CLNET_BACKEND"}
    res = subprocess.run([sys.executable, "-m", "clnet", "bench", "distributed", "--n", "800", "--backend", "numpy"],
                         cwd=root, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "identical result: True" in res.stdout and "seconds per task on its worker" in res.stdout
