"""Backend registry: discovery through entry points, selection, and the base class.

Every backend, the built-in ones included, is found through the ``clnet.backends``
entry-point group. An entry point names a *provider*: a class (or factory) with a
``name`` and a ``candidates()`` method listing the concrete backends it can offer
(the OpenCL provider offers one per device). A candidate is usable when its
``load()`` succeeds; when it raises :class:`BackendUnavailable` the reason is kept
and shown by :func:`backends` and ``python -m clnet info``.

Resolution order for an operation: its ``backend=`` argument, then the innermost
:func:`use_backend` context, then the ``CLNET_BACKEND`` environment variable, then
the usable candidate with the highest priority.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import threading
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Iterable, Iterator, List, Optional, TypeVar, Union

import numpy as np

T = TypeVar("T")

ENTRY_POINT_GROUP = "clnet.backends"
ENV_VAR = "CLNET_BACKEND"

__all__ = [
    "Backend",
    "BackendCandidate",
    "BackendInfo",
    "BackendUnavailable",
    "DeviceError",
    "backends",
    "call",
    "run",
    "get_backend",
    "notes",
    "release_memory",
    "use_backend",
    "resolve_dtype",
]


class BackendUnavailable(RuntimeError):
    """A backend cannot run here. ``reason`` says why, ``fix`` how to make it run."""

    def __init__(self, spec: str, reason: str, fix: str = ""):
        self.spec = spec
        self.reason = reason
        self.fix = fix
        message = f"backend {spec!r} is not usable: {reason}"
        if fix:
            message += f". To fix: {fix}"
        super().__init__(message)

    def __reduce__(self):
        # Rebuilt from its own arguments, not the message: raised in a worker process (a
        # multiprocessing pool, Dask), it must unpickle in the parent, or the pool's result
        # thread dies and the parent waits forever.
        return (type(self), (self.spec, self.reason, self.fix))


class DeviceError(RuntimeError):
    """A device failed while running an operation (lost device, driver error, failed build).

    The message names the device and the operation. No partial result is returned.
    """


class Backend:
    """Base class of a concrete backend (the NumPy reference, one OpenCL device, ...).

    A backend also inherits the operation families it implements, declared with their
    signatures in :mod:`clnet.contract` (``class MyBackend(Backend, FNNOps)``). Public
    operations reach it through :func:`call` / :func:`run`, never by attribute access.
    """

    #: spec string that selects exactly this backend, e.g. ``"numpy"`` or ``"opencl:0:0"``
    spec: str = ""
    #: one line for humans
    description: str = ""
    #: whether float64 operations are available
    supports_float64: bool = True
    #: why this backend object cannot run in this process (set in a forked child when the
    #: backend's driver does not survive a fork); :func:`run` refuses it with that reason
    inherited_by_fork: str = ""

    def op(self, name: str) -> Callable:
        """The operation ``name`` of a family this backend declares."""
        if name in _declared_operations(type(self)):
            return getattr(self, name)
        from .contract import operation_family

        family = operation_family(name)
        if family is None:
            raise ValueError(f"{name!r} is not an operation of the backend contract (clnet/contract.py)")
        raise NotImplementedError(
            f"backend {self.spec!r} does not implement the operation {name!r} (family "
            f"{family.name!r}); choose another backend with backend=... or clnet.use_backend(...)")

    def release_memory(self) -> None:
        """Free what the backend keeps between calls for speed (scratch buffers); the
        next call makes it again. Objects the user holds keep their own copies."""

    def quiesce(self) -> None:
        """Wait until no work the backend queued is still running (called by :func:`run` when
        an operation raises, Ctrl-C included, before the operation's arrays can be freed: a
        device may be reading host memory in place). Never raises. Nothing to do here."""

    def translate_error(self, exc: BaseException, operation: str) -> Optional[BaseException]:
        """The clnet error for a driver's exception ``exc`` raised during ``operation``
        (a :class:`DeviceError`, or MemoryError when the device ran out of memory), or
        None when ``exc`` is not the driver's. A backend over a driver overrides this."""
        return None

    def check_dtype(self, dtype) -> np.dtype:
        dt = resolve_dtype(dtype)
        if dt == np.float64 and not self.supports_float64:
            raise TypeError(
                f"dtype float64 was requested but backend {self.spec!r} "
                f"({self.description}) has no double precision support; use dtype='float32' "
                f"or a backend that supports float64 (for example 'numpy')"
            )
        return dt

    def __repr__(self) -> str:
        return f"<clnet backend {self.spec}: {self.description}>"


@functools.lru_cache(maxsize=None)
def _declared_operations(cls: type) -> frozenset:
    """The operations of the families ``cls`` inherits (computed once per class)."""
    from .contract import families_of

    return frozenset(op for family in families_of(cls) for op in family.operations())


