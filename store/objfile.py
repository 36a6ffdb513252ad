"""Object files: the bytes stored under ``objects/<2 hex>/<30 hex>``.

Layout (integers little-endian)::

    offset  size      field
    0       4         magic b"DPSO"
    4       1         format version, u8 = 1
    5       1         compression id, u8 (0 none, 1 zstd; see store.compress)
    6       1         kind_len, u8 (1..255)
    7       kind_len  kind, ASCII [a-z0-9_-] (json, ndarray, pandas, bytes, pickle)
    7+k     8         body_size, u64: size of the uncompressed canonical body
    15+k    0..63     zero bytes, up to the next multiple of 64
    H       ...       payload: the body itself (compression 0) or one zstd frame (1)

The header length ``H`` is ``15 + kind_len`` rounded up to a multiple of 64 (64 for every kind
in use), so the payload of a file read into a 64-byte aligned buffer is 64-byte aligned, and the
items of a raw (uncompressed) array body -- at 64-byte multiples inside the body -- can be used
in place, without a copy. The object's digest is
``xxh3_128(kind + b"\\0" + body)`` (:func:`daskperiment_store.digest.hash_chunks`); compression never
changes it. Readers must reject a version they do not know.

This module owns the format: :func:`build` makes every object file, :func:`verify` (body
kept) and :func:`verify_stream` (body hashed in pieces, memory bounded) check one against its
oid, both through :func:`header_of`, raising :class:`daskperiment_store.errors.CorruptObject` with the
object's path, or :class:`daskperiment_store.errors.ObjectTooLarge` for a body over the size limit.
:func:`parse_header` alone raises :class:`ObjectFormatError` (a ``ValueError``). Object files
live under the keys of :func:`object_key`.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from typing import Any, NamedTuple

import xxhash
import zstandard

from . import compress
from .digest import Oid, hash_chunks, is_oid
from .errors import CorruptObject, ObjectTooLarge, StoreError

MAGIC = b"DPSO"
VERSION = 1
ALIGN = 64
_FIXED = struct.Struct("<4sBBB")
_SIZE = struct.Struct("<Q")
_KIND = re.compile(rb"[a-z0-9_-]+")
#: The longest possible header: read this many bytes to parse any header.
MAX_HEADER_LEN = -(-(_FIXED.size + 255 + _SIZE.size) // ALIGN) * ALIGN
MAX_HEADER_SIZE = MAX_HEADER_LEN  # alias used by store.py


def object_key(oid: str) -> str:
    """Backend key of the object file of ``oid``: ``objects/<2 hex>/<30 hex>``."""
    return f"objects/{oid[:2]}/{oid[2:]}"


def oid_from_key(key: str) -> Oid | None:
    """The oid an object key names, or None for a key that is not an object file name."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "objects" or len(parts[1]) != 2:
        return None
    oid = parts[1] + parts[2]
    return Oid(oid) if is_oid(oid) else None


class ObjectFormatError(StoreError, ValueError):
    """An object file's header or payload is damaged, truncated or of an unknown version."""


class Header(NamedTuple):
    """A parsed object header; the payload starts at ``header_len`` (alias ``header_size``).

    Immutable records here are named tuples, not frozen data classes: a frozen data class
    costs ~0.5 ms to define (it compiles its methods), in every process that opens a store."""

    kind: str
    compression: int
    body_size: int
    header_len: int
    version: int = VERSION

    @property
    def header_size(self) -> int:
        """Same as ``header_len``."""
        return self.header_len


def _header_len(kind_len: int) -> int:
    n = _FIXED.size + kind_len + _SIZE.size
    return n + (-n % ALIGN)


def pack_header(kind: str, compression: int, body_size: int) -> bytes:
    """The header of an object of ``kind`` whose body is ``body_size`` bytes."""
    raw_kind = kind.encode("ascii")
    if not 1 <= len(raw_kind) <= 255 or not _KIND.fullmatch(raw_kind):
        raise ValueError(f"invalid object kind {kind!r}")
    if compression not in compress.NAMES:
        raise ValueError(f"unknown compression id {compression}")
    head = _FIXED.pack(MAGIC, VERSION, compression, len(raw_kind)) + raw_kind
    head += _SIZE.pack(body_size)
    return head + bytes(-len(head) % ALIGN)


