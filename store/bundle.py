"""Bundles: one file holding chosen refs and every object they reach.

Layout (integers little-endian; the format is specified in docs/store-format.md, "Bundles")::

    magic b"DPSB" | version u8 = 1 | header_size u64 | header (canonical JSON, UTF-8)
    | object records (each an object file exactly as stored, in index order, no gaps)
    | trailer: xxh3-128 digest (16 raw bytes) of every byte before it

The header is ``{"format": "daskperiment-bundle", "version": 1, "hash": "xxh3-128",
"refs": {name: oid}, "objects": [[oid, offset, length], ...]}`` with offsets counted from the
first byte after the header.

Import treats the file as hostile: it is read front to back with memory bounded by the largest
object, every object is verified against its digest before it is written, refs are validated
and checked for conflicts, and refs become visible only after every object and the trailer
have verified. Nothing is unpickled or otherwise decoded beyond decompression.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, BinaryIO

import xxhash

from . import codec
from .digest import ALGORITHM, Oid, is_oid
from .errors import BundleError, CorruptObject, InvalidRefName, ObjectTooLarge, RefConflicts
from .objfile import Verified, object_key, verify, verify_stream
from .refs import validate_ref_name
from .reports import TransferReport
from .sync import apply_refs, bounded_map, default_workers, plan_refs, select_refs

if TYPE_CHECKING:
    from .store import Store

MAGIC = b"DPSB"
VERSION = 1
FORMAT = "daskperiment-bundle"
#: magic, version, header size.
_PREFIX = struct.Struct("<4sBQ")
TRAILER_SIZE = 16
#: A header this large would describe ~1 million objects; larger ones are refused unread.
MAX_HEADER_SIZE = 64 * 1024 * 1024
#: Reads are done in slices of at most this size, so a hostile length never makes us
#: allocate more than the file actually holds.
_READ_CHUNK = 16 * 1024 * 1024
#: JSON objects that link to others (records, trees) are parsed whole on import to find
#: their links; larger ones are refused, so parsing stays bounded. Real ones are far smaller.
MAX_LINKED_JSON = 64 * 1024 * 1024


@dataclass
class BundleReport:
    """What :func:`export_bundle` wrote."""

    path: str | None
    refs: dict[str, Oid] = field(default_factory=dict)
    objects: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class ObjectEntry:
    """One object record: its digest, offset after the header, and stored length."""

    oid: Oid
    offset: int
    length: int


@dataclass(frozen=True)
class BundleHeader:
    """A parsed and validated bundle header."""

    version: int
    refs: dict[str, Oid]
    objects: list[ObjectEntry]
    header_size: int

    @property
    def data_start(self) -> int:
        """File offset of the first object record."""
        return _PREFIX.size + self.header_size

    @property
    def total_size(self) -> int:
        """Exact size of a well-formed bundle with this header."""
        return self.data_start + sum(e.length for e in self.objects) + TRAILER_SIZE


# -- export ---------------------------------------------------------------------------------


def export_bundle(
    store: Store, dest: str | os.PathLike[str] | BinaryIO, refs: Iterable[str] | str = ""
) -> BundleReport:
    """Write ``refs`` of ``store`` and every object they reach into one bundle file.

    ``refs``: a ref-name prefix ("" = every ref) or exact names. ``dest``: a path (written to
    a temp file beside it and renamed, so a partial bundle never appears under its name) or a
    writable binary file object. Objects are copied as stored (no re-encoding), each verified
    on the way. Raises :class:`BundleError` if no ref is selected.
    """
    selected = select_refs(store, refs)
    if not selected:
        raise BundleError(f"nothing to export: no ref matches {refs!r} in {store.backend.url}")
    oids = sorted(set(store.walk(selected.values())))
    entries, offset = [], 0
    for oid in oids:
        size = store.info(oid).stored_size
        entries.append([oid, offset, size])
        offset += size
    header = _canonical(
        {
            "format": FORMAT,
            "version": VERSION,
            "hash": ALGORITHM,
            "refs": selected,
            "objects": entries,
        }
    )
    if len(header) > MAX_HEADER_SIZE:
        raise BundleError(
            f"{len(oids)} objects need a {len(header)}-byte header, over the "
            f"{MAX_HEADER_SIZE}-byte limit; export fewer refs per bundle"
        )
    path: str | None
    if isinstance(dest, (str, os.PathLike)):
        path = os.fspath(dest)
        size = _write_atomically(path, lambda f: _write_body(store, f, header, entries))
    else:
        name = getattr(dest, "name", None)
        path = name if isinstance(name, str) else None
        size = _write_body(store, dest, header, entries)
    return BundleReport(path=path, refs=selected, objects=len(oids), bytes=size)


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _write_body(store: Store, f: BinaryIO, header: bytes, entries: list[list[Any]]) -> int:
    """Write prefix, header, records and trailer to ``f``; return the bytes written."""
    digest = xxhash.xxh3_128()
    written = 0

    def emit(data: bytes | bytearray | memoryview) -> None:
        nonlocal written
        digest.update(data)
        f.write(data)
        written += len(data)

    emit(_PREFIX.pack(MAGIC, VERSION, len(header)))
    emit(header)
    for oid, _, size in entries:
        data = store._read_stored(oid)
        verify_stream(oid, data, f"{store.backend.url}/{object_key(oid)}")
        if len(data) != size:  # objects are immutable; a change means someone rewrote it
            raise BundleError(f"object {oid} changed size during export ({size} -> {len(data)})")
        emit(data)
    trailer = digest.digest()
    f.write(trailer)
    return written + len(trailer)


def _write_atomically(path: str, write: Any) -> int:
    """Run ``write(file)`` on a temp file beside ``path``, fsync it, then rename it."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bundle-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            size = write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return size


