"""A store or bundle written by an attacker never runs code, through the real entry points.

Every hostile object here is a correctly hashed ``pickle`` object (tests/hostile.py) that
touches a marker file when unpickled; each test checks the marker is still absent after
the commands a user would run (``python -m daskperiment ...`` in fresh processes, and the
Python API), and ends by showing that the one call that says it unpickles does create it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import daskperiment
import daskperiment_store as store
from daskperiment.errors import InvalidExperimentId, PickleRefused
from tests.hostile import build_three_trials, plant_pickle, plant_record, record_of, trial_ref

EXP = "sec_pj"
REPO = Path(__file__).resolve().parents[2]


def subprocess_env() -> dict[str, str]:
    """This checkout first on the path of a child interpreter."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }


def cli(*args: str, cwd: Path, code: int | None = 0) -> subprocess.CompletedProcess:
    """``python -m daskperiment ARGS`` in a fresh interpreter importing this checkout."""
    done = subprocess.run(
        [sys.executable, "-m", "daskperiment", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
    )
    if code is not None:
        assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    return done


def one_line(done: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sec")
    build_three_trials(directory / "daskperiment_cache", EXP)
    return directory


@pytest.fixture
def work(made: Path, tmp_path: Path) -> Path:
    """A private copy of the three-trial working directory."""
    shutil.copytree(made, tmp_path / "w")
    return tmp_path / "w"


def open_store(work: Path) -> store.Store:
    return store.open(work / "daskperiment_cache" / EXP, create=False)


# -- a pickle where a trial record belongs ----------------------------------------------------


def test_planted_trial_ref_is_reported_as_malformed_and_never_run(work: Path, tmp_path: Path):
    marker = tmp_path / "ran"
    st = open_store(work)
    evil = plant_pickle(st, marker)
    st.refs.set(trial_ref(EXP, 4), evil)

    listed = json.loads(cli("list", "--format", "json", cwd=work).stdout)
    assert [(e["experiment"], e["trials"]) for e in listed] == [(EXP, 4)]
    rows = json.loads(cli("log", EXP, "--format", "json", cwd=work).stdout)
    assert [r["Trial ID"] for r in rows] == [1, 2, 3, 4]
    assert "malformed record" in rows[3]["Description"] and rows[3]["Success"] is False
    assert [r["Result"] for r in rows[:3]] == [4, 6, 8]
    one_line(cli("show", EXP, "4", cwd=work, code=None), 1, evil, "malformed or hostile")
    assert "status:       success" in cli("show", EXP, "2", cwd=work).stdout
    one_line(cli("diff", EXP, "1", "4", cwd=work, code=None), 1, "malformed or hostile")
    one_line(cli("code", EXP, "4", cwd=work, code=None), 1, "malformed or hostile")
    exported = cli("export", EXP, "-o", str(tmp_path / "b.dpb"), cwd=work).stdout
    assert "exported 3 trials" in exported and "1 trial left out: malformed" in exported
    one_line(
        cli("export", EXP, "4", "-o", str(tmp_path / "c.dpb"), cwd=work, code=None),
        1,
        "trial 4 is not a well-formed trial record",
    )
    pushed = cli("push", EXP, str(tmp_path / "team"), cwd=work).stdout
    assert "pushed 3 trials" in pushed and "1 trial left out" in pushed
    team = store.open(tmp_path / "team" / EXP, create=False)
    assert sorted(team.refs.names(f"experiments/{EXP}/trials/")) == [
        trial_ref(EXP, n) for n in (1, 2, 3)
    ]
    fsck = cli("fsck", cwd=work, code=1).stdout
    assert "PROBLEMS FOUND" in fsck
    assert f"trial ref {trial_ref(EXP, 4)}: object {evil}" in fsck and "malformed" in fsck
    one_line(cli("cat", evil, cwd=work, code=None), 1, "is a pickle", "--unpickle-runs-code")
    assert "kind:         pickle" in cli("cat", "--info", evil, cwd=work).stdout
    ex = daskperiment.Experiment(id=EXP, backend=work / "daskperiment_cache" / EXP)
    assert list(ex.get_history().index) == [1, 2, 3, 4]
    with pytest.raises(store.UnexpectedKind, match="malformed or hostile") as caught:
        ex.get_trial(4)
    assert (caught.value.oid, caught.value.kind, caught.value.expected) == (
        evil,
        "pickle",
        ("json",),
    )
    assert not marker.exists()
    # The marker works: the one command that says it unpickles does run it.
    cli("cat", "--unpickle-runs-code", evil, cwd=work)
    assert marker.exists()


def test_a_record_naming_another_trial_id_is_malformed(work: Path):
    st = open_store(work)
    st.refs.set(trial_ref(EXP, 4), st.refs.get(trial_ref(EXP, 1)))  # trial 1's record
    rows = json.loads(cli("log", EXP, "--format", "json", cwd=work).stdout)
    assert [r["Trial ID"] for r in rows] == [1, 2, 3, 4]
    assert "says trial 1, its ref 4" in rows[3]["Description"]


# -- pickles where trees, parameters and metrics belong ---------------------------------------


def test_pickles_linked_from_a_well_formed_record_never_run(work: Path, tmp_path: Path):
    marker = tmp_path / "ran"
    st = open_store(work)
    evil = plant_pickle(st, marker)
    base = record_of(st, EXP, 3)
    plant_record(st, EXP, 4, base, code=evil, environment=evil, parameters=evil)
    plant_record(st, EXP, 5, base, **{"metrics:loss": evil})

    cli("log", EXP, "--verbose", cwd=work)
    shown = cli("show", EXP, "4", cwd=work).stdout  # the environment summary is left out
    assert "trial 4 of" in shown and "environment:" not in shown
    one_line(cli("code", EXP, "4", cwd=work, code=None), 1, "malformed or hostile", evil)
    one_line(cli("diff", EXP, "3", "4", cwd=work, code=None), 1, "malformed or hostile")
    diff = cli("diff", EXP, "3", "5", "--format", "json", cwd=work).stdout
    assert json.loads(diff)["metrics"]["loss"]["b"] == {"oid": evil, "pickled": True}
    ex = daskperiment.Experiment(id=EXP, backend=work / "daskperiment_cache" / EXP)
    with pytest.raises(store.UnexpectedKind):
        ex.get_code(trial_id=4)
    with pytest.raises(store.UnexpectedKind):
        ex.get_environment(trial_id=4)
    assert ex.load_metric("loss", trial_id=3).shape == (3, 1)
    with pytest.raises(PickleRefused, match="metric 'loss' of trial 5 is stored as a pickle"):
        ex.load_metric("loss", trial_id=5)
    assert not marker.exists()
    with pytest.raises(Exception):  # noqa: B017 - a Path, not a series: merging fails after
        ex.load_metric("loss", trial_id=5, unpickle=True)
    assert marker.exists()  # the explicit opt-in does unpickle


def test_pickles_where_index_cache_and_purity_entries_belong(work: Path, tmp_path: Path):
    marker = tmp_path / "ran"
    st = open_store(work)
    evil = plant_pickle(st, marker)
    st.refs.set(f"experiments/{EXP}/index", evil)
    # the per-input purity refs of stores written before the purity log, for the inputs the
    # trial below repeats, and purity log batches: each a pickle, or links to one
    steps = st.get(st.refs.get(trial_ref(EXP, 1)))["steps"].values()
    for step in steps:
        st.refs.set(f"experiments/{EXP}/purity/{step['step']}/{step['inputs']}", evil)
    log_prefix = f"experiments/{EXP}/purity-log/"
    st.refs.create(f"{log_prefix}0-0-pickle", evil)
    batch = {"type": "daskperiment.purity-batch", "version": 1, "level": 0, "count": 1}
    links = {"entries": store.Link(evil), "keys": store.Link(evil)}
    st.refs.create(f"{log_prefix}0-1-evil", st.put(dict(batch, **links)))
    st.refs.set(f"experiments/{EXP}/cache/prepare/{'0' * 32}", evil)
    rows = json.loads(cli("log", EXP, "--format", "json", cwd=work).stdout)
    assert [r["Result"] for r in rows] == [4, 6, 8]  # the index is ignored, records read
    script = work / "again.py"
    script.write_text(
        "import daskperiment\n"
        f"ex = daskperiment.Experiment(id={EXP!r}, backend='daskperiment_cache/{EXP}')\n"
        "a = ex.parameter('a')\n"
        "@ex.persist(cache=True)\n"
        "def prepare(a):\n    return a + 1\n"
        "@ex.result\n"
        "def score(x):\n    return x * 2\n"
        "ex.set_parameters(a=1)\n"
        "print('result', score(prepare(a)).compute())\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
    )
    assert done.returncode == 0, done.stderr
    assert "result 4" in done.stdout
    assert not marker.exists()


# -- hostile bundles ------------------------------------------------------------------------


def bundle_of(path: Path, refs: dict[str, Any], tmp: Path) -> Path:
    """A bundle written by the store's own writer, holding ``refs`` -> these values."""
    scratch = store.open(tmp / f"scratch-{path.stem}", create=True)
    for name, value in refs.items():
        scratch.refs.set(name, scratch.put(value))
    scratch.export_bundle(path, list(refs))
    return path


def test_import_of_a_bundle_naming_a_pickle_is_refused_and_leaves_no_ref(tmp_path: Path):
    marker = tmp_path / "ran"
    scratch = store.open(tmp_path / "scratch", create=True)
    evil = plant_pickle(scratch, marker)
    scratch.refs.set(trial_ref("victim", 1), evil)
    scratch.export_bundle(tmp_path / "evil.dpb", [trial_ref("victim", 1)])
    home = tmp_path / "home"
    home.mkdir()
    line = one_line(
        cli("import", str(tmp_path / "evil.dpb"), cwd=home, code=None),
        1,
        "trial 1 is not a well-formed trial record",
        "nothing was imported",
    )
    assert "pickle" in line
    target = store.open(home / "daskperiment_cache" / "victim", create=False)
    assert target.refs.list("") == {}  # no trial ref, no derived ref
    for command in (("list",), ("log", "victim")):
        cli(*command, cwd=home, code=None)
    assert not marker.exists()


@pytest.mark.parametrize("tail", ["01", "0", "99999999999999999999", "\u0661", "1_"])
def test_import_refuses_trial_refs_that_are_not_canonical(tmp_path: Path, tail: str):
    record = {"type": "daskperiment.trial", "trial_id": 1, "status": "success"}
    bundle = bundle_of(tmp_path / "odd.dpb", {trial_ref("victim", tail): record}, tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    one_line(cli("import", str(bundle), cwd=home, code=None), 1, "names no valid trial")
    assert not (home / "daskperiment_cache").exists()


def test_pull_refuses_a_hostile_source_and_changes_nothing(work: Path, tmp_path: Path):
    marker = tmp_path / "ran"
    team = tmp_path / "team"
    cli("push", EXP, str(team), cwd=work)
    remote = store.open(team / EXP, create=False)
    remote.refs.set(trial_ref(EXP, 4), plant_pickle(remote, marker))
    mine = tmp_path / "mine"
    one_line(
        cli("pull", EXP, str(team), "--store", str(mine), cwd=work, code=None),
        1,
        "trial 4 is not a well-formed trial record",
        "nothing was pulled",
    )
    remote.refs.delete(trial_ref(EXP, 4))
    remote.refs.set(trial_ref(EXP, "01"), remote.refs.get(trial_ref(EXP, 1)))
    one_line(
        cli("pull", EXP, str(team), "--store", str(mine), cwd=work, code=None),
        1,
        "not canonical trial ids",
        "trials/01",
    )
    pulled = store.open(mine / EXP, create=True)
    assert pulled.refs.list("") == {}
    assert not marker.exists()


# -- canonical ids ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["01", "0", "\uff11", "\u0661", "9223372036854775808", "+1"])
def test_cli_refuses_trial_ids_that_are_not_canonical(made: Path, text: str):
    line = one_line(cli("show", EXP, text, cwd=made, code=None), 2, "invalid trial id")
    assert "without leading zeros, below 2**63" in line


def test_trial_refs_that_are_not_canonical_are_never_read_as_trials(work: Path):
    st = open_store(work)
    st.refs.set(trial_ref(EXP, "01"), st.refs.get(trial_ref(EXP, 1)))
    st.refs.set(trial_ref(EXP, "0"), st.refs.get(trial_ref(EXP, 2)))
    st.refs.set(trial_ref(EXP, 10**20), st.refs.get(trial_ref(EXP, 3)))
    rows = json.loads(cli("log", EXP, "--format", "json", cwd=work).stdout)
    assert [r["Trial ID"] for r in rows] == [1, 2, 3]
    fsck = cli("fsck", cwd=work, code=1).stdout
    for tail in ("01", "0", str(10**20)):
        assert f"trial ref {trial_ref(EXP, tail)}: not a trial id" in fsck
    ex = daskperiment.Experiment(id=EXP, backend=work / "daskperiment_cache" / EXP)
    assert ex.trial_id == 3


def test_experiment_ids_have_one_length_limit_everywhere(made: Path, tmp_path: Path):
    long_id = "x" * 256
    with pytest.raises(InvalidExperimentId, match="1 to 200 ASCII letters"):
        daskperiment.Experiment(id=long_id)
    daskperiment.Experiment(id="y" * 200, backend=tmp_path / "ok")  # the limit itself is fine
    for args in (["log", long_id], ["import", "b.dpb", "--as", long_id]):
        line = one_line(cli(*args, cwd=made, code=None), 2, "invalid experiment id")
        assert "1 to 200" in line and "256 characters" in line
