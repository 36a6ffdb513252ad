"""The local-filesystem backend: one file per key under a root directory.

Layout under the root: every key ``a/b/c`` is the file ``<root>/a/b/c``; ``tmp/`` holds files
being written (``<pid>-<random>.tmp``); ``locks/`` holds the lock files that serialise
compare-and-swap. Keys are validated (:func:`daskperiment_store.backends.base.validate_key`) before they
become paths, so no key names anything outside the root.

What is atomic, and how:

* ``put``: the value is written to a temp file in ``tmp/`` (same filesystem as the target),
  then exchanged with the old file (``renameat2`` ``RENAME_EXCHANGE``, then the temp name,
  now holding the old value, is unlinked) or ``os.replace``-d into place where there is no
  old file or no exchange. Readers see the old or the new file, never a mixture; a writer
  killed half-way leaves only its temp file, which :meth:`LocalBackend.list_temp` reports
  and ``gc`` removes. (Exchanging rather than replacing keeps ext4 from writing the new
  file's data out inside the rename: see :func:`daskperiment_store.backends._osio.exchange`.)
* ``put_if_absent``: the temp file is renamed to the target with ``renameat2``'s
  ``RENAME_NOREPLACE`` (where the kernel and filesystem have it; else hard-linked with
  ``os.link``), which fails with ``EEXIST`` if the target exists: exactly one of any number of
  racing processes wins, and the winner's file appears complete. On a filesystem without hard
  links the create is done under the key's lock instead (still atomic against every other
  writer using this backend).
* ``swap``: compare-and-swap under an exclusive ``fcntl.flock`` on a lock file in ``locks/``.
  ``flock`` locks belong to the open file and the kernel drops them when the process exits,
  however it exits, so a writer killed with SIGKILL while holding the lock cannot wedge a
  ref. (git and dulwich lock with ``O_CREAT|O_EXCL`` ``.lock`` files instead; a killed
  process leaves such a file behind and every later writer fails until someone deletes it.)
  Lock files are never deleted: unlinking a lock file another process is waiting on would let
  two processes hold "the" lock at once. There are at most 256 of them (keys are hashed
  onto them). On NFS, ``flock`` is emulated with POSIX byte-range locks, so it is only sound
  with NFSv4 or NFSv3 with a working lock manager (``lockd``); without either, use one
  machine per store.

Durability: ``"atomic"`` (default) gives the atomicity above; after an OS crash or power
loss a recent write may be missing. ``"fsync"`` also fsyncs each file before it is renamed
into place and the directory after, so a write that returned survives power loss.

Errors: writing to a store opened ``read_only`` raises :class:`daskperiment_store.errors.ReadOnlyStore`,
and so does a filesystem that refuses the write (``EROFS``, ``EACCES``, ``EPERM``). Any other
``OSError`` during a write (``ENOSPC``, ``EDQUOT``, ``EFBIG``, ``EIO``) is re-raised as an
``OSError`` of the same class and errno whose message names the key and the store; the temp
file is removed first, so a failed write never leaves a partial value behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat as stat_mod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import xxhash

from ..errors import (
    InvalidKey,
    KeyNotFound,
    ReadOnlyStore,
    StoreGone,
    StoreNotFound,
)
from . import _kept, _osio
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

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_TMP = "tmp"
_LOCKS = "locks"
# os.link fails with these where the filesystem has no hard links (FAT, some FUSE/SMB mounts).
T = TypeVar("T")

_NO_LINK_ERRNOS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV}
# Reads at least this large go into a page-aligned numpy buffer (see _osio.read_large).
_LARGE_READ = 1 << 18
_O_CLOEXEC = _osio.O_CLOEXEC


class LocalBackend(Backend):
    """Keys as files under ``root`` on the local filesystem (the default, fast backend).

    ``root`` is created (with parents) when ``create`` is true and the store is writable;
    otherwise a missing root raises :class:`daskperiment_store.errors.StoreNotFound`. ``lock_timeout``
    bounds how long ``swap`` waits for another process's lock before raising
    :class:`daskperiment_store.errors.LockTimeout`. See the module docstring for what is atomic.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        read_only: bool = False,
        durability: str = "atomic",
        create: bool = True,
        lock_timeout: float = 60.0,
    ) -> None:
        if durability not in ("atomic", "fsync"):
            raise ValueError(f"durability must be 'atomic' or 'fsync', not {durability!r}")
        self._url = os.fspath(root)
        self.root = os.path.abspath(self._url)
        self.read_only = read_only
        self.durability = durability
        self.lock_timeout = lock_timeout
        self._fsync = durability == "fsync"
        self._root_sep = os.path.join(self.root, "")
        self._tmp_dir = os.path.join(self.root, _TMP)
        self._lock_dir = os.path.join(self.root, _LOCKS)
        self._can_link = True
        self._kept = _kept.KeptTemp(self._tmp_dir)
        self._missing: str | None = None  # the key stat() last found missing
        if not os.path.isdir(self.root):
            if not create or read_only:
                raise StoreNotFound(self._url)
            with self._writing("", "the store directory"):
                self._makedirs(self.root, root_too=True)

    @property
    def url(self) -> str:
        return self._url

    # paths and error translation -------------------------------------------------------

    def _path(self, key: str) -> str:
        return self._root_sep + validate_key(key).replace("/", os.sep)

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStore(self._url, "it was opened with read_only=True")

    @contextmanager
    def _writing(self, key: str, what: str | None = None) -> Iterator[None]:
        """Turn OS refusals into ReadOnlyStore and name the key in other OS errors."""
        what = what or f"key {key!r}"
        try:
            yield
        except (IsADirectoryError, NotADirectoryError) as exc:
            raise key_is_a_prefix(key) from exc
        except OSError as exc:
            if exc.errno in READ_ONLY_ERRNOS:
                raise ReadOnlyStore(self._url, f"cannot write {what}: {exc.strerror}") from exc
            if exc.errno is None:
                raise
            raise OSError(
                exc.errno,
                f"{exc.strerror}: writing {what} to store {self._url} failed; "
                "nothing was written (the partial temp file was removed)",
                exc.filename,
            ) from exc

    def prepare(self, prefixes: Iterable[str]) -> None:
        """Create the directories for key ``prefixes`` (e.g. ``objects/ab/``) up front.

        A new store would otherwise create its 256 object shard directories one by one
        during its first writes, each a directory creation on the write path of a trial.
        """
        if self.read_only:
            return
        for prefix in prefixes:
            self._makedirs(self._path(prefix.rstrip("/")))

    def _makedirs(self, path: str, root_too: bool = False) -> None:
        """Create ``path`` and missing parents; with fsync durability, make the new directory
        entries durable too (a renamed file in a directory that vanishes on power loss is lost).

        Only opening a store creates its root (``root_too``): a write finding the root gone
        raises :class:`StoreGone` instead of recreating a store without its config.
        """
        missing = []
        p = path
        while not os.path.isdir(p):
            if p == self.root and not root_too:
                raise StoreGone(self._url)
            missing.append(p)
            parent = os.path.dirname(p)
            if parent == p:
                break
            p = parent
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except FileExistsError:
                continue
            except FileNotFoundError:
                if not root_too and not os.path.isdir(self.root):
                    raise StoreGone(self._url) from None
                raise
            if self._fsync:
                _osio.fsync_dir(os.path.dirname(d))

    # writes ------------------------------------------------------------------------------

    def _write_temp(self, views: list[memoryview], rewrite: bool = False) -> str:
        """Write ``views`` to a temp file and return its path; remove it on any failure.

        ``rewrite``: the file is for rewriting a key in place (never to be hard-linked), so
        the temp file this process kept from its last exchange is written into, if there is
        one (see :mod:`daskperiment_store.backends._kept`)."""
        total = sum(view.nbytes for view in views)
        path = self._kept.take() if rewrite else None
        kept = _kept.open_kept(path, os.O_WRONLY | _O_CLOEXEC) if path else None
        fd, old_size = kept if kept is not None else (None, 0)
        if fd is None:
            if rewrite:
                path = self._kept.new_name()
            else:
                path = os.path.join(self._tmp_dir, f"{os.getpid()}-{secrets.token_hex(8)}.tmp")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC
            try:
                fd = os.open(path, flags, 0o666)
            except FileNotFoundError:
                self._makedirs(self._tmp_dir)
                fd = os.open(path, flags, 0o666)
        assert path is not None
        try:
            try:
                _osio.preallocate(fd, total)
                for view in views:
                    _osio.write_all(fd, view)
                if old_size > total:
                    os.ftruncate(fd, total)  # it held a longer value
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            _osio.unlink_quietly(path)
            raise
        return path

    def _rewrite(self, tmp: str, final: str) -> None:
        """Install ``tmp`` over ``final`` (exchange, else rename); keep what the temp name
        then holds (the old value, after an exchange) for the next rewrite."""
        try:
            exchanged = self._install(tmp, final)
        except BaseException:
            _osio.unlink_quietly(tmp)
            raise
        if exchanged:  # the old value's inode, linked only at the temp name now
            self._kept.keep(tmp)

    def _install(self, tmp: str, final: str) -> bool:
        """Move the temp file into place over any old value: exchange it with the old file or
        rename it over (True if exchanged: ``tmp`` then holds the old value, for the caller to
        keep or unlink; a writer killed before that leaves a temp file, as it may at any point
        of a write)."""

        def move() -> bool:
            done = _osio.exchange(tmp, final)
            if not done:
                os.replace(tmp, final)
            return done

        return self._into_place(tmp, final, move)

    def _install_new(self, tmp: str, final: str) -> tuple[bool, bool]:
        """Move or link ``tmp`` to ``final`` unless ``final`` exists: (whether it was
        created, whether ``tmp`` is still there for the caller to unlink)."""

        def move() -> bool:  # whether tmp is left
            if _osio.rename_noreplace(tmp, final):
                return False
            os.link(tmp, final)
            return True

        try:
            return True, self._into_place(tmp, final, move)
        except FileExistsError:
            return False, True

    def _into_place(self, tmp: str, final: str, move: Callable[[], T]) -> T:
        """``move()`` (which puts ``tmp`` at ``final``) and, with fsync durability, the
        directory's fsync. Retries when a concurrent ``delete`` pruned the parent directory
        between our ``mkdir`` and the move."""
        for _ in range(20):
            try:
                result = move()
            except FileNotFoundError:
                if not os.path.exists(tmp):
                    raise
                self._makedirs(os.path.dirname(final))
                continue
            if self._fsync:
                _osio.fsync_dir(os.path.dirname(final))
            return result
        raise OSError(errno.ENOENT, "the key's directory kept disappearing", final)

    def put(self, key: str, data: Buffers) -> None:
        """Write ``key`` atomically (temp file + ``os.replace``), replacing any old value."""
        final = self._path(key)
        self._check_writable()
        with self._writing(key):
            self._rewrite(self._write_temp(as_views(data), rewrite=True), final)

    def put_if_absent(self, key: str, data: Buffers) -> bool:
        """Write ``key`` unless it exists; atomic across processes (``renameat2`` with
        ``RENAME_NOREPLACE``, else ``os.link``, of a complete temp file: of N racing writers
        exactly one returns True)."""
        checked, self._missing = self._missing == key, None
        # The common dedup case of objects costs one stat, not a write. A ref created if
        # absent (a trial's number, a batch, an annotation) is new but for a lost race, which
        # the rename or link reports all the same: no stat first.
        return self._put_absent(key, data, stat_first=not checked and not key.startswith("refs/"))

    def put_new(self, key: str, data: Buffers) -> bool:
        """``put_if_absent`` without the dedup stat: the no-replace rename (or link) of the
        temp file says whether ``key`` existed."""
        return self._put_absent(key, data, stat_first=False)

    def _put_absent(self, key: str, data: Buffers, stat_first: bool) -> bool:
        final = self._path(key)
        self._check_writable()
        if stat_first and os.path.isfile(final):
            return False
        with self._writing(key):
            return self._create(key, self._write_temp(as_views(data)), final)

    def _create(self, key: str, tmp: str, final: str, locked: bool = False) -> bool:
        """Install ``tmp`` as ``final`` only if ``final`` does not exist (``locked``: the
        caller already holds the key's lock); ``tmp`` is gone afterwards either way."""
        left = True
        try:
            if self._can_link:
                try:
                    written, left = self._install_new(tmp, final)
                    return written
                except OSError as exc:
                    if exc.errno not in _NO_LINK_ERRNOS:
                        raise
                    self._can_link = False
            with contextlib.nullcontext() if locked else self.lock(key):
                if os.path.lexists(final):
                    return False
                self._install(tmp, final)
                return True
        finally:
            if left:
                _osio.unlink_quietly(tmp)

    def swap(self, key: str, expected: bytes | None, new: bytes | None) -> bool:
        """Compare-and-swap under the key's ``flock`` (see the module docstring)."""
        final = self._path(key)
        self._check_writable()
        with self._writing(key), self.lock(key):
            current = self._read_or_none(final)
            if current != expected:
                return False
            if new is None:
                if current is not None:
                    os.unlink(final)
                    self._prune(os.path.dirname(final))
                return True
            if expected is not None:
                self._rewrite(self._write_temp(as_views(new), rewrite=True), final)
                return True
            # Creating (expected None) goes through a no-replace rename or link so a
            # concurrent put_if_absent, which takes no lock, still cannot also succeed.
            return self._create(key, self._write_temp(as_views(new)), final, locked=True)

    @contextmanager
    def lock(self, key: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the exclusive lock that ``swap`` takes for ``key`` (across processes).

        Keys share 256 lock files by hash, so two keys may briefly wait on each other; that
        costs nothing in correctness. Raises :class:`daskperiment_store.errors.LockTimeout` after
        ``timeout`` seconds (default: the backend's ``lock_timeout``).
        """
        if fcntl is None:  # pragma: no cover - Windows
            from ..errors import NotAtomic

            raise NotAtomic("compare-and-swap needs fcntl.flock (POSIX); use another backend")
        timeout = self.lock_timeout if timeout is None else timeout
        name = xxhash.xxh64_hexdigest(key.encode("utf-8"))[:2] + ".lock"
        path = os.path.join(self._lock_dir, name)
        flags = os.O_RDWR | os.O_CREAT | _O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o666)
        except FileNotFoundError:
            self._makedirs(self._lock_dir)
            fd = os.open(path, flags, 0o666)
        try:
            _osio.flock(fd, timeout, key)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def delete(self, key: str, missing_ok: bool = False) -> None:
        """Remove ``key`` (atomic ``unlink``) and prune directories it leaves empty."""
        final = self._path(key)
        self._check_writable()
        try:
            with self._writing(key):
                try:
                    os.unlink(final)
                except IsADirectoryError as exc:
                    raise FileNotFoundError(errno.ENOENT, "is a directory", final) from exc
        except (FileNotFoundError, InvalidKey):
            if missing_ok:
                return
            raise KeyNotFound(key, self._url) from None
        self._prune(os.path.dirname(final))

    def _prune(self, directory: str) -> None:
        # Leaving empty directories would forbid a later key named like them (refs 'a/b'
        # deleted, then 'a' created). A concurrent put that loses its directory retries.
        while directory != self.root and directory.startswith(self.root):
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = os.path.dirname(directory)

    def touch(self, key: str) -> None:
        """Set ``key``'s modification time to now."""
        final = self._path(key)
        self._check_writable()
        try:
            with self._writing(key):
                os.utime(final)
        except FileNotFoundError:
            raise KeyNotFound(key, self._url) from None

    # reads -------------------------------------------------------------------------------

    def _open_for_read(self, key: str, path: str) -> int:
        try:
            fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise KeyNotFound(key, self._url) from None
        return fd

    def get(self, key: str) -> bytearray | memoryview:
        """The whole value of ``key`` as a writable buffer (one read, no extra copy)."""
        path = self._path(key)
        fd = self._open_for_read(key, path)
        try:
            st = os.fstat(fd)
            if stat_mod.S_ISDIR(st.st_mode):
                raise KeyNotFound(key, self._url)
            if st.st_size >= _LARGE_READ:
                return _osio.read_large(fd, st.st_size)
            buf = bytearray(st.st_size)
            n = _osio.read_into(fd, memoryview(buf))
            del buf[n:]
            return buf
        finally:
            os.close(fd)

    def _read_or_none(self, path: str) -> bytes | None:
        try:
            fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:  # raw reads: a file object costs fstat, ioctl and two lseeks more (a ref swap)
            parts = [os.read(fd, 1 << 16)]
            while len(parts[-1]) == 1 << 16:  # a short read of a regular file is its end
                parts.append(os.read(fd, 1 << 16))
            return b"".join(parts)
        finally:
            os.close(fd)

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes | bytearray | memoryview]:
        """Values of several (small) keys; missing keys are left out."""
        out: dict[str, bytes | bytearray | memoryview] = {}
        for key in keys:
            try:
                fd = os.open(self._path(key), os.O_RDONLY | _O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError):
                continue
            try:
                parts = []
                while True:  # raw reads, no file object per key; short read = end of file
                    parts.append(os.read(fd, 1 << 16))
                    if len(parts[-1]) < 1 << 16:
                        break
            except IsADirectoryError:
                continue
            finally:
                os.close(fd)
            out[key] = parts[0] if len(parts) == 1 else b"".join(parts)
        return out

    def head(self, key: str, n: int) -> bytes:
        """At most the first ``n`` bytes of ``key``."""
        path = self._path(key)
        fd = self._open_for_read(key, path)
        try:
            if stat_mod.S_ISDIR(os.fstat(fd).st_mode):
                raise KeyNotFound(key, self._url)
            parts = []
            while n > 0:
                chunk = os.read(fd, n)
                if not chunk:
                    break
                parts.append(chunk)
                n -= len(chunk)
            return b"".join(parts)
        finally:
            os.close(fd)

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def stat(self, key: str) -> KeyInfo:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            # A put_if_absent of this key right after (Store.put's existence check, then the
            # write) need not look again; if it was created meanwhile, the link says so.
            self._missing = key
            raise KeyNotFound(key, self._url) from None
        if not stat_mod.S_ISREG(st.st_mode):
            raise KeyNotFound(key, self._url)
        return KeyInfo(key, st.st_size, st.st_mtime)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with ``prefix``; only the prefix's directory is scanned."""
        validate_prefix(prefix)
        head, _, start = prefix.rpartition("/")
        if head.partition("/")[0] in RESERVED_TOP_LEVEL:
            return iter(())
        return self._list(head, start)

    def _list(self, head: str, start: str) -> Iterator[str]:
        base = os.path.join(self.root, *head.split("/")) if head else self.root
        key_head = head + "/" if head else ""
        try:
            entries = list(os.scandir(base))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            name = entry.name
            if not name.startswith(start) or (not head and name in RESERVED_TOP_LEVEL):
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(entry.path, key_head + name + "/")
            elif entry.is_file():
                yield key_head + name

    # temp files --------------------------------------------------------------------------

    def list_temp(self) -> Iterator[KeyInfo]:
        """Files in ``tmp/``: writes in progress or left by killed writers."""
        try:
            entries = list(os.scandir(self._tmp_dir))
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # finished (renamed) between scandir and stat
            if stat_mod.S_ISREG(st.st_mode) and not _kept.is_kept_by_a_running_process(entry.name):
                yield KeyInfo(entry.name, st.st_size, st.st_mtime)

    def delete_temp(self, name: str) -> None:
        """Remove the temp file ``name`` (as listed by :meth:`list_temp`)."""
        validate_temp_name(name)
        self._check_writable()
        with self._writing(name, f"temp file {name!r}"):
            _osio.unlink_quietly(os.path.join(self._tmp_dir, name))


# module helpers ------------------------------------------------------------------------------


def _walk(directory: str, key_head: str) -> Iterator[str]:
    stack = [(directory, key_head)]
    while stack:
        path, head = stack.pop()
        try:
            entries = list(os.scandir(path))
        except (FileNotFoundError, NotADirectoryError):
            continue  # pruned by a concurrent delete
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, head + entry.name + "/"))
            elif entry.is_file():
                yield head + entry.name
