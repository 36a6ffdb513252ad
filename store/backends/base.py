"""The backend interface: a small synchronous key -> bytes store.

Keys are ``/``-separated strings relative to the store root (``config``,
``objects/ab/cdef...``, ``refs/experiments/x/trials/1``). Backends know nothing of objects,
digests or refs; :class:`store.Store` builds those on top. A backend must be usable from
several processes at once; each method documents what is atomic.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from ..errors import InvalidKey, KeyNotFound

#: What ``put`` accepts: one bytes-like object, or several written one after the other
#: (so large encoded values are written without being joined into one buffer first).
Buffers = bytes | bytearray | memoryview | Sequence[bytes | bytearray | memoryview]


#: First key components a backend keeps for itself (temp files, lock files); never valid keys.
RESERVED_TOP_LEVEL = frozenset({"tmp", "locks"})


def validate_key(key: object) -> str:
    """Return ``key`` if it is a well-formed backend key, else raise :class:`InvalidKey`.

    A key is a non-empty ``/``-separated relative path: no leading or trailing ``/``, no empty,
    ``.`` or ``..`` components, no backslash, NUL or other control character, and a first
    component other than the reserved ``tmp`` and ``locks``. Every backend validates keys
    before touching storage, so no key can ever name a path outside the store's root.
    """
    if not isinstance(key, str):
        raise InvalidKey(key, f"keys are str, not {type(key).__name__}")
    reason = _key_problem(key)
    if reason:
        raise InvalidKey(key, reason)
    if key.partition("/")[0] in RESERVED_TOP_LEVEL:
        raise InvalidKey(key, f"{key.partition('/')[0]!r} is reserved for the backend's own files")
    return key


_BAD_CHAR = re.compile(r"[\x00-\x1f\x7f\\]")


def _key_problem(key: str) -> str:
    if not key:
        return "empty"
    if key.startswith("/"):
        return "absolute (starts with '/')"
    if key.endswith("/"):
        return "ends with '/'"
    bad = _BAD_CHAR.search(key)
    if bad:
        ch = bad.group()
        return "contains a backslash" if ch == "\\" else f"contains the control character {ch!r}"
    if "//" in key:
        return "has an empty component ('//')"
    for part in key.split("/"):
        if part in (".", ".."):
            return f"has a {part!r} component"
    return ""


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it can start a key (``""``, ``"refs/"``, ``"refs/experiments/x/tr"``).

    Same rules as :func:`validate_key` except that it may be empty or end with ``/``.
    """
    if not isinstance(prefix, str):
        raise InvalidKey(prefix, f"prefixes are str, not {type(prefix).__name__}")
    body = prefix[:-1] if prefix.endswith("/") else prefix
    reason = _key_problem(body) if body else ""
    if reason:
        raise InvalidKey(prefix, reason)
    return prefix


def validate_temp_name(name: object) -> str:
    """Return ``name`` if it can be a temp file's name (one path component), else raise
    :class:`InvalidKey`: ``delete_temp`` must never remove anything outside the temp area."""
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise InvalidKey(name, "not a temp file name (one path component, as list_temp gives)")
    reason = _key_problem(name)
    if reason:
        raise InvalidKey(name, reason)
    return name


def as_views(data: Buffers) -> list[memoryview]:
    """``data`` as a list of flat byte views (no copies), whatever bytes-like shape it came in."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        parts: Iterable = (data,)
    elif isinstance(data, str):
        raise TypeError("backends store bytes; encode str values first")
    else:
        parts = data
    views = []
    for part in parts:
        view = memoryview(part)
        if view.ndim != 1 or view.itemsize != 1:
            # cast() refuses non-contiguous buffers, which is right: they cannot be written
            # in one piece without a copy the caller should make knowingly.
            view = view.cast("B")
        views.append(view)
    return views


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

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes | bytearray | memoryview]:
        """Values of several keys at once; keys that do not exist are left out.

        The default reads one key after the other; remote backends override it to fetch
        concurrently (listing 10,000 refs on S3 is then not 10,000 round trips in a row).
        """
        out: dict[str, bytes | bytearray | memoryview] = {}
        for key in keys:
            try:
                out[key] = self.get(key)
            except KeyNotFound:
                continue
        return out

    def touch(self, key: str) -> None:  # noqa: B027 - optional hook
        """Set ``key``'s modification time to now (so ``gc``'s grace period counts from the
        latest writer that found it already present). The default does nothing."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (threads, connections). The default does nothing."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
