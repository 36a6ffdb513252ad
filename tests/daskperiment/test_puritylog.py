"""The purity log (daskperiment/puritylog.py): one batch per flush, merged by level; what is
remembered for an input is the entry of the highest trial id, whatever the order of batches;
big batches carry a key array; stores written before the log keep warning; concurrent writers
merging at once lose no entry."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

import daskperiment
import daskperiment_store as store
from daskperiment import history, puritylog
from daskperiment import record as trial_record

WARNING = "Experiment step result is changed with the same input"
EXP = "plog_pj"


def entry(n: int, output: str = "o", trial_id: int | None = None, step: str = "s") -> Any:
    return puritylog.Entry(step, f"{n:032x}", f"{output}{n}", n if trial_id is None else trial_id,
                           None)  # fmt: skip


def fresh_table(st: store.Store, experiment_id: str = EXP) -> puritylog.Table:
    """What a new process would load."""
    t = puritylog.Table()
    puritylog.refresh(st, experiment_id, t)
    return t


def log_names(st: store.Store, experiment_id: str = EXP) -> list[str]:
    return st.refs.names(trial_record.purity_log_prefix(experiment_id))


def test_one_batch_per_record_call_and_levels_merge(tmp_path: Path) -> None:
    st = store.open(tmp_path / "s")
    for n in range(1, 101):
        assert puritylog.record(st, EXP, [entry(n), entry(n, step="t")]) == 2
        # never more than MERGE_AT - 1 batches of a level stay, past each call
        levels: dict[str, int] = {}
        for name in log_names(st):
            level = name.rpartition("/")[2].partition("-")[0]
            levels[level] = levels.get(level, 0) + 1
        assert all(count < puritylog.MERGE_AT for count in levels.values()), levels
    assert len(log_names(st)) < 12  # 100 flushes: 1 + 4 at level 1, 4 at level 0
    found = puritylog.entries(st, EXP)
    assert len(found) == 200
    assert found[("s", f"{7:032x}")] == entry(7)
    t = fresh_table(st)
    assert all(t.get(s, i) == (e.trial_id + 1, puritylog.output_hash(e.output))
               for (s, i), e in found.items())  # fmt: skip
    assert st.fsck().ok
    # merged-away batches are garbage: gc removes them and every entry stays
    st.gc(grace=0)
    assert len(puritylog.entries(st, EXP)) == 200


def test_the_highest_trial_is_remembered_in_any_order(tmp_path: Path) -> None:
    st = store.open(tmp_path / "s")
    puritylog.record(st, EXP, [entry(1, "late", trial_id=9)])
    # a later call with an earlier trial's entry for the same input is left out...
    assert puritylog.record(st, EXP, [entry(1, "early", trial_id=3)]) == 0
    # ...but a batch holding it (another writer's) does not change what is remembered
    other = store.open(tmp_path / "s")
    puritylog._write_batch(other, EXP, [entry(1, "early", trial_id=3)], 0)
    assert puritylog.entries(st, EXP)[("s", f"{1:032x}")].output == "late1"
    assert fresh_table(st).get("s", f"{1:032x}") == (10, puritylog.output_hash("late1"))
    # within one batch too: one entry per input, the latest
    puritylog.record(st, EXP, [entry(2, "a", trial_id=5), entry(2, "b", trial_id=4)])
    assert puritylog.entries(st, EXP)[("s", f"{2:032x}")].output == "a2"


def test_a_big_batch_carries_its_key_array(tmp_path: Path) -> None:
    st = store.open(tmp_path / "s")
    n = puritylog.INLINE_MAX + 50
    puritylog.record(st, EXP, [entry(i) for i in range(1, n + 1)])
    (name,) = log_names(st)
    header = st.get(st.refs.get(name))
    assert isinstance(header["keys"], store.Link) and isinstance(header["entries"], store.Link)
    assert header["count"] == n
    assert st.get(header["keys"].oid).shape == (n, 3)
    t = fresh_table(st)
    assert len(t.known) == n
    assert t.get("s", f"{5:032x}") == (6, puritylog.output_hash("o5"))
    assert t.get("s", f"{n + 1:032x}") is None
    assert len(puritylog.entries(st, EXP)) == n


def test_a_damaged_batch_is_skipped_and_left_for_fsck(tmp_path: Path) -> None:
    st = store.open(tmp_path / "s")
    for n in range(1, puritylog.MERGE_AT):
        puritylog.record(st, EXP, [entry(n)])
    damaged = log_names(st)[0]
    (tmp_path / "s" / "refs" / damaged).write_text("garbage\n")
    t = fresh_table(st)
    assert damaged in t.unreadable and len(t.known) == puritylog.MERGE_AT - 2
    puritylog.record(st, EXP, [entry(100)])  # a full level: the readable ones are merged
    names = log_names(st)
    assert damaged in names and len(names) == 2
    assert [n.rpartition("/")[2][0] for n in names if n != damaged] == ["1"]
    assert len(puritylog.entries(st, EXP)) == puritylog.MERGE_AT - 1
    assert not st.fsck().ok  # the garbage ref is reported, not silently removed


def test_a_batch_of_a_newer_version_is_skipped_with_a_clear_message(
    tmp_path: Path, dp_log: Any
) -> None:
    st = store.open(tmp_path / "s")
    body = {"type": puritylog.BATCH_TYPE, "version": 99, "level": 0, "count": 0, "entries": []}
    st.refs.create(trial_record.purity_log_prefix(EXP) + "0-1-future", st.put(body))
    logger = logging.getLogger("daskperiment")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        assert fresh_table(st).known == {}
    finally:
        logger.setLevel(level)
    assert any("newer than this daskperiment reads" in m for m in dp_log.messages())


PIPELINE = """
import sys
import daskperiment

