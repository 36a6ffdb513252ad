"""Degrade, don't fail: damaged store files on disk, read through the CLI and the API.

A damaged *derived* ref (history index, purity, cache, live) is ignored and rebuilt; a damaged
trial ref or record shows that one trial as ``damaged`` with fsck's advice, and every other
trial still reads. Each test corrupts real files of a real store.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import daskperiment
import daskperiment_store as store
from daskperiment import puritylog
from daskperiment.errors import DamagedTrial, TrialNotFound
from daskperiment_store.store import object_key
from tests.store.test_store import flip_byte

EXPERIMENT = "damaged_pj"


def record_three(path: Path) -> None:
    """Three trials of a two-step pipeline (a persisted step with a metric)."""
    ex = daskperiment.Experiment(EXPERIMENT, backend=path)
    a = ex.parameter("a")

    @ex.persist
    def double(a):
        ex.save_metric("m", epoch=0, value=a)
        return a * 2

    @ex.result
    def plus_one(x):
        return x + 1

    result = plus_one(double(a))
    for value in (1, 2, 3):
        ex.set_parameters(a=value)
        result.compute()
    ex._flush_index()


def ref_file(path: Path, name: str) -> Path:
    return path / "refs" / name


def trial_file(path: Path, trial_id: int) -> Path:
    return ref_file(path, f"experiments/{EXPERIMENT}/trials/{trial_id}")


def record_oid(path: Path, trial_id: int) -> str:
    return trial_file(path, trial_id).read_text().strip()


def garbage_ref(path: Path, trial_id: int) -> None:
    trial_file(path, trial_id).write_text("not an oid\n")


def corrupt_record(path: Path, trial_id: int) -> None:
    flip_byte(store.open(path), record_oid(path, trial_id))


def missing_record(path: Path, trial_id: int) -> None:
    (path / object_key(record_oid(path, trial_id))).unlink()


def drop_index(path: Path) -> None:
    ref_file(path, f"experiments/{EXPERIMENT}/index").unlink()


DAMAGES: dict[str, tuple[Callable[[Path, int], None], str]] = {
    "garbage ref": (garbage_ref, "CorruptRef"),
    "corrupt record": (corrupt_record, "CorruptObject"),
    "missing record": (missing_record, "ObjectNotFound"),
}


@pytest.fixture
def damaged_store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    record_three(path)
    return path


def cli(python: Any, path: Path, *args: str) -> Any:
    return python.run_args([sys.executable, "-m", "daskperiment", "--store", str(path), *args])


@pytest.mark.parametrize("damage", DAMAGES)
def test_cli_shows_one_damaged_trial_and_reads_the_others(
    damage: str, damaged_store: Path, python: Any
) -> None:
    do, error = DAMAGES[damage]
    drop_index(damaged_store)  # every row must come from its record
    do(damaged_store, 1)

    log = cli(python, damaged_store, "log", EXPERIMENT, "--verbose", "--format", "json").check()
    rows = json.loads(log.stdout)
    assert [r["Status"] for r in rows] == ["damaged", "success", "success"]
    assert error in rows[0]["Description"] and "daskperiment fsck" in rows[0]["Description"]
    assert [r["Result"] for r in rows[1:]] == [5, 7]
    assert "Traceback" not in log.stderr
    table = cli(python, damaged_store, "log", EXPERIMENT).check()
    assert "Damaged" in table.stdout

    shown = cli(python, damaged_store, "show", EXPERIMENT, "2").check()
    assert "status:       success" in shown.stdout

    one = cli(python, damaged_store, "show", EXPERIMENT, "1")
    assert one.returncode == 1
    assert "status:       damaged" in one.stdout
    assert error in one.stdout and "daskperiment fsck" in one.stdout
    assert "Traceback" not in one.output

    assert "result" in cli(python, damaged_store, "diff", EXPERIMENT, "2", "3").check().stdout
    diff = cli(python, damaged_store, "diff", EXPERIMENT, "1", "2")
    assert diff.returncode == 1
    assert "trial 1" in diff.stderr and "damaged" in diff.stderr and "fsck" in diff.stderr
    assert "Traceback" not in diff.output


@pytest.mark.parametrize("damage", DAMAGES)
def test_api_reads_around_a_damaged_trial(damage: str, damaged_store: Path) -> None:
    DAMAGES[damage][0](damaged_store, 2)
    ex = daskperiment.Experiment(EXPERIMENT, backend=damaged_store)
    assert ex.get_persisted("double", 3) == 6
    with pytest.raises(DamagedTrial) as info:
        ex.get_persisted("double", 2)
    message = str(info.value)
    assert "trial 2" in message and "damaged" in message and "daskperiment fsck" in message
    assert "run from" not in message
    with pytest.raises(DamagedTrial):
        ex.load_metric("m", 2)
    assert ex.load_metric("m", [1, 3]).columns.tolist() == [1, 3]


@pytest.mark.parametrize("damage", DAMAGES)
def test_experiment_opens_with_a_damaged_last_trial(
    damage: str, damaged_store: Path, python: Any
) -> None:
    DAMAGES[damage][0](damaged_store, 3)
    run = python.run(
        f"""
        import daskperiment
        ex = daskperiment.Experiment({EXPERIMENT!r}, backend={str(damaged_store)!r})
        a = ex.parameter("a")

        @ex.result
        def plus_one(a):
            return a + 1

        ex.set_parameters(a=10)
        report({{"value": plus_one(a).compute(), "trial": ex.trial_id,
                 "success": ex.get_history()["Success"].tolist()}})
        """
    ).check()
    # fresh ids after the damaged trial; the damaged one still shows (from the index)
    assert run.result() == {"value": 11, "trial": 4, "success": [True, True, True, True]}
    assert "trial 3" in run.stderr and "damaged" in run.stderr


def test_unknown_trial_id_names_the_existing_ids(damaged_store: Path, python: Any) -> None:
    shown = cli(python, damaged_store, "show", EXPERIMENT, "7")
    assert shown.returncode == 1
    assert "trial ids run from 1 to 3" in shown.stderr
    assert "no trial has run yet" not in shown.stderr
    # an instance created before another process recorded trials knows them too
    ex = daskperiment.Experiment(EXPERIMENT, backend=damaged_store)
    ex._last_trial_id = 0
    with pytest.raises(TrialNotFound, match="run from 1 to 3"):
        ex.get_trial(9)


def test_damaged_index_ref_is_ignored_and_rebuilt(damaged_store: Path, python: Any) -> None:
    index = ref_file(damaged_store, f"experiments/{EXPERIMENT}/index")
    index.write_text("garbage\n")
    log = cli(python, damaged_store, "log", EXPERIMENT, "--format", "json").check()
    assert [r["Success"] for r in json.loads(log.stdout)] == [True, True, True]

    ex = daskperiment.Experiment(EXPERIMENT, backend=damaged_store)
    a = ex.parameter("a")

    @ex.result
    def plus_one(a):
        return a + 1

    ex.set_parameters(a=5)
    assert plus_one(a).compute() == 6
    ex._flush_index()
    st = store.open(damaged_store)
    root = st.get(st.refs.get(f"experiments/{EXPERIMENT}/index"))  # valid again
    assert root["type"] == "daskperiment.history-index"
    assert st.fsck().ok


def test_damaged_index_object_is_ignored_and_rebuilt(damaged_store: Path, python: Any) -> None:
    st = store.open(damaged_store)
    root_oid = st.refs.get(f"experiments/{EXPERIMENT}/index")
    flip_byte(st, root_oid)
    log = cli(python, damaged_store, "log", EXPERIMENT, "--format", "json").check()
    assert [r["Result"] for r in json.loads(log.stdout)] == [3, 5, 7]


FOURTH_TRIAL = """
import sys
import daskperiment

