"""OpenCL runtime of one device: context, queue, cached programs and kernels, buffers.

:class:`OpenCLRuntime` is the base of every OpenCL backend (clnet/opencl/backend.py adds
the operation families). Programs are built once per (family, dtype, defines); kernels
are :class:`~clnet.opencl.args.BoundKernel` objects, called with named arguments checked
against their declaration in ``kernels/<family>.cl``. A driver error during an operation
becomes a :class:`~clnet.DeviceError` or MemoryError naming the device (see
:meth:`OpenCLRuntime.translate_error` and :func:`clnet.backend.run`).
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import math
import os
import tempfile
import threading
import warnings
import weakref
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ..backend import Backend, BackendUnavailable, DeviceError
from ..common.cache import DeviceCache
from .args import BoundKernel, signature
from .environment import is_pocl, pocl_cache_problem, user_cache_problem
from .sources import program_source
from .tuning import DeviceTuning

try:  # pyopencl is a runtime dependency, but a broken install must not break import clnet
    import pyopencl as cl
    IMPORT_ERROR: Optional[str] = None
except Exception as exc:  # pragma: no cover - exercised only on broken installs
    cl = None
    IMPORT_ERROR = f"{type(exc).__name__}: {exc}"


# -- forked processes --------------------------------------------------------------------
# OpenCL drivers keep threads and locks that a fork does not copy: in a child forked from a
# process that had loaded an OpenCL platform, any OpenCL call (a new context included)
# blocks forever (measured on PoCL: inside enqueue_copy and clCreateContext). The child
# must not touch OpenCL at all, so every runtime inherited through the fork is marked,
# and clnet.backend.run refuses it with FORK_MESSAGE before any driver call.
FORK_MESSAGE = (
    "this process was forked (os.fork, or multiprocessing's 'fork' start method, the default on "
    "Linux) from one that had already started OpenCL, and OpenCL drivers do not survive a fork: "
    "any OpenCL call here would block forever. Start worker processes with the 'spawn' or "
    "'forkserver' start method (multiprocessing.get_context('spawn'), "
    "gymnasium's AsyncVectorEnv(..., context='spawn')), or use backend='numpy' in forked children")
_opencl_started_in: Optional[int] = None  # pid of the process that loaded an OpenCL platform
_live_runtimes: "weakref.WeakSet[OpenCLRuntime]" = weakref.WeakSet()


def mark_opencl_started() -> None:
    """Called before this process first asks the ICD loader for platforms."""
    global _opencl_started_in
    if _opencl_started_in is None:
        _opencl_started_in = os.getpid()


def inherited_opencl() -> bool:
    """Whether this process is a fork of one that had started OpenCL."""
    return _opencl_started_in is not None and _opencl_started_in != os.getpid()


def _after_fork_in_child() -> None:
    if _opencl_started_in is None:
        return
    for runtime in list(_live_runtimes):
        runtime.inherited_by_fork = FORK_MESSAGE


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# Work-items per group of PoCL's bounded 1-D launches: a multiple of any vector width it
# packs work-items into (up to 16 floats of AVX-512), small enough for few idle ones at the end.
POCL_GROUP = 64


def kernel_dir() -> Path:
    """Folder with the .cl sources: clnet/kernels in an installed package, or the checkout's
    top-level kernels/ (beside clnet/)."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "kernels", package.parent / "kernels"):
        if (candidate / "clnet_common.h").is_file():
            return candidate
    raise FileNotFoundError(f"clnet's OpenCL sources were not found next to {package}; reinstall clnet")


class KernelBuildError(DeviceError):
    """A kernel failed to compile. Carries the device, the options and the build log."""

    def __init__(self, device: str, source_name: str, options: Sequence[str], log: str, saved: str):
        self._arguments = (device, source_name, list(options), log, saved)
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

    def __reduce__(self):  # see BackendUnavailable.__reduce__
        return (type(self), self._arguments)


# Workspaces (scratch and output buffers) up to WORKSPACE_KEEP_BYTES each, and up to
# WORKSPACE_KEEP_TOTAL together, are kept between calls: allocating and first-touching a
# buffer costs more than a small kernel on CPU devices. A larger one is made for its call
# and freed after it, so that one large call (a population over 100,000 samples) does not
# hold its memory for the life of the process. clnet.release_memory() frees the kept ones.
WORKSPACE_KEEP_BYTES = 32 * 2**20
WORKSPACE_KEEP_TOTAL = 128 * 2**20