ex = daskperiment.Experiment("plog_pj", backend=sys.argv[1])
a = ex.parameter("a")

@ex.result
def step(a):
    return a * int(sys.argv[2])

ex.set_parameters(a=1)
print("result", step(a).compute(seed=1))
"""


@pytest.mark.parametrize("remembered, warned", [("same", False), ("other", True)])
def test_a_store_written_before_the_log_still_warns(
    python: Any, workdir: Path, remembered: str, warned: bool
) -> None:
    """A per-input purity ref (as stores written before the log hold) is read: a step whose
    output differs from the one it names warns, the same output does not."""
    first = python.run(PIPELINE, str(workdir / "first"), "2").check()
    assert "result 2" in first.output
    st = store.open(workdir / "first")
    (step,) = st.get(st.refs.get(trial_record.trial_ref(EXP, 1)))["steps"].values()
    old = store.open(workdir / "old")
    output = step["output"] if remembered == "same" else "f" * 32
    marker = old.put({"type": "daskperiment.purity", "output": output})
    old.refs.create(trial_record.purity_ref(EXP, "step", step["inputs"]), marker)
    again = python.run(PIPELINE, str(workdir / "old"), "2").check()
    assert (WARNING in again.output) is warned
    # the trial's entry is in the log now (when it warned); the old ref is left as it was
    found = puritylog.entries(old, EXP)
    assert (("step", step["inputs"]) in found) is warned
    assert old.refs.get(trial_record.purity_ref(EXP, "step", step["inputs"])) == marker


def test_many_flushes_of_a_real_experiment_warn_as_before(
    tmp_path: Path, dp_log: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush after every trial: levels merge while the experiment runs, and a repeated
    input far back still warns exactly when its output changed."""
    monkeypatch.setattr(history, "FLUSH_EVERY", 1)
    ex = daskperiment.Experiment(id=EXP, backend=tmp_path / "s")
    a = ex.parameter("a")
    shift = {"by": 0}

    @ex.result
    def step(a):
        return a + shift["by"]

    result = step(a)
    for value in range(80):
        ex.set_parameters(a=value)
        result.compute()
    assert len(log_names(ex.store)) < 16
    assert sum(WARNING in m for m in dp_log.messages()) == 0
    ex.set_parameters(a=3)
    result.compute()  # same input, same output
    shift["by"] = 1
    result.compute()  # same input, another output
    assert sum(WARNING in m for m in dp_log.messages()) == 1
    found = puritylog.entries(ex.store, EXP)
    assert len(found) == 80
    (changed,) = [e for e in found.values() if e.trial_id == 82]
    record = ex.store.get(ex.store.refs.get(trial_record.trial_ref(EXP, 82)))
    assert changed.record == ex.store.refs.get(trial_record.trial_ref(EXP, 82))
    assert changed.output == record["steps"]["step"]["output"]


WRITER = """
import sys, time
import daskperiment_store as store
from daskperiment import puritylog

st = store.open(sys.argv[1])
me = int(sys.argv[2])
for n in range(60):
    # own inputs, and one input every writer gives an output for (trial id decides)
    batch = [puritylog.Entry("s", f"{me:04x}{n:028x}", f"out{me}-{n}", me * 1000 + n, None),
             puritylog.Entry("shared", "0" * 32, f"w{me}-{n}", me * 1000 + n, None)]
    puritylog.record(st, "plog_pj", batch)
print("done")
"""


def test_concurrent_writers_merging_lose_no_entry(python: Any, workdir: Path) -> None:
    path = workdir / "s"
    store.open(path)
    procs = [python.popen(WRITER.replace("sys.argv[1]", repr(str(path)))
                          .replace("int(sys.argv[2])", str(me)), name=f"w{me}.py")
             for me in range(1, 5)]  # fmt: skip
    deadline = time.monotonic() + 120
    for proc in procs:
        proc.wait(max(1, deadline - time.monotonic()))
    for me, proc in enumerate(procs, 1):
        assert proc.returncode == 0, (workdir / f"w{me}.py.out").read_text()
    st = store.open(path)
    found = puritylog.entries(st, EXP)
    assert {k for k in found if k[0] == "s"} == {
        ("s", f"{me:04x}{n:028x}") for me in range(1, 5) for n in range(60)
    }
    assert found[("shared", "0" * 32)].output == "w4-59"  # the highest trial id
    assert len(log_names(st)) < 40
    assert st.fsck().ok
