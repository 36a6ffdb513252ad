"""The object store: immutable objects addressed by digest, and refs naming them.

A :class:`Store` joins the codecs (value -> canonical bytes -> digest), compression and the
object file format to a :class:`~daskperiment_store.backends.base.Backend` (bytes under keys). Objects live
under ``objects/<2 hex>/<30 hex>``; every read verifies that the bytes still hash to the
object's name. Refs are handled by :class:`daskperiment_store.refs.RefStore` (``store.refs``).
"""

from __future__ import annotations

import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

from . import codec, codec_container, compress, objfile
from .backends.base import Backend, Buffers, KeyInfo
from .codec import LINK_KINDS, Encoded
from .config import load_config
from .digest import Oid, hash_chunks, validate_oid
from .errors import CorruptObject, KeyNotFound, ObjectNotFound, ReadOnlyStore, UnexpectedKind
from .objfile import object_key, oid_from_key
from .progress import Progress
from .refs import RefStore

if TYPE_CHECKING:
    from .bundle import BundleReport
    from .reports import FsckReport, GcReport, ObjectInfo, TransferReport

__all__ = [
    "FRESH_SECONDS",
    "HEAD_PROBE",
    "LINK_KINDS",
    "Store",
    "object_key",
    "oid_from_key",
    "verify_object",
]

#: Names of the compression ids of the object file header.
COMPRESSION_NAMES = compress.NAMES
#: An object confirmed present (written or found) is trusted for this long without asking the
#: backend again; an object found with an older mtime is freshened. Keep gc grace above it.
FRESH_SECONDS = 600.0
#: At most this many confirmed oids are remembered per Store (oldest forgotten first).
KNOWN_MAX = 100_000
_OPEN_STORES: weakref.WeakSet[Store] = weakref.WeakSet()


def _location(backend: Backend) -> str:
    """Where a backend's store lives, to tell Stores on the same store apart from others."""
    root = getattr(backend, "root", None)  # LocalBackend: its absolute path
    if isinstance(root, str):
        return os.path.realpath(root)
    if backend.url.startswith("memory-backend:"):  # an unnamed MemoryBackend: its own store
        return f"{backend.url}#{id(backend)}"
    return backend.url


#: Bytes read by ``links`` in one request: small objects arrive whole, large ones need only
#: their header to show they are not JSON.
HEAD_PROBE = 64 * 1024


#: Check an object file against its oid and return ``(kind, body)`` (see objfile.verify).
verify_object = objfile.verify


