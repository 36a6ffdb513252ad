"""The object layer: put/get/has/info/iter/links/walk and store.open, on every backend."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hst

import daskperiment_store as store
import tests.hypothesis_profiles  # noqa: F401  (loads the shared "ci" profile)
from daskperiment_store import config as store_config
from daskperiment_store.store import FRESH_SECONDS, HEAD_PROBE, object_key


@pytest.fixture
def s(backend_factory) -> store.Store:
    """A fresh store on each backend (local, memory, fsspec memory://, S3 marked ``s3``)."""
    st = store.open(backend_factory())
    yield st
    st.close()


def flip_byte(st: store.Store, oid: str, offset: int = -1) -> None:
    """Damage one byte of a stored object, writing around the Store through its backend."""
    key = object_key(oid)
    data = bytearray(st.backend.get(key))
    data[offset] ^= 0x01
    st.backend.put(key, bytes(data))


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"lr": 0.1, "layers": [64, 32], "name": "run", "ok": True, "none": None},
        [1, 2.5, "x", (1, 2), float("inf")],
        b"\x00raw bytes\xff",
        np.arange(1000, dtype=np.int32).reshape(10, 100),
        np.random.default_rng(0).standard_normal(5000),
    ],
    ids=["dict", "list", "bytes", "int-array", "float-array"],
)
def test_put_get_round_trip(s, value):
    oid = s.put(value)
    assert store.is_oid(oid)
    assert oid == store.digest(value)
    got = s.get(oid)
    if isinstance(value, np.ndarray):
        assert got.dtype == value.dtype and got.shape == value.shape
        np.testing.assert_array_equal(got, value)
    else:
        assert got == value


def test_put_is_deduplicated(s):
    value = {"a": list(range(100))}
    oid = s.put(value)
    keys = sorted(s.backend.list("objects/"))
    assert s.put(value) == oid
    assert s.put({"a": list(range(100))}) == oid
    assert sorted(s.backend.list("objects/")) == keys == [object_key(oid)]


def test_reput_of_an_object_removed_behind_our_back_writes_it_again(s):
    # The in-process "known" set must not outlive the object for a fresh Store.
    oid = s.put("value")
    s.backend.delete(object_key(oid))
    other = store.Store(s.backend)
    assert other.put("value") == oid
    assert s.has(oid)


def test_put_bytes_equals_put_of_bytes(s):
    assert s.put_bytes(bytearray(b"abc")) == s.put(b"abc") == store.digest(b"abc")
    assert s.get(s.put_bytes(memoryview(b"xyz"))) == b"xyz"


def test_large_compressible_array_is_stored_compressed(s):
    value = np.zeros(1_000_000)
    oid = s.put(value)
    info = s.info(oid)
    assert info.kind == "ndarray"
    assert info.compression == "zstd"
    assert info.stored_size < info.size // 100
    np.testing.assert_array_equal(s.get(oid), value)


def test_random_data_is_stored_raw(s):
    value = np.random.default_rng(1).bytes(1 << 20)
    oid = s.put(value)
    info = s.info(oid)
    assert (info.kind, info.compression, info.size) == ("bytes", "none", 1 << 20)
    assert info.stored_size > info.size
    assert s.get(oid) == value


def test_compression_level_does_not_change_the_digest(tmp_path):
    value = {"x": "abc" * 10_000}
    a = store.open(tmp_path / "a", compression_level=1)
    b = store.open(tmp_path / "b", compression_level=19)
    assert a.put(value) == b.put(value)


def test_get_of_a_raw_array_is_writable_like_np_load(tmp_path):
    st = store.open(tmp_path / "s")
    value = np.random.default_rng(2).standard_normal(100_000)
    got = st.get(st.put(value))
    got[0] = 1.0  # np.load returns a writable array; so does the store's local fast path
    assert got[0] == 1.0


# -- has / info / iteration ----------------------------------------------------------------


