"""NumPy versions of the activation and aggregation functions (same ids as the kernels).

Every definition mirrors kernels/clnet_functions.h operation by operation, including
how NaN passes through clamps, so that non-finite values propagate identically.
"""
import numpy as np

from clnet.functions import ACTIVATIONS

_SELU_LAMBDA = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717


def clamp(z, lo, hi):
    """Clamp that lets NaN through (comparisons with NaN are false)."""
    return np.where(z < lo, lo, np.where(z > hi, hi, z)).astype(z.dtype, copy=False)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _softplus(z):
    return np.where(z > 0, z, 0).astype(z.dtype) + np.log1p(np.exp(-np.abs(z)))


def _neat_inv(z):
    safe = np.where(z == 0, 1, z).astype(z.dtype)
    return np.where(z == 0, 0, 1 / safe).astype(z.dtype)


_TABLE = {
    "identity": lambda z: z,
    "relu": lambda z: np.where(z > 0, z, 0),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softplus": _softplus,
    "elu": lambda z: np.where(z > 0, z, np.expm1(z)),
    "selu": lambda z: np.where(z > 0, _SELU_LAMBDA * z, _SELU_LAMBDA * _SELU_ALPHA * np.expm1(z)),
    "sin": np.sin,
    "gauss": lambda z: np.exp(-z * z),
    "abs": np.abs,
    "square": lambda z: z * z,
    "cube": lambda z: z * z * z,
    "clamped": lambda z: clamp(z, -1, 1),
    "exp": np.exp,
    "log": np.log,
    "inv": lambda z: 1 / z,
    "hat": lambda z: np.where(1 - np.abs(z) > 0, 1 - np.abs(z), 0),
    "lelu": lambda z: np.where(z > 0, z, 0.005 * z),
    "neat.sigmoid": lambda z: _sigmoid(clamp(5 * z, -60, 60)),
    "neat.tanh": lambda z: np.tanh(clamp(2.5 * z, -60, 60)),
    "neat.sin": lambda z: np.sin(clamp(5 * z, -60, 60)),
    "neat.gauss": lambda z: np.exp(-5 * clamp(z, -3.4, 3.4) ** 2),
    "neat.softplus": lambda z: 0.2 * np.log(1 + np.exp(clamp(5 * z, -60, 60))),
    "neat.exp": lambda z: np.exp(clamp(z, -60, 60)),
    "neat.log": lambda z: np.log(np.where(z < 1e-7, 1e-7, z)),
    "neat.inv": _neat_inv,
}
ACTIVATION_FUNCS = tuple(_TABLE[name] for name in ACTIVATIONS)


def activate(act_id: int, z: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(ACTIVATION_FUNCS[act_id](z), dtype=z.dtype)


def aggregate(agg: str, terms: np.ndarray, dtype) -> np.ndarray:
    """Aggregate ``terms`` of shape (n_connections, B) along the connections."""
    n = terms.shape[0]
    B = terms.shape[1]
    with np.errstate(all="ignore"):
        if agg == "sum":
            return _sequential_sum(terms, dtype)
        if agg == "mean":
            total = _sequential_sum(terms, dtype)
            return total / dtype.type(n) if n else total
        if agg == "product":
            acc = np.ones(B, dtype=dtype)
            for t in terms:
                acc = acc * t
            return acc
        if n == 0:
            return np.zeros(B, dtype=dtype)
        if agg in ("max", "min", "maxabs"):
            # Python's max/min semantics: replace only when strictly better, so a NaN
            # first term sticks and later NaN terms are skipped.
            acc = terms[0].copy()
            for t in terms[1:]:
                if agg == "max":
                    better = t > acc
                elif agg == "min":
                    better = t < acc
                else:
                    better = np.abs(t) > np.abs(acc)
                acc = np.where(better, t, acc)
            return acc
        if agg == "median":
            if n <= 2:
                return _sequential_sum(terms, dtype) / dtype.type(n)
            med = np.median(terms, axis=0).astype(dtype)
            return np.where(np.isnan(terms).any(axis=0), dtype.type(np.nan), med)
    raise ValueError(f"unknown aggregation {agg!r}")


def _sequential_sum(terms, dtype):
    # Left-to-right like the kernels (np.sum would sum pairwise and round differently).
    acc = np.zeros(terms.shape[1], dtype=dtype)
    for t in terms:
        acc = acc + t
    return acc
