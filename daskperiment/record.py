"""The trial record as data, and every ref name daskperiment writes.

A trial is one JSON object (:class:`TrialRecord`) of type :data:`RECORD_TYPE`, named by the
ref ``experiments/<id>/trials/<n>``. It is written *running* when the trial id is taken and
swapped for the final record (*success* or *failed*) at the end; :func:`effective` is the
one rule that shows a running trial whose process is gone as failed (interrupted).

Every ref name is built here and nowhere else: trials, the history index, purity, cache,
and live metrics. The format is described in docs/format.md; this module only names it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any, TypedDict

RECORD_TYPE = "daskperiment.trial"
RECORD_VERSION = 1

#: Statuses a record states.
RUNNING, SUCCESS, FAILED = "running", "success", "failed"
#: Status shown for a trial whose ref or record cannot be read (never stored).
DAMAGED = "damaged"

#: Prefix of every ref daskperiment writes.
EXPERIMENTS_PREFIX = "experiments/"


class TrialRecord(TypedDict, total=False):
    """The fields of a trial record (JSON; links are :class:`daskperiment_store.Link`).

    Records are read as plain dicts (:func:`daskperiment.reads.read_record` checks the
    type and the id); this names the fields for readers and for type checking.
    """

    type: str
    version: int
    experiment: str
    trial_id: int | None
    status: str
    parent: int | None
    seed: int
    parameters: dict[str, Any]
    code: Any
    environment: Any
    digests: dict[str, Any]
    process: dict[str, Any]
    started: float
    finished: float
    elapsed: float
    description: str
    steps: dict[str, Any]
    result: Any
    metrics: dict[str, Any]
    interrupted: bool


def to_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` as the plain mapping the store encodes."""
    return dict(record)


def from_json(data: Mapping[str, Any]) -> TrialRecord:
    """A stored record as a :class:`TrialRecord` (the checks are in :mod:`daskperiment.reads`)."""
    return TrialRecord(**data)  # type: ignore[typeddict-item]


# -- ref names -----------------------------------------------------------------------------


def experiment_prefix(experiment_id: str) -> str:
    """Name prefix of every ref of one experiment."""
    return f"{EXPERIMENTS_PREFIX}{experiment_id}/"


def trials_prefix(experiment_id: str) -> str:
    """Name prefix of every trial ref of an experiment."""
    return f"{EXPERIMENTS_PREFIX}{experiment_id}/trials/"


def trial_ref(experiment_id: str, trial_id: int) -> str:
    """Name of the ref holding trial ``trial_id``'s record."""
    return f"{trials_prefix(experiment_id)}{trial_id}"


def split_trial_ref(name: str) -> tuple[str, str] | None:
    """``(experiment id, trial id text)`` of a trial ref name, else None (ids unchecked)."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != EXPERIMENTS_PREFIX[:-1] or parts[2] != "trials":
        return None
    return parts[1], parts[3]


def index_ref(experiment_id: str) -> str:
    """Name of the ref holding the history index of an experiment."""
    return f"{EXPERIMENTS_PREFIX}{experiment_id}/index"


def purity_prefix(experiment_id: str) -> str:
    """Name prefix of the per-input purity refs of an experiment (stores written before
    purity logs; see :func:`purity_ref`)."""
    return f"{EXPERIMENTS_PREFIX}{experiment_id}/purity/"


def purity_ref(experiment_id: str, step: str, inputs: str) -> str:
    """Name of the per-input purity ref remembering the output of ``step`` for input digest
    ``inputs``: read in stores written before purity logs, never written now; also the key
    of a pending purity update (daskperiment/purity.py)."""
    return f"{purity_prefix(experiment_id)}{step}/{inputs}"


def purity_log_prefix(experiment_id: str) -> str:
    """Name prefix of the refs of an experiment's purity log batches (daskperiment/puritylog.py)."""
    return f"{EXPERIMENTS_PREFIX}{experiment_id}/purity-log/"


def cache_prefix(experiment_id: str, step: str | None = None) -> str:
    """Prefix of the cache refs of an experiment, or of one of its steps."""
    base = f"{EXPERIMENTS_PREFIX}{experiment_id}/cache/"
    return base if step is None else f"{base}{step}/"


