"""The backend interface: a small synchronous key -> bytes store.

Keys are ``/``-separated strings relative to the store root (``config``,
``objects/ab/cdef...``, ``refs/experiments/x/trials/1``). Backends know nothing of objects,
digests or refs; :class:`daskperiment_store.Store` builds those on top. A backend must be usable from
several processes at once; each method documents what is atomic.
"""

from __future__ import annotations

import abc
import errno
import hashlib
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from ..errors import InvalidKey, KeyNotFound

#: What ``put`` accepts: one bytes-like object, or several written one after the other
#: (so large encoded values are written without being joined into one buffer first).
Buffers = bytes | bytearray | memoryview | Sequence[bytes | bytearray | memoryview]


#: First key components a backend keeps for itself (temp files, lock files); never valid keys.
RESERVED_TOP_LEVEL = frozenset({"tmp", "locks"})


#: OS errors that mean "this location refuses writes" (turned into ReadOnlyStore).
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def key_is_a_prefix(key: str) -> InvalidKey:
    """The error for writing ``key`` where a directory (a prefix of other keys) stands, or
    under a path that is a value: the same on every filesystem backend."""
    return InvalidKey(key, "a key cannot be both a value and a prefix of other keys")


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


#: Keys made only of these characters break no rule below: one match for the common case.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-]+)*\Z")


def _key_problem(key: str) -> str:
    return "" if _PLAIN_KEY.match(key) else _any_key_problem(key)


def _any_key_problem(key: str) -> str:
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


class KeyInfo(NamedTuple):
    """Size in bytes and modification time (seconds since the epoch) of a key or temp file
    (a named tuple: cheaper to define than a frozen data class, see objfile.Header)."""

    key: str
    size: int
    mtime: float


class Backend(abc.ABC):
    """Abstract key/value backend. Subclasses: LocalBackend, MemoryBackend, FsspecBackend."""

    #: ``put_if_absent`` is atomic across processes (exactly one of N racing writers wins).
    atomic_put_if_absent: bool = True
    #: ``swap`` is atomic across processes (compare-and-swap under an exclusive lock).
    atomic_swap: bool = True
    #: Opened read-only: every write raises :class:`daskperiment_store.errors.ReadOnlyStore`.
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

    def put_new(self, key: str, data: Buffers) -> bool:
        """``put_if_absent`` of a key the caller expects not to exist (a value that holds its
        own time of writing): the same result, where a backend may skip a check that only
        saves rewriting an existing key."""
        return self.put_if_absent(key, data)

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

    def list_values(self, prefix: str = "") -> dict[str, bytes | bytearray | memoryview]:
        """``{key: value}`` for every key starting with ``prefix``, in no set order.

        A key deleted between the listing and the reading of its value is left out. The
        default lists, then calls :meth:`get_many`; a remote backend overrides it to save
        round trips (S3 takes the values it already knows from the listing's ETags).
        """
        return self.get_many(self.list(prefix))

    def touch(self, key: str) -> None:  # noqa: B027 - optional hook
        """Set ``key``'s modification time to now (so ``gc``'s grace period counts from the
        latest writer that found it already present). The default does nothing."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (threads, connections). The default does nothing."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class RecentValues:
    """Small values (refs) this process has read or written through any backend, findable by
    their MD5 digest; thread-safe, bounded (the oldest half is forgotten when full).

    S3 lists every key with its ETag, which for a value written by one plain PUT is the MD5 of
    the value. A listed key whose ETag and size match a value remembered here holds that
    value, so listing refs needs no GET for the values this process has already seen, on
    this store or another one (pushing refs read from a local store to S3 checks them against
    the destination's listing alone). Only the digest and size are trusted, never the key:
    a value cannot be mistaken for another one unless two values collide in MD5 with the
    same size.
    """

    def __init__(self, max_count: int = 1 << 15, max_size: int = 64) -> None:
        self.max_count = max_count
        self.max_size = max_size
        # value -> its MD5 hex digest, or "" until a lookup needs it (hashing is deferred
        # so that remembering values costs next to nothing on stores that never look up).
        self._values: dict[bytes, str] = {}
        self._by_md5: dict[str, bytes] = {}
        self._unhashed: list[bytes] = []
        self._lock = threading.Lock()

    def add(self, values: Iterable[bytes]) -> None:
        """Remember ``values`` (those longer than ``max_size`` bytes are ignored)."""
        new = [v for v in values if len(v) <= self.max_size and v not in self._values]
        if not new:
            return
        with self._lock:
            for value in new:
                if value not in self._values:
                    self._values[value] = ""
                    self._unhashed.append(value)
            if len(self._values) > self.max_count:
                self._forget_oldest()

    def find_md5(self, digest: str, size: int) -> bytes | None:
        """The remembered value of ``size`` bytes whose MD5 hex digest is ``digest``."""
        if self._unhashed:
            self._hash_pending()
        value = self._by_md5.get(digest)
        return value if value is not None and len(value) == size else None

    def clear(self) -> None:
        """Forget every value."""
        with self._lock:
            self._values, self._by_md5, self._unhashed = {}, {}, []

    def __len__(self) -> int:
        return len(self._values)

    def _hash_pending(self) -> None:
        with self._lock:
            for value in self._unhashed:
                if value in self._values:
                    digest = hashlib.md5(value, usedforsecurity=False).hexdigest()
                    self._values[value] = digest
                    self._by_md5[digest] = value
            self._unhashed = []

    def _forget_oldest(self) -> None:
        # dicts keep insertion order: the first half holds the values remembered longest ago.
        kept = list(self._values.items())[len(self._values) // 2 :]
        self._values = dict(kept)
        self._by_md5 = {digest: value for value, digest in kept if digest}
        self._unhashed = [value for value, digest in kept if not digest]


#: The process-wide :class:`RecentValues`: fed by :class:`daskperiment_store.refs.RefStore` with every ref
#: value it reads or writes, consulted by backends whose listings carry content digests.
RECENT_VALUES = RecentValues()