ex = daskperiment.Experiment(EXPERIMENT, backend=sys.argv[1])
a = ex.parameter("a")

@ex.persist
def double(a):
    return a * 2

@ex.result
def plus_one(x):
    return x + 1

ex.set_parameters(a=1)  # the input of trial 1, whose purity entry is damaged
print("result", plus_one(double(a)).compute())
"""


def test_damaged_purity_log_is_rebuilt(damaged_store: Path, python: Any) -> None:
    log_refs = ref_file(damaged_store, f"experiments/{EXPERIMENT}/purity-log")
    batches = list(log_refs.iterdir())
    assert batches
    for ref in batches:
        ref.write_text("garbage\n")
    # A new process (this one remembers what it wrote) reads the damaged log.
    done = python.run(FOURTH_TRIAL.replace("EXPERIMENT", repr(EXPERIMENT)), str(damaged_store))
    assert "result 3" in done.check().output
    assert "changed with the same input" not in done.output
    st = store.open(damaged_store)
    readable = puritylog.entries(st, EXPERIMENT)
    # written anew at that process's exit flush, from trial 4: its two steps' entries
    assert sorted((step, e.trial_id, e.record) for (step, _), e in readable.items()) == [
        ("double", 4, record_oid(damaged_store, 4)),
        ("plus_one", 4, record_oid(damaged_store, 4)),
    ]
    assert (
        daskperiment.Experiment(EXPERIMENT, backend=damaged_store).get_history()["Success"].tolist()
        == [True] * 4
    )


def test_damaged_live_ref_is_skipped(damaged_store: Path) -> None:
    ex = daskperiment.Experiment(EXPERIMENT, backend=damaged_store)
    st = ex.store
    series_oid = st.refs.get(f"experiments/{EXPERIMENT}/trials/1")  # any object will do
    # a running trial 4 with one readable and one damaged live ref
    running = dict(st.get(record_oid(damaged_store, 3)), trial_id=4, status="running")
    running["metrics"] = {}
    running["process"] = {"host": "elsewhere", "pid": 1}
    st.refs.create(f"experiments/{EXPERIMENT}/trials/4", st.put(running))
    import pandas as pd

    good = st.put(pd.Series([1.0, 2.0], name="loss"))
    st.refs.set(f"experiments/{EXPERIMENT}/live/4/loss/step-a", good)
    st.refs.set(f"experiments/{EXPERIMENT}/live/4/acc/step-a", series_oid)
    ref_file(damaged_store, f"experiments/{EXPERIMENT}/live/4/acc/step-a").write_text("junk\n")
    assert ex.get_metric_keys(4) == ["loss"]
    assert ex.load_metric("loss", 4)[4].tolist() == [1.0, 2.0]


def test_damaged_cache_ref_is_a_miss_and_is_rebuilt(tmp_path: Path, dp_log: Any) -> None:
    path = tmp_path / "store"
    ex = daskperiment.Experiment("cache_damage_pj", backend=path)
    a = ex.parameter("a")
    calls = []

    @ex.persist(cache=True)
    def slow(a):
        calls.append(a)
        return a * 10

    @ex.result
    def total(x):
        return x + 1

    ex.set_parameters(a=4)
    assert total(slow(a)).compute() == 41
    refs = list((path / "refs" / "experiments" / "cache_damage_pj" / "cache" / "slow").iterdir())
    assert len(refs) == 1
    refs[0].write_text("garbage\n")

    assert total(slow(a)).compute() == 41  # ran again instead of failing
    assert calls == [4, 4]
    assert any("Cache entry of slow cannot be read" in m for m in dp_log.messages("WARNING"))
    assert store.open(path).refs.get(f"experiments/cache_damage_pj/cache/slow/{refs[0].name}")
    assert total(slow(a)).compute() == 41  # and is reused from the rebuilt entry
    assert calls == [4, 4]