# -- reading --------------------------------------------------------------------------------


class _Reader:
    """Reads a bundle front to back, hashing every byte, with clear errors on short reads."""

    def __init__(self, f: BinaryIO, name: str) -> None:
        self.f = f
        self.name = name
        self.pos = 0
        self.digest = xxhash.xxh3_128()
        #: Bytes from the current position to the end of file, when the file can tell.
        self.remaining = _remaining(f)

    def read(self, n: int, what: str, hashed: bool = True) -> bytearray:
        """Exactly ``n`` bytes, or :class:`BundleError` saying the file is truncated."""
        readinto = getattr(self.f, "readinto", None)
        if readinto is not None and self.remaining is not None and n <= self.remaining - self.pos:
            # Size already checked against the file: read straight into one buffer.
            buf = bytearray(n)
            got = 0
            with memoryview(buf) as view:
                while got < n and (k := readinto(view[got:])):
                    got += k
            if got < n:
                self._truncated(n, got, what)
        else:
            # Unknown or too short a file: grow by slices, so a hostile length costs no more
            # memory than the file really holds before the short read is reported.
            buf = bytearray()
            while len(buf) < n:
                chunk = self.f.read(min(n - len(buf), _READ_CHUNK))
                if not chunk:
                    self._truncated(n, len(buf), what)
                buf += chunk
        if hashed:
            self.digest.update(buf)
        self.pos += n
        return buf

    def _truncated(self, n: int, got: int, what: str) -> None:
        raise BundleError(
            f"{self.name} is truncated: {what} needs {n} bytes at offset {self.pos}, "
            f"but the file ends {got} bytes later; fetch the bundle again"
        )

    def at_eof(self) -> bool:
        return not self.f.read(1)


def _open(source: str | os.PathLike[str] | BinaryIO) -> tuple[BinaryIO, str, bool]:
    """(file, display name, whether we opened it and must close it)."""
    if isinstance(source, (str, os.PathLike)):
        try:
            return open(source, "rb"), os.fspath(source), True  # noqa: SIM115
        except IsADirectoryError:
            raise BundleError(f"{os.fspath(source)} is a directory, not a bundle file") from None
    return source, str(getattr(source, "name", "<bundle stream>")), False


def _remaining(f: BinaryIO) -> int | None:
    """Bytes between the current position and the end of ``f``, or None if unknowable."""
    try:
        if f.seekable():
            here = f.tell()
            end = f.seek(0, os.SEEK_END)
            f.seek(here)
            return end - here
    except (OSError, AttributeError, ValueError):
        pass
    return None


def _read_header(reader: _Reader) -> BundleHeader:
    prefix = reader.read(_PREFIX.size, "the bundle prefix (magic, version, header size)")
    magic, version, header_size = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise BundleError(
            f"{reader.name} is not a daskperiment bundle (starts with {bytes(magic)!r}, "
            f"expected {MAGIC!r})"
        )
    if version != VERSION:
        raise BundleError(
            f"{reader.name}: bundle format version {version} is not supported (this version "
            f"reads version {VERSION}); upgrade daskperiment to import it"
        )
    if header_size > MAX_HEADER_SIZE:
        raise BundleError(
            f"{reader.name} declares a {header_size}-byte header, over the "
            f"{MAX_HEADER_SIZE}-byte limit; refusing to read it"
        )
    raw = reader.read(header_size, "the bundle header")
    return _parse_header(raw, reader.name, header_size)


