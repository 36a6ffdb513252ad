"""zstd contexts kept per thread (store/compress.py): correct objects from many threads at
once, after a failed call, and in a forked child."""

from __future__ import annotations

import os
import threading

import pytest

import daskperiment_store as store
from daskperiment_store import compress
from daskperiment_store.compress import ZSTD, DecompressError


def record(n: int) -> dict:
    """A small compressible record, different for every ``n``."""
    return {
        "trial": n,
        "steps": {f"step{i}": {"output": f"{n:032x}", "t": i * n} for i in range(8)},
    }


def body_of(n: int) -> bytes:
    return (f"line {n} of a body that compresses well\n" * (20 + n % 50)).encode()


def round_trip(n: int, level: int = 3) -> bool:
    body = body_of(n)
    cid, payload = compress.compress([body], len(body), level)
    joined = b"".join(bytes(p) for p in payload)
    return cid == ZSTD and bytes(compress.decompress(cid, joined, len(body))) == body


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_threads_putting_at_once_each_get_their_own_objects(kind, tmp_path):
    target = f"memory://contexts-{kind}-{os.getpid()}" if kind == "memory" else tmp_path / "s"
    stores = [store.open(target, compression_level=level) for level in (1, 3, 9)]
    threads, per_thread = 8, 150
    start = threading.Barrier(threads)
    oids: dict[int, list[tuple[int, str]]] = {}
    errors: list[BaseException] = []

    def work(t: int) -> None:
        st = stores[t % len(stores)]  # three levels, so contexts of several levels are in use
        start.wait()
        try:
            oids[t] = [(n, st.put(record(t * 10_000 + n))) for n in range(per_thread)]
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    reader = store.open(target)
    for t, pairs in oids.items():
        for n, oid in pairs:
            assert reader.get(oid) == record(t * 10_000 + n)
            assert reader.info(oid).compression == "zstd"
    assert reader.fsck().ok


def test_threads_compressing_and_decompressing_at_once_get_exact_bodies():
    failures: list[int] = []
    start = threading.Barrier(6)

    def work(t: int) -> None:
        start.wait()
        failures.extend(n for n in range(t, 3000, 6) if not round_trip(n, level=1 + t % 3))

    workers = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert failures == []


def test_a_failed_decompression_leaves_the_thread_able_to_decompress():
    good = body_of(7)
    _, payload = compress.compress([good], len(good))
    frame = b"".join(bytes(p) for p in payload)
    damaged = frame[: len(frame) // 2]
    with pytest.raises(DecompressError):
        compress.decompress(ZSTD, damaged, len(good))
    assert bytes(compress.decompress(ZSTD, frame, len(good))) == good


def test_a_failed_compression_leaves_the_thread_able_to_compress():
    body = body_of(3)
    strided = memoryview(body)[::2]  # not contiguous: zstd refuses it midway through a stream
    with pytest.raises((ValueError, BufferError, TypeError)):
        compress.compress([body[:500], strided], 500 + len(strided))
    assert round_trip(3)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_compresses_with_its_own_contexts(tmp_path):
    """The parent has contexts (one thread keeps compressing while it forks); the child
    starts without them, and everything it writes reads back exactly in the parent."""
    assert round_trip(1)  # the main thread now has a level-3 context
    parent_context = compress._contexts.compressors[3]
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            round_trip(5)

    background = threading.Thread(target=busy)
    background.start()
    target = tmp_path / "forked"
    store.open(target)
    try:
        pids = []
        for child in range(3):
            pid = os.fork()
            if pid == 0:  # the child: report through the exit status only
                status = 1
                try:
                    fresh = not compress._contexts.compressors
                    ok = all(round_trip(n) for n in range(200))
                    st = store.open(target)
                    oids = [st.put(record(child * 1000 + n)) for n in range(50)]
                    back = all(st.get(o) == record(child * 1000 + n) for n, o in enumerate(oids))
                    mine = compress._contexts.compressors.get(3)
                    status = 0 if fresh and ok and back and mine is not parent_context else 2
                finally:
                    os._exit(status)
            pids.append(pid)
        statuses = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    finally:
        stop.set()
        background.join()
    assert statuses == [0, 0, 0]
    reader = store.open(target)
    for child in range(3):
        for n in range(50):
            assert reader.get(store.digest(record(child * 1000 + n))) == record(child * 1000 + n)
    assert reader.fsck().ok
    assert compress._contexts.compressors[3] is parent_context  # the parent keeps its own


def test_large_bodies_do_not_keep_a_context(monkeypatch):
    made: list[int] = []
    real = compress.zstandard.ZstdCompressor

    def counting(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(compress.zstandard, "ZstdCompressor", counting)
    body = b"0123456789abcdef" * (compress.SAMPLED_ABOVE // 16 + 1)
    for _ in range(3):
        assert compress.compress([body], len(body), level=5, threads=1)[0] == ZSTD
    assert 5 not in compress._contexts.compressors
    assert len(made) >= 3  # one per call (and one for the samples of each)
    small = body[:1000]
    for _ in range(3):
        compress.compress([small], len(small), level=5)
    assert 5 in compress._contexts.compressors and len(made) <= 3 * 2 + 1
