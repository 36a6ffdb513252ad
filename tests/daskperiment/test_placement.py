"""Placing arriving trials: one number per trial however many writers bring it at once (real
processes, local and S3), claims left by a writer stopped half way, and numbers of deleted
trials never given again (daskperiment/placement.py, daskperiment/numbering.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import daskperiment
import daskperiment_store as store
from daskperiment import identity, opening, sharing
from daskperiment.numbering import high_water
from daskperiment.placement import choose_numbers
from daskperiment.reads import trial_ref_problems
from daskperiment.record import claim_ref, origin_ref

ROOT = Path(__file__).resolve().parents[2]
EXP = "place_pj"

EXPERIMENT = """
import numpy as np
import daskperiment

def build(backend):
    ex = daskperiment.Experiment("place_pj", backend=backend)
    a = ex.parameter("a")

    @ex.persist
    def data(a):
        return np.full(2000, a, dtype="float64")

    @ex.result
    def score(d):
        ex.save_metric("m", epoch=0, value=float(d[0]))
        return float(d.sum())

    return ex, score(data(a))

def run(ex, result, values):
    for v in values:
        ex.set_parameters(a=v)
        result.compute(seed=1)
"""

PUSHER = """
import json, sys, time
import daskperiment_store as store
from daskperiment import sharing
src, dst, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
source = store.open(src, create=False)
while time.time() < start:  # all pushers start together
    time.sleep(0.001)
print(json.dumps(sharing.push_trials(source, "place_pj", dst).to_dict()))
"""


def _namespace() -> dict[str, Any]:
    scope: dict[str, Any] = {}
    exec(EXPERIMENT, scope)
    return scope


def recorded(location: Any, values: list[int]) -> Any:
    """An experiment at ``location`` with one trial per value (a persisted array each)."""
    scope = _namespace()
    ex, result = scope["build"](location)
    scope["run"](ex, result, values)
    return ex


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def push_at_once(pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Push each (source, destination) from its own process, all starting at one moment."""
    start = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUSHER, src, dst, str(start)],
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for src, dst in pairs
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def check_team(
    team: store.Store, expected_records: set[str], own: int, contiguous: bool = True
) -> dict[int, str]:
    """Every expected record once, the team's own trials untouched, fsck clean, the history
    showing each trial once and opening finding the last trial. Writers that chose numbers
    from different listings may leave a number unused (``contiguous=False``)."""
    refs = sharing.trial_refs(team, EXP)
    records = list(refs.values())
    assert len(records) == len(set(records)), "a trial was placed under two numbers"
    assert expected_records <= set(records)
    assert len(refs) == len(expected_records) + own
    assert list(refs)[:own] == list(range(1, own + 1))
    if contiguous:
        assert sorted(refs) == list(range(1, len(refs) + 1))
    assert opening.last_trial_id(team, EXP) == max(refs)  # what Experiment() says
    assert team.fsck().ok
    assert trial_ref_problems(team) == []
    history = daskperiment.Experiment(EXP, backend=team).get_history()
    assert sorted(history.index) == sorted(refs)
    return refs


# ---------------------------------------------------------------------------------------
# Many writers, one store
# ---------------------------------------------------------------------------------------


def _many_pushers(tmp_path: Path, team_url: str, processes: int, trials: int, own: int) -> None:
    """``processes`` members each pulled the same ``trials`` into their own store, under
    other numbers (member k has k trials of its own first), and all push at once."""
    shared = recorded(tmp_path / "shared", list(range(1, trials + 1)))
    expected = set(sharing.trial_refs(shared.store, EXP).values())
    members = []
    for k in range(processes):
        path = tmp_path / f"member{k}"
        member = recorded(path, [1000 * (k + 1) + j for j in range(k)]).store if k else None
        member = member or store.open(str(path), create=True)
        pulled = sharing.pull_trials(member, EXP, str(tmp_path / "shared"))
        assert pulled.trials_added == list(range(k + 1, k + trials + 1))
        expected |= set(sharing.trial_refs(member, EXP).values())
        members.append(str(path))
    mine = recorded(team_url, [500 + v for v in range(1, own + 1)])  # the team's own trials
    reports = push_at_once([(path, team_url) for path in members])
    added = sum(len(r["trials_added"]) for r in reports)
    assert added == len(expected)  # each trial added by exactly one of the writers
    for k, report in enumerate(reports):  # the others found it there (listed or claimed)
        assert len(report["trials_added"]) + len(report["trials_unchanged"]) == trials + k
    team = mine.store
    refs = check_team(team, expected, own, contiguous=False)
    gids = {identity.global_id_of(team.get(o), o) for o in refs.values()}
    assert len(gids) == len(refs)  # one number per global id
    # pushing again, from any of them: nothing added, nothing copied
    again = push_at_once([(path, team_url) for path in members[:2]])
    assert [r["trials_added"] for r in again] == [[], []]
    assert [r["objects_copied"] for r in again] == [0, 0]


