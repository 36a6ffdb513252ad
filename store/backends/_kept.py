"""The temp file :class:`~daskperiment_store.backends.local.LocalBackend` keeps for its next
rewrite of a key, so that rewriting refs allocates and frees no inode.

A rewrite writes a temp file and exchanges it with the key's file (``renameat2``); the temp
name then holds the old value's inode. Unlinking it frees that inode, and on an ext4 without a
journal a freed inode is skipped by the allocator for 60 s, 360 s while its inode table block
is unwritten (``recently_deleted`` in the kernel's ``fs/ext4/ialloc.c``): a store rewriting a
ref per trial made every later file creation scan past the inodes it had just freed (file
creation measured 30 us on a settled filesystem, 300 us and more after a few thousand frees).
Keeping the old inode instead, and writing the next rewrite into it, allocates nothing and
frees nothing.

Safety: a kept file is reused only by the process that kept it (a forked child starts
without one) and only while it has a single link (a hard-linked copy of the store, e.g.
``cp -al``, is never written through); it is never hard-linked anywhere (creates use a fresh
temp file). It is named ``<pid>-<hex>.kept`` in ``tmp/``: :meth:`LocalBackend.list_temp` leaves
out the kept file of a process that is still running on this machine, so ``fsck`` and ``gc``
see it only once its process is gone (a killed process's is a leftover temp file like any
other); a process that exits normally removes its own.
"""

from __future__ import annotations

import os
import secrets
import threading
import weakref

SUFFIX = ".kept"


class KeptTemp:
    """At most one kept temp file of this process for one backend."""

    def __init__(self, tmp_dir: str) -> None:
        self._tmp_dir = tmp_dir
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # A list, so the finalizer (run at exit or when the backend goes) sees the current one.
        self._held: list[str] = []
        weakref.finalize(self, _remove, self._held, self._pid)

    def new_name(self) -> str:
        return os.path.join(self._tmp_dir, f"{os.getpid()}-{secrets.token_hex(8)}{SUFFIX}")

    def take(self) -> str | None:
        """The kept file's path, handed to one writer, or None."""
        with self._lock:
            if os.getpid() != self._pid:  # a forked child: the file is its parent's
                self._held.clear()
                self._pid = os.getpid()
                return None
            return self._held.pop() if self._held else None

    def keep(self, path: str) -> None:
        """Keep ``path`` (the old value left at a temp name by an exchange) for the next
        rewrite; removed instead when one is kept already or it is not this process's."""
        with self._lock:
            if os.getpid() == self._pid and not self._held and path.endswith(SUFFIX):
                self._held.append(path)
                return
        _unlink(path)


def open_kept(path: str, flags: int) -> tuple[int, int] | None:
    """A descriptor to write ``path`` afresh and the file's size (what a shorter new value
    must truncate), or None when it is gone or has another link."""
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    st = os.fstat(fd)
    if st.st_nlink != 1:
        os.close(fd)
        _unlink(path)
        return None
    return fd, st.st_size


def is_kept_by_a_running_process(name: str) -> bool:
    """Whether temp file ``name`` is a kept file whose process still runs on this machine."""
    if not name.endswith(SUFFIX):
        return False
    try:
        pid = int(name.split("-", 1)[0])
    except ValueError:
        return False
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    except OSError:
        return False
    return True


def _remove(held: list[str], pid: int) -> None:
    if os.getpid() == pid:
        for path in held:
            _unlink(path)
        held.clear()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
