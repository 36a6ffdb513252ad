"""gc: remove objects no ref reaches, and leftover temp files, once they are old enough.

Mark: every object reachable from any ref (``Store.walk``). Sweep: every other object whose
mtime is more than ``grace`` seconds in the past, and every temp file as old. Anything younger
is left alone, so a writer in another process that has stored objects but not yet created
the ref naming them (or is still writing a temp file) is safe as long as it finishes within
the grace period. A Store also remembers, for :data:`daskperiment_store.store.FRESH_SECONDS` (10 minutes),
the objects it has seen (and refreshes an object's mtime when it finds it older than that), so
a grace below twice that (20 minutes) is only safe when no other process has had the store
open for writing in the last 10 minutes. Other Stores of gc's own process on the same store
forget what gc deletes.

If a reachable JSON object is corrupt, what it links to is unknown, so gc raises
:class:`CorruptObject` before deleting anything; repair it (pull or bundle import) or delete
the refs that reach it, then run gc again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .digest import Oid
from .errors import KeyNotFound
from .objfile import oid_from_key
from .progress import Progress, counted
from .reports import GcReport

if TYPE_CHECKING:
    from .store import Store


def gc(
    store: Store, grace: float = 3600.0, dry_run: bool = False, progress: Progress | None = None
) -> GcReport:
    """Collect garbage in ``store``; see the module docstring. Returns what was (or, with
    ``dry_run``, would be) removed and the bytes that frees.

    Streaming: memory holds the set of reachable oids and the list of removed ones (both
    reported anyway), never the listing of every object. ``progress(phase, done, total)``
    is told how far each pass got (store.progress)."""
    if grace < 0:
        raise ValueError(f"grace must be >= 0 seconds, not {grace!r}")
    if not dry_run:
        store._check_writable("collect garbage")
    # The cutoff is taken before marking: an object written while we mark is younger than it.
    cutoff = time.time() - grace
    roots = store.refs.list("").values()
    # A ref to a missing object is fsck's business; it must not stop the collection.
    walk = store.walk(roots, on_missing=lambda parent, oid: None)
    reachable: set[str] = set(counted(walk, "mark", progress, every=10_000))
    report = GcReport(dry_run=dry_run)
    _sweep_objects(store, reachable, cutoff, report, progress)
    _sweep_temp(store, cutoff, report)
    return report


def _sweep_objects(
    store: Store, reachable: set[str], cutoff: float, report: GcReport, progress: Progress | None
) -> None:
    doomed: list[tuple[Oid, str]] = []
    for key in counted(store.backend.list("objects/"), "sweep", progress):
        oid = oid_from_key(key)
        if oid is None:
            continue  # not an object file: fsck reports it, gc never deletes it
        if oid in reachable:
            report.objects_kept += 1
            continue
        try:
            info = store.backend.stat(key)
        except KeyNotFound:  # removed by another gc meanwhile
            continue
        if info.mtime > cutoff:
            report.objects_kept += 1
            continue
        doomed.append((oid, key))
        report.objects_removed.append(Oid(oid))
        report.bytes_freed += info.size
    # Deleted after the listing: a backend's listing need not survive deletes under it.
    if not report.dry_run:
        for oid, key in doomed:
            store._forget(oid)
            store.backend.delete(key, missing_ok=True)


def _sweep_temp(store: Store, cutoff: float, report: GcReport) -> None:
    for info in list(store.backend.list_temp()):
        if info.mtime > cutoff:
            continue
        if not report.dry_run:
            store.backend.delete_temp(info.key)
        report.temp_removed.append(info.key)
        report.bytes_freed += info.size
