"""Content digests of files, remembered by their stat data so unchanged files are not re-read.

A file's digest is the xxh3-128 of its bytes, as 32 hex characters. Hashing a large file costs
a full read, so (like git's index) each digest is remembered with the file's ``st_size``,
``st_mtime_ns``, ``st_ino`` and ``st_ctime_ns`` and the time it was hashed. A later lookup that
finds the same four values reuses the digest after one ``os.stat``.

**Racily clean files.** A file rewritten within one timestamp tick of being hashed can keep all
four values while its content changed (coarse timestamps, same size). An entry is therefore
trusted only when the file's mtime is older than the moment hashing started by more than
:data:`RACY_NS` (filesystem clocks lag the system clock by up to one tick); otherwise the file
is hashed again, and the new entry, hashed later, becomes trustworthy.

Entries live in memory per process and in one JSON file per user
(``$DASKPERIMENT_STAT_CACHE``, else ``$XDG_CACHE_HOME/daskperiment/stat-cache.json``, else
``~/.cache/...``), written atomically when new digests were added. Concurrent processes may
overwrite each other's additions: a lost entry only means one more read of that file.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import threading
import time
from pathlib import Path

import xxhash

from ..log import logger

#: An entry hashed less than this long after the file's mtime is not trusted (racily clean).
RACY_NS = 50_000_000
#: Read size when hashing.
CHUNK = 1 << 20
_VERSION = 1
#: Entries kept on disk; beyond this the older half is forgotten (and hashed again if seen).
MAX_ENTRIES = 200_000


def cache_path() -> Path:
    """Where the stat cache of this user is kept."""
    explicit = os.environ.get("DASKPERIMENT_STAT_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "daskperiment" / "stat-cache.json"


def hash_file(path: str) -> str:
    """The xxh3-128 digest of the file ``path`` (read in 1 MiB blocks, no copies)."""
    h = xxhash.xxh3_128()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _signature(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


class StatCache:
    """Path -> (stat signature, hashed-at time, digest); see the module docstring."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._entries: dict[str, list] = {}
        self._loaded = False
        self._dirty = False
        self._lock = threading.Lock()
        #: How many files were read to hash them (tests and benchmarks look at this).
        self.hashed = 0

    def digest(self, path: str, st: os.stat_result | None = None) -> str:
        """Digest of the regular file ``path`` (absolute), reusing a trusted entry.

        Raises ``OSError`` when the file cannot be read (the caller says what to record).
        """
        if st is None:
            st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(f"not a regular file: {path}")
        sig = _signature(st)
        self._load()
        entry = self._entries.get(path)
        if entry is not None and entry[0] == sig and st.st_mtime_ns + RACY_NS < entry[1]:
            return entry[2]
        started = time.time_ns()
        digest = hash_file(path)
        self.hashed += 1
        # The stat after reading: a file changed while it was read gets no usable entry.
        if _signature(os.stat(path)) == sig:
            with self._lock:
                self._entries[path] = [sig, started, digest]
                self._dirty = True
        return digest

    def unchanged(self, files: dict[str, str]) -> str | None:
        """None if every file still has its recorded digest, else the first changed path."""
        for path, digest in files.items():
            try:
                if self.digest(path) != digest:
                    return path
            except OSError:
                return path
        return None

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") == _VERSION and isinstance(data.get("entries"), dict):
                self._entries.update(data["entries"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            logger.warning("Stat cache %s ignored (%s); files are hashed again", self.path, exc)

    def save(self) -> None:
        """Write the entries to disk if new digests were added (atomically; never raises)."""
        if not self._dirty or self.path is None:
            return
        with self._lock:
            if len(self._entries) > MAX_ENTRIES:  # keep the most recently hashed half
                newest = sorted(self._entries.items(), key=lambda kv: kv[1][1])
                self._entries = dict(newest[-MAX_ENTRIES // 2 :])
            body = json.dumps({"version": _VERSION, "entries": self._entries})
            self._dirty = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".stat-cache-")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(body)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            # Only a cache: the digests are right, the next process hashes again.
            logger.debug("Stat cache %s not written: %s", self.path, exc)


_SHARED: StatCache | None = None
_SHARED_FOR: tuple[str | None, ...] = ()


def shared() -> StatCache:
    """The process-wide stat cache (backed by :func:`cache_path`)."""
    global _SHARED, _SHARED_FOR
    env = os.environ
    key = (env.get("DASKPERIMENT_STAT_CACHE"), env.get("XDG_CACHE_HOME"))
    if _SHARED is None or key != _SHARED_FOR:
        _SHARED, _SHARED_FOR = StatCache(cache_path()), key
    return _SHARED
