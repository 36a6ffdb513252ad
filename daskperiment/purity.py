"""Purity: a step that gives a different output for the same input is reported.

For every step that ran, the experiment's purity log (daskperiment/puritylog.py) remembers
the output digest of the last trial in which that step gave a *new* output for that input
(and that trial's id and record). After a trial computed, each step's output digest is
compared with the one remembered for its input digest: a different digest logs the seed's
warning, and the trial's output becomes the one remembered. Only digests are compared, never
values, and the log is held in memory as 64-bit hashes, so an unchanged step costs a dict
lookup. For a step that read files, the input digest also covers their content digests
(:func:`daskperiment.provenance.inputs.purity_inputs`): new data is a new input, not an
impure step. Stores written before the log hold one ref per input
(``experiments/<id>/purity/<step>/<inputs>``, naming a trial record or a marker object
``{"type": "daskperiment.purity", "output": <digest>}``): those are read, never written.

**When the log is written.** Purity entries are derived data: every trial record holds its
steps' input and output digests, so they can always be rebuilt from the records. They are
therefore kept off a trial's critical path: a trial's updates wait in memory (one table per
process, which :func:`check` consults first, so warnings within a process are exactly those
of writing them at once) and are written as one batch in the flush of the history index
(every :data:`~daskperiment.history.FLUSH_EVERY` trials, every
:data:`~daskperiment.history.FLUSH_SECONDS` seconds and at exit), before the index. An update
the log already has from the same or a later trial (another process's) is left out. A flush
whose purity batch fails keeps the updates pending and writes no index rows either: the log
never lags behind the index.

A process killed before its flush loses only those pending writes, never information: its
trials are in the store but not in the history index, and the first trial of the next process
(or a flush after ``get_history()`` found unindexed trials) derives their purity entries from
those records (:func:`catch_up`), by the same rule and in trial order, before its own check.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import daskperiment_store as store

from . import history, opening, puritylog
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
            same = waiting[1] == output
        else:
            try:
                known = _known(st, experiment_id, name, entry["step"], inputs)
            except _DAMAGE as exc:
                # Derived data: an unreadable log (or pre-log ref) is written anew.
                logger.debug("purity of %s not read, written anew: %s", name, exc)
                updates.append((name, output))
                continue
            if known is None:
                updates.append((name, output))
                continue
            same = known[1] == puritylog.output_hash(output)
        if same:
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
    """Remember the outputs of ``updates`` as those of the trial record ``record_oid``
    (written by the next :func:`flush`; :func:`check` sees them at once)."""
    pending = _PENDING.get()
    for name, output in updates:
        pending.put(st, name, (record_oid, output, trial_id))


def flush(st: store.Store, experiment_id: str) -> int:
    """Write the experiment's pending purity updates as one batch of its purity log
    (daskperiment/puritylog.py); how many entries were written. An update the log already
    has from the same or a later trial (another process's) is left out. If the batch cannot
    be written, the updates stay pending for the next flush."""
    prefix = purity_prefix(experiment_id)
    pending = _PENDING.get()
    taken = pending.take(st, prefix)
    if not taken:
        t = puritylog.loaded_table(st, experiment_id)
        if t is not None:  # still see what other processes wrote since
            puritylog.refresh(st, experiment_id, t)
        return 0
    batch = []
    for name, (record_oid, output, trial_id) in taken.items():
        step, _, inputs = name[len(prefix) :].rpartition("/")
        batch.append(puritylog.Entry(step, inputs, output, trial_id, record_oid))
    try:
        return puritylog.record(st, experiment_id, batch)
    except BaseException:
        for name, value in taken.items():  # kept for the next flush, unless newer arrived
            if pending.get(st, name) is None:
                pending.put(st, name, value)
        raise


def catch_up(
    st: store.Store, experiment_id: str, trials: Iterable[tuple[int, str, Mapping[str, Any]]]
) -> None:
    """Derive purity entries from final records whose purity updates may never have been
    written (a process killed before its flush): ``trials`` are ``(trial id, record oid,
    record)``. In trial order, a step's input gets an entry for the record when the output
    remembered for it differs and comes from an earlier trial (or none is, or it cannot be
    read). Nothing is logged: those trials' own processes already warned."""
    pending = _PENDING.get()
    for trial_id, record_oid, record in sorted(trials, key=lambda t: t[0]):
        if record.get("status") != SUCCESS:
            continue
        for step, inputs, output in _computed_steps(record):
            name = purity_ref(experiment_id, step, inputs)
            known = _current(st, pending, experiment_id, name, step, inputs)
            if known is not None and (
                known[1] == puritylog.output_hash(output) or known[0] >= puritylog.rank(trial_id)
            ):
                continue
            pending.put(st, name, (record_oid, output, trial_id))


def derive(
    st: store.Store, experiment_id: str, arrived: Mapping[int, tuple[str, Mapping[str, Any]]]
) -> int:
    """Purity entries for trials that just arrived (pull, import), for the inputs the
    receiver knows nothing of: in trial order, an input's entry is its first output and each
    later different one. What the receiver already remembers is its own observation and is
    kept. Written as one batch; how many entries were written."""
    wanted: dict[tuple[str, str], puritylog.Entry] = {}
    for trial_id in sorted(arrived):
        record_oid, record = arrived[trial_id]
        for step, inputs, output in _computed_steps(record):
            old = wanted.get((step, inputs))
            if old is not None and old.output == output:
                continue
            if old is None:
                try:
                    name = purity_ref(experiment_id, step, inputs)
                    if _known(st, experiment_id, name, step, inputs) is not None:
                        continue
                except _DAMAGE:
                    pass  # unreadable: derived anew
            wanted[(step, inputs)] = puritylog.Entry(step, inputs, output, trial_id, record_oid)
    return puritylog.record(st, experiment_id, wanted.values()) if wanted else 0


def _computed_steps(record: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """``(step, input digest, output digest)`` of each step a stored record says ran (not
    reused) with digested input and output; malformed entries are skipped."""
    for entry in (record.get("steps") or {}).values():
        if not isinstance(entry, Mapping):
            continue
        inputs, output, step = (
            input_files.purity_inputs(entry),
            entry.get("output"),
            entry.get("step"),
        )
        if inputs and output and step and not entry.get("reused"):
            yield step, inputs, output


def _known(
    st: store.Store, experiment_id: str, name: str, step: str, inputs: str
) -> tuple[int, int] | None:
    """``(trial rank, output hash)`` the store remembers for ``(step, inputs)``: from the
    purity log, or a pre-log per-input ref if that is of a later trial; None if neither."""
    t = puritylog.table(st, experiment_id)
    found = t.get(step, inputs)
    if name in t.legacy:
        try:
            output, trial_id = _remembered(st, st.refs.get(name), step, inputs)
        except store.errors.RefNotFound:
            output = None
        if output is not None and (found is None or found[0] < puritylog.rank(trial_id)):
            found = (puritylog.rank(trial_id), puritylog.output_hash(output))
    return found


def _current(
    st: store.Store, pending: Pending, experiment_id: str, name: str, step: str, inputs: str
) -> tuple[int, int] | None:
    """What is remembered for ``(step, inputs)`` now, pending updates first:
    ``(trial rank, output hash)``, or None (nothing, or unreadable: written anew)."""
    waiting = pending.get(st, name)
    if waiting is not None:
        return puritylog.rank(waiting[2]), puritylog.output_hash(waiting[1])
    try:
        return _known(st, experiment_id, name, step, inputs)
    except _DAMAGE:
        return None


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
