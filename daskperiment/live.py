"""Live metrics: the points a running step has saved so far, readable from other processes.

A trial's record gets its metrics when the trial ends (one object per key, see
:mod:`daskperiment.metrics`). So that a long-running step can be watched while it runs (from
a notebook, another process, the dashboard), each process running steps keeps one
background thread that, every :data:`LIVE_INTERVAL` seconds, writes the points saved so far
by every step that has been running for at least that long:

- per metric key with new points since the last write: one object (the series so far, in
  the final format) and the ref ``experiments/<id>/live/<trial>/<key>/<step task>``
  pointing at it (``<key>`` percent-encoded, dots included, so any key is one ref component);
- nothing for a key without new points, nothing at all for a step shorter than the interval.
  The keys of one pass are written one after another: a reader may see one key's newest
  points a moment before another's.

The cost is therefore one object write and one ref write per key and second of a long step,
in a thread of its own: ``save_metric`` itself stays two list appends. When such a step ends,
its live refs are pointed at the final series (the very objects the trial record will link),
so a reader never sees a gap; once the trial's final record is in place the client deletes
the trial's live refs. A trial whose process was killed keeps its live refs, so the points
saved before the kill stay readable.

Readers (:func:`metrics_of`) use the record's ``metrics`` for a finished trial and the live
refs for a running (or interrupted) one. Live refs are written unconditionally (last writer
wins): each names the points one step saved, so there is never a second writer to race.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import daskperiment_store as store

from .log import logger
from .perprocess import PerProcess
from .record import live_prefix, trial_ref

if TYPE_CHECKING:
    import pandas as pd

    from .metrics import MetricBuffer
    from .steps import TrialContext

#: Seconds between two writes of the live points of a running step (and the age a step must
#: reach before its points are first written).
LIVE_INTERVAL = 1.0

#: Longest encoded metric key written live (a ref component must fit a file name).
_MAX_COMPONENT = 200


def encode_component(text: str) -> str:
    """``text`` as one ref-name component: percent-encoded, ``.`` included."""
    return quote(text, safe="").replace(".", "%2E")


# ---------------------------------------------------------------------------------------
# Writing (in the process running the step)
# ---------------------------------------------------------------------------------------


class Watch:
    """The live view of one running step's metric buffer."""

    __slots__ = ("st", "prefix", "part", "buffer", "since", "lock", "sizes", "closed", "failed")

    def __init__(self, st: store.Store, prefix: str, part: str, buffer: MetricBuffer) -> None:
        self.st = st
        self.prefix = prefix
        self.part = part
        self.buffer = buffer
        self.since = time.monotonic()
        # Held while writing, so a step that ends waits for a write in flight and its final
        # refs can never be overwritten by an older partial series.
        self.lock = threading.Lock()
        #: Points written so far, per key (a key with no new points is not written again).
        self.sizes: dict[str, int] = {}
        self.closed = False
        self.failed = False

    def ref(self, key: str) -> str | None:
        component = encode_component(key)
        if not key or len(component) > _MAX_COMPONENT:
            return None
        return f"{self.prefix}{component}/{self.part}"

    def flush(self) -> None:
        """Write the keys that have new points (called by the flusher thread)."""
        from .metrics import to_series

        with self.lock:
            if self.closed:
                return
            for key, (epochs, values) in self.buffer.snapshot().items():
                ref = self.ref(key)
                if ref is None or self.sizes.get(key) == len(values):
                    continue
                self.st.refs.set(ref, self.st.put(to_series(key, epochs, values)))
                self.sizes[key] = len(values)


class _Flusher:
    """One thread per process writing the live points of every watched step.

    It wakes once per interval whether or not steps are watched (a negligible cost), so
    that registering a step is a set insertion under a lock and never wakes another thread:
    a step's seeding and its first draws from the global generators should not be
    interleaved with extra thread switches.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.watches: set[Watch] = set()
        self.thread = threading.Thread(target=self._loop, name="daskperiment-live", daemon=True)
        self.thread.start()

    def add(self, watch: Watch) -> None:
        with self.lock:
            self.watches.add(watch)

    def remove(self, watch: Watch) -> None:
        with self.lock:
            self.watches.discard(watch)

    def _loop(self) -> None:
        while True:
            time.sleep(LIVE_INTERVAL)
            now = time.monotonic()
            with self.lock:
                due = [w for w in self.watches if now - w.since >= LIVE_INTERVAL]
            for watch in due:
                self._flush(watch)

    @staticmethod
    def _flush(watch: Watch) -> None:
        try:
            watch.flush()
        except Exception as exc:  # noqa: BLE001 - the live view must never break a step
            if not watch.failed:
                watch.failed = True
                logger.debug("live metrics of %s not written: %s", watch.part, exc)


_FLUSHER: PerProcess[_Flusher] = PerProcess(lambda: _Flusher())


def watch(
    st: store.Store | None, trial: TrialContext, task_key: str, buffer: MetricBuffer
) -> Watch | None:
    """Start the live view of a step about to run (None where the store is not reachable)."""
    if st is None or st.read_only:
        return None
    w = Watch(
        st, live_prefix(trial.experiment_id, trial.trial_id), encode_component(task_key), buffer
    )
    _FLUSHER.get().add(w)
    return w


def unwatch(w: Watch | None) -> None:
    """The step's function returned (or raised): stop writing its live points."""
    if w is None:
        return
    _FLUSHER.get().remove(w)
    with w.lock:
        w.closed = True


