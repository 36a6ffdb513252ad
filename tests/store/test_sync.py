"""push/pull between stores: only missing objects travel, refs are never overwritten, and a
second run copies nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

import daskperiment_store as store
from daskperiment_store.errors import CorruptObject, RefConflict, RefConflicts, RefNotFound
from daskperiment_store.sync import pull, push

PREFIX = "experiments/a/trials/"


def add_trial(s: store.Store, i: int, shared: np.ndarray) -> str:
    """A trial record linking parameters, an array shared by all trials and its own array."""
    record = s.put(
        {
            "id": i,
            "params": store.Link(s.put({"lr": 0.01 * i})),
            "shared": store.Link(s.put(shared)),
            "own": store.Link(s.put(np.full(50, i))),
        }
    )
    s.refs.create(f"{PREFIX}{i}", record)
    return record


def fill(s: store.Store, trials: range) -> dict[str, str]:
    shared = np.linspace(0, 1, 500)
    return {f"{PREFIX}{i}": add_trial(s, i, shared) for i in trials}


def reachable(s: store.Store, refs: dict[str, str] | None = None) -> set[str]:
    refs = s.refs.list("") if refs is None else refs
    return set(s.walk(refs.values()))


def snapshot(s: store.Store) -> tuple[dict[str, str], set[str]]:
    return s.refs.list(""), set(s.iter_oids())


def make(kind: str, tmp_path: Path, name: str) -> store.Store:
    if kind == "local":
        return store.open(tmp_path / name)
    return store.open(store.MemoryBackend())


PAIRS = [("local", "local"), ("local", "memory"), ("memory", "local")]


@pytest.mark.parametrize("src_kind, dst_kind", PAIRS)
def test_push_copies_everything_once_then_nothing(src_kind, dst_kind, tmp_path):
    src, dst = make(src_kind, tmp_path, "src"), make(dst_kind, tmp_path, "dst")
    refs = fill(src, range(1, 6))
    objects = reachable(src)

    first = push(src, dst, PREFIX)
    assert first.objects_copied == len(objects)
    assert first.bytes_copied == sum(len(src.get_stored(o)) for o in objects)
    assert first.refs_updated == sorted(refs)
    assert dst.refs.list("") == refs
    assert set(dst.iter_oids()) == objects
    for oid in objects:
        assert bytes(dst.get_stored(oid)) == bytes(src.get_stored(oid))
    assert dst.fsck().ok

    second = push(src, dst, PREFIX)
    assert (second.objects_copied, second.bytes_copied, second.refs_updated) == (0, 0, [])
    assert second.refs_unchanged == sorted(refs)


def test_push_copies_only_what_the_destination_lacks(tmp_path):
    src, dst = make("local", tmp_path, "src"), make("local", tmp_path, "dst")
    refs = fill(src, range(1, 11))
    push(src, dst, [f"{PREFIX}1", f"{PREFIX}2"])
    already = set(dst.iter_oids())

    report = push(src, dst, PREFIX)
    assert report.objects_copied == len(reachable(src) - already)
    assert report.refs_updated == sorted(set(refs) - {f"{PREFIX}1", f"{PREFIX}2"})
    assert report.refs_unchanged == [f"{PREFIX}1", f"{PREFIX}2"]

    # A few refs into a store holding many: still recognised as present, or as conflicting.
    again = push(src, dst, [f"{PREFIX}3", f"{PREFIX}7"])
    assert (again.objects_copied, again.refs_unchanged) == (0, [f"{PREFIX}3", f"{PREFIX}7"])
    rival = make("memory", tmp_path, "rival")
    rival.refs.create(f"{PREFIX}7", rival.put("another trial 7"))
    with pytest.raises(RefConflicts, match=f"{PREFIX}7"):
        push(rival, dst, [f"{PREFIX}7"])
    assert dst.refs.get(f"{PREFIX}7") == refs[f"{PREFIX}7"]


def test_second_push_does_not_read_what_the_destination_has(tmp_path):
    """Refs the destination holds with the same oid are complete there: not walked again."""
    src, dst = make("local", tmp_path, "src"), make("local", tmp_path, "dst")
    fill(src, range(1, 4))
    push(src, dst, PREFIX)
    for path in (tmp_path / "src" / "objects").rglob("*"):
        if path.is_file():
            os.chmod(path, 0o644)
            path.write_bytes(b"unreadable")
    report = push(src, dst, PREFIX)
    assert (report.objects_copied, report.refs_updated) == (0, [])
    # A ref the destination lacks is walked (and its objects verified) even if they are known.
    src.refs.create(f"{PREFIX}9", src.refs.get(f"{PREFIX}1"))
    with pytest.raises(CorruptObject):
        push(src, dst, PREFIX)
    assert not dst.refs.has(f"{PREFIX}9")


def test_push_freshens_old_objects_it_relies_on(tmp_path):
    """An old object the destination already has gets a new mtime, so a concurrent gc's grace
    period covers it until the pushed refs make it reachable."""
    src = make("local", tmp_path, "src")
    fill(src, range(1, 3))
    shared = store.open(tmp_path / "dst").put(np.linspace(0, 1, 500))
    path = tmp_path / "dst" / "objects" / shared[:2] / shared[2:]
    two_hours_ago = time.time() - 7200
    os.utime(path, (two_hours_ago, two_hours_ago))
    report = push(src, store.open(tmp_path / "dst"), PREFIX)
    assert report.objects_copied == len(reachable(src)) - 1
    assert path.stat().st_mtime > two_hours_ago + 3600


def test_push_selects_by_prefix_or_names(tmp_path):
    src, dst = make("memory", tmp_path, "src"), make("memory", tmp_path, "dst")
    fill(src, range(1, 4))
    src.refs.create("other/thing", src.put("not pushed"))
    push(src, dst, PREFIX)
    assert not dst.refs.has("other/thing")
    assert not dst.has(src.refs.get("other/thing"))
    push(src, dst, ["other/thing"])
    assert dst.get(dst.refs.get("other/thing")) == "not pushed"
    with pytest.raises(RefNotFound):
        push(src, dst, ["other/missing"])


def test_pull_is_push_the_other_way(tmp_path):
    here, there = make("local", tmp_path, "here"), make("memory", tmp_path, "there")
    refs = fill(there, range(1, 4))
    report = pull(here, there, PREFIX)
    assert report.objects_copied == len(reachable(there))
    assert here.refs.list("") == refs
    assert pull(here, there, PREFIX).objects_copied == 0
    assert there.refs.list("") == refs


def test_conflicting_ref_refuses_the_push_and_changes_nothing(tmp_path):
    src, dst = make("local", tmp_path, "src"), make("local", tmp_path, "dst")
    refs = fill(src, range(1, 4))
    theirs = dst.put("their trial 2")
    dst.refs.create(f"{PREFIX}2", theirs)
    before = snapshot(dst)
    with pytest.raises(RefConflicts) as info:
        push(src, dst, PREFIX)
    assert info.value.conflicts == {f"{PREFIX}2": (refs[f"{PREFIX}2"], theirs)}
    assert isinstance(info.value, RefConflict)
    assert f"{PREFIX}2" in str(info.value) and "nothing was changed" in str(info.value)
    assert snapshot(dst) == before  # no object copied, trials 1 and 3 not created


def test_force_moves_conflicting_refs(tmp_path):
    src, dst = make("local", tmp_path, "src"), make("local", tmp_path, "dst")
    refs = fill(src, range(1, 4))
    dst.refs.create(f"{PREFIX}2", dst.put("their trial 2"))
    report = push(src, dst, PREFIX, force=True)
    assert report.refs_updated == sorted(refs)
    assert dst.refs.list("") == refs


def test_corrupt_source_object_stops_the_push_before_refs(tmp_path):
    src, dst = make("local", tmp_path, "src"), make("local", tmp_path, "dst")
    fill(src, range(1, 3))
    own = src.put(np.full(50, 2))
    path = tmp_path / "src" / "objects" / own[:2] / own[2:]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptObject, match=own):
        push(src, dst, PREFIX)
    assert dst.refs.list("") == {}
    assert not dst.has(own)


def test_threaded_copy_gives_the_same_result(tmp_path):
    src, dst = make("local", tmp_path, "src"), make("local", tmp_path, "dst")
    refs = fill(src, range(1, 21))
    report = push(src, dst, PREFIX, workers=4)
    assert report.objects_copied == len(reachable(src))
    assert dst.refs.list("") == refs
    assert dst.fsck().ok
    assert push(src, dst, PREFIX, workers=4).objects_copied == 0


def test_store_methods_delegate(tmp_path):
    src, dst = make("local", tmp_path, "src"), make("memory", tmp_path, "dst")
    refs = fill(src, range(1, 3))
    assert src.push(dst, PREFIX).objects_copied == len(reachable(src))
    assert dst.refs.list("") == refs
    back = make("memory", tmp_path, "back")
    assert back.pull(dst, PREFIX).refs_updated == sorted(refs)
    src.export_bundle(tmp_path / "b", PREFIX)
    assert back.import_bundle(tmp_path / "b").objects_copied == 0


@pytest.mark.s3
def test_push_and_pull_through_s3(s3_store_factory, tmp_path):
    local = make("local", tmp_path, "local")
    refs = fill(local, range(1, 6))
    remote = s3_store_factory()
    first = push(local, remote, PREFIX)
    assert first.objects_copied == len(reachable(local))
    assert push(local, remote, PREFIX).objects_copied == 0

    other = make("local", tmp_path, "other")
    pulled = pull(other, remote, PREFIX)
    assert pulled.objects_copied == first.objects_copied
    assert pulled.bytes_copied == first.bytes_copied
    assert other.refs.list("") == refs
    assert other.fsck().ok

    remote.refs.create(f"{PREFIX}9", remote.put("remote-only"))
    other.refs.create(f"{PREFIX}9", other.put("local-only"))
    with pytest.raises(RefConflicts, match=f"{PREFIX}9"):
        pull(other, remote, PREFIX)