def resolve_dtype(dtype) -> np.dtype:
    """Map a user's dtype argument to float32 (the default) or float64."""
    if dtype is None:
        return np.dtype(np.float32)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dt.name!r}")
    return dt


@dataclass
class BackendCandidate:
    """One backend a provider can offer. ``load`` builds it or raises BackendUnavailable."""

    spec: str
    description: str
    priority: int
    load: Callable[[], Backend]
    #: extra words a selector may match (platform and device names for OpenCL)
    kind: str = ""


@dataclass(frozen=True)
class BackendInfo:
    """What :func:`backends` reports about one candidate backend."""

    spec: str
    description: str
    priority: int
    usable: bool
    reason: str = ""
    fix: str = ""

    def __str__(self) -> str:
        state = "usable" if self.usable else f"NOT usable: {self.reason}"
        return f"{self.spec:<16} {state:<10}  {self.description}"


class _Registry:
    """Providers loaded from entry points plus anything registered at run time."""

    def __init__(self):
        self._lock = threading.RLock()
        self._providers: Optional[dict] = None
        self._load_errors: dict = {}
        self._backends: dict = {}  # spec -> Backend (one context per device)
        self._failures: dict = {}  # spec -> BackendUnavailable
        self._warned: set = set()
        # A spec string as given -> the spec of the backend it selected: resolving "opencl:0:0"
        # again matches platforms by name (about 0.1 ms), a tenth of a small population's call.
        # Only backends still loaded are returned from it (a failed one has left _backends).
        self._selected: dict = {}

    def providers(self) -> dict:
        with self._lock:
            if self._providers is None:
                self._providers = {}
                for ep in _entry_points():
                    if ep.name in self._providers:
                        continue  # first distribution wins; duplicates are reported by name only
                    try:
                        obj = ep.load()
                        provider = obj() if isinstance(obj, type) else obj
                    except Exception as exc:  # a broken plugin must not break import clnet
                        self._load_errors[ep.name] = f"{type(exc).__name__}: {exc}"
                        continue
                    self._providers[ep.name] = provider
            return self._providers

    def register(self, provider, *, replace: bool = False) -> None:
        name = getattr(provider, "name", None)
        if not isinstance(name, str) or not name or ":" in name:
            raise ValueError("a provider needs a non-empty string attribute 'name' without ':'")
        with self._lock:
            providers = self.providers()
            if name in providers and not replace:
                raise ValueError(f"a backend provider named {name!r} is already registered; "
                                 f"pass replace=True to override it")
            providers[name] = provider
            self._forget(name)

    def unregister(self, name: str) -> None:
        with self._lock:
            self.providers().pop(name, None)
            self._forget(name)

    def _forget(self, name: str) -> None:
        self._selected.clear()
        for table in (self._backends, self._failures):
            for spec in [s for s in table if s == name or s.startswith(name + ":")]:
                del table[spec]

    def candidates(self) -> List[BackendCandidate]:
        result = []
        for name, provider in list(self.providers().items()):
            try:
                result.extend(provider.candidates())
            except Exception as exc:
                def fail(exc=exc, name=name):
                    raise BackendUnavailable(name, f"listing its devices failed: {exc}")
                result.append(BackendCandidate(name, f"provider {name!r}", -1, fail))
        return result

    def load(self, cand: BackendCandidate) -> Backend:
        """Instantiate a candidate once; remember failures so probing is not repeated."""
        with self._lock:
            if cand.spec in self._backends:
                return self._backends[cand.spec]
            if cand.spec in self._failures:
                raise self._failures[cand.spec]
            try:
                _check_contract(cand)
                backend = cand.load()
                _check_contract(backend)
            except BackendUnavailable as exc:
                self._failures[cand.spec] = exc
                raise
            except Exception as exc:
                err = BackendUnavailable(cand.spec, f"{type(exc).__name__}: {exc}")
                self._failures[cand.spec] = err
                raise err from exc
            self._backends[cand.spec] = backend
            return backend

    def info(self) -> List[BackendInfo]:
        infos = []
        self.providers()  # loads the plugins, recording the ones that fail
        for name, reason in sorted(self._load_errors.items()):
            infos.append(BackendInfo(name, "plugin failed to load", -1, False, reason,
                                     "reinstall the package that provides it"))
        for cand in self.candidates():
            try:
                self.load(cand)
            except BackendUnavailable as exc:
                infos.append(BackendInfo(cand.spec, cand.description, cand.priority, False,
                                         exc.reason, exc.fix))
            else:
                infos.append(BackendInfo(cand.spec, cand.description, cand.priority, True))
        return infos

    def notes(self) -> List[str]:
        """Hints the providers give about this machine (``provider.notes()``, optional)."""
        found = []
        for provider in list(self.providers().values()):
            try:
                found.extend(n for n in getattr(provider, "notes", lambda: [])() if n)
            except Exception:  # a hint must never break listing
                continue
        return found

    def mark_failed(self, spec: str, reason: str) -> None:
        """Take a backend that failed during use out of automatic selection."""
        with self._lock:
            self._backends.pop(spec, None)
            self._failures[spec] = BackendUnavailable(
                spec, f"it failed during use ({reason})",
                "check the device and its driver, then restart the program")

    def best(self, cands: Iterable[BackendCandidate], what: str) -> Backend:
        ordered = sorted(cands, key=lambda c: -c.priority)
        reasons, fixes = [], []
        for cand in ordered:
            try:
                backend = self.load(cand)
            except BackendUnavailable as exc:
                reasons.append(f"{cand.spec}: {exc.reason}")
                if exc.fix and exc.fix not in fixes:
                    fixes.append(exc.fix)
                continue
            if reasons and tuple(reasons) not in self._warned:
                self._warned.add(tuple(reasons))  # once per situation, not on every call
                warnings.warn(f"clnet: using backend {backend.spec!r}; skipped "
                              + "; ".join(reasons), RuntimeWarning, stacklevel=4)
            return backend
        detail = "; ".join(reasons) if reasons else "no backend is registered"
        # The failures' own fixes when there are some: the generic hint only without any.
        fix = "; ".join(fixes) if fixes else ("run 'python -m clnet info' to see every backend and why it "
                                              "cannot run; is clnet installed (pip install .)?")
        raise BackendUnavailable(what, detail, fix)

    def _resolve(self, spec: str):
        """``(all candidates of the provider spec names, those its selector picks, or None
        without a selector)``; unknown providers and malformed specs raise here."""
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(f"backend spec must be a non-empty string such as 'numpy', 'opencl' or "
                             f"'opencl:0:0', got {spec!r}")
        spec = spec.strip()
        name, _, selector = spec.partition(":")
        providers = self.providers()
        provider = providers.get(name.lower())
        if provider is None:
            if name.lower() in self._load_errors:
                raise BackendUnavailable(spec, f"its plugin failed to load ({self._load_errors[name.lower()]})",
                                         "reinstall the package that provides it")
            known = ", ".join(sorted(providers)) or "none"
            raise ValueError(f"unknown backend {spec!r}; registered backends: {known}. "
                             f"Spec strings look like 'numpy', 'opencl' or 'opencl:P:D'")
        cands = provider.candidates()
        if not selector:
            return cands, None
        matcher = getattr(provider, "match", None)
        return cands, (matcher(selector, cands) if matcher else [c for c in cands if c.spec == spec])

    def specs_matching(self, spec: str) -> List[str]:
        """Every candidate spec that ``spec`` names: all of a provider's for ``"opencl"``,
        those whose platform (and device) match for ``"opencl:P"`` / ``"opencl:P:D"``."""
        cands, chosen = self._resolve(spec)
        return [c.spec for c in (cands if chosen is None else chosen)]

    def select(self, spec: str) -> Backend:
        if isinstance(spec, str):
            hit = self._backends.get(self._selected.get(spec))
            if hit is not None:
                return hit
        cands, chosen = self._resolve(spec)
        if chosen is None:
            backend = self.best(cands, spec.strip())
        elif not chosen:
            listed = ", ".join(c.spec for c in cands) or "none"
            raise ValueError(f"backend spec {spec.strip()!r} matches no device; available: {listed}")
        else:
            # An explicitly named device must work: no silent fallback to another one.
            backend = self.load(chosen[0])
        with self._lock:
            self._selected[spec] = next((k for k, v in self._backends.items() if v is backend), None)
        return backend