def cache_ref(experiment_id: str, step: str, key: str) -> str:
    """Name of the ref holding the cache entry of ``step`` under ``key``."""
    return f"{cache_prefix(experiment_id, step)}{key}"


def live_prefix(experiment_id: str, trial_id: int) -> str:
    """Name prefix of the live refs of one trial."""
    return f"{EXPERIMENTS_PREFIX}{experiment_id}/live/{trial_id}/"


# -- running or interrupted ----------------------------------------------------------------


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _process_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[19])


_HOST = socket.gethostname()
_BOOT = _boot_id()


_IDENTITY: dict[str, Any] = {}


def process_identity() -> dict[str, Any]:
    """Who runs a trial: enough to recognise later that this process is gone.

    Read once per process (a fork gets a new pid, hence a new identity): the start time of
    a process never changes, and reading ``/proc`` for it costs a file open per trial.
    """
    pid = os.getpid()
    if _IDENTITY.get("pid") != pid:
        _IDENTITY.update(host=_HOST, pid=pid, start=_process_start(pid), boot=_BOOT)
    return dict(_IDENTITY)


def is_process_gone(process: Mapping[str, Any]) -> bool:
    """Whether the process named by a running record certainly no longer runs.

    Only decidable on the same host: the pid is not alive, or it is alive but is another
    process (different start time or boot), i.e. the pid was reused.
    """
    if process.get("host") != _HOST:
        return False
    if process.get("boot") and _BOOT and process["boot"] != _BOOT:
        return True
    pid = process.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        pass
    start = process.get("start")
    return start is not None and _process_start(pid) not in (None, start)


def interrupted_description(record: Mapping[str, Any]) -> str:
    process = record.get("process") or {}
    return (
        f"Interrupted: the process running this trial (pid {process.get('pid')} on "
        f"{process.get('host')}) ended before the trial finished"
    )


def effective(record: dict[str, Any]) -> dict[str, Any]:
    """``record``, with a running trial whose process is gone shown as failed."""
    if record.get("status") == RUNNING and is_process_gone(record.get("process") or {}):
        record = dict(record)
        record["status"] = FAILED
        record["description"] = interrupted_description(record)
        record["interrupted"] = True
    return record


def origin_ref(experiment_id: str, trial_id: int) -> str:
    """Name of the (local, never shared) ref naming the origin of an arrived trial."""
    return f"{EXPERIMENTS_PREFIX}{experiment_id}/origins/{trial_id}"


def claim_ref(experiment_id: str, global_id: str) -> str:
    """Name of the (local) ref claiming a local number for the arriving trial ``global_id``:
    it names the trial's origin, whose ``placed`` field is that number (daskperiment/placement.py)."""
    return f"{EXPERIMENTS_PREFIX}{experiment_id}/globals/{global_id}"


def high_water_ref(experiment_id: str) -> str:
    """Name of the (local) ref naming the highest trial number a deleted trial had, so that
    no number is ever given twice in a store (daskperiment/numbering.py)."""
    return f"{EXPERIMENTS_PREFIX}{experiment_id}/highest"


def annotations_prefix(experiment_id: str) -> str:
    """Name prefix of the annotation events (tags, notes, archive) of an experiment."""
    return f"{EXPERIMENTS_PREFIX}{experiment_id}/annotations/"


def annotation_ref(experiment_id: str, global_id: str, event_oid: str) -> str:
    """Name of the ref of one annotation event of trial ``global_id`` (its own oid last)."""
    return f"{annotations_prefix(experiment_id)}{global_id}/{event_oid}"


def staging_prefix(experiment_id: str, token: str) -> str:
    """Prefix under which the trials of a bundle wait for their numbers during an import."""
    return f"{EXPERIMENTS_PREFIX}{experiment_id}/incoming/{token}/"


def declaration_order(values: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """Parameter ``values`` in the order ``names`` declares them (others after, as they
    come): the record's ``parameter_order``, as its ``params`` are canonical JSON (sorted)."""
    rank = {name: i for i, name in enumerate(names)}
    return dict(sorted(values.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def ordered_params(record: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A record's parameters in declaration order (records from before that order was kept:
    by name)."""
    params = record.get("params") or {}
    order = [n for n in record.get("parameter_order") or () if n in params]
    return [(n, params[n]) for n in order] + sorted(
        (k, v) for k, v in params.items() if k not in order
    )
