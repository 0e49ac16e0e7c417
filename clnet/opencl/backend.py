"""The backend of one OpenCL device: the runtime plus every operation family."""
from ..contract import BPTTGroupOps
from .bptt import BPTTKernels
from .fnn import FNNKernels
from .mcl import MCLKernels
from .paths import PathsKernels
from .pearson import PearsonKernels
from .rnn import RNNKernels
from .runtime import OpenCLRuntime


class OpenCLBackend(OpenCLRuntime, FNNKernels, RNNKernels, BPTTKernels, BPTTGroupOps, PearsonKernels,
                    MCLKernels, PathsKernels):
    """Every family of clnet/contract.py, on one OpenCL device."""
