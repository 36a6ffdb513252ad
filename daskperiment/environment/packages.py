"""Installed Python distributions, as ``"name version (location)"`` lines.

Listing every installed distribution means opening each ``*.dist-info`` directory on
``sys.path``. That is done once per process and again only when something could have changed,
checked in two steps:

1. A cheap ``os.stat`` of each ``sys.path`` entry (plus the list itself): installing, removing
   or upgrading a distribution adds, removes or renames entries in the directory that holds
   it, which changes that directory's modification time. While no entry changed, a repeated
   capture costs microseconds.
2. A directory whose time changed is listed again, keeping only what ``importlib.metadata``
   reads: the ``*.dist-info`` / ``*.egg-info`` entries (and ``EGG-INFO`` in an ``*.egg``),
   each with the ``os.stat`` of the entry and of its ``METADATA`` / ``PKG-INFO``. The
   distributions are read again only when that changed. ``sys.path[0]`` is the script's or
   notebook's directory, so a script writing its outputs next to itself no longer makes every
   following trial rescan every distribution.

On Linux step 1 is skipped while an inotify watch on the entries (set up before their stats
are taken, kept only while those stats were not racy) reports nothing: a directory's events
are a superset of what changes its modification time.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import stat as stat_
import sys
import threading
import time
from typing import Any

from . import watch
from .watch import Stat, is_racy, stats

#: What ``os.stat`` says about each ``sys.path`` entry (mtime_ns, inode, size, device); None
#: for entries that cannot be stat'ed (import hooks, vanished directories).
EntryStat = tuple[int, int, int, int] | None
Signature = tuple[tuple[str, ...], tuple[EntryStat, ...]]
#: What the scan reads from one ``sys.path`` entry; see :func:`entry_fingerprint`.
Fingerprint = tuple[Any, ...] | None

#: Suffixes of the entries ``importlib.metadata`` takes for distributions (lower-cased).
_DIST_SUFFIXES = (".dist-info", ".egg-info")
#: The files a distribution's name and version are read from (see :func:`_name_version`).
_METADATA_FILES = ("METADATA", "PKG-INFO")


def _where() -> tuple:
    """``sys.path``'s entries and, when one is relative, the directory they are relative to."""
    entries = tuple(p for p in sys.path if isinstance(p, str))
    cwd = None
    if any(not os.path.isabs(e) for e in entries):
        try:
            cwd = os.getcwd()
        except OSError:
            cwd = ""
    return entries, cwd, os.getpid()


def path_signature() -> Signature:
    """The state of ``sys.path`` that decides whether the installed distributions changed."""
    entries = tuple(p for p in sys.path if isinstance(p, str))
    found: list[EntryStat] = []
    for entry in entries:
        try:
            st = os.stat(entry or ".")  # '' on sys.path is the current directory
        except (OSError, ValueError):
            found.append(None)  # import hooks and vanished directories
            continue
        found.append((st.st_mtime_ns, st.st_ino, st.st_size, st.st_dev))
    return entries, tuple(found)


def entry_fingerprint(entry: str) -> Fingerprint:
    """Everything of one ``sys.path`` entry that :func:`scan` depends on.

    For a directory: its absolute path (the distributions' location; '' and relative entries
    follow the current directory) and, sorted by name, each child ``importlib.metadata`` takes
    for a distribution with the stat of the child and of its metadata files. An upgrade
    renames the ``*.dist-info``; a reinstall replaces it (new inode and times); an edited
    ``PKG-INFO`` file changes its stat. Other files in the directory are left out. A zip file
    (or anything else) is represented by its stat, so any change to it counts. None when the
    entry cannot be stat'ed.
    """
    path = entry or "."
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat_.S_ISDIR(st.st_mode):
        return ("file", st.st_mtime_ns, st.st_ino, st.st_size, st.st_dev)
    try:
        children = os.listdir(path)
    except OSError:
        children = []  # importlib.metadata finds nothing in an unreadable directory either
    is_egg = os.path.basename(os.path.abspath(path)).lower().endswith(".egg")
    dists = []
    for child in sorted(children):
        low = child.lower()
        if low.endswith(_DIST_SUFFIXES) or (is_egg and low == "egg-info"):
            full = os.path.join(path, child)
            files = [os.path.join(full, name) for name in _METADATA_FILES]
            dists.append((child, stats([full, *files])))
    return (os.path.abspath(path), tuple(dists))


def _fingerprint_stats(fingerprint: Fingerprint) -> list[Stat]:
    """The stats inside a fingerprint, to tell whether any is too fresh to be trusted."""
    if fingerprint is None:
        return []
    if fingerprint[0] == "file":
        return [fingerprint[1:4]]
    return [st for _child, found in fingerprint[1] for st in found]


