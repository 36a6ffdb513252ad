"""Teams: two people share one experiment through a common store (local and S3) without
conflicts; trials keep their global id and origin; tags and notes merge; archive, delete and gc;
the searchable log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import daskperiment
import daskperiment_store as store
from daskperiment import sharing
from daskperiment.errors import TrialNotFound
from daskperiment.identity import AmbiguousTrial
from daskperiment.teams import SearchError, UnknownTag

ROOT = Path(__file__).resolve().parents[2]
EXP = "team_pj"


def make(location: Any, n: int = 3, offset: int = 0) -> Any:
    """An experiment with ``n`` trials (a persisted array shared by trials with equal a)."""
    ex = daskperiment.Experiment(EXP, backend=location)
    a = ex.parameter("a")

    @ex.persist
    def data(a):
        return np.full(100, a, dtype="float64")

    @ex.result
    def score(d):
        return float(d.sum())

    s = score(data(a))
    for i in range(1, n + 1):
        ex.set_parameters(a=offset + (1 if i < 3 else i))
        s.compute(seed=i)
    return ex


def opened(location: Any) -> Any:
    st = store.open(location, create=False) if not isinstance(location, store.Store) else location
    return daskperiment.Experiment(EXP, backend=st)


def cli(*args: str, cwd: Path, code: int | None = 0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "daskperiment.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if code is not None:
        assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    return done


# ---------------------------------------------------------------------------------------
# Two people, one shared store
# ---------------------------------------------------------------------------------------


def _share_both_ways(tmp_path: Path, shared: str) -> None:
    alice, bob = make(tmp_path / "alice"), make(tmp_path / "bob", offset=10)
    assert list(alice.get_history().index) == [1, 2, 3]  # a single user's numbers as ever
    alice.tag(1, "baseline")
    bob.note(2, "bob's note")
    first = sharing.push_trials(alice.store, EXP, shared)
    second = sharing.push_trials(bob.store, EXP, shared)
    assert first.trials_added == [1, 2, 3] and first.renumbered == {}
    assert second.trials_added == [4, 5, 6] and second.renumbered == {1: 4, 2: 5, 3: 6}
    team = opened(store.open(shared, create=False))
    history = team.get_history()
    assert list(history.index) == [1, 2, 3, 4, 5, 6]
    assert list(history["a"]) == [1, 1, 3, 11, 11, 13]
    arrived = team.get_trial(4)
    assert arrived["global_id"] == bob.get_trial(1)["global_id"]
    assert arrived["origin"]["number"] == 1 and arrived["origin"]["source"] == bob.store.url
    assert team.get_annotations(1)["tags"] == ["baseline"]
    assert [n["text"] for n in team.get_annotations(5)["notes"]] == ["bob's note"]
    # sending the same trials again: nothing added, nothing copied
    for ex in (alice, bob):
        again = sharing.push_trials(ex.store, EXP, shared)
        assert again.trials_added == [] and again.objects_copied == 0
        assert again.annotations_added == 0
    assert list(opened(store.open(shared, create=False)).get_history().index) == [1, 2, 3, 4, 5, 6]
    # annotations made on both sides meanwhile, then pulled back: each has all six, merged
    alice.tag(2, "alice-tag")
    sharing.push_trials(alice.store, EXP, shared)
    for ex in (alice, bob):
        sharing.pull_trials(ex.store, EXP, shared)
    for ex in (alice, bob):
        mine = opened(ex.store)
        assert len(mine.get_history()) == 6
        gids = {mine.get_trial(n)["global_id"] for n in range(1, 7)}
        assert gids == {team.get_trial(n)["global_id"] for n in range(1, 7)}
    bob_view = opened(bob.store)
    alice_trial_2 = next(
        n
        for n in range(1, 7)
        if bob_view.get_trial(n)["global_id"] == alice.get_trial(2)["global_id"]
    )
    assert bob_view.get_annotations(alice_trial_2)["tags"] == ["alice-tag"]
    assert bob_view.get_trial(1)["origin"] is None  # bob's own trial 1 stays his
    assert sharing.pull_trials(bob.store, EXP, shared).objects_copied == 0


def test_two_stores_share_one_experiment_through_a_local_store(tmp_path: Path) -> None:
    _share_both_ways(tmp_path, str(tmp_path / "team"))


@pytest.mark.s3
def test_two_stores_share_one_experiment_through_s3(tmp_path: Path, s3_url: str) -> None:
    _share_both_ways(tmp_path, s3_url)


def test_the_cli_shows_origins_and_resends_nothing(tmp_path: Path) -> None:
    make(tmp_path / "a" / "daskperiment_cache" / EXP)
    make(tmp_path / "b" / "daskperiment_cache" / EXP, n=1, offset=5)
    team = tmp_path / "team"
    cli("push", EXP, str(team), cwd=tmp_path / "a")
    pushed = cli("push", EXP, str(team), cwd=tmp_path / "b").stdout
    assert "pushed 1 trial" in pushed and "renumbered 1->4" in pushed
    again = cli("push", EXP, str(team), cwd=tmp_path / "b").stdout
    assert "pushed 0 trials" in again and "0 objects" in again
    shown = cli("show", EXP, "4", "--store", str(team), cwd=tmp_path).stdout
    assert "origin:       trial 1" in shown and "arrived as trial 1 of" in shown
    rows = json.loads(
        cli("log", EXP, "-v", "--format", "json", "--store", str(team), cwd=tmp_path).stdout
    )
    gid = rows[3]["Global ID"]
    origins = [r["Origin"].split(" on ")[0] for r in rows]
    assert origins == ["trial 1", "trial 2", "trial 3", "trial 1"]
    by_prefix = cli("show", EXP, gid[:8], "--store", str(team), cwd=tmp_path).stdout
    assert by_prefix.startswith(f"trial 4 of {EXP}")


# ---------------------------------------------------------------------------------------
# Naming trials by global id
# ---------------------------------------------------------------------------------------


def test_a_trial_is_named_by_number_or_global_id_prefix(tmp_path: Path) -> None:
    ex = make(tmp_path / "s")
    gid = ex.get_trial(2)["global_id"]
    assert len(gid) == 32 and gid != ex.get_trial(1)["global_id"]
    # A prefix of only digits is a trial number (documented), so take one with a letter in it
    short = gid[: max(6, next(i for i, c in enumerate(gid) if not c.isdigit()) + 1)]
    assert ex.get_trial(short)["id"] == 2
    assert ex.get_trial(gid.upper()[: max(10, len(short))])["id"] == 2
    with pytest.raises(TrialNotFound, match="trial 'ffffffffff' not found"):
        ex.get_trial("ffffffffff" if not gid.startswith("ffff") else "0000000000")
    gids = [ex.get_trial(n)["global_id"] for n in (1, 2, 3)]
    common = os.path.commonprefix(gids[:2])
    if len(common) >= 4:  # pragma: no cover - astronomically rare
        with pytest.raises(AmbiguousTrial):
            ex.get_trial(common)


def test_an_ambiguous_prefix_is_refused(tmp_path: Path) -> None:
    ex = make(tmp_path / "s", n=1)
    st = ex.store
    record = dict(st.get(st.refs.get(f"experiments/{EXP}/trials/1")))
    for n, gid in ((2, "abcd" + "0" * 28), (3, "abcd" + "1" * 28)):
        st.refs.create(
            f"experiments/{EXP}/trials/{n}", st.put(dict(record, trial_id=n, global_id=gid))
        )
    with pytest.raises(AmbiguousTrial, match="trials 2, 3"):
        opened(st).tag("abcd", "x")
    opened(st).tag("abcd1", "x")
    assert opened(st).get_annotations(3)["tags"] == ["x"]


# ---------------------------------------------------------------------------------------
# Tags and notes
# ---------------------------------------------------------------------------------------


def test_tags_and_notes_keep_their_history(tmp_path: Path) -> None:
    ex = make(tmp_path / "s")
    ex.tag(1, "baseline", "v1")
    ex.untag(1, "v1")
    ex.note(1, "first")
    ex.note(1, "second")
    got = ex.get_annotations(1)
    assert got["tags"] == ["baseline"]
    assert [n["text"] for n in got["notes"]] == ["first", "second"]
    assert [e["action"] for e in got["history"]] == ["tag", "tag", "untag", "note", "note"]
    assert all("@" in e["who"] and e["when"] > 0 for e in got["history"])
    history = ex.get_history()
    assert list(history["Tags"]) == ["baseline", "", ""]
    record_oid = ex.store.refs.get(f"experiments/{EXP}/trials/1")
    assert ex.get_trial(1)["tags"] == ["baseline"]
    assert ex.store.refs.get(f"experiments/{EXP}/trials/1") == record_oid  # record untouched


def test_bad_annotations_are_refused_with_nothing_written(tmp_path: Path) -> None:
    ex = make(tmp_path / "s", n=1)
    before = ex.store.refs.names("")
    with pytest.raises(ValueError, match="invalid tag 'two words'"):
        ex.tag(1, "two words")
    with pytest.raises(UnknownTag, match="trial 1 has no tag 'nope'"):
        ex.untag(1, "nope")
    with pytest.raises(ValueError, match="a note needs some text"):
        ex.note(1, "  ")
    with pytest.raises(TrialNotFound):
        ex.tag(7, "x")
    with pytest.raises(UnknownTag, match="no trial is tagged 'zz'"):
        ex.get_history(tags="zz")
    assert ex.store.refs.names("") == before


_TAGGER = """
import sys
import daskperiment
import daskperiment_store as store
ex = daskperiment.Experiment("team_pj", backend=store.open(sys.argv[1], create=False))
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()
for i in range(20):
    ex.tag(1, f"{sys.argv[2]}-{i}")
    ex.note(1, f"{sys.argv[2]} note {i}")
