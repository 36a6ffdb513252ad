"""Managing trials as a team: naming them by global id, tags, notes, archive, delete, search.

``Experiment`` hands its calls here (``ex.tag``, ``ex.note``, ``ex.archive``, ``ex.delete``,
``ex.get_history(where=..., tags=..., all=...)``), and so does the CLI. Annotations are events
of daskperiment/annotate.py, keyed by global id (daskperiment/identity.py), so they follow a
trial under whatever number it has in a store. The search language is the dashboard's
(daskperiment/search.py): one implementation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import daskperiment_store as store

from . import annotate, history, identity
from .errors import DaskperimentError, TrialNotFound
from .reads import read_json, read_origin
from .record import claim_ref, origin_ref, trial_ref

if TYPE_CHECKING:
    from .experiment import Experiment

#: Column of the history naming a trial's tags (present once any trial has one).
TAGS_COLUMN = "Tags"
GLOBAL_ID_COLUMN = "Global ID"
ORIGIN_COLUMN = "Origin"


class SearchError(DaskperimentError, ValueError):
    """A ``where`` expression or sort column the history cannot answer."""


class UnknownTag(DaskperimentError, KeyError):
    """A tag no trial carries."""

    def __init__(self, tag: str, known: Iterable[str], trial: Any = None) -> None:
        self.tag, self.known, self.trial = tag, sorted(known), trial
        listed = ", ".join(self.known) or "none"
        if trial is None:
            super().__init__(f"no trial is tagged {tag!r} (tags in use: {listed})")
        else:
            super().__init__(f"trial {trial} has no tag {tag!r} (its tags: {listed})")

    def __str__(self) -> str:
        return str(self.args[0])


class TrialManagement:
    """The methods ``Experiment`` gets from here: tagging, notes, archive, delete."""

    def _ex(self) -> Experiment:
        return cast("Experiment", self)

    def tag(self, trial_id: int | str, *tags: str) -> None:
        """Tag a trial (by number or global-id prefix); the record itself never changes."""
        annotate_trials(self._ex(), [trial_id], "tag", tags)

    def untag(self, trial_id: int | str, *tags: str) -> None:
        """Remove tags from a trial (:class:`~daskperiment.teams.UnknownTag` if it lacks one)."""
        annotate_trials(self._ex(), [trial_id], "untag", tags)

    def note(self, trial_id: int | str, text: str) -> None:
        """Add a note to a trial (notes are kept, each with who wrote it and when)."""
        annotate_trials(self._ex(), [trial_id], "note", [text])

    def archive(self, *trial_ids: int | str) -> None:
        """Hide trials from the default history (``get_history(all=True)`` shows them)."""
        annotate_trials(self._ex(), trial_ids, "archive", [])

    def unarchive(self, *trial_ids: int | str) -> None:
        """Show archived trials in the default history again."""
        annotate_trials(self._ex(), trial_ids, "unarchive", [])

    def delete(self, trial_id: int | str) -> int:
        """Remove a trial from this store (``gc`` then reclaims what nothing else reaches);
        returns its number."""
        return delete_trial(self._ex(), trial_id)

    def get_annotations(self, trial_id: int | str) -> dict[str, Any]:
        """Tags, notes, archived flag and the history of changes (who, when) of a trial."""
        return annotations_of(self._ex(), trial_id)


# ---------------------------------------------------------------------------------------
# Naming trials
# ---------------------------------------------------------------------------------------


def all_rows(ex: Experiment, st: store.Store) -> list[dict[str, Any]]:
    ids = ex._reader.trial_ids(st)
    return ex._reader.rows(st, ids)


def global_ids(ex: Experiment, st: store.Store) -> dict[int, str | None]:
    """Local number -> global id of every trial (from the history rows)."""
    return {r["trial_id"]: r.get("global_id") or r.get("record") for r in all_rows(ex, st)}


def resolve(ex: Experiment, trial: Any) -> Any:
    """A trial named by a global-id prefix (text) -> its number; numbers and anything else
    are returned as is (the caller's checks refuse what is not a trial). Decimal text is
    refused: in Python a trial number is an int."""
    if isinstance(trial, str):
        st = ex._need_store()
        if trial.isdigit():  # "12" is not trial 12 in Python (nor trials 1 and 2): refused
            raise TrialNotFound(trial, ex.id, max(ex._reader.trial_ids(st), default=0))
        return identity.resolve(ex.id, trial, lambda: global_ids(ex, st))
    return trial


def _global_id(ex: Experiment, trial: Any) -> tuple[int, str]:
    number = resolve(ex, trial)
    oid = ex._record_oid(number)  # TrialNotFound for an unknown one
    record = ex._record(number)
    gid = identity.global_id_of(record, oid)
    assert gid is not None
    return int(number), gid


# ---------------------------------------------------------------------------------------
# Annotating
# ---------------------------------------------------------------------------------------


def annotate_trials(ex: Experiment, trials: Iterable[Any], action: str, values: Iterable[Any]):
    """Record ``action`` (tag, untag, note, archive, unarchive) with each of ``values`` on
    each trial; every trial and value is checked before anything is written."""
    values = list(values) or [None]
    if action in ("tag", "untag"):
        values = [annotate.validate_tag(v) for v in values]
    targets = [_global_id(ex, t) for t in trials]
    st = ex._store_for_writing()
    if action == "untag":
        current = annotate.read_all(st, ex.id)
        for number, gid in targets:
            have = current.get(gid, annotate.TrialAnnotations()).tags
            missing = [v for v in values if v not in have]
            if missing:
                raise UnknownTag(missing[0], have, number)
    for _, gid in targets:
        for value in values:
            annotate.add_event(st, ex.id, gid, action, value)
    return [n for n, _ in targets]


def annotations_of(ex: Experiment, trial: Any) -> dict[str, Any]:
    """Tags, notes, archived flag and the events (who, when) of one trial."""
    _, gid = _global_id(ex, trial)
    got = annotate.read_all(ex._read_store(), ex.id).get(gid, annotate.TrialAnnotations())
    return {"tags": got.tags, "notes": got.notes, "archived": got.archived, "history": got.events}


def extras_of(ex: Experiment, trial_id: int | None, record: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`trial_extras` of trial ``trial_id`` (None: the last) of ``ex``."""
    number = int(trial_id) if trial_id is not None else ex._last_trial_id
    return trial_extras(ex._need_store(), ex.id, number, record, ex._record_oid(number))


def trial_extras(
    st: store.Store, experiment_id: str, number: int, record: Mapping[str, Any], oid: str
) -> dict[str, Any]:
    """What ``get_trial`` adds to a record: local number, global id, origin, annotations."""
    gid = identity.global_id_of(record, oid)
    got = annotate.read_all(st, experiment_id).get(gid or "", annotate.TrialAnnotations())
    origin = read_origin(st, experiment_id, number)
    if origin is not None and origin.get("record") != store.Link(store.Oid(oid)):
        origin = None  # left by a writer stopped half way: it names another trial
    if origin is not None:
        origin = {k: (v.oid if isinstance(v, store.Link) else v) for k, v in origin.items()}
    return {
        "id": number,
        "global_id": gid,
        "origin": origin,
        "tags": got.tags,
        "notes": got.notes,
        "archived": got.archived,
    }


# ---------------------------------------------------------------------------------------
# Deleting
# ---------------------------------------------------------------------------------------


def delete_trial(ex: Experiment, trial: Any) -> int:
    """Remove a trial's ref, origin, claim and annotations (``gc`` then reclaims what nothing
    else reaches: objects shared with other trials and cache entries stay). Its
    number is never given again in this store (daskperiment/numbering.py)."""
    from .numbering import raise_high_water

    number, gid = _global_id(ex, trial)
    st = ex._store_for_writing()
    oid = st.refs.get(trial_ref(ex.id, number))
    raise_high_water(st, ex.id, number)  # first: once the ref is gone the number is never free
    st.refs.swap(trial_ref(ex.id, number), oid, None)  # refused if it moved meanwhile
    try:
        st.refs.delete(origin_ref(ex.id, number))
    except store.errors.RefNotFound:
        pass
    _drop_claim(st, ex.id, gid, number)
    annotate.delete_all(st, ex.id, gid)
    history.drop_rows(st, ex.id, [number])
    ex._reader.forget(number)
    return number


def _drop_claim(st: store.Store, experiment_id: str, gid: str, number: int) -> None:
    """Remove the claim of a deleted trial (daskperiment/placement.py) if it names this
    number: the trial sent here again arrives as a new one, under a new number."""
    name = claim_ref(experiment_id, gid)
    try:
        current = st.refs.get(name)
        claim = read_json(st, current)
    except (store.errors.StoreError, KeyError, ValueError):
        return
    if isinstance(claim, dict) and claim.get("placed") == number:
        try:
            st.refs.swap(name, current, None)
        except store.errors.RefConflict:
            pass  # moved by a writer placing it again meanwhile: its claim stands


# ---------------------------------------------------------------------------------------
# The history, searched
# ---------------------------------------------------------------------------------------


def history_frame(
    ex: Experiment,
    rows: list[dict[str, Any]],
    verbose: bool = False,
    *,
    where: str | None = None,
    tags: Iterable[str] | str | None = None,
    all: bool = False,  # noqa: A002 - the CLI's --all
) -> Any:
    """The history DataFrame: archived trials left out unless ``all``; a ``Tags`` column once
    any trial has a tag; only trials with every one of ``tags``; rows matching ``where``."""
    notes = annotate.read_all(ex._read_store(), ex.id) if rows else {}
    state = [notes.get(r.get("global_id") or r.get("record") or "") for r in rows]
    keep = [all or s is None or not s.archived for s in state]
    rows = [r for r, k in zip(rows, keep, strict=True) if k]
    state = [s for s, k in zip(state, keep, strict=True) if k]
    frame = history.frame(rows, ex._parameters.names, verbose)
    if any(s is not None and s.tags for s in state) or tags:
        frame[TAGS_COLUMN] = [", ".join(s.tags) if s else "" for s in state]
    if verbose:
        frame[GLOBAL_ID_COLUMN] = [r.get("global_id") or r.get("record") for r in rows]
        frame[ORIGIN_COLUMN] = _origins(ex, [(r["trial_id"], r.get("record")) for r in rows])
    if tags:
        wanted = [tags] if isinstance(tags, str) else list(tags)
        known = {t for s in notes.values() for t in s.tags}
        for tag in wanted:
            if tag not in known:
                raise UnknownTag(tag, known)
        has = [s is not None and set(wanted) <= set(s.tags) for s in state]
        frame = frame[has]
    if where:
        frame = filter_history(frame, where)
    return frame


def _origins(ex: Experiment, trials: list[tuple[int, str | None]]) -> list[str]:
    st = ex._read_store()
    if st is None:
        return ["" for _ in trials]
    return origins_in(st, ex.id, [n for n, _ in trials], dict(trials))


def origins_in(
    st: store.Store,
    experiment_id: str,
    numbers: Iterable[int],
    records: Mapping[int, str | None] | None = None,
) -> list[str]:
    """``trial N on HOST`` for trials that arrived from elsewhere, else empty (verbose only:
    one read per arrived trial). With ``records`` (number -> record oid), an origin naming
    another record than the trial's own is ignored."""
    prefix = origin_ref(experiment_id, 0)[:-1]
    arrived = set(st.refs.names(prefix))
    out = []
    for n in numbers:
        origin = read_origin(st, experiment_id, n) if f"{prefix}{n}" in arrived else None
        oid = (records or {}).get(n)
        if origin is not None and oid and origin.get("record") != store.Link(store.Oid(oid)):
            origin = None
        host = f" on {origin.get('host')}" if origin and origin.get("host") else ""
        out.append(f"trial {origin.get('number')}{host}" if origin else "")
    return out


def filter_history(frame: Any, where: str) -> Any:
    """Rows of a history ``frame`` matching ``where`` (the dashboard's filter language)."""
    from . import search as filters

    try:
        mask = filters.filter_mask(frame, lambda: filters.text_cells(frame), where)
    except filters.QueryError as exc:
        raise SearchError(_with_position(str(exc), where)) from None
    return frame[mask.to_numpy()]


def sort(frame: Any, spec: str) -> Any:
    """``COL`` or ``COL:desc`` (``:asc`` too); the column name case-insensitive, ``id`` the
    trial number."""
    from . import search as filters

    name, _, order = spec.rpartition(":") if ":" in spec else (spec, "", "asc")
    if order.lower() not in ("asc", "desc"):
        name, order = spec, "asc"
    try:
        column = filters.resolve_column(frame, name)
        return filters.sort_frame(frame, column, order.lower() == "desc")
    except filters.QueryError as exc:
        raise SearchError(str(exc).replace(" in filter", " to sort by")) from None


def _with_position(message: str, where: str) -> str:
    """Say where in ``where`` the failing term starts (1-based), if it can be found."""
    import re

    quoted = re.search(r"'([^']*)'", message)
    if quoted and quoted.group(1) and quoted.group(1) in where:
        return f"{message} (at position {where.index(quoted.group(1)) + 1} of {where!r})"
    return f"{message} (in {where!r})"
