"""clnet's NumPy backend: the reference implementation every other backend is tested against.

It registers through the ``clnet.backends`` entry point exactly as a third-party plugin
would (see pyproject.toml). It runs everywhere, computes in float32 or float64, and in
float64 it is the reference of the conformance suite.
"""
from clnet.backend import Backend, BackendCandidate
from clnet.families import numpy_mixins

__all__ = ["NumpyProvider", "NumpyBackend", "make_backend"]

_backend_class = None


class NumpyRuntime(Backend):
    spec = "numpy"
    description = "NumPy reference (CPU, float32 and float64)"
    supports_float64 = True


def make_backend() -> Backend:
    global _backend_class
    if _backend_class is None:
        # Each operation family contributes a mixin with its NumPy methods.
        _backend_class = type("NumpyBackend", tuple(numpy_mixins()) + (NumpyRuntime,),
                              {"__module__": __name__})
    return _backend_class()


def __getattr__(name):
    if name == "NumpyBackend":
        make_backend()
        return _backend_class
    raise AttributeError(name)


class NumpyProvider:
    """Offers the single NumPy backend; lower priority than any working OpenCL device."""

    name = "numpy"

    def candidates(self):
        return [BackendCandidate("numpy", NumpyRuntime.description, 100, make_backend)]
