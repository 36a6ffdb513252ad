"""The backend interface: a small synchronous key -> bytes store.

Keys are ``/``-separated strings relative to the store root (``config``,
``objects/ab/cdef...``, ``refs/experiments/x/trials/1``). Backends know nothing of objects,
digests or refs; :class:`store.Store` builds those on top. A backend must be usable from
several processes at once; each method documents what is atomic.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Union

#: What ``put`` accepts: one bytes-like object, or several written one after the other
#: (so large encoded values are written without being joined into one buffer first).
Buffers = Union[bytes, bytearray, memoryview, Sequence[Union[bytes, bytearray, memoryview]]]


@dataclass(frozen=True)
class KeyInfo:
    """Size in bytes and modification time (seconds since the epoch) of a key or temp file."""

    key: str
    size: int
    mtime: float


class Backend(abc.ABC):
    """Abstract key/value backend. Subclasses: LocalBackend, MemoryBackend, FsspecBackend."""

    #: ``put_if_absent`` is atomic across processes (exactly one of N racing writers wins).
    atomic_put_if_absent: bool = True
    #: ``swap`` is atomic across processes (compare-and-swap under an exclusive lock).
    atomic_swap: bool = True
    #: Opened read-only: every write raises :class:`store.errors.ReadOnlyStore`.
    read_only: bool = False

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Where this backend lives, as a path or URL a user would recognise."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes | bytearray | memoryview:
        """Return the whole value of ``key``; raise ``KeyNotFound`` if absent."""

    @abc.abstractmethod
    def head(self, key: str, n: int) -> bytes:
        """Return at most the first ``n`` bytes of ``key``; raise ``KeyNotFound`` if absent."""

    @abc.abstractmethod
    def put(self, key: str, data: Buffers) -> None:
        """Write ``key``, replacing any old value. Atomic: readers see the old or the new
        value, never a mixture, and a crash leaves at worst an orphan temp file."""

    @abc.abstractmethod
    def put_if_absent(self, key: str, data: Buffers) -> bool:
        """Write ``key`` only if it does not exist; return whether this call created it."""

    @abc.abstractmethod
    def swap(self, key: str, expected: bytes | None, new: bytes | None) -> bool:
        """Compare-and-swap: if the current value equals ``expected`` (``None``: absent),
        replace it with ``new`` (``None``: delete) and return True; else change nothing and
        return False."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""

    @abc.abstractmethod
    def delete(self, key: str, missing_ok: bool = False) -> None:
        """Remove ``key``; raise ``KeyNotFound`` if absent unless ``missing_ok``."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key that starts with ``prefix`` (temp files excluded), in no set order."""

    @abc.abstractmethod
    def stat(self, key: str) -> KeyInfo:
        """Size and modification time of ``key``; raise ``KeyNotFound`` if absent."""

    @abc.abstractmethod
    def list_temp(self) -> Iterator[KeyInfo]:
        """Yield leftover temp files (from writes in progress or killed writers)."""

    @abc.abstractmethod
    def delete_temp(self, name: str) -> None:
        """Remove one temp file named by ``list_temp``; a missing one is not an error."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (threads, connections). The default does nothing."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
