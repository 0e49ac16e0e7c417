"""What an OpenCL runtime needs from the machine, checked so that its failure can be named.

PoCL compiles kernels into a cache folder (``POCL_CACHE_DIR``, else
``$XDG_CACHE_HOME/pocl``, else ``~/.cache/pocl``). When that folder cannot be written,
PoCL lists its platform with no device (the folder is made at start-up) or fails every
build; when its filesystem is almost full, LLVM kills the process while writing. These
checks run before PoCL is asked to compile, so that clnet reports the real cause and a
fix instead (devices.py, runtime.py).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Tuple

# Less free space than this in the compiler's cache folder is reported instead of
# compiling: one kernel's object files take a few MB, and LLVM aborts the process when a
# write fails (measured with PoCL 3.1 and a 300 KB filesystem).
MIN_FREE_BYTES = 32 * 2**20

POCL_PLATFORM = "portable computing language"


def is_pocl(platform_name: str) -> bool:
    return POCL_PLATFORM in platform_name.lower()


def pocl_cache_dir() -> Path:
    """The folder PoCL caches compiled kernels in (its own rule)."""
    explicit = os.environ.get("POCL_CACHE_DIR", "").strip()
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg:
        return Path(xdg) / "pocl"
    return Path(os.environ.get("HOME", "") or os.path.expanduser("~")) / ".cache" / "pocl"


def folder_problem(folder: Path, min_free: Optional[int] = None) -> Optional[str]:
    """Why a compiler could not write into ``folder`` (missing folders are made, as the
    compiler would): unwritable, or less than ``min_free`` (default
    :data:`MIN_FREE_BYTES`) free; None when it can."""
    min_free = MIN_FREE_BYTES if min_free is None else min_free
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot be created ({exc.strerror or exc})"
    try:
        fd, probe = tempfile.mkstemp(dir=str(folder), prefix=".clnet-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"is not writable ({exc.strerror or exc})"
    try:
        stats = os.statvfs(str(folder))
    except OSError:
        return None
    free = stats.f_bavail * stats.f_frsize
    if free < min_free:
        return f"has only {free / 2**10:.0f} KB free (compiling needs at least {min_free // 2**20} MB)"
    return None


def pocl_cache_problem() -> Optional[Tuple[str, str]]:
    """(reason, fix) when PoCL's cache folder cannot take compiled kernels, else None."""
    folder = pocl_cache_dir()
    problem = folder_problem(folder)
    if problem is None:
        return None
    source = ("POCL_CACHE_DIR" if os.environ.get("POCL_CACHE_DIR", "").strip()
              else "XDG_CACHE_HOME" if os.environ.get("XDG_CACHE_HOME", "").strip() else "HOME")
    reason = f"PoCL's kernel cache folder {str(folder)!r} (from {source}) {problem}"
    fix = ("point PoCL's cache at a writable folder with free space, e.g. "
           "export POCL_CACHE_DIR=/tmp/pocl-cache (and PYOPENCL_CACHE_DIR=/tmp/pyopencl-cache), "
           f"or free space in / make writable {str(folder)!r}")
    return reason, fix


def user_cache_problem() -> Optional[Tuple[str, str]]:
    """(reason, fix) when the user's cache folder ($XDG_CACHE_HOME, else ~/.cache), which
    pyopencl and vendor compilers write into, cannot take files; else None. (pyopencl 2026.1
    then fails every build with a KeyError for PYOPENCL_CACHE_FAILURE_FATAL.)"""
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    folder = Path(xdg) if xdg else Path(os.environ.get("HOME", "") or os.path.expanduser("~")) / ".cache"
    problem = folder_problem(folder, min_free=0)
    if problem is None:
        return None
    source = "XDG_CACHE_HOME" if xdg else "HOME"
    return (f"the user cache folder {str(folder)!r} (from {source}) {problem}, so the OpenCL compiler's "
            f"caches cannot be written",
            "point the caches at a writable folder, e.g. export XDG_CACHE_HOME=/tmp/cache "
            "(or PYOPENCL_NO_CACHE=1 to build without pyopencl's cache)")
