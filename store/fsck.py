"""fsck: verify every object, ref and link of a store, and list leftover temp files.

Every object is read whole and rehashed (as ``git fsck --full`` does), so a full check reads
the whole store once. Nothing is changed: repairs are up to the user (restore a damaged object
from another copy with pull or a bundle import, delete a bad ref, or let gc drop what is no
longer reachable).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import codec
from .codec import LINK_KINDS
from .digest import Oid, is_oid
from .errors import CorruptObject, InvalidRefName, KeyNotFound, ObjectTooLarge
from .objfile import oid_from_key, verify, verify_stream
from .progress import Progress, counted
from .refs import validate_ref_name
from .reports import FsckReport

if TYPE_CHECKING:
    from .store import Store

REFS_PREFIX = "refs/"


def fsck(store: Store, progress: Progress | None = None) -> FsckReport:
    """Check ``store`` and return what was found (see :class:`store.reports.FsckReport`).

    Streaming: objects are checked as they are listed, so memory holds one object at a time
    plus, per object, its oid (the set of those present) and the links still unresolved when
    it was read. ``progress(phase, done, total)`` is told how far it got (store.progress).
    """
    report = FsckReport()
    present, unresolved = _check_objects(store, report, progress)
    for child, parents in unresolved.items():
        if child not in present and not store.has(child):
            report.missing_links.extend((parent, child) for parent in parents)
    _check_refs(store, present, report, progress)
    report.temp_files = sorted(info.key for info in store.backend.list_temp())
    report.corrupt_objects.sort()
    report.missing_links.sort()
    report.bad_refs.sort()
    return report


def _check_objects(
    store: Store, report: FsckReport, progress: Progress | None
) -> tuple[set[str], dict[Oid, list[Oid]]]:
    """Rehash every object; return the oids present and ``{child: [parents]}`` for links to
    objects not seen yet when their parent was read (checked once every object is listed)."""
    present: set[str] = set()
    unresolved: dict[Oid, list[Oid]] = {}
    for key in counted(store.backend.list("objects/"), "objects", progress):
        oid = oid_from_key(key)
        if oid is None:
            report.corrupt_objects.append(
                (Oid(key.removeprefix("objects/").replace("/", "")), key, "not an object file name")
            )
            continue
        try:
            data = store.backend.get(key)
        except KeyNotFound:  # removed by a concurrent gc since it was listed
            continue
        present.add(oid)
        unresolved.pop(oid, None)
        report.objects_checked += 1
        for child in _checked_links(store, oid, key, data, report):
            if child not in present:
                unresolved.setdefault(child, []).append(oid)
    return present, unresolved


def _checked_links(store: Store, oid: Oid, key: str, data: Any, report: FsckReport) -> list[Oid]:
    """Verify one object; the oids it links to ([] when it cannot link or is corrupt)."""
    where = store.path_of(oid)
    try:
        # Streamed: memory stays bounded; only a JSON body that may link is read whole.
        checked = verify_stream(oid, data, where)
        if checked.header.kind not in LINK_KINDS or not checked.may_link:
            return []
        kind, body = verify(oid, data, where, store.max_object_size)
    except CorruptObject as exc:
        report.corrupt_objects.append((oid, key, exc.reason))
        return []
    except ObjectTooLarge as exc:
        report.corrupt_objects.append((oid, key, f"links cannot be read: {exc}"))
        return []
    if kind not in LINK_KINDS:
        return []
    try:
        return list(codec.find_links(kind, body))
    except Exception as exc:  # hashes right but does not parse: written damaged
        report.corrupt_objects.append((oid, key, f"links cannot be read: {exc}"))
        return []


def _check_refs(
    store: Store, present: set[str], report: FsckReport, progress: Progress | None
) -> None:
    """Check that every ref has a valid name and holds an oid of an existing object."""
    for key in counted(store.backend.list(REFS_PREFIX), "refs", progress):
        name = key[len(REFS_PREFIX) :]
        try:
            validate_ref_name(name)
        except InvalidRefName as exc:
            report.bad_refs.append((name, f"invalid name: {exc.reason}"))
            continue
        try:
            content = bytes(store.backend.get(key))
        except KeyNotFound:  # deleted since listed
            continue
        report.refs_checked += 1
        oid = content[:-1].decode("ascii", "replace") if content.endswith(b"\n") else ""
        if not is_oid(oid):
            report.bad_refs.append(
                (name, f"content {content[:48]!r} is not an object id and a newline")
            )
        elif oid not in present and not store.has(oid):
            report.bad_refs.append((name, f"points at missing object {oid}"))
