"""Compression: zstd where it pays, raw where it does not, and exact sizes on the way back."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard

from daskperiment_store import compress as comp
from daskperiment_store.compress import NONE, ZSTD, DecompressError, compress, decompress
from daskperiment_store.errors import StoreError


def joined(chunks) -> bytes:
    return b"".join(bytes(c) for c in chunks)


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_tiny_bodies_are_stored_raw():
    chunks = [b"a" * 10, b"b" * 10]
    cid, payload = compress(chunks, 20)
    assert cid == NONE and payload == chunks


def test_compressible_body_shrinks_and_comes_back_exactly():
    text = b"the same line again and again\n" * 40_000
    chunks = [memoryview(text)[:1000], text[1000:500_000], memoryview(text)[500_000:]]
    cid, payload = compress(chunks, len(text))
    assert cid == ZSTD
    assert len(joined(payload)) < len(text) // 20
    assert bytes(decompress(cid, joined(payload), len(text))) == text


def test_random_floats_are_stored_raw_and_untouched():
    array = np.random.default_rng(1).random(1_000_000)  # 8 MB, incompressible
    chunks = [b"header", memoryview(array).cast("B")]
    cid, payload = compress(chunks, 6 + array.nbytes)
    assert cid == NONE
    assert len(payload) == 2 and all(p is c for p, c in zip(payload, chunks, strict=True))


class CountingCompressor:
    """Wraps zstandard.ZstdCompressor and counts the bytes given to it to compress."""

    fed = 0
    real = zstandard.ZstdCompressor

    def __init__(self, *args, **kwargs) -> None:
        self._inner = self.real(*args, **kwargs)

    def compress(self, data):
        CountingCompressor.fed += memoryview(data).nbytes
        return self._inner.compress(data)

    def compressobj(self, *args, **kwargs):
        inner = self._inner.compressobj(*args, **kwargs)

        class Counting:
            def compress(self, data):
                CountingCompressor.fed += memoryview(data).nbytes
                return inner.compress(data)

            def flush(self):
                return inner.flush()

        return Counting()


def test_incompressible_data_is_judged_from_samples_not_a_full_pass(monkeypatch):
    monkeypatch.setattr(comp.zstandard, "ZstdCompressor", CountingCompressor)
    CountingCompressor.fed = 0
    data = random_bytes(32 * 1024 * 1024)
    cid, _ = compress([data], len(data))
    assert cid == NONE
    assert CountingCompressor.fed <= comp.SAMPLES * comp.SAMPLE_SIZE


def test_small_incompressible_body_gets_a_full_try_then_stays_raw():
    data = random_bytes(100_000)
    assert compress([data], len(data)) == (NONE, [data])


@pytest.mark.parametrize("level", [-20, -1, 1, 3, 19])
def test_levels_including_negative_ones_round_trip(level):
    data = np.arange(25_000, dtype=np.int64).tobytes()
    cid, payload = compress([data], len(data), level=level)
    assert cid == ZSTD
    assert bytes(decompress(cid, joined(payload), len(data))) == data


def test_higher_level_compresses_at_least_as_well():
    data = b"".join(b"%d,%d\n" % (i, i * i % 977) for i in range(20_000))
    fast = joined(compress([data], len(data), level=-5)[1])
    strong = joined(compress([data], len(data), level=19)[1])
    assert len(strong) < len(fast)


@pytest.mark.parametrize("threads", [0, 1, 2, -1])
def test_large_bodies_round_trip_with_any_thread_setting(threads):
    data = np.repeat(np.arange(1_000_000, dtype=np.int64) % 1000, 1).tobytes()  # 8 MB
    cid, payload = compress([memoryview(data)], len(data), threads=threads)
    assert cid == ZSTD
    assert bytes(decompress(cid, joined(payload), len(data))) == data


def test_worker_threads_only_for_large_bodies():
    big = comp.THREADED_ABOVE
    assert comp._zstd_threads(big - 1, 0) == 0
    assert comp._zstd_threads(big, 1) == 0
    assert comp._zstd_threads(big, 3) == 3
    assert comp._zstd_threads(big, 0) in (-1, 0)
    assert comp._zstd_threads(big, -1) == comp._zstd_threads(big, 0)


def test_decompressed_body_is_writable_and_64_byte_aligned():
    data = b"x" * 100_000
    cid, payload = compress([data], len(data))
    body = decompress(cid, joined(payload), len(data))
    assert not body.readonly
    assert np.frombuffer(body, np.uint8).ctypes.data % 64 == 0


def test_raw_payload_is_returned_without_a_copy():
    payload = bytearray(b"abc" * 100)
    body = decompress(NONE, payload, len(payload))
    body[0] = ord("z")
    assert payload[0] == ord("z")


def zstd_frame(data: bytes, **kwargs) -> bytes:
    return zstandard.ZstdCompressor(**kwargs).compress(data)


@pytest.mark.parametrize(
    "cid, payload, size",
    [
        (NONE, b"abc", 4),
        (NONE, b"abcd", 3),
        (ZSTD, zstd_frame(b"a" * 1000), 999),
        (ZSTD, zstd_frame(b"a" * 1000), 1001),
        (ZSTD, zstd_frame(b"a" * 1000, write_content_size=False), 999),
        (ZSTD, zstd_frame(b"a" * 1000, write_content_size=False), 1001),
        (ZSTD, zstd_frame(b"a" * 1000)[:-3], 1000),
        (ZSTD, b"not a zstd frame at all", 1000),
        (ZSTD, zstd_frame(b"a" * 1000, write_content_size=False), 2**60),
        (7, b"abc", 3),
    ],
)
def test_payload_that_does_not_hold_exactly_size_bytes_is_an_error(cid, payload, size):
    with pytest.raises(DecompressError) as info:
        decompress(cid, payload, size)
    assert isinstance(info.value, StoreError) and isinstance(info.value, ValueError)


def test_frame_without_recorded_size_decompresses_when_size_is_right():
    data = b"abc" * 1000
    payload = zstd_frame(data, write_content_size=False)
    assert bytes(decompress(ZSTD, payload, len(data))) == data
