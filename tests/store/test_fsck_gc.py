"""fsck finds damage, dangling refs, missing links and temp files; gc collects what no ref
reaches, never anything younger than its grace period."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from hypothesis import strategies as hst
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

import daskperiment_store as store
import tests.hypothesis_profiles  # noqa: F401  (loads the shared "ci" profile)
from daskperiment_store.store import object_key


@pytest.fixture
def s(backend_factory) -> store.Store:
    st = store.open(backend_factory())
    yield st
    st.close()


def damage(st: store.Store, oid: str) -> None:
    key = object_key(oid)
    data = bytearray(st.backend.get(key))
    data[-1] ^= 0xFF
    st.backend.put(key, bytes(data))


def make_tree(st: store.Store) -> dict[str, str]:
    """A small reachable graph: top -> tree -> (array, text)."""
    array = st.put(np.arange(1000))
    text = st.put("leaf text")
    tree = st.put({"array": store.Link(array), "text": store.Link(text)})
    top = st.put({"tree": store.Link(tree), "n": 1})
    st.refs.create("runs/1", top)
    return {"array": array, "text": text, "tree": tree, "top": top}


# -- fsck ----------------------------------------------------------------------------------


def test_fsck_of_a_healthy_store(s):
    make_tree(s)
    s.put("unreachable but fine")
    report = s.fsck()
    assert report.ok
    assert report.objects_checked == 5 and report.refs_checked == 1
    assert report.corrupt_objects == report.bad_refs == report.missing_links == []
    assert report.temp_files == []
    assert "ok" in report.summary()


def test_fsck_reports_a_corrupt_object(s):
    oids = make_tree(s)
    damage(s, oids["text"])
    report = s.fsck()
    assert not report.ok
    assert [(o, k) for o, k, _ in report.corrupt_objects] == [
        (oids["text"], object_key(oids["text"]))
    ]
    assert report.objects_checked == 4
    assert oids["text"] in report.summary()


def test_fsck_reports_a_damaged_header_and_a_foreign_file(s):
    oid = s.put("x")
    key = object_key(oid)
    s.backend.put(key, b"not an object file at all")
    s.backend.put("objects/ab/junk", b"?")
    reasons = {k: r for _, k, r in s.fsck().corrupt_objects}
    assert "header" in reasons[key]
    assert "not an object" in reasons["objects/ab/junk"]


def test_fsck_reports_refs_to_missing_objects_and_malformed_refs(s):
    oids = make_tree(s)
    ghost = store.digest("never stored")
    s.refs.create("dangling", ghost)
    s.backend.put("refs/garbled", b"hello\n")
    report = s.fsck()
    assert not report.ok
    assert dict(report.bad_refs).keys() == {"dangling", "garbled"}
    assert ghost in dict(report.bad_refs)["dangling"]
    assert report.refs_checked == 3
    assert s.get(oids["top"])  # nothing was changed


def test_fsck_reports_missing_links(s):
    oids = make_tree(s)
    s.backend.delete(object_key(oids["text"]))
    report = s.fsck()
    assert report.missing_links == [(oids["tree"], oids["text"])]
    assert not report.ok


@pytest.mark.parametrize("key", ["\\u0024link", "$\\u006cink", "\\u0024\\u006C\\u0069nk"])
def test_a_link_spelled_with_escapes_is_followed_everywhere(s, tmp_path, key):
    """A JSON body may spell the "$link" key with \\uXXXX escapes (decoding reads the same
    key, so reading the object gives a Link): fsck, gc and bundles follow it too."""
    text = s.put("reached through an escaped key")
    body = ('{"a":{"' + key + '":"' + text + '"}}').encode()
    top = s.put_encoded(store.Encoded("json", [body], len(body)))
    assert s.get(top) == {"a": store.Link(text)}
    assert s.links(top) == [text]
    s.refs.create("runs/escaped", top)
    assert s.fsck().ok
    s.gc(grace=0)
    assert s.get(text) == "reached through an escaped key"  # kept: reachable
    s.export_bundle(tmp_path / "b.dpb", "runs/")
    dst = store.open(tmp_path / "dst")
    dst.import_bundle(tmp_path / "b.dpb")
    assert dst.get(text) == "reached through an escaped key"
    s.backend.delete(object_key(text))
    assert s.fsck().missing_links == [(top, text)]


# -- gc ------------------------------------------------------------------------------------


def test_gc_keeps_everything_reachable_and_collects_the_rest(s):
    oids = make_tree(s)
    junk = [s.put({"junk": i}) for i in range(3)]
    sizes = {o: s.info(o).stored_size for o in junk}

    dry = s.gc(grace=0, dry_run=True)
    assert dry.dry_run and sorted(dry.objects_removed) == sorted(junk)
    assert dry.bytes_freed == sum(sizes.values())
    assert all(s.has(o) for o in junk)  # a dry run deletes nothing

    report = s.gc(grace=0)
    assert not report.dry_run
    assert sorted(report.objects_removed) == sorted(junk)
    assert report.objects_kept == 4
    assert report.bytes_freed == sum(sizes.values())
    assert not any(s.has(o) for o in junk)
    assert set(s.iter_oids()) == set(oids.values())
    assert s.fsck().ok
    assert s.gc(grace=0).objects_removed == []  # nothing left to collect


def test_gc_never_touches_young_objects(s):
    make_tree(s)
    young = s.put({"written": "just now"})
    report = s.gc()  # default grace: an hour
    assert report.objects_removed == [] and report.bytes_freed == 0
    assert s.has(young)
    assert report.objects_kept == 5


def test_gc_after_deleting_a_ref(s):
    oids = make_tree(s)
    s.refs.delete("runs/1")
    assert sorted(s.gc(grace=0).objects_removed) == sorted(oids.values())
    assert list(s.iter_oids()) == []


def test_gc_shared_objects_survive_while_any_ref_reaches_them(s):
    oids = make_tree(s)
    other = s.put({"also": store.Link(oids["array"])})
    s.refs.create("runs/2", other)
    s.refs.delete("runs/1")
    s.gc(grace=0)
    assert set(s.iter_oids()) == {other, oids["array"]}
    np.testing.assert_array_equal(s.get(oids["array"]), np.arange(1000))


def test_gc_tolerates_a_dangling_ref(s):
    make_tree(s)
    s.refs.create("dangling", store.digest("never stored"))
    junk = s.put("junk")
    assert s.gc(grace=0).objects_removed == [junk]


def test_gc_stops_before_deleting_when_a_reachable_json_object_is_corrupt(s):
    oids = make_tree(s)
    junk = s.put("junk")
    damage(s, oids["tree"])
    with pytest.raises(store.CorruptObject) as exc:
        s.gc(grace=0)
    assert exc.value.oid == oids["tree"]
    assert s.has(junk) and s.has(oids["text"])


def test_gc_rejects_a_negative_grace(s):
    with pytest.raises(ValueError, match="grace"):
        s.gc(grace=-1)


def test_gc_grace_uses_object_age(tmp_path):
    st = store.open(tmp_path / "s")
    old, new = st.put("old"), st.put("new")
    past = time.time() - 7200
    os.utime(tmp_path / "s" / object_key(old), (past, past))
    report = st.gc(grace=3600)
    assert report.objects_removed == [old]
    assert st.has(new)


def test_gc_removes_old_temp_files_only(tmp_path):
    st = store.open(tmp_path / "s")
    tmp = tmp_path / "s" / "tmp"
    tmp.mkdir(exist_ok=True)
    (tmp / "111-old.tmp").write_bytes(b"x" * 100)
    (tmp / "222-new.tmp").write_bytes(b"y" * 10)
    past = time.time() - 7200
    os.utime(tmp / "111-old.tmp", (past, past))
    assert len(st.fsck().temp_files) == 2
    assert st.fsck().ok  # temp files alone are not damage
    report = st.gc(grace=3600)
    assert len(report.temp_removed) == 1 and "111-old" in report.temp_removed[0]
    assert report.bytes_freed == 100
    assert (tmp / "222-new.tmp").exists() and not (tmp / "111-old.tmp").exists()


def test_gc_stops_on_a_garbled_ref(s):
    # What a garbled ref pointed at is unknown, so nothing may be deleted until it is fixed.
    make_tree(s)
    junk = s.put("junk")
    s.backend.put("refs/garbled", b"hello\n")
    with pytest.raises(store.StoreError, match="garbled"):
        s.gc(grace=0)
    assert s.has(junk)


# -- a model-based check of put/refs/gc (Hypothesis state machine) -------------------------


LEAVES = hst.one_of(
    hst.integers(), hst.text(max_size=8), hst.floats(allow_nan=True), hst.booleans(), hst.none()
)


class StoreModel(RuleBasedStateMachine):
    """Objects linking to objects, refs naming some; gc(grace=0) must keep exactly what the
    refs reach (computed here from the model) and every kept object must read back equal."""

    objects = Bundle("objects")

    def __init__(self) -> None:
        super().__init__()
        self.st = store.open(store.MemoryBackend())
        self.values: dict[str, object] = {}  # oid -> value
        self.links: dict[str, list[str]] = {}
        self.refs: dict[str, str] = {}

    @rule(target=objects, value=LEAVES)
    def put_leaf(self, value):
        oid = self.st.put(value)
        self.values[oid], self.links[oid] = value, []
        return oid

    @rule(target=objects, children=hst.lists(objects, max_size=3), tag=hst.integers(0, 3))
    def put_tree(self, children, tag):
        live = [c for c in children if c in self.values]
        value = {"tag": tag, "kids": [store.Link(c) for c in live]}
        oid = self.st.put(value)
        self.values[oid], self.links[oid] = value, live
        return oid

    @rule(name=hst.sampled_from(["a", "b", "c/d"]), oid=objects)
    def set_ref(self, name, oid):
        if oid in self.values:
            self.st.refs.set(name, oid)
            self.refs[name] = oid

    @precondition(lambda self: self.refs)
    @rule(data=hst.data())
    def delete_ref(self, data):
        name = data.draw(hst.sampled_from(sorted(self.refs)))
        self.st.refs.delete(name)
        del self.refs[name]

    @rule()
    def collect(self):
        reachable, stack = set(), list(self.refs.values())
        while stack:
            oid = stack.pop()
            if oid not in reachable:
                reachable.add(oid)
                stack.extend(self.links[oid])
        report = self.st.gc(grace=0)
        assert set(report.objects_removed) == set(self.values) - reachable
        for oid in report.objects_removed:
            del self.values[oid], self.links[oid]

    @invariant()
    def store_matches_model(self):
        assert set(self.st.iter_oids()) == set(self.values)
        for oid, value in self.values.items():
            got = self.st.get(oid)
            assert got == value or (got != got and value != value)  # nan != nan

    def teardown(self) -> None:
        assert self.st.fsck().ok


TestStoreModel = StoreModel.TestCase


def test_gc_through_one_store_is_seen_by_other_stores_of_the_process(tmp_path):
    """A Store remembers objects it saw; gc through another Store on the same directory must
    make it forget the ones it deletes, or its next put would skip the write and a new ref
    would name a missing object."""
    from daskperiment_store import Link

    first = store.open(tmp_path / "s")
    first.refs.create("t/1", first.put({"in": Link(first.put("big input"))}))
    first.refs.delete("t/1")
    second = store.open(tmp_path / "s")
    assert len(second.gc(grace=0).objects_removed) == 2
    first.refs.create("t/2", first.put({"in": Link(first.put("big input"))}))
    assert first.get(first.get(first.refs.get("t/2"))["in"].oid) == "big input"
    assert second.fsck().ok