def test_has_info_and_iter_oids(s):
    oids = {s.put(i) for i in range(5)}
    assert all(s.has(o) for o in oids)
    assert set(s.iter_oids()) == oids
    info = s.info(next(iter(oids)))
    assert info.kind == "json" and info.compression == "none"
    assert info.stored_size == len(s.backend.get(object_key(info.oid)))
    missing = "0" * 32
    assert not s.has(missing) and missing not in s


def test_iter_oids_skips_files_that_are_not_objects(s):
    oid = s.put(1)
    s.backend.put("objects/zz/not-an-object", b"x")
    assert list(s.iter_oids()) == [oid]


# -- errors --------------------------------------------------------------------------------


def test_unknown_oid_is_object_not_found_and_a_key_error(s):
    oid = "ab" * 16
    for call in (s.get, s.get_raw, s.info, s.links, s.get_stored):
        with pytest.raises(store.ObjectNotFound) as exc:
            call(oid)
        assert isinstance(exc.value, KeyError)
        assert exc.value.oid == oid and oid in str(exc.value)


@pytest.mark.parametrize("bad", ["", "abc", "AB" * 16, "g" * 32, "../" + "a" * 29, 12, None])
def test_malformed_oid_is_invalid_oid_and_a_value_error(s, bad):
    for call in (s.get, s.has, s.info, s.links):
        with pytest.raises(store.InvalidOid) as exc:
            call(bad)
        assert isinstance(exc.value, ValueError)


def test_corrupt_body_is_reported_with_oid_and_path(s):
    oid = s.put(np.random.default_rng(3).bytes(1000))  # incompressible: stored raw
    assert s.info(oid).compression == "none"
    flip_byte(s, oid)
    with pytest.raises(store.CorruptObject) as exc:
        s.get(oid)
    err = exc.value
    assert err.oid == oid
    assert err.path.endswith(object_key(oid))
    assert err.actual is not None and err.actual != oid
    assert oid in str(err) and object_key(oid) in str(err)


def test_corrupt_header_is_reported(s):
    oid = s.put("hello")
    flip_byte(s, oid, offset=0)  # the magic
    with pytest.raises(store.CorruptObject, match="header"):
        s.get(oid)
    with pytest.raises(store.CorruptObject):
        s.info(oid)


def test_truncated_object_is_corrupt(s):
    oid = s.put(np.arange(10_000.0))
    key = object_key(oid)
    s.backend.put(key, bytes(s.backend.get(key))[:-10])
    with pytest.raises(store.CorruptObject) as exc:
        s.get(oid)
    assert exc.value.oid == oid


def test_corrupt_compressed_payload_is_corrupt(s):
    oid = s.put(np.zeros(100_000))
    assert s.info(oid).compression == "zstd"
    flip_byte(s, oid, offset=-5)
    with pytest.raises(store.CorruptObject):
        s.get(oid)


def test_flipped_byte_on_disk_is_caught(tmp_path):
    st = store.open(tmp_path / "s")
    oid = st.put(np.arange(1000))
    path = tmp_path / "s" / object_key(oid)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x80
    os.chmod(path, 0o644)
    path.write_bytes(bytes(raw))
    with pytest.raises(store.CorruptObject) as exc:
        st.get(oid)
    assert exc.value.path == str(path) or exc.value.path.endswith(object_key(oid))
    assert str(tmp_path / "s") in str(exc.value)


def test_unencodable_value_is_encode_error(s):
    with pytest.raises(store.EncodeError):
        s.put(threading.Lock())


# -- links and walk ------------------------------------------------------------------------


def test_links_and_walk(s):
    leaf1, leaf2 = s.put(np.arange(10)), s.put("leaf")
    tree = s.put({"a": store.Link(leaf1), "b": [store.Link(leaf2), store.Link(leaf1)]})
    top = s.put({"tree": store.Link(tree), "n": 1})
    assert sorted(s.links(tree)) == sorted([leaf1, leaf2])
    assert s.links(leaf1) == []
    walked = list(s.walk([top]))
    assert len(walked) == len(set(walked)) == 4
    assert set(walked) == {top, tree, leaf1, leaf2}
    assert set(s.walk([leaf1, top, tree])) == {top, tree, leaf1, leaf2}