def _parse_header(raw: bytes | bytearray, name: str, header_size: int) -> BundleHeader:
    try:
        doc = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{name} has a malformed header: {exc}") from None
    if not isinstance(doc, dict):
        raise BundleError(f"{name} has a malformed header: not a JSON object")
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise BundleError(
            f"{name} header names format {doc.get('format')!r} version {doc.get('version')!r}, "
            f"expected {FORMAT!r} version {VERSION}"
        )
    if doc.get("hash") != ALGORITHM:
        raise BundleError(f"{name} uses hash {doc.get('hash')!r}; only {ALGORITHM} is supported")
    objects = _parse_objects(doc.get("objects"), name)
    refs = _parse_refs(doc.get("refs"), name, {e.oid for e in objects})
    return BundleHeader(VERSION, refs, objects, header_size)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constants(token: str) -> Any:
    raise ValueError(f"{token} is not allowed")


def _parse_objects(value: Any, name: str) -> list[ObjectEntry]:
    if not isinstance(value, list):
        raise BundleError(f"{name} header: 'objects' must be a list")
    entries: list[ObjectEntry] = []
    seen: set[str] = set()
    offset = 0
    for i, item in enumerate(value):
        if not (
            isinstance(item, list)
            and len(item) == 3
            and is_oid(item[0])
            and all(type(x) is int for x in item[1:])
        ):
            raise BundleError(
                f"{name} header: object entry {i} must be [oid (32 hex), offset, length], "
                f"got {str(item)[:120]}"
            )
        oid, off, length = item
        if oid in seen:
            raise BundleError(f"{name} header lists object {oid} twice")
        if off != offset or length <= 0:
            raise BundleError(
                f"{name} header: object {oid} at offset {off} with length {length}; records "
                f"must follow each other without gaps (expected offset {offset}, length > 0)"
            )
        seen.add(oid)
        entries.append(ObjectEntry(Oid(oid), off, length))
        offset += length
    return entries


def _parse_refs(value: Any, name: str, contained: set[str]) -> dict[str, Oid]:
    if not isinstance(value, dict):
        raise BundleError(f"{name} header: 'refs' must be an object mapping names to oids")
    refs: dict[str, Oid] = {}
    for ref, oid in value.items():
        try:
            validate_ref_name(ref)
        except InvalidRefName as exc:
            raise BundleError(f"{name} holds an unsafe ref name: {exc}") from None
        if not is_oid(oid):
            raise BundleError(f"{name}: ref {ref!r} points at {str(oid)[:80]!r}, not an oid")
        if oid not in contained:
            raise BundleError(f"{name}: ref {ref!r} points at {oid}, which the bundle lacks")
        refs[ref] = Oid(oid)
    return refs


def read_bundle_header(source: str | os.PathLike[str] | BinaryIO) -> BundleHeader:
    """Parse and validate a bundle's header (refs and object index) without importing it.

    Checks the file's size against the index when it can be known. Objects and the trailer
    are not verified: only :func:`import_bundle` does that.
    """
    f, name, owned = _open(source)
    try:
        reader = _Reader(f, name)
        header = _read_header(reader)
        _check_size(header, reader.remaining, name)
        return header
    finally:
        if owned:
            f.close()


def _check_size(header: BundleHeader, size: int | None, name: str) -> None:
    """Reject lengths pointing past the end of file (or trailing bytes) before reading on."""
    if size is None:
        return
    if size < header.total_size:
        raise BundleError(
            f"{name} is truncated or its index points past the end of the file: the header "
            f"describes {header.total_size} bytes, the file has {size}; fetch the bundle again"
        )
    if size > header.total_size:
        raise BundleError(
            f"{name} has {size - header.total_size} unexpected bytes after the end its header "
            "describes"
        )


# -- import ---------------------------------------------------------------------------------


def import_bundle(
    store: Store,
    source: str | os.PathLike[str] | BinaryIO,
    ref_map: Mapping[str, str] | None = None,
    check: Callable[[Mapping[str, Oid]], None] | None = None,
) -> TransferReport:
    """Import a bundle into ``store``: verify everything, write missing objects, then refs.

    ``check`` is called with the (renamed) refs once every object is verified and written and
    before any ref is created: whatever it raises refuses the import with no ref changed (a
    caller's own validation of what the refs name, e.g. that a record is not a pickle).

    ``ref_map`` renames refs by prefix (``{"experiments/old/": "experiments/new/"}``; the
    longest matching prefix wins; other refs keep their names). Refs become visible only after
    every object hashed to its oid and the trailer checksum matched; objects written before a
    failure are unreferenced (``gc`` removes them). A ref that exists with another oid refuses
    the whole import (:class:`daskperiment_store.errors.RefConflicts`) with no ref changed; one that exists
    with the same oid is left as is, so importing twice changes nothing. Malformed, truncated
    or hostile input raises :class:`BundleError`.
    """
    f, name, owned = _open(source)
    try:
        reader = _Reader(f, name)
        header = _read_header(reader)
        _check_size(header, reader.remaining, name)
        refs = _rename(header.refs, ref_map or {}, name)
        plan = plan_refs(store, refs, default_workers(store))
        if plan.conflicts:  # refuse before writing anything; each ref is re-checked on write
            raise RefConflicts(plan.conflicts, store.backend.url)
        report = TransferReport()
        links = _import_objects(store, reader, header, report)
        trailer = reader.read(TRAILER_SIZE, "the trailer checksum", hashed=False)
        if bytes(trailer) != reader.digest.digest():
            raise BundleError(
                f"{name} fails its checksum (trailer {bytes(trailer).hex()}, content "
                f"{reader.digest.hexdigest()}); no ref was imported"
            )
        if not reader.at_eof():
            raise BundleError(f"{name} has unexpected bytes after its trailer")
    finally:
        if owned:
            f.close()
    _check_closure(store, links, {e.oid for e in header.objects}, name)
    if check is not None:
        check(refs)
    report.refs_updated, report.refs_unchanged = apply_refs(
        store, refs, workers=default_workers(store), plan=plan
    )
    return report


