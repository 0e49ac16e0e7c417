"""One way to keep a backend's copies of host objects: :class:`DeviceCache`.

Populations, layered networks, a cell's weights and a backend's workspaces all hold a
``DeviceCache``. A backend asks it for the copy it made earlier under a key of its own
choosing (``cache.get(backend, key, make)``); the first call makes it. Entries are
per backend and vanish with the backend (weak references), so one object can be used
on several devices at once, and an id() reused by a new backend can never return a
stale copy. Whoever changes the host object calls :meth:`DeviceCache.clear`.
"""
from __future__ import annotations

import threading
import weakref
from typing import Callable, Hashable, Optional, TypeVar

T = TypeVar("T")


class DeviceCache:
    """Copies made by backends, keyed first by the backend object, then by a key."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_backend: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def get(self, backend, key: Hashable, make: Callable[[], T],
            fits: Optional[Callable[[T], bool]] = None) -> T:
        """The copy ``backend`` stored under ``key``; made by ``make()`` when missing, or
        when ``fits`` says the stored one no longer serves (a workspace too small). The
        stored entry is dropped before ``make`` runs, so its memory can be reused."""
        with self._lock:
            entries = self._by_backend.setdefault(backend, {})
            value = entries.get(key)
            if value is not None and (fits is None or fits(value)):
                return value
            entries.pop(key, None)
        value = make()
        with self._lock:
            self._by_backend.setdefault(backend, {})[key] = value
        return value

    def peek(self, backend, key: Hashable):
        """The copy ``backend`` stored under ``key``, or None; never makes one."""
        with self._lock:
            return self._by_backend.get(backend, {}).get(key)

    def discard(self, backend, key: Hashable) -> None:
        """Forget one copy (its memory is freed with its last reference)."""
        with self._lock:
            self._by_backend.get(backend, {}).pop(key, None)

    def total(self, backend, size: Callable[[T], int]) -> int:
        """The sum of ``size(copy)`` over the copies ``backend`` stored."""
        with self._lock:
            return sum(size(v) for v in self._by_backend.get(backend, {}).values())

    def __reduce__(self):
        # Device copies belong to this process's backends: a pickled host object (a cell,
        # a population) arrives with an empty cache and uploads again where it is used.
        return (DeviceCache, ())

    def clear(self) -> None:
        """Forget every copy (the host object changed)."""
        with self._lock:
            self._by_backend.clear()

    def __len__(self) -> int:
        with self._lock:
            return sum(len(e) for e in self._by_backend.values())

    def __repr__(self) -> str:
        return f"<DeviceCache of {len(self)} copies>"

    # A copy lives on the device of one process: pickling or copying the host object that
    # holds this cache (to ship it to a Dask worker, say) gives it a new, empty cache, and
    # each backend on the receiving side uploads its own copies on first use.
    def __reduce__(self):
        return (DeviceCache, ())

    def __deepcopy__(self, memo) -> "DeviceCache":
        return DeviceCache()

    def __copy__(self) -> "DeviceCache":
        return DeviceCache()