def test_processes_pushing_the_same_trials_into_one_local_store_place_each_once(
    tmp_path: Path,
) -> None:
    _many_pushers(tmp_path, str(tmp_path / "team"), processes=4, trials=20, own=3)


@pytest.mark.s3
def test_processes_pushing_the_same_trials_into_one_s3_store_place_each_once(
    tmp_path: Path, s3_url: str
) -> None:
    _many_pushers(tmp_path, s3_url, processes=3, trials=8, own=2)


def test_processes_importing_the_same_bundle_place_each_trial_once(tmp_path: Path) -> None:
    source = recorded(tmp_path / "src", list(range(1, 11)))
    bundle = tmp_path / "trials.dpb"
    source.export(str(bundle))
    team = tmp_path / "team"
    recorded(team, [700, 701])
    script = (
        "import sys, time, json\nimport daskperiment\n"
        "start = float(sys.argv[3])\n"
        "while time.time() < start: time.sleep(0.001)\n"
        "r = daskperiment.import_bundle(sys.argv[1], backend=sys.argv[2])\n"
        "print(json.dumps(r.to_dict()))\n"
    )
    start = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(bundle), str(team), str(start)],
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    added = 0
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        added += len(json.loads(out.strip().splitlines()[-1])["trials_added"])
    assert added == 10
    st = store.open(str(team), create=False)
    check_team(st, set(sharing.trial_refs(source.store, EXP).values()), own=2, contiguous=False)
    assert st.refs.names(f"experiments/{EXP}/incoming/") == []


# ---------------------------------------------------------------------------------------
# A writer stopped half way
# ---------------------------------------------------------------------------------------


def _half_placed(src: Any, dst: store.Store, number: int, placed: int, with_origin: bool) -> str:
    """The state a writer killed after claiming trial ``number`` of ``src`` for ``placed``
    (and, ``with_origin``, after creating its origin ref) leaves: objects copied, claim made,
    no trial ref. Returns the record oid."""
    oid = src.store.refs.get(f"experiments/{EXP}/trials/{number}")
    record = src.store.get(oid)
    identity.copy_objects(src.store, dst, [oid])
    origin = dst.put(identity.origin_object(oid, record, src.store.url, number, placed))
    dst.refs.create(claim_ref(EXP, identity.global_id_of(record, oid) or oid), origin)
    if with_origin:
        dst.refs.create(origin_ref(EXP, placed), origin)
    return oid


@pytest.mark.parametrize("with_origin", [False, True], ids=["claim", "claim+origin"])
def test_a_claim_left_without_its_trial_is_completed_under_its_number(
    tmp_path: Path, with_origin: bool
) -> None:
    alice = recorded(tmp_path / "alice", [1, 2, 3])
    team = store.open(str(tmp_path / "team"), create=True)
    oid = _half_placed(alice, team, 2, 5, with_origin)
    report = sharing.push_trials(alice.store, EXP, str(tmp_path / "team"))
    assert report.trials_added == [1, 3, 5] and report.renumbered == {2: 5}
    assert team.refs.get(f"experiments/{EXP}/trials/5") == oid
    ex = daskperiment.Experiment(EXP, backend=team)
    assert ex.get_trial(5)["origin"]["number"] == 2
    assert team.fsck().ok and trial_ref_problems(team) == []
    assert sharing.push_trials(alice.store, EXP, str(tmp_path / "team")).trials_added == []


