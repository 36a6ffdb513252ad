"""Global trial identity: a trial's global id never changes; its number is the store's name.

- Every new record carries ``global_id``: 32 hex characters drawn at random (uuid4) when the
  trial starts. Random rather than derived from content, because a trial needs its identity
  from its first moment (the running record, annotations made while it runs) and its record
  changes once, from running to final; a content digest would change with it. Records made
  before global ids existed get the digest of their final record as global id (content-derived,
  equally stable since a final record never changes).
- Whether a trial is *already there* on the other side of a push, pull or import is decided
  by the oid of its final record, which the ref listing gives without reading a record: the
  same trial is the same record, byte for byte, in every store.
- The integer trial id is the store's local name for it (like a branch name for a commit):
  a trial arriving whose number is taken gets the next free one (daskperiment/placement.py,
  once however many writers bring it at the same time). Its *origin* (global id, the number
  it was made with, the store it came from, when, the number it got here) is kept in a local
  object named by ``experiments/<id>/origins/<n>``; the origin links the record it describes,
  so a trial ref moved to another record is not taken as renumbered.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import daskperiment_store as store
from daskperiment_store import Link

from .errors import DaskperimentError, TrialNotFound
from .ids import parse_trial_id
from .reads import ORIGIN_TYPE

GLOBAL_ID_FIELD = "global_id"
_GLOBAL_ID = re.compile(r"[0-9a-f]{32}")
#: Shortest global-id prefix a command accepts.
MIN_PREFIX = 4


class AmbiguousTrial(DaskperimentError, KeyError):
    """A global-id prefix that names several trials."""

    def __init__(self, prefix: str, experiment_id: str, matches: list[int]) -> None:
        self.prefix, self.experiment_id, self.matches = prefix, experiment_id, matches
        shown = ", ".join(str(n) for n in matches[:5])
        super().__init__(
            f"{prefix!r} is the start of the global ids of several trials of "
            f"{experiment_id!r} (trials {shown}); give more characters or the trial number"
        )

    def __str__(self) -> str:
        return str(self.args[0])


def new_global_id() -> str:
    """A fresh global id (random, 32 hex characters)."""
    return uuid.uuid4().hex


def global_id_of(record: Mapping[str, Any], record_oid: str | None) -> str | None:
    """The global id of a trial: its record's ``global_id``, else its record's oid."""
    value = record.get(GLOBAL_ID_FIELD)
    if isinstance(value, str) and _GLOBAL_ID.fullmatch(value):
        return value
    return record_oid


# ---------------------------------------------------------------------------------------
# Origins
# ---------------------------------------------------------------------------------------


def origin_object(
    record_oid: str, record: Mapping[str, Any], source: str, source_number: int, placed: int
) -> dict[str, Any]:
    """Where an arriving trial came from, and the local number it is placed under here
    (``placed``: the number its claim names, daskperiment/placement.py)."""
    return {
        "type": ORIGIN_TYPE,
        "version": 1,
        "record": Link(store.Oid(record_oid)),
        "global_id": global_id_of(record, record_oid),
        "number": record.get("trial_id"),
        "host": (record.get("process") or {}).get("host"),
        "source": source,
        "source_number": source_number,
        "received": time.time(),
        "placed": placed,
    }


def describe_origin(origin: Mapping[str, Any] | None) -> str | None:
    """One line saying where an arrived trial came from."""
    if not origin:
        return None
    host = f" on {origin['host']}" if origin.get("host") else ""
    return (
        f"trial {origin.get('number')}{host}; arrived as trial {origin.get('source_number')} "
        f"of {origin.get('source')}"
    )


# ---------------------------------------------------------------------------------------
# Naming a trial: local number or global-id prefix
# ---------------------------------------------------------------------------------------


def resolve(
    experiment_id: str, text: str, global_ids: Callable[[], Mapping[int, str | None]]
) -> int:
    """The local number ``text`` names: decimal digits are a number, anything else a
    global-id prefix (at least :data:`MIN_PREFIX` hex characters) that must name one trial.
    ``global_ids()`` gives local number -> global id (read only for a prefix)."""
    number = parse_trial_id(text)
    if number is not None:
        return number
    prefix = text.lower()
    known = global_ids()
    last = max(known, default=0)
    if len(prefix) < MIN_PREFIX or not re.fullmatch(r"[0-9a-f]+", prefix) or prefix.isdigit():
        raise TrialNotFound(text, experiment_id, last)
    matches = sorted(n for n, g in known.items() if g and g.startswith(prefix))
    if not matches:
        raise TrialNotFound(text, experiment_id, last)
    if len(matches) > 1:
        raise AmbiguousTrial(text, experiment_id, matches)
    return matches[0]


# ---------------------------------------------------------------------------------------
# Copying the objects of arriving trials
# ---------------------------------------------------------------------------------------


def copy_objects(src: store.Store, dst: store.Store, roots: list[str]) -> tuple[int, int]:
    """Copy every object the records ``roots`` reach that ``dst`` lacks (verified, as
    stored); return (objects, bytes) copied. No ref is created here."""
    from concurrent.futures import ThreadPoolExecutor

    from daskperiment_store import sync as store_sync

    workers = store_sync.default_workers(src, dst)
    oids = [store.validate_oid(o) for o in roots]
    with ThreadPoolExecutor(workers) as pool:
        need = store_sync.missing_oids(dst, src.walk(oids), pool if workers > 1 else None)
        return store_sync.copy_objects(src, dst, need, workers)
