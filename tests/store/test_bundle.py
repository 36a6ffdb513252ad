"""Bundles: export/import round trips, verification before refs appear, conflicts, and
hostile input. Hostile bundles are written byte by byte here, not through export_bundle, so the
reader is tested against what an attacker could send."""

from __future__ import annotations

import io
import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import xxhash

import daskperiment_store as store
from daskperiment_store import objfile
from daskperiment_store.bundle import (
    MAGIC,
    MAX_HEADER_SIZE,
    export_bundle,
    import_bundle,
    read_bundle_header,
)
from daskperiment_store.digest import hash_chunks
from daskperiment_store.errors import BundleError, CorruptObject, RefConflicts, RefNotFound

PREFIX = "experiments/a/trials/"


def fill(s: store.Store, n: int = 3) -> dict[str, str]:
    """Trials linking a shared array, a per-trial array and parameters; returns the refs."""
    shared = s.put(np.arange(1000, dtype="float64"))
    refs = {}
    for i in range(1, n + 1):
        params = s.put({"lr": 0.1 * i, "layers": [i, i + 1]})
        own = s.put(np.full(100, i, dtype="int32"))
        record = s.put(
            {"id": i, "params": store.Link(params), "arrays": [store.Link(shared), store.Link(own)]}
        )
        s.refs.create(f"{PREFIX}{i}", record)
        refs[f"{PREFIX}{i}"] = record
    return refs


def reachable(s: store.Store, refs: dict[str, str]) -> set[str]:
    return set(s.walk(refs.values()))


def snapshot(s: store.Store) -> tuple[dict[str, str], set[str]]:
    """Every ref and every object of a store, to show that nothing changed."""
    return s.refs.list(""), set(s.iter_oids())


@pytest.fixture
def src(tmp_path: Path) -> store.Store:
    return store.open(tmp_path / "src")


@pytest.fixture(params=["local", "memory"])
def dst(request: pytest.FixtureRequest, tmp_path: Path) -> store.Store:
    if request.param == "local":
        return store.open(tmp_path / "dst")
    return store.open(store.MemoryBackend())


@pytest.fixture
def bundle(src: store.Store, tmp_path: Path) -> Path:
    fill(src)
    path = tmp_path / "trials.dpb"
    export_bundle(src, path, PREFIX)
    return path


# -- round trips ----------------------------------------------------------------------------


def test_round_trip_keeps_refs_objects_and_values(src, dst, tmp_path):
    refs = fill(src)
    path = tmp_path / "b.dpb"
    report = export_bundle(src, path, PREFIX)
    assert report.refs == refs
    assert report.objects == len(reachable(src, refs))
    assert report.bytes == path.stat().st_size

    imported = import_bundle(dst, path)
    assert sorted(imported.refs_updated) == sorted(refs)
    assert imported.objects_copied == report.objects
    assert dst.refs.list("") == refs
    for oid in reachable(src, refs):
        assert dst.get_raw(oid)[0] == src.get_raw(oid)[0]
        assert bytes(dst.get_raw(oid)[1]) == bytes(src.get_raw(oid)[1])
    np.testing.assert_array_equal(dst.get(dst.get(refs[f"{PREFIX}2"])["arrays"][1].oid), 2)
    assert dst.fsck().ok


def test_objects_travel_as_stored_bytes(src, dst, bundle):
    import_bundle(dst, bundle)
    for oid in src.iter_oids():
        assert bytes(dst.get_stored(oid)) == bytes(src.get_stored(oid))


def test_export_selects_listed_refs_only(src, tmp_path):
    refs = fill(src)
    src.refs.create("other/x", src.put("unrelated"))
    report = export_bundle(src, tmp_path / "b", [f"{PREFIX}1"])
    assert report.refs == {f"{PREFIX}1": refs[f"{PREFIX}1"]}
    assert report.objects == len(reachable(src, {"x": refs[f"{PREFIX}1"]}))
    assert read_bundle_header(tmp_path / "b").refs == report.refs


def test_export_of_a_missing_ref_or_empty_selection_is_an_error(src, tmp_path):
    fill(src)
    with pytest.raises(RefNotFound):
        export_bundle(src, tmp_path / "b", [f"{PREFIX}99"])
    with pytest.raises(BundleError, match="nothing to export"):
        export_bundle(src, tmp_path / "b", "experiments/none/")
    assert not (tmp_path / "b").exists()
    assert os.listdir(tmp_path) == ["src"]  # no temp file left behind


