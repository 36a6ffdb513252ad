"""Input files: which files a step read, and their content digests.

**Seen automatically.** One audit hook per process (PEP 578, installed when the first step of a
trial runs there; hooks cannot be removed) watches the ``open`` event, which ``open``,
``io.open``, ``pathlib``, ``os.open``, numpy's loaders and pandas' CSV readers raise. It
records a path only while a step is recording *in the same thread* (a context variable), and
only when it was opened for reading; outside steps the hook returns after two comparisons.
Files the step also opened for writing are not inputs. Interpreter and library files
(the Python prefixes, site-packages, ``.py``/``.pyc``/extension modules), ``/dev``, ``/proc``,
``/sys``, ``/run``, ``/etc`` and ``/usr/share/zoneinfo`` are ignored, and so is the
experiment's own store.

**Declared.** Readers written in C that open files themselves (pyarrow, parquet, h5py) and
subprocesses are invisible to the hook: :func:`track` (``ex.track(path)``) declares a file or a
directory. A directory is recorded as one digest: that of the tree ``{relative path: digest}``
of every file below it (symbolic links to directories are recorded, not followed).

When the step returns, each file is hashed through the stat cache
(:mod:`daskperiment.provenance.statcache`) and the step record gets
``"files": {absolute path: digest}``. A file that cannot be read then (vanished, no permission,
a symlink loop) is recorded as ``"unreadable: <reason>"`` with a warning; the trial goes on.
"""

from __future__ import annotations

import contextvars
import os
import re
import site
import stat
import sys
import sysconfig
import threading
import time
from collections.abc import Mapping
from typing import Any

from daskperiment_store import codec

from ..errors import NotInTrial
from ..log import logger
from ..running import CURRENT_STEP
from .statcache import shared

#: Prefix of the value recorded for a file that could not be hashed.
UNREADABLE = "unreadable: "
TREE_TAG = "daskperiment.file-tree/1"
_DIGEST = re.compile(r"[0-9a-f]{32}")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".so", ".pyd", ".pth")
#: Seconds between progress lines while a tracked directory is hashed.
PROGRESS_EVERY = 5.0


class Recorder:
    """The files one running step opened, read or written, and the ones it declared."""

    __slots__ = ("read", "written", "tracked", "ignore")

    def __init__(self, ignore: tuple[str, ...] = ()) -> None:
        self.read: dict[str, None] = {}
        self.written: set[str] = set()
        self.tracked: dict[str, None] = {}
        self.ignore = ignore


_RECORDING: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar(
    "daskperiment_inputs", default=None
)
_active = 0
_installed = False
_install_lock = threading.Lock()


def _system_prefixes() -> tuple[str, ...]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.update(sysconfig.get_paths().values())
    try:
        paths.update(site.getsitepackages())
        paths.add(site.getusersitepackages())
    except AttributeError:  # virtualenvs of old
        pass
    out = {os.path.join(os.path.realpath(p), "") for p in paths if p}
    out.update({os.path.join(os.path.abspath(p), "") for p in paths if p})
    # Devices, kernel files, and what the C library and time zones read behind the
    # scenes (/etc/localtime, /etc/hosts, zoneinfo): configuration of the machine, not data.
    out.update(("/dev/", "/proc/", "/sys/", "/etc/", "/usr/share/zoneinfo/", "/run/"))
    return tuple(sorted(out))


_SYSTEM: tuple[str, ...] = ()


def _hook(event: str, args: tuple) -> None:
    if event != "open" or not _active:
        return
    rec = _RECORDING.get()
    if rec is None:
        return
    try:
        _note(rec, *args)
    except Exception:  # noqa: BLE001 - an error here would fail the user's open()
        return


def _note(rec: Recorder, path: Any, mode: str | None, flags: int) -> None:
    if isinstance(path, int):
        return
    full = os.path.abspath(os.fsdecode(path))
    if mode is None:
        writing = bool(flags & _WRITE_FLAGS)
    else:
        writing = any(c in mode for c in "wax+")
    if writing:
        rec.written.add(full)
    elif not (full.startswith(_SYSTEM) or full.endswith(_CODE_SUFFIXES)):
        if not (rec.ignore and full.startswith(rec.ignore)):
            rec.read[full] = None


def install() -> None:
    """Install the audit hook in this process (once; it stays for the process's life)."""
    global _installed, _SYSTEM
    if _installed:
        return
    with _install_lock:
        if not _installed:
            _SYSTEM = _system_prefixes()
            sys.addaudithook(_hook)
            _installed = True


def start(ignore: tuple[str, ...] = ()) -> tuple[Recorder, contextvars.Token]:
    """Start recording the files the calling thread opens (``ignore``: path prefixes)."""
    global _active
    install()
    rec = Recorder(ignore)
    token = _RECORDING.set(rec)
    with _install_lock:
        _active += 1
    return rec, token


def stop(token: contextvars.Token) -> None:
    """Stop the recording :func:`start` began."""
    global _active
    _RECORDING.reset(token)
    with _install_lock:
        _active -= 1


