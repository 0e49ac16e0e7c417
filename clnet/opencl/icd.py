"""Make the ICD loader see Intel's CPU OpenCL runtime when pip installed it (``clnet[cpu]``).

``pip install intel-opencl-rt intel-cmplr-lib-rt tbb`` puts ``libintelocl.so`` in the
environment's ``lib/``, but the .icd file it ships names a build path that does not exist,
so the ICD loader inside pyopencl's wheel (ocl-icd) never loads it. That loader reads the
folder named by ``OCL_ICD_VENDORS`` (else ``/etc/OpenCL/vendors``) once, at the process's
first platform query. So, before that query, :func:`register_pip_runtime`:

- does nothing when the user set ``OCL_ICD_VENDORS`` (their choice wins) or when no
  ``libintelocl.so`` lies in the environment;
- otherwise writes, inside the environment (``<prefix>/etc/clnet/OpenCL/vendors``), one
  .icd file naming the library plus a copy of each system .icd file (so that PoCL or a GPU
  driver stays visible), and sets ``OCL_ICD_VENDORS`` to that folder for this process
  (and the processes it starts).

The library finds its sibling libraries (tbb, svml, ...) through its RUNPATH ``$ORIGIN``,
so no LD_LIBRARY_PATH is needed.
"""
from __future__ import annotations

import os
import site
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, MutableMapping, Optional, Tuple

from ..common.files import write_atomically

LIBRARY = "libintelocl.so"
SYSTEM_VENDORS = Path("/etc/OpenCL/vendors")
# Relative to the environment's prefix: clnet's own folder, so that nothing another
# package put in <prefix>/etc/OpenCL/vendors (Intel's broken .icd files) is picked up.
VENDORS_SUBDIR = Path("etc", "clnet", "OpenCL", "vendors")
ICD_NAME = "clnet-intel-cpu.icd"


@dataclass
class Registration:
    """What :func:`register_pip_runtime` did, for ``python -m clnet info``."""

    library: Optional[Path] = None
    folder: Optional[Path] = None
    skipped: str = ""  # why nothing was registered although a library was found

    def note(self) -> str:
        if self.library is None:
            return ""
        if self.folder is not None:
            return (f"Intel's CPU OpenCL runtime from pip ({self.library}) is registered for this process: "
                    f"OCL_ICD_VENDORS={self.folder}")
        return f"Intel's CPU OpenCL runtime from pip ({self.library}) is not registered: {self.skipped}"


def environment_prefixes() -> List[Path]:
    """Where pip puts shared libraries for this interpreter: the environment, then the user base."""
    prefixes = [Path(sys.prefix)]
    user = getattr(site, "USER_BASE", None)
    if user:
        prefixes.append(Path(user))
    return prefixes


def find_library(prefixes: Iterable[Path]) -> Optional[Tuple[Path, Path]]:
    """(prefix, library) of the first prefix whose lib/ or lib64/ holds the runtime."""
    for prefix in prefixes:
        for lib in ("lib", "lib64"):
            candidate = Path(prefix) / lib / LIBRARY
            if candidate.is_file():
                return Path(prefix), candidate.absolute()
    return None


def _write_if_changed(path: Path, text: str) -> None:
    """Atomic, and only when the content differs: concurrent processes may do the same."""
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    # 0o644: the loader may run as another user
    write_atomically(path, text, mode=0o644)


def write_vendor_folder(library: Path, folder: Path, system_vendors: Path = SYSTEM_VENDORS) -> None:
    """``folder`` holding an .icd file for ``library`` and a copy of each system .icd file;
    stale copies of system files that were removed are deleted."""
    folder.mkdir(parents=True, exist_ok=True)
    _write_if_changed(folder / ICD_NAME, f"{library}\n")
    wanted = {ICD_NAME}
    if system_vendors.is_dir():
        for icd in sorted(system_vendors.glob("*.icd")):
            try:
                text = icd.read_text()
            except OSError:
                continue  # an unreadable vendor file would be skipped by the loader too
            name = f"system-{icd.name}"
            wanted.add(name)
            _write_if_changed(folder / name, text)
    for old in folder.glob("system-*.icd"):
        if old.name not in wanted:
            old.unlink(missing_ok=True)


def register_pip_runtime(environ: Optional[MutableMapping[str, str]] = None,
                         prefixes: Optional[Iterable[Path]] = None,
                         system_vendors: Path = SYSTEM_VENDORS) -> Registration:
    """Point the ICD loader at a pip-installed Intel CPU runtime (see the module's text).
    Call it before the process's first OpenCL platform query; it never raises."""
    environ = os.environ if environ is None else environ
    found = find_library(environment_prefixes() if prefixes is None else prefixes)
    if found is None:
        return Registration()
    prefix, library = found
    folder = prefix / VENDORS_SUBDIR
    if environ.get("OCL_ICD_VENDORS") == str(folder):
        return Registration(library, folder)  # inherited from a parent process that registered it
    if environ.get("OCL_ICD_VENDORS"):
        return Registration(library, None, f"OCL_ICD_VENDORS is already set ({environ['OCL_ICD_VENDORS']}); "
                                           f"add an .icd file naming {library} there to use it")
    try:
        write_vendor_folder(library, folder, system_vendors)
    except OSError as exc:
        return Registration(library, None, f"could not write {folder} ({exc}); write an .icd file naming "
                                           f"the library into a folder of yours and set OCL_ICD_VENDORS to it")
    environ["OCL_ICD_VENDORS"] = str(folder)
    return Registration(library, folder)


_DONE: Optional[Registration] = None


def ensure_registered() -> Registration:
    """:func:`register_pip_runtime` once per process (the loader reads its folder only once)."""
    global _DONE
    if _DONE is None:
        _DONE = register_pip_runtime()
    return _DONE