def test_walk_of_a_deep_chain_does_not_recurse():
    s = store.open(store.MemoryBackend())  # the walk's logic, not a backend's: one is enough
    oid = s.put("root")
    for i in range(3000):
        oid = s.put({"i": i, "next": store.Link(oid)})
    assert len(list(s.walk([oid]))) == 3001


def test_walk_reports_a_missing_link(s):
    missing = store.digest("never stored")
    parent = s.put({"x": store.Link(missing)})
    with pytest.raises(store.ObjectNotFound) as exc:
        list(s.walk([parent]))
    assert exc.value.oid == missing and parent in str(exc.value)
    seen = []
    assert list(s.walk([parent], on_missing=lambda p, o: seen.append((p, o)))) == [parent]
    assert seen == [(parent, missing)]


def test_links_of_a_large_json_object(s):
    # Larger than HEAD_PROBE when stored: read whole by a second request after the header.
    leaves = [store.digest(i) for i in range(3000)]
    pad = np.random.default_rng(4).bytes(100_000).hex()
    big = s.put({"leaves": [store.Link(o) for o in leaves], "pad": pad})
    assert s.info(big).stored_size > HEAD_PROBE
    assert s.links(big) == leaves


def test_walk_raises_on_a_corrupt_json_object(s):
    leaf = s.put("leaf")
    parent = s.put({"x": store.Link(leaf)})
    flip_byte(s, parent)
    with pytest.raises(store.CorruptObject):
        list(s.walk([parent]))


# -- stored bytes (push/pull, bundles) -----------------------------------------------------


def test_get_stored_put_stored_copies_verbatim(s, tmp_path):
    oid = s.put(np.arange(100_000))
    data = s.get_stored(oid)
    other = store.open(tmp_path / "other")
    assert other.put_stored(oid, data) is True
    assert other.put_stored(oid, data) is False
    np.testing.assert_array_equal(other.get(oid), np.arange(100_000))


def test_put_stored_refuses_damaged_bytes(s, tmp_path):
    oid = s.put("payload")
    data = bytearray(s.get_stored(oid))
    data[-1] ^= 1
    other = store.open(tmp_path / "other")
    with pytest.raises(store.CorruptObject):
        other.put_stored(oid, bytes(data))
    assert not other.has(oid)


# -- read-only -----------------------------------------------------------------------------


def test_read_only_store_refuses_writes_and_reads_fine(tmp_path):
    path = tmp_path / "s"
    oid = store.open(path).put("kept")
    ro = store.open(path, read_only=True)
    assert ro.get(oid) == "kept"
    for write in (lambda: ro.put("new"), lambda: ro.put("kept"), lambda: ro.gc(grace=0)):
        with pytest.raises(store.ReadOnlyStore) as exc:
            write()
        assert isinstance(exc.value, PermissionError)
    with pytest.raises(store.ReadOnlyStore):
        ro.refs.create("a", oid)
    assert ro.gc(grace=0, dry_run=True).dry_run  # a dry run writes nothing: allowed
    assert list(ro.iter_oids()) == [oid]


def test_read_only_open_of_a_missing_store(tmp_path):
    with pytest.raises(store.StoreNotFound):
        store.open(tmp_path / "nothing", read_only=True)
    assert not (tmp_path / "nothing").exists()


def test_writable_backend_cannot_be_opened_read_only():
    with pytest.raises(ValueError, match="read-only"):
        store.open(store.MemoryBackend(), read_only=True)


# -- open and config -----------------------------------------------------------------------


def test_open_creates_config(tmp_path):
    st = store.open(tmp_path / "s")
    raw = (tmp_path / "s" / "config").read_bytes()
    assert json.loads(raw) == {
        "format": "daskperiment-store",
        "version": 1,
        "hash": "xxh3-128",
        "compression": "zstd",
    }
    assert raw == store_config.encode_config(st.config)
    assert store.open(tmp_path / "s").config == st.config