def test_a_claimed_number_taken_meanwhile_moves_the_claim(tmp_path: Path) -> None:
    alice = recorded(tmp_path / "alice", [1, 2, 3])
    team_path = tmp_path / "team"
    team_ex = recorded(team_path, [900])  # the team's own trial 1
    team = team_ex.store
    # a writer claimed 3 for alice's trial 2 (and made its origin), then was killed ...
    oid = _half_placed(alice, team, 2, 3, with_origin=True)
    # ... and trials recorded in the team store since took numbers 2 and 3
    scope = _namespace()
    ex, result = scope["build"](team)
    scope["run"](ex, result, [901, 902])
    assert ex.get_trial(3)["origin"] is None  # the stale origin names another record
    report = sharing.push_trials(alice.store, EXP, str(team_path))
    assert sorted(report.trials_added) == [4, 5, 6]
    refs = sharing.trial_refs(team, EXP)
    assert list(refs) == [1, 2, 3, 4, 5, 6] and list(refs.values()).count(oid) == 1
    fresh = daskperiment.Experiment(EXP, backend=team)
    assert fresh.get_trial(3)["params"] == {"a": 902} and fresh.get_trial(3)["origin"] is None
    moved_to = next(n for n, o in refs.items() if o == oid)
    assert fresh.get_trial(moved_to)["origin"]["number"] == 2
    assert not team.refs.has(origin_ref(EXP, 3))  # removed: it named another trial
    assert team.fsck().ok and trial_ref_problems(team) == []


def test_numbers_are_chosen_from_one_listing_in_order() -> None:
    # free numbers are kept; taken ones get the next above everything, in source order
    assert choose_numbers([1, 2, 3], [], 0) == {1: 1, 2: 2, 3: 3}
    assert choose_numbers([1, 2, 3], [1, 2, 3], 0) == {1: 4, 2: 5, 3: 6}
    assert choose_numbers([1, 5], [1, 2], 0) == {1: 3, 5: 5}
    # a free number at or below the high-water mark was a deleted trial's: never given again
    assert choose_numbers([2, 9], [1], 4) == {2: 5, 9: 9}


# ---------------------------------------------------------------------------------------
# A deleted trial's number is never given again
# ---------------------------------------------------------------------------------------

NEXT_TRIAL = (
    EXPERIMENT
    + """
import sys
ex, result = build(sys.argv[1])
print("opened", ex.trial_id)
run(ex, result, [int(sys.argv[2])])
print("new", ex.trial_id)
"""
)


def _run_in_new_process(where: Path, value: int) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", NEXT_TRIAL, str(where), str(value)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_deleted_last_trials_number_is_never_given_again(tmp_path: Path) -> None:
    where = tmp_path / "s"
    scope = _namespace()
    ex, result = scope["build"](where)
    scope["run"](ex, result, [1, 2, 3])
    assert ex.delete(3) == 3
    scope["run"](ex, result, [4])
    assert ex.trial_id == 4  # not 3
    assert ex.get_trial(4)["params"] == {"a": 4}
    ex.delete(4)
    # a new process opens at the last trial there is (2) and records the next number
    assert _run_in_new_process(where, 5) == ["opened", "2", "new", "5"]
    ex.delete(5)
    scope["run"](ex, result, [6])
    assert ex.trial_id == 6
    assert list(ex.get_history().index) == [1, 2, 6]
    st = store.open(str(where), create=False)
    assert st.fsck().ok and trial_ref_problems(st) == []


def test_an_arriving_trial_never_takes_a_deleted_number(tmp_path: Path) -> None:
    alice = recorded(tmp_path / "alice", [1, 2, 3])
    bob = recorded(tmp_path / "bob", [11, 12])
    bob.delete(2)
    report = sharing.push_trials(alice.store, EXP, str(tmp_path / "bob"))
    # alice's 1 is taken; her 2 is free but was bob's deleted trial's number
    assert report.renumbered == {1: 3, 2: 4, 3: 5}
    bundle = tmp_path / "b.dpb"
    alice.export(str(bundle))
    carol = recorded(tmp_path / "carol", [21, 22, 23])
    carol.delete(3)
    carol.delete(2)
    imported = daskperiment.import_bundle(str(bundle), backend=str(tmp_path / "carol"))
    assert imported.trials_added == [4, 5, 6]


