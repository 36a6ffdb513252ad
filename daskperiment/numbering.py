"""A trial number is never given twice in one store: the high-water mark of deleted trials.

Trial numbers are allocated one above the last trial (daskperiment/opening.py finds it with
a few existence checks, without listing). Deleting the last trial would free its number for
the next trial, and a user who wrote "trial 12" in a notebook would later find another
trial 12. So deleting a trial first raises the experiment's *high-water mark*, the local ref
``experiments/<id>/highest`` naming a small JSON object (``type: daskperiment.high_water``,
``number``: the highest number a deleted trial had), and every allocation (a new trial, an
arriving one) takes a number above it.

Opening an experiment does not read it (``Experiment()`` stays a few existence checks): only
allocating a number does, with one ref read (a missing ref when nothing was ever deleted).
The mark is raised by compare-and-swap, so two processes deleting at once keep the higher.
It is raised *before* the trial ref is removed: an allocation that finds the number free
afterwards also finds the mark covering it (one that read the mark in between, within
microseconds, could still take it; a delete racing a trial start of the same number).
"""

from __future__ import annotations

from typing import Any

import daskperiment_store as store

from .log import logger
from .record import high_water_ref

HIGH_WATER_TYPE = "daskperiment.high_water"


def high_water(st: store.Store, experiment_id: str) -> int:
    """The highest number a deleted trial of ``experiment_id`` had (0: none deleted).

    A damaged mark reads as 0 with a warning: numbers above every existing trial are then
    still never shared by two trials, only a deleted one's number may come back."""
    try:
        return _number(st, st.refs.get(high_water_ref(experiment_id)))
    except store.errors.RefNotFound:
        return 0
    except (store.errors.StoreError, KeyError, TypeError, ValueError) as exc:
        logger.warning("High-water mark of %s unreadable (%s): ignored", experiment_id, exc)
        return 0


def raise_high_water(st: store.Store, experiment_id: str, number: int) -> None:
    """Make the mark at least ``number`` (compare-and-swap, retried on a concurrent change)."""
    name = high_water_ref(experiment_id)
    for _ in range(100):
        try:
            current: str | None = st.refs.get(name)
        except store.errors.RefNotFound:
            current = None
        try:
            have = _number(st, current) if current is not None else 0
        except (store.errors.StoreError, KeyError, TypeError, ValueError):
            have = 0  # damaged: replaced by a good one
        if have >= number:
            return
        new = st.put(_mark(number))
        try:
            st.refs.swap(name, current, new)
            return
        except store.errors.RefConflict:
            continue
    raise store.errors.RefConflict(name, None, "(changing too often)")


def _mark(number: int) -> dict[str, Any]:
    return {"type": HIGH_WATER_TYPE, "version": 1, "number": number}


def _number(st: store.Store, oid: str) -> int:
    from .reads import read_json

    value = read_json(st, oid)
    if not isinstance(value, dict) or value.get("type") != HIGH_WATER_TYPE:
        raise ValueError(f"not a {HIGH_WATER_TYPE} object")
    number = value.get("number")
    if type(number) is not int or number < 0:
        raise ValueError(f"not a {HIGH_WATER_TYPE} object")
    return number