def test_open_accepts_a_store_a_backend_and_file_url(tmp_path):
    st = store.open(tmp_path / "s")
    assert store.open(st) is st
    backend = store.MemoryBackend()
    assert store.open(backend).backend is backend
    oid = st.put("x")
    assert store.open(f"file://{tmp_path / 's'}").get(oid) == "x"


def test_open_by_url(s3_url):
    for url in (f"memory://open-by-url-{os.getpid()}", s3_url):
        st = store.open(url)
        kind = store.MemoryBackend if url.startswith("memory") else store.FsspecBackend
        assert isinstance(st.backend, kind)
        oid = st.put({"where": url})
        again = store.open(url, create=False)
        assert again.get(oid) == {"where": url}
        assert store.open(url, read_only=True).get(oid) == {"where": url}
    with pytest.raises(store.StoreNotFound):
        store.open("memory://nothing-here-" + uuid.uuid4().hex, create=False)


def test_open_missing_without_create(tmp_path):
    with pytest.raises(store.StoreNotFound) as exc:
        store.open(tmp_path / "absent", create=False)
    assert isinstance(exc.value, FileNotFoundError)
    assert "create=True" in str(exc.value)
    with pytest.raises(store.StoreNotFound):
        store.open(store.MemoryBackend(), create=False)


def write_config(path, **fields):
    path.mkdir(parents=True, exist_ok=True)
    cfg = store_config.default_config() | fields
    (path / "config").write_bytes(store_config.encode_config(cfg))


def test_newer_format_version_is_refused(tmp_path):
    write_config(tmp_path / "s", version=2)
    with pytest.raises(store.UnsupportedFormat, match="version 2.*upgrade"):
        store.open(tmp_path / "s")


def test_unknown_hash_is_refused(tmp_path):
    write_config(tmp_path / "s", hash="blake3")
    with pytest.raises(store.UnsupportedFormat, match="blake3"):
        store.open(tmp_path / "s")


@pytest.mark.parametrize(
    "content",
    [
        b"\x89PNG\r\n",
        b"[1, 2]",
        b'{"format": "zarr", "version": 3}',
        b'{"format":'
        b' "daskperiment-store", "version": "1", "hash": "xxh3-128", "compression": "zstd"}',
    ],
)
def test_foreign_config_is_refused(tmp_path, content):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "config").write_bytes(content)
    with pytest.raises(store.UnsupportedFormat):
        store.open(tmp_path / "s")


