"""Kernel arguments bound by name against the kernel's own declaration.

Each ``__kernel`` signature is parsed once from its ``kernels/<family>.cl`` source
(:func:`parse_signatures`); a :class:`BoundKernel` then takes its arguments as keywords,
checks that every declared argument is given once with a value of the right kind (a
device buffer for a pointer, an integer that fits for ``int``/``long``, a real number for
``real``/``float``/``double``), and passes them in declaration order with the scalar
types set once (pyopencl then packs all arguments in one fast call). A missing, extra or
mistyped argument raises :class:`KernelArgumentError` naming the kernel and the argument,
before anything is enqueued.
"""
from __future__ import annotations

import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .sources import _ATTRIBUTES, blank_comments

_SCALAR_TYPES = {"int": np.int32, "uint": np.uint32, "long": np.int64, "ulong": np.uint64,
                 "float": np.float32, "double": np.float64, "real": None}  # None: the build's dtype
_QUALIFIERS = {"const", "__global", "global", "__constant", "constant", "__local", "local",
               "restrict", "__restrict", "volatile"}
_KERNEL = re.compile(rf"(?<!\w)(?:__kernel|kernel)\s+{_ATTRIBUTES}void\s+(\w+)\s*\(([^)]*)\)", re.S)


class KernelArgumentError(TypeError):
    """A kernel was called with a missing, extra or mistyped argument."""


@dataclass(frozen=True)
class KernelArg:
    name: str
    ctype: str          # the base type: int, long, real, ...
    pointer: bool       # a __global buffer

    def scalar_dtype(self, real: np.dtype) -> Optional[np.dtype]:
        if self.pointer:
            return None
        dt = _SCALAR_TYPES[self.ctype]
        return np.dtype(real if dt is None else dt)


@dataclass(frozen=True)
class KernelSignature:
    kernel: str
    args: Tuple[KernelArg, ...]

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(a.name for a in self.args)


def _parse_arg(kernel: str, text: str) -> KernelArg:
    tokens = text.replace("*", " * ").split()
    pointer = "*" in tokens
    words = [t for t in tokens if t != "*" and t not in _QUALIFIERS]
    if len(words) != 2:
        raise ValueError(f"cannot read the argument {text.strip()!r} of kernel {kernel}")
    ctype, name = words
    if not pointer and ctype not in _SCALAR_TYPES:
        raise ValueError(f"kernel {kernel}: argument {name!r} has the scalar type {ctype!r}, which "
                         f"clnet does not bind (known: {', '.join(_SCALAR_TYPES)})")
    return KernelArg(name, ctype, pointer)


def parse_signatures(source: str) -> Dict[str, KernelSignature]:
    """Every ``__kernel void name(...)`` of an OpenCL C source, by kernel name."""
    found = {}
    for match in _KERNEL.finditer(blank_comments(source)):
        name, params = match.group(1), match.group(2)
        args = tuple(_parse_arg(name, p) for p in params.split(",") if p.strip())
        found[name] = KernelSignature(name, args)
    return found


_CACHE: Dict[Path, Dict[str, KernelSignature]] = {}


def signature(source_path: Path, kernel: str) -> KernelSignature:
    """The declared signature of ``kernel`` in ``source_path`` (parsed once per file)."""
    table = _CACHE.get(source_path)
    if table is None:
        table = _CACHE[source_path] = parse_signatures(source_path.read_text())
    if kernel not in table:
        raise KernelArgumentError(f"{source_path.name} declares no kernel {kernel!r}; it has "
                                  f"{', '.join(sorted(table)) or 'none'}")
    return table[kernel]


_INT_RANGE = {np.dtype(t): (np.iinfo(t).min, np.iinfo(t).max) for t in (np.int32, np.uint32, np.int64, np.uint64)}


class BoundKernel:
    """A compiled kernel called with named arguments: ``knl(queue, global, local, B=..., x=...)``."""

    def __init__(self, kernel, sig: KernelSignature, real: np.dtype, buffer_type: type):
        self.kernel = kernel
        self.signature = sig
        self.name = sig.kernel
        self._names = sig.names
        self._dtypes = [a.scalar_dtype(real) for a in sig.args]
        self._buffer_type = buffer_type
        self._buffer_kinds = set()  # concrete buffer classes seen, so later checks are a set lookup
        # Per argument: None for a buffer, (lo, hi) for an integer, () for a real number.
        self._rules = [None if dt is None else (_INT_RANGE[dt] if dt.kind in "iu" else ()) for dt in self._dtypes]
        kernel.set_scalar_arg_dtypes(self._dtypes)

    def bind(self, values: Dict[str, object]) -> List[object]:
        """The values in declaration order, each checked against its declaration."""
        try:
            ordered = [values[n] for n in self._names]
        except KeyError:
            missing = [n for n in self._names if n not in values]
            raise KernelArgumentError(f"kernel {self.name}: missing argument(s) {', '.join(missing)}") from None
        if len(values) != len(self._names):
            extra = sorted(set(values) - set(self._names))
            raise KernelArgumentError(f"kernel {self.name}: unexpected argument(s) {', '.join(extra)}; it "
                                      f"takes {', '.join(self._names)}")
        buffers = self._buffer_kinds
        for i, (rule, value) in enumerate(zip(self._rules, ordered)):
            kind = type(value)
            if rule is None:
                if kind not in buffers:
                    self._check_buffer(i, value)
            elif rule:
                if kind is not int or not rule[0] <= value <= rule[1]:
                    self._check_integer(i, value, rule)
            elif kind is not float and kind is not int:
                self._check_real(i, value)
        return ordered

    def _check_buffer(self, i: int, value) -> None:
        if not isinstance(value, self._buffer_type):
            raise KernelArgumentError(f"kernel {self.name}: argument {self._names[i]!r} is a device buffer, "
                                      f"got {type(value).__name__}")
        self._buffer_kinds.add(type(value))

    def _check_integer(self, i: int, value, rule) -> None:
        name, dt = self._names[i], self._dtypes[i]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            raise KernelArgumentError(f"kernel {self.name}: argument {name!r} is an integer "
                                      f"({dt.name}), got {type(value).__name__} {value!r}")
        if not rule[0] <= value <= rule[1]:
            raise KernelArgumentError(f"kernel {self.name}: argument {name!r} = {value} does not fit in {dt.name}")

    def _check_real(self, i: int, value) -> None:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise KernelArgumentError(f"kernel {self.name}: argument {self._names[i]!r} is a real number "
                                      f"({self._dtypes[i].name}), got {type(value).__name__}")

    def __call__(self, queue, global_size, local_size, **values):
        return self.kernel(queue, global_size, local_size, *self.bind(values))

    def work_group_size(self, device) -> int:
        """The largest work-group this kernel can run with on ``device``."""
        import pyopencl as cl

        return int(self.kernel.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE, device))