# Buffers of a recorded forward pass (record_sequence) are the recording's own until its
# backward has run; then up to SPARE_PER_SIZE of each size, SPARE_TOTAL in all, are kept for the
# next recording (a PPO update records and runs backwards twice per minibatch, and a new
# buffer's first touch, page by page, had cost Intel's runtime 4 ms of a 10 ms recording at
# T=40, B=100, H=200). A cell's device weights go back to the same pool when the cell's
# weights are replaced (recycle_when_dropped): an optimiser that loads new weights every
# update otherwise allocates and first-touches four new buffers per cell and update (about
# 3 ms per 256-unit LSTM on Intel's runtime). clnet.release_memory() frees them.
SPARE_PER_SIZE = 8
SPARE_TOTAL = 128 * 2**20

# Small host arrays go to the device in a buffer created with their copy (COPY_HOST_PTR) rather
# than by a copy command into a kept workspace, up to a size that depends on the runtime: PoCL
# spends 30-80 us of host time on every command it is handed and under 3 us on such a buffer,
# Intel's runtime the other way round from a few KiB on. The limit is the "transfers" family of
# clnet/opencl/tuning.py (small_upload_bytes): a default, re-measured by `python -m clnet tune`.

PAGE = 4096  # alignment of host arrays that CPU devices use in place (aligned_empty)


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a PAGE boundary."""
    dtype = np.dtype(dtype)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(n) for n in shape)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + PAGE, dtype=np.uint8)
    start = (-raw.ctypes.data) % PAGE
    return raw[start:start + nbytes].view(dtype).reshape(shape)


class CompilerEnvironmentError(DeviceError):
    """The compiler cannot write its output (an unwritable or full cache folder): checked
    before compiling, because PoCL's LLVM kills the process when a write fails."""

    def __init__(self, device: str, reason: str, fix: str):
        self._arguments = (device, reason, fix)
        self.reason, self.fix = reason, fix
        super().__init__(f"not compiling kernels on {device!r}: {reason}. To fix: {fix}")

    def __reduce__(self):  # see BackendUnavailable.__reduce__
        return (type(self), self._arguments)


_PROBE_SOURCE = """
__kernel void clnet_probe(__global float *x) { int i = get_global_id(0); x[i] = 2.0f * x[i] + 1.0f; }
"""