def test_export_is_deterministic_and_works_with_file_objects(src, dst, tmp_path):
    fill(src)
    first, second = io.BytesIO(), io.BytesIO()
    export_bundle(src, first, PREFIX)
    export_bundle(src, second, PREFIX)
    assert first.getvalue() == second.getvalue()
    first.seek(0)
    assert import_bundle(dst, first).objects_copied > 0


def test_second_import_changes_nothing(dst, bundle):
    first = import_bundle(dst, bundle)
    before = snapshot(dst)
    again = import_bundle(dst, bundle)
    assert again.objects_copied == 0 and again.bytes_copied == 0
    assert again.refs_updated == []
    assert sorted(again.refs_unchanged) == sorted(first.refs_updated)
    assert snapshot(dst) == before


def test_import_copies_only_objects_the_store_lacks(src, dst, bundle):
    shared = src.put(np.arange(1000, dtype="float64"))
    dst.put(np.arange(1000, dtype="float64"))
    report = import_bundle(dst, bundle)
    assert report.objects_copied == len(list(src.iter_oids())) - 1
    assert dst.has(shared)


def test_import_freshens_old_objects_it_relies_on(bundle, tmp_path):
    """An old object the import deduplicates against gets a new mtime, so a concurrent gc's
    grace period covers it until the imported refs make it reachable."""
    shared = store.open(tmp_path / "dst").put(np.arange(1000, dtype="float64"))
    path = tmp_path / "dst" / "objects" / shared[:2] / shared[2:]
    two_hours_ago = time.time() - 7200
    os.utime(path, (two_hours_ago, two_hours_ago))
    report = import_bundle(store.open(tmp_path / "dst"), bundle)
    assert path.stat().st_mtime > two_hours_ago + 3600
    assert report.objects_copied == len(read_bundle_header(bundle).objects) - 1


def test_ref_map_imports_under_a_new_prefix(src, dst, bundle):
    report = import_bundle(dst, bundle, {PREFIX: "experiments/b/trials/"})
    assert sorted(report.refs_updated) == [f"experiments/b/trials/{i}" for i in (1, 2, 3)]
    assert dst.refs.list("experiments/a/") == {}
    assert dst.refs.get("experiments/b/trials/3") == src.refs.get(f"{PREFIX}3")


@pytest.mark.parametrize("target", ["../evil/", "/abs/", "a//"])
def test_ref_map_to_invalid_names_is_refused(dst, bundle, target):
    with pytest.raises(BundleError, match="prefix map"):
        import_bundle(dst, bundle, {PREFIX: target})
    assert dst.refs.list("") == {}


def test_ref_map_sending_two_refs_to_one_name_is_refused(dst, bundle):
    with pytest.raises(BundleError, match="two refs"):
        import_bundle(dst, bundle, {f"{PREFIX}1": "x", f"{PREFIX}2": "x"})
    assert dst.refs.list("") == {}


# -- conflicts ------------------------------------------------------------------------------


def test_conflicting_ref_refuses_the_whole_import(src, dst, bundle):
    elsewhere = dst.put("someone else's trial 2")
    dst.refs.create(f"{PREFIX}2", elsewhere)
    before = snapshot(dst)
    with pytest.raises(RefConflicts) as info:
        import_bundle(dst, bundle)
    assert info.value.conflicts == {f"{PREFIX}2": (src.refs.get(f"{PREFIX}2"), elsewhere)}
    assert f"{PREFIX}2" in str(info.value) and "nothing was changed" in str(info.value)
    assert isinstance(info.value, store.errors.RefConflict)
    assert snapshot(dst) == before  # not even the non-conflicting trials 1 and 3


def test_conflict_is_resolved_by_importing_under_another_prefix(src, dst, bundle):
    dst.refs.create(f"{PREFIX}2", dst.put("mine"))
    import_bundle(dst, bundle, {"experiments/a/": "experiments/a-imported/"})
    assert dst.refs.get("experiments/a-imported/trials/2") == src.refs.get(f"{PREFIX}2")
    assert dst.get(dst.refs.get(f"{PREFIX}2")) == "mine"


# -- verification before refs appear ---------------------------------------------------------


def records(path: Path) -> tuple[bytes, int, list[tuple[str, int, int]]]:
    """(file bytes, data start, [(oid, offset, length)]) of a well-formed bundle."""
    data = path.read_bytes()
    header = read_bundle_header(path)
    return data, header.data_start, [(e.oid, e.offset, e.length) for e in header.objects]