def _import_objects(
    store: Store, reader: _Reader, header: BundleHeader, report: TransferReport
) -> dict[Oid, list[Oid]]:
    """Verify and write each record; return the links of the JSON objects read.

    The file is read in this thread; verifying and writing run in threads for a remote store.
    """

    def records() -> Iterator[tuple[ObjectEntry, bytearray]]:
        for entry in header.objects:
            yield entry, reader.read(entry.length, f"object {entry.oid}")

    links: dict[Oid, list[Oid]] = {}
    store_one = partial(_store_record, store, reader.name, header.data_start)
    for oid, found, written in bounded_map(store_one, records(), default_workers(store)):
        if found:
            links[oid] = found
        if written:
            report.objects_copied += 1
            report.bytes_copied += written
    return links


def _store_record(
    store: Store, name: str, data_start: int, record: tuple[ObjectEntry, bytearray]
) -> tuple[Oid, list[Oid], int]:
    """Verify one record and write it unless present: (oid, its links, bytes written)."""
    entry, data = record
    where = f"{name} (record at offset {data_start + entry.offset})"
    try:
        # Streamed: a small record that decompresses to gigabytes (a zstd bomb) is hashed
        # piece by piece, never held whole; only a JSON body that may link is read whole.
        checked = verify_stream(entry.oid, data, where, store.max_object_size)
    except CorruptObject as exc:
        raise BundleError(
            f"{exc.path}: object {entry.oid} does not verify: "
            f"{exc.reason}{f' (hashes to {exc.actual})' if exc.actual else ''}"
            "; no ref was imported"
        ) from None
    except ObjectTooLarge as exc:
        raise BundleError(f"{where}: {exc}; no ref was imported") from None
    found = _links_of(entry.oid, data, where, checked) if checked.may_link else []
    # put_stored, not has() first: it also freshens an old object found present, so a
    # concurrent gc cannot collect it before our refs make it reachable.
    written = store.put_stored(entry.oid, data, verify=False)
    return entry.oid, found, len(data) if written else 0


def _links_of(oid: Oid, data: bytearray, where: str, checked: Verified) -> list[Oid]:
    """The links of a verified JSON record that may hold some (its body is read whole)."""
    if checked.header.body_size > MAX_LINKED_JSON:
        raise BundleError(
            f"{where}: JSON object {oid} declares {checked.header.body_size} bytes; objects "
            f"that link to others must be at most {MAX_LINKED_JSON} bytes to be imported"
        )
    kind, body = verify(oid, data, where)
    try:
        return codec.find_links(kind, body)
    except (ValueError, RecursionError) as exc:  # hashes fine, yet is no valid JSON
        raise BundleError(f"{where}: object {oid} is malformed JSON: {exc}") from None


def _check_closure(
    store: Store, links: Mapping[Oid, list[Oid]], contained: set[Oid], name: str
) -> None:
    """Refuse a bundle whose objects link to objects neither it nor the store holds."""
    for parent, children in links.items():
        for child in children:
            if child not in contained and not store.has(child):
                raise BundleError(
                    f"{name} is incomplete: object {parent} links to {child}, which neither the "
                    "bundle nor the store holds; no ref was imported"
                )


def _rename(refs: Mapping[str, Oid], ref_map: Mapping[str, str], name: str) -> dict[str, Oid]:
    """Apply a prefix map to ref names, validating the results."""
    prefixes = sorted(ref_map, key=len, reverse=True)
    out: dict[str, Oid] = {}
    for ref, oid in refs.items():
        old = next((p for p in prefixes if ref.startswith(p)), None)
        new = ref if old is None else ref_map[old] + ref[len(old) :]
        try:
            validate_ref_name(new)
        except InvalidRefName as exc:
            raise BundleError(f"ref {ref!r} of {name} renamed by the prefix map: {exc}") from None
        if new in out:
            raise BundleError(f"the prefix map sends two refs of {name} to {new!r}")
        out[new] = oid
    return out
