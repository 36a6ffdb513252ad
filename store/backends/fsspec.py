"""A backend over any fsspec filesystem: ``file://`` and others; S3 in :mod:`daskperiment_store.backends.s3`.

Keys are paths under ``root`` on the filesystem. How each operation is made atomic depends on
the filesystem, and this backend says so rather than racing silently:

=================  ================================  ================================
filesystem          ``put``                           ``put_if_absent``, ``swap``
=================  ================================  ================================
file:// (local)     temp file in ``tmp/`` +           under a lock object (below)
                    rename: atomic
other filesystems   temp file + ``fs.mv``: atomic     lock object, only with
                    only where ``mv`` is a rename     ``trust_exclusive_create=True``;
                                                      otherwise raises ``NotAtomic``
=================  ================================  ================================

``FsspecBackend("s3://...")`` makes an :class:`daskperiment_store.backends.s3.S3Backend` (conditional
writes, no locks), and ``FsspecBackend("memory://name")`` the
:class:`daskperiment_store.backends.memory.MemoryBackend` of that name: one in-memory mechanism.

**Lock objects**: ``locks/<xx>.lock`` is created with exclusive create (``open(path, "xb")``,
``O_EXCL`` locally) holding the owner (host, pid, random token) and time; the holder re-reads
the key under the lock, writes (temp + rename) and removes the lock if it still holds its own
token. A lock whose content has not changed for ``stale_lock_after`` seconds (default 30,
measured by the waiting process's own clock, so clock skew between machines does not matter)
is taken to belong to a dead process and is removed. This assumes a live holder never keeps a
lock that long (it holds it for one read and one small write); on a filesystem so slow that it
might, raise ``stale_lock_after``.

``durability="fsync"`` fsyncs temp files where the file object has a real descriptor (local).
Listings are re-read on every call (fsspec's per-instance listing cache is invalidated first),
since other processes change the store. A write never recreates a removed root directory
(:class:`daskperiment_store.errors.StoreGone`).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import xxhash

from ..errors import (
    KeyNotFound,
    LockTimeout,
    NotAtomic,
    ReadOnlyStore,
    StoreGone,
    StoreNotFound,
)
from .base import (
    READ_ONLY_ERRNOS,
    RESERVED_TOP_LEVEL,
    Backend,
    Buffers,
    KeyInfo,
    as_views,
    key_is_a_prefix,
    validate_key,
    validate_prefix,
    validate_temp_name,
)

# Spelled out here because inside the class body "list" names the method.
_Views = list[memoryview]


#: Backend classes of URL schemes (and filesystem protocols) that need their own, registered
#: by their modules (store.backends.s3 registers "s3" and "s3a"), so this module imports none.
SCHEMES: dict[str, type[FsspecBackend]] = {}


class FsspecBackend(Backend):
    """Keys as files on an fsspec filesystem (see the module docstring for atomicity).

    ``url_or_fs`` is a URL (``"s3://bucket/store"``, ``"file:///data/s"``) whose options come
    from ``storage_options`` and any extra keyword arguments, or an fsspec filesystem instance
    with ``root`` the store's path on it (for a URL, ``root`` is appended). An S3 URL or
    filesystem makes an :class:`daskperiment_store.backends.s3.S3Backend`; a ``memory://name`` URL the
    :class:`daskperiment_store.backends.memory.MemoryBackend` of that name (one in-memory mechanism).
    """

    def __new__(cls, url_or_fs: Any = None, *args: Any, **kwargs: Any) -> Any:
        if cls is FsspecBackend and _is_memory(url_or_fs):
            from .memory import MemoryBackend

            name = url_or_fs.split("://", 1)[1].strip("/")
            return MemoryBackend.named(name, read_only=kwargs.get("read_only", False))
        special = SCHEMES.get(_scheme(url_or_fs)) if cls is FsspecBackend else None
        return super().__new__(special or cls)

    def __init__(
        self,
        url_or_fs: Any,
        root: str | None = None,
        *,
        read_only: bool = False,
        durability: str = "atomic",
        create: bool = True,
        storage_options: dict[str, Any] | None = None,
        lock_timeout: float = 60.0,
        stale_lock_after: float = 30.0,
        trust_exclusive_create: bool = False,
        **more_storage_options: Any,
    ) -> None:
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        if durability not in ("atomic", "fsync"):
            raise ValueError(f"durability must be 'atomic' or 'fsync', not {durability!r}")
        if isinstance(url_or_fs, str):
            options = self._options({**(storage_options or {}), **more_storage_options})
            fs, path = fsspec.core.url_to_fs(url_or_fs, **options)
            if root:
                path = path.rstrip("/") + "/" + root.strip("/")
            self._url = url_or_fs.rstrip("/") + ("/" + root.strip("/") if root else "")
        else:
            fs, path = url_or_fs, url_or_fs._strip_protocol(root or "")
            self._url = f"{_protocols(fs)[0]}://{path}"
        self.fs = fs
        self.root = path.rstrip("/")
        self._prefix = self.root + "/"
        self.read_only = read_only
        self.durability = durability
        self.lock_timeout = lock_timeout
        self.stale_lock_after = stale_lock_after
        self._local = isinstance(fs, LocalFileSystem)
        self._trust_excl = trust_exclusive_create or self._local
        self._open_root(create)

    def _open_root(self, create: bool) -> None:
        if self.fs.isdir(self.root):
            return
        if not create or self.read_only:
            raise StoreNotFound(self._url)
        with self._writing("", "the store directory"):
            self.fs.makedirs(self.root, exist_ok=True)

    @staticmethod
    def _options(options: dict[str, Any]) -> dict[str, Any]:
        """The filesystem options to use for a URL (S3 adds its own defaults)."""
        return options

    @property
    def url(self) -> str:
        return self._url

    @property
    def atomic_put_if_absent(self) -> bool:  # type: ignore[override]
        return self._atomic()

    @property
    def atomic_swap(self) -> bool:  # type: ignore[override]
        return self._atomic()

    def _atomic(self) -> bool:
        return self._trust_excl

    # helpers ---------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return self._prefix + validate_key(key)

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStore(self._url, "it was opened with read_only=True")

    def _require_atomic(self, op: str) -> None:
        if not self._atomic():
            raise NotAtomic(f"cannot {op} atomically on {self._url}: {self._not_atomic_why()}")

    def _not_atomic_why(self) -> str:
        return (
            f"{type(self.fs).__name__} is not known to support atomic exclusive create; "
            "pass trust_exclusive_create=True if its open(path, 'xb') is atomic"
        )

    @contextmanager
    def _writing(self, key: str, what: str | None = None) -> Iterator[None]:
        what = what or f"key {key!r}"
        try:
            yield
        except (IsADirectoryError, NotADirectoryError) as exc:
            raise key_is_a_prefix(key) from exc
        except OSError as exc:
            if isinstance(exc, ReadOnlyStore) or not (
                isinstance(exc, PermissionError) or exc.errno in READ_ONLY_ERRNOS
            ):
                raise
            raise ReadOnlyStore(self._url, f"cannot write {what}: {exc}") from exc

    def _fresh(self, path: str) -> None:
        # fsspec caches listings per instance; other processes change the store under us.
        self.fs.invalidate_cache(path)

    # reads -------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return self.fs.cat_file(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyNotFound(key, self._url) from None

    def _get_or_none(self, path: str) -> bytes | None:
        try:
            return self.fs.cat_file(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def head(self, key: str, n: int) -> bytes:
        if n <= 0:
            if not self.exists(key):
                raise KeyNotFound(key, self._url)
            return b""
        path = self._path(key)
        try:
            return self.fs.cat_file(path, start=0, end=n)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyNotFound(key, self._url) from None

    def exists(self, key: str) -> bool:
        path = self._path(key)
        self._fresh(path)
        return self.fs.isfile(path)

    def stat(self, key: str) -> KeyInfo:
        path = self._path(key)
        self._fresh(path)
        try:
            info = self.fs.info(path)
        except (FileNotFoundError, NotADirectoryError):
            raise KeyNotFound(key, self._url) from None
        if info.get("type") != "file":
            raise KeyNotFound(key, self._url)
        return KeyInfo(key, int(info.get("size") or 0), _mtime(info))

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with ``prefix``; only the prefix's directory is listed."""
        return iter(self._listing(prefix))

    def _listing(self, prefix: str) -> dict[str, dict[str, Any]]:
        """``{key: info}`` (fsspec's details: size, and on S3 the ETag) under ``prefix``."""
        validate_prefix(prefix)
        head, _, start = prefix.rpartition("/")
        if head.partition("/")[0] in RESERVED_TOP_LEVEL:
            return {}
        base = self._prefix + head if head else self.root
        self._fresh(base)
        try:
            found = self._find(base, start)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        n = len(self._prefix)
        listed = {p[n:]: info for p, info in found.items() if p.startswith(self._prefix)}
        return {
            k: info
            for k, info in listed.items()
            if k.startswith(prefix) and k.partition("/")[0] not in RESERVED_TOP_LEVEL
        }

    def _find(self, base: str, start: str) -> dict[str, dict[str, Any]]:
        """fsspec's ``find`` of ``base`` (``start``: the key prefix below it, for servers
        that can filter by it)."""
        return self.fs.find(base, detail=True)

    # writes ------------------------------------------------------------------------------

    def put(self, key: str, data: Buffers) -> None:
        """Write ``key``, replacing any old value (atomic: see the module docstring)."""
        path = self._path(key)
        self._check_writable()
        views = as_views(data)
        with self._writing(key):
            self._put_via_temp(path, views)

    def put_if_absent(self, key: str, data: Buffers) -> bool:
        """Write ``key`` unless it exists; return whether this call created it."""
        path = self._path(key)
        self._check_writable()
        self._require_atomic("create a key if absent")
        views = as_views(data)
        if self.exists(key):
            return False  # the common dedup case costs one existence check
        with self._writing(key):
            with self.lock(key):
                self._fresh(path)
                if self.fs.isfile(path):
                    return False
                self._write_unlocked(path, views)
                return True

    def swap(self, key: str, expected: bytes | None, new: bytes | None) -> bool:
        """Compare-and-swap ``key`` (see the module docstring for how, per filesystem)."""
        path = self._path(key)
        self._check_writable()
        self._require_atomic("compare-and-swap")
        with self._writing(key):
            with self.lock(key):
                self._fresh(path)
                if self._get_or_none(path) != expected:
                    return False
                if new is None:
                    if expected is not None:
                        self.fs.rm_file(path)
                        self._prune(path)
                else:
                    self._write_unlocked(path, as_views(new))
                return True

    def delete(self, key: str, missing_ok: bool = False) -> None:
        path = self._path(key)
        self._check_writable()
        if not self.exists(key):
            if missing_ok:
                return
            raise KeyNotFound(key, self._url)
        with self._writing(key):
            try:
                self.fs.rm_file(path)
            except FileNotFoundError:
                if not missing_ok:
                    raise KeyNotFound(key, self._url) from None
            self._prune(path)

    def touch(self, key: str) -> None:
        """Set ``key``'s modification time to now, where the filesystem can."""
        path = self._path(key)
        self._check_writable()
        if not self.exists(key):
            raise KeyNotFound(key, self._url)
        with self._writing(key):
            try:
                self.fs.touch(path, truncate=False)
            except (NotImplementedError, ValueError):
                pass  # the filesystem cannot; gc's grace period then counts from the write

    def _write_unlocked(self, path: str, views: _Views) -> None:
        self._put_via_temp(path, views)

    def _put_via_temp(self, path: str, views: _Views) -> None:
        """Write a temp file under ``tmp/`` and move it into place; remove it on failure."""
        tmp = f"{self._prefix}tmp/{os.getpid()}-{secrets.token_hex(8)}.tmp"
        try:
            try:
                self._write_file(tmp, views)
            except FileNotFoundError:
                self._makedirs(self._prefix + "tmp")
                self._write_file(tmp, views)
            for _ in range(20):
                self._makedirs(path.rpartition("/")[0])
                try:
                    self.fs.mv(tmp, path)
                    return
                except FileNotFoundError:
                    if not self.fs.exists(tmp):
                        raise
                    # a concurrent delete pruned the directory: make it again
            raise FileNotFoundError(f"the directory of {path} kept disappearing")
        except BaseException:
            try:
                self.fs.rm_file(tmp)
            except (FileNotFoundError, OSError):
                pass
            raise

    def _makedirs(self, path: str) -> None:
        """Create a directory below the root; a write never recreates a removed root."""
        self._fresh(self.root)
        if not self.fs.isdir(self.root):
            raise StoreGone(self._url)
        self.fs.makedirs(path, exist_ok=True)

    def _write_file(self, path: str, views: _Views) -> None:
        with self.fs.open(path, "wb") as f:
            for view in views:
                f.write(view)
            if self.durability == "fsync":
                f.flush()
                try:
                    os.fsync(f.fileno())
                except (AttributeError, OSError, NotImplementedError, ValueError):
                    pass  # no real descriptor on this filesystem: nothing to fsync

    def _prune(self, path: str) -> None:
        # Local directories left empty would forbid a later key named like them.
        if not self._local:
            return
        directory = path.rpartition("/")[0]
        while directory.startswith(self._prefix):
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = directory.rpartition("/")[0]

    # lock objects ------------------------------------------------------------------------

    @contextmanager
    def lock(self, key: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock ``swap`` takes for ``key``: a lock object (see the module docstring)."""
        timeout = self.lock_timeout if timeout is None else timeout
        path = f"{self._prefix}locks/{xxhash.xxh64_hexdigest(key.encode('utf-8'))[:2]}.lock"
        token = json.dumps(
            {
                "owner": f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}",
                "key": key,
                "time": time.time(),
            }
        ).encode()
        self._acquire(path, token, key, timeout)
        try:
            yield
        finally:
            self._fresh(path)
            if self._get_or_none(path) == token:
                try:
                    self.fs.rm_file(path)
                except FileNotFoundError:
                    pass

    def _acquire(self, path: str, token: bytes, key: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        seen: bytes | None = None
        seen_since = time.monotonic()
        delay = 0.001
        while True:
            try:
                with self.fs.open(path, "xb") as f:
                    f.write(token)
                return
            except FileExistsError:
                pass
            except FileNotFoundError:
                self._makedirs(path.rpartition("/")[0])
                continue
            self._fresh(path)
            current = self._get_or_none(path)
            now = time.monotonic()
            if current != seen:
                seen, seen_since = current, now
            elif current is not None and now - seen_since >= self.stale_lock_after:
                self._break_lock(path, current)
                continue
            if now >= deadline:
                raise LockTimeout(key, timeout)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.05)

    def _break_lock(self, path: str, stale: bytes) -> None:
        # Remove the lock only if it still is the one seen unchanged for stale_lock_after
        # seconds; a lock taken anew meanwhile carries a different token and is kept.
        self._fresh(path)
        if self._get_or_none(path) == stale:
            try:
                self.fs.rm_file(path)
            except FileNotFoundError:
                pass

    # temp files --------------------------------------------------------------------------

    def list_temp(self) -> Iterator[KeyInfo]:
        """Temp files of interrupted writes."""
        tmp = self._prefix + "tmp"
        self._fresh(tmp)
        try:
            entries = self.fs.ls(tmp, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return iter(())
        return iter(
            KeyInfo(e["name"].rpartition("/")[2], int(e.get("size") or 0), _mtime(e))
            for e in entries
            if e.get("type") == "file"
        )

    def delete_temp(self, name: str) -> None:
        validate_temp_name(name)
        self._check_writable()
        try:
            self.fs.rm_file(f"{self._prefix}tmp/{name}")
        except FileNotFoundError:
            pass


def _is_memory(target: Any) -> bool:
    return isinstance(target, str) and target.startswith("memory://")


def _scheme(target: Any) -> str:
    """The URL scheme of a URL, or the first protocol of a filesystem with its own class."""
    if isinstance(target, str):
        return target.split("://", 1)[0] if "://" in target else ""
    if target is None:
        return ""
    return next((p for p in _protocols(target) if p in SCHEMES), "")


def _protocols(fs: Any) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def _mtime(info: dict[str, Any]) -> float:
    for name in ("mtime", "LastModified", "last_modified", "modified", "created"):
        value = info.get(name)
        if value is None:
            continue
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return datetime.fromisoformat(str(value)).timestamp()
        except ValueError:
            continue
    return 0.0