def _check_contract(obj) -> None:
    """Refuse a backend (or the class a candidate loads) that implements a family in part."""
    from .contract import ContractError, check_backend

    target = getattr(obj, "load", obj)
    if isinstance(obj, BackendCandidate) and not isinstance(target, type):
        return  # a factory: checked once it has made the backend
    try:
        check_backend(target)
    except ContractError as exc:
        spec = obj.spec if isinstance(obj, (Backend, BackendCandidate)) else str(target)
        raise BackendUnavailable(spec, str(exc), "complete the family or stop inheriting it") from None


def _entry_points():
    eps = metadata.entry_points()
    if hasattr(eps, "select"):
        return list(eps.select(group=ENTRY_POINT_GROUP))
    return list(eps.get(ENTRY_POINT_GROUP, []))  # Python < 3.10


_registry = _Registry()
_context: contextvars.ContextVar = contextvars.ContextVar("clnet_backend", default=None)


def backends() -> List[BackendInfo]:
    """Every registered backend and OpenCL device: spec, usable or not, and why not."""
    return _registry.info()


def release_memory() -> None:
    """Free the scratch and output buffers every loaded backend keeps between calls.

    OpenCL keeps workspaces of at most 32 MiB each and 128 MiB per device between calls
    (larger ones are freed after their call already), and up to 128 MiB of the buffers of
    recordings that have run backwards, for the next ``record_sequence``; this frees those too, e.g. before
    a long phase that does not use clnet. Weights and inputs a user's object (a cell, a
    population) uploaded stay with that object and go when it does.
    """
    with _registry._lock:
        loaded = list(_registry._backends.values())
    for backend in loaded:
        if not backend.inherited_by_fork:
            backend.release_memory()


