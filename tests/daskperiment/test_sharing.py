"""Sharing trials: bundles, push and pull keep trials exactly; conflicts are refused with
nothing changed; re-importing and re-pushing change nothing; hostile bundles are refused."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash

import daskperiment
import daskperiment_store as store
from daskperiment import puritylog, sharing
from daskperiment.errors import ExperimentNotFound, TrialNotFound
from daskperiment.sharing import SharingError


def make_experiment(location: Any, experiment_id: str = "share_pj", n: int = 3) -> Any:
    """An experiment with ``n`` trials: a persisted array (trials 1 and 2 alike), metrics."""
    ex = daskperiment.Experiment(experiment_id, backend=location)
    a, b = ex.parameter("a"), ex.parameter("b")

    @ex.persist
    def prepare_data(a, b):
        return np.full(1000, a + b, dtype="float64")

    @ex.result
    def calculate_score(data):
        for i in range(5):
            ex.save_metric("loss", epoch=i, value=float(data[0]) / (i + 1))
        return float(data.sum())

    s = calculate_score(prepare_data(a, b))
    for i in range(1, n + 1):
        ex.set_parameters(a=1, b=2 if i < 3 else i)
        s.compute(seed=i)
    ex._flush_index()  # its purity refs and history index, as when its process exits
    return ex


def files_of(path: Path) -> dict[str, bytes]:
    """Every file of a local store (temp and lock files aside), to show nothing changed."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.relative_to(path).parts[0] not in ("tmp", "locks")
    }


def same_trial(ex_a: Any, ex_b: Any, trial_id: int) -> None:
    """The trial is the same on both sides: record, code, metrics, persisted output."""
    ra, rb = ex_a.get_trial(trial_id), ex_b.get_trial(trial_id)
    for r in (ra, rb):
        r.pop("environment_summary", None)
        r.pop("experiment", None)
        r.pop("origin", None)  # where the copy came from: only the receiver has one
    assert ra == rb
    assert ex_a.get_code(trial_id) == ex_b.get_code(trial_id)
    assert ex_a.load_metric("loss", trial_id).equals(ex_b.load_metric("loss", trial_id))
    np.testing.assert_array_equal(
        ex_a.get_persisted("prepare_data", trial_id), ex_b.get_persisted("prepare_data", trial_id)
    )


def reader(path: Any, experiment_id: str = "share_pj") -> Any:
    st = store.open(path, create=False) if not isinstance(path, store.Store) else path
    return daskperiment.Experiment(experiment_id, backend=st)


# ---------------------------------------------------------------------------------------
# Bundles
# ---------------------------------------------------------------------------------------


def test_export_import_keeps_trials_exactly(tmp_path: Path) -> None:
    ex = make_experiment(tmp_path / "src")
    report = sharing.export_trials(ex.store, ex.id, tmp_path / "t.dpb")
    assert report.trials_added == [1, 2, 3] and report.objects_copied > 0
    imported = daskperiment.import_bundle(tmp_path / "t.dpb", backend=tmp_path / "dst")
    assert imported.trials_added == [1, 2, 3] and imported.experiment == "share_pj"
    dst = store.open(tmp_path / "dst", create=False)
    for t in (1, 2, 3):  # same record digests
        name = f"experiments/share_pj/trials/{t}"
        assert dst.refs.get(name) == ex.store.refs.get(name)
    copy = reader(dst)
    for t in (1, 2, 3):
        same_trial(ex, copy, t)
    assert list(copy.get_history()["b"]) == [2, 2, 3]


def test_export_of_chosen_trials(tmp_path: Path) -> None:
    ex = make_experiment(tmp_path / "src")
    report = sharing.export_trials(ex.store, ex.id, tmp_path / "t.dpb", trials=["3", 1])
    assert report.trials_added == [1, 3]
    daskperiment.import_bundle(tmp_path / "t.dpb", backend=tmp_path / "dst")
    assert sorted(sharing.trial_refs(store.open(tmp_path / "dst"), "share_pj")) == [1, 3]
    with pytest.raises(TrialNotFound, match="trial 7 not found"):
        sharing.export_trials(ex.store, ex.id, tmp_path / "u.dpb", trials=[7])
    with pytest.raises(SharingError, match="positive integers"):
        sharing.export_trials(ex.store, ex.id, tmp_path / "u.dpb", trials=[0])
    assert not (tmp_path / "u.dpb").exists()


def test_default_backend_is_the_experiment_directory(tmp_path: Path) -> None:
    ex = make_experiment(tmp_path / "src", n=1)
    sharing.export_trials(ex.store, ex.id, tmp_path / "t.dpb")
    report = daskperiment.import_bundle(tmp_path / "t.dpb")  # cwd is tmp_path
    assert report.destination == "daskperiment_cache/share_pj"
    assert (tmp_path / "daskperiment_cache" / "share_pj" / "config").is_file()


