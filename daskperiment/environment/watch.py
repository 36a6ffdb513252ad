"""Noticing that any of a set of files was written, without looking at each file every time.

:func:`watch_files` returns a watch whose :meth:`~FileWatch.changed` says whether one of the
files was written, renamed, deleted or re-created since the previous call. On Linux it asks
the kernel (inotify) to queue such events on the directories holding the files, so a call is
one non-blocking ``read``, whatever the number of files; events for other names in those
directories (outputs, ``__pycache__``) are ignored. Elsewhere, or when inotify is unavailable
(no ``libc`` symbol, watch limits reached), it compares ``os.stat`` results, which costs about
2 us per file.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any

#: A modification time this close to when it was read is not trusted to reveal the next one.
RACY_NS = 100_000_000
#: More directories than this are compared by ``stat`` rather than given inotify watches.
MAX_WATCHED_DIRS = 512

_IN_MODIFY = 0x2
_IN_ATTRIB = 0x4
_IN_CLOSE_WRITE = 0x8
_IN_MOVED_FROM = 0x40
_IN_MOVED_TO = 0x80
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_IN_ONLYDIR = 0x1000000
_MASK = (
    _IN_MODIFY
    | _IN_ATTRIB
    | _IN_CLOSE_WRITE
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
    | _IN_ONLYDIR
)
#: Events that concern the watched directory itself, or the queue: always a change.
_ALWAYS = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_Q_OVERFLOW | _IN_IGNORED
#: What changes a directory's list of entries (and so its mtime): a whole-directory watch
#: asks for these only, so a file appended to in that directory queues nothing.
_ENTRY_EVENTS = _IN_CREATE | _IN_DELETE | _IN_MOVED_FROM | _IN_MOVED_TO
_DIRECTORY_MASK = _ENTRY_EVENTS | _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_ONLYDIR
#: Reads of the queue per call: a directory written to faster than it is read (a log next to
#: the watched files) is taken as a change rather than read forever.
_MAX_READS = 16
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name

Stat = tuple[int, ...] | None


class FileWatch:
    """Tells whether watched files changed since the previous call."""

    def changed(self) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the watch holds (safe to call twice)."""


def stats(paths: Sequence[str]) -> tuple[Stat, ...]:
    """``(mtime_ns, size, inode)`` of each path, None for a missing one."""
    out: list[Stat] = []
    append = out.append
    stat = os.stat  # looked up once: this loop is the whole cost of a stat watch
    for path in paths:
        try:
            st = stat(path)
        except OSError:
            append(None)
        else:
            append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def is_racy(values: Sequence[Stat], taken_ns: int) -> bool:
    """Whether a file changed so shortly before ``taken_ns`` that another change in the same
    clock tick (file times are coarse) could leave its stat equal: git's "racy clean"."""
    return any(st is not None and st[0] > taken_ns - RACY_NS for st in values)


class StatWatch(FileWatch):
    """Compares the stat of every file with the previous call's."""

    def __init__(self, paths: Sequence[str]) -> None:
        self._paths = list(paths)
        self._baseline: tuple[Stat, ...] | None = None
        self._take()

    def _take(self) -> tuple[Stat, ...]:
        taken = time.time_ns()
        now = stats(self._paths)
        # A racy baseline is never equal to anything, so the next call reports a change.
        self._baseline = None if is_racy(now, taken) else now
        return now

    def changed(self) -> bool:
        before = self._baseline
        return self._take() != before or before is None


class InotifyWatch(FileWatch):
    """Linux inotify watches on the directories holding the files."""

    def __init__(self, paths: Sequence[str], directories: Sequence[str] = ()) -> None:
        self._pid = os.getpid()
        self._fd = -1
        names: dict[str, set[str] | None] = {}
        for path in paths:
            directory, name = os.path.split(path)
            in_dir = names.setdefault(directory, set())
            if in_dir is not None:
                in_dir.add(name)
        for directory in directories:  # any event in these counts
            names[directory] = None
        if len(names) > MAX_WATCHED_DIRS:
            raise OSError("too many directories to watch")
        libc = _libc()
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._fd = fd
        self._names: dict[int, set[bytes] | None] = {}
        for directory, in_dir in names.items():
            mask = _DIRECTORY_MASK if in_dir is None else _MASK
            wd = libc.inotify_add_watch(fd, os.fsencode(directory), mask)
            if wd < 0:
                err = ctypes.get_errno()
                self.close()
                raise OSError(err, f"inotify_add_watch failed for {directory}")
            self._names[wd] = None if in_dir is None else {os.fsencode(n) for n in in_dir}

    def changed(self) -> bool:
        if os.getpid() != self._pid:  # a forked child shares the queue: reading would steal
            return True
        for _ in range(_MAX_READS):
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return False
            if self._any_relevant(data):
                self._drain()  # what is queued now is answered by this call
                return True
        return True

    def _drain(self) -> None:
        for _ in range(_MAX_READS):
            try:
                os.read(self._fd, 65536)
            except BlockingIOError:
                return

    def _any_relevant(self, data: bytes) -> bool:
        offset, relevant = 0, False
        while offset < len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            names = self._names.get(wd, ())
            if mask & _ALWAYS or (mask & _ENTRY_EVENTS if names is None else name in names):
                relevant = True
        return relevant

    def close(self, _getpid: Any = os.getpid, _close: Any = os.close) -> None:
        # os's functions are bound here: a watch collected while the interpreter shuts
        # down may find the module's globals already cleared.
        if self._fd >= 0 and _getpid() == self._pid:
            _close(self._fd)
        self._fd = -1

    def __del__(self) -> None:
        self.close()


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_init1.restype = ctypes.c_int
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_add_watch.restype = ctypes.c_int
        _LIBC = libc
    return _LIBC


def watch_entries(entries: Sequence[str]) -> FileWatch | None:
    """An inotify watch telling whether anything changed in any of ``entries``: a directory
    counts as changed when any entry in it is created, written, renamed or deleted (what
    changes its mtime, and more); a file or a missing path when it is written, replaced,
    created or deleted. None without inotify, or where a path's directory is missing (the
    caller then looks at each entry itself)."""
    if not sys.platform.startswith("linux"):
        return None
    directories: list[str] = []
    paths: list[str] = []
    for entry in entries:
        (directories if os.path.isdir(entry) else paths).append(entry)
    try:
        return InotifyWatch(paths, directories)
    except (OSError, AttributeError):
        return None


def watch_files(paths: Sequence[str], max_stat_files: int | None = None) -> FileWatch | None:
    """A watch on ``paths``: inotify where it works, stat comparison otherwise.

    The state at this call is the baseline: the first :meth:`FileWatch.changed` reports
    changes made after it. None when only a stat watch is possible and there are more than
    ``max_stat_files`` paths (each call would cost milliseconds).
    """
    if sys.platform.startswith("linux") and paths:
        try:
            return InotifyWatch(paths)
        except (OSError, AttributeError):  # limits reached, or no inotify in this libc
            pass
    if max_stat_files is not None and len(paths) > max_stat_files:
        return None
    return StatWatch(paths)