def retrail(body: bytes) -> bytes:
    """Give ``body`` a correct trailer, so only the object checks can catch damage."""
    return body + xxhash.xxh3_128(body).digest()


def test_corrupt_object_is_refused_and_no_ref_created(dst, bundle, tmp_path):
    data, start, entries = records(bundle)
    oid, offset, length = max(entries, key=lambda e: e[2])
    pos = start + offset + length - 3  # inside the payload, past the object header
    body = bytearray(data[:-16])
    body[pos] ^= 0xFF
    bad = tmp_path / "bad.dpb"
    bad.write_bytes(retrail(bytes(body)))
    with pytest.raises(BundleError, match=f"{oid} does not verify") as info:
        import_bundle(dst, bad)
    assert "no ref was imported" in str(info.value)
    assert dst.refs.list("") == {}


def test_object_swapped_for_another_valid_object_is_refused(src, dst, bundle, tmp_path):
    """Well-formed stored bytes under the wrong oid: only the rehash catches it."""
    data, start, entries = records(bundle)
    victim = next(e for e in entries if src.get_raw(e[0])[0] == "json")
    other = bytes(src.get_stored(src.put({"forged": True})))
    header = json.loads(data[13:start])
    payloads = [data[start + off : start + off + n] for _, off, n in entries]
    payloads[entries.index(victim)] = other
    bad = tmp_path / "bad.dpb"
    bad.write_bytes(
        build(header["refs"], list(zip([e[0] for e in entries], payloads, strict=True)))
    )
    with pytest.raises(BundleError, match="content does not match its digest"):
        import_bundle(dst, bad)
    assert dst.refs.list("") == {}


def test_damaged_trailer_is_refused_after_objects_but_before_refs(dst, bundle, tmp_path):
    data = bytearray(bundle.read_bytes())
    data[-1] ^= 1
    bad = tmp_path / "bad.dpb"
    bad.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum"):
        import_bundle(dst, bad)
    assert dst.refs.list("") == {}
    # What was written is unreferenced and left for gc.
    assert dst.gc(grace=0).objects_removed


def test_import_never_unpickles(src, dst, tmp_path):
    marker = tmp_path / "unpickled"
    src.refs.create("x/bomb", src.put(_Bomb(str(marker))))
    export_bundle(src, tmp_path / "b", "x/")
    assert not marker.exists()
    import_bundle(dst, tmp_path / "b")
    assert dst.refs.has("x/bomb")
    assert not marker.exists()


class _Bomb:
    """Creates a file when unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_incomplete_bundle_is_refused(src, dst, tmp_path):
    child = src.put("child")
    parent = src.put({"child": store.Link(child)})
    stored = bytes(src.get_stored(parent))
    bad = tmp_path / "bad.dpb"
    bad.write_bytes(build({"x/parent": parent}, [(parent, stored)]))
    with pytest.raises(BundleError, match=f"links to {child}"):
        import_bundle(dst, bad)
    assert dst.refs.list("") == {}
    dst.put("child")  # with the child already present, the same bundle is complete
    assert import_bundle(dst, bad).refs_updated == ["x/parent"]


# -- hostile input --------------------------------------------------------------------------


def build(
    refs: dict,
    objects: list[tuple[str, bytes]],
    *,
    magic: bytes = MAGIC,
    version: int = 1,
    header: dict | bytes | None = None,
    header_size: int | None = None,
    trailer: bool = True,
) -> bytes:
    """Assemble a bundle by hand, optionally wrong in one chosen way."""
    if header is None:
        index, off = [], 0
        for oid, data in objects:
            index.append([oid, off, len(data)])
            off += len(data)
        header = {
            "format": "daskperiment-bundle",
            "version": 1,
            "hash": "xxh3-128",
            "refs": refs,
            "objects": index,
        }
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    size = len(raw) if header_size is None else header_size
    body = struct.pack("<4sBQ", magic, version, size) + raw + b"".join(d for _, d in objects)
    return body + xxhash.xxh3_128(body).digest() if trailer else body


@pytest.fixture
def one(src) -> tuple[str, bytes]:
    """A small object's oid and stored bytes."""
    oid = src.put({"a": 1})
    return oid, bytes(src.get_stored(oid))


