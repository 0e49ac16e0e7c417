"""Beyond one machine: all-pairs Pearson and population evaluation as dask.distributed tasks.

Public API: :func:`pearson_topk`, :func:`pearson_threshold`, :func:`evaluate_population`
(``pip install 'clnet[distributed]'`` brings dask and distributed). Each takes the options
of its single-machine counterpart and returns exactly its result, plus ``client=`` (default:
dask's current client) and the size of a task.

How the Pearson work is split (the single-machine drivers of :mod:`clnet.pearson` walk the
same strips in one process):

1. The rows are read and standardised where they are: a NumPy array is sent as given once
   and replicated among the workers (4 bytes a float32 value, where standardised rows are
   9), and each worker standardises its copy once, with its plan; a ``.npy`` file is read
   by the workers themselves (memory mapped, a range of rows per task), a dask.array chunk
   by chunk where its chunks live. Rows are standardised independently of each other, so
   chunk by chunk gives the same values as the whole matrix at once.
2. Each worker builds one plan of all rows on its own best backend (or ``backend=``), kept
   for the tasks that follow and for the compiled programs its backend caches, and each
   task computes the top-k lists or the kept pairs of a block of rows against all rows.
   A task is a whole number of the plan's strips, the strips a single-process call walks,
   so every pair is summed exactly as there: with every worker on the same kind of device
   (and, on the NumPy backend, the same BLAS threading: dask workers run BLAS on one
   thread) the results are bitwise those of the single-process call. Where the backend
   computes top-k of X against itself over the upper triangle (OpenCL, k <= 16) and the
   call has few tasks (SYMMETRIC_TASKS_MAX), a task does the same for its strips and
   returns partial lists for the rows from its first on; otherwise it computes its rows
   against all rows (twice the pairs, but only its own rows' lists come back). Upper-
   triangle tasks of the default size hold about equal pairs (the first rows meet the
   most later rows, so the first tasks have the fewest rows); every worker builds its plan
   at once, in a probe task of its own, before the tasks start.
3. The client merges results as tasks finish (``distributed.as_completed``): top-k rows
   are written into the ``(N, k)`` answer, threshold pieces are kept as COO parts. It
   never holds a strip of the N x N matrix or the data of a dask.array.

Faults: a worker that dies mid-run loses only its running tasks, which dask reruns
elsewhere (the data is replicated or recomputable). A task whose automatically chosen
device fails reruns on the worker's next backend (at last NumPy), with a warning that
reaches the client. A task on a named backend whose device fails (DeviceError, or the
device out of memory) is sent to another worker, with a warning naming the worker and
the error; only when it failed on every worker does the call raise, naming each one. A
named backend is never swapped for another: the single-machine call would not either.
"""
from __future__ import annotations

import math
import os
import threading
import time
import uuid
import warnings
from collections import OrderedDict
from typing import List, Optional

import numpy as np

from .fnn import FNN, FNNPopulation, _prepare_inputs
from .pearson import _as_matrix, _check_transform, _progress, checked_k
from .pearson import _row_count as _array_row_count
from ._validate import as_float, as_int
from .backend import Backend, BackendLike, DeviceError, resolve_dtype, run
from .common.packing import PackedPopulation
from .common.pearson import Prepared, diff_rows, standardise_rows

__all__ = ["pearson_topk", "pearson_threshold", "evaluate_population"]

# Rows of a .npy file read by one preparation task (bounded by bytes of float64 values).
CHUNK_BYTES = 64 * 2**20
# Tasks per worker thread when the caller gives no task size: enough to balance the load
# and to lose little when a worker dies, few enough that per-task overhead stays small.
TASKS_PER_THREAD = 4
# Plans (all rows on a device) a worker keeps between tasks, most recent first.
PLANS_KEPT = 2
# Top-k of X against itself computes each pair once (over the upper triangle, where the
# worker's backend does so on one machine) when a call has at most this many tasks: each
# task then returns lists for every row from its first on, which the client merges.
SYMMETRIC_TASKS_MAX = 16
# Seconds a pearson job waits for the first worker of a cluster that has none registered yet.
WORKER_WAIT_S = 120
#: Per task of the last call in this process: worker, backend, seconds on the worker, its
#: start (``time.time()`` there) and arrival here, bytes of its pickled arguments and of the
#: result shipped back (``python -m clnet bench distributed`` reports them).
last_tasks: List[dict] = []


