"""Purity: a step that gives a different output for the same input is reported.

For every step that ran, the ref ``experiments/<id>/purity/<step>/<input-digest>`` names the
record of the last trial in which that step gave a *new* output for that input (the record
holds the step's input and output digests). After a trial computed, each step's output digest
is compared with the one in the record the ref names: a different digest logs the seed's
warning, and once the new trial record is stored the ref is moved to it. Only digests are
compared, never values, so an unchanged step costs one small read. For a step that read
files, the input digest also covers their content digests
(:func:`daskperiment.provenance.inputs.purity_inputs`): new data is a new input, not an
impure step.

The ref names a trial record rather than the output itself because most step outputs are
never stored, and a ref must name an object the store holds. (Refs naming a marker object
``{"type": "daskperiment.purity", "output": <digest>}`` are read as well.)

**When the refs are written.** Purity refs are derived data: every trial record holds its
steps' input and output digests, so the refs can always be rebuilt from the records. They
are therefore kept off a trial's critical path: a trial's updates wait in memory (one table
per process, which :func:`check` consults before the store, so warnings within a process are
exactly those of writing them at once) and are written in the batch that flushes the history
index (every :data:`~daskperiment.history.FLUSH_EVERY` trials, every
:data:`~daskperiment.history.FLUSH_SECONDS` seconds and at exit), before the index. A ref that
already names the record it would be set to is not written again, nor one another process has
since pointed at a later trial's record. A flush whose purity writes fail keeps them pending
and writes no index rows either: the refs never lag behind the index.

A process killed before its flush loses only those pending writes, never information: its
trials are in the store but not in the history index, and the first trial of the next process
(or a flush after ``get_history()`` found unindexed trials) re-points the purity refs from
those records (:func:`catch_up`), by the same rule and in trial order, before its own check.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

import daskperiment_store as store

from . import history, opening
from .errors import DamagedTrial
from .log import logger
from .perprocess import PerProcess
from .provenance import inputs as input_files
from .reads import MALFORMED, read_json
from .record import FAILED, SUCCESS, purity_prefix, purity_ref

PURITY_TYPE = "daskperiment.purity"

#: What the record a purity ref names remembers, by (record oid, step, inputs):
#: ``(output digest, trial id)``. Records never change, so this is never stale.
_SEEN: dict[tuple[str, str, str], tuple[str | None, int | None]] = {}
_SEEN_MAX = 10_000

#: ``(trial id, record oid, record)`` of a final trial.
FinalTrial = tuple[int, str, dict[str, Any]]

#: What reading a damaged ref or record raises (skipped by the catch-up: derived data).
_DAMAGE: tuple[type[Exception], ...] = (
    store.errors.StoreError,
    KeyError,
    TypeError,
    ValueError,
    AttributeError,
)
_UNREADABLE_RECORD: tuple[type[Exception], ...] = (*MALFORMED, *_DAMAGE)
_UNREADABLE_TRIAL: tuple[type[Exception], ...] = (
    store.errors.RefNotFound,
    DamagedTrial,
    *_UNREADABLE_RECORD,
)

#: A purity update: ``(ref name, output digest)``.
Update = tuple[str, str]


class Pending:
    """Purity refs waiting for the next flush, per store: ``url -> name -> (record oid,
    output digest, trial id)``. One per process (a fork starts with none)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.refs: dict[str, dict[str, tuple[str, str, int | None]]] = {}

    def get(self, st: store.Store, name: str) -> tuple[str, str, int | None] | None:
        return self.refs.get(st.url, {}).get(name)

    def put(self, st: store.Store, name: str, value: tuple[str, str, int | None]) -> None:
        with self.lock:
            self.refs.setdefault(st.url, {})[name] = value

    def take(self, st: store.Store, prefix: str) -> dict[str, tuple[str, str, int | None]]:
        with self.lock:
            mine = self.refs.get(st.url, {})
            taken = {name: v for name, v in mine.items() if name.startswith(prefix)}
            for name in taken:
                del mine[name]
            return taken