def settle(w: Watch | None, record: dict[str, Any]) -> None:
    """After the step's metrics were stored: point its live refs at the final series and
    flag the step record, so the client deletes the trial's live refs once it is recorded."""
    if w is None or not w.sizes:
        return
    try:
        for key, oid in (record.get("metrics") or {}).items():
            ref = w.ref(key)
            if ref is not None:
                w.st.refs.set(ref, oid)
    except (store.errors.StoreError, OSError) as exc:
        logger.debug("live metrics of %s not updated: %s", w.part, exc)
    record["_live"] = True


# ---------------------------------------------------------------------------------------
# The end of a trial (in the client)
# ---------------------------------------------------------------------------------------


def take_flags(record: Mapping[str, Any]) -> bool:
    """Remove the steps' live flags from a record about to be stored; True if a step wrote
    live points, or if the trial failed (then its steps' records never came back)."""
    written = False
    for entry in (record.get("steps") or {}).values():
        written = bool(entry.pop("_live", False)) or written
    return written or record.get("status") != "success"


def parts_without_records(
    st: store.Store, experiment_id: str, trial_id: int, records: Mapping[str, Any]
) -> dict[str, list[str]]:
    """``{key: [oid, ...]}`` of the live series of a failed trial's steps whose records never
    came back (their worker died): the points they flushed are kept in the record."""
    prefix = live_prefix(experiment_id, trial_id)
    found: dict[str, list[str]] = {}
    for name, oid in _readable_refs(st, prefix).items():
        component, _, part = name[len(prefix) :].partition("/")
        if unquote(part) not in records:
            found.setdefault(unquote(component), []).append(oid)
    return found


def cleanup(st: store.Store, experiment_id: str, trial_id: int, needed: bool) -> None:
    """Delete the live refs of a trial whose final record is in place."""
    if not needed:
        return
    try:
        for name in st.refs.names(live_prefix(experiment_id, trial_id)):
            try:
                st.refs.delete(name)
            except store.errors.RefNotFound:
                continue
    except (store.errors.StoreError, OSError) as exc:
        # Left-over live refs only keep a trial's partial series reachable.
        logger.debug("live metrics of trial %s not removed: %s", trial_id, exc)


# ---------------------------------------------------------------------------------------
# Reading (any process)
# ---------------------------------------------------------------------------------------


def metrics_of(
    st: store.Store, experiment_id: str, record: Mapping[str, Any]
) -> dict[str, list[str]]:
    """``{key: [oid, ...]}`` of a trial's metrics: from its record once it has them, else
    (running, interrupted) the live series written so far (one oid per step)."""
    final = record.get("metrics") or {}
    if final or record.get("status") == "success":
        return {key: [link.oid] for key, link in final.items()}
    found = _live_oids(st, experiment_id, record["trial_id"])
    if not found and record.get("status") == "running":
        # The trial may have finished (and its live refs gone) since the record was read.
        found = _reread(st, experiment_id, record["trial_id"])
    return found


def _live_oids(st: store.Store, experiment_id: str, trial_id: int) -> dict[str, list[str]]:
    prefix = live_prefix(experiment_id, trial_id)
    found: dict[str, list[str]] = {}
    for name, oid in _readable_refs(st, prefix).items():
        component, _, _ = name[len(prefix) :].partition("/")
        found.setdefault(unquote(component), []).append(oid)
    return found


def _reread(st: store.Store, experiment_id: str, trial_id: int) -> dict[str, list[str]]:
    from .reads import MALFORMED, read_record

    try:
        record = read_record(st, st.refs.get(trial_ref(experiment_id, trial_id)))
    except (store.errors.StoreError, *MALFORMED):  # type: ignore[misc]
        return {}
    final = record.get("metrics") or {}
    return {key: [link.oid] for key, link in final.items()}


def load_series(
    st: store.Store, oids: Iterable[str], *, unpickle: bool = False, what: str = ""
) -> pd.Series:
    """One metric's series from its parts (several when several steps saved the key).

    Parts must be pandas/numpy objects unless ``unpickle`` (see reads.read_metric)."""
    from .metrics import merge_series
    from .reads import read_metric

    return merge_series(read_metric(st, oid, unpickle=unpickle, what=what) for oid in oids)


def _readable_refs(st: store.Store, prefix: str) -> dict[str, str]:
    """The live refs under ``prefix``; a damaged one is skipped (they are derived data: its
    points are lost, the others still read)."""
    try:
        return dict(st.refs.list(prefix))
    except store.errors.CorruptRef:
        pass
    out: dict[str, str] = {}
    for name in st.refs.names(prefix):
        try:
            out[name] = st.refs.get(name)
        except store.errors.StoreError as exc:
            logger.debug("live ref %s ignored: %s", name, exc)
    return out
