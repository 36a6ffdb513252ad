"""fsck: verify every object, ref and link of a store, and list leftover temp files.

Every object is read whole and rehashed (as ``git fsck --full`` does), so a full check reads
the whole store once. Nothing is changed: repairs are up to the user (restore a damaged object
from another copy with pull or a bundle import, delete a bad ref, or let gc drop what is no
longer reachable).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import codec
from .codec import LINK_KINDS
from .digest import Oid, is_oid
from .errors import CorruptObject, InvalidRefName, KeyNotFound, ObjectTooLarge
from .objfile import oid_from_key, verify, verify_stream
from .refs import validate_ref_name
from .reports import FsckReport

if TYPE_CHECKING:
    from .store import Store

REFS_PREFIX = "refs/"


def fsck(store: Store) -> FsckReport:
    """Check ``store`` and return what was found (see :class:`store.reports.FsckReport`)."""
    report = FsckReport()
    present, links = _check_objects(store, report)
    for parent, children in links:
        for child in children:
            if child not in present and not store.has(child):
                report.missing_links.append((parent, child))
    _check_refs(store, present, report)
    report.temp_files = sorted(info.key for info in store.backend.list_temp())
    return report


def _check_objects(store: Store, report: FsckReport) -> tuple[set[str], list[tuple[Oid, list]]]:
    """Rehash every object; return the oids present and the links of JSON objects."""
    present: set[str] = set()
    links: list[tuple[Oid, list]] = []
    for key in sorted(store.backend.list("objects/")):
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
        report.objects_checked += 1
        where = store.path_of(oid)
        try:
            # Streamed: memory stays bounded; only a JSON body that may link is read whole.
            checked = verify_stream(oid, data, where)
            if checked.header.kind not in LINK_KINDS or not checked.may_link:
                continue
            kind, body = verify(oid, data, where, store.max_object_size)
        except CorruptObject as exc:
            report.corrupt_objects.append((oid, key, exc.reason))
            continue
        except ObjectTooLarge as exc:
            report.corrupt_objects.append((oid, key, f"links cannot be read: {exc}"))
            continue
        if kind in LINK_KINDS:
            try:
                found = codec.find_links(kind, body)
            except Exception as exc:  # hashes right but does not parse: written damaged
                report.corrupt_objects.append((oid, key, f"links cannot be read: {exc}"))
                continue
            if found:
                links.append((oid, list(found)))
    return present, links


def _check_refs(store: Store, present: set[str], report: FsckReport) -> None:
    """Check that every ref has a valid name and holds an oid of an existing object."""
    for key in sorted(store.backend.list(REFS_PREFIX)):
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