# ---------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------
def _distributed():
    try:
        import distributed
    except ImportError:
        raise ImportError("clnet.distributed needs dask and distributed: pip install 'clnet[distributed]'") from None
    return distributed


def _client(client):
    distributed = _distributed()
    if client is not None:
        if not isinstance(client, distributed.Client):
            raise TypeError(f"client must be a dask.distributed.Client, got {type(client).__name__}")
        return client
    try:
        return distributed.default_client()
    except ValueError:
        raise RuntimeError("clnet.distributed found no dask.distributed client: create one first, e.g. "
                           "Client(LocalCluster()) on this machine or Client('scheduler-address:8786') for "
                           "a cluster, or pass client=") from None


def _threads(client) -> int:
    return max(1, sum(client.nthreads().values()))


def _backend_spec(backend) -> Optional[str]:
    """What the workers resolve: None (each its own best) or a spec string."""
    if backend is None:
        return None
    if isinstance(backend, Backend):
        return backend.spec  # a backend object holds a device context: only its name travels
    if not isinstance(backend, str) or not backend.strip():
        raise ValueError(f"backend must be None or a spec string such as 'numpy' or 'opencl', got {backend!r}")
    return backend


def _task_size(value, name: str) -> Optional[int]:
    return None if value is None else as_int(value, name, minimum=1)


def _forward(report_notes, seen: set) -> None:
    """Re-raise on the client the warnings a task caught on its worker (once each)."""
    for where, message in report_notes:
        if message not in seen:
            seen.add(message)
            warnings.warn(f"clnet.distributed (worker {where}): {message}", RuntimeWarning, stacklevel=3)


def _shipped_bytes(args) -> int:
    import cloudpickle

    return len(cloudpickle.dumps(args))


class _Tasks:
    """Submits tasks and remembers how, so that a task whose device failed on one worker
    can be sent to the others (``workers=``, never back to one that failed it)."""

    def __init__(self, client):
        self.client = client
        self.calls = {}  # future key -> (function, arguments, workers that failed it)
        self.failures = {}  # key of a retry -> {worker: error} of the attempts before it
        self.sent = {}  # future key -> bytes of its pickled arguments (futures travel as keys)

    def submit(self, fn, *args, key: str, failed_on=(), prefer=None):
        where = {} if prefer is None else dict(workers=[prefer], allow_other_workers=True)
        if failed_on:
            where = dict(workers=[w for w in self.client.scheduler_info()["workers"] if w not in failed_on],
                         allow_other_workers=False)
        future = self.client.submit(fn, *args, key=key, pure=False, **where)
        self.calls[future.key] = (fn, args, tuple(failed_on))
        self.sent[future.key] = _shipped_bytes(args)
        return future

    def elsewhere(self, future, report, seen: set):
        """The same task on a worker that has not failed it, or raise when none is left."""
        fn, args, failed_on = self.calls.pop(future.key)
        failed_on = failed_on + (report["worker"],)
        problems = dict(self.failures.get(future.key, ()), **{report["worker"]: report["failed"]})
        others = [w for w in self.client.scheduler_info()["workers"] if w not in failed_on]
        if not others:
            listed = "; ".join(f"on worker {w}: {m}" for w, m in problems.items())
            raise DeviceError(f"clnet.distributed: a task on backend {report['backend']!r} failed on every "
                              f"worker ({listed}); pass backend=None to let each worker fall back by itself")
        notice = (f"backend {report['backend']!r} failed on worker {report['worker']} ({report['failed']}); "
                  f"its tasks are sent to other workers")
        if notice not in seen:
            seen.add(notice)
            warnings.warn(f"clnet.distributed: {notice}", RuntimeWarning, stacklevel=4)
        retry = self.submit(fn, *args, key=f"{future.key}-r{len(failed_on)}", failed_on=failed_on)
        self.failures[retry.key] = problems
        return retry