def notes() -> List[str]:
    """Hints about this machine from the backend providers (e.g. an NVIDIA GPU without its
    OpenCL platform), shown by ``python -m clnet info``."""
    return _registry.notes()


def specs_matching(spec: str) -> List[str]:
    """The specs of every device ``spec`` selects (``"opencl"``: all OpenCL devices), usable or
    not: the way ``CLNET_TEST`` picks the backends the test suite runs on."""
    return _registry.specs_matching(spec)


def register_provider(provider, *, replace: bool = False) -> None:
    """Register a backend provider at run time (entry points are the usual way)."""
    _registry.register(provider, replace=replace)


def unregister_provider(name: str) -> None:
    _registry.unregister(name)


BackendLike = Union[None, str, Backend]


def get_backend(spec: BackendLike = None) -> Backend:
    """Resolve a backend: argument, then :func:`use_backend`, then ``CLNET_BACKEND``, then the best usable one."""
    if isinstance(spec, Backend):
        return spec
    if spec is not None:
        return _registry.select(spec)
    ctx = _context.get()
    if ctx is not None:
        return ctx if isinstance(ctx, Backend) else _registry.select(ctx)
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        try:
            return _registry.select(env)
        except BackendUnavailable as exc:
            raise BackendUnavailable(exc.spec, f"{exc.reason} (selected by the environment variable "
                                               f"{ENV_VAR}={env!r})", exc.fix) from None
        except ValueError as exc:
            raise ValueError(f"the environment variable {ENV_VAR}={env!r} names no usable backend: {exc}; "
                             f"unset it or 'python -m clnet info' lists the specs") from None
    return _registry.best(_registry.candidates(), "automatic selection")


def call(spec: BackendLike, operation: str, *args, stateless: bool = True):
    """Run the backend operation ``operation(*args)``: the one path from the public API to
    a backend (see :func:`run`)."""
    return run(spec, operation, lambda backend: backend.op(operation)(*args), stateless=stateless)


def run(spec: BackendLike, operation: str, work: Callable[[Backend], T], *, stateless: bool = True) -> T:
    """Resolve ``spec`` and run ``work(backend)``, where ``work`` calls backend operations.

    A driver's error (pyopencl's, or any backend's: :meth:`Backend.translate_error`) comes
    out as :class:`DeviceError` or MemoryError naming the device and ``operation``. When
    the backend was chosen automatically (no argument, no :func:`use_backend`, no
    ``CLNET_BACKEND``) and ``stateless`` is true, a device failure takes the device out of
    automatic selection and ``work`` reruns on the next usable backend, with a warning; a
    backend the user named fails loudly instead. ``work`` returns nothing partial: it
    either finishes or raises. Operations on state that lives on one backend (a
    :class:`clnet.RecurrentState`) pass ``stateless=False``.
    """
    automatic = stateless and _is_automatic(spec)
    backend = get_backend(spec)
    try:
        try:
            if backend.inherited_by_fork:
                raise DeviceError(f"backend {backend.spec!r} cannot run {operation} here: "
                                  f"{backend.inherited_by_fork}")
            try:
                return work(backend)
            except BaseException:
                # while the traceback still holds the operation's arrays alive
                backend.quiesce()
                raise
        except DeviceError:
            raise
        except Exception as exc:
            translated = backend.translate_error(exc, operation)
            if translated is None:
                raise
            raise translated from exc
    except DeviceError as exc:
        if not automatic:
            raise
        _registry.mark_failed(backend.spec, str(exc))
        fallback = get_backend(None)
        warnings.warn(f"clnet: backend {backend.spec!r} failed during {operation} ({exc}); "
                      f"falling back to {fallback.spec!r}", RuntimeWarning, stacklevel=3)
        return run(None, operation, work, stateless=stateless)


def _is_automatic(spec) -> bool:
    return spec is None and _context.get() is None and not os.environ.get(ENV_VAR, "").strip()


@contextlib.contextmanager
def use_backend(spec: BackendLike) -> Iterator[Backend]:
    """Make ``spec`` the default backend inside a ``with`` block (thread- and task-local)."""
    if spec is None:
        raise ValueError("use_backend needs a backend spec such as 'numpy' or 'opencl'")
    backend = get_backend(spec)
    token = _context.set(backend)
    try:
        yield backend
    finally:
        _context.reset(token)
