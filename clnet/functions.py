"""Names and numeric ids of the activation and aggregation functions.

The ids are shared with ``kernels/clnet_functions.h`` (a test keeps the two in sync)
and with the NumPy reference in ``clnet_fallback.functions``. Definitions are in
``docs/SEMANTICS.md``; every clamp lets NaN through so that NaN and inf
propagate the same way on every backend.
"""
from __future__ import annotations

from typing import Dict, Sequence

# Order defines the ids; append only (ids are part of the kernel ABI).
ACTIVATIONS: Sequence[str] = (
    "identity",
    "relu",
    "sigmoid",
    "tanh",
    "softplus",
    "elu",
    "selu",
    "sin",
    "gauss",
    "abs",
    "square",
    "cube",
    "clamped",
    "exp",
    "log",
    "inv",
    "hat",
    "lelu",
    "neat.sigmoid",
    "neat.tanh",
    "neat.sin",
    "neat.gauss",
    "neat.softplus",
    "neat.exp",
    "neat.log",
    "neat.inv",
)

AGGREGATIONS: Sequence[str] = ("sum", "product", "max", "min", "maxabs", "mean", "median")

ACTIVATION_IDS: Dict[str, int] = {name: i for i, name in enumerate(ACTIVATIONS)}
AGGREGATION_IDS: Dict[str, int] = {name: i for i, name in enumerate(AGGREGATIONS)}

ALIASES = {"logistic": "sigmoid", "linear": "identity", "none": "identity"}

# neat-python names whose definition differs from the textbook one; the rest are the same.
NEAT_SCALED = {"sigmoid", "tanh", "sin", "gauss", "softplus", "exp", "log", "inv"}


def activation_id(name, argument: str = "activation") -> int:
    if not isinstance(name, str):
        raise TypeError(f"{argument} must be a string naming an activation, got {type(name).__name__}")
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in ACTIVATION_IDS:
        raise ValueError(f"unknown {argument} {name!r}; known activations: {', '.join(ACTIVATIONS)}")
    return ACTIVATION_IDS[key]


def aggregation_id(name, argument: str = "aggregation") -> int:
    if not isinstance(name, str):
        raise TypeError(f"{argument} must be a string naming an aggregation, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in AGGREGATION_IDS:
        raise ValueError(f"unknown {argument} {name!r}; known aggregations: {', '.join(AGGREGATIONS)}")
    return AGGREGATION_IDS[key]


def neat_activation_name(name: str) -> str:
    """clnet's name for a neat-python built-in activation (its scaled variants live under ``neat.``)."""
    return f"neat.{name}" if name in NEAT_SCALED else name