_PENDING: PerProcess[Pending] = PerProcess(Pending)


def check(
    st: store.Store, experiment_id: str, steps: Mapping[str, Mapping[str, Any]]
) -> list[Update]:
    """Warn for each step whose output differs from the one remembered for its input.

    Returns the purity updates ``(ref name, output)`` to point at this trial's record once it
    is stored (new inputs and changed outputs). Steps whose input or output could not be
    digested, and steps whose output was reused rather than computed, are skipped.
    """
    updates = []
    pending = _PENDING.get()
    for entry in steps.values():
        inputs, output = input_files.purity_inputs(entry), entry.get("output")
        if not inputs or not output or entry.get("reused"):
            continue
        name = purity_ref(experiment_id, entry["step"], inputs)
        waiting = pending.get(st, name)
        if waiting is not None:
            remembered: str | None = waiting[1]
        else:
            try:
                previous = st.refs.get(name)
                remembered = remembered_output(st, previous, entry["step"], inputs)
            except store.errors.RefNotFound:
                updates.append((name, output))
                continue
            except (store.errors.StoreError, AttributeError, TypeError) as exc:
                # Derived data: a damaged purity ref (or the record it names) is rebuilt.
                logger.debug("purity ref %s ignored and rebuilt: %s", name, exc)
                updates.append((name, output))
                continue
        if remembered == output:
            continue
        logger.warning(
            "Experiment step result is changed with the same input: "
            "(step: %s, args: %s, kwargs: %s)",
            entry["step"],
            entry.get("args"),
            entry.get("kwargs"),
        )
        updates.append((name, output))
    return updates


def remember(
    st: store.Store, updates: Iterable[Update], record_oid: str, trial_id: int | None = None
) -> None:
    """Point the purity refs of ``updates`` at the trial record ``record_oid`` (written by
    the next :func:`flush`; :func:`check` sees them at once)."""
    pending = _PENDING.get()
    for name, output in updates:
        pending.put(st, name, (record_oid, output, trial_id))


def flush(st: store.Store, experiment_id: str) -> int:
    """Write the experiment's pending purity refs; how many were written. A ref already
    naming its record is not written again, nor one another process has since pointed at a
    later trial's record."""
    prefix = purity_prefix(experiment_id)
    pending = _PENDING.get()
    taken = pending.take(st, prefix)
    written = 0
    try:
        for name, value in list(taken.items()):
            written += _write(st, prefix, name, value)
            del taken[name]
    except BaseException:
        for name, value in taken.items():  # kept for the next flush, unless newer arrived
            if pending.get(st, name) is None:
                pending.put(st, name, value)
        raise
    return written


def _write(st: store.Store, prefix: str, name: str, value: tuple[str, str, int | None]) -> int:
    """Set one purity ref unless it already names the record or a later trial's; 1 if set."""
    record_oid, _, trial_id = value
    try:
        current = st.refs.get(name)
    except store.errors.StoreError:  # missing, or damaged: (re)written
        current = None
    if current == record_oid:
        return 0
    if current is not None and trial_id is not None:
        step, _, inputs = name[len(prefix) :].rpartition("/")
        try:
            since = _remembered(st, current, step, inputs)[1]
        except (store.errors.StoreError, AttributeError, TypeError):
            since = None
        if since is not None and since > trial_id:
            return 0
    st.refs.set(name, store.Oid(record_oid))
    return 1


