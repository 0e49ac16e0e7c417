"""Argument checks shared by every public entry point.

Each check runs before any device work and raises TypeError or ValueError naming the
argument and what was expected.
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence

import numpy as np


def refuse_masked(value, name: str) -> None:
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(f"{name} is a NumPy masked array, whose mask has no meaning here; pass "
                        f"{name}.filled(value) with the value masked entries should take")


def host_array(value, name: str = "the argument") -> np.ndarray:
    """``value`` as a NumPy array; torch tensors are detached and moved to the CPU first
    (recognised without importing torch). A NumPy masked array is refused: np.asarray would
    drop its mask silently, and only Pearson gives masked entries a meaning (missing values)."""
    refuse_masked(value, name)
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def as_real_array(value, name: str, dtype, *, ndim: Optional[Sequence[int]] = None) -> np.ndarray:
    """``value`` as a C-contiguous array of ``dtype`` (float32 or float64).

    Accepts real numbers of any integer or float dtype, lists and anything with
    ``__array__`` (torch tensors included). Refuses bool, complex, object and string data.
    """
    refuse_masked(value, name)
    try:
        arr = host_array(value, name)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be a numeric array; it could not be converted ({exc})") from None
    kind = arr.dtype.kind
    if kind == "O":
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (ValueError, TypeError):
            raise TypeError(f"{name} must be a numeric array of real numbers, got elements of mixed or "
                            f"non-numeric types") from None
        kind = "f"
    if kind == "b":
        raise TypeError(f"{name} must hold real numbers, got booleans; convert with .astype(float) if meant")
    if kind == "c":
        raise TypeError(f"{name} must hold real numbers, got complex dtype {arr.dtype}")
    if kind not in "iuf":
        raise TypeError(f"{name} must be a numeric array of real numbers, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim not in ndim:
        want = " or ".join(str(d) for d in ndim)
        raise ValueError(f"{name} must be {want}-dimensional, got shape {arr.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(arr, dtype=dtype)


def as_int(value, name: str, *, minimum: Optional[int] = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def as_float(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)