def _collect(tasks: _Tasks, futures, on_result, progress_total: int, desc: str, progress, fresh: bool = True):
    """Hand each finished task's report to ``on_result`` as it arrives (a task whose
    device failed goes to another worker first); on an error, cancel the rest and raise
    it (no partial result)."""
    distributed = _distributed()
    client = tasks.client
    bar = _progress(progress_total, desc, progress) if progress_total else None
    seen: set = set()
    pending = list(futures)
    if fresh:
        last_tasks.clear()
    try:
        running = distributed.as_completed(pending)
        for future in running:
            report = future.result()
            _forward(report.pop("notes"), seen)
            if "failed" in report:
                retry = tasks.elsewhere(future, report, seen)
                pending.append(retry)
                running.add(retry)
                future.release()
                continue
            last_tasks.append(dict(
                start=report["start"], stop=report["stop"], worker=report["worker"], backend=report["backend"],
                seconds=report["seconds"], began=report["began"], arrived=time.time(),
                task_bytes=tasks.sent.get(future.key, 0),
                result_bytes=sum(v.nbytes for v in report.values() if isinstance(v, np.ndarray))))
            on_result(report)
            if bar is not None:
                bar.update(report["stop"] - report["start"])
            future.release()
    except BaseException:
        client.cancel(pending)
        raise
    finally:
        if bar is not None:
            bar.close()


# ---------------------------------------------------------------------------------------
# Rows: where they come from, and their standardised chunks on the workers
# ---------------------------------------------------------------------------------------
def _npy_path(value) -> Optional[str]:
    """The .npy file ``value`` names or maps in full, else None."""
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if not path.endswith(".npy"):
            raise ValueError(f"a path given as rows must name a .npy file, got {path!r}")
        return path
    filename = getattr(value, "filename", None)
    if isinstance(value, np.memmap) and filename and str(filename).endswith(".npy"):
        whole = np.load(filename, mmap_mode="r")
        if whole.shape == value.shape and whole.dtype == value.dtype and whole.offset == value.offset:
            return str(filename)
    return None  # a view of a mapped file, or another array: read on the client


def _is_dask_array(value) -> bool:
    return hasattr(value, "dask") and hasattr(value, "chunks") and hasattr(value, "to_delayed")


def _check_lazy_dtype(dtype, name: str) -> None:
    kind = np.dtype(dtype).kind
    if kind == "b":
        raise TypeError(f"{name} must hold real numbers, got booleans; convert with .astype(float) if meant")
    if kind not in "iuf":
        raise TypeError(f"{name} must be a numeric array of real numbers, got dtype {dtype}")


