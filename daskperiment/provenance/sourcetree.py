"""A trial's source tree: the script or notebook cells and every local module it imported.

The tree is a flat, git-like tree object::

    {"type": "daskperiment.source", "root": "<absolute directory>", "main": "train.py",
     "kind": "script", "files": {"train.py": Link(blob), "lib/helpers.py": Link(blob)}}

Each file is a ``bytes`` blob of its exact content (so any encoding, and checkout is byte for
byte); an unchanged file has the same digest and is stored once across trials. The root is
the main script's directory (``daskperiment run`` and ``python script.py``), else the
current directory (notebooks, the REPL, and programs that are installed distributions
themselves, such as ``python -m pytest``). Files are the main script, or ``notebook.py`` (the
cells run so far, in order, each after an ``# In[n]:`` line) in a notebook, and every module
in ``sys.modules`` whose file lies under the root and which is local (not the standard
library, not an installed distribution: :mod:`.libraries`).

Cost: the module list is rescanned only when ``sys.modules`` grew or shrank; each file is
``stat``-ed and hashed again only when its size, mtime, ctime or inode changed, or when it was
hashed within two seconds of its last modification (git's "racily clean" case: a rewrite
within one timestamp tick would keep the same stat data). On Linux the files are also watched
(inotify, :mod:`daskperiment.environment.watch`, set up before they are read): while no file
was written, renamed or deleted and the script, ``__main__``, the current directory and the
number of loaded modules are the same, a trial reuses the previous tree after one
non-blocking ``read`` instead of looking at every file (~3 us instead of ~60 us for a script
and one module). Elsewhere the files are ``stat``-ed every trial.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import daskperiment_store as store
from daskperiment_store import Link, Oid, codec

from . import libraries as _libs

SOURCE_TYPE = "daskperiment.source"
NOTEBOOK_FILE = "notebook.py"
#: Seconds after a modification during which a stat match is not trusted.
_RACY = 2.0

_script: str | None = None


def note_script(path: str) -> None:
    """Remember the script ``daskperiment run`` executes (it is not ``__main__``)."""
    global _script
    _script = os.path.realpath(path)


@dataclass
class _Entry:
    stat: tuple[int, int, int, int]
    oid: str
    content: bytes | None
    trusted: bool


class SourceTree:
    """Per-process state of the source tree capture (stat cache, module list, last tree)."""

    def __init__(self) -> None:
        self._files: dict[str, _Entry] = {}
        self._modules_seen = -1
        self._module_files: list[str] = []
        self._root: str | None = None
        self._trees: dict[tuple, tuple[str, dict[str, Any]]] = {}
        self._written: dict[int, tuple[store.Store, set[str]]] = {}
        #: (what the last capture depended on, its watch, its result): see :meth:`_unchanged`
        self._last: tuple[tuple, Any, tuple] | None = None
        self._lock = threading.Lock()

    def root_and_main(self) -> tuple[str, str | None, str]:
        """(root directory, main file path or None, kind: script, notebook or interactive)."""
        main = _script
        if main is None:
            main_module = sys.modules.get("__main__")
            file = getattr(main_module, "__file__", None)
            if isinstance(file, str) and file.endswith(".py") and os.path.isfile(file):
                # `python -m pytest`, a dask worker: an installed program is not the script.
                main = None if _libs.is_installed_path(file) else os.path.realpath(file)
        if main is not None:
            return os.path.dirname(main), main, "script"
        kind = "notebook" if _notebook_cells() is not None else "interactive"
        return os.path.realpath(os.getcwd()), None, kind

    def _modules(self, root: str) -> list[str]:
        if len(sys.modules) == self._modules_seen and root == self._root:
            return self._module_files
        prefix = root.rstrip(os.sep) + os.sep
        files = set()
        for name, module in list(sys.modules.items()):
            try:
                file = getattr(module, "__file__", None)
            except Exception:  # noqa: BLE001 - a lazy or proxy module: not a source file
                continue
            if not isinstance(file, str) or not file.endswith(".py"):
                continue
            real = os.path.realpath(file)
            if real.startswith(prefix) and _libs.is_local_module_name(name, real):
                files.add(real)
        self._module_files = sorted(files)
        self._modules_seen, self._root = len(sys.modules), root
        return self._module_files

    def _blob(self, path: str) -> tuple[str, bytes | None]:
        """(digest, content if it was just read) of the file at ``path``, via the stat cache."""
        st = os.stat(path)
        key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        entry = self._files.get(path)
        if entry is not None and entry.stat == key and entry.trusted:
            return entry.oid, entry.content
        with open(path, "rb") as f:
            content = f.read()
        oid = codec.digest(content)
        trusted = time.time() - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 > _RACY
        self._files[path] = _Entry(key, oid, content, trusted)
        return oid, content

    def capture(self, st: store.Store | None) -> str | None:
        """The source tree's digest, written to ``st`` (blobs first); None if nothing to keep."""
        state = _process_state()
        with self._lock:  # one thread reading an event must not let another miss it
            last, self._last = self._last, None
            quiet = last is not None and last[0] == state and not last[1].changed()
            if quiet:
                self._last = last
        if quiet and last is not None:
            oid, tree, blobs = last[2]
        else:
            found = self._capture(state)
            if found is None:
                return None
            oid, tree, blobs = found
        if st is not None:
            self._write(st, oid, tree, blobs)
        return oid

    def _capture(self, state: tuple) -> tuple[str, dict, dict] | None:
        root, main, kind = self.root_and_main()
        files: dict[str, tuple[str, Any]] = {}
        if main is not None:
            files[os.path.relpath(main, root)] = (main, None)
        elif kind == "notebook":
            text = _notebook_text()
            files[NOTEBOOK_FILE] = ("", text.encode("utf-8"))
        for path in self._modules(root):
            rel = os.path.relpath(path, root)
            if rel not in files:
                files[rel] = (path, None)
        if not files:
            return None
        # Watched before the files are read: an edit from here on is seen by the next trial.
        watch = self._watch_for(kind, [path for path, _ in files.values() if path])
        blobs: dict[str, tuple[str, bytes | None]] = {}
        for rel, (path, content) in sorted(files.items()):
            if content is not None:
                blobs[rel] = (codec.digest(content), content)
                continue
            try:
                blobs[rel] = self._blob(path)
            except OSError:
                continue  # vanished or unreadable: left out, not a failed trial
        main_rel = (
            os.path.relpath(main, root) if main else (NOTEBOOK_FILE if kind == "notebook" else None)
        )
        shape = (root, main_rel, kind, tuple((rel, oid) for rel, (oid, _) in blobs.items()))
        cached = self._trees.get(shape)
        if cached is None:
            tree = {
                "type": SOURCE_TYPE,
                "root": root,
                "main": main_rel,
                "kind": kind,
                "files": {rel: Link(Oid(oid)) for rel, (oid, _) in blobs.items()},
            }
            cached = (codec.digest(tree), tree)
            self._trees = {shape: cached}  # only the last: old shapes are not reused
        oid, tree = cached
        if watch is not None:
            self._last = (state, watch, (oid, tree, blobs))
        return oid, tree, blobs

    def _watch_for(self, kind: str, paths: list[str]) -> Any:
        """A watch on the tree's files, or None where the next capture must look again anyway
        (a notebook's cells change without a file changing)."""
        if kind == "notebook":
            return None
        from ..environment.watch import watch_files

        return watch_files(sorted(paths), max_stat_files=0)

    def _write(
        self, st: store.Store, oid: str, tree: dict, blobs: dict[str, tuple[str, bytes | None]]
    ) -> None:
        # Keyed by the store object itself (held), so a new store never inherits the set
        # of an old one that happened to have the same id().
        held = self._written.get(id(st))
        if held is None or held[0] is not st:
            held = self._written[id(st)] = (st, set())
        written = held[1]
        if oid in written:
            return
        for rel, (blob_oid, content) in blobs.items():
            if blob_oid in written:
                continue
            if content is None:
                with open(os.path.join(tree["root"], rel), "rb") as f:
                    content = f.read()
            st.put(content)
            written.add(blob_oid)
        st.put(tree)
        written.add(oid)
        # Contents stay in memory only until written once.
        for entry in self._files.values():
            entry.content = None


