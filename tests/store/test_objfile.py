"""Object files: the header layout, its validation, and verified decoding."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import daskperiment_store as store
from daskperiment_store.codec import decode, digest, encode
from daskperiment_store.compress import NONE, ZSTD
from daskperiment_store.digest import hash_chunks
from daskperiment_store.errors import CorruptObject, StoreError
from daskperiment_store.objfile import (
    MAGIC,
    MAX_HEADER_LEN,
    VERSION,
    Header,
    ObjectFormatError,
    build,
    pack_header,
    parse_header,
    verify,
    verify_stream,
)


def object_bytes(value, level: int = 3) -> tuple[str, bytes]:
    enc = encode(value)
    oid = hash_chunks(enc.kind, enc.chunks)
    return oid, b"".join(bytes(p) for p in build(enc.kind, enc.chunks, enc.size, level))


def decode_object(data, oid: str) -> tuple[str, memoryview]:
    """Verify with both paths (whole body, and streamed); return the whole-body result."""
    verify_stream(oid, data, "test")
    return verify(oid, data, "test")


def test_header_layout_is_pinned():
    assert pack_header("json", ZSTD, 5) == (
        b"DPSO" + bytes([1, 1, 4]) + b"json" + struct.pack("<Q", 5) + bytes(64 - 19)
    )
    assert (MAGIC, VERSION, MAX_HEADER_LEN) == (b"DPSO", 1, 320)


@pytest.mark.parametrize("kind", ["json", "ndarray", "pandas", "bytes", "pickle", "x" * 255])
@pytest.mark.parametrize("compression", [NONE, ZSTD])
def test_headers_parse_back_and_keep_payloads_64_byte_aligned(kind, compression):
    header = pack_header(kind, compression, 2**40 + 3)
    assert len(header) % 64 == 0 and len(header) <= MAX_HEADER_LEN
    parsed = parse_header(header + b"payload")
    assert parsed == Header(kind, compression, 2**40 + 3, len(header))
    assert parsed.header_size == parsed.header_len and parsed.version == VERSION


@pytest.mark.parametrize("kind, compression", [("", 0), ("JSON", 0), ("a b", 0), ("json", 5)])
def test_pack_header_refuses_bad_kinds_and_compressions(kind, compression):
    with pytest.raises(ValueError):
        pack_header(kind, compression, 1)


def test_every_truncation_of_a_header_is_an_error():
    header = pack_header("ndarray", NONE, 10)
    for n in range(len(header)):
        with pytest.raises(ObjectFormatError, match="truncated"):
            parse_header(header[:n])


def damaged(offset: int, value: int) -> bytes:
    header = bytearray(pack_header("json", NONE, 10))
    header[offset] = value
    return bytes(header)


@pytest.mark.parametrize(
    "data, message",
    [
        (damaged(0, ord("X")), "bad magic"),
        (damaged(4, 2), "version 2 is not supported"),
        (damaged(5, 9), "unknown compression id 9"),
        (damaged(6, 0), "empty kind"),
        (damaged(7, ord("J")), "malformed kind"),
        (damaged(40, 1), "non-zero header padding"),
    ],
)
def test_damaged_headers_are_refused_with_the_reason(data, message):
    with pytest.raises(ObjectFormatError, match=message) as info:
        parse_header(data)
    assert isinstance(info.value, StoreError) and isinstance(info.value, ValueError)


VALUES = {
    "json": {"a": [1, 2.5, None]},
    "compressible array": np.zeros(100_000),
    "random array": np.random.default_rng(0).random(10_000),
    "bytes": b"\x00\x01" * 10,
}


@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_objects_decode_and_verify(value):
    oid, data = object_bytes(value)
    assert oid == digest(value)
    kind, body = decode_object(data, oid)
    assert kind == encode(value).kind
    np.testing.assert_equal(decode(kind, body), value)


def test_compression_never_changes_the_oid():
    value = np.zeros(100_000)
    oid_fast, packed = object_bytes(value, level=-5)
    oid_strong, _ = object_bytes(value, level=19)
    assert oid_fast == oid_strong == digest(value)
    assert parse_header(packed).compression == ZSTD


def test_a_store_writes_exactly_what_build_makes():
    value = {"x": list(range(100))}
    oid, data = object_bytes(value)
    s = store.open(store.MemoryBackend())
    assert s.put(value) == oid
    assert bytes(s.get_stored(oid)) == data


def test_raw_array_decodes_in_place_from_an_aligned_buffer():
    array = np.random.default_rng(2).random(1000)
    oid, data = object_bytes(array)
    assert parse_header(data).compression == NONE
    raw = np.empty(len(data) + 64, dtype=np.uint8)
    start = -raw.ctypes.data % 64
    buf = raw[start : start + len(data)]
    buf[:] = np.frombuffer(data, np.uint8)
    kind, body = verify(oid, memoryview(buf), "here")
    out = decode(kind, body)
    assert np.shares_memory(out, raw) and out.flags.aligned and out.flags.writeable
    np.testing.assert_array_equal(out, array)


def test_flipped_byte_in_a_raw_payload_is_a_hash_mismatch():
    array = np.random.default_rng(3).random(100)
    oid, data = object_bytes(array)
    corrupt = bytearray(data)
    corrupt[-1] ^= 0x01
    for check in (verify, verify_stream):
        with pytest.raises(CorruptObject) as info:
            check(oid, corrupt, "here")
        assert info.value.oid == oid and info.value.path == "here"
        assert info.value.actual == digest(np.frombuffer(corrupt[-800:], "<f8"))
        assert oid in str(info.value) and info.value.actual in str(info.value)


def test_flipped_byte_in_a_zstd_payload_is_detected():
    oid, data = object_bytes(np.zeros(10_000))
    assert parse_header(data).compression == ZSTD
    for offset in range(64, len(data)):
        corrupt = bytearray(data)
        corrupt[offset] ^= 0x40
        for check in (verify, verify_stream):
            with pytest.raises(CorruptObject):  # a wrong digest or a damaged frame
                check(oid, corrupt, "here")


@pytest.mark.parametrize("value", [np.zeros(10_000), b"r" * 10 + bytes(range(256))])
def test_truncated_or_extended_payload_is_an_error(value):
    oid, data = object_bytes(value)
    for bad in (data[:-1], data[: len(data) // 2], data + b"\0"):
        for check in (verify, verify_stream):
            with pytest.raises(CorruptObject):
                check(oid, bad, "here")
