"""Sharing trials between stores: bundles, push and pull, by the rules of docs/sharing.md.

What travels is an experiment's *trial refs* (``experiments/<id>/trials/<n>``) and every object
they reach: the records themselves, parameters, code, environment, persisted outputs, results
and metrics. Objects keep their digests and are copied as stored (verified, never re-encoded),
so a shared trial is the very same trial on the other side.

Rules:

- A trial is *already there* when its record is (the same oid, under any number): it is left
  as is, so importing a bundle twice or pushing twice changes nothing and copies nothing.
  A trial arriving whose number is taken gets the next free number, and its origin is kept
  (daskperiment/identity.py): sharing never conflicts. Several writers bringing the same
  trial at once give it one number (its claim, daskperiment/placement.py). Importing a bundle under a new
  experiment id (``id=`` / ``--as``) puts its trials under ``experiments/<new>/``; records
  stay byte for byte as they were.
- Tags and notes (daskperiment/annotate.py) travel with their trials and merge as a union.
- Trials still running (or interrupted: their record never finished) are not shared.
- Only canonical trial refs (``trials/1``, never ``trials/01``) whose records are JSON trial
  records are shared: import and pull check every record they bring before any ref is created
  and refuse the whole transfer otherwise; export and push leave a malformed trial of the
  sending store out and report it (docs/security.md). Nothing is ever unpickled.
- The purity log and the history index are *derived* data and never travel, so they can
  never conflict. When trials arrive, the receiver derives them from the new records: purity
  entries for the inputs it remembers nothing of (what it remembers is its own observation
  and is kept), as one batch, and the new trials' rows are added to the history index.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import daskperiment_store as store

from . import annotate, history, identity
from .errors import (
    ExperimentNotFound,
    InvalidTrialId,
    SharingError,
    TrialNotFound,
)
from .ids import (
    TRIAL_ID_RULE,
    parse_trial_id,
    trial_id_of,
    validate_trial_id,
)
from .location import open_store
from .placement import place
from .reads import MALFORMED, read_record, read_trial, read_value
from .record import RUNNING, trial_ref, trials_prefix

#: Where ``backend="local"`` puts an experiment's store, relative to the current directory.
DEFAULT_DIRECTORY = "daskperiment_cache"

_TRIAL_REF = re.compile(r"^experiments/([^/]+)/trials/([^/]+)$")


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
    #: number where it came from -> number given here, for trials whose number was taken
    renumbered: dict[int, int] = field(default_factory=dict)
    annotations_added: int = 0

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
        if self.renumbered:
            moves = ", ".join(f"{a}->{b}" for a, b in sorted(self.renumbered.items()))
            parts.append(f"renumbered {moves} (their numbers were taken)")
        if self.trials_unchanged:
            parts.append(f"{_count(self.trials_unchanged, 'trial')} already there")
        if self.annotations_added:
            parts.append(f"{self.annotations_added} tag/note change(s) merged")
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


def _finished(st: store.Store, refs: Mapping[int, str], experiment_id: str | None) -> _Sorted:
    """Read (typed: JSON trial records only) and sort the records of ``refs``.

    With ``experiment_id``, a record must say the number of its ref (or have been renumbered
    into it); without, for trials arriving from elsewhere, any trial record is one: the
    number it had there is only its name there, and it gets its number here."""
    out = _Sorted()
    for trial_id, oid in refs.items():
        try:
            record = (
                read_trial(st, oid, trial_id, experiment_id)
                if experiment_id is not None
                else read_record(st, oid)
            )
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


# ---------------------------------------------------------------------------------------
# Deriving purity entries and history rows for arriving trials
# ---------------------------------------------------------------------------------------


def derive(st: store.Store, experiment_id: str, arrived: Mapping[int, tuple[str, dict]]) -> None:
    """Purity entries, cache entries and history rows for trials that just arrived.

    The purity entries (daskperiment/purity.py) are derived by the same rule as a trial's,
    going through the arriving trials in order, for the inputs the receiver knows nothing of
    (what it remembers is its own observation and is kept): one batch of the purity log.
    """
    if not arrived:
        return
    from . import purity

    purity.derive(st, experiment_id, arrived)
    rows = [history.row_of(record, oid, n) for n, (oid, record) in arrived.items()]
    history.flush_index(st, experiment_id, rows)
    # Cache refs never travel either; entries for the arrived trials' cached steps are derived
    # here so a pulled or imported trial's expensive steps are reused like local ones.
    from . import cache

    cache.derive_entries(st, experiment_id, arrived)


# ---------------------------------------------------------------------------------------
# push and pull
# ---------------------------------------------------------------------------------------


def _transfer(src: store.Store, dst: store.Store, experiment_id: str, action: str) -> ShareReport:
    """Copy the finished trials of ``experiment_id`` that ``dst`` lacks from ``src``: a trial
    is there when its record is (same oid, under any number); one arriving whose number is
    taken gets the next free one (daskperiment/identity.py)."""
    _, incoming = _require(src, experiment_id)
    listed = trial_refs(dst, experiment_id)
    there = set(listed.values())
    create = {t: o for t, o in incoming.items() if o not in there}
    same = sorted(t for t, o in incoming.items() if o in there)
    report = ShareReport(action, experiment_id, src.url, dst.url, trials_unchanged=same)
    if action == "pull":
        _refuse_odd_refs(src, experiment_id)
    # Only trials the destination lacks are read: a second push reads and copies nothing.
    found = _finished(src, create, None)
    found.done = _unique(found.done)
    if action == "pull":  # a record we bring must be a trial record before any ref is made
        _refuse_malformed(src.url, found.malformed, "nothing was pulled")
    done, report.trials_skipped = found.done, found.skipped
    report.trials_malformed = sorted(found.malformed)
    try:  # checked before anything is written: a hostile one refuses the whole transfer
        notes = annotate.missing(src, dst, experiment_id)
    except annotate.AnnotationError as exc:
        raise SharingError(
            str(exc).replace("nothing was shared", f"nothing was {action}ed")
        ) from None
    if done:
        _moved_since(src, experiment_id, done, action)
        roots = [oid for oid, _ in done.values()]
        report.objects_copied, report.bytes_copied = identity.copy_objects(src, dst, roots)
        placement = place(dst, experiment_id, done, src.url, taken=listed)
        placed = placement.added
        report.trials_added = sorted(placed.values())
        report.renumbered = {s: n for s, n in placed.items() if s != n}
        report.trials_unchanged = sorted([*same, *placement.there])
        derive(dst, experiment_id, {placed[t]: done[t] for t in placed})
    annotate.transfer(src, dst, notes, report)
    return report


def _moved_since(
    src: store.Store, experiment_id: str, done: Mapping[int, tuple[str, dict]], action: str
) -> None:
    """Only what was checked travels: a source whose trial refs moved since is refused."""
    now = trial_refs(src, experiment_id)
    moved = sorted(t for t, (oid, _) in done.items() if now.get(t) != oid)
    if moved:
        raise SharingError(
            f"trial refs of {src.url} changed while they were read (trials "
            f"{', '.join(map(str, moved[:3]))}); nothing was {action}ed, try again"
        )


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
    found = _finished(st, refs, experiment_id)
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
    # Their tags and notes travel with them (annotation refs are named by global id).
    gids = {identity.global_id_of(record, oid) for oid, record in done.values()}
    prefix = annotate.annotations_prefix(experiment_id)
    names += [n for n in st.refs.names(prefix) if n[len(prefix) :].split("/")[0] in gids]
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


def _unique(found: Mapping[int, tuple[str, dict]]) -> dict[int, tuple[str, dict]]:
    """One number per record: a record under several numbers arrives once (the first)."""
    seen: set[str] = set()
    out = {}
    for number in sorted(found):
        if found[number][0] not in seen:
            seen.add(found[number][0])
            out[number] = found[number]
    return out


def load_object(st: store.Store | None, oid: str) -> Any:
    """The object stored under ``oid`` in ``st``. Loading a pickle object runs code chosen by
    whoever stored it: only load from stores you trust."""
    if st is None:
        raise store.errors.ObjectNotFound(store.validate_oid(oid), "(no store yet)")
    return read_value(st, oid)