def files_of(rec: Recorder, st: Any = None) -> dict[str, str]:
    """``{path: digest}`` of what ``rec`` saw and was told (see the module docstring)."""
    cache = shared()
    out: dict[str, str] = {}
    for path in rec.read:
        if path in rec.written or path in rec.tracked:
            continue
        try:
            info = os.stat(path)
        except OSError as exc:
            if not os.path.lexists(path):
                continue  # a name probed but never there (a failed open): nothing was read
            out[_name(path)] = _unreadable(path, exc)
            continue
        if stat.S_ISREG(info.st_mode):
            out[_name(path)] = _file_digest(cache, path, info)
    for path in rec.tracked:
        out[_name(path)] = _tracked_digest(cache, path, st)
    cache.save()
    return dict(sorted(out.items()))


def _file_digest(cache: Any, path: str, info: os.stat_result | None = None) -> str:
    try:
        return cache.digest(path, info)
    except OSError as exc:
        return _unreadable(path, exc)


def _unreadable(path: str, exc: OSError) -> str:
    reason = exc.strerror or type(exc).__name__
    logger.warning(
        "Input file %s could not be hashed (%s); it is recorded as unreadable, so a cached "
        "step that read it is never reused",
        _name(path),
        reason,
    )
    return UNREADABLE + reason


def _name(path: str) -> str:
    """``path`` as recorded: names that are not UTF-8 keep their bytes as ``\\xNN`` escapes."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")


def _tracked_digest(cache: Any, path: str, st: Any) -> str:
    try:
        info = os.stat(path)
    except OSError as exc:
        return _unreadable(path, exc)
    if not stat.S_ISDIR(info.st_mode):
        return _file_digest(cache, path, info)
    tree = tree_of(cache, path)
    if st is not None:
        try:
            return st.put(tree)
        except Exception as exc:  # noqa: BLE001 - the digest is what the record needs
            logger.debug("File tree of %s not stored: %s", path, exc)
    return codec.digest(tree)


def tree_of(cache: Any, root: str) -> dict[str, Any]:
    """The tree object of directory ``root``: ``{relative path: digest}`` of every file."""
    files: dict[str, str] = {}
    started = last = time.monotonic()
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: _walk_error(files, e)):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if os.path.islink(full):  # not followed: a link loop would never end
                files[_rel(full, root)] = codec.digest(["symlink", os.readlink(full)])
        for f in filenames:
            full = os.path.join(dirpath, f)
            files[_rel(full, root)] = _file_digest(cache, full)
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY:
            last = now
            logger.info("Hashing %s: %d files so far (%.0f s)", root, len(files), now - started)
    return {"type": TREE_TAG, "files": dict(sorted(files.items()))}


def _rel(full: str, root: str) -> str:
    return _name(os.path.relpath(full, root).replace(os.sep, "/"))


def _walk_error(files: dict[str, str], exc: OSError) -> None:
    files[_name(str(exc.filename))] = _unreadable(str(exc.filename), exc)


def track(path: str | os.PathLike) -> Any:
    """Declare that the running step reads ``path`` (a file or a directory); returns ``path``.

    For readers the audit hook cannot see (pyarrow, h5py, subprocesses):
    ``pd.read_parquet(ex.track(path))``.
    """
    rec = _RECORDING.get()
    if rec is None:
        if CURRENT_STEP.get() is None:
            raise NotInTrial("ex.track")
        return path  # a step computed outside a trial (an intermediate): nothing is recorded
    rec.tracked[os.path.abspath(os.fsdecode(os.fspath(path)))] = None
    return path


def is_digest(value: Any) -> bool:
    """Whether a recorded file value is a content digest (not an unreadable marker)."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def changed_file(files: Mapping[str, str] | None) -> str | None:
    """The first of ``files`` whose content is not the recorded one now (None: all same)."""
    if not files:
        return None
    for path, digest in files.items():
        if not is_digest(digest):
            return path
    cache = shared()
    found = cache.unchanged(dict(files))
    cache.save()
    return found


def purity_inputs(entry: Mapping[str, Any]) -> Any:
    """The input digest the purity check uses: the step's inputs and, if any, its files."""
    inputs, files = entry.get("inputs"), entry.get("files")
    if not inputs or not files:
        return inputs
    return codec.digest(["daskperiment.inputs+files/1", inputs, dict(files)])


def file_lines(entry: Mapping[str, Any]) -> list[str]:
    """Lines naming a step's input files and digests (``show`` and ``diff``)."""
    return [f"  read {path} {digest}" for path, digest in (entry.get("files") or {}).items()]


def ignored_for(location: Any) -> tuple[str, ...]:
    """Path prefixes a step's recording ignores: the experiment's own local store."""
    if isinstance(location, str):
        return (os.path.join(os.path.abspath(location), ""),)
    return ()


def add_to_record(record: dict[str, Any], rec: Recorder, st: Any) -> None:
    """Put the digests of the files ``rec`` saw into a step ``record`` (if there are any)."""
    if rec.read or rec.tracked:
        files = files_of(rec, st)
        if files:
            record["files"] = files
