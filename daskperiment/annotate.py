"""Tags, notes and archiving: annotations are their own objects and refs; records stay immutable.

Each change is one immutable JSON *event* object ``{"type": "daskperiment.annotation",
"trial": <global id>, "action": "tag"|"untag"|"note"|"archive"|"unarchive", "value": ...,
"who": "user@host", "when": <epoch seconds>, "nonce": <random hex>}``, named by the ref
``experiments/<id>/annotations/<global id>/<event oid>``. A ref named after its own oid can
never conflict: concurrent writers create different refs and both are kept, and merging two
stores' annotations (push, pull, bundles) is the union of their events. The state of a trial
(its tags, its notes, whether it is archived) is the events replayed in time order (ties broken
by oid), so every store holding the same events shows the same state; the events themselves are
the history (who did what, when).
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import daskperiment_store as store

from .errors import DaskperimentError
from .reads import read_json
from .record import annotation_ref, annotations_prefix

EVENT_TYPE = "daskperiment.annotation"
ACTIONS = ("tag", "untag", "note", "archive", "unarchive")
#: Tags are short names: letters, digits and ``_ . : / -``, 1 to 64 characters.
_TAG = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
TAG_RULE = "tags are 1 to 64 letters, digits, '_', '.', ':', '/' and '-'"
MAX_NOTE = 10_000
_OID = re.compile(r"[0-9a-f]{32}")


class AnnotationError(DaskperimentError, ValueError):
    """An annotation that cannot be made (a malformed tag, an empty note) or read."""


def validate_tag(tag: object) -> str:
    if not isinstance(tag, str) or not _TAG.fullmatch(tag):
        raise AnnotationError(f"invalid tag {tag!r}: {TAG_RULE}")
    return tag


def _who() -> str:
    import getpass  # only writers ask (it imports termios): reading stays light

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def add_event(
    st: store.Store, experiment_id: str, global_id: str, action: str, value: str | None = None
) -> str:
    """Record one annotation event for the trial ``global_id``; return its oid."""
    if action in ("tag", "untag"):
        validate_tag(value)
    elif action == "note":
        if not isinstance(value, str) or not value.strip():
            raise AnnotationError("a note needs some text")
        if len(value) > MAX_NOTE:
            raise AnnotationError(f"a note is at most {MAX_NOTE} characters ({len(value)} given)")
    event = {
        "type": EVENT_TYPE,
        "version": 1,
        "trial": global_id,
        "action": action,
        "value": value,
        "who": _who(),
        "when": time.time(),
        "nonce": uuid.uuid4().hex,
    }
    oid = st.put(event)
    st.refs.create(annotation_ref(experiment_id, global_id, oid), oid)
    return oid


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


class TrialAnnotations:
    """What the events of one trial add up to, and the events themselves (the history).

    A plain class, not a data class: this module loads whenever the history is read, and
    defining a data class compiles its methods (~0.4 ms)."""

    __slots__ = ("archived", "events", "notes", "tags")

    def __init__(self) -> None:
        self.tags: list[str] = []
        self.notes: list[dict[str, Any]] = []
        self.archived = False
        self.events: list[dict[str, Any]] = []


def is_event(value: Any, global_id: str | None = None) -> bool:
    """Whether ``value`` is a well-formed annotation event (of trial ``global_id``)."""
    return (
        isinstance(value, dict)
        and value.get("type") == EVENT_TYPE
        and value.get("action") in ACTIONS
        and isinstance(value.get("trial"), str)
        and (global_id is None or value.get("trial") == global_id)
        and isinstance(value.get("when"), int | float)
        and (value.get("value") is None or isinstance(value.get("value"), str))
    )


def replay(events: Iterable[tuple[str, dict[str, Any]]]) -> TrialAnnotations:
    """The state ``(oid, event)`` pairs give, replayed in (time, oid) order."""
    out = TrialAnnotations()
    tags: dict[str, None] = {}
    for oid, ev in sorted(events, key=lambda item: (item[1]["when"], item[0])):
        action, value = ev["action"], str(ev.get("value"))
        if action == "tag":
            tags[value] = None
        elif action == "untag":
            tags.pop(value, None)
        elif action == "note":
            out.notes.append({"text": value, "who": ev.get("who"), "when": ev["when"]})
        else:
            out.archived = action == "archive"
        out.events.append(dict(ev, oid=oid))
    out.tags = sorted(tags)
    return out


def read_all(st: store.Store | None, experiment_id: str) -> dict[str, TrialAnnotations]:
    """Global id -> annotations, for every annotated trial. An event that cannot be read or
    is malformed is left out (fsck reports damaged objects)."""
    if st is None:
        return {}
    prefix = annotations_prefix(experiment_id)
    by_trial: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, oid in st.refs.list(prefix).items():
        gid = name[len(prefix) :].split("/")[0]
        try:
            ev = read_json(st, oid)
        except (store.errors.StoreError, KeyError, ValueError):
            continue
        if is_event(ev, gid):
            by_trial.setdefault(gid, []).append((oid, ev))
    return {gid: replay(evs) for gid, evs in by_trial.items()}


def delete_all(st: store.Store, experiment_id: str, global_id: str) -> int:
    """Remove the annotation refs of one trial (when it is deleted); return how many."""
    names = st.refs.names(f"{annotations_prefix(experiment_id)}{global_id}/")
    for name in names:
        try:
            st.refs.delete(name)
        except store.errors.RefNotFound:
            pass
    return len(names)


# ---------------------------------------------------------------------------------------
# Sharing: the union of events
# ---------------------------------------------------------------------------------------


def name_problem(name: str, oid: str, experiment_id: str) -> str | None:
    """Why an annotation ref of a bundle or a store to pull from is not well formed, if so."""
    prefix = annotations_prefix(experiment_id)
    parts = name[len(prefix) :].split("/") if name.startswith(prefix) else []
    if len(parts) != 2 or not _OID.fullmatch(parts[0]) or parts[1] != oid:
        return f"{name!r} is not an annotation ref (annotations/<global id>/<its own oid>)"
    return None


def check_events(st: store.Store, refs: Mapping[str, str], experiment_id: str, where: str) -> None:
    """Refuse (:class:`AnnotationError`) annotation refs that are malformed or name objects
    that are not annotation events of that trial (read as JSON only: nothing is unpickled)."""
    prefix = annotations_prefix(experiment_id)
    for name, oid in refs.items():
        problem = name_problem(name, oid, experiment_id)
        if problem is None:
            gid = name[len(prefix) :].split("/")[0]
            try:
                ok = is_event(read_json(st, oid), gid)
            except (store.UnexpectedKind, store.errors.StoreError, ValueError) as exc:
                ok, problem = False, f"{name!r}: {exc}"
            problem = problem or (None if ok else f"{name!r} names no annotation event")
        if problem:
            raise AnnotationError(f"{where}: {problem}; nothing was shared")


def missing(src: store.Store, dst: store.Store, experiment_id: str) -> dict[str, str]:
    """The annotation refs of ``src`` that ``dst`` lacks, each checked (AnnotationError)."""
    prefix = annotations_prefix(experiment_id)
    have = set(dst.refs.names(prefix))
    wanted: dict[str, str] = {n: o for n, o in src.refs.list(prefix).items() if n not in have}
    check_events(src, wanted, experiment_id, src.url)
    return wanted


def transfer(src: store.Store, dst: store.Store, wanted: Mapping[str, str], report: Any) -> None:
    """Copy the annotation events ``wanted`` (see :func:`missing`) from ``src`` (a union:
    nothing is replaced); adds their count to ``report.annotations_added``."""
    from daskperiment_store import sync as store_sync

    if not wanted:
        return
    moved = store_sync.push(src, dst, list(wanted))
    report.annotations_added += len(moved.refs_updated)
    report.objects_copied += moved.objects_copied
    report.bytes_copied += moved.bytes_copied
