"""Benchmarks run by ``python -m clnet bench NAME``: ratios against peers measured in one run."""
import time


def best_time(fn, repeat: int = 5, min_time: float = 0.0) -> float:
    """Best wall time of ``fn()`` over ``repeat`` runs (after one warm-up run)."""
    fn()
    best = float("inf")
    total = 0.0
    runs = 0
    while runs < repeat or total < min_time:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best = min(best, dt)
        total += dt
        runs += 1
    return best
