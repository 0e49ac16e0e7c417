"""OpenCL runtime: device discovery, one context and queue per device, cached programs.

The provider class :class:`OpenCLProvider` is registered in the ``clnet.backends``
entry-point group exactly like a third-party plugin. Each device is one candidate
with the spec ``opencl:P:D`` (platform and device index). A device is usable when a
context can be created on it and a probe kernel builds and runs correctly; a
compiler that fails (for example pip's PoCL 3.0 on CPUs its LLVM does not know:
"unknown target CPU 'generic'") makes the device unusable with that reason.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .backend import Backend, BackendCandidate, BackendUnavailable, DeviceError

try:  # pyopencl is a runtime dependency, but a broken install must not break import clnet
    import pyopencl as cl
    _IMPORT_ERROR: Optional[str] = None
except Exception as exc:  # pragma: no cover - exercised only on broken installs
    cl = None
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

from .families import opencl_mixins

_PRIORITY = {"GPU": 300, "ACCELERATOR": 250, "CPU": 200}
# Simulators are correct but slow: never chosen automatically over the NumPy fallback.
_SIMULATORS = ("oclgrind",)


def kernel_dir() -> Path:
    """Folder with the .cl sources: inside the installed package, or ../kernels in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "kernels", here.parent / "kernels"):
        if (candidate / "clnet_common.h").is_file():
            return candidate
    raise FileNotFoundError(f"clnet's OpenCL sources were not found next to {here}; reinstall clnet")


class KernelBuildError(DeviceError):
    """A kernel failed to compile. Carries the device, the options and the build log."""

    def __init__(self, device: str, source_name: str, options: Sequence[str], log: str, saved: str):
        self.device = device
        self.options = list(options)
        self.log = log
        self.source_path = saved
        super().__init__(
            f"building {source_name} failed on device {device!r}\n"
            f"options: {' '.join(self.options)}\n"
            f"source saved to: {saved}\n"
            f"build log:\n{log.strip() or '(empty)'}"
        )


def _device_kind(device) -> str:
    t = device.type
    if t & cl.device_type.GPU:
        return "GPU"
    if t & cl.device_type.ACCELERATOR:
        return "ACCELERATOR"
    return "CPU"


def _platforms():
    if cl is None:
        return []
    try:
        return cl.get_platforms()
    except Exception:  # no ICD loader or no platform installed
        return []


def nvidia_hint() -> str:
    """A hint when an NVIDIA GPU is present but no NVIDIA OpenCL platform is visible."""
    has_gpu = Path("/proc/driver/nvidia").exists() or Path("/dev/nvidia0").exists()
    if not has_gpu:
        return ""
    names = " ".join(p.name.lower() for p in _platforms())
    if "nvidia" in names:
        return ""
    return ("An NVIDIA GPU is present but no NVIDIA OpenCL platform is visible. Find the driver's "
            "libnvidia-opencl.so.1 (ldconfig -p | grep -i opencl, or search /usr and /usr/local), "
            "write its full path into a file nvidia.icd in a new folder, and set OCL_ICD_VENDORS to "
            "that folder.")


class OpenCLProvider:
    """Offers one backend per OpenCL device."""

    name = "opencl"

    def __init__(self):
        self._lock = threading.Lock()
        self._cands: Optional[List[BackendCandidate]] = None

    def candidates(self) -> List[BackendCandidate]:
        with self._lock:
            if self._cands is None:
                self._cands = self._discover()
            return list(self._cands)

    def _discover(self) -> List[BackendCandidate]:
        if cl is None:
            return [_unusable("opencl", "pyopencl could not be imported: " + str(_IMPORT_ERROR),
                              "pip install pyopencl")]
        cands = []
        for pi, platform in enumerate(_platforms()):
            try:
                devices = platform.get_devices()
            except Exception as exc:
                cands.append(_unusable(f"opencl:{pi}", f"platform {platform.name!r} lists no device ({exc})",
                                       "check the platform's driver installation"))
                continue
            for di, device in enumerate(devices):
                spec = f"opencl:{pi}:{di}"
                kind = _device_kind(device)
                prio = _PRIORITY[kind]
                if any(s in platform.name.lower() for s in _SIMULATORS):
                    prio = 10
                desc = f"{platform.name.strip()} / {device.name.strip()} ({kind})"
                cands.append(BackendCandidate(
                    spec, desc, prio,
                    load=lambda p=platform, d=device, s=spec, t=desc: OpenCLBackend(p, d, s, t),
                    kind=f"{platform.name} {device.name}"))
        if not cands:
            hint = nvidia_hint() or ("install an OpenCL runtime, for example Debian's PoCL: "
                                     "apt-get install pocl-opencl-icd")
            cands.append(_unusable("opencl", "no OpenCL platform was found", hint))
        return cands

    def match(self, selector: str, cands: List[BackendCandidate]) -> List[BackendCandidate]:
        """``P`` or ``P:D``: each an index or a case-insensitive substring of the name."""
        parts = selector.split(":")
        if len(parts) > 2 or not all(p.strip() for p in parts):
            raise ValueError(f"OpenCL spec 'opencl:{selector}' must look like 'opencl:P' or 'opencl:P:D', "
                             f"P and D an index or part of the platform / device name")
        found = []
        platforms = _platforms()
        for cand in cands:
            idx = cand.spec.split(":")[1:]
            if len(idx) != 2:
                continue
            pi, di = int(idx[0]), int(idx[1])
            pname = platforms[pi].name if pi < len(platforms) else ""
            dname = platforms[pi].get_devices()[di].name if pi < len(platforms) else ""
            if not _part_matches(parts[0], pi, pname):
                continue
            if len(parts) == 2 and not _part_matches(parts[1], di, dname):
                continue
            found.append(cand)
        found.sort(key=lambda c: -c.priority)
        return found