def assert_refused(s: store.Store, data: bytes, match: str, tmp_path: Path) -> None:
    before = snapshot(s)
    path = tmp_path / "hostile.dpb"
    path.write_bytes(data)
    with pytest.raises(BundleError, match=match):
        import_bundle(s, path)
    with pytest.raises(BundleError, match=match):  # the same from a non-seekable stream
        import_bundle(s, _Stream(data))
    assert snapshot(s)[0] == before[0]


class _Stream(io.RawIOBase):
    """A pipe-like, non-seekable reader."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self._buf.readinto(b)


@pytest.mark.parametrize(
    "name", ["../evil", "/etc/passwd", "a/../../b", "a//b", "", "a/./b", "a\\b", "a\x00b", "a/"]
)
def test_unsafe_ref_names_are_refused(dst, one, name, tmp_path):
    assert_refused(dst, build({name: one[0]}, [one]), "unsafe ref name", tmp_path)
    assert not (tmp_path / "evil").exists()
    assert not list(dst.iter_oids())  # refused before any object is read


def test_wrong_magic(dst, one, tmp_path):
    assert_refused(
        dst, build({"x": one[0]}, [one], magic=b"PK\x03\x04"), "not a daskperiment bundle", tmp_path
    )


def test_unknown_version(dst, one, tmp_path):
    assert_refused(
        dst, build({"x": one[0]}, [one], version=2), "format version 2 is not supported", tmp_path
    )


@pytest.mark.parametrize("size", [MAX_HEADER_SIZE + 1, 2**40, 2**64 - 1])
def test_oversized_header_is_refused_unread(dst, one, size, tmp_path):
    assert_refused(dst, build({"x": one[0]}, [one], header_size=size), "over the", tmp_path)


@pytest.mark.parametrize("garbage", [b"", b"D", b"DPSB", os.urandom(5000), b"\0" * 64])
def test_garbage(dst, garbage, tmp_path):
    assert_refused(dst, garbage, "truncated|not a daskperiment bundle|version", tmp_path)


def test_truncated_at_every_region(dst, bundle, tmp_path):
    data, start, entries = records(bundle)
    cuts = {0, 3, 4, 5, 12, 13, start // 2, start - 1, start, start + entries[0][2] // 2}
    cuts |= {start + entries[-1][1], len(data) - 16, len(data) - 1}
    for cut in sorted(cuts):
        assert_refused(dst, data[:cut], "truncated|not a daskperiment bundle", tmp_path)
    assert dst.refs.list("") == {}


def test_lengths_past_end_of_file(dst, one, tmp_path):
    oid, stored = one
    header = {
        "format": "daskperiment-bundle",
        "version": 1,
        "hash": "xxh3-128",
        "refs": {"x": oid},
        "objects": [[oid, 0, 2**50]],
    }
    assert_refused(dst, build({}, [one], header=header), "truncated", tmp_path)


def test_trailing_bytes_are_refused(dst, bundle, tmp_path):
    assert_refused(dst, bundle.read_bytes() + b"x", "unexpected bytes", tmp_path)


def header_with(oid: str, **changes) -> dict:
    h = {
        "format": "daskperiment-bundle",
        "version": 1,
        "hash": "xxh3-128",
        "refs": {"x": oid},
        "objects": None,
    }
    h.update(changes)
    return h


@pytest.mark.parametrize(
    "case, match",
    [
        ("malformed_ref_oid", "not an oid"),
        ("malformed_object_oid", r"\[oid \(32 hex\), offset, length\]"),
        ("duplicate_object", "twice"),
        ("duplicate_ref_key", "duplicate key"),
        ("ref_to_absent_object", "the bundle lacks"),
        ("gap", "without gaps"),
        ("negative_length", "without gaps"),
        ("bool_offset", "offset, length"),
        ("not_json", "malformed header"),
        ("not_object", "not a JSON object"),
        ("nan", "malformed header"),
        ("other_hash", "only xxh3-128"),
        ("other_format", "expected 'daskperiment-bundle'"),
    ],
)
def test_malformed_headers(dst, one, case, match, tmp_path):
    oid, stored = one
    n = len(stored)
    objs = [one]
    index = [[oid, 0, n]]
    upper = oid.upper()
    header: dict | bytes
    header = {
        "malformed_ref_oid": header_with(upper, objects=index),
        "malformed_object_oid": header_with(oid, objects=[[upper, 0, n]]),
        "duplicate_object": header_with(oid, objects=[[oid, 0, n], [oid, n, n]]),
        "ref_to_absent_object": header_with("0" * 32, objects=index),
        "gap": header_with(oid, objects=[[oid, 1, n]]),
        "negative_length": header_with(oid, objects=[[oid, 0, -n]]),
        "bool_offset": header_with(oid, objects=[[oid, False, n]]),
        "other_hash": header_with(oid, objects=index, hash="sha1"),
        "other_format": header_with(oid, objects=index, format="git"),
    }.get(case, b"")
    if case == "duplicate_object":
        objs = [one, one]
    raw = {
        "duplicate_ref_key": (
            '{"format":"daskperiment-bundle","version":1,"hash":"xxh3-128",'
            f'"refs":{{"x":"{oid}","x":"{oid}"}},"objects":[["{oid}",0,{n}]]}}'
        ).encode(),
        "not_json": b"\xff{not json",
        "not_object": b"[1, 2]",
        "nan": b'{"format": NaN}',
    }
    if case in raw:
        header = raw[case]
    assert_refused(dst, build({}, objs, header=header), match, tmp_path)


def test_object_bytes_not_hashing_to_their_oid(dst, one, tmp_path):
    oid, stored = one
    forged = "f" * 32
    assert_refused(dst, build({"x": forged}, [(forged, stored)]), "does not verify", tmp_path)
    assert not dst.has(forged)


def test_decompression_bomb_header_is_refused(dst, src, tmp_path):
    oid = src.put(np.zeros(1 << 20))
    stored = bytes(src.get_stored(oid))
    head = objfile.parse_header(stored)
    assert head.compression == 1  # zeros compress: a tiny payload that claims 4 EiB
    forged = objfile.pack_header(head.kind, head.compression, 2**62)
    stored = forged + stored[head.header_size :]
    assert_refused(dst, build({"x": oid}, [(oid, stored)]), "does not verify", tmp_path)


@pytest.mark.parametrize(
    "body",
    [
        b'{"$link": "not-an-oid"}',
        b"[" * 100_000 + b'"$link"' + b"]" * 100_000,
        b'{"$link": ',
    ],
    ids=["bad-link", "deeply-nested", "unterminated"],
)
def test_json_object_that_hashes_but_does_not_parse(dst, body, tmp_path):
    """Valid digest, hostile content: the link scan must fail cleanly, not crash."""
    oid = hash_chunks("json", [body])
    stored = objfile.pack_header("json", 0, len(body)) + body
    assert_refused(dst, build({"x": oid}, [(oid, stored)]), "malformed JSON", tmp_path)


def test_read_bundle_header_lists_refs_without_importing(src, bundle):
    header = read_bundle_header(bundle)
    assert header.refs == src.refs.list(PREFIX)
    assert header.total_size == bundle.stat().st_size


def test_corrupt_source_object_is_not_exported(src, tmp_path):
    refs = fill(src, 1)
    oid = src.put({"lr": 0.1, "layers": [1, 2]})
    path = tmp_path / "src" / "objects" / oid[:2] / oid[2:]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptObject, match=oid):
        export_bundle(src, tmp_path / "b", list(refs))
    assert not (tmp_path / "b").exists()


# -- S3 ----------------------------------------------------------------------------------------


@pytest.mark.s3
def test_round_trip_through_s3(src, s3_store_factory, tmp_path):
    refs = fill(src)
    remote = s3_store_factory()
    export_bundle(src, tmp_path / "b", PREFIX)
    assert import_bundle(remote, tmp_path / "b").refs_updated == sorted(refs)
    export_bundle(remote, tmp_path / "c", PREFIX)
    assert (tmp_path / "c").read_bytes() == (tmp_path / "b").read_bytes()
    assert import_bundle(remote, tmp_path / "b").objects_copied == 0


def test_format_doc_example_is_what_export_writes():
    """docs/store-format.md section 9.2 shows a real bundle, byte for byte."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "store-format.md").read_text()
    section = doc[doc.index("### 9.2 Example") : doc.index("### 9.3")]
    dump = section.split("```")[1].strip().splitlines()
    documented = bytes.fromhex("".join(line[6:54] for line in dump))
    s = store.open(store.MemoryBackend())
    s.refs.create("examples/greeting", s.put({"hello": "world"}))
    out = io.BytesIO()
    export_bundle(s, out, "examples/")
    assert out.getvalue() == documented
    assert documented[-16:] == xxhash.xxh3_128(documented[:-16]).digest()
    assert import_bundle(store.open(store.MemoryBackend()), io.BytesIO(documented)).refs_updated
