"""clnet's NumPy backend: the reference implementation every other backend is tested against.

It registers through the ``clnet.backends`` entry point exactly as a third-party plugin
would (see pyproject.toml). It runs everywhere, computes in float32 or float64, and in
float64 it is the reference of the conformance suite. Its modules mirror the OpenCL
backend's (``clnet/opencl/``): fnn, rnn, bptt, pearson.
"""
from clnet.backend import Backend, BackendCandidate
from clnet.contract import MemberByMember

from .bptt import BPTTReference
from .fnn import FNNReference
from .mcl import MCLReference
from .paths import PathsReference
from .pearson import PearsonReference
from .rnn import RNNReference

__all__ = ["NumpyProvider", "NumpyBackend", "make_backend"]


class NumpyBackend(Backend, FNNReference, RNNReference, BPTTReference, MemberByMember, PearsonReference,
                   MCLReference, PathsReference):
    """Every family of clnet/contract.py, in NumPy."""

    spec = "numpy"
    description = "NumPy reference (CPU, float32 and float64)"
    supports_float64 = True


def make_backend() -> NumpyBackend:
    return NumpyBackend()


class NumpyProvider:
    """Offers the single NumPy backend; lower priority than any working OpenCL device."""

    name = "numpy"

    def candidates(self):
        return [BackendCandidate("numpy", NumpyBackend.description, 100, make_backend)]
