"""Benchmark of pairwise Pearson correlation: ``python -m clnet bench pearson [--quick]``.

Every ratio is measured in this one run, against peers on the same machine:

1. N=2,000 rows, M=500 positions, float32, 10% missing: pandas
   ``DataFrame.corr(min_periods=3)`` (target: clnet at least 50x faster)
   and clnet's own NumPy fallback.
2. The same data complete: ``numpy.corrcoef`` (target: at least 1.0x).
3. Top-k with N=50,000, M=200, k=10 in a child process: time and the child's peak
   resident memory (target: under 1.5 GB). ``--quick`` skips it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from .. import _cli as cli
from . import best_time


def _best(fn, repeat: int) -> float:
    return best_time(fn, repeat)


def _data(n, m, missing, seed=0):
    rng = np.random.default_rng(seed)
    x = (np.cumsum(rng.normal(size=(n, m)), axis=1) * 0.1 + rng.normal(size=(n, m))).astype(np.float32)
    if missing:
        x[rng.random(x.shape) < missing] = np.nan
    return x


def big_topk(spec: str, n: int, m: int, k: int) -> dict:
    """Run in a child process: the large top-k case, with this process's peak memory."""
    import resource

    import clnet

    x = _data(n, m, 0.1, seed=1)
    t0 = time.perf_counter()
    idx, val = clnet.pearson_topk(x, k, backend=spec, progress=None)
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    return dict(seconds=elapsed, peak_bytes=peak, defined=int((idx >= 0).sum()))


def _child(spec, n, m, k, timeout):
    code = (f"import json; from clnet.bench.pearson import big_topk; "
            f"print(json.dumps(big_topk({spec!r}, {n}, {m}, {k})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr else "child failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = cli.parser("python -m clnet bench pearson", __doc__)
    parser.add_argument("--quick", action="store_true", help="skip the N=50,000 top-k case")
    parser.add_argument("--backend", default=None, help="backend spec (default: the best usable one)")
    parser.add_argument("--big-fallback", action="store_true",
                        help="also run the N=50,000 top-k case on the NumPy fallback (slow)")
    args = parser.parse_args(argv)

    import clnet

    be = clnet.get_backend(args.backend)
    fb = clnet.get_backend("numpy")
    print(f"clnet {clnet.__version__} pearson benchmark; backend {be.spec} ({be.description})")
    n, m = 2000, 500

    x = _data(n, m, 0.10)
    print(f"\n1. N={n}, M={m}, float32, 10% missing, min_overlap=3")
    df = _pandas_frame(x)
    t_pandas = None
    if df is not None:
        t0 = time.perf_counter()
        df.corr(min_periods=3)
        t_pandas = time.perf_counter() - t0
        print(f"   pandas DataFrame.corr(min_periods=3)  {t_pandas * 1e3:9.1f} ms")
    t_fb = _best(lambda: clnet.pearson(x, min_overlap=3, backend=fb), 3)
    t_be = _best(lambda: clnet.pearson(x, min_overlap=3, backend=be), 5)
    print(f"   clnet NumPy fallback                   {t_fb * 1e3:9.1f} ms")
    print(f"   clnet {be.spec:<32} {t_be * 1e3:9.1f} ms")
    if t_pandas is not None:
        print(f"   speed-up vs pandas: {t_pandas / t_be:7.1f}x (target >= 50x: "
              f"{'met' if t_pandas / t_be >= 50 else 'NOT met'});  fallback vs pandas: {t_pandas / t_fb:.1f}x")
    print(f"   speed-up vs the NumPy fallback: {t_fb / t_be:.1f}x")

    xc = _data(n, m, 0.0)
    print(f"\n2. N={n}, M={m}, float32, complete data")
    t_np = _best(lambda: np.corrcoef(xc), 3)
    t_fbc = _best(lambda: clnet.pearson(xc, backend=fb), 3)
    t_bec = _best(lambda: clnet.pearson(xc, backend=be), 5)
    print(f"   numpy.corrcoef                         {t_np * 1e3:9.1f} ms")
    print(f"   clnet NumPy fallback                   {t_fbc * 1e3:9.1f} ms")
    print(f"   clnet {be.spec:<32} {t_bec * 1e3:9.1f} ms")
    print(f"   speed-up vs numpy.corrcoef: {t_np / t_bec:.2f}x (target >= 1.0x: "
          f"{'met' if t_np / t_bec >= 1.0 else 'NOT met'});  fallback: {t_np / t_fbc:.2f}x")

    if args.quick:
        print("\n3. N=50,000 top-k skipped (--quick)")
        return 0
    big_n, big_m, k = 50_000, 200, 10
    print(f"\n3. top-k: N={big_n}, M={big_m}, k={k}, float32, 10% missing (child process each)")
    specs = [be.spec] + (["numpy"] if args.big_fallback and be.spec != "numpy" else [])
    for spec in specs:
        try:
            res = _child(spec, big_n, big_m, k, timeout=3600)
        except Exception as exc:  # report and go on: the other figures still count
            print(f"   {spec}: failed ({exc})")
            continue
        gb = res["peak_bytes"] / 1e9
        print(f"   {spec:<14} {res['seconds']:8.1f} s, peak resident memory {gb:.2f} GB "
              f"(target < 1.5 GB: {'met' if gb < 1.5 else 'NOT met'}); full N x N float32 would be "
              f"{big_n * big_n * 4 / 1e9:.0f} GB")
    return 0


def _pandas_frame(x):
    try:
        import pandas as pd
    except ImportError:
        print("   pandas is not installed: pip install pandas (comparison skipped)")
        return None
    return pd.DataFrame(x.T)  # pandas correlates columns


if __name__ == "__main__":
    sys.exit(main())
