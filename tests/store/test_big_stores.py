"""fsck and gc of big stores: streamed (memory grows by a small amount per object, never by
a listing of everything), with progress reported as they go and drawn as a bar on request."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

import daskperiment_store as store
from daskperiment_store.progress import TerminalBar, counted
from daskperiment_store.store import object_key

REPO = Path(__file__).resolve().parents[2]


def fill(st: store.Store, groups: int, reach_every: int = 2) -> int:
    """``groups`` parents of 4 leaves each; every ``reach_every``-th parent has a ref."""
    for p in range(groups):
        leaves = [store.Link(st.put({"leaf": p * 4 + j})) for j in range(4)]
        oid = st.put({"parent": p, "children": leaves})
        if p % reach_every == 0:
            st.refs.set(f"groups/{p}", oid)
    return groups * 5


def groups_for(backend_factory, groups: int) -> int:
    """``groups`` on local and in-memory backends; a tenth of it on S3, where every object is
    a request to the moto server (the streaming and progress logic is the same)."""
    return groups // 10 if backend_factory.kind == "s3" else groups


def test_fsck_reports_progress_per_phase(backend_factory) -> None:
    st = store.open(backend_factory())
    objects = fill(st, groups_for(backend_factory, 600))
    seen: list[tuple[str, int, int | None]] = []
    report = st.fsck(progress=lambda phase, done, total: seen.append((phase, done, total)))
    assert report.ok and report.objects_checked == objects
    phases = [p for p, _, _ in seen]
    assert phases.index("objects") < phases.index("refs")
    objects_done = [d for p, d, _ in seen if p == "objects"]
    assert objects_done == sorted(objects_done) and objects_done[-1] == objects
    assert seen[-1] == ("refs", report.refs_checked, report.refs_checked)


def test_fsck_finds_a_missing_link_whatever_the_listing_order(backend_factory) -> None:
    st = store.open(backend_factory())
    fill(st, groups_for(backend_factory, 300))
    leaf = st.put({"leaf": 7})  # a leaf of parent 1
    st.backend.delete(object_key(leaf))
    report = st.fsck()
    parents = [parent for parent, child in report.missing_links if child == leaf]
    assert len(parents) == 1 and report.missing_links == [(parents[0], leaf)]
    assert not report.ok


def test_gc_reports_progress_and_collects_streaming(backend_factory) -> None:
    st = store.open(backend_factory())
    objects = fill(st, groups_for(backend_factory, 400))
    seen: list[tuple[str, int, int | None]] = []
    report = st.gc(grace=0, progress=lambda *a: seen.append(a))
    assert len(report.objects_removed) == objects // 2
    assert report.objects_kept == objects // 2
    assert [d for p, d, _ in seen if p == "mark"][-1] == objects // 2
    assert [d for p, d, _ in seen if p == "sweep"][-1] == objects
    assert st.fsck().ok
    assert len(list(st.iter_oids())) == objects // 2


def test_the_total_is_estimated_from_the_shards_seen() -> None:
    keys = [f"objects/{shard:02x}/{i:030x}" for shard in range(256) for i in range(40)]
    seen: list[tuple[str, int, int | None]] = []
    assert list(counted(keys, "objects", lambda *a: seen.append(a), every=100)) == keys
    halfway = next(total for _, done, total in seen if done == 5_100)
    assert abs(halfway - len(keys)) / len(keys) < 0.05
    assert seen[-1] == ("objects", len(keys), len(keys))


def test_the_bar_draws_one_line_per_phase() -> None:
    out = io.StringIO()
    bar = TerminalBar("fsck s", out, interval=0)
    for done in range(0, 1001, 250):
        bar("objects", done, 1000 if done else None)
    bar("refs", 3, 3)
    bar.close()
    lines = out.getvalue().split("\n")
    assert "100% [####################] 1,000/1,000" in lines[0]
    assert "refs" in lines[1] and "3/3" in lines[1]
    assert lines[2] == ""


def peak_bytes_of_fsck(root: Path) -> int:
    st = store.open(str(root), create=False)
    tracemalloc.start()
    try:
        st.fsck()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_fsck_memory_grows_by_a_small_amount_per_object(tmp_path: Path) -> None:
    small, big = tmp_path / "small", tmp_path / "big"
    fill(store.open(str(small), create=True), 500)
    fill(store.open(str(big), create=True), 2500)
    per_object = (peak_bytes_of_fsck(big) - peak_bytes_of_fsck(small)) / (2500 * 5 - 500 * 5)
    # the oid in the set of present objects, and links not yet resolved: ~0.3 KB, not the
    # listing of every key plus every link list the old fsck held
    assert per_object < 400, per_object


def test_cli_draws_the_bar_only_when_asked_or_on_a_terminal(tmp_path: Path) -> None:
    root = tmp_path / "s"
    fill(store.open(str(root), create=True), 300)
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "daskperiment", "--store", str(root), *args]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done

    assert run("fsck").stderr == ""
    asked = run("fsck", "--progress")
    assert "objects 100% [####################] 1,500/1,500" in asked.stderr
    assert "checked 1500 objects" in asked.stdout
    swept = run("gc", "--dry-run", "--progress").stderr
    assert "sweep   100%" in swept and "mark" in swept


def test_push_goes_in_batches_and_an_interrupted_push_keeps_finished_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from daskperiment_store import sync

    monkeypatch.setattr(sync, "REF_BATCH", 10)
    src = store.open(store.MemoryBackend())
    dst = store.open(store.MemoryBackend())
    shared = store.Link(src.put({"code": "shared by every trial"}))
    leaves = {}
    for n in range(50):
        leaves[n] = src.put({"leaf": n})
        top = src.put({"trial": n, "leaf": store.Link(leaves[n]), "code": shared})
        src.refs.create(f"trials/{n:02d}", top)
    lost = bytes(src.backend.get(object_key(leaves[35])))
    src.backend.delete(object_key(leaves[35]))
    with pytest.raises(store.errors.ObjectNotFound):
        src.push(dst)
    # batches 0-9, 10-19, 20-29 finished: their refs and objects are there, nothing dangles
    assert dst.refs.names("trials/") == [f"trials/{n:02d}" for n in range(30)]
    assert dst.fsck().ok
    src.backend.put(object_key(leaves[35]), lost)
    report = src.push(dst)
    assert report.refs_updated == [f"trials/{n:02d}" for n in range(30, 50)]
    assert len(report.refs_unchanged) == 30
    assert report.objects_copied == 40  # 20 leaves, 20 tops: the shared code was there
    assert dst.fsck().ok