def test_reimport_changes_nothing(tmp_path: Path) -> None:
    ex = make_experiment(tmp_path / "src")
    sharing.export_trials(ex.store, ex.id, tmp_path / "t.dpb")
    daskperiment.import_bundle(tmp_path / "t.dpb", backend=tmp_path / "dst")
    before = files_of(tmp_path / "dst")
    again = daskperiment.import_bundle(tmp_path / "t.dpb", backend=tmp_path / "dst")
    assert again.trials_added == [] and again.trials_unchanged == [1, 2, 3]
    assert again.objects_copied == 0 and again.bytes_copied == 0
    assert files_of(tmp_path / "dst") == before


def test_taken_numbers_are_renumbered_on_import(tmp_path: Path) -> None:
    ex = make_experiment(tmp_path / "src")
    sharing.export_trials(ex.store, ex.id, tmp_path / "t.dpb")
    mine = make_experiment(tmp_path / "dst", n=2)  # trials 1, 2 exist there with other records
    mine_records = [mine.store.refs.get(f"experiments/share_pj/trials/{n}") for n in (1, 2)]
    report = daskperiment.import_bundle(tmp_path / "t.dpb", backend=tmp_path / "dst")
    assert report.trials_added == [3, 4, 5] and report.renumbered == {1: 3, 2: 4, 3: 5}
    assert "renumbered 1->3, 2->4, 3->5" in str(report)
    dst = store.open(tmp_path / "dst", create=False)
    assert [dst.refs.get(f"experiments/share_pj/trials/{n}") for n in (1, 2)] == mine_records
    theirs = reader(dst)
    assert list(theirs.get_history().index) == [1, 2, 3, 4, 5]
    arrived = theirs.get_trial(5)
    assert arrived["id"] == 5 and arrived["origin"]["number"] == 3
    assert arrived["global_id"] == ex.get_trial(3)["global_id"]
    np.testing.assert_array_equal(theirs.get_persisted("prepare_data", 5), np.full(1000, 4.0))
    again = daskperiment.import_bundle(tmp_path / "t.dpb", backend=tmp_path / "dst")
    assert again.trials_added == [] and again.trials_unchanged == [1, 2, 3]
    assert again.objects_copied == 0


def test_import_under_a_new_id_resolves_the_conflict(tmp_path: Path) -> None:
    ex = make_experiment(tmp_path / "src")
    sharing.export_trials(ex.store, ex.id, tmp_path / "t.dpb")
    make_experiment(tmp_path / "dst", n=2)
    report = daskperiment.import_bundle(tmp_path / "t.dpb", id="theirs", backend=tmp_path / "dst")
    assert report.experiment == "theirs" and report.trials_added == [1, 2, 3]
    dst = store.open(tmp_path / "dst", create=False)
    # records are kept byte for byte: same oids under the new name
    assert dst.refs.get("experiments/theirs/trials/3") == ex.store.refs.get(
        "experiments/share_pj/trials/3"
    )
    theirs = reader(dst, "theirs")
    assert list(theirs.get_history()["b"]) == [2, 2, 3]
    np.testing.assert_array_equal(theirs.get_persisted("prepare_data", 3), np.full(1000, 4.0))
    assert {e["id"] for e in daskperiment.list_experiments(dst)} == {"share_pj", "theirs"}
    with pytest.raises(ValueError, match="Experiment ID must be"):
        daskperiment.import_bundle(tmp_path / "t.dpb", id="no/slash", backend=tmp_path / "dst")


def test_arrival_derives_purity_entries_and_history_index(tmp_path: Path) -> None:
    ex = make_experiment(tmp_path / "src")
    sharing.export_trials(ex.store, ex.id, tmp_path / "t.dpb")
    dst = store.open(tmp_path / "dst")
    # The receiver's own observation for one input is kept, never overwritten.
    src_purity = puritylog.entries(ex.store, "share_pj")
    kept = sorted(src_purity)[0]
    puritylog.record(dst, "share_pj", [puritylog.Entry(*kept, "ab" * 16, 1, None)])
    daskperiment.import_bundle(tmp_path / "t.dpb", backend=dst)
    got = puritylog.entries(dst, "share_pj")
    assert set(got) == set(src_purity)
    assert got[kept].output == "ab" * 16
    assert all(
        (got[k].output, got[k].record) == (src_purity[k].output, src_purity[k].record)
        for k in got
        if k != kept
    )
    assert len(dst.refs.names("experiments/share_pj/purity-log/")) == 2  # mine, and one batch
    assert dst.refs.has("experiments/share_pj/index")


