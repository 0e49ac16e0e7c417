"""Measure the accuracy of kernels/clnet_math.h on the OpenCL device against float64.

    python tools/check_clnet_math.py [--quick]

For each function: max error in ulp (of the float32 result) over exhaustive ranges of
float32 inputs (every float in the range) and millions of random bit patterns, and
whether the special values are right. --quick samples instead of enumerating.
"""
import argparse
import sys
import time

import numpy as np

_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_ROOT), str(_ROOT / "tests")]  # this checkout's clnet, not an installed one
from clnet_math_harness import MathHarness, ulp_error, REFERENCE  # noqa: E402


def float_range(lo, hi):
    """Bit patterns of all positive floats in [lo, hi] (both positive)."""
    a = int(np.float32(lo).view(np.int32))
    b = int(np.float32(hi).view(np.int32))
    return a, b


def check(h, name, chunks, label):
    worst = (0.0, None)
    n = 0
    t = time.perf_counter()
    for x in chunks:
        got = h.run(name, x)
        err = ulp_error(got, x, REFERENCE[name])
        i = int(np.argmax(err))
        n += x.size
        if err[i] > worst[0]:
            worst = (float(err[i]), (float(x[i]), float(got[i])))
    print(f"  {name:8s} {label:38s} {n:>11d} points  max {worst[0]:.3f} ulp"
          f"  at x={worst[1][0]!r} got {worst[1][1]!r}" if worst[1] else
          f"  {name:8s} {label:38s} {n:>11d} points  max 0 ulp", f"({time.perf_counter() - t:.1f} s)")
    return worst[0]


def enumerate_bits(a, b, step=1, chunk=1 << 24, negate=False):
    for s in range(a, b + 1, chunk * step):
        bits = np.arange(s, min(b + 1, s + chunk * step), step, dtype=np.int64).astype(np.uint32)
        x = bits.view(np.float32)
        yield -x if negate else x


def random_bits(seed, n, chunk=1 << 24):
    rng = np.random.default_rng(seed)
    for s in range(0, n, chunk):
        yield rng.integers(0, 1 << 32, size=min(chunk, n - s), dtype=np.uint64).astype(np.uint32).view(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    step = 61 if args.quick else 1
    h = MathHarness()
    print("device:", h.device_name)
    plan = {
        "log": [("all positive floats", float_range(1e-45, 3.4028235e38), False)],
        "log1p": [("all floats in (-1, 0)", float_range(1e-45, 0.99999994), True),
                  ("all positive floats", float_range(1e-45, 3.4028235e38), False)],
        "expm1": [("all floats in (-104, 0)", float_range(1e-45, 104.0), True),
                  ("all floats in (0, 89)", float_range(1e-45, 89.0), False)],
        "sin": [("all floats in [-8192, 0)", float_range(1e-45, 8192.0), True),
                ("all floats in (0, 8192]", float_range(1e-45, 8192.0), False),
                ("all floats in (8192, 2^20] step 997", float_range(8192.0, 2.0**20), False)],
    }
    summary = {}
    for name, ranges in plan.items():
        worst = 0.0
        for label, (a, b), neg in ranges:
            st = 997 if "step 997" in label else step
            worst = max(worst, check(h, name, enumerate_bits(a, b, st, negate=neg), label + (f" step {st}" if st > 1 and "step" not in label else "")))
        worst = max(worst, check(h, name, random_bits(7, 1 << 25), "random bit patterns (incl. NaN, inf)"))
        summary[name] = worst
    print("max ulp:", {k: round(v, 3) for k, v in summary.items()})
    print("specials:", "ok" if h.specials_ok(verbose=True) else "WRONG")


if __name__ == "__main__":
    main()
