"""Importing bundles of one experiment's trials (as ``daskperiment export`` writes them), by
the rules of docs/sharing.md: trials already there (same record) are left as is, a trial
whose number is taken gets the next free one (daskperiment/identity.py), tags and notes merge
(daskperiment/annotate.py), and anything hostile refuses the whole import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from daskperiment_store import bundle as store_bundle

from . import annotate, identity
from .ids import (
    EXPERIMENT_ID_RULE,
    TRIAL_ID_RULE,
    is_experiment_id,
    parse_trial_id,
    validate_experiment_id,
)
from .location import open_store
from .placement import place
from .record import staging_prefix
from .sharing import (
    _TRIAL_REF,
    DEFAULT_DIRECTORY,
    ShareReport,
    SharingError,
    _finished,
    _refuse_malformed,
    _unique,
    derive,
    trial_refs,
)


def bundle_experiment(path: str | os.PathLike[str]) -> tuple[str, dict[int, str]]:
    """The experiment id and trial refs a bundle holds (read from its header only).

    Raises :class:`SharingError` for a bundle holding refs other than trials and annotations
    or trials of several experiments, and :class:`daskperiment_store.errors.BundleError` for a
    malformed one.
    """
    experiment_id, refs, _ = _bundle_refs(path)
    return experiment_id, refs


def _bundle_refs(path: str | os.PathLike[str]) -> tuple[str, dict[int, str], dict[str, str]]:
    """(experiment id, trial number -> record oid, annotation ref -> oid) of a bundle."""
    header = store_bundle.read_bundle_header(path)
    by_experiment: dict[str, dict[int, str]] = {}
    others: list[str] = []
    notes: dict[str, str] = {}
    for name, oid in header.refs.items():
        match = _TRIAL_REF.match(name)
        if match is None:
            if name.split("/")[2:3] == ["annotations"]:
                notes[name] = oid
            else:
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
    for name, note_oid in notes.items():
        problem = annotate.name_problem(name, note_oid, experiment_id)
        if problem:
            raise SharingError(f"{os.fspath(path)}: {problem}; nothing was imported")
    return experiment_id, dict(sorted(refs.items())), notes


def import_bundle(
    path: str | os.PathLike[str],
    id: str | None = None,
    backend: Any = "local",
    *,
    directory: bool | None = None,
) -> ShareReport:
    """Import a bundle of one experiment's trials (as ``daskperiment export`` writes).

    ``id``: import under this experiment id instead of the bundle's. ``backend``: ``"local"``
    (the store ``daskperiment_cache/<id>``), a path, a URL, a ``daskperiment_store.Store`` or
    a directory of stores (``directory``: see :func:`locate`). Every object is verified before
    it is written and nothing is unpickled. A trial already there (same record) is left as
    is; one whose number is taken gets the next free one (daskperiment/identity.py); tags and
    notes are merged (a union). Raises :class:`daskperiment_store.errors.BundleError` for a
    malformed, truncated or tampered bundle, :class:`SharingError` for hostile refs.
    """
    old_id, refs, notes = _bundle_refs(path)
    new_id = validate_experiment_id(id) if id is not None else old_id
    if isinstance(backend, str) and backend == "local":
        backend = os.path.join(DEFAULT_DIRECTORY, new_id)
    dst = open_store(backend, new_id, create=True, directory=directory)
    there = set(trial_refs(dst, new_id).values())
    same = sorted(t for t, o in refs.items() if o in there)
    report = ShareReport("import", new_id, os.fspath(path), dst.url, trials_unchanged=same)
    note_prefix = (annotate.annotations_prefix(old_id), annotate.annotations_prefix(new_id))
    have = set(dst.refs.names(note_prefix[1]))
    if len(same) == len(refs) and all(
        n.replace(*note_prefix, 1) in have for n in notes
    ):  # every trial and note is already there: nothing to read or write
        return report
    # Trials arrive under staging names first (their objects stay reachable meanwhile), then
    # get their numbers here: the number in the bundle is only the exporter's name for them.
    stage = staging_prefix(new_id, identity.new_global_id())
    ref_map = {f"experiments/{old_id}/trials/": stage, note_prefix[0]: note_prefix[1]}
    records: dict[int, tuple[str, dict]] = {}

    def check(renamed: Mapping[str, str]) -> None:
        staged = {int(n[len(stage) :]): o for n, o in renamed.items() if n.startswith(stage)}
        found = _finished(dst, {t: o for t, o in staged.items() if o not in there}, None)
        _refuse_malformed(os.fspath(path), found.malformed, "nothing was imported")
        new_notes = {n: o for n, o in renamed.items() if n.startswith(note_prefix[1])}
        try:
            annotate.check_events(dst, new_notes, new_id, os.fspath(path))
        except annotate.AnnotationError as exc:
            raise SharingError(str(exc)) from None
        records.update(found.done)

    moved = dst.import_bundle(path, ref_map, check=check)
    try:
        placement = place(dst, new_id, _unique(records), os.fspath(path))
    finally:
        for name in dst.refs.names(stage):
            dst.refs.delete(name)
    placed = placement.added
    report.trials_added = sorted(placed.values())
    report.trials_unchanged = sorted([*same, *placement.there])
    report.renumbered = {a: b for a, b in placed.items() if a != b}
    report.annotations_added = sum(n.startswith(note_prefix[1]) for n in moved.refs_updated)
    report.objects_copied, report.bytes_copied = moved.objects_copied, moved.bytes_copied
    derive(dst, new_id, {placed[t]: records[t] for t in placed})
    return report