def _part_matches(part: str, index: int, name: str) -> bool:
    part = part.strip()
    if part.isdigit():
        return int(part) == index
    return part.lower() in name.lower()


def _unusable(spec: str, reason: str, fix: str) -> BackendCandidate:
    def load():
        raise BackendUnavailable(spec, reason, fix)
    return BackendCandidate(spec, "OpenCL", -1, load)


_PROBE_SOURCE = """
__kernel void clnet_probe(__global float *x) { int i = get_global_id(0); x[i] = 2.0f * x[i] + 1.0f; }
"""


class OpenCLRuntime(Backend):
    """Context, queue, program cache and buffer helpers for one device."""

    def __init__(self, platform, device, spec: str, description: str):
        self.spec = spec
        self.description = description
        self.platform = platform
        self.device = device
        self.device_name = device.name.strip()
        self.supports_float64 = bool(device.double_fp_config) or "cl_khr_fp64" in device.extensions
        self.max_alloc = int(device.max_mem_alloc_size)
        self.global_mem = int(device.global_mem_size)
        self.max_work_group = int(device.max_work_group_size)
        # One queue per device: operations enqueue under this lock so that threads sharing
        # the backend never interleave the argument setting and enqueueing of a kernel.
        self.lock = threading.RLock()
        self._programs: Dict[Tuple[str, str, Tuple[str, ...]], "cl.Program"] = {}
        self._kernels: Dict[tuple, "cl.Kernel"] = {}
        self._workspaces: Dict[str, "cl.Buffer"] = {}
        try:
            self.context = cl.Context([device])
            self.queue = cl.CommandQueue(self.context)
        except Exception as exc:
            raise BackendUnavailable(spec, f"creating a context on {self.device_name!r} failed: {exc}",
                                     "check the device's driver") from exc
        self._probe()

    def _probe(self) -> None:
        try:
            prg = self._build(_PROBE_SOURCE, "probe kernel", ())
            x = np.arange(8, dtype=np.float32)
            buf = cl.Buffer(self.context, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=x)
            prg.clnet_probe(self.queue, (8,), None, buf)
            out = np.empty_like(x)
            cl.enqueue_copy(self.queue, out, buf)
            self.queue.finish()
        except KernelBuildError as exc:
            first = next((ln for ln in exc.log.splitlines() if ln.strip()), "no build log")
            raise BackendUnavailable(
                self.spec, f"its OpenCL compiler fails ({first.strip()})",
                "use another OpenCL runtime for this device (on Debian: apt-get install pocl-opencl-icd "
                "and uninstall pocl-binary-distribution), or select another backend") from exc
        except Exception as exc:
            raise BackendUnavailable(self.spec, f"running a probe kernel failed: {exc}",
                                     "check the device's driver") from exc
        if not np.array_equal(out, 2 * x + 1):
            raise BackendUnavailable(self.spec, "a probe kernel returned wrong results",
                                     "update the device's driver or select another backend")

    def op(self, name: str):
        """The operation ``name``, with OpenCL errors turned into clear Python errors."""
        method = super().op(name)

        def guarded(*args):
            try:
                return method(*args)
            except cl.MemoryError as exc:
                raise MemoryError(f"OpenCL device {self.device_name!r} ({self.spec}) ran out of memory during "
                                  f"{name} ({exc}); use smaller inputs or another backend") from exc
            except cl.Error as exc:
                raise DeviceError(f"OpenCL device {self.device_name!r} ({self.spec}) failed during {name}: "
                                  f"{exc}") from exc

        guarded.__name__ = name
        return guarded

    # -- programs ---------------------------------------------------------------------------
    def _build(self, source: str, name: str, options: Sequence[str]) -> "cl.Program":
        opts = list(options)
        program = None
        try:
            program = cl.Program(self.context, source)
            with warnings.catch_warnings():
                # Compiler chatter is hidden unless asked for (PYOPENCL_COMPILER_OUTPUT=1).
                warnings.simplefilter("ignore")
                return program.build(options=opts)
        except Exception as exc:
            log = ""
            try:
                log = program.get_build_info(self.device, cl.program_build_info.LOG) if program else ""
            except Exception:
                pass
            log = (log or "").strip() or str(exc)
            digest = hashlib.sha1(source.encode()).hexdigest()[:12]
            saved = os.path.join(tempfile.gettempdir(), f"clnet-build-failure-{digest}.cl")
            try:
                Path(saved).write_text(source)
            except OSError:
                saved = "(could not be saved)"
            raise KernelBuildError(self.device_name, name, opts, log, saved) from exc

    def program(self, family: str, dtype, defines: Sequence[str] = ()) -> "cl.Program":
        """The compiled ``kernels/<family>.cl`` for ``dtype``; built once per (source, options)."""
        dt = self.check_dtype(dtype)
        opts = ["-I", str(kernel_dir()), "-D", f"CLNET_REAL={'double' if dt == np.float64 else 'float'}"]
        if dt == np.float64:
            opts += ["-D", "CLNET_USE_DOUBLE"]
        for d in defines:
            opts += ["-D", d]
        key = (family, dt.name, tuple(opts))
        with self.lock:
            prg = self._programs.get(key)
            if prg is None:
                src_path = kernel_dir() / f"{family}.cl"
                source = src_path.read_text()
                prg = self._build(source, src_path.name, opts)
                self._programs[key] = prg
            return prg

    def kernel(self, family: str, name: str, dtype, defines: Sequence[str] = ()) -> "cl.Kernel":
        """A kernel object, created once per (family, name, dtype, defines).

        A kernel object holds its arguments, so callers set them and enqueue while
        holding ``self.lock``.
        """
        key = (family, name, np.dtype(dtype).name, tuple(defines))
        with self.lock:
            knl = self._kernels.get(key)
            if knl is None:
                knl = cl.Kernel(self.program(family, dtype, defines), name)
                self._kernels[key] = knl
            return knl

    # -- buffers ----------------------------------------------------------------------------
    def check_alloc(self, nbytes: int, what: str) -> None:
        if nbytes > self.max_alloc:
            raise MemoryError(
                f"{what} needs {nbytes / 2**20:.1f} MiB in one buffer, more than device "
                f"{self.device_name!r} allows ({self.max_alloc / 2**20:.1f} MiB per allocation); "
                f"split the work into smaller pieces")

    def to_device(self, array: np.ndarray, what: str = "array") -> "cl.Buffer":
        array = np.ascontiguousarray(array)
        self.check_alloc(array.nbytes, what)
        mf = cl.mem_flags
        if array.nbytes == 0:
            return cl.Buffer(self.context, mf.READ_ONLY, 4)
        return cl.Buffer(self.context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=array)

    def workspace(self, name: str, nbytes: int, what: str = "workspace") -> "cl.Buffer":
        """A device buffer reused across calls (grown when too small).

        Allocating and first-touching large buffers costs more than small kernels on
        CPU devices, so scratch and output space is kept. Callers hold ``self.lock``
        and finish their queue work before releasing it, so one buffer per name is safe.
        """
        nbytes = max(int(nbytes), 4)
        buf = self._workspaces.get(name)
        if buf is None or buf.size < nbytes:
            self.check_alloc(nbytes, what)
            self._workspaces.pop(name, None)  # release the old one before allocating
            buf = cl.Buffer(self.context, cl.mem_flags.READ_WRITE, nbytes)
            self._workspaces[name] = buf
        return buf

    def empty(self, nbytes: int, what: str = "buffer") -> "cl.Buffer":
        self.check_alloc(nbytes, what)
        return cl.Buffer(self.context, cl.mem_flags.READ_WRITE, max(int(nbytes), 4))


_backend_class = None


def OpenCLBackend(platform, device, spec: str, description: str) -> OpenCLRuntime:
    """The backend of one device: the runtime plus every operation family's kernels."""
    global _backend_class
    if _backend_class is None:
        # Each family contributes a mixin with its OpenCL methods (see clnet/families.py).
        _backend_class = type("OpenCLBackend", tuple(opencl_mixins()) + (OpenCLRuntime,),
                              {"__module__": __name__})
    return _backend_class(platform, device, spec, description)