def parse_header(buf: bytes | bytearray | memoryview) -> Header:
    """Parse and validate the header at the start of ``buf``; raise
    :class:`ObjectFormatError` saying what is wrong."""
    view = memoryview(buf).cast("B")
    if view.nbytes < _FIXED.size:
        raise ObjectFormatError(f"truncated header ({view.nbytes} bytes)")
    magic, version, compression, kind_len = _FIXED.unpack_from(view)
    if magic != MAGIC:
        raise ObjectFormatError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise ObjectFormatError(
            f"object format version {version} is not supported (this version reads "
            f"{VERSION}); upgrade to read it"
        )
    if compression not in compress.NAMES:
        raise ObjectFormatError(f"unknown compression id {compression}")
    if kind_len == 0:
        raise ObjectFormatError("empty kind")
    header_len = _header_len(kind_len)
    if view.nbytes < header_len:
        raise ObjectFormatError(f"truncated header ({view.nbytes} of {header_len} bytes)")
    raw_kind = bytes(view[_FIXED.size : _FIXED.size + kind_len])
    if not _KIND.fullmatch(raw_kind):
        raise ObjectFormatError(f"malformed kind {raw_kind!r}")
    (body_size,) = _SIZE.unpack_from(view, _FIXED.size + kind_len)
    if any(view[_FIXED.size + kind_len + _SIZE.size : header_len]):
        raise ObjectFormatError("non-zero header padding")
    return Header(raw_kind.decode("ascii"), compression, body_size, header_len)


def build(kind: str, chunks: list[Any], size: int, level: int = 3, threads: int = 0) -> list[Any]:
    """The object file of a body of ``kind`` given as ``chunks`` totalling ``size`` bytes:
    ``[header, *payload_chunks]``, compressed as :func:`daskperiment_store.compress.compress` decides.

    The only way object files are made; hash the body first (:func:`daskperiment_store.digest.hash_chunks`)
    to skip building an object that is already stored.
    """
    compression, payload = compress.compress(chunks, size, level, threads)
    return [pack_header(kind, compression, size), *payload]


# -- verification with bounded memory -------------------------------------------------------

#: Bodies are decompressed and hashed in pieces of this size when verified as a stream.
STREAM_CHUNK = 1 << 20
#: Default limit on an object's declared body size (4 GiB); see :func:`max_object_size`.
DEFAULT_MAX_OBJECT_SIZE = 4 << 30
#: Environment variable overriding :data:`DEFAULT_MAX_OBJECT_SIZE` (a number of bytes).
MAX_OBJECT_SIZE_ENV = "DASKPERIMENT_STORE_MAX_OBJECT_SIZE"
#: No valid payload expands more than this; a header claiming more is refused unread.
MAX_EXPANSION = compress.MAX_EXPANSION
#: What a JSON body holding a link must contain: the key literally, or a \uXXXX escape (a key
#: may spell "$link" with escaped characters, which decoding reads as the same key).
_LINK_MARKERS = (b'"$link"', b"\\u")
_MARKER_TAIL = max(len(m) for m in _LINK_MARKERS) - 1


def max_object_size(value: int | None = None) -> int:
    """The object size limit to use: ``value`` if given, else the environment variable
    :data:`MAX_OBJECT_SIZE_ENV`, else :data:`DEFAULT_MAX_OBJECT_SIZE`."""
    if value is None:
        raw = os.environ.get(MAX_OBJECT_SIZE_ENV, "").strip()
        if not raw:
            return DEFAULT_MAX_OBJECT_SIZE
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(
                f"{MAX_OBJECT_SIZE_ENV}={raw!r} is not a whole number of bytes"
            ) from None
    if type(value) is not int or value <= 0:
        raise ValueError(f"the object size limit must be a positive int (bytes), not {value!r}")
    return value


class Verified(NamedTuple):
    """What streaming verification learned: the header, and whether the body contains the
    marker of a link (only JSON bodies with one need to be parsed to find links)."""

    header: Header
    may_link: bool


def _as_view(data: Any) -> memoryview:
    if isinstance(data, bytes | bytearray | memoryview):
        return memoryview(data).cast("B")
    return memoryview(b"".join(data))  # several chunks: parsed as one piece


def header_of(oid: str, data: Any, where: str, limit: int | None = None) -> Header:
    """The checked header of the object file ``data``: :class:`CorruptObject` if damaged or
    claiming an impossible expansion, :class:`ObjectTooLarge` if its body is over ``limit``."""
    view = _as_view(data)
    try:
        header = parse_header(view)
    except ObjectFormatError as exc:
        raise CorruptObject(oid, where, f"bad object header: {exc}") from None
    stored = view.nbytes - header.header_len
    if header.body_size > max(stored, 1) * MAX_EXPANSION:
        raise CorruptObject(
            oid, where, f"header claims {header.body_size} bytes from {stored} stored"
        )
    if limit is not None and header.body_size > limit:
        raise ObjectTooLarge(oid, where, header.body_size, limit)
    return header


