"""Bounded memory: object size limit on reads and streaming verification on import.

A bundle of a few kilobytes can hold a zstd frame that decompresses to a gibibyte (within
the 65,536x expansion any header may claim). Importing it must not take that memory: objects
are verified as a stream. Reading an object whose header declares more than the store's
limit is refused before anything is decompressed. Peak memory is measured in a real
subprocess with ``resource.getrusage``.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import xxhash
import zstandard

import daskperiment_store as store
from daskperiment_store import objfile
from daskperiment_store.errors import BundleError, ObjectTooLarge

ROOT = Path(__file__).resolve().parents[2]
GIB = 1 << 30
#: The import of a 1 GiB bomb must stay far below 1 GiB; the interpreter with numpy and
#: pandas imported takes roughly 100 MB of it.
PEAK_LIMIT_MB = 300

IMPORT = """
import json, resource, sys
import daskperiment_store as store
from daskperiment_store.errors import BundleError, ObjectTooLarge
s = store.open(sys.argv[1])
try:
    report = s.import_bundle(sys.argv[2])
    outcome = {"imported": report.objects_copied, "refs": report.refs_updated}
except (BundleError, ObjectTooLarge) as exc:
    outcome = {"error": type(exc).__name__, "message": str(exc)}
if len(sys.argv) > 3:
    try:
        store.open(sys.argv[1], max_object_size=int(sys.argv[4])).get(sys.argv[3])
        outcome["read"] = "ok"
    except ObjectTooLarge as exc:
        outcome["read"] = str(exc)
