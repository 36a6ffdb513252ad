"""The purity log: which output each (step, input) last newly gave, in a few batch objects.

An *entry* says that in trial ``trial_id`` (record ``record``) step ``step`` gave output digest
``output`` for input digest ``inputs``, and that this output was new for that input (first
seen, or different from the one remembered before). Of several entries for one
``(step, inputs)``, the one of the highest trial id is the one remembered, so the order in
which batches are written, read or merged never changes what is remembered.

**Layout.** Each ref ``experiments/<id>/purity-log/<level>-<time ns>-<8 hex>`` names a batch
object (JSON)::

    {"type": "daskperiment.purity-batch", "version": 1, "level": 0, "count": 2,
     "entries": [[step, inputs, output, trial_id, record oid], ...]}

with the entries sorted by ``(step, inputs)``, one per pair. A batch of more than
:data:`INLINE_MAX` entries links them instead (``"entries": {"$link": oid}``, a JSON list) and
adds ``"keys": {"$link": oid}``: a ``uint64`` array of shape ``(count, 3)`` holding, per entry
in the same order, :func:`key_hash`, the trial rank (``trial_id + 1``; 0 for none) and
:func:`output_hash`, so that a process loads a big batch without decoding its entries. Record
oids are plain strings, not links: the log never keeps a deleted trial's record alive.

**Writing.** A process's pending purity updates are written at its history-index flush as
one batch of level 0 (one object and one ref, where one ref per new input was written before).
When a writer sees :data:`MERGE_AT` batches of one level, it writes their union (by the rule
above) as one batch of the next level and then deletes their refs: the union exists before
any part is removed, so every entry is always in some batch a listing finds (a reader whose
listing raced a merge finds the union at its next refresh). Two writers merging overlapping
sets at once leave overlapping batches, merged again later. Each entry is rewritten about
``log_8`` (trials) times in all; a 100,000-trial sweep keeps a few dozen batches.

**Reading.** A process loads the batches once, at its first purity check, into a table of
64-bit hashes, ``key_hash -> (rank, output_hash)`` (about 100 bytes per entry), and reads the
batches written since at each of its own flushes: another process's entries are seen within
one flush interval of this one (:data:`~daskperiment.history.FLUSH_EVERY` trials or
:data:`~daskperiment.history.FLUSH_SECONDS`), as they are written within one of that one's.
Two ``(step, inputs)`` pairs share a 64-bit key hash with probability ~n^2/2^65 (3e-8 for a
million pairs); a shared hash would compare a step's output with another step's.

Stores written before the log hold one ref per input, ``experiments/<id>/purity/<step>/<inputs>``:
their names are listed once per process and read where a pair is asked about (never written).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
import xxhash

import daskperiment_store as store

from .historyframe import paused_gc
from .log import logger
from .perprocess import PerProcess
from .reads import MALFORMED, read_json
from .record import purity_log_prefix, purity_prefix

BATCH_TYPE = "daskperiment.purity-batch"
BATCH_VERSION = 1
#: Batches of one level merged into one batch of the next.
MERGE_AT = 8
#: Above this many entries a batch links them and carries the key array.
INLINE_MAX = 256

_MASK = (1 << 64) - 1
#: What reading a damaged batch raises (skipped: derived data, reported by fsck).
DAMAGE: tuple[type[Exception], ...] = (
    store.errors.StoreError,
    *MALFORMED,
    KeyError,
    TypeError,
    ValueError,
    AttributeError,
    IndexError,
)


class Entry(NamedTuple):
    step: str
    inputs: str
    output: str
    trial_id: int | None
    record: str | None


def key_hash(step: str, inputs: str) -> int:
    """64-bit hash of a ``(step, inputs)`` pair (xxh3-64 of ``step \\0 inputs``, UTF-8)."""
    return xxhash.xxh3_64_intdigest(f"{step}\0{inputs}".encode("utf-8", "surrogatepass"))


def output_hash(output: str) -> int:
    """64-bit hash of an output digest (xxh3-64 of its UTF-8 text)."""
    return xxhash.xxh3_64_intdigest(output.encode("utf-8", "surrogatepass"))


def rank(trial_id: Any) -> int:
    """Order of an entry's trial: ``trial_id + 1``, 0 for none (a pre-log marker)."""
    return trial_id + 1 if type(trial_id) is int and trial_id >= 0 else 0