"""


def test_concurrent_tagging_by_two_processes_keeps_both(tmp_path: Path) -> None:
    ex = make(tmp_path / "s", n=1)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _TAGGER, str(tmp_path / "s"), who],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for who in ("p", "q")
    ]
    for p in procs:
        assert p.stdout.readline() == "ready\n"
    for p in procs:  # both start writing at once
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        p.stdin.close()
        assert p.wait(timeout=120) == 0
    got = opened(tmp_path / "s").get_annotations(1)
    assert len(got["tags"]) == 40 and len(got["notes"]) == 40
    assert {t.split("-")[0] for t in got["tags"]} == {"p", "q"}
    del ex


# ---------------------------------------------------------------------------------------
# Hostile annotation refs
# ---------------------------------------------------------------------------------------


def _bundle_with(tmp_path: Path, name_of: Any, value: Any) -> Path:
    src = make(tmp_path / "src", n=1)
    st = src.store
    gid = src.get_trial(1)["global_id"]
    oid = st.put(value)
    st.refs.create(name_of(gid, oid), oid)
    path = tmp_path / "evil.dpb"
    st.export_bundle(path, [f"experiments/{EXP}/trials/1", name_of(gid, oid)])
    return path


@pytest.mark.parametrize(
    "case",
    ["name-not-its-oid", "not-an-event", "pickle", "other-trial"],
)
def test_a_bundle_with_hostile_annotation_refs_is_refused(tmp_path: Path, case: str) -> None:
    event = {"type": "daskperiment.annotation", "version": 1, "action": "tag", "value": "x",
             "who": "m@x", "when": 1.0, "nonce": "0"}  # fmt: skip
    prefix = f"experiments/{EXP}/annotations"
    if case == "name-not-its-oid":
        path = _bundle_with(
            tmp_path, lambda g, o: f"{prefix}/{g}/{'0' * 32}", dict(event, trial="x")
        )
    elif case == "not-an-event":
        path = _bundle_with(tmp_path, lambda g, o: f"{prefix}/{g}/{o}", {"type": "something"})
    elif case == "pickle":
        path = _bundle_with(tmp_path, lambda g, o: f"{prefix}/{g}/{o}", {1, 2, 3})
    else:  # an event naming another trial than its ref
        path = _bundle_with(tmp_path, lambda g, o: f"{prefix}/{g}/{o}", dict(event, trial="f" * 32))
    dst = tmp_path / "dst"
    with pytest.raises(sharing.SharingError, match="nothing was"):
        daskperiment.import_bundle(path, backend=dst)
    if (dst / "config").exists():
        left = store.open(dst, create=False).refs.names("")
        assert not [n for n in left if "/trials/" in n or "/annotations/" in n]


def test_a_pull_from_a_store_with_hostile_annotation_refs_is_refused(tmp_path: Path) -> None:
    theirs = make(tmp_path / "theirs", n=1)
    gid = theirs.get_trial(1)["global_id"]
    evil = theirs.store.put({1, 2, 3})  # a pickle where an annotation event belongs
    theirs.store.refs.create(f"experiments/{EXP}/annotations/{gid}/{evil}", evil)
    mine = make(tmp_path / "mine", n=1)
    before = mine.store.refs.list("")
    with pytest.raises(sharing.SharingError, match="nothing was pulled"):
        sharing.pull_trials(mine.store, EXP, str(tmp_path / "theirs"))
    assert mine.store.refs.list("") == before


# ---------------------------------------------------------------------------------------
# Archive, delete, gc
# ---------------------------------------------------------------------------------------


def test_archive_hides_and_delete_then_gc_keeps_what_others_reach(tmp_path: Path) -> None:
    ex = make(tmp_path / "s")  # trials 1 and 2 share their persisted array
    ex.archive(1)
    assert list(ex.get_history().index) == [2, 3]
    assert list(ex.get_history(all=True).index) == [1, 2, 3]
    ex.unarchive(1)
    assert list(ex.get_history().index) == [1, 2, 3]
    shared = ex.get_trial(2)["steps"]["data"]["persisted"]
    ex.tag(2, "doomed")
    gid = ex.get_trial(2)["global_id"]
    assert ex.delete(2) == 2
    assert list(ex.get_history(all=True).index) == [1, 3]
    with pytest.raises(TrialNotFound):
        ex.get_trial(2)
    record_2 = ex.store.refs.get(f"experiments/{EXP}/trials/3")  # to compare: still there
    report = ex.store.gc(grace=0)
    assert report.objects_removed  # trial 2's own record and annotation went
    assert record_2 not in report.objects_removed
    assert ex.store.has(shared)  # trial 1 still reaches it
    np.testing.assert_array_equal(ex.get_persisted("data", 1), np.full(100, 1.0))
    assert ex.store.fsck().ok
    assert ex.store.refs.names(f"experiments/{EXP}/annotations/{gid}/") == []
    assert ex.get_annotations(1)["archived"] is False  # trial 1's own history stays
    # a trial run afterwards is shown as itself, never as the deleted one
    fresh = opened(tmp_path / "s")
    assert list(fresh.get_history().index) == [1, 3]


def test_delete_needs_confirmation_on_the_cli(tmp_path: Path) -> None:
    make(tmp_path / "daskperiment_cache" / EXP, n=2)
    refused = cli("delete", EXP, "2", cwd=tmp_path, code=1)
    assert "not confirmed" in refused.stderr and "--yes" in refused.stderr
    assert "deleted trial 2" in cli("delete", EXP, "2", "--yes", cwd=tmp_path).stdout
    rows = json.loads(cli("log", EXP, "--format", "json", cwd=tmp_path).stdout)
    assert [r["Trial ID"] for r in rows] == [1]


# ---------------------------------------------------------------------------------------
# The searchable log, on 1,000 trials
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def thousand(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose experiment has 1,000 trials (records made from one real trial)."""
    work = tmp_path_factory.mktemp("thousand")
    ex = make(work / "daskperiment_cache" / EXP, n=1)
    st = ex.store
    base = dict(st.get(st.refs.get(f"experiments/{EXP}/trials/1")))
    for n in range(2, 1001):
        record = dict(base, trial_id=n, global_id=f"{n:032x}", params={"a": n % 7, "lr": n / 1000})
        st.refs.create(f"experiments/{EXP}/trials/{n}", st.put(record))
    ex = opened(st)
    for n in range(10, 1001, 10):
        ex.tag(n, "tens")
    return work


