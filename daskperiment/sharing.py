"""Sharing trials between stores: bundles, push and pull, by the rules of docs/sharing.md.

What travels is an experiment's *trial refs* (``experiments/<id>/trials/<n>``) and every object
they reach: the records themselves, parameters, code, environment, persisted outputs, results
and metrics. Objects keep their digests and are copied as stored (verified, never re-encoded),
so a shared trial is the very same trial on the other side.

Rules:

- A trial id that exists on the receiving side with another record is a conflict: the whole
  transfer is refused before anything is written (:class:`TrialConflict` names the trials).
  Importing a bundle under a new experiment id (``id=`` / ``--as``) renames the refs
  ``experiments/<old>/`` -> ``experiments/<new>/``; records stay byte for byte as they were
  (their ``experiment`` field keeps the original id: the ref name is what counts).
- Nothing is ever overwritten; a trial already there with the same record is left as is, so
  importing a bundle twice or pushing twice changes nothing and copies nothing.
- Trials still running (or interrupted: their record never finished) are not shared.
- Only canonical trial refs (``trials/1``, never ``trials/01``) whose records are JSON trial
  records are shared: import and pull check every record they bring before any ref is created
  and refuse the whole transfer otherwise; export and push leave a malformed trial of the
  sending store out and report it (docs/security.md). Nothing is ever unpickled.
- Purity refs and the history index are *derived* data and never travel, so they can never
  conflict. When trials arrive, the receiver derives them from the new records: a purity ref
  (naming the record that holds the output) is created where none exists (an existing one,
  the receiver's own observation, is kept) and the new trials' rows are added to the history
  index.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import daskperiment_store as store
from daskperiment_store import bundle as store_bundle
from daskperiment_store import sync as store_sync

from . import history
from .errors import (
    ConflictError,
    ExperimentNotFound,
    InvalidTrialId,
    SharingError,
    TrialNotFound,
)
from .ids import (
    EXPERIMENT_ID_RULE,
    TRIAL_ID_RULE,
    is_experiment_id,
    parse_trial_id,
    trial_id_of,
    validate_experiment_id,
    validate_trial_id,
)
from .location import open_store
from .reads import MALFORMED, read_trial, read_value
from .record import RUNNING, purity_prefix, purity_ref, trial_ref, trials_prefix

#: Where ``backend="local"`` puts an experiment's store, relative to the current directory.
DEFAULT_DIRECTORY = "daskperiment_cache"

_TRIAL_REF = re.compile(r"^experiments/([^/]+)/trials/([^/]+)$")


class TrialConflict(ConflictError):
    """Trials to be shared already exist on the receiving side with other records."""

    def __init__(self, experiment_id: str, trials: Iterable[int], where: str, hint: str) -> None:
        self.experiment_id = experiment_id
        self.trials = sorted(trials)
        self.where = where
        listed = ", ".join(str(t) for t in self.trials)
        noun, verb = ("trial", "exists") if len(self.trials) == 1 else ("trials", "exist")
        super().__init__(
            f"{noun} {listed} of experiment {experiment_id!r} already {verb} in {where} "
            "with different records",
            "nothing was changed (existing trials are never overwritten)",
            hint,
        )


@dataclass
class ShareReport:
    """Outcome of an export, import, push or pull of one experiment's trials.

    For an export, ``trials_added`` are the trials written to the bundle, ``objects_copied``
    the objects it holds and ``bytes_copied`` its size.
    """

    action: str
    experiment: str
    source: str
    destination: str
    trials_added: list[int] = field(default_factory=list)
    trials_unchanged: list[int] = field(default_factory=list)
    trials_skipped: list[int] = field(default_factory=list)
    trials_malformed: list[int] = field(default_factory=list)
    objects_copied: int = 0
    bytes_copied: int = 0

    def __str__(self) -> str:
        verb = {"export": "exported", "import": "imported", "push": "pushed", "pull": "pulled"}
        where = (
            f"to {self.destination}"
            if self.action in ("export", "push")
            else f"into {self.destination}"
        )
        parts = [
            f"{verb.get(self.action, self.action)} {_count(self.trials_added, 'trial')} of "
            f"{self.experiment} {where}",
            f"{self.objects_copied} objects, {_size(self.bytes_copied)}"
            + (" in the bundle" if self.action == "export" else " copied"),
        ]
        if self.trials_unchanged:
            parts.append(f"{_count(self.trials_unchanged, 'trial')} already there")
        if self.trials_skipped:
            parts.append(
                f"{_count(self.trials_skipped, 'trial')} not shared (running or interrupted)"
            )
        if self.trials_malformed:
            parts.append(
                f"{_count(self.trials_malformed, 'trial')} left out: malformed record "
                "(run 'daskperiment fsck')"
            )
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return asdict(self)


def _count(ids: list[int], noun: str) -> str:
    return f"{len(ids)} {noun}" + ("" if len(ids) == 1 else "s")


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"  # pragma: no cover


# ---------------------------------------------------------------------------------------
# Selecting trials
# ---------------------------------------------------------------------------------------


def trial_refs(st: store.Store, experiment_id: str) -> dict[int, str]:
    """Trial id -> record oid for every trial ref of ``experiment_id`` in ``st``."""
    prefix = trials_prefix(experiment_id)
    out = {}
    for name, oid in st.refs.list(prefix).items():
        trial_id = parse_trial_id(name[len(prefix) :])
        if trial_id is not None:  # "01", "0", "2**63": not a trial id, never read
            out[trial_id] = oid
    return dict(sorted(out.items()))


def _require(st: store.Store | None, experiment_id: str) -> tuple[store.Store, dict[int, str]]:
    """The store and trial refs of an experiment that must exist."""
    refs = trial_refs(st, experiment_id) if st is not None else {}
    if st is None or not refs:
        where = st.url if st is not None else "its store (nothing recorded yet)"
        raise ExperimentNotFound(experiment_id, where)
    return st, refs


@dataclass
class _Sorted:
    """Trials split by what can be shared: finished ``{id: (oid, record)}``, running or
    interrupted ids, and ids whose record is malformed (never decoded) with the error."""

    done: dict[int, tuple[str, dict]] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    malformed: dict[int, Exception] = field(default_factory=dict)


def _finished(st: store.Store, refs: Mapping[int, str]) -> _Sorted:
    """Read (typed: JSON trial records only) and sort the records of ``refs``."""
    out = _Sorted()
    for trial_id, oid in refs.items():
        try:
            record = read_trial(st, oid, trial_id)
        except MALFORMED as exc:
            out.malformed[trial_id] = exc
            continue
        if record.get("status") == RUNNING:
            out.skipped.append(trial_id)
        else:
            out.done[trial_id] = (oid, record)
    return out


def _refuse_malformed(where: str, malformed: Mapping[int, Exception], what: str) -> None:
    if malformed:
        first, exc = next(iter(sorted(malformed.items())))
        raise SharingError(
            f"{where}: trial {first} is not a well-formed trial record ({exc}); "
            f"{len(malformed)} malformed trial(s) in all; {what}"
        )


def _split(
    incoming: Mapping[int, str], existing: Mapping[int, str]
) -> tuple[dict[int, str], list[int], list[int]]:
    """(to create, already equal, conflicting) trial ids."""
    create = {t: o for t, o in incoming.items() if t not in existing}
    same = [t for t, o in incoming.items() if existing.get(t) == o]
    conflicts = [t for t, o in incoming.items() if t in existing and existing[t] != o]
    return create, same, conflicts


# ---------------------------------------------------------------------------------------
# Deriving purity refs and history rows for arriving trials
# ---------------------------------------------------------------------------------------


#: Threads creating purity refs on a remote store, where each write waits on the network.
REMOTE_WORKERS = 8


def derive(st: store.Store, experiment_id: str, arrived: Mapping[int, tuple[str, dict]]) -> None:
    """Create purity refs and cache entries (where absent) and history rows for trials that
    just arrived.

    A purity ref names the record of the trial in which a step last gave a new output for an
    input (daskperiment/purity.py); it is derived here by the same rule, going through the
    arriving trials in order. A ref that already exists is the receiver's own observation
    and is kept.
    """
    if not arrived:
        return
    wanted = _purity_wanted(st, experiment_id, arrived)
    local = isinstance(st.backend, store.LocalBackend | store.MemoryBackend)
    if local or len(wanted) < 2:
        for name, record_oid in wanted.items():
            _create_ref(st, name, record_oid)
    else:
        with ThreadPoolExecutor(REMOTE_WORKERS, thread_name_prefix="purity") as pool:
            list(pool.map(lambda item: _create_ref(st, *item), wanted.items()))
    rows = [history.row_of(record, oid) for oid, record in arrived.values()]
    history.flush_index(st, experiment_id, rows)
    # Cache refs never travel either; entries for the arrived trials' cached steps are derived
    # here so a pulled or imported trial's expensive steps are reused like local ones.
    from . import cache

    cache.derive_entries(st, experiment_id, arrived)


def _purity_wanted(
    st: store.Store, experiment_id: str, arrived: Mapping[int, tuple[str, dict]]
) -> dict[str, str]:
    """Purity ref name -> record oid, for inputs the receiver has no ref for yet."""
    present = set(st.refs.list(purity_prefix(experiment_id)))
    wanted: dict[str, tuple[str, str]] = {}  # name -> (record oid, output)
    for trial_id in sorted(arrived):
        record_oid, record = arrived[trial_id]
        for entry in (record.get("steps") or {}).values():
            inputs, output, step = entry.get("inputs"), entry.get("output"), entry.get("step")
            if not inputs or not output or not step or entry.get("reused"):
                continue
            name = purity_ref(experiment_id, step, inputs)
            if name in present:
                continue
            if name not in wanted or wanted[name][1] != output:
                wanted[name] = (record_oid, output)
    return {name: record_oid for name, (record_oid, _) in wanted.items()}


def _create_ref(st: store.Store, name: str, oid: str) -> None:
    try:
        st.refs.create(name, store.Oid(oid))
    except (store.errors.RefExists, store.errors.InvalidRefName):
        pass  # someone recorded it meanwhile (kept), or a step name no ref can hold


# ---------------------------------------------------------------------------------------
# push and pull
# ---------------------------------------------------------------------------------------


def _transfer(src: store.Store, dst: store.Store, experiment_id: str, action: str) -> ShareReport:
    """Copy the finished trials of ``experiment_id`` that ``dst`` lacks from ``src``."""
    _, incoming = _require(src, experiment_id)
    existing = trial_refs(dst, experiment_id)
    create, same, conflicts = _split(incoming, existing)
    report = ShareReport(action, experiment_id, src.url, dst.url, trials_unchanged=same)
    if conflicts:
        raise TrialConflict(experiment_id, conflicts, dst.url, _TRANSFER_HINT)
    if action == "pull":
        _refuse_odd_refs(src, experiment_id)
    # Only trials the destination lacks are read: a second push reads and copies nothing.
    found = _finished(src, create)
    if action == "pull":  # a record we bring must be a trial record before any ref is made
        _refuse_malformed(src.url, found.malformed, "nothing was pulled")
    done, report.trials_skipped = found.done, found.skipped
    report.trials_malformed = sorted(found.malformed)
    if not done:
        return report
    names = {trial_ref(experiment_id, t): oid for t, (oid, _) in done.items()}

    def unchanged(selected: Mapping[str, str]) -> None:
        # Only what was checked above travels: a source whose refs moved since is refused.
        moved = sorted(n for n, oid in names.items() if selected.get(n) != oid)
        if moved:
            raise SharingError(
                f"trial refs of {src.url} changed while they were read ({', '.join(moved[:3])}"
                f"); nothing was {action}ed, try again"
            )

    try:
        moved = store_sync.push(src, dst, list(names), check=unchanged)
    except store_sync.RefConflicts as exc:  # a writer raced us on the destination
        raise _conflict_from(exc, experiment_id, dst.url, _TRANSFER_HINT) from None
    report.objects_copied, report.bytes_copied = moved.objects_copied, moved.bytes_copied
    added = _trial_ids(moved.refs_updated)
    report.trials_added = added
    report.trials_unchanged = sorted(same + _trial_ids(moved.refs_unchanged))
    derive(dst, experiment_id, {t: done[t] for t in added})
    return report


def _refuse_odd_refs(src: store.Store, experiment_id: str) -> None:
    """Refuse trial refs that are not canonical ids (``trials/01``): they would alias others."""
    prefix = trials_prefix(experiment_id)
    odd = [n for n in src.refs.names(prefix) if parse_trial_id(n[len(prefix) :]) is None]
    if odd:
        raise SharingError(
            f"{src.url} holds trial refs that are not canonical trial ids ({', '.join(odd[:3])}"
            f"{', ...' if len(odd) > 3 else ''}; {TRIAL_ID_RULE}): nothing was pulled "
            "(fix or remove those refs there)"
        )


_TRANSFER_HINT = (
    "share into another store, or export a bundle and import it under a new experiment id "
    "(daskperiment export EXP -o FILE, then daskperiment import FILE --as NEW_ID)"
)
_IMPORT_HINT = (
    "import it under a new experiment id: daskperiment import FILE --as NEW_ID "
    "(in Python: daskperiment.import_bundle(path, id='NEW_ID'))"
)


def _trial_ids(names: Iterable[str]) -> list[int]:
    ids = []
    for name in names:
        match = _TRIAL_REF.match(name)
        if match:
            ids.append(int(match.group(2)))
    return sorted(ids)


def _conflict_from(
    exc: store_sync.RefConflicts, experiment_id: str, where: str, hint: str
) -> TrialConflict:
    return TrialConflict(experiment_id, _trial_ids(exc.conflicts), where, hint)


def push_trials(src: store.Store | None, experiment_id: str, url: Any) -> ShareReport:
    """Copy the finished trials of ``experiment_id`` in ``src`` to the store at ``url``
    (a path, URL, ``daskperiment_store.Store`` or directory of stores; created if absent)."""
    src, _ = _require(src, experiment_id)
    dst = open_store(url, experiment_id, create=True)
    return _transfer(src, dst, experiment_id, "push")


def pull_trials(dst: store.Store, experiment_id: str, url: Any) -> ShareReport:
    """Copy the finished trials of ``experiment_id`` from the store at ``url`` into ``dst``."""
    src = open_store(url, experiment_id, read_only=True)
    return _transfer(src, dst, experiment_id, "pull")


# ---------------------------------------------------------------------------------------
# Bundles
# ---------------------------------------------------------------------------------------


def export_trials(
    st: store.Store | None,
    experiment_id: str,
    path: str | os.PathLike[str],
    trials: Iterable[int] | None = None,
) -> ShareReport:
    """Write trials of ``experiment_id`` (default: every finished one) and every object they
    reach into the bundle file ``path``. A running trial asked for by id is refused."""
    st, refs = _require(st, experiment_id)
    if trials is not None:
        wanted = [_trial_number(t) for t in trials]
        missing = [t for t in wanted if t not in refs]
        if missing:
            raise TrialNotFound(missing[0], experiment_id, max(refs))
        refs = {t: refs[t] for t in sorted(set(wanted))}
    found = _finished(st, refs)
    done, skipped = found.done, found.skipped
    if trials is not None and found.malformed:
        _refuse_malformed(st.url, found.malformed, "nothing was exported")
    if trials is not None and skipped:
        raise SharingError(
            f"trial(s) {', '.join(map(str, skipped))} of {experiment_id!r} are running or were "
            "interrupted: only finished trials can be exported"
        )
    if not done:
        raise SharingError(f"experiment {experiment_id!r} has no finished trial to export")
    names = [trial_ref(experiment_id, t) for t in done]
    written = st.export_bundle(path, names)
    return ShareReport(
        "export",
        experiment_id,
        st.url,
        os.fspath(path),
        trials_added=sorted(done),
        trials_skipped=skipped,
        trials_malformed=sorted(found.malformed),
        objects_copied=written.objects,
        bytes_copied=written.bytes,
    )


def _trial_number(value: Any) -> int:
    """A trial id given by a user: an int in range, or its canonical decimal text."""
    try:
        return trial_id_of(value) if isinstance(value, str) else validate_trial_id(value)
    except InvalidTrialId as exc:
        raise SharingError(str(exc)) from None


def bundle_experiment(path: str | os.PathLike[str]) -> tuple[str, dict[int, str]]:
    """The experiment id and trial refs a bundle holds (read from its header only).

    Raises :class:`SharingError` for a bundle holding refs other than trials or trials of
    several experiments, and :class:`daskperiment_store.errors.BundleError` for a malformed one.
    """
    header = store_bundle.read_bundle_header(path)
    by_experiment: dict[str, dict[int, str]] = {}
    others = []
    for name, oid in header.refs.items():
        match = _TRIAL_REF.match(name)
        if match is None:
            others.append(name)
            continue
        experiment_id, trial_id = match.group(1), parse_trial_id(match.group(2))
        if not is_experiment_id(experiment_id) or trial_id is None:
            raise SharingError(
                f"{os.fspath(path)} holds the ref {name!r}, which names no valid trial "
                f"({TRIAL_ID_RULE}; {EXPERIMENT_ID_RULE}); nothing was imported"
            )
        by_experiment.setdefault(experiment_id, {})[trial_id] = oid
    if others:
        raise SharingError(
            f"{os.fspath(path)} holds refs that are not trials ({', '.join(sorted(others)[:3])}"
            f"{', ...' if len(others) > 3 else ''}); import it with the store's own "
            "store.open(...).import_bundle(...)"
        )
    if len(by_experiment) != 1:
        found = ", ".join(sorted(by_experiment)) or "none"
        raise SharingError(
            f"{os.fspath(path)} holds trials of {len(by_experiment)} experiments ({found}); "
            "daskperiment imports bundles of one experiment (daskperiment export EXP makes them)"
        )
    ((experiment_id, refs),) = by_experiment.items()
    return experiment_id, dict(sorted(refs.items()))


def import_bundle(
    path: str | os.PathLike[str],
    id: str | None = None,
    backend: Any = "local",
    *,
    directory: bool | None = None,
) -> ShareReport:
    """Import a bundle of one experiment's trials (as ``daskperiment export`` writes).

    ``id``: import under this experiment id instead of the bundle's (the way around a
    conflict). ``backend``: ``"local"`` (the store ``daskperiment_cache/<id>``), a path, a
    URL, a ``daskperiment_store.Store`` or a directory of stores (``directory``: see :func:`locate`).
    Every object is verified before it is written and nothing is unpickled. Raises :class:`TrialConflict` (nothing changed) when a
    trial id exists with another record, :class:`daskperiment_store.errors.BundleError` for a malformed,
    truncated or tampered bundle.
    """
    old_id, refs = bundle_experiment(path)
    new_id = validate_experiment_id(id) if id is not None else old_id
    if isinstance(backend, str) and backend == "local":
        backend = os.path.join(DEFAULT_DIRECTORY, new_id)
    dst = open_store(backend, new_id, create=True, directory=directory)
    existing = trial_refs(dst, new_id)
    create, same, conflicts = _split(refs, existing)
    if conflicts:
        raise TrialConflict(new_id, conflicts, dst.url, _IMPORT_HINT)
    if not create:  # every trial is already there: nothing to read or write
        return ShareReport(
            "import", new_id, os.fspath(path), dst.url, trials_unchanged=sorted(same)
        )
    ref_map = {f"experiments/{old_id}/": f"experiments/{new_id}/"} if new_id != old_id else None
    records: dict[int, tuple[str, dict]] = {}

    def check(_: Mapping[str, str]) -> None:
        # Objects are verified and written, no ref exists yet: a record that is not a JSON
        # trial record (a pickle, say) refuses the whole import before any ref is created.
        found = _finished(dst, create)
        _refuse_malformed(os.fspath(path), found.malformed, "nothing was imported")
        records.update(found.done)

    try:
        moved = dst.import_bundle(path, ref_map, check=check)
    except store_sync.RefConflicts as exc:
        raise _conflict_from(exc, new_id, dst.url, _IMPORT_HINT) from None
    added = _trial_ids(moved.refs_updated)
    derive(dst, new_id, {t: records[t] for t in added if t in records})
    return ShareReport(
        "import",
        new_id,
        os.fspath(path),
        dst.url,
        trials_added=added,
        trials_unchanged=sorted(same),
        objects_copied=moved.objects_copied,
        bytes_copied=moved.bytes_copied,
    )


def load_object(st: store.Store | None, oid: str) -> Any:
    """The object stored under ``oid`` in ``st``. Loading a pickle object runs code chosen by
    whoever stored it: only load from stores you trust."""
    if st is None:
        raise store.errors.ObjectNotFound(store.validate_oid(oid), "(no store yet)")
    return read_value(st, oid)
