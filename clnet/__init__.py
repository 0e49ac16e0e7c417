"""clnet: OpenCL kernels for evolving feed-forward networks, recurrent cells for RL and
pairwise Pearson similarity, with a NumPy reference backend.

Quick start::

    import clnet
    clnet.fnn_forward([2, 2, 1], [1, 2, 3, 4, 5, 6], [1.0, 1.0])   # -> array([57.])
    for info in clnet.backends():
        print(info)
"""
from . import contract
from .backend import (
    Backend,
    BackendCandidate,
    BackendInfo,
    BackendUnavailable,
    DeviceError,
    backends,
    get_backend,
    notes,
    register_provider,
    release_memory,
    unregister_provider,
    use_backend,
)
from .fnn import FNN, FNNPopulation, fnn_forward, weight_count
from .functions import ACTIVATIONS, AGGREGATIONS
from .paths import count_simple_paths, simple_paths
from .mcl import MCLResult, mcl
from .pearson import pearson, pearson_threshold, pearson_topk
from .bptt import CellGroup, RecordedGroup, RecordedSequence
from .rnn import GRU, LSTM, GRUCell, LSTMCell, RecurrentState, RNNCell

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "AGGREGATIONS",
    "Backend",
    "BackendCandidate",
    "BackendInfo",
    "BackendUnavailable",
    "DeviceError",
    "FNN",
    "FNNPopulation",
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "MCLResult",
    "RNNCell",
    "RecurrentState",
    "RecordedSequence",
    "CellGroup",
    "RecordedGroup",
    "backends",
    "count_simple_paths",
    "fnn_forward",
    "get_backend",
    "mcl",
    "notes",
    "pearson",
    "pearson_threshold",
    "pearson_topk",
    "register_provider",
    "release_memory",
    "simple_paths",
    "unregister_provider",
    "use_backend",
    "weight_count",
]
