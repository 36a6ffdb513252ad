"""push/pull: copy the objects another store lacks, then its refs, never overwriting one.

Objects travel as their stored bytes (header + compressed payload), so nothing is decoded or
re-encoded; every object read is verified against its digest before it is written anywhere.
Refs are written only after every object they reach is in place, so a reader of the
destination never sees a ref to a missing object. A ref that already exists with another oid
is a conflict: all refs are checked first and, on any conflict, none is changed.

The ref primitives (selecting, planning and applying ref updates) serve :mod:`daskperiment_store.bundle`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from .digest import Oid, validate_oid
from .errors import RefConflict, RefConflicts, RefExists, RefNotFound
from .objfile import object_key, verify_stream
from .reports import TransferReport

if TYPE_CHECKING:
    from .store import Store

#: Objects whose existence is checked per round trip to the destination.
HAS_BATCH = 256
#: Refs whose objects are copied, then the refs created, before the next batch (push).
REF_BATCH = 1000
T = TypeVar("T")
R = TypeVar("R")


# -- refs -----------------------------------------------------------------------------------


@dataclass
class RefPlan:
    """How incoming refs relate to a store: to create, already equal, or conflicting
    (name -> (incoming oid, existing oid))."""

    create: dict[str, Oid] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    conflicts: dict[str, tuple[str, str]] = field(default_factory=dict)


def select_refs(store: Store, refs: Iterable[str] | str = "") -> dict[str, Oid]:
    """Resolve a ref selection: a str is a name prefix ("" = all), else exact names.

    Raises :class:`daskperiment_store.errors.RefNotFound` for an exact name that does not exist.
    """
    if isinstance(refs, str):
        return dict(sorted(store.refs.list(refs).items()))
    return {name: store.refs.get(name) for name in sorted(set(refs))}


def plan_refs(store: Store, incoming: Mapping[str, Oid], workers: int = 1) -> RefPlan:
    """Split ``incoming`` refs into (to create, already equal, conflicting) for ``store``.

    Conflicts map name -> (incoming oid, existing oid).
    """
    existing = _current_refs(store, list(incoming), workers)
    plan = RefPlan()
    for name, oid in incoming.items():
        current = existing.get(name)
        if current is None:
            plan.create[name] = oid
        elif current == oid:
            plan.unchanged.append(name)
        else:
            plan.conflicts[name] = (oid, current)
    return plan


def _current_refs(store: Store, names: list[str], workers: int) -> dict[str, Oid]:
    """Current oids of those of ``names`` that exist.

    Names are listed once under their common directory; values are then read in one batch
    if most listed refs are wanted, else one by one (pushing 2 trials into a store of 10,000
    must not read 10,000 refs).
    """
    if not names:
        return {}
    common = _common_dir(names)
    listed = set(store.refs.names(common))
    present = [n for n in names if n in listed]
    if 2 * len(present) >= len(listed):
        values = store.refs.list(common)
        return {n: values[n] for n in present if n in values}
    found = bounded_map(lambda n: (n, _get_if_present(store, n)), present, workers)
    return {n: oid for n, oid in found if oid is not None}


def _get_if_present(store: Store, name: str) -> Oid | None:
    try:
        return store.refs.get(name)
    except RefNotFound:  # deleted since it was listed
        return None


def _common_dir(names: list[str]) -> str:
    """Longest prefix ending in '/' shared by all ``names`` ("" if none)."""
    lo, hi = min(names), max(names)
    n = 0
    while n < min(len(lo), len(hi)) and lo[n] == hi[n]:
        n += 1
    return lo[: lo.rfind("/", 0, n) + 1] if "/" in lo[:n] else ""


def apply_refs(
    store: Store,
    incoming: Mapping[str, Oid],
    *,
    force: bool = False,
    workers: int = 1,
    plan: RefPlan | None = None,
) -> tuple[list[str], list[str]]:
    """Create ``incoming`` refs in ``store``; return (updated, unchanged) names.

    All refs are checked before any is written (or ``plan``, checked by the caller, is used):
    if one exists with another oid, raise :class:`RefConflicts` and change nothing (unless
    ``force``, which moves such refs by compare-and-swap from the value seen). Each write is
    atomic, so a writer racing us since the check is never overwritten: its ref raises
    :class:`RefConflict`, and the refs created before it stay (they are complete: their
    objects were written first). Refs are independent, so ``workers`` threads may write them
    in any order.
    """
    plan = plan or plan_refs(store, incoming, workers)
    if plan.conflicts and not force:
        raise RefConflicts(plan.conflicts, store.backend.url)
    updated: list[str] = []
    unchanged = list(plan.unchanged)
    for name, created in bounded_map(
        lambda item: _create_ref(store, *item), plan.create.items(), workers
    ):
        (updated if created else unchanged).append(name)
    for name, (oid, old) in plan.conflicts.items():  # only with force; swap refuses a moved ref
        store.refs.swap(name, old, oid)
        updated.append(name)
    return sorted(updated), sorted(unchanged)


def _create_ref(store: Store, name: str, oid: Oid) -> tuple[str, bool]:
    """Create one ref; (name, False) if a racing writer created it with the same oid."""
    try:
        store.refs.create(name, oid)
    except RefExists as exc:
        if exc.current != oid:  # another writer created it since we checked
            raise RefConflict(name, None, exc.current) from None
        return name, False
    return name, True


# -- objects --------------------------------------------------------------------------------


def missing_oids(
    store: Store, oids: Iterable[Oid], pool: ThreadPoolExecutor | None = None
) -> Iterator[Oid]:
    """Yield those of ``oids`` that ``store`` lacks, checking in batches (threaded if ``pool``)."""
    # has_fresh, not has: it also renews an old object found present, so a concurrent gc
    # cannot collect it before the refs we create make it reachable.
    has = store.has_fresh
    it = iter(oids)
    while batch := list(itertools.islice(it, HAS_BATCH)):
        present = pool.map(has, batch) if pool else map(has, batch)
        yield from (oid for oid, has in zip(batch, present, strict=True) if not has)


def bounded_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 1) -> Iterator[R]:
    """``fn`` over ``items``, in ``workers`` threads with at most ``2 * workers`` in flight.

    Results come in no set order; the first error is re-raised (after the calls in flight
    finish). ``items`` is consumed in the calling thread only, so it may read a file.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="store-sync") as pool:
        pending: set[Future[R]] = set()
        for item in items:
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
            pending.add(pool.submit(fn, item))
        for fut in as_completed(pending):
            yield fut.result()


