"""clnet's OpenCL backend: one backend per OpenCL device.

- ``devices.py``: discovery, the provider of the ``clnet.backends`` entry point;
- ``runtime.py``: context, queue, program and kernel caches, buffers, error translation;
- ``args.py``: kernel arguments bound by name against ``kernels/<family>.cl``;
- ``fnn.py``, ``rnn.py``, ``bptt.py``, ``pearson.py``: one module per operation family,
  named after its kernel source and after the NumPy reference's module in ``fallback/``;
- ``backend.py``: :class:`OpenCLBackend`, the runtime plus every family.

Nothing here imports the NumPy reference (``clnet_fallback``), and the public modules
import nothing from here: they reach a device through clnet.backend.call / run.
"""
from .args import KernelArgumentError
from .devices import OpenCLProvider, nvidia_hint
from .runtime import KernelBuildError, OpenCLRuntime, kernel_dir

__all__ = ["OpenCLProvider", "OpenCLRuntime", "KernelBuildError", "KernelArgumentError", "kernel_dir",
           "nvidia_hint"]
