"""OpenCL device discovery: the provider registered in the ``clnet.backends`` entry points.

:class:`OpenCLProvider` offers one candidate per OpenCL device, with the spec
``opencl:P:D`` (platform and device index). A device is usable when a context can be
created on it and a probe kernel builds and runs correctly; a compiler that fails (for
example pip's PoCL 3.0 on CPUs its LLVM does not know: "unknown target CPU 'generic'")
makes the device unusable with that reason.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import List, Optional

from ..backend import BackendCandidate, BackendUnavailable
from .environment import is_pocl, pocl_cache_problem
from .icd import ensure_registered
from .runtime import IMPORT_ERROR, cl, mark_opencl_started

_PRIORITY = {"GPU": 300, "ACCELERATOR": 250, "CPU": 200}
# Simulators are correct but slow: never chosen automatically over the NumPy fallback.
_SIMULATORS = ("oclgrind",)


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
    # Before the first platform query: the ICD loader reads its vendor list only then.
    ensure_registered()
    mark_opencl_started()  # from here on a forked child must not touch OpenCL
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
            return [_unusable("opencl", "pyopencl could not be imported: " + str(IMPORT_ERROR),
                              "pip install pyopencl")]
        cands = []
        for pi, platform in enumerate(_platforms()):
            try:
                devices = platform.get_devices()
            except Exception as exc:
                cands.append(_unusable(f"opencl:{pi}", f"platform {platform.name!r} lists no device ({exc})",
                                       "check the platform's driver installation"))
                continue
            if not devices:
                cands.append(_no_devices(pi, platform.name))
            for di, device in enumerate(devices):
                spec = f"opencl:{pi}:{di}"
                kind = _device_kind(device)
                prio = _PRIORITY[kind]
                if any(s in platform.name.lower() for s in _SIMULATORS):
                    prio = 10
                desc = f"{platform.name.strip()} / {device.name.strip()} ({kind})"
                cands.append(BackendCandidate(
                    spec, desc, prio,
                    load=lambda p=platform, d=device, s=spec, t=desc: _load(p, d, s, t),
                    kind=f"{platform.name} {device.name}"))
        if not cands:
            hint = nvidia_hint() or ("install an OpenCL runtime, for example Debian's PoCL: "
                                     "apt-get install pocl-opencl-icd")
            cands.append(_unusable("opencl", "no OpenCL platform was found", hint))
        return cands

    def notes(self) -> List[str]:
        """Hints for ``python -m clnet info``: an NVIDIA GPU whose OpenCL platform is not visible."""
        return [nvidia_hint(), ensure_registered().note()]

    def match(self, selector: str, cands: List[BackendCandidate]) -> List[BackendCandidate]:
        """``P`` or ``P:D``: each an index or a case-insensitive substring of the name (the
        platform's vendor too, so ``pocl`` and ``intel`` name the two CPU runtimes)."""
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
            dname = platforms[pi].get_devices()[di].name if pi < len(platforms) else ""
            if not _platform_matches(parts[0], pi, platforms[pi] if pi < len(platforms) else None):
                continue
            if len(parts) == 2 and not _part_matches(parts[1], di, dname):
                continue
            found.append(cand)
        found.sort(key=lambda c: -c.priority)
        return found


# Short names people use for platforms whose official name does not contain them.
PLATFORM_ALIASES = {"pocl": "portable computing language"}


def _platform_matches(part: str, index: int, platform) -> bool:
    """The platform part of a spec: its index, or part of the platform's name or vendor
    ("pocl" names PoCL's "Portable Computing Language" by its vendor "The pocl project",
    "intel" Intel's "Intel(R) OpenCL")."""
    if platform is None:
        return _part_matches(part, index, "")
    return any(_part_matches(part, index, text) for text in (platform.name, getattr(platform, "vendor", "") or ""))


def _part_matches(part: str, index: int, name: str) -> bool:
    part = part.strip()
    if part.isdigit():
        return int(part) == index
    part = PLATFORM_ALIASES.get(part.lower(), part.lower())
    return part in name.lower()


def _no_devices(pi: int, platform_name: str) -> BackendCandidate:
    """A platform that lists no device: a real cause when one can be named (PoCL without
    a writable cache folder lists none). Ranked above the NumPy fallback, so that automatic
    selection says once why it falls back."""
    reason, fix = f"platform {platform_name.strip()!r} lists no device", "check the platform's driver installation"
    problem = pocl_cache_problem() if is_pocl(platform_name) else None
    if problem is not None:
        reason, fix = f"{reason}: {problem[0]}", problem[1]

    def load():
        raise BackendUnavailable(f"opencl:{pi}", reason, fix)
    return BackendCandidate(f"opencl:{pi}", f"{platform_name.strip()} (no device)", 150, load)


def _unusable(spec: str, reason: str, fix: str) -> BackendCandidate:
    def load():
        raise BackendUnavailable(spec, reason, fix)
    return BackendCandidate(spec, "OpenCL", -1, load)




def _load(platform, device, spec: str, description: str):
    from .backend import OpenCLBackend  # the families' modules load with the first device

    return OpenCLBackend(platform, device, spec, description)
