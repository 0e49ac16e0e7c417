"""Benchmark of clnet.distributed: ``python -m clnet bench distributed [--quick]``.

Top-k Pearson (N=50,000 curves, M=200 positions, 10% missing, k=10) once in this process
and once as tasks on a LocalCluster of 2 worker processes (1 thread each) on the same
machine: the overhead ratio (target: within 1.3x of the single-process time), and per
task the rows, seconds on the worker and bytes shipped. Both runs use the same backend
(``--backend``, default: the best usable one), warmed up first (programs compiled).
The scaling plan that uses these figures is docs/SCALING.md.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from .. import _cli as cli
from .pearson import _data


def _blas_like_workers(spec: str):
    """On the NumPy backend, BLAS on one thread as in dask's workers (other thread counts
    sum in another order, so the results would differ in their last bits)."""
    import contextlib

    if not spec.startswith("numpy"):
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("   (threadpoolctl is not installed: BLAS threads differ from the workers', last bits may too)")
        return contextlib.nullcontext()
    print("   (NumPy backend: BLAS on one thread in the single-process run, as in dask's workers)")
    return threadpool_limits(limits=1, user_api="blas")


def main(argv=None) -> int:
    parser = cli.parser("python -m clnet bench distributed", __doc__)
    parser.add_argument("--quick", action="store_true", help="N=10,000 instead of 50,000")
    parser.add_argument("--n", type=int, default=None, help="rows (default 50,000; 10,000 with --quick)")
    parser.add_argument("--m", type=int, default=200, help="positions per row (default 200)")
    parser.add_argument("--backend", default=None, help="backend spec (default: the best usable one)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print("bench distributed needs dask and distributed: pip install 'clnet[distributed]'")
        return 2

    import clnet
    import clnet.distributed as cd

    n = args.n or (10_000 if args.quick else 50_000)
    m, k = args.m, 10
    be = clnet.get_backend(args.backend)
    spec = be.spec
    x = _data(n, m, 0.10, seed=1)
    print(f"clnet {clnet.__version__} distributed benchmark; backend {spec} ({be.description})")
    print(f"top-k: N={n:,}, M={m}, k={k}, float32, 10% missing; {args.workers} worker processes x 1 thread")

    # Warm-up on the same rows over 8 positions: the launch parameters depend on N, so the
    # programs compiled here are those the timed runs use.
    warm = np.ascontiguousarray(x[:, :8])
    with _blas_like_workers(spec):
        clnet.pearson_topk(warm, k, backend=spec)
        t0 = time.perf_counter()
        single = clnet.pearson_topk(x, k, backend=spec)
        t_single = time.perf_counter() - t0
    print(f"   single process                   {t_single:8.2f} s")

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        cd.pearson_topk(warm, k, backend=spec, client=client)  # each worker builds its programs
        # both ways of selecting on every worker: X against itself (upper triangle) and
        # against other rows (full rows)
        client.run(lambda: (clnet.pearson_topk(warm, k, backend=spec),
                            clnet.pearson_topk(warm, k, warm[:64], backend=spec)) and None)
        t0 = time.perf_counter()
        got = cd.pearson_topk(x, k, backend=spec, client=client)
        t_dist = time.perf_counter() - t0
        tasks = list(cd.last_tasks)
    same = np.array_equal(got[0], single[0]) and np.array_equal(got[1], single[1], equal_nan=True)
    ratio = t_dist / t_single
    print(f"   clnet.distributed                {t_dist:8.2f} s   {ratio:.2f}x the single process "
          f"(target <= 1.3x: {'met' if ratio <= 1.3 else 'NOT met'}); identical result: {same}")

    rows = np.array([t["stop"] - t["start"] for t in tasks])
    secs = np.array([t["seconds"] for t in tasks])
    result = np.array([t["result_bytes"] for t in tasks])
    sent = np.array([t["task_bytes"] for t in tasks])
    starts = [t["start"] for t in tasks]
    print(f"\n   tasks: {len(tasks)} of {rows.min()} to {rows.max()} rows "
          f"(first {rows[np.argmin(starts)]}, last {rows[np.argmax(starts)]})")
    print(f"   seconds per task on its worker: mean {secs.mean():.3f}, max {secs.max():.3f} "
          f"(the first on each worker builds its plan)")
    print(f"   seconds per row of X: {secs.sum() / n * 1e3:.4f} ms of worker time")
    print(f"   shipped per task: {sent.mean():.0f} bytes of task there (pickled arguments; the rows travel "
          f"as a key), {result.mean() / 1e3:.1f} kB of results back (max {result.max() / 1e3:.1f} kB)")
    print(f"   shipped once per worker: {x.nbytes / 1e6:.1f} MB of rows as given (standardised on the worker)")
    print(f"   load average (1 min) after the runs: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"   workers used: {', '.join(sorted({t['worker'] for t in tasks}))}; "
          f"backends: {', '.join(sorted({t['backend'] for t in tasks}))}")
    return 0 if same else 1