def scan() -> list[str]:
    """Every distribution importable through ``sys.path``, sorted case-insensitively.

    Each line is ``name version (location)``, the location being the directory that holds
    the distribution's metadata (usually ``site-packages``).
    """
    # importlib.metadata keys its directory listings on float mtimes; a change within the same
    # tick would be missed. Scans are rare, so start each from fresh listings.
    importlib.invalidate_caches()
    rows = set()
    for dist in importlib.metadata.distributions():
        name, version = _name_version(dist)
        if name:
            rows.add(f"{name} {version} ({_location(dist)})")
    return sorted(rows, key=lambda row: (row.lower(), row))


def _name_version(dist: importlib.metadata.Distribution) -> tuple[str | None, str]:
    """Name and version from the metadata headers.

    Only the header block is read: ``Distribution.metadata`` parses the whole file, long
    description included, which makes a full scan ten times slower.
    """
    try:
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    except (OSError, UnicodeDecodeError):
        text = ""
    name = version = None
    for line in text.splitlines():
        if not line.strip():
            break  # end of the headers
        if name is None and line.startswith("Name:"):
            name = line[5:].strip()
        elif version is None and line.startswith("Version:"):
            version = line[8:].strip()
    if name is None or version is None:
        try:
            meta: Any = dist.metadata
            name = name or meta["Name"]
            version = version or meta["Version"]
        except Exception:  # a broken distribution must not break the trial
            pass
    return name, version or "unknown"


def _location(dist: importlib.metadata.Distribution) -> str:
    try:
        return os.path.abspath(str(dist.locate_file("")))
    except (NotImplementedError, TypeError, ValueError):
        return "unknown"


class PackageWatcher:
    """The installed packages of this process, rescanned only when what they are read from
    changed (see the module docstring).

    ``scans`` counts the full scans, for tests and benchmarks.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._signature: Signature | None = None
        #: Per ``sys.path`` entry: the stat it was last listed at (None: list it again) and
        #: its fingerprint then.
        self._entries: dict[str, tuple[EntryStat, Fingerprint]] = {}
        #: The fingerprints the current package list was scanned from; None: scan again.
        self._fingerprints: tuple[Fingerprint, ...] | None = None
        self._packages: list[str] = []
        self.scans = 0
        #: (the sys.path it was set up for, an inotify watch on its entries) while the
        #: package list is known to match them; see :meth:`current`.
        self._quiet: tuple[tuple, watch.FileWatch] | None = None

    def current(self, cache: bool = True) -> list[str]:
        """The package list; the same list object as last time while nothing changed."""
        where = _where()
        with self._lock:  # one thread reading an event must not let another miss it
            quiet, self._quiet = self._quiet, None
            if cache and quiet is not None and quiet[0] == where and not quiet[1].changed():
                self._quiet = quiet
                return self._packages  # one read of the watch instead of a stat per entry
        # Set up before the stats: a change from here on shows in the watch.
        entries = watch.watch_entries([os.path.abspath(e or ".") for e in where[0]])
        taken = time.time_ns()
        signature = path_signature()  # taken first: a change during the scan is seen next time
        with self._lock:
            if cache and signature == self._signature:
                self._keep_quiet(where, entries)
                return self._packages
            fingerprints = self._fingerprints_of(signature, taken, cache)
            # A directory changed just now may change again within the same clock tick.
            trusted = None if is_racy(signature[1], taken) else signature
            if cache and fingerprints == self._fingerprints:
                self._signature = trusted  # e.g. an output file written next to the script
                self._keep_quiet(where, entries)
                return self._packages
        packages = scan()
        with self._lock:
            self.scans += 1
            if packages != self._packages:
                self._packages = packages
            fresh = any(is_racy(_fingerprint_stats(f), taken) for f in fingerprints)
            self._fingerprints = None if fresh else fingerprints
            self._signature = None if fresh else trusted
            self._keep_quiet(where, entries)
            return self._packages

    def _keep_quiet(self, where: tuple, entries: watch.FileWatch | None) -> None:
        """Let the next calls trust ``entries`` while the answer rests on stats that are not
        racy (a racy one is looked at again by the next call, watch or not)."""
        if entries is not None and self._signature is not None:
            self._quiet = (where, entries)

    def _fingerprints_of(
        self, signature: Signature, taken: int, cache: bool
    ) -> tuple[Fingerprint, ...]:
        """Each entry's fingerprint, listing again only the entries whose stat changed."""
        entries, found = signature
        known = self._entries
        fingerprints = []
        for entry, st in zip(entries, found, strict=True):
            previous = known.get(entry)
            if cache and previous is not None and previous[0] is not None and previous[0] == st:
                fingerprints.append(previous[1])
                continue
            fingerprint = entry_fingerprint(entry)
            # A stat taken just after a change may not show the next one: list again then.
            known[entry] = (None if is_racy([st], taken) else st, fingerprint)
            fingerprints.append(fingerprint)
        for gone in set(known) - set(entries):
            del known[gone]
        return tuple(fingerprints)