def test_a_deleted_trial_sent_again_arrives_under_a_new_number(tmp_path: Path) -> None:
    alice = recorded(tmp_path / "alice", [1, 2])
    team = tmp_path / "team"
    sharing.push_trials(alice.store, EXP, str(team))
    st = store.open(str(team), create=False)
    gid = alice.get_trial(2)["global_id"]
    assert st.refs.has(claim_ref(EXP, gid))
    claim = st.refs.get(claim_ref(EXP, gid))
    daskperiment.Experiment(EXP, backend=st).delete(2)
    assert not st.refs.has(claim_ref(EXP, gid))  # its claim went with it
    assert not st.refs.has(origin_ref(EXP, 2))
    assert claim in st.gc(grace=0).objects_removed  # nothing keeps its origin any more
    report = sharing.push_trials(alice.store, EXP, str(team))
    assert report.trials_added == [3] and report.renumbered == {2: 3}
    assert st.fsck().ok and trial_ref_problems(st) == []


def test_a_damaged_high_water_mark_is_reported_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    where = tmp_path / "s"
    ex = recorded(where, [1, 2])
    st = ex.store
    st.refs.set(f"experiments/{EXP}/highest", st.put({"type": "something else"}))
    scope = _namespace()
    again, result = scope["build"](where)
    with caplog.at_level("WARNING", logger="daskperiment"):
        scope["run"](again, result, [3])
    assert again.trial_id == 3
    assert "High-water mark of place_pj unreadable" in caplog.text
    again.delete(3)  # replaces it with a good one
    scope["run"](again, result, [4])
    assert again.trial_id == 4
    assert again.get_trial(4)["params"] == {"a": 4}
    assert high_water(st, EXP) == 3


def test_two_records_with_one_global_id_are_both_placed(tmp_path: Path) -> None:
    # a hand-made store: trial 4 is a copy of trial 1 with other parameters, same global id
    alice = recorded(tmp_path / "alice", [1, 2, 3])
    st = alice.store
    first = st.refs.get(f"experiments/{EXP}/trials/1")
    twin = st.put(dict(st.get(first), trial_id=4, params={"a": 99}))
    st.refs.create(f"experiments/{EXP}/trials/4", twin)
    team = tmp_path / "team"
    report = sharing.push_trials(st, EXP, str(team))
    assert report.trials_added == [1, 2, 3, 4]
    placed = store.open(str(team), create=False)
    refs = sharing.trial_refs(placed, EXP)
    assert refs[1] == first and refs[4] == twin
    gid = alice.get_trial(1)["global_id"]
    claim = placed.get(placed.refs.get(claim_ref(EXP, gid)))
    assert claim["placed"] == 1  # the claim is the first record's; the twin has none
    assert placed.fsck().ok and trial_ref_problems(placed) == []
    assert sharing.push_trials(st, EXP, str(team)).trials_added == []


def _synthetic(path: Path, trials: int) -> store.Store:
    """A store of ``trials`` finished trials: copies of one real trial with other parameters
    and global ids (distinct records sharing their objects)."""
    ex = recorded(path, [0])
    st = ex.store
    base = dict(st.get(st.refs.get(f"experiments/{EXP}/trials/1")))
    for n in range(2, trials + 1):
        record = dict(base, trial_id=n, global_id=f"{n:032x}", params={"a": n})
        st.refs.create(f"experiments/{EXP}/trials/{n}", st.put(record))
    return st


def test_a_pusher_killed_while_placing_leaves_nothing_a_second_push_cannot_finish(
    tmp_path: Path,
) -> None:
    source = _synthetic(tmp_path / "src", 400)
    team_ex = recorded(tmp_path / "team", [900, 901])  # numbers 1, 2 taken: all renumbered
    team = team_ex.store
    claims = tmp_path / "team" / "refs" / "experiments" / EXP / "globals"
    proc = subprocess.Popen(
        [sys.executable, "-c", PUSHER, str(tmp_path / "src"), str(tmp_path / "team"), "0"],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (claims.is_dir() and len(os.listdir(claims)) >= 100):
        assert proc.poll() is None, "the push ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.kill()  # SIGKILL, half way through placing
    proc.wait()
    placed_before = len(sharing.trial_refs(team, EXP)) - 2
    assert 0 < placed_before < 400
    report = sharing.push_trials(source, EXP, str(tmp_path / "team"))
    assert len(report.trials_added) + len(report.trials_unchanged) == 400
    refs = check_team(team, set(sharing.trial_refs(source, EXP).values()), own=2)
    assert len(refs) == 402
    for gid_claim in os.listdir(claims):  # every claim names the number its trial has
        origin = team.get(team.refs.get(claim_ref(EXP, gid_claim)))
        assert refs[origin["placed"]] == origin["record"].oid