def catch_up(
    st: store.Store, experiment_id: str, trials: Iterable[tuple[int, str, Mapping[str, Any]]]
) -> None:
    """Re-point purity refs from final records whose purity updates may never have been
    written (a process killed before its flush): ``trials`` are ``(trial id, record oid,
    record)``. In trial order, a step's ref moves to the record when the output it remembers
    differs and comes from an earlier trial (or the ref is missing or damaged). Nothing is
    logged: those trials' own processes already warned."""
    pending = _PENDING.get()
    for trial_id, record_oid, record in sorted(trials, key=lambda t: t[0]):
        if record.get("status") != SUCCESS:
            continue
        for entry in (record.get("steps") or {}).values():
            if not isinstance(entry, Mapping):
                continue
            inputs, output, step = (
                input_files.purity_inputs(entry),
                entry.get("output"),
                entry.get("step"),
            )
            if not inputs or not output or not step or entry.get("reused"):
                continue
            name = purity_ref(experiment_id, step, inputs)
            remembered, since = _current(st, pending, name, step, inputs)
            if remembered == output or (since is not None and since >= trial_id):
                continue
            pending.put(st, name, (record_oid, output, trial_id))


def _current(
    st: store.Store, pending: Pending, name: str, step: str, inputs: str
) -> tuple[str | None, int | None]:
    """What the purity ref ``name`` remembers now: ``(output, trial id)``."""
    waiting = pending.get(st, name)
    if waiting is not None:
        return waiting[1], waiting[2]
    try:
        return _remembered(st, st.refs.get(name), step, inputs)
    except (store.errors.StoreError, AttributeError, TypeError):
        return None, None  # missing or damaged: rebuilt


def remembered_output(st: store.Store, oid: str, step: str, inputs: str) -> str | None:
    """The output digest the object ``oid`` (a trial record or a marker) remembers."""
    return _remembered(st, oid, step, inputs)[0]


def _remembered(st: store.Store, oid: str, step: str, inputs: str) -> tuple[str | None, int | None]:
    key = (oid, step, inputs)
    if key in _SEEN:
        return _SEEN[key]
    try:
        obj: Any = read_json(st, oid)
    except MALFORMED:  # not a record or marker: remembers nothing, and is never decoded
        obj = None
    found: tuple[str | None, int | None] = (None, None)
    if isinstance(obj, dict) and obj.get("type") == PURITY_TYPE:
        found = (obj.get("output"), None)
    elif isinstance(obj, dict):
        trial_id = obj.get("trial_id")
        trial_id = trial_id if type(trial_id) is int else None
        for entry in (obj.get("steps") or {}).values():
            if entry.get("step") == step and input_files.purity_inputs(entry) == inputs:
                found = (entry.get("output"), trial_id)
                break
    if len(_SEEN) >= _SEEN_MAX:
        _SEEN.clear()
    _SEEN[key] = found
    return found


#: At most this many trials past the index are read by a process's catch-up (a killed
#: writer leaves at most history.FLUSH_EVERY of them, or those of its last FLUSH_SECONDS).
CATCH_UP_MAX = 1024


def unindexed_final(st: store.Store, experiment_id: str, below: int) -> list[FinalTrial]:
    """``(trial id, record oid, record)`` of the final trials after the history index's last
    one and before ``below`` (at most :data:`CATCH_UP_MAX` of the latest): the trials of a
    writer that stopped before its flush. Unreadable trials are skipped (derived data)."""
    start = max(opening.indexed_lower_bound(st, experiment_id), below - 1 - CATCH_UP_MAX)
    found = []
    for trial_id in range(start + 1, below):
        try:
            oid, record = history.load_trial(st, experiment_id, trial_id)
        except _UNREADABLE_TRIAL:
            continue
        if record.get("status") in (SUCCESS, FAILED):
            found.append((trial_id, oid, record))
    return found


def records_of(st: store.Store, rows: Iterable[Mapping[str, Any]]) -> list[FinalTrial]:
    """``(trial id, record oid, record)`` of the rows' final records (unreadable: skipped)."""
    found = []
    for row in rows:
        if row.get("status") not in (SUCCESS, FAILED) or not isinstance(row.get("record"), str):
            continue
        try:
            found.append((row["trial_id"], row["record"], read_json(st, row["record"])))
        except _UNREADABLE_RECORD:
            continue
    return found