def _body_pieces(header: Header, payload: memoryview) -> Iterator[bytes | memoryview]:
    """The body in pieces of at most :data:`STREAM_CHUNK` bytes, never more than one piece
    past the declared size (so a payload that holds more cannot inflate memory)."""
    if header.compression == compress.NONE:
        for start in range(0, payload.nbytes, STREAM_CHUNK):
            yield payload[start : start + STREAM_CHUNK]
        return
    declared = zstandard.frame_content_size(payload)
    if declared not in (header.body_size, -1):
        raise compress.DecompressError(
            f"zstd frame holds {declared} bytes, header says {header.body_size}"
        )
    # A new context, not the thread's (compress.py): this generator pauses between pieces,
    # and the thread may decompress other objects meanwhile.
    reader = zstandard.ZstdDecompressor().stream_reader(payload, read_across_frames=False)
    produced = 0
    while piece := reader.read(STREAM_CHUNK):
        produced += len(piece)
        yield piece
        if produced > header.body_size:
            return


def verify_stream(oid: str, data: Any, where: str, limit: int | None = None) -> Verified:
    """Check that ``data`` is a well-formed object file whose body hashes to ``oid``, holding
    at most :data:`STREAM_CHUNK` bytes of decompressed body at a time.

    Raises :class:`CorruptObject` (damaged header or payload, wrong size, wrong digest) and
    :class:`ObjectTooLarge` (declared body over ``limit``, checked before decompressing).
    """
    view = _as_view(data)
    header = header_of(oid, view, where, limit)
    digest = xxhash.xxh3_128(header.kind.encode("ascii") + b"\0")
    size, tail, may_link = 0, b"", False
    try:
        for piece in _body_pieces(header, view[header.header_len :]):
            digest.update(piece)
            size += len(piece)
            if size > header.body_size:
                break
            if not may_link and header.kind in ("json", "container"):
                text = tail + bytes(piece)  # JSON bodies only; a marker may straddle pieces
                may_link = any(marker in text for marker in _LINK_MARKERS)
                tail = text[-_MARKER_TAIL:]
    except (zstandard.ZstdError, compress.DecompressError) as exc:
        raise CorruptObject(oid, where, f"payload does not decompress: {exc}") from None
    if size != header.body_size:
        raise CorruptObject(
            oid,
            where,
            f"body is {size} bytes or more, header says {header.body_size}"
            if size > header.body_size
            else f"body is {size} bytes, header says {header.body_size}",
        )
    actual = digest.hexdigest()
    if actual != oid:
        raise CorruptObject(oid, where, "content does not match its digest", actual)
    return Verified(header, may_link)


def check_limit(oid: str, data: Any, where: str, limit: int) -> None:
    """Raise :class:`ObjectTooLarge` if the object file ``data`` declares a body over
    ``limit``; a damaged header is left for verification to report."""
    view = _as_view(data)
    try:
        header = parse_header(view[:MAX_HEADER_LEN])
    except ObjectFormatError:
        return
    if header.body_size > max(view.nbytes - header.header_len, 1) * MAX_EXPANSION:
        return  # no payload expands that much: a damaged header, which verify reports
    if header.body_size > limit:
        raise ObjectTooLarge(oid, where, header.body_size, limit)


def verify(oid: str, data: Any, where: str, limit: int | None = None) -> tuple[str, memoryview]:
    """``(kind, canonical body)`` of the object file ``data``, checked against ``oid``.

    The body shares memory with ``data`` when stored uncompressed. Raises
    :class:`CorruptObject` naming ``oid`` and ``where`` for a damaged header, a payload that
    does not decompress to the declared size, or content that hashes to another digest, and
    :class:`ObjectTooLarge` before decompressing a body over ``limit``. Nothing is decoded,
    so no code can run.
    """
    view = _as_view(data)
    header = header_of(oid, view, where, limit)
    try:
        body = compress.decompress(header.compression, view[header.header_len :], header.body_size)
    except ValueError as exc:  # compress.DecompressError: zstd errors, wrong sizes
        raise CorruptObject(oid, where, f"payload does not decompress: {exc}") from None
    body = body.cast("B") if body.format != "B" else body
    if len(body) != header.body_size:
        raise CorruptObject(
            oid, where, f"body is {len(body)} bytes, header says {header.body_size}"
        )
    actual = hash_chunks(header.kind, [body])
    if actual != oid:
        raise CorruptObject(oid, where, "content does not match its digest", actual)
    return header.kind, body
