"""History: one summary row per trial, and the index that keeps reading them fast.

Every trial record stays the truth; the *history index* is a derived, disposable summary:
the ref ``experiments/<id>/index`` names a root object ``{"chunks": {"<k>": Link}}`` whose
chunk ``k`` holds, column by column, the rows of final trials ``k*256 .. k*256+255``
(with the oid of the record each row was made from). Reading the history lists the names of
the trial refs (no ref is read), takes the row of each indexed trial from the index, and reads
the ref and record of every other trial (not yet indexed, running, interrupted). A final
record never changes, so an indexed row never goes stale: the table is always correct,
however far behind the index is.

A process that runs trials adds their rows to the index in batches (every
:data:`FLUSH_EVERY` trials or :data:`FLUSH_SECONDS` seconds, and at exit), with a
compare-and-swap of the ref, rewriting only the chunks that changed: the cost per trial
does not grow with the history.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Mapping
from typing import Any

import daskperiment_store as store
from daskperiment_store import Link, Oid

from . import storedir
from .errors import DamagedTrial
from .historyframe import frame as frame
from .historyframe import paused_gc
from .identity import global_id_of
from .ids import parse_trial_id
from .indexchunk import EncodedChunk, EncodedRoot
from .log import logger
from .reads import MALFORMED, read_json, read_trial
from .record import (
    DAMAGED,
    FAILED,
    RUNNING,
    SUCCESS,
    effective,
    index_ref,
    trial_ref,
    trials_prefix,
)

CHUNK_SIZE = 256
FLUSH_EVERY = 32
FLUSH_SECONDS = 10.0
INDEX_TYPE = "daskperiment.history-index"

COLUMNS = ["Result", "Result Type", "Success", "Finished", "Process Time", "Description"]
VERBOSE_COLUMNS = [
    "Status",
    "Seed",
    "Parameters Digest",
    "Code Digest",
    "Environment Digest",
    "Result Digest",
    "Reused Steps",
]


#: What reading a damaged ref or object raises (a corrupt file, a malformed record).
_DAMAGE = (store.errors.StoreError, KeyError, TypeError, ValueError, AttributeError)


def load_trial(st: store.Store, experiment_id: str, trial_id: int) -> tuple[str, dict[str, Any]]:
    """``(oid, record)`` of a trial, read as JSON only. :class:`daskperiment_store.errors.RefNotFound` when
    there is no such trial; a malformed (hostile) record raises what :func:`reads.read_trial`
    raises (nothing is decoded); :class:`DamagedTrial` when its ref or record cannot be read
    (corrupt or missing object, unparsable ref), so one damaged trial never hides the rest."""
    try:
        oid = st.refs.get(trial_ref(experiment_id, trial_id))
    except store.errors.RefNotFound:
        raise
    except _DAMAGE as exc:
        raise DamagedTrial(trial_id, experiment_id, f"its ref: {_reason(exc)}") from exc
    try:
        record = read_trial(st, oid, trial_id, experiment_id)
    except MALFORMED:
        raise
    except _DAMAGE as exc:
        raise DamagedTrial(trial_id, experiment_id, f"its record: {_reason(exc)}") from exc
    if "status" not in record:
        raise DamagedTrial(trial_id, experiment_id, f"its record {oid} lacks a status")
    return oid, record


def _reason(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return f"{type(exc).__name__}: {text}"


def _unreadable_row(
    trial_id: int, record_oid: str | None, status: str, description: str
) -> dict[str, Any]:
    """The history row of a trial whose record is not shown: only its id, status and why."""
    return {
        "trial_id": trial_id,
        "record": record_oid,
        "status": status,
        "interrupted": False,
        "params": {},
        "result": None,
        "result_type": None,
        "finished": None,
        "process_time": None,
        "description": description,
        "seed": None,
        "digests": {"parameters": None, "code": None, "environment": None, "result": None},
        "reused": [],
    }


def damaged_row(trial_id: int, reason: str) -> dict[str, Any]:
    """The history row of a trial that cannot be read: status ``damaged``, and what to do."""
    return _unreadable_row(trial_id, None, DAMAGED, f"Damaged: {reason}; run `daskperiment fsck`")


def row_of(
    record: Mapping[str, Any], record_oid: str, trial_id: int | None = None
) -> dict[str, Any]:
    """The history row of a trial record (plain JSON data); ``trial_id``: its number in this
    store, when it arrived renumbered (else the number its record says)."""
    record = effective(dict(record))
    status = record.get("status")
    steps = record.get("steps") or {}
    return {
        "trial_id": record["trial_id"] if trial_id is None else trial_id,
        "global_id": global_id_of(record, record_oid),
        "record": record_oid,
        "status": status,
        "interrupted": bool(record.get("interrupted")),
        "params": record.get("params") or {},
        "parameter_order": record.get("parameter_order") or [],
        "result": record.get("result_value")
        if record.get("result_value") is not None
        else record.get("result_repr"),
        "result_type": record.get("result_type"),
        "finished": record.get("finished"),
        "process_time": record.get("process_time"),
        "description": record.get("description") or ("Running" if status == RUNNING else None),
        "seed": record.get("seed"),
        "digests": record.get("digests")
        or {
            "parameters": _oid(record.get("parameters")),
            "code": _oid(record.get("code")),
            "environment": _oid(record.get("environment")),
            "result": None,
        },
        "reused": [name for name, s in steps.items() if s.get("reused")],
    }


#: Status of a trial whose record is not a trial record (a malformed or hostile object).
MALFORMED_STATUS = "malformed"


def malformed_row(trial_id: int, record_oid: str | None, exc: Exception) -> dict[str, Any]:
    """The row of a trial whose ref names something that is not a trial record."""
    reason = f"malformed record (not loaded, nothing ran): {exc}"
    return _unreadable_row(trial_id, record_oid, MALFORMED_STATUS, reason)


def _oid(link: Any) -> str | None:
    return link.oid if isinstance(link, Link) else None


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


class HistoryReader:
    """Builds rows for every trial from the index and the records the index lacks.

    Rows of final records are kept in memory by trial id: a final record never changes (the
    only move a trial ref makes is from the running record to the final one).
    """

    def __init__(self, experiment_id: str) -> None:
        self.experiment_id = experiment_id
        self._final_rows: dict[int, dict[str, Any]] = {}
        self._chunks: dict[str, dict[int, dict[str, Any]]] = {}
        self._root_oid: str | None = None
        self._indexed: dict[int, dict[str, Any]] = {}
        #: final rows missing from the index, found while reading (see take_discovered)
        self.discovered: dict[int, dict[str, Any]] = {}
        #: index chunks already decoded by someone else (opening reads the last one)
        self._kept: dict[str, Any] = {}

    def trial_ids(self, st: store.Store) -> list[int]:
        """Ids of every trial of the experiment, ascending (names only, no ref is read)."""
        prefix = trials_prefix(self.experiment_id)
        ids = [name[len(prefix) :] for name in st.refs.names(prefix)]
        return sorted(n for n in map(parse_trial_id, ids) if n is not None)

    def keep_chunk(self, oid: str, chunk: Any) -> None:
        """The decoded index chunk ``oid``, read by someone else: the next read of the index
        turns it into rows instead of reading it again (objects never change)."""
        if oid not in self._chunks:
            self._kept = {oid: chunk}

    def remember(self, row: dict[str, Any]) -> None:
        """Keep the row of a final record this process just wrote."""
        if row["status"] not in (RUNNING, MALFORMED_STATUS):
            self._final_rows[row["trial_id"]] = row

    def rows(self, st: store.Store, trial_ids: Iterable[int]) -> list[dict[str, Any]]:
        """Rows of ``trial_ids``, in that order."""
        indexed = self._load_index(st)
        rows = []
        for trial_id in trial_ids:
            row = self._final_rows.get(trial_id) or indexed.get(trial_id)
            if row is None:
                row = self._read_row(st, trial_id)
                if row is None:  # deleted while we listed
                    continue
                if row["status"] == DAMAGED:  # not remembered: it may be repaired
                    rows.append(row)
                    continue
                self.remember(row)
                if row["status"] != RUNNING and not row.get("interrupted"):
                    # final but not indexed (its writer died before flushing): a writer
                    # process adds it with its next flush, so the index heals itself
                    self.discovered[trial_id] = row
            rows.append(row)
        return rows

    def forget(self, trial_id: int) -> None:
        """Drop what is kept of a deleted trial."""
        self._final_rows.pop(trial_id, None)
        self._indexed.pop(trial_id, None)
        self._root_oid = None

    def take_discovered(self) -> list[dict[str, Any]]:
        """Final rows read from records because the index lacked them (then forgotten)."""
        found, self.discovered = list(self.discovered.values()), {}
        return found

    def _read_row(self, st: store.Store, trial_id: int) -> dict[str, Any] | None:
        try:
            oid, record = load_trial(st, self.experiment_id, trial_id)
            return row_of(record, oid, trial_id)
        except store.errors.RefNotFound:
            return None
        except MALFORMED as exc:  # never decoded: shown as malformed, the others still read
            return malformed_row(trial_id, getattr(exc, "oid", None), exc)
        except DamagedTrial as exc:  # the row says so: no log line on every read
            logger.debug("%s", exc)
            return damaged_row(trial_id, exc.reason)
        except _DAMAGE as exc:  # fields of an unexpected type in the record
            logger.debug("Trial %s cannot be shown: %s", trial_id, _reason(exc))
            return damaged_row(trial_id, f"its record: {_reason(exc)}")

    def _load_index(self, st: store.Store) -> dict[int, dict[str, Any]]:
        try:
            root_oid = st.refs.get(index_ref(self.experiment_id))
        except store.errors.RefNotFound:
            return {}
        except store.errors.StoreError as exc:
            # Derived data: every row then comes from its record; a writer rebuilds it.
            logger.debug("history index of %s ignored: %s", self.experiment_id, exc)
            return {}
        if root_oid == self._root_oid:
            return self._indexed
        rows: dict[int, dict[str, Any]] = {}
        try:
            with paused_gc():  # plain acyclic data: no collection while it is decoded
                for link in chunk_links(read_json(st, root_oid)).values():
                    chunk = self._chunks.get(link.oid)
                    if chunk is None:
                        kept = self._kept.pop(link.oid, None)
                        value = read_json(st, link.oid) if kept is None else kept
                        chunk = self._chunks[link.oid] = rows_of_chunk(value)
                    rows.update(chunk)
        except _DAMAGE as exc:
            # A damaged index is only slower: every row then comes from its record.
            logger.debug("history index of %s ignored: %s", self.experiment_id, exc)
            return {}
        self._root_oid, self._indexed = root_oid, rows
        return rows


#: Fields of a row, in the order they are stored as columns of an index chunk.
ROW_FIELDS = (
    "trial_id",
    "global_id",
    "record",
    "status",
    "interrupted",
    "params",
    "result",
    "result_type",
    "finished",
    "process_time",
    "description",
    "seed",
    "digests",
    "reused",
    "parameter_order",  # absent from chunks written before it was kept
)


def chunk_links(root: Any) -> dict[str, Link]:
    """The chunks an index root names; ValueError if it is not an index root."""
    chunks = root.get("chunks") if isinstance(root, dict) else None
    if not isinstance(chunks, dict) or not all(isinstance(v, Link) for v in chunks.values()):
        raise ValueError("not a history index")
    return chunks


def chunk_of(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """An index chunk: rows stored column by column (smaller and faster to parse)."""
    rows = sorted(rows, key=lambda r: r["trial_id"])
    return {"columns": {f: [r.get(f) for r in rows] for f in ROW_FIELDS}}


def rows_of_chunk(chunk: dict[str, Any]) -> dict[int, dict[str, Any]]:
    columns = chunk["columns"]
    fields = [f for f in ROW_FIELDS if f in columns]
    return {
        values[0]: dict(zip(fields, values, strict=True))
        for values in zip(*(columns[f] for f in fields), strict=True)
    }


# ---------------------------------------------------------------------------------------
# Writing the index
# ---------------------------------------------------------------------------------------


def flush_index(st: store.Store, experiment_id: str, rows: Iterable[dict[str, Any]]) -> None:
    """Add final ``rows`` to the index (compare-and-swap, retried on a race).

    Rows of running trials, and of trials shown as interrupted, are never indexed: they are
    read from their records, which is what keeps them up to date. The chunks and root this
    process wrote last are kept encoded (daskperiment/indexchunk.py), so a flush that adds
    rows after a chunk's last one encodes only those rows and the links that changed.
    """
    rows = [r for r in rows if r["status"] in (SUCCESS, FAILED) and not r.get("interrupted")]
    if not rows:
        return
    by_chunk: dict[str, dict[int, dict]] = {}
    for row in rows:
        by_chunk.setdefault(str(row["trial_id"] // CHUNK_SIZE), {})[row["trial_id"]] = row
    name = index_ref(experiment_id)
    for _ in range(50):
        damaged = False
        try:
            current: str | None = st.refs.get(name)
        except store.errors.RefNotFound:
            current = None
        except store.errors.CorruptRef as exc:
            logger.warning("History index ref of %s is damaged; rebuilding it (%s)", name, exc)
            current, damaged = None, True
        root = _current_root(st, current)
        changed = {
            k: Link(Oid(_put_chunk(st, root.links.get(k), new_rows)))
            for k, new_rows in by_chunk.items()
        }
        root = root.with_links(changed)
        new_root = st.put_encoded(root.encoded(INDEX_TYPE, 1))
        _remember(_WRITTEN_ROOTS, new_root, root)
        if damaged:
            # Nothing to compare a damaged ref with: replace it (the index is derived data,
            # a concurrent writer's rows are read from their records until its next flush).
            st.refs.set(name, new_root)
            return
        try:
            st.refs.swap(name, current, new_root)
            return
        except store.errors.RefConflict:
            continue


def drop_rows(st: store.Store, experiment_id: str, trial_ids: Iterable[int]) -> None:
    """Remove the rows of deleted trials from the index (compare-and-swap, retried), so a
    number given again later never shows the deleted trial's row."""
    by_chunk: dict[str, set[int]] = {}
    for n in trial_ids:
        by_chunk.setdefault(str(n // CHUNK_SIZE), set()).add(n)
    name = index_ref(experiment_id)
    for _ in range(50):
        try:
            current = st.refs.get(name)
        except store.errors.RefNotFound:
            return
        chunks = _current_chunks(st, current)
        for k, gone in by_chunk.items():
            if k in chunks:
                rows = _chunk_rows(st, chunks[k])
                chunks[k] = Link(st.put(chunk_of(r for n, r in rows.items() if n not in gone)))
        new_root = st.put({"type": INDEX_TYPE, "version": 1, "chunks": chunks})
        try:
            st.refs.swap(name, current, new_root)
            return
        except store.errors.RefConflict:
            continue


def _current_chunks(st: store.Store, root_oid: str | None) -> dict[str, Link]:
    """The chunks of the index now; a damaged index is started afresh (it is only a cache)."""
    if root_oid is None:
        return {}
    try:
        return dict(chunk_links(read_json(st, root_oid)))
    except (store.errors.StoreError, ValueError) as exc:
        logger.warning("History index %s is damaged; rebuilding it (%s)", root_oid, exc)
        return {}


#: The index chunks and roots this process wrote last, by oid, kept encoded: the next flush
#: extends them without reading, decoding or encoding them again (objects never change).
_WRITTEN_CHUNKS: dict[str, EncodedChunk] = {}
_WRITTEN_ROOTS: dict[str, EncodedRoot] = {}
_WRITTEN_MAX = 4


def _remember(cache: dict[str, Any], oid: str, value: Any) -> None:
    if len(cache) >= _WRITTEN_MAX:
        try:
            cache.pop(next(iter(cache), ""), None)
        except RuntimeError:  # another experiment's flush, in another thread, changed it
            pass
    cache[oid] = value


def _current_root(st: store.Store, root_oid: str | None) -> EncodedRoot:
    written = _WRITTEN_ROOTS.get(root_oid) if root_oid is not None else None
    return written if written is not None else EncodedRoot.of(_current_chunks(st, root_oid))


def _put_chunk(st: store.Store, link: Link | None, new_rows: dict[int, dict[str, Any]]) -> str:
    """Store the chunk ``link`` names (None: an empty one) with ``new_rows`` added."""
    written = _WRITTEN_CHUNKS.get(link.oid) if link is not None else None
    try:
        if written is None:
            written = EncodedChunk.of(ROW_FIELDS, _chunk_rows(st, link))
        chunk = written.with_rows(new_rows)
    except store.errors.EncodeError:  # not plain JSON data: stored the way put() stores it
        return st.put(chunk_of({**_chunk_rows(st, link), **new_rows}.values()))
    oid = st.put_encoded(chunk.encoded())
    _remember(_WRITTEN_CHUNKS, oid, chunk)
    return oid


def _chunk_rows(st: store.Store, link: Link | None) -> dict[int, dict[str, Any]]:
    if link is None:
        return {}
    written = _WRITTEN_CHUNKS.get(link.oid)
    if written is not None:
        return dict(written.rows)
    try:
        return rows_of_chunk(read_json(st, link.oid))
    except (store.errors.StoreError, KeyError, TypeError, ValueError):
        return {}


def _local_time(epoch: float | None) -> datetime.datetime | None:
    """Seconds since the epoch as naive local time, as the user's clock shows it."""
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch)


def list_experiments(store_or_url: Any) -> list[dict[str, Any]]:
    """The experiments recorded in one store (or in every store of a directory of stores,
    such as ``daskperiment_cache``), by id: ``{id, trials, last_activity}`` each.

    ``last_activity`` is the local time (``datetime``) the latest trial finished, or started
    if it is still running. Only ref names are listed and one record per experiment is read.
    """
    if isinstance(store_or_url, str | os.PathLike) and "://" not in str(store_or_url):
        stores = storedir.stores_in(store_or_url)  # a directory of stores: each of them
        if stores:
            return sorted(
                (row for path in stores for row in list_experiments(str(path))),
                key=lambda row: row["id"],
            )
    st = (
        store_or_url
        if isinstance(store_or_url, store.Store)
        else store.open(store_or_url, create=False, read_only=True)
    )
    by_id: dict[str, list[int]] = {}
    for name in st.refs.names("experiments/"):
        parts = name.split("/")
        if len(parts) == 4 and parts[2] == "trials" and parse_trial_id(parts[3]) is not None:
            by_id.setdefault(parts[1], []).append(int(parts[3]))
    out = []
    for experiment_id in sorted(by_id):
        ids = by_id[experiment_id]
        try:
            _, last = load_trial(st, experiment_id, max(ids))
            when = last.get("finished") or last.get("started")
        except (store.errors.StoreError, DamagedTrial, *MALFORMED):  # type: ignore[misc]
            when = None
        out.append(
            {
                "id": experiment_id,
                "trials": len(ids),
                "last_activity": _local_time(when),
            }
        )
    return out