class _Rows:
    """Rows as the client describes them: shape, labels, and how the workers get them."""

    def __init__(self, value, name: str):
        self.name = name
        self.labels = None
        self.path = _npy_path(value)
        self.lazy = value if self.path is None and _is_dask_array(value) else None
        if self.path is not None:
            mapped = np.load(self.path, mmap_mode="r")
            self.shape, dtype = mapped.shape, mapped.dtype
        elif self.lazy is not None:
            self.shape, dtype = tuple(value.shape), value.dtype
            if any(isinstance(s, float) and math.isnan(s) for s in self.shape):
                raise ValueError(f"{name} is a dask.array of unknown chunk sizes; call {name}.compute_chunk_sizes()")
        else:
            self.array, self.labels = _as_matrix(value, name)
            self.shape, dtype = self.array.shape, self.array.dtype
        if len(self.shape) != 2:
            raise ValueError(f"{name} must be 2-dimensional (items x positions), got shape {tuple(self.shape)}")
        _check_lazy_dtype(dtype, name)
        self.n = int(self.shape[0])

    def ship(self, client, transform, token: str) -> list:
        """Futures of the standardised chunks, in row order, made where the rows are."""
        if self.path is not None:
            step = max(1, CHUNK_BYTES // max(1, 8 * self.shape[1]))
            return [client.submit(_npy_chunk, self.path, s, min(self.n, s + step), transform, self.name,
                                  key=f"clnet-rows-{token}-{s}") for s in range(0, self.n, step)]
        if self.lazy is not None:
            import dask

            blocks = self.lazy.rechunk({1: -1}).to_delayed()[:, 0]
            return client.compute([dask.delayed(_prepare_chunk)(b, transform, self.name) for b in blocks])
        # The rows as given (float32 rows are 4 bytes a value, standardised ones 9), one copy
        # to one worker, then replicated among them: every worker needs all rows, and a worker
        # that dies takes no data with it. Each worker standardises its copy once, when it
        # builds its plan (_joined).
        return [client.scatter(_RawRows(self.array, transform, self.name), broadcast=True, hash=False)]


class _RawRows:
    """Rows shipped as the caller gave them, standardised where they arrive."""

    def __init__(self, values: np.ndarray, transform, name: str):
        self.values, self.transform, self.name = values, transform, name

    def prepared(self) -> Prepared:
        return _prepare_chunk(self.values, self.transform, self.name)


def _prepare_chunk(raw, transform, name: str) -> Prepared:
    x, _ = _as_matrix(raw, name)
    return standardise_rows(diff_rows(x) if transform == "diff" else x)


def _npy_chunk(path: str, start: int, stop: int, transform, name: str) -> Prepared:
    return _prepare_chunk(np.load(path, mmap_mode="r")[start:stop], transform, name)


# ---------------------------------------------------------------------------------------
# The worker
# ---------------------------------------------------------------------------------------
_PLANS: "OrderedDict" = OrderedDict()
_PLANS_LOCK = threading.Lock()


def _joined(chunks) -> Optional[Prepared]:
    if chunks is None:
        return None
    chunks = [c.prepared() if isinstance(c, _RawRows) else c for c in chunks]
    if len(chunks) == 1:
        return chunks[0]
    return Prepared(np.concatenate([c.filled for c in chunks]), np.concatenate([c.valid for c in chunks]),
                    all(c.complete for c in chunks), np.concatenate([c.count for c in chunks]))


def _plan(be, token: str, x_chunks, y_chunks, dtype, min_overlap: int):
    """This worker's plan of all rows on ``be``, made by the first task that needs it."""
    key = (token, be.spec, str(dtype), min_overlap)
    with _PLANS_LOCK:
        if key in _PLANS:
            _PLANS.move_to_end(key)
            return _PLANS[key]
        plan = be.op("pearson_plan")(_joined(x_chunks), _joined(y_chunks), be.check_dtype(dtype), min_overlap)
        _PLANS[key] = plan
        while len(_PLANS) > PLANS_KEPT:
            _PLANS.popitem(last=False)
        return plan


def _forget(token: str) -> None:
    """Drop this worker's plans of one call (run on every worker when the call ends)."""
    with _PLANS_LOCK:
        for key in [k for k in _PLANS if k[0] == token]:
            del _PLANS[key]


def _strips(start: int, stop: int, step: int):
    """The single-process strips (multiples of ``step``) that cover rows start..stop-1."""
    edge = start
    while edge < stop:
        end = min(stop, (edge // step + 1) * step)
        yield edge, end
        edge = end


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def _reported(work, operation: str, backend):
    """``work(be)`` through clnet's call path, with the warnings it raised kept for the client."""
    t0, began = time.perf_counter(), time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        used = []
        try:
            result = run(backend, operation, lambda be: (used.append(be.spec), work(be))[1])
        except (DeviceError, MemoryError) as exc:
            # The device failed (or ran out of memory) on a backend the caller named: the
            # client sends the task to another worker (see _Tasks.elsewhere).
            result = dict(failed=f"{type(exc).__name__}: {exc}")
            used.append(used[-1] if used else str(backend))
    where = _worker_name()
    result.update(notes=[(where, str(w.message)) for w in caught if issubclass(w.category, RuntimeWarning)],
                  backend=used[-1], worker=where, seconds=time.perf_counter() - t0, began=began)
    return result


def _pearson_task(op: str, token: str, x_chunks, y_chunks, start: int, stop: int, arg, options: dict) -> dict:
    """One task: the top-k lists (``op="topk"``, ``arg=k``) or kept pairs (``"threshold"``)
    of rows start..stop-1; ``"layout"`` only reports the plan's strip size."""

    def work(be):
        plan = _plan(be, token, x_chunks, y_chunks, options["dtype"], options["min_overlap"])
        if op == "layout":
            return dict(start=0, stop=0, strip_rows=int(plan.strip_rows),
                        symmetric_topk_max=int(getattr(plan, "symmetric_topk_max", 0)))
        strips = list(_strips(start, stop, plan.strip_rows))
        out = dict(start=start, stop=stop)
        symmetric = (getattr(plan, "topk_symmetric", None) if op == "topk" and y_chunks is None
                     and options.get("symmetric") else None)
        found = symmetric(arg, strips) if symmetric is not None else None
        if found is not None:
            # The single-process way on this backend: each pair once, over the upper triangle
            # of these strips. Rows from ``start`` on hold candidates from this task only; the
            # client merges them with the other tasks' (rows before ``start`` saw nothing).
            out.update(partial=True, indices=found[0][start:], values=found[1][start:])
            return out
        parts = [plan.topk(s, e, arg) if op == "topk" else plan.threshold(s, e, arg) for s, e in strips]
        if op == "topk":
            out.update(indices=np.concatenate([p[0] for p in parts]), values=np.concatenate([p[1] for p in parts]))
        else:
            out.update(rows=np.concatenate([p[0] for p in parts]).astype(np.int64),
                       cols=np.concatenate([p[1] for p in parts]).astype(np.int64),
                       vals=np.concatenate([p[2] for p in parts]))
        return out

    return _reported(work, f"pearson_{op}", options["backend"])


# ---------------------------------------------------------------------------------------
# Pearson drivers
# ---------------------------------------------------------------------------------------
class _PearsonRun:
    """One distributed Pearson call: validated arguments, shipped rows, the task layout."""

    def __init__(self, X, Y, *, min_overlap, transform, backend, dtype, client, rows_per_task):
        self.x = _Rows(X, "X")
        self.y = None if Y is None else _Rows(Y, "Y")
        if self.y is not None and self.y.shape[1] != self.x.shape[1]:
            raise ValueError(f"Y must have as many columns (positions) as X: X has {self.x.shape[1]}, "
                             f"Y has {self.y.shape[1]}")
        self.transform = _check_transform(transform)
        self.options = dict(min_overlap=as_int(min_overlap, "min_overlap", minimum=1),
                            dtype=resolve_dtype(dtype).name, backend=_backend_spec(backend))
        self.dtype = np.dtype(self.options["dtype"])
        self.rows_per_task = _task_size(rows_per_task, "rows_per_task")
        self.client_arg = client

    def start(self):
        """Ship the rows and find the task size (after every argument was checked)."""
        self.client = _client(self.client_arg)
        self.runner = _Tasks(self.client)
        self.token = uuid.uuid4().hex
        self.x_chunks = self.x.ship(self.client, self.transform, self.token + "-x")
        self.y_chunks = None if self.y is None else self.y.ship(self.client, self.transform, self.token + "-y")
        # One probe per worker, at once: each builds its plan (standardised rows on its
        # device) in parallel with the others, not in its first task behind the first
        # worker's probe. The layout is the first worker's (by address).
        layout = {}
        workers = sorted(self.client.scheduler_info()["workers"])
        if not workers:  # a cluster just started may not have registered its workers yet
            self.client.wait_for_workers(1, timeout=WORKER_WAIT_S)
            workers = sorted(self.client.scheduler_info()["workers"])
        probes = [self._submit("layout", 0, 0, None, f"clnet-pearson-layout-{self.token}-{i}", prefer=w)
                  for i, w in enumerate(workers)]
        _collect(self.runner, probes, lambda r: layout.setdefault(r["worker"], r), 0, "", False)
        if not layout:
            raise RuntimeError("no Dask worker answered the layout probe of pearson_threshold/pearson_topk; "
                               f"the scheduler lists {len(workers)} worker(s)")
        first = layout[min(layout)]
        strip = self.strip_rows = first["strip_rows"]
        self.symmetric_topk_max = first["symmetric_topk_max"]  # the probing worker's backend
        self.wanted_tasks = TASKS_PER_THREAD * _threads(self.client)
        wanted = self.rows_per_task or -(-self.x.n // self.wanted_tasks)
        self.task_rows = max(1, -(-wanted // strip)) * strip  # whole strips, see the module's note
        return self

    def _submit(self, op, start, stop, arg, key, prefer=None):
        return self.runner.submit(_pearson_task, op, self.token, self.x_chunks, self.y_chunks, start, stop, arg,
                                  self.options, key=key, prefer=prefer)

    def tasks(self, op: str, arg) -> list:
        n, step = self.x.n, self.task_rows
        # Partial top-k lists cost the client (N - start) k per task: worth it for few tasks only.
        count = -(-n // step)
        self.options["symmetric"] = symmetric = count <= SYMMETRIC_TASKS_MAX
        edges = list(range(0, n, step)) + [n]
        if (symmetric and op == "topk" and self.y is None and self.rows_per_task is None
                and arg <= self.symmetric_topk_max):
            # Where the worker's backend computes over the upper triangle, row r meets only
            # the rows after it: tasks of equal rows would leave the first one the most work
            # and the workers idle behind it. Tasks of about equal pairs instead.
            edges = _equal_work_edges(n, self.strip_rows, max(count, min(self.wanted_tasks, SYMMETRIC_TASKS_MAX)))
        return [self._submit(op, s, e, arg, f"clnet-pearson-{op}-{self.token}-{s}")
                for s, e in zip(edges[:-1], edges[1:])]

    def finish(self) -> None:
        self.x_chunks = self.y_chunks = None  # the futures go: dask frees the rows on the workers
        try:
            self.client.run(_forget, self.token)
        except Exception:  # a worker that left meanwhile holds nothing any more
            pass


def _equal_work_edges(n: int, strip: int, count: int) -> list:
    """Task edges on whole strips, ``count`` tasks (at most one per strip) that each hold
    about as many upper-triangle pairs: rows a..b-1 meet the rows from themselves on."""
    strip_edges = np.array(list(range(0, n, strip)) + [n], dtype=np.float64)
    before = strip_edges * n - strip_edges * (strip_edges - 1) / 2  # pairs of the rows before an edge
    wanted = np.linspace(0, before[-1], min(count, len(strip_edges) - 1) + 1)
    picked = np.unique(np.abs(before[None, :] - wanted[:, None]).argmin(axis=1))
    return [int(strip_edges[i]) for i in picked]


def pearson_topk(X, k: int, Y=None, *, min_overlap: int = 2, transform: Optional[str] = None,
                 backend: BackendLike = None, dtype=None, progress=None, client=None,
                 rows_per_task: Optional[int] = None):
    """:func:`clnet.pearson_topk` with the rows split into tasks on a dask.distributed cluster.

    Same arguments and result: ``(indices, values)``, both ``(N, k)``. ``X`` (and ``Y``) may
    also be the path of a ``.npy`` file the workers can read, a ``numpy.memmap`` of one,
    or a dask.array (its chunks are read and standardised on the workers). ``client``: a
    ``distributed.Client`` (default: the current one). ``rows_per_task``: rows of X per task,
    rounded up to whole strips of the worker's plan (default: about four tasks per worker
    thread). ``backend``: a spec every worker resolves itself (default: each worker's best).
    """
    x_rows = _row_count(X, "X")
    k = checked_k(k, x_rows, None if Y is None else _row_count(Y, "Y"))
    job = _PearsonRun(X, Y, min_overlap=min_overlap, transform=transform, backend=backend, dtype=dtype,
                      client=client, rows_per_task=rows_per_task)
    job.start()
    indices = np.full((x_rows, k), -1, dtype=np.int64)
    values = np.full((x_rows, k), np.nan, dtype=job.dtype)

    final = np.zeros(x_rows, dtype=bool)  # rows whose lists a task computed against all rows
    partial_blocks = []

    def merge(report):
        s, e = report["start"], report["stop"]
        if report.get("partial"):
            partial_blocks.append((s, e))
            # Partial lists (upper-triangle tasks) merge into rows that no full-row task has
            # answered: such an answer already holds every pair (workers may differ in kind).
            rows = s + np.flatnonzero(~final[s:])
            part_i, part_v = report["indices"][rows - s], report["values"][rows - s]
            indices[rows], values[rows] = _merge_lists(indices[rows], values[rows], part_i, part_v, k)
        else:
            indices[s:e], values[s:e] = report["indices"], report["values"]
            final[s:e] = True

    try:
        _collect(job.runner, job.tasks("topk", k), merge, x_rows, "pearson top-k", progress)
        if partial_blocks and final.any():
            # Workers of different kinds: full-row tasks sent no candidates to later rows, so
            # the rows of the upper-triangle tasks are computed again against all rows.
            job.options = dict(job.options, symmetric=False)
            again = [job._submit("topk", s, e, k, f"clnet-pearson-topk-{job.token}-full-{s}")
                     for s, e in partial_blocks]
            _collect(job.runner, again, merge, 0, "", False, fresh=False)
    finally:
        job.finish()
    if job.x.labels is not None:
        import pandas as pd

        return pd.DataFrame(indices, index=job.x.labels), pd.DataFrame(values, index=job.x.labels)
    return indices, values


def _merge_lists(idx_a, val_a, idx_b, val_b, k: int):
    """Per row, the k best of two candidate lists (largest r, ties by lower index; -1 / NaN
    pads), as the device's running lists keep them. A pair is in at most one of the lists."""
    idx = np.concatenate([idx_a, idx_b], axis=1)
    val = np.concatenate([val_a, val_b], axis=1)
    empty = idx < 0
    order = np.lexsort((np.where(empty, np.iinfo(np.int64).max, idx),
                        np.where(empty, np.inf, -val.astype(np.float64))), axis=1)[:, :k]
    empty = np.take_along_axis(empty, order, axis=1)
    return (np.where(empty, -1, np.take_along_axis(idx, order, axis=1)),
            np.where(empty, np.nan, np.take_along_axis(val, order, axis=1)).astype(val.dtype))


def pearson_threshold(X, threshold: float, Y=None, *, min_overlap: int = 2, transform: Optional[str] = None,
                      backend: BackendLike = None, dtype=None, progress=None, client=None,
                      rows_per_task: Optional[int] = None):
    """:func:`clnet.pearson_threshold` with the rows split into tasks on a dask.distributed
    cluster: the same ``scipy.sparse.csr_matrix``, assembled from each task's COO piece.
    ``X``, ``Y``, ``client``, ``rows_per_task`` and ``backend`` as in :func:`pearson_topk`."""
    t = as_float(threshold, "threshold")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold!r}")
    job = _PearsonRun(X, Y, min_overlap=min_overlap, transform=transform, backend=backend, dtype=dtype,
                      client=client, rows_per_task=rows_per_task)
    import scipy.sparse as sp

    n_rows = job.x.n
    n_cols = n_rows if job.y is None else job.y.n
    pieces = {}
    if n_rows and n_cols:
        job.start()
        try:
            _collect(job.runner, job.tasks("threshold", t), lambda r: pieces.__setitem__(r["start"], r),
                     n_rows, "pearson threshold", progress)
        finally:
            job.finish()
    ordered = [pieces[s] for s in sorted(pieces)]  # the single-process order of the pairs

    def cat(field, dt):
        return np.concatenate([p[field] for p in ordered]).astype(dt, copy=False) if ordered else np.empty(0, dt)

    return sp.csr_matrix((cat("vals", job.dtype), (cat("rows", np.int64), cat("cols", np.int64))),
                         shape=(n_rows, n_cols))


def _row_count(value, name: str) -> int:
    if isinstance(value, (str, os.PathLike)):
        path = _npy_path(value)
        shape = np.load(path, mmap_mode="r").shape
        if len(shape) != 2:
            raise ValueError(f"{name} must be 2-dimensional (items x positions), got shape {tuple(shape)}")
        return int(shape[0])
    return _array_row_count(value, name)


# ---------------------------------------------------------------------------------------
# Populations
# ---------------------------------------------------------------------------------------
def _slice_population(p: PackedPopulation, a: int, b: int) -> PackedPopulation:
    """Networks a..b-1 of a packed population, as a population of their own."""
    n0, n1 = int(p.net_node_start[a]), int(p.net_node_start[b])
    c0, c1 = int(p.node_conn_start[n0]), int(p.node_conn_start[n1])
    return PackedPopulation(
        p.n_inputs, p.n_outputs,
        net_node_start=p.net_node_start[a:b + 1] - n0, net_out=p.net_out[a:b].copy(),
        node_act=p.node_act[n0:n1].copy(), node_agg=p.node_agg[n0:n1].copy(),
        node_conn_start=p.node_conn_start[n0:n1 + 1] - c0, node_bias=p.node_bias[n0:n1].copy(),
        node_resp=p.node_resp[n0:n1].copy(), conn_src=p.conn_src[c0:c1].copy(), conn_w=p.conn_w[c0:c1].copy())


def _population_task(packed: PackedPopulation, first: int, x: np.ndarray, options: dict) -> dict:
    def work(be):
        out = be.op("fnn_graph")(packed, x, be.check_dtype(options["dtype"]))
        return dict(start=first, stop=first + packed.size, outputs=out)

    return _reported(work, "fnn_graph", options["backend"])


def evaluate_population(nets_or_population, inputs, *, client=None, nets_per_task: Optional[int] = None,
                        backend: BackendLike = None, dtype=None) -> np.ndarray:
    """``FNNPopulation(nets)(inputs)`` with the networks split into tasks on a cluster.

    ``nets_or_population``: a :class:`clnet.FNNPopulation` or a list of :class:`clnet.FNN`
    (any mix of topologies). Returns ``(P, B, n_outputs)`` (``(P, n_outputs)`` for one
    sample), equal to the single-process call. ``nets_per_task``: networks per task
    (default: about four tasks per worker thread); the inputs are shipped once.
    """
    if isinstance(nets_or_population, FNNPopulation):
        population = nets_or_population
    elif isinstance(nets_or_population, FNN):
        raise TypeError("evaluate_population takes a clnet.FNNPopulation or a list of clnet.FNN, got one FNN; "
                        "call the network itself")
    else:
        population = FNNPopulation(nets_or_population)
    options = dict(dtype=resolve_dtype(dtype).name, backend=_backend_spec(backend))
    x, single = _prepare_inputs(inputs, population.n_inputs, np.dtype(options["dtype"]))
    per_task = _task_size(nets_per_task, "nets_per_task")
    cl = _client(client)
    packed, P = population.packed, len(population)
    out = np.empty((P, x.shape[0], population.n_outputs), dtype=options["dtype"])
    if x.shape[0]:
        step = per_task or -(-P // (TASKS_PER_THREAD * _threads(cl)))
        shared_x = cl.scatter(x, broadcast=True, hash=False)
        runner = _Tasks(cl)
        futures = [runner.submit(_population_task, _slice_population(packed, a, min(P, a + step)), a, shared_x,
                                 options, key=f"clnet-population-{uuid.uuid4().hex}")
                   for a in range(0, P, step)]

        def merge(report):
            out[report["start"]:report["stop"]] = report["outputs"]

        _collect(runner, futures, merge, 0, "", False)
    return out[:, 0] if single else out