def test_bundles_of_other_refs_or_several_experiments_are_refused(tmp_path: Path) -> None:
    ex = make_experiment(tmp_path / "src", n=1)
    other = make_experiment(tmp_path / "src", "other_pj", n=1)
    assert other.store.url == ex.store.url
    ex.store.export_bundle(tmp_path / "two.dpb", "experiments/")
    with pytest.raises(SharingError, match="not trials"):
        daskperiment.import_bundle(tmp_path / "two.dpb", backend=tmp_path / "dst")
    ex.store.export_bundle(
        tmp_path / "both.dpb",
        ["experiments/share_pj/trials/1", "experiments/other_pj/trials/1"],
    )
    with pytest.raises(SharingError, match="2 experiments"):
        daskperiment.import_bundle(tmp_path / "both.dpb", backend=tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


def hostile_bundle(refs: dict[str, str], objects: list[tuple[str, bytes]]) -> bytes:
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


@pytest.mark.parametrize(
    "name", ["../../evil", "experiments/x/trials/../../../evil", "/etc/passwd"]
)
def test_path_traversal_ref_names_are_refused(tmp_path: Path, name: str) -> None:
    src = store.open(tmp_path / "src")
    oid = src.put({"status": "success"})
    path = tmp_path / "evil.dpb"
    path.write_bytes(hostile_bundle({name: oid}, [(oid, bytes(src.get_stored(oid)))]))
    with pytest.raises(store.errors.BundleError, match="unsafe ref name"):
        daskperiment.import_bundle(path, backend=tmp_path / "dst")
    assert not (tmp_path / "evil").exists() and not (tmp_path / "dst").exists()


def test_truncated_and_tampered_bundles_are_refused(tmp_path: Path) -> None:
    ex = make_experiment(tmp_path / "src", n=1)
    sharing.export_trials(ex.store, ex.id, tmp_path / "t.dpb")
    data = (tmp_path / "t.dpb").read_bytes()
    (tmp_path / "short.dpb").write_bytes(data[: len(data) // 2])
    with pytest.raises(store.errors.BundleError, match="truncated"):
        daskperiment.import_bundle(tmp_path / "short.dpb", backend=tmp_path / "dst")
    tampered = bytearray(data)
    tampered[-40] ^= 0xFF  # inside the last object record
    (tmp_path / "bad.dpb").write_bytes(bytes(tampered))
    with pytest.raises(store.errors.BundleError):
        daskperiment.import_bundle(tmp_path / "bad.dpb", backend=tmp_path / "dst")
    dst = store.open(tmp_path / "dst", create=False)
    assert dst.refs.list("") == {}


# ---------------------------------------------------------------------------------------
# push and pull
# ---------------------------------------------------------------------------------------


def test_push_copies_missing_objects_once_and_second_push_nothing(tmp_path: Path) -> None:
    ex = make_experiment(tmp_path / "src")
    first = sharing.push_trials(ex.store, ex.id, str(tmp_path / "dst"))
    dst = store.open(tmp_path / "dst", create=False)
    assert first.trials_added == [1, 2, 3]
    reachable = set(dst.walk(dst.refs.list("experiments/share_pj/trials/").values()))
    assert first.objects_copied == len(reachable)  # trials 1 and 2 share their array: once
    assert first.bytes_copied == sum(dst.info(o).stored_size for o in reachable)
    before = files_of(tmp_path / "dst")
    second = sharing.push_trials(ex.store, ex.id, str(tmp_path / "dst"))
    assert (second.objects_copied, second.bytes_copied, second.trials_added) == (0, 0, [])
    assert second.trials_unchanged == [1, 2, 3]
    assert files_of(tmp_path / "dst") == before
    same_trial(ex, reader(dst), 3)


def test_pull_brings_new_trials_only(tmp_path: Path) -> None:
    ex = make_experiment(tmp_path / "src", n=2)
    sharing.push_trials(ex.store, ex.id, str(tmp_path / "team"))
    mine = store.open(tmp_path / "mine")
    got = sharing.pull_trials(mine, "share_pj", str(tmp_path / "team"))
    assert got.trials_added == [1, 2]
    again = sharing.pull_trials(mine, "share_pj", str(tmp_path / "team"))
    assert again.trials_added == [] and again.objects_copied == 0
    same_trial(ex, reader(mine), 2)
    with pytest.raises(ExperimentNotFound, match="nope"):
        sharing.pull_trials(mine, "nope", str(tmp_path / "team"))


def test_push_renumbers_trials_whose_number_is_taken(tmp_path: Path) -> None:
    ex = make_experiment(tmp_path / "src", n=2)
    other = make_experiment(tmp_path / "other", n=1)
    kept = other.store.refs.get("experiments/share_pj/trials/1")
    report = sharing.push_trials(ex.store, ex.id, str(tmp_path / "other"))
    assert report.trials_added == [2, 3] and report.renumbered == {1: 2, 2: 3}
    assert other.store.refs.get("experiments/share_pj/trials/1") == kept
    before = files_of(tmp_path / "other")
    again = sharing.push_trials(ex.store, ex.id, str(tmp_path / "other"))
    assert again.trials_added == [] and again.objects_copied == 0
    assert files_of(tmp_path / "other") == before


def test_push_into_a_directory_of_stores(tmp_path: Path) -> None:
    ex = make_experiment(tmp_path / "src", n=1)
    other = make_experiment(tmp_path / "team" / "other_pj", "other_pj", n=1)
    assert other.store is not None
    report = sharing.push_trials(ex.store, ex.id, str(tmp_path / "team"))
    assert report.destination == str(tmp_path / "team" / "share_pj")


def test_running_trials_are_not_shared(tmp_path: Path) -> None:
    ex = make_experiment(tmp_path / "src", n=1)
    record = dict(ex.store.get(ex.store.refs.get("experiments/share_pj/trials/1")))
    record.update(trial_id=2, status="running", process={"host": "elsewhere", "pid": 1})
    ex.store.refs.create("experiments/share_pj/trials/2", ex.store.put(record))
    report = sharing.push_trials(ex.store, ex.id, str(tmp_path / "dst"))
    assert report.trials_added == [1] and report.trials_skipped == [2]
    assert "1 trial not shared (running or interrupted)" in str(report)
    with pytest.raises(SharingError, match="running or were interrupted"):
        sharing.export_trials(ex.store, ex.id, tmp_path / "t.dpb", trials=[2])


def test_push_and_pull_through_memory_urls(tmp_path: Path) -> None:
    ex = make_experiment(tmp_path / "src", n=2)
    url = f"memory://share-{tmp_path.name}/team"
    assert sharing.push_trials(ex.store, ex.id, url).trials_added == [1, 2]
    back = store.open(tmp_path / "back")
    assert sharing.pull_trials(back, ex.id, url).trials_added == [1, 2]
    same_trial(ex, reader(back), 2)


def test_push_and_pull_local_and_s3(tmp_path: Path, s3_url_factory) -> None:
    ex = make_experiment(tmp_path / "src", n=3)
    url = s3_url_factory()
    first = sharing.push_trials(ex.store, ex.id, url)
    assert first.trials_added == [1, 2, 3] and first.objects_copied > 0
    second = sharing.push_trials(ex.store, ex.id, url)
    assert (second.objects_copied, second.bytes_copied) == (0, 0)
    back = store.open(tmp_path / "back")
    pulled = sharing.pull_trials(back, ex.id, url)
    assert pulled.trials_added == [1, 2, 3]
    assert pulled.objects_copied == first.objects_copied
    same_trial(ex, reader(back), 3)
    # and S3 -> S3 by URL through a bundle made from the S3 store
    remote = store.open(url, create=False)
    sharing.export_trials(remote, ex.id, tmp_path / "s3.dpb", trials=[2])
    imported = daskperiment.import_bundle(tmp_path / "s3.dpb", id="copy", backend=s3_url_factory())
    assert imported.trials_added == [2]


# ---------------------------------------------------------------------------------------
# The Experiment methods (thin delegations to this module)
# ---------------------------------------------------------------------------------------


def test_experiment_methods(tmp_path: Path) -> None:
    ex = make_experiment(tmp_path / "src", n=2)
    if not all(hasattr(ex, m) for m in ("export", "push", "pull", "load")):
        pytest.fail("Experiment.export/push/pull/load are not there yet (see REQUESTS.md)")
    assert ex.export(tmp_path / "t.dpb").trials_added == [1, 2]
    assert ex.push(str(tmp_path / "team")).trials_added == [1, 2]
    other = daskperiment.Experiment("share_pj", backend=tmp_path / "other")
    assert other.pull(str(tmp_path / "team")).trials_added == [1, 2]
    assert other.trial_id == 2
    oid = ex.get_trial(1)["steps"]["prepare_data"]["persisted"]
    np.testing.assert_array_equal(other.load(oid), np.full(1000, 3.0))


def test_load_object(tmp_path: Path) -> None:
    ex = make_experiment(tmp_path / "src", n=1)
    oid = ex.get_trial(1)["steps"]["prepare_data"]["persisted"]
    np.testing.assert_array_equal(sharing.load_object(ex.store, oid), np.full(1000, 3.0))
    with pytest.raises(store.errors.ObjectNotFound):
        sharing.load_object(None, oid)
