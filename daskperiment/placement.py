"""Placing arriving trials: each gets one local number, however many writers bring it at once.

Push, pull and bundle import bring trials whose objects are already copied into the store;
what is left is to give each a number (``experiments/<id>/trials/<n>``). Two writers bringing
the same new trial at the same moment (two pushes of one notebook, a pull racing a push) must
not give it two numbers, and a writer killed half way must not block the trial for ever.

**The claim.** For a trial of global id ``g`` (daskperiment/identity.py) the local ref
``experiments/<id>/globals/<g>`` is created if absent, naming the trial's *origin* object,
whose ``placed`` field is the number it is to get. Whoever finds the claim made follows it:
it places the trial under the claimed number or finds it there. Per trial, in this order:

1. the origin object is written and the claim created; a writer finding a claim adopts it;
2. ``origins/<n>`` is created naming the claim's origin (or found naming the same record), so
   a trial ref that exists always has its origin (the record says the number it was made
   with; the origin is what lets it stand under another);
3. ``trials/<n>`` is created. Found naming the same record: the trial is already there.
   Found naming another trial (a trial recorded here took ``n`` meanwhile, or while the
   claimer was down): the origin written in step 2 is removed again, the claim is moved to a
   new number (compare-and-swap) and the trial placed there.

A writer killed after step 1 or 2 leaves a claim without a trial ref; the next writer
bringing that trial completes it under the claimed number (or moves it when the number was
taken since). A claim naming another record than the one arriving (the same global id on two
records: a hand-made store) is left alone and the trial placed without one.

**Batches.** Numbers are chosen for all arriving trials from one listing of the trial refs
(a trial keeps its number when it is free and above the high-water mark of deleted trials,
daskperiment/numbering.py; otherwise it gets the next one above everything taken, in the
order of the numbers they had), then the trials are placed concurrently on remote stores
(each step waits on the network). Trials whose number another writer took in between are
placed again in another round, from a new listing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import daskperiment_store as store
from daskperiment_store import Link

from .errors import SharingError
from .identity import global_id_of, origin_object
from .ids import parse_trial_id
from .numbering import high_water
from .reads import ORIGIN_TYPE, read_json
from .record import claim_ref, origin_ref, trial_ref, trials_prefix

#: Threads placing trials on a remote store.
REMOTE_WORKERS = 8
#: Rounds of placing before giving up (each only for trials whose number was taken).
MAX_ROUNDS = 50

T = TypeVar("T")
R = TypeVar("R")

ADDED, THERE, TAKEN = "added", "there", "taken"


@dataclass(frozen=True)
class Arrival:
    """A trial to place: the number it had where it came from, its record and global id."""

    number: int
    oid: str
    record: Mapping[str, Any]
    global_id: str


@dataclass
class Placement:
    """Source number -> local number of the trials placed by this call (``added``) and of
    those another writer placed meanwhile (``there``)."""

    added: dict[int, int] = field(default_factory=dict)
    there: dict[int, int] = field(default_factory=dict)


def place(
    st: store.Store,
    experiment_id: str,
    arriving: Mapping[int, tuple[str, dict[str, Any]]],
    source: str,
    taken: Iterable[int] | None = None,
) -> Placement:
    """Give local numbers to ``arriving`` (source number -> (record oid, record)), whose
    objects are all in ``st`` already. ``taken``: the trial numbers of ``st`` from a listing
    the caller just made (else one is made here)."""
    pending = [
        Arrival(n, oid, record, global_id_of(record, oid) or oid)
        for n, (oid, record) in sorted(arriving.items())
    ]
    used = set(_listed(st, experiment_id) if taken is None else taken)
    floor = high_water(st, experiment_id)
    out = Placement()
    for _ in range(MAX_ROUNDS):
        wanted = choose_numbers([a.number for a in pending], used, floor)

        def place(a: Arrival, w: dict[int, int] = wanted) -> tuple[str, int]:
            return _place_one(st, experiment_id, a, w[a.number], source)

        outcomes = _map(st, place, pending)
        retry = []
        for arrival, (kind, number) in zip(pending, outcomes, strict=True):
            if kind == ADDED:
                out.added[arrival.number] = number
            elif kind == THERE:
                out.there[arrival.number] = number
            else:
                retry.append(arrival)
        if not retry:
            return out
        # Taken by another writer in between: a new listing, numbers above it (and above
        # those just found taken: one may hold another writer's origin, its trial ref next).
        taken_now = {wanted[a.number] for a in retry}
        pending, used = retry, set(_listed(st, experiment_id)) | taken_now
        floor = max(floor, high_water(st, experiment_id))
    raise SharingError(
        f"{len(pending)} trial(s) of {experiment_id!r} found their numbers taken "
        f"{MAX_ROUNDS} times in {st.url} (many writers at once?); run the same command again"
    )


def choose_numbers(numbers: Iterable[int], taken: Iterable[int], floor: int) -> dict[int, int]:
    """Source number -> number wanted here: its own when free and above ``floor`` (a deleted
    trial's number is never given again), else the next above everything taken, in order."""
    used = set(taken)
    top = max(max(used, default=0), floor)
    out = {}
    for number in sorted(numbers):
        if number in used or number <= floor:
            number_here = top + 1
        else:
            number_here = number
        used.add(number_here)
        top = max(top, number_here)
        out[number] = number_here
    return out


def _listed(st: store.Store, experiment_id: str) -> list[int]:
    prefix = trials_prefix(experiment_id)
    numbers = (parse_trial_id(name[len(prefix) :]) for name in st.refs.names(prefix))
    return [n for n in numbers if n is not None]


def _map(st: store.Store, fn: Callable[[T], R], items: list[T]) -> list[R]:
    """``fn`` over ``items`` in order; in threads when ``st`` waits on a network."""
    local = isinstance(st.backend, store.LocalBackend | store.MemoryBackend)
    if local or len(items) < 2:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(REMOTE_WORKERS, thread_name_prefix="place") as pool:
        return list(pool.map(fn, items))


# ---------------------------------------------------------------------------------------
# One trial
# ---------------------------------------------------------------------------------------


def _place_one(
    st: store.Store, experiment_id: str, arrival: Arrival, wanted: int, source: str
) -> tuple[str, int]:
    """Place ``arrival`` under the number its claim names (made here for ``wanted`` if it
    has none); (ADDED | THERE, number), or (TAKEN, wanted) when ``wanted`` is taken."""
    name = claim_ref(experiment_id, arrival.global_id)
    for _ in range(MAX_ROUNDS):
        claim = _claim(st, name, arrival, wanted, source)
        if claim is None:  # the global id is claimed for another record: no claim for this one
            origin: str = st.put(
                origin_object(arrival.oid, arrival.record, source, arrival.number, wanted)
            )
            return _create(st, experiment_id, arrival, wanted, origin)
        origin, number = claim
        kind, _ = _create(st, experiment_id, arrival, number, origin)
        if kind != TAKEN or number == wanted:
            return kind, number
        # The claimed number went to another trial: claim the wanted one instead.
        moved = st.put(origin_object(arrival.oid, arrival.record, source, arrival.number, wanted))
        try:
            st.refs.swap(name, origin, moved)
        except store.errors.RefConflict:
            pass  # another writer moved it first: follow its claim
    return TAKEN, wanted


def _claim(
    st: store.Store, name: str, arrival: Arrival, wanted: int, source: str
) -> tuple[str, int] | None:
    """(origin oid, number) of the claim of ``arrival``, made for ``wanted`` if absent; None
    if the global id is claimed for another record."""
    for _ in range(MAX_ROUNDS):
        try:
            current = st.refs.get(name)
        except store.errors.RefNotFound:
            origin = st.put(
                origin_object(arrival.oid, arrival.record, source, arrival.number, wanted)
            )
            try:
                st.refs.create(name, origin)
                return origin, wanted
            except store.errors.RefExists:
                continue  # claimed by another writer just now: follow its claim
        found = _read_origin(st, current)
        if found is None:  # unreadable: replaced by a good claim
            origin = st.put(
                origin_object(arrival.oid, arrival.record, source, arrival.number, wanted)
            )
            try:
                st.refs.swap(name, current, origin)
                return origin, wanted
            except store.errors.RefConflict:
                continue
        record, number = found
        return (current, number) if record == arrival.oid else None
    raise SharingError(f"the claim {name} of {st.url} keeps changing; try again")


def _read_origin(st: store.Store, oid: str) -> tuple[str, int] | None:
    """(record oid, placed number) of an origin object; None if it is not one."""
    try:
        origin = read_json(st, oid)
    except (store.errors.StoreError, KeyError, ValueError):
        return None
    if not isinstance(origin, dict) or origin.get("type") != ORIGIN_TYPE:
        return None
    record, placed = origin.get("record"), origin.get("placed")
    if not isinstance(record, Link) or type(placed) is not int or placed < 1:
        return None
    return record.oid, placed


def _create(
    st: store.Store, experiment_id: str, arrival: Arrival, number: int, origin: str
) -> tuple[str, int]:
    """Steps 2 and 3 for ``number``: its origin ref, then its trial ref."""
    if not _hold_origin(st, origin_ref(experiment_id, number), origin, arrival.oid):
        return TAKEN, number
    try:
        st.refs.create(trial_ref(experiment_id, number), store.Oid(arrival.oid))
        return ADDED, number
    except store.errors.RefExists as exc:
        if exc.current == arrival.oid:
            return THERE, number
    # Another trial holds the number: the origin named it, not that trial.
    try:
        st.refs.swap(origin_ref(experiment_id, number), origin, None)
    except store.errors.RefConflict:
        pass
    return TAKEN, number


def _hold_origin(st: store.Store, name: str, origin: str, record_oid: str) -> bool:
    """Create the origin ref ``name`` naming ``origin``; True if it names an origin of
    ``record_oid`` now (this one, or another writer's for the same trial)."""
    for _ in range(MAX_ROUNDS):
        try:
            st.refs.create(name, store.Oid(origin))
            return True
        except store.errors.RefExists as exc:
            current = exc.current
        if not store.is_oid(current):
            continue  # deleted again since: try to create it again
        found = _read_origin(st, current)
        return found is not None and found[0] == record_oid
    return False