class Store:
    """A content-addressed object store over a :class:`Backend`.

    Objects: ``put(value) -> oid``, ``get(oid)``, ``has``, ``info``, ``iter_oids``,
    ``links``/``walk`` (objects may link to others through :class:`daskperiment_store.Link` inside JSON
    values). Refs: ``store.refs`` (a :class:`daskperiment_store.refs.RefStore`). Maintenance: ``fsck``,
    ``gc``, ``export_bundle``/``import_bundle``, ``push``/``pull``.

    Usually made by :func:`daskperiment_store.open`. A Store may be shared by threads; several processes
    may use the same store at once (writes are atomic, see ``docs/store-format.md``).
    """

    backend: Backend
    config: dict

    def __init__(
        self,
        backend: Backend,
        config: dict | None = None,
        *,
        compression_level: int = 3,
        compression_threads: int = 0,
        max_object_size: int | None = None,
    ) -> None:
        """Use the store on ``backend``; ``config`` is read from it unless given.

        ``max_object_size``: the largest body (uncompressed, in bytes) an object may declare
        to be read or accepted (imports, pulls); None takes the environment variable
        ``DASKPERIMENT_STORE_MAX_OBJECT_SIZE`` or else 4 GiB (store.objfile).
        """
        self.backend = backend
        self.config = config if config is not None else load_config(backend, create=False)
        self.compression_level = compression_level
        self.compression_threads = compression_threads
        self.max_object_size = objfile.max_object_size(max_object_size)
        self.refs: RefStore = RefStore(backend)
        # oid -> time.monotonic() when it was last confirmed present (see FRESH_SECONDS).
        self._known: OrderedDict[str, float] = OrderedDict()
        self._where = _location(backend)  # computed once: gc compares it per deleted object
        _OPEN_STORES.add(self)

    # -- plumbing ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where the store lives (a path or URL)."""
        return self.backend.url

    @property
    def read_only(self) -> bool:
        """Whether every write is refused."""
        return self.backend.read_only

    def path_of(self, oid: str) -> str:
        """Path or URL of the object file of ``oid`` (used in error messages)."""
        return f"{self.url.rstrip('/')}/{object_key(validate_oid(oid))}"

    def _check_writable(self, what: str) -> None:
        if self.backend.read_only:
            raise ReadOnlyStore(self.url, f"cannot {what}; open it with read_only=False")

    def _is_fresh(self, oid: str) -> bool:
        seen = self._known.get(oid)
        return seen is not None and time.monotonic() - seen < FRESH_SECONDS

    def _remember(self, oid: str) -> None:
        # Oldest first, evicted in O(1): popping a plain dict's first key (next(iter(d)))
        # walks past every slot freed at its front, ~20 us once it held KNOWN_MAX oids.
        known = self._known
        known[oid] = time.monotonic()
        try:
            known.move_to_end(oid)
            if len(known) > KNOWN_MAX:
                known.popitem(last=False)
        except KeyError:  # another thread removed it, or emptied the dict, meanwhile
            pass

    def _forget(self, oid: str) -> None:
        """Stop trusting that ``oid`` is stored, in this Store and in every other Store of
        this process on the same location (gc through one Store must not leave another
        skipping the write of an object it deleted, and then naming it in a new ref)."""
        for other in list(_OPEN_STORES):
            if other is self or other._where == self._where:
                other._known.pop(oid, None)

    def close(self) -> None:
        """Release the backend's resources."""
        self.backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- writing -----------------------------------------------------------------------

    def put(self, value: Any, *, new: bool = False) -> Oid:
        """Store ``value`` (if not stored yet) and return its oid.

        The codec is chosen by type (see :mod:`daskperiment_store.codec`). Putting a value that is already
        stored costs hashing plus one existence check (none at all if this Store wrote or
        found it in the last :data:`FRESH_SECONDS`). ``new``: the value is almost surely not
        stored (it holds its own time of writing, as a trial's record does), so it is written
        without that check first; the write itself says if it existed, and an existing object
        is then confirmed as the check would have. Raises :class:`EncodeError` for a value
        no codec can encode and :class:`ReadOnlyStore` on a read-only store.
        """
        self._check_writable("put objects")
        return self._put_encoded(codec.encode(value), new)

    def put_encoded(self, enc: Encoded) -> Oid:
        """Store a value already encoded (if not stored yet) and return its oid.

        ``enc`` must be a canonical encoding: what :func:`daskperiment_store.codec.encode`
        gives, or a ``json`` body assembled from :func:`daskperiment_store.codec.canonical_json`
        texts that equals the encoding of the value it stands for. Any other body is stored
        under the digest of its bytes, and a later ``put`` of the same value makes a second
        object. Raises :class:`ReadOnlyStore` on a read-only store, ``ValueError`` for a kind
        this version does not know.
        """
        self._check_writable("put objects")
        if enc.kind not in codec.KINDS:
            raise ValueError(f"unknown object kind {enc.kind!r}; known: {', '.join(codec.KINDS)}")
        return self._put_encoded(enc)

    def _put_encoded(self, enc: Encoded, new: bool = False) -> Oid:
        oid = hash_chunks(enc.kind, enc.chunks)
        # A container's elements first: a reader never finds one whose elements are missing.
        for child_oid, child in enc.children:
            self._store_encoded(child_oid, child.kind, child.chunks, child.size)
        self._store_encoded(oid, enc.kind, enc.chunks, enc.size, new)
        return oid

    def put_bytes(self, data: bytes | bytearray | memoryview) -> Oid:
        """Store raw bytes as a ``bytes`` object; the same as ``put(bytes(data))``."""
        return self.put(data if isinstance(data, bytes) else bytes(data))

    def _store_encoded(
        self, oid: Oid, kind: str, chunks: list, size: int, new: bool = False
    ) -> bool:
        """Write an encoded object unless present; return whether this call wrote it
        (``new``: without asking the backend first, see :meth:`put`)."""
        if self._is_fresh(oid) if new else self.has_fresh(oid):
            return False
        data = objfile.build(kind, chunks, size, self.compression_level, self.compression_threads)
        # A racing writer of the same oid writes the same bytes, so losing is fine.
        key = object_key(oid)
        if new:
            written = self.backend.put_new(key, data)
            # It existed: has_fresh renews its mtime for gc's grace period, as the check would
            # have; if a gc removed it in between, it is written as usual.
            if not written and not self.has_fresh(oid):
                written = self.backend.put_if_absent(key, data)
        else:
            written = self.backend.put_if_absent(key, data)
        self._remember(oid)
        return written

    def repair(self, oid: str, value: Any) -> bool:
        """Rewrite the object file of ``oid`` from ``value``, if ``value`` encodes to ``oid``.

        ``put`` skips objects that exist, so a damaged object file is only replaced this way
        (for instance when a step recomputes an output whose stored copy is corrupt). The
        write is an atomic replace: readers see the old file or the new one. Returns False,
        writing nothing, when ``value`` does not have that oid.
        """
        oid = validate_oid(oid)
        self._check_writable("repair objects")
        enc = codec.encode(value)
        if hash_chunks(enc.kind, enc.chunks) != oid:
            return False
        data = objfile.build(
            enc.kind, enc.chunks, enc.size, self.compression_level, self.compression_threads
        )
        self.backend.put(object_key(oid), data)
        self._remember(oid)
        return True

    def has_fresh(self, oid: str) -> bool:
        """Whether ``oid`` is stored, making sure gc's grace period covers it if it is.

        The existence check of ``put``: an oid this Store wrote or confirmed in the last
        :data:`FRESH_SECONDS` is taken as present without asking the backend; one found with
        an older mtime is touched, so a concurrent gc cannot collect an object a writer is
        about to reference (push uses this for the objects it skips).
        """
        oid = validate_oid(oid)
        if self._is_fresh(oid):
            return True
        key = object_key(oid)
        try:
            st = self.backend.stat(key)
        except KeyNotFound:
            return False
        if not self.backend.read_only:
            try:
                self._freshen(key, st)
            except KeyNotFound:  # a gc removed it between the stat and the touch: write it
                return False
        self._remember(oid)
        return True

    def _freshen(self, key: str, st: KeyInfo) -> None:
        """Renew the mtime of an old object we are about to rely on.

        gc spares objects younger than its grace period. Without this, an unreachable object
        older than that, deduplicated against by a writer just before it creates a ref, could
        be collected in between; touching it puts it back inside the grace period (git does
        the same). Backends without ``touch`` keep that narrow window (docs/store-format.md).
        """
        touch = getattr(self.backend, "touch", None)
        if touch is not None and time.time() - st.mtime > FRESH_SECONDS:
            touch(key)

    def put_stored(self, oid: str, data: Buffers, *, verify: bool = True) -> bool:
        """Store an object file exactly as read from another store; return whether written.

        ``data`` is verified against ``oid`` first (skip only if the caller just verified
        it), so a damaged copy never becomes visible. Used by push/pull and bundles.
        """
        oid = validate_oid(oid)
        self._check_writable("put objects")
        if verify:
            where = f"object {oid} being written to {self.url}"
            objfile.verify_stream(oid, data, where, self.max_object_size)
        if self.has_fresh(oid):
            return False
        written = self.backend.put_if_absent(object_key(oid), data)
        self._remember(oid)
        return written

    # -- reading -----------------------------------------------------------------------

    def get(self, oid: str, *, kinds: Collection[str] | None = None) -> Any:
        """The value stored under ``oid``, verified against its digest.

        ``kinds``: the codec kinds the caller accepts (e.g. ``{"json"}``); the header's kind
        is checked before the payload is decompressed or decoded, and any other kind raises
        :class:`UnexpectedKind` (a malformed or hostile object). ``None`` accepts every kind,
        ``pickle`` included: only ``pickle`` objects can run code when decoded, so readers of
        stores they do not trust always pass ``kinds``.

        Raises :class:`InvalidOid` for a malformed oid, :class:`ObjectNotFound` (a
        ``KeyError``) when absent, :class:`CorruptObject` when the stored bytes are damaged.
        """
        oid = validate_oid(oid)
        data = self.get_stored(oid)
        if kinds is not None:
            head = memoryview(data)[: objfile.MAX_HEADER_SIZE]
            kind = self._parse_header(oid, head).kind
            if kind not in kinds:
                raise UnexpectedKind(oid, kind, kinds, self.url)
        kind, body = verify_object(oid, data, self.path_of(oid))
        if kind == codec_container.KIND:  # its elements are never pickles
            return codec_container.decode(
                body, lambda e: self.get(e, kinds=codec_container.ELEMENT_KINDS)
            )
        return codec.decode(kind, body)

    def get_raw(self, oid: str) -> tuple[str, memoryview]:
        """``(kind, canonical body)`` of ``oid``, verified, without decoding."""
        oid = validate_oid(oid)
        data = self.get_stored(oid)
        return verify_object(oid, data, self.path_of(oid))

    def get_stored(self, oid: str) -> bytes | bytearray | memoryview:
        """The object file of ``oid`` exactly as stored (header + payload), NOT verified.

        Raises :class:`ObjectTooLarge` if its header declares a body over
        :attr:`max_object_size` (before anything is decompressed).
        """
        data = self._read_stored(oid)
        objfile.check_limit(oid, data, self.path_of(oid), self.max_object_size)
        return data

    def _read_stored(self, oid: str) -> bytes | bytearray | memoryview:
        """The object file of ``oid`` as stored, whatever its size (for verbatim copies)."""
        oid = validate_oid(oid)
        try:
            return self.backend.get(object_key(oid))
        except KeyNotFound:
            raise ObjectNotFound(oid, self.url) from None

    def has(self, oid: str) -> bool:
        """Whether an object named ``oid`` is stored (raises InvalidOid if malformed)."""
        return self.backend.exists(object_key(validate_oid(oid)))

    __contains__ = has

    def info(self, oid: str) -> ObjectInfo:
        """Kind, sizes and compression of ``oid``, read from its header only (not verified)."""
        from .reports import ObjectInfo  # its data classes load on first use, not on opening

        oid = validate_oid(oid)
        key = object_key(oid)
        try:
            stored_size = self.backend.stat(key).size
            head = self.backend.head(key, objfile.MAX_HEADER_SIZE)
        except KeyNotFound:
            raise ObjectNotFound(oid, self.url) from None
        header = self._parse_header(oid, head)
        return ObjectInfo(
            oid=oid,
            kind=header.kind,
            size=header.body_size,
            stored_size=stored_size,
            compression=COMPRESSION_NAMES.get(header.compression, str(header.compression)),
        )

    def _parse_header(self, oid: Oid, head: bytes | bytearray | memoryview) -> Any:
        try:
            return objfile.parse_header(memoryview(head))
        except ValueError as exc:  # objfile.ObjectFormatError: a damaged header
            raise CorruptObject(oid, self.path_of(oid), f"bad object header: {exc}") from None

    def iter_oids(self) -> Iterator[Oid]:
        """Every stored oid, in no particular order (files that are not objects are skipped)."""
        for key in self.backend.list("objects/"):
            oid = oid_from_key(key)
            if oid is not None:
                yield oid

    # -- links -------------------------------------------------------------------------

    def links(self, oid: str) -> list[Oid]:
        """The oids ``oid`` links to directly (``[]`` for objects that cannot hold links).

        JSON objects are read whole and verified; for other kinds only the header is read.
        """
        oid = validate_oid(oid)
        key = object_key(oid)
        try:
            head = self.backend.head(key, HEAD_PROBE)
        except KeyNotFound:
            raise ObjectNotFound(oid, self.url) from None
        header = self._parse_header(oid, head)
        if header.kind not in LINK_KINDS:
            return []
        # A head shorter than asked for is the whole file: no second read needed.
        data = head if len(head) < HEAD_PROBE else self.get_stored(oid)
        kind, body = verify_object(oid, data, self.path_of(oid))
        return [validate_oid(link) for link in codec.find_links(kind, body)]

    def walk(
        self,
        oids: Iterable[str],
        *,
        on_missing: Callable[[Oid | None, Oid], None] | None = None,
        seen: set[str] | None = None,
    ) -> Iterator[Oid]:
        """Yield every object reachable from ``oids`` (themselves included), each once.

        Iterative (no recursion limit on deep chains). A missing object raises
        :class:`ObjectNotFound` naming the object that links to it, unless ``on_missing``
        is given: then it is called with ``(linking oid or None for a root, missing oid)``
        and the walk goes on. A corrupt JSON object raises :class:`CorruptObject`.
        ``seen``: oids not to visit (walked before); the walk adds those it visits.
        """
        seen = set() if seen is None else seen
        for root in oids:
            stack: list[tuple[Oid | None, Oid]] = [(None, validate_oid(root))]
            while stack:
                parent, oid = stack.pop()
                if oid in seen:
                    continue
                seen.add(oid)
                try:
                    children = self.links(oid)
                except ObjectNotFound:
                    if on_missing is None:
                        source = f"linked from {parent}" if parent else "a starting point"
                        raise ObjectNotFound(oid, f"{self.url} ({source})") from None
                    on_missing(parent, oid)
                    continue
                yield oid
                stack.extend((oid, c) for c in reversed(children) if c not in seen)

    # -- maintenance -------------------------------------------------------------------

    def fsck(self, progress: Progress | None = None) -> FsckReport:
        """Verify every object, ref and link; list leftover temp files (see store.fsck).
        ``progress(phase, done, total)`` follows the walk (store.progress)."""
        from . import fsck  # imported by the commands that need it: opening stays light

        return fsck.fsck(self, progress)

    def gc(
        self, grace: float = 3600.0, dry_run: bool = False, progress: Progress | None = None
    ) -> GcReport:
        """Remove objects unreachable from any ref and leftover temp files older than
        ``grace`` seconds; with ``dry_run`` only report them (see store.gc)."""
        from . import gc

        return gc.gc(self, grace=grace, dry_run=dry_run, progress=progress)

    def export_bundle(
        self, path: str | os.PathLike[str] | BinaryIO, refs: Iterable[str] | str = ""
    ) -> BundleReport:
        """Write ``refs`` and every object they reach into one bundle file (store.bundle).

        ``refs``: a ref-name prefix ("" = every ref) or exact ref names.
        """
        from . import bundle

        return bundle.export_bundle(self, path, refs)

    def import_bundle(
        self,
        path: str | os.PathLike[str] | BinaryIO,
        ref_map: Mapping[str, str] | None = None,
        *,
        check: Callable[[Mapping[str, Oid]], None] | None = None,
    ) -> TransferReport:
        """Import a bundle: verify every object, then create its refs (store.bundle).

        ``ref_map`` renames refs by prefix (``{"experiments/old/": "experiments/new/"}``);
        ``check(refs)`` runs before any ref is created and refuses the import by raising.
        """
        from . import bundle

        return bundle.import_bundle(self, path, ref_map, check)

    def push(
        self, other: Store, refs: Iterable[str] | str = "", *, force: bool = False
    ) -> TransferReport:
        """Copy ``refs`` and the objects ``other`` lacks into ``other`` (store.sync)."""
        from . import sync

        return sync.push(self, other, refs, force=force)

    def pull(
        self, other: Store, refs: Iterable[str] | str = "", *, force: bool = False
    ) -> TransferReport:
        """Copy ``refs`` of ``other`` and the objects this store lacks (store.sync)."""
        from . import sync

        return sync.pull(self, other, refs, force=force)
