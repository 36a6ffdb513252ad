"""push/pull: copy the objects another store lacks, then its refs, never overwriting one.

Objects travel as their stored bytes (header + compressed payload), so nothing is decoded or
re-encoded; every object read is verified against its digest before it is written anywhere.
Refs are written only after every object they reach is in place, so a reader of the
destination never sees a ref to a missing object. A ref that already exists with another oid
is a conflict: all refs are checked first and, on any conflict, none is changed.

The ref primitives (selecting, planning and applying ref updates) serve :mod:`store.bundle`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from .digest import Oid, validate_oid
from .errors import RefConflict, RefConflicts, RefExists
from .store import object_key, verify_object

if TYPE_CHECKING:
    from .store import Store, TransferReport

#: Objects whose existence is checked per round trip to the destination.
HAS_BATCH = 256


# -- refs -----------------------------------------------------------------------------------


def select_refs(store: Store, refs: Iterable[str] | str = "") -> dict[str, Oid]:
    """Resolve a ref selection: a str is a name prefix ("" = all), else exact names.

    Raises :class:`store.errors.RefNotFound` for an exact name that does not exist.
    """
    if isinstance(refs, str):
        return dict(sorted(store.refs.list(refs).items()))
    return {name: store.refs.get(name) for name in sorted(set(refs))}


def plan_refs(
    store: Store, incoming: Mapping[str, Oid]
) -> tuple[dict[str, Oid], list[str], dict[str, tuple[Oid, Oid]]]:
    """Split ``incoming`` refs into (to create, already equal, conflicting) for ``store``.

    Conflicts map name -> (incoming oid, existing oid).
    """
    existing = _current_refs(store, incoming)
    create: dict[str, Oid] = {}
    unchanged: list[str] = []
    conflicts: dict[str, tuple[Oid, Oid]] = {}
    for name, oid in incoming.items():
        current = existing.get(name)
        if current is None:
            create[name] = oid
        elif current == oid:
            unchanged.append(name)
        else:
            conflicts[name] = (oid, current)
    return create, unchanged, conflicts


def _current_refs(store: Store, names: Iterable[str]) -> dict[str, Oid]:
    """Current oids of those of ``names`` that exist, listing once per common prefix."""
    names = list(names)
    if len(names) <= 8:
        return {n: store.refs.get(n) for n in names if store.refs.has(n)}
    # One listing under the names' longest common directory beats one read per ref.
    common = _common_dir(names)
    listed = store.refs.list(common)
    return {n: listed[n] for n in names if n in listed}


def _common_dir(names: list[str]) -> str:
    """Longest prefix ending in '/' shared by all ``names`` ("" if none)."""
    lo, hi = min(names), max(names)
    n = 0
    while n < min(len(lo), len(hi)) and lo[n] == hi[n]:
        n += 1
    return lo[: lo.rfind("/", 0, n) + 1] if "/" in lo[:n] else ""


def apply_refs(
    store: Store, incoming: Mapping[str, Oid], *, force: bool = False
) -> tuple[list[str], list[str]]:
    """Create ``incoming`` refs in ``store``; return (updated, unchanged) names.

    All refs are checked before any is written: if one exists with another oid, raise
    :class:`RefConflicts` and change nothing (unless ``force``, which moves such refs by
    compare-and-swap from the value seen). Each write is atomic, so a writer racing us between
    the check and the writes is never overwritten: its ref raises :class:`RefConflict`, and
    the refs created before it stay (they are complete: their objects were written first).
    """
    create, unchanged, conflicts = plan_refs(store, incoming)
    if conflicts and not force:
        raise RefConflicts(conflicts, store.backend.url)
    updated: list[str] = []
    for name, oid in create.items():
        try:
            store.refs.create(name, oid)
        except RefExists as exc:
            if exc.current != oid:  # another writer created it since we checked
                raise RefConflict(name, None, exc.current) from None
            unchanged.append(name)
        else:
            updated.append(name)
    for name, (oid, old) in conflicts.items():  # only with force; swap refuses a moved ref
        store.refs.swap(name, old, oid)
        updated.append(name)
    return sorted(updated), sorted(unchanged)


# -- objects --------------------------------------------------------------------------------


def missing_oids(
    store: Store, oids: Iterable[Oid], pool: ThreadPoolExecutor | None = None
) -> Iterator[Oid]:
    """Yield those of ``oids`` that ``store`` lacks, checking in batches (threaded if ``pool``)."""
    it = iter(oids)
    while batch := list(itertools.islice(it, HAS_BATCH)):
        present = pool.map(store.has, batch) if pool else map(store.has, batch)
        yield from (oid for oid, has in zip(batch, present, strict=True) if not has)


def copy_objects(src: Store, dst: Store, oids: Iterable[Oid], workers: int = 1) -> tuple[int, int]:
    """Copy ``oids`` (which ``dst`` lacks) verbatim, verified; return (objects, bytes) written.

    With ``workers > 1`` copies run in a thread pool (worth it for remote stores, where each
    copy waits on the network) with at most ``2 * workers`` objects in memory at once.
    """
    copied = nbytes = 0
    if workers <= 1:
        for oid in oids:
            c, n = _copy_one(src, dst, oid)
            copied, nbytes = copied + c, nbytes + n
        return copied, nbytes
    with ThreadPoolExecutor(workers, thread_name_prefix="store-copy") as pool:
        pending: set[Future[tuple[int, int]]] = set()
        for oid in oids:
            if len(pending) >= 2 * workers:
                copied, nbytes = _drain(pending, copied, nbytes, FIRST_COMPLETED)
            pending.add(pool.submit(_copy_one, src, dst, oid))
        copied, nbytes = _drain(pending, copied, nbytes, None)
    return copied, nbytes


def _drain(
    pending: set[Future[tuple[int, int]]], copied: int, nbytes: int, when: str | None
) -> tuple[int, int]:
    """Collect finished copies (all of them if ``when`` is None), re-raising the first error."""
    done, rest = wait(pending, return_when=when or "ALL_COMPLETED")
    pending.clear()
    pending.update(rest)
    for fut in done:
        c, n = fut.result()
        copied, nbytes = copied + c, nbytes + n
    return copied, nbytes


def _copy_one(src: Store, dst: Store, oid: Oid) -> tuple[int, int]:
    data = src.get_stored(oid)
    # Verified here, naming the source, rather than by put_stored naming the destination.
    verify_object(oid, data, f"{src.backend.url}/{object_key(oid)}")
    if dst.put_stored(oid, data, verify=False):
        return 1, len(data)
    return 0, 0  # another writer stored it between our existence check and now


def push(
    src: Store,
    dst: Store,
    refs: Iterable[str] | str = "",
    *,
    force: bool = False,
    workers: int | None = None,
) -> TransferReport:
    """Copy ``refs`` of ``src`` and every object they reach into ``dst``.

    ``refs``: a name prefix ("" = every ref) or exact ref names. Only objects ``dst`` lacks
    are copied, as their stored bytes, each verified against its digest; then refs are
    created. A ref existing in ``dst`` with another oid is a conflict: :class:`RefConflicts`
    is raised before any object or ref is written, unless ``force`` (replace those refs, as
    ``git push --force``; the objects they pointed at stay until ``gc``). A second push
    copies nothing. ``workers``: copy threads (default 1 between local/memory stores, 8
    otherwise).
    """
    from .store import TransferReport

    selected = select_refs(src, refs)
    _, _, conflicts = plan_refs(dst, selected)
    if conflicts and not force:
        raise RefConflicts(conflicts, dst.backend.url)
    workers = workers or _default_workers(src, dst)
    report = TransferReport()
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        need = missing_oids(dst, src.walk(validate_oid(o) for o in selected.values()), pool)
        report.objects_copied, report.bytes_copied = copy_objects(src, dst, need, workers)
    finally:
        if pool:
            pool.shutdown()
    report.refs_updated, report.refs_unchanged = apply_refs(dst, selected, force=force)
    return report


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


def _default_workers(*stores: Store) -> int:
    """Threads only pay off when a store waits on a network."""
    from . import backends

    local = tuple(c for n in ("LocalBackend", "MemoryBackend") if (c := getattr(backends, n, None)))
    return 1 if all(isinstance(s.backend, local) for s in stores) else 8
