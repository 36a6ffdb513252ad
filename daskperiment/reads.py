"""Typed reads: every reader of a store says which kinds of object it accepts.

Trial records, code and environment trees, parameter sets, history indexes, cache and purity
entries are JSON; metric series are pandas or numpy objects. A ``pickle`` object where one of
those belongs is malformed or hostile: the store refuses it from its header
(:class:`store.UnexpectedKind`), before anything is decoded, so it never runs. Only
:func:`read_value` (persisted step outputs, reached through ``get_persisted``/``load``),
and :func:`read_metric` / :func:`read_parameters` with ``unpickle=True``, accept pickles;
see ``docs/security.md``.
"""

from __future__ import annotations

from typing import Any

import daskperiment_store as store

from .errors import MalformedRecord, PickleRefused
from .record import RECORD_TYPE

JSON_KINDS = frozenset({"json"})
SERIES_KINDS = frozenset({"pandas", "ndarray"})
#: What a typed read raises for an object that is not what belongs there.
MALFORMED: tuple[type[Exception], ...] = (store.UnexpectedKind, MalformedRecord)


def read_json(st: store.Store, oid: str) -> Any:
    """A JSON object (tree, parameter set, index, cache or purity entry); never unpickles."""
    return st.get(oid, kinds=JSON_KINDS)


def read_record(st: store.Store, oid: str) -> dict[str, Any]:
    """The trial record ``oid``: JSON, a mapping of type ``daskperiment.trial`` with an
    integer ``trial_id``; anything else raises :class:`MalformedRecord` (or
    :class:`store.UnexpectedKind` for a non-JSON object). Never unpickles."""
    record = read_json(st, oid)
    if not isinstance(record, dict) or record.get("type") != RECORD_TYPE:
        raise MalformedRecord(oid, f"it is not a {RECORD_TYPE!r} mapping")
    trial_id = record.get("trial_id")
    if trial_id is not None and (isinstance(trial_id, bool) or not isinstance(trial_id, int)):
        raise MalformedRecord(oid, f"its trial_id is {trial_id!r}, not an integer")
    return record


def read_trial(st: store.Store, oid: str, trial_id: int) -> dict[str, Any]:
    """The record ``trial_id``'s ref names: :func:`read_record`, and it must say it is that
    trial (a record claiming another id would show one trial twice)."""
    record = read_record(st, oid)
    if record.get("trial_id") != trial_id:
        raise MalformedRecord(oid, f"it says trial {record.get('trial_id')!r}, its ref {trial_id}")
    return record


def trial_ref_problems(st: store.Store) -> list[tuple[str, str]]:
    """``(ref, problem)`` for every trial ref of ``st`` that names no trial: an id that is
    not canonical, or an object that is not a JSON record of that trial. For ``fsck``;
    nothing is unpickled (damaged objects are reported by the store's own fsck)."""
    from .ids import TRIAL_ID_RULE, parse_trial_id

    found = []
    for name, oid in sorted(st.refs.list("experiments/").items()):
        parts = name.split("/")
        if len(parts) != 4 or parts[2] != "trials":
            continue
        trial_id = parse_trial_id(parts[3])
        if trial_id is None:
            found.append((name, f"not a trial id ({TRIAL_ID_RULE}); never read as a trial"))
            continue
        try:
            read_trial(st, oid, trial_id)
        except MALFORMED as exc:
            found.append((name, str(exc)))
        except store.StoreError:
            continue  # missing or corrupt: the store's fsck reports it
    return found


def read_metric(st: store.Store, oid: str, *, unpickle: bool = False, what: str = "") -> Any:
    """A metric series part (pandas or numpy). A series only pickle could hold raises
    :class:`PickleRefused` unless ``unpickle=True``, which runs code of whoever wrote the
    store: pass it only for stores you trust. Other kinds raise store.UnexpectedKind."""
    return _opt_in(st, oid, SERIES_KINDS, unpickle, what or "the metric series")


def read_parameters(st: store.Store, oid: str, *, unpickle: bool = False, what: str = "") -> Any:
    """A trial's exact parameter set: JSON, or (arrays, frames, objects among the values) a
    pickle, loaded only with ``unpickle=True`` (:class:`PickleRefused` otherwise)."""
    return _opt_in(st, oid, JSON_KINDS, unpickle, what or "the parameter set")


def _opt_in(st: store.Store, oid: str, kinds: frozenset[str], unpickle: bool, what: str) -> Any:
    try:
        return st.get(oid, kinds=kinds | {"pickle"} if unpickle else kinds)
    except store.UnexpectedKind as exc:
        if exc.kind == "pickle":
            raise PickleRefused(oid, what) from None
        raise


def read_value(st: store.Store, oid: str) -> Any:
    """A persisted step output or result of any kind: UNPICKLES, so it can run code.

    Reached only through calls that say so (``Experiment.get_persisted``,
    ``Experiment.load``); never from the CLI, the dashboard, history or sharing.
    """
    return st.get(oid)