def test_directory_with_other_files_is_not_made_a_store(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("mine")
    with pytest.raises(store.UnsupportedFormat, match="notes.txt"):
        store.open(tmp_path / "s")
    assert not (tmp_path / "s" / "config").exists()


def test_a_file_is_not_a_store(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(store.UnsupportedFormat, match="file"):
        store.open(tmp_path / "f")


def test_open_rejects_bad_options(tmp_path):
    with pytest.raises(ValueError, match="durability"):
        store.open(tmp_path / "s", durability="sometimes")
    with pytest.raises(ValueError, match="compression_level"):
        store.open(tmp_path / "s", compression_level=99)


def test_fsync_durability_round_trip(tmp_path):
    st = store.open(tmp_path / "s", durability="fsync")
    oid = st.put(np.arange(1000))
    np.testing.assert_array_equal(store.open(tmp_path / "s").get(oid), np.arange(1000))


# -- gc safety: freshening -----------------------------------------------------------------


def test_reput_of_an_old_object_freshens_its_mtime(tmp_path):
    st = store.open(tmp_path / "s")
    oid = st.put("old but wanted")
    path = tmp_path / "s" / object_key(oid)
    old = os.stat(path).st_mtime - 2 * FRESH_SECONDS
    os.utime(path, (old, old))
    fresh = store.open(tmp_path / "s")  # a new process: nothing known in memory
    assert fresh.put("old but wanted") == oid
    assert os.stat(path).st_mtime > old + FRESH_SECONDS
    # and so a gc with the default grace, racing a writer about to create a ref, keeps it
    assert fresh.gc().objects_removed == []


@pytest.mark.parametrize("where", ["local", "memory"])
def test_a_new_value_is_written_without_an_existence_check(tmp_path, where, monkeypatch):
    """put(new=True), a trial's record: written straight away (no stat first on a local
    store), read back the same; no temp file left."""
    st = store.open(tmp_path / "s" if where == "local" else store.MemoryBackend())
    monkeypatch.setattr(st.backend, "stat", lambda key: pytest.fail(f"stat of {key}"))
    monkeypatch.setattr(st.backend, "exists", lambda key: pytest.fail(f"exists({key})"))
    record = {"trial_id": 7, "started": time.time()}
    oid = st.put(record, new=True)
    assert oid == store.digest(record)
    assert store.open(st.backend).get(oid) == record
    if where == "local":
        assert list(st.backend.list_temp()) == []


def test_a_new_value_that_existed_is_kept_and_freshened(tmp_path):
    """put(new=True) of an object that was there after all: the write says so, the old
    file stays as it was (same inode, same bytes) and its mtime is renewed for gc's grace,
    as put's existence check would have done; no temp file is left."""
    st = store.open(tmp_path / "s")
    oid = st.put("a record written twice")
    path = tmp_path / "s" / object_key(oid)
    old = os.stat(path).st_mtime - 2 * FRESH_SECONDS
    os.utime(path, (old, old))
    inode, data = os.stat(path).st_ino, path.read_bytes()
    fresh = store.open(tmp_path / "s")
    assert fresh.put("a record written twice", new=True) == oid
    assert os.stat(path).st_ino == inode and path.read_bytes() == data
    assert os.stat(path).st_mtime > old + FRESH_SECONDS
    assert list(fresh.backend.list_temp()) == []
    assert fresh.gc().objects_removed == []


def test_a_new_value_collected_as_it_was_found_is_written_again(tmp_path):
    """put(new=True) found the object there, and a gc removed it before it could be
    freshened: it is written again, not lost."""
    st = store.open(tmp_path / "s")
    oid = st.put("value")
    path = tmp_path / "s" / object_key(oid)
    fresh = store.open(tmp_path / "s")
    real_put_new = fresh.backend.put_new

    def found_then_collected(key, data):
        written = real_put_new(key, data)
        assert written is False
        path.unlink()  # what a concurrent gc does right after
        return written

    fresh.backend.put_new = found_then_collected  # type: ignore[method-assign]
    assert fresh.put("value", new=True) == oid
    assert path.is_file() and store.open(tmp_path / "s").get(oid) == "value"


def test_the_oldest_confirmed_objects_are_forgotten_first(tmp_path, monkeypatch):
    """A Store trusts the last KNOWN_MAX objects it confirmed (a put of one skips the write),
    forgetting the oldest first. Seen through files removed behind its back: put again, a
    trusted object stays missing, a forgotten one is written again."""
    from daskperiment_store import store as store_module

    monkeypatch.setattr(store_module, "KNOWN_MAX", 3)
    st = store.open(tmp_path / "s")
    oids = [st.put(f"value {n}") for n in range(5)]  # 0 and 1 forgotten, 2, 3, 4 trusted
    for oid in oids:
        (tmp_path / "s" / object_key(oid)).unlink()
    for n in (4, 3, 2, 1, 0):
        st.put(f"value {n}")
    present = [n for n, oid in enumerate(oids) if (tmp_path / "s" / object_key(oid)).exists()]
    assert present == [0, 1]
    # and many more than KNOWN_MAX: the newest three are the ones trusted
    more = [st.put(f"more {n}") for n in range(50)]
    assert list(st._known) == more[-3:]


# -- the format document's worked example is what the code writes ---------------------------


def hex_dump(data: bytes) -> str:
    """16 bytes a line: offset, hex in two groups of 8, printable ASCII (as in the doc)."""
    lines = []
    for i in range(0, len(data), 16):
        chunk = data[i : i + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk[:8]) + "  "
        hexes += " ".join(f"{b:02x}" for b in chunk[8:])
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{i:04x}  {hexes:<48}  |{text}|")
    return "\n".join(lines)


def test_format_doc_worked_example_matches_the_code(tmp_path):
    doc = (Path(__file__).parents[2] / "docs" / "store-format.md").read_text()
    root = tmp_path / "example"
    st = store.open(root)
    leaf = st.put("hi")
    top = st.put({"a": 1, "t": (1, 2.5), "leaf": store.Link(leaf)})
    st.refs.create("runs/1", top)
    arr = st.put(np.arange(3, dtype="<i4"))
    ref = (root / "refs" / "runs" / "1").read_bytes()
    assert ref == top.encode() + b"\n" and f"`{top}\\n`" in doc
    assert (root / "config").read_bytes().decode().strip() in doc
    for oid in (leaf, top, arr):
        data = (root / object_key(oid)).read_bytes()
        assert f"objects/{oid[:2]}/{oid[2:]}`** ({len(data)} bytes)" in doc
        assert hex_dump(data) in doc
    kind, body = st.get_raw(arr)
    assert hex_dump(bytes(body)) in doc
    # and the by-hand decoding shown there works
    snippet = doc[doc.rindex("```python") + len("```python") : doc.rindex("```")]
    snippet = snippet.replace('open("example/', f'open("{root}/')
    import xxhash
    import zstandard

    scope = {"json": json, "np": np, "xxhash": xxhash, "zstandard": zstandard}
    exec(snippet, scope)
    np.testing.assert_array_equal(scope["array"], np.arange(3))


def test_has_fresh_freshens_like_put(tmp_path):
    st = store.open(tmp_path / "s")
    oid = st.put("kept by a push")
    path = tmp_path / "s" / object_key(oid)
    old = os.stat(path).st_mtime - 2 * FRESH_SECONDS
    os.utime(path, (old, old))
    other = store.open(tmp_path / "s")
    assert other.has_fresh(oid) is True
    assert os.stat(path).st_mtime > old + FRESH_SECONDS
    assert other.has_fresh(store.digest("absent")) is False
    ro = store.open(tmp_path / "s", read_only=True)
    assert ro.has_fresh(oid) is True  # reading needs no write


@given(data=hst.data())
def test_any_damage_is_reported_as_corrupt_never_returned(data):
    st = store.open(store.MemoryBackend())
    values = [np.arange(2000.0), np.random.default_rng(7).bytes(3000), {"k": list(range(40))}]
    oid = st.put(data.draw(hst.sampled_from(values)))
    key = object_key(oid)
    raw = bytearray(st.backend.get(key))
    if data.draw(hst.booleans()):
        pos = data.draw(hst.integers(0, len(raw) - 1))
        raw[pos] ^= data.draw(hst.integers(1, 255))
    else:
        del raw[data.draw(hst.integers(0, len(raw) - 1)) :]
    st.backend.put(key, bytes(raw))
    with pytest.raises(store.CorruptObject) as exc:
        st.get(oid)
    assert exc.value.oid == oid


def test_an_object_collected_between_check_and_freshen_is_written_again(tmp_path):
    """gc may delete an old unreachable object between put's existence check and its
    refresh of the object's mtime; put must then write it again, not fail."""
    st = store.open(tmp_path / "s")
    oid = st.put("value")
    path = tmp_path / "s" / "objects" / oid[:2] / oid[2:]
    old = time.time() - 7200
    os.utime(path, (old, old))
    fresh = store.open(tmp_path / "s")  # knows nothing yet, so it checks and freshens
    real_stat = fresh.backend.stat

    def stat_then_collected(key):
        info = real_stat(key)
        path.unlink()  # what a concurrent gc does right after our stat
        return info

    fresh.backend.stat = stat_then_collected
    try:
        assert fresh.put("value") == oid
    finally:
        del fresh.backend.stat
    assert store.open(tmp_path / "s").get(oid) == "value"