outcome["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(outcome))
"""


def _bomb_record(size: int) -> tuple[str, bytes]:
    """(oid, object file) of a ``bytes`` object of ``size`` zero bytes, zstd-compressed.

    Built in pieces, so the test itself never holds the body either.
    """
    piece = bytes(1 << 20)
    digest = xxhash.xxh3_128(b"bytes\0")
    stream = zstandard.ZstdCompressor(level=3).compressobj(size=size)
    out = []
    for _ in range(size // len(piece)):
        digest.update(piece)
        out.append(stream.compress(piece))
    out.append(stream.flush())
    return digest.hexdigest(), objfile.pack_header("bytes", 1, size) + b"".join(out)


def _bundle(refs: dict[str, str], objects: list[tuple[str, bytes]]) -> bytes:
    """A bundle assembled byte by byte, as someone else could send it."""
    index, offset = [], 0
    for oid, data in objects:
        index.append([oid, offset, len(data)])
        offset += len(data)
    header = json.dumps(
        {
            "format": "daskperiment-bundle",
            "version": 1,
            "hash": "xxh3-128",
            "refs": refs,
            "objects": index,
        }
    ).encode()
    body = struct.pack("<4sBQ", b"DPSB", 1, len(header)) + header
    body += b"".join(d for _, d in objects)
    return body + xxhash.xxh3_128(body).digest()


@pytest.fixture(scope="module")
def bomb() -> tuple[str, bytes]:
    return _bomb_record(GIB)


# Linux carries a process's peak RSS over fork and exec: a child started straight from a
# large pytest process would report pytest's peak. A small launcher in between starts the
# measured process from its own small memory.
_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def _import_in_subprocess(target: Path, bundle: Path, *read: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, sys.executable, "-c", IMPORT, str(target), str(bundle)]
        + list(read),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_small_bundle_cannot_drive_the_importer_to_a_gibibyte(
    tmp_path: Path, bomb: tuple[str, bytes]
) -> None:
    oid, record = bomb
    path = tmp_path / "bomb.bundle"
    path.write_bytes(_bundle({"runs/bomb": oid}, [(oid, record)]))
    assert path.stat().st_size < 64 * 1024  # about 33 KB
    outcome = _import_in_subprocess(tmp_path / "s", path, oid, str(64 << 20))
    # The object is genuine (its oid is right), so it is imported, in bounded memory...
    assert outcome["imported"] == 1 and outcome["refs"] == ["runs/bomb"]
    assert outcome["peak_mb"] < PEAK_LIMIT_MB, outcome
    # ...and reading it is refused before decompressing: the limit says 64 MiB.
    assert f"declares a {GIB}-byte body" in outcome["read"]
    assert "object size limit of 67108864 bytes" in outcome["read"]
    assert "max_object_size=N" in outcome["read"]


def test_a_bomb_under_a_wrong_oid_is_refused_in_bounded_memory(
    tmp_path: Path, bomb: tuple[str, bytes]
) -> None:
    _, record = bomb
    wrong = xxhash.xxh3_128(b"bytes\0something else").hexdigest()
    path = tmp_path / "forged.bundle"
    path.write_bytes(_bundle({"runs/bomb": wrong}, [(wrong, record)]))
    outcome = _import_in_subprocess(tmp_path / "s", path)
    assert outcome["error"] == "BundleError"
    assert f"object {wrong} does not verify" in outcome["message"]
    assert "no ref was imported" in outcome["message"]
    assert outcome["peak_mb"] < PEAK_LIMIT_MB, outcome
    assert not store.open(tmp_path / "s").refs.list("")


def test_a_frame_holding_more_than_its_header_says_is_refused_early(tmp_path: Path) -> None:
    # Header claims 1 MiB; the frame holds 1 GiB (its content size left out of the frame).
    piece = bytes(1 << 20)
    stream = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    payload = b"".join(stream.compress(piece) for _ in range(1024)) + stream.flush()
    oid = xxhash.xxh3_128(b"bytes\0" + piece).hexdigest()
    record = objfile.pack_header("bytes", 1, len(piece)) + payload
    path = tmp_path / "liar.bundle"
    path.write_bytes(_bundle({"runs/liar": oid}, [(oid, record)]))
    outcome = _import_in_subprocess(tmp_path / "s", path)
    assert outcome["error"] == "BundleError"
    assert "header says 1048576" in outcome["message"]
    assert outcome["peak_mb"] < PEAK_LIMIT_MB, outcome


def test_reading_an_object_over_the_limit_says_what_and_how_to_raise_it(tmp_path: Path) -> None:
    s = store.open(tmp_path / "s")
    oid = s.put(bytes(range(256)) * 8192)  # a 2 MiB body
    small = store.open(tmp_path / "s", max_object_size=1 << 20)
    with pytest.raises(ObjectTooLarge) as info:
        small.get(oid)
    assert info.value.size == 2 << 20 and info.value.limit == 1 << 20
    assert "max_object_size=N" in str(info.value)
    assert str(small.path_of(oid)) in str(info.value)
    assert store.open(tmp_path / "s", max_object_size=4 << 20).get(oid) == bytes(range(256)) * 8192


def test_import_refuses_objects_over_the_limit_and_imports_no_ref(tmp_path: Path) -> None:
    src = store.open(tmp_path / "src")
    src.refs.create("runs/big", src.put(bytes(range(256)) * 8192))
    src.export_bundle(tmp_path / "b.bundle")
    dst = store.open(tmp_path / "dst", max_object_size=1 << 20)
    with pytest.raises(BundleError, match="over the object size limit of 1048576"):
        dst.import_bundle(tmp_path / "b.bundle")
    assert dst.refs.list("") == {}
    store.open(tmp_path / "dst").import_bundle(tmp_path / "b.bundle")  # default limit: fine


def test_the_limit_comes_from_the_argument_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert store.open(tmp_path / "a").max_object_size == objfile.DEFAULT_MAX_OBJECT_SIZE
    monkeypatch.setenv(objfile.MAX_OBJECT_SIZE_ENV, "12345")
    assert store.open(tmp_path / "a").max_object_size == 12345
    assert store.open(tmp_path / "a", max_object_size=99).max_object_size == 99
    monkeypatch.setenv(objfile.MAX_OBJECT_SIZE_ENV, "lots")
    with pytest.raises(ValueError, match="is not a whole number of bytes"):
        store.open(tmp_path / "a")
    with pytest.raises(ValueError, match="positive int"):
        store.open(tmp_path / "b", max_object_size=0)
