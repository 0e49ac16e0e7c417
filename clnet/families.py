"""The operation families each backend is composed of.

An operation family (fnn, rnn, pearson, ...) brings a kernel source
``kernels/<family>.cl``, a public module ``clnet/<family>.py`` holding its OpenCL
mixin, and a NumPy mixin in ``clnet_fallback/<family>.py``. Listing them here is
the one place a new family is plugged in; imports are deferred so that importing
clnet stays cheap and free of cycles.
"""


def opencl_mixins():
    from .fnn import FNNKernels
    from .pearson import PearsonKernels
    from .rnn import BPTTKernels, RNNKernels

    return [FNNKernels, RNNKernels, BPTTKernels, PearsonKernels]


def numpy_mixins():
    from clnet_fallback.fnn import FNNReference
    from clnet_fallback.pearson import PearsonReference
    from clnet_fallback.rnn import BPTTReference, RNNReference

    return [FNNReference, RNNReference, BPTTReference, PearsonReference]