class Table:
    """What one process knows of one experiment's log: ``key -> rank << 64 | output``."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.known: dict[int, int] = {}
        #: batch ref name -> level, for the batches read (or found unreadable)
        self.batches: dict[str, int] = {}
        self.unreadable: set[str] = set()
        #: names of the pre-log per-input refs, listed once
        self.legacy: frozenset[str] = frozenset()
        self.loaded = False

    def add(self, keys: list[int], values: list[int]) -> None:
        known = self.known
        for key, value in zip(keys, values, strict=True):
            old = known.get(key)
            if old is None or old >> 64 < value >> 64:
                known[key] = value

    def get(self, step: str, inputs: str) -> tuple[int, int] | None:
        """``(rank, output hash)`` remembered for the pair, None if the log has none."""
        value = self.known.get(key_hash(step, inputs))
        return None if value is None else (value >> 64, value & _MASK)


class _Tables:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_store: dict[tuple[str, str], Table] = {}


_TABLES: PerProcess[_Tables] = PerProcess(_Tables)


def table(st: store.Store, experiment_id: str, current: bool = False) -> Table:
    """This process's table of the experiment's log, loaded on first use; with ``current``,
    an already loaded table also reads the batches written since."""
    tables = _TABLES.get()
    t = tables.by_store.get((st.url, experiment_id))
    if t is None:
        with tables.lock:
            t = tables.by_store.setdefault((st.url, experiment_id), Table())
    if not t.loaded:
        with t.lock:
            if not t.loaded:
                t.legacy = frozenset(st.refs.names(purity_prefix(experiment_id)))
                refresh(st, experiment_id, t)
                t.loaded = True
                return t
    if current:
        refresh(st, experiment_id, t)
    return t


def loaded_table(st: store.Store, experiment_id: str) -> Table | None:
    """The table if this process has loaded it (nothing is read), else None."""
    tables = _TABLES.current()
    t = None if tables is None else tables.by_store.get((st.url, experiment_id))
    return t if t is not None and t.loaded else None


def refresh(st: store.Store, experiment_id: str, t: Table) -> None:
    """Read the batches listed now that ``t`` has not read; forget those merged away."""
    prefix = purity_log_prefix(experiment_id)
    names = st.refs.names(prefix)
    with t.lock:
        for name in names:
            if name in t.batches:
                continue
            t.batches[name] = _level_of(name[len(prefix) :])
            try:
                with paused_gc():  # a big batch is many ints, all kept
                    keys, values = _read_keys(st, st.refs.get(name))
            except store.errors.RefNotFound:  # merged away since the listing
                del t.batches[name]
                continue
            except DAMAGE as exc:
                logger.debug("purity log batch %s ignored: %s", name, exc)
                t.unreadable.add(name)
                continue
            t.add(keys, values)
        present = set(names)
        for name in [n for n in t.batches if n not in present]:
            del t.batches[name]
            t.unreadable.discard(name)


def record(st: store.Store, experiment_id: str, entries: Iterable[Entry]) -> int:
    """Write ``entries`` as one batch, leaving out those the log already has from the same
    or a later trial; then merge a level that is full. Returns how many were written."""
    t = table(st, experiment_id, current=True)
    with t.lock:
        fresh = []
        for entry in _latest(entries).values():
            known = t.get(entry.step, entry.inputs)
            if known is None or known[0] < rank(entry.trial_id):
                fresh.append(entry)
        if fresh:
            name, keys, values = _write_batch(st, experiment_id, fresh, 0)
            t.batches[name] = 0
            t.add(keys, values)
        try:
            with paused_gc():  # a merge builds many small objects, all kept
                _merge_full_level(st, experiment_id, t)
        except DAMAGE as exc:  # the batch is written: merging waits for a later flush
            logger.debug("purity log of %s not merged: %s", experiment_id, exc)
    return len(fresh)


def entries(st: store.Store, experiment_id: str) -> dict[tuple[str, str], Entry]:
    """Every entry remembered in the log, ``(step, inputs) -> Entry`` (reads every batch;
    unreadable batches are skipped). Pre-log per-input refs are not included."""
    prefix = purity_log_prefix(experiment_id)
    found: dict[tuple[str, str], Entry] = {}
    for name in st.refs.names(prefix):
        try:
            batch = _read_entries(st, st.refs.get(name))
        except DAMAGE as exc:
            logger.debug("purity log batch %s ignored: %s", name, exc)
            continue
        for entry in batch:
            _keep_latest(found, entry)
    return found


# -- batches ---------------------------------------------------------------------------


def _level_of(suffix: str) -> int:
    head = suffix.partition("-")[0]
    return int(head) if head.isdigit() and len(head) <= 3 else 0


def _latest(entries: Iterable[Entry]) -> dict[tuple[str, str], Entry]:
    found: dict[tuple[str, str], Entry] = {}
    for entry in entries:
        _keep_latest(found, entry)
    return found


def _keep_latest(found: dict[tuple[str, str], Entry], entry: Entry) -> None:
    pair = (entry.step, entry.inputs)
    old = found.get(pair)
    if old is None or rank(old.trial_id) < rank(entry.trial_id):
        found[pair] = entry


def _hashes(entries: list[Entry]) -> tuple[list[int], list[int]]:
    keys = [key_hash(e.step, e.inputs) for e in entries]
    values = [rank(e.trial_id) << 64 | output_hash(e.output) for e in entries]
    return keys, values


def _write_batch(
    st: store.Store, experiment_id: str, batch: list[Entry], level: int
) -> tuple[str, list[int], list[int]]:
    """Store one batch and create its ref: ``(ref name, keys, values)``."""
    batch = sorted(batch, key=lambda e: (e.step, e.inputs))
    keys, values = _hashes(batch)
    rows = [list(e) for e in batch]
    body: dict[str, Any] = {
        "type": BATCH_TYPE,
        "version": BATCH_VERSION,
        "level": level,
        "count": len(rows),
    }
    if len(rows) <= INLINE_MAX:
        body["entries"] = rows
    else:
        array = np.empty((len(rows), 3), dtype="<u8")
        array[:, 0] = keys
        array[:, 1] = [v >> 64 for v in values]
        array[:, 2] = [v & _MASK for v in values]
        body["entries"] = store.Link(st.put(rows))
        body["keys"] = store.Link(st.put(array))
    oid = st.put(body)
    name = f"{purity_log_prefix(experiment_id)}{level}-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    st.refs.create(name, oid)
    return name, keys, values


def _header(st: store.Store, oid: str) -> dict[str, Any]:
    header = read_json(st, oid)
    if not isinstance(header, dict) or header.get("type") != BATCH_TYPE:
        raise ValueError(f"object {oid} is not a {BATCH_TYPE!r} mapping")
    version = header.get("version")
    if type(version) is not int or version > BATCH_VERSION:
        raise ValueError(
            f"object {oid} is a purity log batch of version {version!r}, newer than this "
            f"daskperiment reads ({BATCH_VERSION}): upgrade daskperiment"
        )
    return header


def _read_entries(st: store.Store, oid: str, header: dict[str, Any] | None = None) -> list[Entry]:
    """The well-formed entries of batch ``oid`` (malformed ones are skipped); ``header``: the
    batch object, when the caller has read it already."""
    rows = (header if header is not None else _header(st, oid))["entries"]
    if isinstance(rows, store.Link):
        rows = read_json(st, rows.oid)
    if not isinstance(rows, list):
        raise ValueError(f"the entries of purity log batch {oid} are not a list")
    return [Entry(*row) for row in rows if _well_formed(row)]


def _well_formed(row: Any) -> bool:
    return (
        isinstance(row, list)
        and len(row) == 5
        and all(type(x) is str for x in row[:3])
        and (row[3] is None or type(row[3]) is int)
        and (row[4] is None or type(row[4]) is str)
    )


def _read_keys(st: store.Store, oid: str) -> tuple[list[int], list[int]]:
    """``(keys, values)`` of batch ``oid``: from its key array if it has one."""
    header = _header(st, oid)
    link = header.get("keys")
    if link is None:
        return _hashes(_read_entries(st, oid, header))
    if not isinstance(link, store.Link):
        raise ValueError(f"the keys of purity log batch {oid} are not a link")
    array = st.get(link.oid, kinds={"ndarray"})
    if array.dtype != np.dtype("<u8") or array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"the keys of purity log batch {oid} are not a (n, 3) uint64 array")
    ranks, outputs = array[:, 1].tolist(), array[:, 2].tolist()
    return array[:, 0].tolist(), [r << 64 | o for r, o in zip(ranks, outputs, strict=True)]


def _merge_full_level(st: store.Store, experiment_id: str, t: Table) -> None:
    """Merge the batches of each level holding :data:`MERGE_AT` readable ones, lowest first
    (a merge that fills the next level merges that one too)."""
    level = 0
    while True:
        full = _full_level(t, level)
        if full is None:
            return
        level, names = full
        merged: dict[tuple[str, str], Entry] = {}
        done = []
        for name in names:
            try:
                batch = _read_entries(st, st.refs.get(name))
            except store.errors.RefNotFound:  # another writer merged it meanwhile
                t.batches.pop(name, None)
                continue
            except DAMAGE as exc:
                logger.debug("purity log batch %s left unmerged: %s", name, exc)
                t.unreadable.add(name)
                continue
            done.append(name)
            for entry in batch:
                _keep_latest(merged, entry)
        if len(done) < 2:
            return
        name, _, _ = _write_batch(st, experiment_id, list(merged.values()), level + 1)
        t.batches[name] = level + 1
        for old in done:
            try:
                st.refs.delete(old)
            except store.errors.RefNotFound:
                pass
            t.batches.pop(old, None)
        level += 1


def _full_level(t: Table, lowest: int) -> tuple[int, list[str]] | None:
    """The lowest level from ``lowest`` up with :data:`MERGE_AT` readable batches."""
    by_level: dict[int, list[str]] = {}
    for name, level in t.batches.items():
        if level >= lowest and name not in t.unreadable:
            by_level.setdefault(level, []).append(name)
    for level in sorted(by_level):
        if len(by_level[level]) >= MERGE_AT:
            return level, by_level[level]
    return None