def test_log_where_sort_and_tag_on_a_thousand_trials(thousand: Path) -> None:
    out = cli("log", EXP, "--where", "a=3 lr>0.5", "--sort", "lr:desc", "-n", "5",
              "--columns", "a,lr", "--format", "json", cwd=thousand).stdout  # fmt: skip
    rows = json.loads(out)
    assert [r["Trial ID"] for r in rows] == [997, 990, 983, 976, 969]
    assert set(rows[0]) == {"Trial ID", "a", "lr"}
    tagged = json.loads(cli("log", EXP, "--tag", "tens", "--format", "json", cwd=thousand).stdout)
    assert len(tagged) == 100 and all(r["Trial ID"] % 10 == 0 for r in tagged)
    ex = opened(thousand / "daskperiment_cache" / EXP)
    frame = ex.get_history(where="a=0", tags="tens")
    assert list(frame.index) == list(range(70, 1001, 70))
    assert list(frame.columns[:2]) == ["a", "lr"] or "a" in frame.columns


def test_a_malformed_where_is_one_line_with_its_position(thousand: Path) -> None:
    bad = cli("log", EXP, "--where", "a=1 nosuch>2", cwd=thousand, code=1)
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown column 'nosuch'" in lines[0]
    assert "at position 5" in lines[0]
    unbalanced = cli("log", EXP, "--where", "a='1", cwd=thousand, code=1)
    assert "cannot read filter" in unbalanced.stderr
    sort = cli("log", EXP, "--sort", "zzz", cwd=thousand, code=1)
    assert "unknown column 'zzz' to sort by" in sort.stderr
    ex = opened(thousand / "daskperiment_cache" / EXP)
    with pytest.raises(SearchError, match="unknown column"):
        ex.get_history(where="zzz>1")