def _process_state() -> tuple:
    """What decides which files the tree holds, besides the files themselves: the script
    being run, the ``__main__`` module and its file, the current directory (the root when
    there is no script), the number of modules loaded and the process (a forked child has
    no watch of its own)."""
    main_module = sys.modules.get("__main__")
    try:
        cwd = os.getcwd()
    except OSError:  # the current directory was deleted
        cwd = None
    return (
        _script,
        id(main_module),
        getattr(main_module, "__file__", None),
        cwd,
        len(sys.modules),
        os.getpid(),
    )


def _ipython() -> Any:
    module = sys.modules.get("IPython")
    get = getattr(module, "get_ipython", None)
    return get() if callable(get) else None


def _notebook_cells() -> list[str] | None:
    shell = _ipython()
    if shell is None:
        return None
    cells = shell.user_ns.get("In") or shell.user_ns.get("_ih")
    return [c for c in cells if isinstance(c, str)] if isinstance(cells, list) else None


def _notebook_text() -> str:
    parts = []
    for number, cell in enumerate(_notebook_cells() or [], start=0):
        if cell.strip():
            parts.append(f"# In[{number}]:\n{cell.rstrip()}\n")
    return "\n\n".join(parts)


_TREE = SourceTree()


def capture(st: store.Store | None) -> str | None:
    """The current process's source tree digest, written to ``st``; see the module docstring."""
    return _TREE.capture(st)