class OpenCLRuntime(Backend):
    """Context, queue, program cache and buffer helpers for one device."""

    def __init__(self, platform, device, spec: str, description: str):
        if inherited_opencl():
            raise BackendUnavailable(spec, "this process was forked from one that had already started OpenCL",
                                     FORK_MESSAGE.split(": any OpenCL call here would block forever. ")[-1])
        mark_opencl_started()
        self.spec = spec
        self.description = description
        self.platform = platform
        self.device = device
        self.device_name = device.name.strip()
        self.supports_float64 = bool(device.double_fp_config) or "cl_khr_fp64" in device.extensions
        self.max_alloc = int(device.max_mem_alloc_size)
        self.global_mem = int(device.global_mem_size)
        self.max_work_group = int(device.max_work_group_size)
        # A CPU device that says its memory is the host's computes in the process's own memory:
        # a result array can be handed to the kernels as their output buffer (writing_result),
        # inputs read in place (adopt). Oclgrind reports every device type at once and no
        # unified memory: it gets copies (and its uninitialised-value checks stay meaningful).
        try:
            unified = bool(device.host_unified_memory)
        except Exception:  # deprecated since OpenCL 2.0: a driver may refuse the query
            unified = False
        self.shares_host_memory = unified and int(device.type) & ~int(cl.device_type.DEFAULT) == int(cl.device_type.CPU)
        self._pocl = is_pocl(platform.name)
        # One queue per device: operations enqueue under this lock so that threads sharing
        # the backend never interleave the argument setting and enqueueing of a kernel.
        self.lock = threading.RLock()
        self._programs: Dict[tuple, "cl.Program"] = {}
        self._kernels: Dict[tuple, BoundKernel] = {}
        self._workspaces = DeviceCache()  # scratch and output buffers kept between calls
        self._spare: Dict[int, list] = {}  # buffers handed back (recycle), by size in bytes
        # buffers whose owner was garbage-collected (recycle_when_dropped): a finalizer may run
        # in any thread, with or without the lock, so it only appends here (deque.append is
        # atomic) and the next reused() moves them into the pool under the lock
        self._dropped: collections.deque = collections.deque()
        try:
            self.context = cl.Context([device])
            self.queue = cl.CommandQueue(self.context)
        except Exception as exc:
            raise BackendUnavailable(spec, f"creating a context on {self.device_name!r} failed: {exc}",
                                     "check the device's driver") from exc
        self._probe()
        _live_runtimes.add(self)

    def _probe(self) -> None:
        try:
            prg = self._build(_PROBE_SOURCE, "probe kernel", ())
            x = np.arange(8, dtype=np.float32)
            buf = cl.Buffer(self.context, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=x)
            prg.clnet_probe(self.queue, (8,), None, buf)
            out = np.empty_like(x)
            cl.enqueue_copy(self.queue, out, buf)
            self.queue.finish()
        except CompilerEnvironmentError as exc:
            raise BackendUnavailable(self.spec, exc.reason, exc.fix) from exc
        except KernelBuildError as exc:
            cache = user_cache_problem()  # the real cause when the build broke in a cache
            if cache is not None:
                raise BackendUnavailable(self.spec, *cache) from exc
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

    def translate_error(self, exc: BaseException, operation: str) -> Optional[BaseException]:
        """pyopencl's errors as clnet's: MemoryError when the device ran out, else DeviceError."""
        if cl is None or not isinstance(exc, cl.Error):
            return None
        where = f"OpenCL device {self.device_name!r} ({self.spec})"
        if isinstance(exc, cl.MemoryError):
            return MemoryError(f"{where} ran out of memory during {operation} ({exc}); use smaller "
                               f"inputs or another backend")
        return DeviceError(f"{where} failed during {operation}: {exc}")

    @property
    def is_cpu(self) -> bool:
        return bool(self.device.type & cl.device_type.CPU)

    def any_local(self, global_size: Sequence[int]) -> Optional[Tuple[int, ...]]:
        """The local size for a launch of a kernel that is correct with any: the
        implementation's choice (None), except on PoCL. PoCL compiles a kernel for each local
        size at its first launch with it, and for None picks one from the global size, so a
        new shape meant a new compile (0.3-0.4 s for a Pearson tile kernel whose call takes
        2-8 ms); with ones it compiles once. For kernels that do a tile of work per work-item
        (Pearson's pair tiles, the path walks), where PoCL's loop over a group's work-items
        adds little (Pearson at N=3000: the same time within the noise either way); a kernel
        of one small item per work-item uses :meth:`bounded_launch`."""
        return (1,) * len(global_size) if self._pocl else None

    def bounded_launch(self, items: int) -> Tuple[Tuple[int], Optional[Tuple[int]]]:
        """(global, local) for a 1-D kernel that returns early past ``items`` (``if (i >= n)
        return;``): ``items`` and the implementation's choice, except on PoCL, where the
        global size is rounded up to whole groups of one fixed size, so that the kernel is
        compiled once (see :meth:`any_local`) and PoCL still runs a group's work-items as one
        vectorised loop (local size 1 made a copy of 4M entries 10-20x slower)."""
        if not self._pocl:
            return (max(int(items), 1),), None
        group = POCL_GROUP
        return (max(-(-int(items) // group), 1) * group,), (group,)

    # -- tunable parameters (clnet/opencl/tuning.py) -------------------------------------------
    @property
    def tuning(self) -> "DeviceTuning":
        """This device's tuned parameters (read from its cache file on first use)."""
        t = self.__dict__.get("_tuning")
        if t is None:
            t = self.__dict__["_tuning"] = DeviceTuning(self.device)
        return t

    def tune(self, families=None, budget: float = 240.0, progress: bool = True, echo=print):
        """Measure this device's tunable parameters and save the fastest (``python -m clnet
        tune``; see clnet/opencl/tuner.py)."""
        from . import tuner
        return tuner.tune(self, families, budget=budget, progress=progress, echo=echo)

    def params(self, family: str, **shape) -> Dict[str, Any]:
        """The parameters a call of ``family`` at ``shape`` runs with: the nearest tuned entry,
        else the defaults declared for this device's properties."""
        return self.tuning.lookup(family, **shape)

    def small_upload_bytes(self) -> int:
        """Bytes up to which a host array goes to the device as a buffer created with its
        copy rather than by a copy command (the "transfers" family of clnet/opencl/tuning.py)."""
        return 1024 * self.tuning.lookup("transfers")["small_upload_kib"]

    # -- programs ---------------------------------------------------------------------------
    def _build(self, source: str, name: str, options: Sequence[str]) -> "cl.Program":
        opts = list(options)
        if self._pocl:
            problem = pocl_cache_problem()
            if problem is not None:
                raise CompilerEnvironmentError(self.device_name, *problem)
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

    def program(self, family: str, dtype, defines: Sequence[str] = (),
                kernels: Optional[Sequence[str]] = None) -> "cl.Program":
        """The compiled ``kernels/<family>.cl`` for ``dtype`` (only ``kernels`` of it when
        given; see clnet/opencl/sources.py); built once per (source, options)."""
        dt = self.check_dtype(dtype)
        opts = ["-D", f"CLNET_REAL={'double' if dt == np.float64 else 'float'}"]
        if dt == np.float64:
            opts += ["-D", "CLNET_USE_DOUBLE"]
        for d in defines:
            opts += ["-D", d]
        wanted = None if kernels is None else tuple(sorted(kernels))
        key = (family, wanted, dt.name, tuple(opts))
        with self.lock:
            prg = self._programs.get(key)
            if prg is None:
                source = program_source(str(kernel_dir()), family, wanted)
                prg = self._build(source, f"{family}.cl", opts)
                self._programs[key] = prg
            return prg

    def kernel(self, family: str, name: str, dtype, defines: Sequence[str] = ()) -> BoundKernel:
        """The kernel ``name`` of ``kernels/<family>.cl``, built once per (dtype, defines) and
        called with named arguments (see clnet/opencl/args.py).

        A kernel object holds its arguments, so callers set them and enqueue while
        holding ``self.lock``.
        """
        key = (family, name, np.dtype(dtype), tuple(defines))
        knl = self._kernels.get(key)  # a dict read is atomic; building happens under the lock
        if knl is not None:
            return knl
        with self.lock:
            knl = self._kernels.get(key)
            if knl is None:
                sig = signature(kernel_dir() / f"{family}.cl", name)
                knl = BoundKernel(cl.Kernel(self.program(family, dtype, defines, (name,)), name), sig,
                                  np.dtype(dtype), cl.MemoryObjectHolder)
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
        """A device buffer reused across calls (grown when too small), or, beyond the
        budgets :data:`WORKSPACE_KEEP_BYTES` and :data:`WORKSPACE_KEEP_TOTAL`, a buffer
        for this call only, freed after it.

        Callers hold ``self.lock`` and finish their queue work before releasing it, so
        one buffer per name is safe.
        """
        nbytes = max(int(nbytes), 4)
        kept = self._workspaces.peek(self, name)
        if kept is not None and kept.size >= nbytes:
            return kept

        def allocate():
            self.check_alloc(nbytes, what)
            return cl.Buffer(self.context, cl.mem_flags.READ_WRITE, nbytes)

        self._workspaces.discard(self, name)  # too small: freed before the larger one is made
        if nbytes > WORKSPACE_KEEP_BYTES or (
                self._workspaces.total(self, lambda buf: buf.size) + nbytes > WORKSPACE_KEEP_TOTAL):
            return allocate()
        return self._workspaces.get(self, name, allocate)

    def release_memory(self) -> None:
        """Free the kept workspaces and spare buffers (clnet.release_memory)."""
        with self.lock:
            self.queue.finish()
            self._workspaces.clear()
            self._dropped.clear()
            self._spare.clear()

    def reused(self, nbytes: int, what: str = "buffer") -> "cl.Buffer":
        """A read-write buffer of ``nbytes`` (contents undefined) that the caller owns: a spare
        one handed back by :meth:`recycle`, else a new one. Callers hold ``self.lock``."""
        nbytes = max(int(nbytes), 4)
        while self._dropped:
            self.recycle(self._dropped.popleft())
        spare = self._spare.get(nbytes)
        if spare:
            return spare.pop()
        return self.empty(nbytes, what)

    def recycle_when_dropped(self, owner, buffers) -> None:
        """Hand ``buffers`` back for :meth:`reused` once ``owner`` is garbage-collected (a
        cell's device weights when new weights replace them). Safe without waiting for the
        queue: the buffers are only ever used by commands on this one in-order queue, so
        whatever the next owner enqueues runs after every command that used them before."""
        weakref.finalize(owner, self._dropped.append, tuple(buffers))

    def recycle(self, buffers) -> None:
        """Hand ``buffers`` back for :meth:`reused`, once nothing enqueued uses them any more
        (the caller finished the queue) and nothing else will: at most :data:`SPARE_PER_SIZE`
        per size and :data:`SPARE_TOTAL` in all, the sizes handed back least recently evicted
        first (shapes that changed must not keep the pool full of sizes no call asks for).
        Callers hold the lock."""
        buffers = [b for b in buffers if b.size <= SPARE_TOTAL]
        for buf in buffers:
            spare = self._spare.pop(buf.size, [])  # re-inserted last: the most recent size
            if len(spare) < SPARE_PER_SIZE:
                spare.append(buf)
            self._spare[buf.size] = spare
        total = sum(size * len(bufs) for size, bufs in self._spare.items())
        while total > SPARE_TOTAL:
            oldest = next(iter(self._spare))
            spare = self._spare[oldest]
            if spare:
                spare.pop()
                total -= oldest
            if not spare:  # emptied here or by reused
                del self._spare[oldest]

    def upload(self, name: str, array: np.ndarray, what: str, keep_alive: list) -> "cl.Buffer":
        """A device buffer holding ``array``, enqueued without waiting: up to
        :meth:`small_upload_bytes` a new buffer made with the copy (no command on the queue),
        else the workspace ``name`` filled by a copy command; ``keep_alive`` holds the host
        array until the caller's final ``queue.finish()``."""
        array = np.ascontiguousarray(array)
        if array.nbytes <= self.small_upload_bytes():
            return self.to_device(array, what)
        buf = self.workspace(name, array.nbytes, what)
        keep_alive.append(array)
        cl.enqueue_copy(self.queue, buf, array, is_blocking=False)
        return buf

    def copy_of(self, array: np.ndarray, what: str) -> "cl.Buffer":
        """A new read-write device buffer holding a copy of ``array``."""
        array = np.ascontiguousarray(array)
        self.check_alloc(array.nbytes, what)
        if array.nbytes == 0:
            return cl.Buffer(self.context, cl.mem_flags.READ_WRITE, 4)
        return cl.Buffer(self.context, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR,
                         hostbuf=array)

    def quiesce(self) -> None:
        """Drain the queue (see Backend.quiesce): kernels may still read arrays handed over
        with :meth:`adopt`, which Python frees once the failed operation's frames go."""
        with contextlib.suppress(Exception):
            self.queue.finish()

    # -- results written in place ------------------------------------------------------------
    @staticmethod
    def result_array(shape, dtype) -> np.ndarray:
        """An uninitialised host array for a kernel's result or a buffer's contents,
        page-aligned, so that a device sharing host memory can use it in place (OpenCL CPU
        runtimes copy through memory of their own when a host pointer is not aligned to what
        they need)."""
        return aligned_empty(shape, dtype)

    def adopt(self, array: np.ndarray, what: str = "array") -> "cl.Buffer":
        """A read-only device buffer of ``array``, which the caller hands over: it must not
        change while the buffer lives. A device that shares host memory reads ``array`` in
        place (no allocation, no copy); others get a copy (:meth:`to_device`). The buffer
        keeps ``array`` alive; only operations run through clnet.backend.run may adopt, since
        that drains the queue (:meth:`quiesce`) before a failed operation lets go of it."""
        if not (self.shares_host_memory and array.nbytes and array.flags.c_contiguous):
            return self.to_device(array, what)
        self.check_alloc(array.nbytes, what)
        return cl.Buffer(self.context, cl.mem_flags.READ_ONLY | cl.mem_flags.USE_HOST_PTR, hostbuf=array)

    @contextlib.contextmanager
    def writing_result(self, out: np.ndarray, name: str, what: str, buffer=None):
        """Context manager: the device buffer that kernels enqueued inside write ``out``
        (C-contiguous) through, and ``out`` holding what they wrote on leaving. On a device
        that shares host memory that buffer is ``out``'s own memory (a blocking map on leaving,
        OpenCL's rule for reading it on the host); elsewhere it is the workspace ``name``,
        copied back (or ``buffer()``, a buffer of the caller's at least as large, when given).
        On any exception, Ctrl-C included, the queue is drained first, so no kernel still
        writes into an array that is being freed. Callers hold ``self.lock``."""
        self.check_alloc(out.nbytes, what)
        in_place = self.shares_host_memory and out.nbytes > 0
        if in_place:
            buf = cl.Buffer(self.context, cl.mem_flags.READ_WRITE | cl.mem_flags.USE_HOST_PTR, hostbuf=out)
        else:
            buf = buffer() if buffer is not None else self.workspace(name, out.nbytes, what)
        try:
            yield buf
            if in_place:
                mapped, _ = cl.enqueue_map_buffer(self.queue, buf, cl.map_flags.READ, 0, out.shape, out.dtype)
                try:
                    if mapped.ctypes.data != out.ctypes.data:  # a runtime that mapped a copy of its own
                        out[...] = mapped
                finally:
                    mapped.base.release(self.queue)
            elif out.nbytes:
                cl.enqueue_copy(self.queue, out, buf)
        except BaseException:
            with contextlib.suppress(Exception):  # the original error is the one to see
                self.queue.finish()
            raise

    def empty(self, nbytes: int, what: str = "buffer") -> "cl.Buffer":
        self.check_alloc(nbytes, what)
        return cl.Buffer(self.context, cl.mem_flags.READ_WRITE, max(int(nbytes), 4))


