"""An in-process backend over a dict: fast, for tests, and the model the others are checked
against. Every operation runs under one lock, so each is atomic with respect to every thread
of the process; nothing is shared with other processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator

from ..errors import KeyNotFound, ReadOnlyStore
from .base import (
    RESERVED_TOP_LEVEL,
    Backend,
    Buffers,
    KeyInfo,
    as_views,
    validate_key,
    validate_prefix,
    validate_temp_name,
)


class _Shared:
    """The data several views of one memory store share: values, mtimes and the lock."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.mtimes: dict[str, float] = {}
        #: keys by the part before their last "/": a listing looks at the folders it covers,
        #: not at every key (a store of 100,000 trials holds ~400,000)
        self.folders: dict[str, set[str]] = {}
        self.lock = threading.Lock()

    def set(self, key: str, value: bytes) -> None:
        """Store ``value`` at ``key`` (under the lock)."""
        if key not in self.values:
            self.folders.setdefault(key.rpartition("/")[0], set()).add(key)
        self.values[key] = value
        self.mtimes[key] = time.time()

    def pop(self, key: str) -> bytes | None:
        """Remove ``key``; its value, None if it was absent (under the lock)."""
        value = self.values.pop(key, None)
        self.mtimes.pop(key, None)
        if value is not None:
            folder = key.rpartition("/")[0]
            keys = self.folders[folder]
            keys.discard(key)
            if not keys:
                del self.folders[folder]
        return value

    def keys_under(self, prefix: str) -> list[str]:
        """The keys starting with ``prefix`` (under the lock)."""
        found: list[str] = []
        for folder, keys in self.folders.items():
            if (folder + "/").startswith(prefix):
                found.extend(keys)
            elif prefix.startswith(folder + "/") or not folder:
                found.extend(k for k in keys if k.startswith(prefix))
        return found


#: The data of named memory stores (``memory://name``), for the life of the process.
_NAMED: dict[str, _Shared] = {}
_NAMED_LOCK = threading.Lock()


class MemoryBackend(Backend):
    """Keys in a dict in this process. ``view(read_only=True)`` gives a read-only handle on
    the same data (as reopening a local store read-only would). ``MemoryBackend.named(name)``
    (what ``daskperiment_store.open("memory://name")`` uses) reaches the same data for the same name
    anywhere in the process, for as long as it runs."""

    def __init__(
        self, read_only: bool = False, *, _shared: _Shared | None = None, _name: str = ""
    ) -> None:
        self._shared = _shared or _Shared()
        self._name = _name
        self.read_only = read_only

    @classmethod
    def named(cls, name: str, read_only: bool = False) -> MemoryBackend:
        """The memory store called ``name`` in this process (created empty on first use)."""
        with _NAMED_LOCK:
            shared = _NAMED.setdefault(name, _Shared())
        return cls(read_only, _shared=shared, _name=name)

    def __reduce__(self) -> tuple[object, ...]:
        # A named store pickles by name (another process then reaches its own store of that
        # name, as with any memory:// URL); an unnamed one holds a lock and cannot travel.
        if not self._name:
            raise TypeError("an unnamed MemoryBackend cannot be pickled; use memory://name")
        return (MemoryBackend.named, (self._name, self.read_only))

    @property
    def url(self) -> str:
        if self._name:
            return f"memory://{self._name}"
        return f"memory-backend:{id(self._shared):x}"

    def view(self, read_only: bool = True) -> MemoryBackend:
        """Another backend on the same data, e.g. read-only."""
        return MemoryBackend(read_only, _shared=self._shared, _name=self._name)

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStore(self.url, "it was opened with read_only=True")

    @staticmethod
    def _join(data: Buffers) -> bytes:
        return b"".join(as_views(data))  # a private copy: later changes to data don't leak in

    def get(self, key: str) -> bytes:
        validate_key(key)
        try:
            return self._shared.values[key]
        except KeyError:
            raise KeyNotFound(key, self.url) from None

    def head(self, key: str, n: int) -> bytes:
        return self.get(key)[: max(n, 0)]

    def put(self, key: str, data: Buffers) -> None:
        validate_key(key)
        self._check_writable()
        value = self._join(data)
        with self._shared.lock:
            self._shared.set(key, value)

    def put_if_absent(self, key: str, data: Buffers) -> bool:
        validate_key(key)
        self._check_writable()
        if key in self._shared.values:
            return False
        value = self._join(data)
        with self._shared.lock:
            if key in self._shared.values:
                return False
            self._shared.set(key, value)
            return True

    def swap(self, key: str, expected: bytes | None, new: bytes | None) -> bool:
        validate_key(key)
        self._check_writable()
        value = None if new is None else self._join(new)
        with self._shared.lock:
            if self._shared.values.get(key) != expected:
                return False
            if value is None:
                self._shared.pop(key)
            else:
                self._shared.set(key, value)
            return True

    def exists(self, key: str) -> bool:
        validate_key(key)
        return key in self._shared.values

    def delete(self, key: str, missing_ok: bool = False) -> None:
        validate_key(key)
        self._check_writable()
        with self._shared.lock:
            if self._shared.pop(key) is None and not missing_ok:
                raise KeyNotFound(key, self.url)

    def touch(self, key: str) -> None:
        validate_key(key)
        self._check_writable()
        with self._shared.lock:
            if key not in self._shared.values:
                raise KeyNotFound(key, self.url)
            self._shared.mtimes[key] = time.time()

    def list(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        if prefix.partition("/")[1] and prefix.partition("/")[0] in RESERVED_TOP_LEVEL:
            return iter(())
        with self._shared.lock:
            keys = self._shared.keys_under(prefix)
        return iter(keys)

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes | bytearray | memoryview]:
        values = self._shared.values
        return {k: values[k] for k in keys if validate_key(k) and k in values}

    def stat(self, key: str) -> KeyInfo:
        validate_key(key)
        with self._shared.lock:
            try:
                return KeyInfo(key, len(self._shared.values[key]), self._shared.mtimes[key])
            except KeyError:
                raise KeyNotFound(key, self.url) from None

    def list_temp(self) -> Iterator[KeyInfo]:
        """Nothing: a memory write is a single dict assignment and leaves no temp file."""
        return iter(())

    def delete_temp(self, name: str) -> None:
        validate_temp_name(name)
        self._check_writable()