def copy_objects(src: Store, dst: Store, oids: Iterable[Oid], workers: int = 1) -> tuple[int, int]:
    """Copy ``oids`` (which ``dst`` lacks) verbatim, verified; return (objects, bytes) written.

    With ``workers > 1`` copies run in threads (worth it for remote stores, where each copy
    waits on the network), with at most ``2 * workers`` objects in memory at once.
    """
    copied = nbytes = 0
    for n in bounded_map(lambda oid: _copy_one(src, dst, oid), oids, workers):
        copied, nbytes = copied + (n > 0), nbytes + n
    return copied, nbytes


def _copy_one(src: Store, dst: Store, oid: Oid) -> int:
    """Copy one object; return the bytes written (0 if another writer stored it meanwhile)."""
    data = src._read_stored(oid)
    # Verified here, naming the source, rather than by put_stored naming the destination;
    # as a stream, so memory stays bounded whatever the object's size, and against the
    # destination's object size limit.
    verify_stream(oid, data, f"{src.backend.url}/{object_key(oid)}", dst.max_object_size)
    return len(data) if dst.put_stored(oid, data, verify=False) else 0


def push(
    src: Store,
    dst: Store,
    refs: Iterable[str] | str = "",
    *,
    force: bool = False,
    workers: int | None = None,
    check: Callable[[Mapping[str, Oid]], None] | None = None,
) -> TransferReport:
    """Copy ``refs`` of ``src`` and every object they reach into ``dst``.

    ``check(selected refs)`` runs once the refs of ``src`` are read and before anything is
    copied: whatever it raises refuses the push with nothing written (a caller's check that
    the refs still name what it validated).

    ``refs``: a name prefix ("" = every ref) or exact ref names. Only objects ``dst`` lacks
    are copied, as their stored bytes, each verified against its digest; then refs are
    created. Refs ``dst`` already has with the same oid are not walked: their objects are
    there (refs are created last), so a second push copies nothing and reads next to nothing.
    A ref existing in ``dst`` with another oid is a conflict: :class:`RefConflicts` is raised
    before any object or ref is written, unless ``force`` (replace those refs, as ``git push
    --force``; the objects they pointed at stay until ``gc``). ``workers``: threads for
    existence checks, copies and ref writes (default 1 between local/memory stores, 8
    otherwise).
    """
    workers = workers or default_workers(src, dst)
    selected = select_refs(src, refs)
    if check is not None:
        check(selected)
    plan = plan_refs(dst, selected, workers)
    if plan.conflicts and not force:
        raise RefConflicts(plan.conflicts, dst.backend.url)
    # A ref is only ever created once everything it reaches is stored (here, in imports and
    # in the writers of records), so a ref the destination already has with the same oid
    # needs no walk at all: this is what makes a second push cost one ref listing.
    unchanged = set(plan.unchanged)
    moving = [name for name in selected if name not in unchanged]
    report = TransferReport(refs_unchanged=sorted(unchanged))
    seen: set[str] = set()  # objects walked by an earlier batch: not walked again
    with ThreadPoolExecutor(workers) as pool:
        # In batches of refs: each batch's objects, then its refs, so an interrupted push
        # keeps what it finished (a second push goes on from there) and nothing waits on a
        # walk of everything.
        for start in range(0, len(moving), REF_BATCH):
            batch = moving[start : start + REF_BATCH]
            roots = [validate_oid(selected[name]) for name in batch]
            need = missing_oids(dst, src.walk(roots, seen=seen), pool if workers > 1 else None)
            objects, nbytes = copy_objects(src, dst, need, workers)
            report.objects_copied += objects
            report.bytes_copied += nbytes
            # The plan is reused: a ref created or moved since is still caught on write.
            updated, same = apply_refs(
                dst, {n: selected[n] for n in batch}, force=force, workers=workers,
                plan=_sub_plan(plan, batch),
            )  # fmt: skip
            report.refs_updated += updated
            report.refs_unchanged += same
    report.refs_updated.sort()
    report.refs_unchanged.sort()
    return report


def _sub_plan(plan: RefPlan, names: list[str]) -> RefPlan:
    return RefPlan(
        create={n: plan.create[n] for n in names if n in plan.create},
        conflicts={n: plan.conflicts[n] for n in names if n in plan.conflicts},
    )


def pull(
    dst: Store,
    src: Store,
    refs: Iterable[str] | str = "",
    *,
    force: bool = False,
    workers: int | None = None,
) -> TransferReport:
    """Copy ``refs`` of ``src`` into ``dst``: :func:`push` the other way."""
    return push(src, dst, refs, force=force, workers=workers)


def default_workers(*stores: Store) -> int:
    """Threads for copies: only worth it when a store waits on a network (1 or 8)."""
    from . import backends

    local = tuple(c for n in ("LocalBackend", "MemoryBackend") if (c := getattr(backends, n, None)))
    return 1 if all(isinstance(s.backend, local) for s in stores) else 8
