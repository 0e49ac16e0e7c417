"""The one tolerance table: per operation family and dtype.

A result ``got`` is compared with the float64 reference ``ref`` elementwise:

    |got - ref| <= atol + rtol * |ref| + control * |low - ref|

where ``low`` is the NumPy fallback computed in the same precision as ``got`` (when
the check supplies it). The last term follows flash-attention's idea: an operation
whose float32 result legitimately loses digits (cancellation, steep activations)
is judged against what a straightforward float32 implementation loses, not against
an absolute number. Non-finite reference values must be matched exactly (NaN where
NaN, the same infinity where infinity).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    control: float = 8.0


_TABLE = {
    ("fnn", "float32"): Tolerance(atol=1e-5, rtol=1e-4),
    ("fnn", "float64"): Tolerance(atol=1e-12, rtol=1e-10),
    ("rnn", "float32"): Tolerance(atol=2e-5, rtol=1e-4),
    ("rnn", "float64"): Tolerance(atol=1e-12, rtol=1e-10),
    # Gradients sum over every step and environment; the control term judges those float32
    # sums against a float32 NumPy computation of the same (worst 0.23 of this over the
    # thorough profile's 400 cases per check).
    ("bptt", "float32"): Tolerance(atol=2e-5, rtol=1e-4),
    ("bptt", "float64"): Tolerance(atol=1e-11, rtol=1e-9),
    # Central differences (step 1e-6) of a float64 loss carry ~1e-10 * |loss| of rounding.
    ("bptt_fd", "float32"): Tolerance(atol=1e-4, rtol=1e-3),
    ("bptt_fd", "float64"): Tolerance(atol=1e-6, rtol=1e-6, control=0.0),
    ("pearson", "float32"): Tolerance(atol=1e-4, rtol=0.0, control=0.0),
    ("pearson", "float64"): Tolerance(atol=1e-10, rtol=0.0, control=0.0),
    # Partitions (labels) must be equal; the tolerance applies to the column sums of the iterand.
    ("mcl", "float32"): Tolerance(atol=1e-5, rtol=0.0, control=0.0),
    ("mcl", "float64"): Tolerance(atol=1e-12, rtol=0.0, control=0.0),
    # Path counts are exact integers on every backend: no tolerance at all.
    ("paths", "float32"): Tolerance(atol=0.0, rtol=0.0, control=0.0),
    ("paths", "float64"): Tolerance(atol=0.0, rtol=0.0, control=0.0),
}


def tolerance(family: str, dtype) -> Tolerance:
    key = (family, np.dtype(dtype).name)
    if key not in _TABLE:
        raise KeyError(f"no tolerance for operation family {family!r} in {np.dtype(dtype).name}")
    return _TABLE[key]


def table():
    """A copy of the whole table, for documentation and reports."""
    return dict(_TABLE)
