"""Installed Python distributions, as ``"name version (location)"`` lines.

Listing every installed distribution means opening each ``*.dist-info`` directory on
``sys.path``. That is done once per process and again only when something could have changed:
installing, removing or upgrading a distribution adds, removes or renames entries in the
directory that holds it, which changes that directory's modification time. So a cheap
``os.stat`` of each ``sys.path`` entry (plus the list itself) tells whether the previous list
still holds; a repeated capture costs microseconds, not a rescan.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import threading
import time
from typing import Any

from .watch import is_racy

#: What ``os.stat`` says about each ``sys.path`` entry; None for entries that are not files.
Signature = tuple[tuple[str, ...], tuple[tuple[int, int, int] | None, ...]]


def path_signature() -> Signature:
    """The state of ``sys.path`` that decides whether the installed distributions changed."""
    entries = tuple(p for p in sys.path if isinstance(p, str))
    stats: list[tuple[int, int, int] | None] = []
    for entry in entries:
        try:
            st = os.stat(entry or ".")  # '' on sys.path is the current directory
        except (OSError, ValueError):
            stats.append(None)  # import hooks and vanished directories
            continue
        stats.append((st.st_mtime_ns, st.st_ino, st.st_size))
    return entries, tuple(stats)


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
    """The installed packages of this process, rescanned only when ``sys.path`` changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._signature: Signature | None = None
        self._packages: list[str] = []

    def current(self, cache: bool = True) -> list[str]:
        """The package list; the same list object as last time while nothing changed."""
        taken = time.time_ns()
        signature = path_signature()  # taken first: a change during the scan is seen next time
        with self._lock:
            if cache and signature == self._signature:
                return self._packages
        packages = scan()
        with self._lock:
            if packages != self._packages:
                self._packages = packages
            # A directory changed just now may change again within the same clock tick.
            self._signature = None if is_racy(signature[1], taken) else signature
            return self._packages
