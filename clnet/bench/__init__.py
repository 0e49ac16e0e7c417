"""Benchmarks run by ``python -m clnet bench NAME``: ratios against peers measured in one run.

The helpers here time contenders fairly on a machine shared with other work: every
contender runs once to warm up, then all of them run in alternating rounds (the order
rotating each round) and each keeps its best time, so that load slows them alike.
"""
from __future__ import annotations

import time
from typing import Callable, List, Optional

TORCH_HINT = ("torch is not installed: the PyTorch peers are skipped. Install the pinned CPU build with "
              "pip install torch==2.13.0 (any other version may download several GB).")


def best_times(fns: List[Callable[[], object]], repeat: int, number: int = 1, pause: float = 0.0) -> List[float]:
    """Seconds per call of each function: the best of ``repeat`` rounds of ``number`` calls.

    ``pause`` sleeps before each timed call: torch's OpenMP threads keep spinning for a
    while after a call and would otherwise slow whatever runs next on a small machine.
    """
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for r in range(repeat):
        for j in range(len(fns)):
            i = (j + r) % len(fns)
            if pause:
                time.sleep(pause)
            t0 = time.perf_counter()
            for _ in range(number):
                fns[i]()
            best[i] = min(best[i], (time.perf_counter() - t0) / number)
    return best


def best_time(fn: Callable[[], object], repeat: int = 5, number: int = 1) -> float:
    """Seconds per call of ``fn``: the best of ``repeat`` timings of ``number`` calls."""
    return best_times([fn], repeat, number)[0]


def optional_torch(echo=print):
    """The torch module, or None after saying how to install the right build."""
    try:
        import torch
    except ImportError:
        echo(TORCH_HINT)
        return None
    return torch


def line(label: str, seconds: float, per: str = "step", flops: Optional[float] = None) -> str:
    text = f"  {label:<52} {seconds * 1e6:10.1f} us/{per}"
    if flops:
        text += f"  {flops / seconds / 1e9:7.1f} GFLOP/s"
    return text


def ratio(label: str, value: float, target: Optional[float] = None) -> str:
    text = f"  {label:<52} {value:10.2f}x"
    if target is not None:
        text += f"   (target >= {target:g}x: {'met' if value >= target else 'NOT met'})"
    return text
