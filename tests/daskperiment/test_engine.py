"""The experiment engine's own behaviour: graphs, records, history index, allocation.

The seed walk-through, schedulers, failures and restore have their own modules; these tests
cover what the engine promises beyond them (see docs/design.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import pytest

import daskperiment
import daskperiment_store as store
from daskperiment import history, trial, trialgraph
from daskperiment import record as trial_record
from daskperiment.errors import (
    MetricNotFound,
    NotInTrial,
    ParameterUndefined,
    PickleRefused,
    StepNotFound,
    TrialNotFound,
)
from daskperiment.script import ScriptError, parse_argv, parse_value

REPO = Path(__file__).resolve().parents[2]


def memory_experiment(name: str) -> Any:
    """An experiment on a fresh in-memory store (fast; nothing on disk)."""
    return daskperiment.Experiment(id=name, backend=store.open(store.MemoryBackend()))


def two_steps(ex: Any) -> Any:
    a, b = ex.parameter("a"), ex.parameter("b")

    @ex
    def prepare_data(a, b):
        return a + b

    @ex.result
    def calculate_score(s):
        return 10 / s

    return calculate_score(prepare_data(a, b))


# --- construction ---------------------------------------------------------------------------


def test_constructing_and_reading_never_write(workdir: Path) -> None:
    ex = daskperiment.Experiment(id="untouched_pj")
    assert ex.trial_id == 0
    assert ex.get_history().empty
    assert list(ex.get_history().columns) == history.COLUMNS
    assert ex.get_history().index.name == "Trial ID"
    with pytest.raises(TrialNotFound):
        ex.get_parameters(trial_id=1)
    assert not (workdir / "daskperiment_cache").exists()


def test_first_trial_creates_the_local_store(workdir: Path) -> None:
    ex = daskperiment.Experiment(id="created_pj")
    s = two_steps(ex)
    ex.set_parameters(a=1, b=1)
    assert s.compute() == 5.0
    assert (workdir / "daskperiment_cache" / "created_pj" / "config").is_file()


def test_parameter_repr_follows_its_value() -> None:
    ex = memory_experiment("param_repr_pj")
    a = ex.parameter("a")
    assert repr(a) == "Parameter(a: Undefined)"
    ex.set_parameters(a=3)
    assert repr(a) == "Parameter(a: 3)"
    assert a.compute() == 3
    assert ex.parameter("a") is a


def test_parameter_outside_a_trial_has_no_value_in_the_graph() -> None:
    ex = memory_experiment("raw_graph_pj")
    s = two_steps(ex)
    ex.set_parameters(a=1, b=1)
    # dask.compute bypasses the trial: parameters are only ever injected into a trial's copy
    with pytest.raises(ParameterUndefined):
        dask.compute(s, scheduler="sync")
    assert ex.trial_id == 0


def test_intermediate_compute_gives_the_value_and_records_nothing() -> None:
    ex = memory_experiment("intermediate_pj")
    a = ex.parameter("a")

    @ex.persist
    def double(a):
        return 2 * a

    ex.set_parameters(a=4)
    assert double(a).compute() == 8
    assert ex.trial_id == 0


# --- graphs ---------------------------------------------------------------------------------


def test_plain_delayed_between_steps_and_records_of_every_step() -> None:
    """A plain dask task between steps gets bare values; every step's record still arrives."""
    ex = memory_experiment("mixed_graph_pj")
    a = ex.parameter("a")

    @ex.persist
    def make(a):
        ex.save_metric("made", epoch=0, value=a)
        return [a, a + 1]

    @ex.result
    def total(values):
        return sum(values)

    plain = dask.delayed(lambda xs: [x * 10 for x in xs])(make(a))
    ex.set_parameters(a=1)
    assert total(plain).compute() == 30
    record = ex.get_trial(1)
    assert sorted(record["steps"]) == ["make", "total"]
    assert ex.get_persisted("make", trial_id=1) == [1, 2]
    assert ex.load_metric("made", trial_id=1)[1].tolist() == [1]


def test_a_step_called_twice_in_one_graph() -> None:
    ex = memory_experiment("twice_pj")
    a = ex.parameter("a")

    @ex.persist
    def inc(x):
        return x + 1

    @ex.result
    def pair(x, y):
        return (x, y)

    ex.set_parameters(a=1)
    assert pair(inc(a), inc(inc(a))).compute() == (2, 3)
    steps = ex.get_trial(1)["steps"]
    assert sorted(steps) == ["inc", "inc#2", "inc#3", "pair"]
    assert sorted(ex.get_persisted(name, 1) for name in ("inc", "inc#2", "inc#3")) == [2, 2, 3]


def test_one_graph_gives_distinct_keys_per_trial() -> None:
    """Several trials of one graph may run at once on a cluster: keys never collide."""
    ex = memory_experiment("keys_pj")
    s = two_steps(ex)
    graph = trialgraph.TrialGraph(s, ex._parameters.by_key)
    context = trial.TrialContext("keys_pj", 1, 0, None)  # type: ignore[arg-type]
    first, keys1 = graph.build({"a": 1, "b": 2}, context)
    second, keys2 = graph.build({"a": 5, "b": 2}, context)
    assert not set(first) & set(second)
    assert keys1[0] in first and keys2[0] in second
    assert set(graph.graph) == set(s.__dask_graph__())  # the template is left untouched


def test_steps_records_come_back_from_processes_on_a_memory_store() -> None:
    """A store only the client can reach: workers hand persisted values and metrics back."""
    ex = daskperiment.Experiment(id="memory_processes_pj", backend="memory://engine-processes")
    x = ex.parameter("x")

    @ex.persist
    def make(x):
        ex.save_metric("pid", epoch=0, value=os.getpid())
        return np.arange(x)

    @ex.result
    def total(data):
        return int(data.sum())

    ex.set_parameters(x=5)
    assert total(make(x)).compute(scheduler="processes") == 10
    np.testing.assert_array_equal(ex.get_persisted("make", 1), np.arange(5))
    assert ex.load_metric("pid", 1)[1].tolist() != [os.getpid()]


# --- metrics --------------------------------------------------------------------------------


def test_metrics_of_several_keys_and_steps() -> None:
    ex = memory_experiment("metrics_pj")
    a = ex.parameter("a")

    @ex
    def first(a):
        for i in range(3):
            ex.save_metric("loss", epoch=i, value=float(i))
        ex.save_metric("lr", epoch=0, value=0.1)
        return a

    @ex.result
    def second(a):
        for i in range(3, 5):
            ex.save_metric("loss", epoch=i, value=float(i))
        return a

    ex.set_parameters(a=1)
    second(first(a)).compute()
    assert ex.get_metric_keys(1) == ["loss", "lr"]
    loss = ex.load_metric("loss", trial_id=1)
    assert loss.index.tolist() == [0, 1, 2, 3, 4]
    assert loss[1].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    with pytest.raises(MetricNotFound, match="'loss', 'lr'"):
        ex.load_metric("accuracy", trial_id=1)


def test_load_metric_aligns_trials_with_different_epochs() -> None:
    ex = memory_experiment("metric_align_pj")
    n = ex.parameter("n")

    @ex.result
    def run(n):
        for i in range(n):
            ex.save_metric("m", epoch=i, value=i * n)
        return n

    for value in (2, 3):
        ex.set_parameters(n=value)
        run(n).compute()
    both = ex.load_metric("m", trial_id=[1, 2])
    assert both.columns.tolist() == [1, 2]
    assert both.index.tolist() == [0, 1, 2]
    assert both[1].tolist()[:2] == [0, 2] and np.isnan(both[1].tolist()[2])
    assert both[2].tolist() == [0, 3, 6]


def test_current_trial_id_inside_a_step_and_not_in_plain_compute() -> None:
    ex = memory_experiment("current_id_pj")
    a = ex.parameter("a")

    @ex.result
    def which(a):
        return ex.current_trial_id

    ex.set_parameters(a=0)
    assert which(a).compute() == 1
    assert which(a).compute() == 2
    with pytest.raises(NotInTrial):
        _ = ex.current_trial_id


# --- records and history ------------------------------------------------------------------


def test_get_trial_record() -> None:
    ex = memory_experiment("record_pj")
    s = two_steps(ex)
    ex.set_parameters(a=1, b=4)
    s.compute(seed=3)
    rec = ex.get_trial(1)
    assert rec["id"] == 1 and rec["status"] == "success" and rec["seed"] == 3
    assert rec["params"] == {"a": 1, "b": 4}
    assert rec["result_type"] == "<class 'float'>"
    assert set(rec["digests"]) == {"parameters", "code", "environment", "result"}
    assert rec["digests"]["result"] == store.digest(2.0)
    step = rec["steps"]["prepare_data"]
    assert step["output"] == store.digest(5) and step["persisted"] is None
    assert step["reused"] is False
    assert rec["environment_summary"]["python"]
    with pytest.raises(TrialNotFound, match="trial ids run from 1 to 1"):
        ex.get_trial(2)
    with pytest.raises(StepNotFound):
        ex.get_persisted("no_such_step", trial_id=1)


def test_verbose_history_columns() -> None:
    ex = memory_experiment("verbose_pj")
    s = two_steps(ex)
    ex.set_parameters(a=1, b=1)
    s.compute(seed=5)
    verbose = ex.get_history(verbose=True)
    assert verbose.columns.tolist() == ["a", "b", *history.COLUMNS, *history.VERBOSE_COLUMNS]
    row = verbose.loc[1]
    assert row["Seed"] == 5 and row["Status"] == "success"
    assert row["Result Digest"] == store.digest(5.0)
    assert row["Reused Steps"] == ""


def run_trials(ex: Any, s: Any, n: int) -> None:
    for i in range(n):
        ex.set_parameters(a=i + 1, b=1)
        s.compute(scheduler="sync")


def test_history_index_is_written_in_batches_and_never_needed() -> None:
    ex = memory_experiment("index_pj")
    s = two_steps(ex)
    run_trials(ex, s, history.FLUSH_EVERY + 3)
    st = ex.store
    name = trial_record.index_ref(ex.id)
    assert st.refs.has(name)  # the first batch was flushed
    expected = ex.get_history()
    assert expected.index.tolist() == list(range(1, history.FLUSH_EVERY + 4))
    # a new reader with a stale index, no index, or a damaged index sees the same table
    for damage in ("stale", "missing", "damaged"):
        if damage == "missing":
            st.refs.delete(name)
        elif damage == "damaged":
            st.refs.set(name, st.put({"chunks": {"0": "not a link"}}))
        reader = history.HistoryReader(ex.id)
        rows = reader.rows(st, reader.trial_ids(st))
        table = history.frame(rows, ["a", "b"])
        pd.testing.assert_frame_equal(table, expected)


def test_index_flush_merges_concurrent_writers() -> None:
    st = store.open(store.MemoryBackend())

    def row(trial_id: int) -> dict[str, Any]:
        return {
            "trial_id": trial_id,
            "record": "0" * 32,
            "status": "success",
            "params": {},
            "result": trial_id,
            "result_type": "<class 'int'>",
            "finished": 0.0,
            "process_time": 0.0,
            "description": None,
            "seed": 0,
            "digests": {},
            "reused": [],
        }

    history.flush_index(st, "merge_pj", [row(1), row(300)])
    history.flush_index(st, "merge_pj", [row(2)])
    reader = history.HistoryReader("merge_pj")
    assert sorted(reader._load_index(st)) == [1, 2, 300]


def test_running_trial_of_a_dead_process_shows_as_interrupted() -> None:
    ex = memory_experiment("dead_pj")
    s = two_steps(ex)
    run_trials(ex, s, 1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    st = ex.store
    record = dict(st.get(st.refs.get(trial_record.trial_ref(ex.id, 1))))
    record.update(trial_id=2, status="running", process={**record["process"], "pid": dead.pid})
    st.refs.create(trial_record.trial_ref(ex.id, 2), st.put(record))
    run_trials(ex, s, 1)  # the dead trial does not block the next id
    table = ex.get_history(verbose=True)
    assert table.index.tolist() == [1, 2, 3]
    assert table.loc[2, "Status"] == "interrupted"
    assert not table.loc[2, "Success"]
    assert table.loc[2, "Description"].startswith("Interrupted")
    assert table.loc[3, "Success"]


def test_running_trial_of_a_live_process_shows_as_running() -> None:
    ex = memory_experiment("live_pj")
    s = two_steps(ex)
    run_trials(ex, s, 1)
    st = ex.store
    record = dict(st.get(st.refs.get(trial_record.trial_ref(ex.id, 1))))
    record.update(trial_id=2, status="running", finished=None, process_time=None)
    record["process"] = trial_record.process_identity()
    st.refs.create(trial_record.trial_ref(ex.id, 2), st.put(record))
    table = ex.get_history(verbose=True)
    assert table.loc[2, "Status"] == "running"
    assert table.loc[2, "Description"] == "Running"
    assert pd.isna(table.loc[2, "Finished"])


WORKER = """
import sys
import daskperiment

ex = daskperiment.Experiment(id="parallel_pj", backend=sys.argv[1])
a = ex.parameter("a")


@ex.result
def ident(a):
    return a


r = ident(a)
for i in range(int(sys.argv[2])):
    ex.set_parameters(a=i)
    r.compute(scheduler="sync")
"""


def test_parallel_processes_get_distinct_trial_ids(workdir: Path) -> None:
    script = workdir / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(workdir / "shared"), "8"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(3)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    ex = daskperiment.Experiment(id="parallel_pj", backend=workdir / "shared")
    table = ex.get_history()
    assert table.index.tolist() == list(range(1, 25))
    assert table["Success"].all()
    assert sorted(table["a"].tolist()) == sorted(list(range(8)) * 3)


def test_list_experiments(workdir: Path) -> None:
    st = store.open(workdir / "shared")
    for name, n in (("first_pj", 2), ("second_pj", 1)):
        ex = daskperiment.Experiment(id=name, backend=st)
        run_trials(ex, two_steps(ex), n)
    listed = daskperiment.list_experiments(workdir / "shared")
    assert [(e["id"], e["trials"]) for e in listed] == [("first_pj", 2), ("second_pj", 1)]
    assert all(isinstance(e["last_activity"], pd.Timestamp | object) for e in listed)


# --- script mode ----------------------------------------------------------------------------


def test_parse_command_line_values() -> None:
    assert parse_value("1") == 1 and parse_value("x y") == "x y" and parse_value("'1'") == "1"
    assert parse_argv(["a=1", "--seed", "3", "b=[1]"]) == ({"a": 1, "b": [1]}, 3)
    assert parse_argv(["--seed=4"]) == ({}, 4)
    with pytest.raises(ScriptError, match="name=value"):
        parse_argv(["oops"])
    with pytest.raises(ScriptError, match="--seed"):
        parse_argv(["--seed", "x"])


def test_parameters_of_any_type_are_recorded_exactly() -> None:
    ex = memory_experiment("param_types_pj")
    names = ["f", "arr", "frame", "obj"]
    params = [ex.parameter(n) for n in names]

    @ex.result
    def count(*values):
        return len(values)

    values = {
        "f": np.float64(0.5),
        "arr": np.arange(3),
        "frame": pd.DataFrame({"x": [1, 2]}),
        "obj": {1, 2},
    }
    ex.set_parameters(**values)
    assert count(*params).compute() == 4
    with pytest.raises(PickleRefused, match="parameter set of trial 1 is stored as a pickle"):
        ex.get_parameters(trial_id=1)  # a set holding a set: only pickle holds it
    got = ex.get_parameters(trial_id=1, unpickle=True)
    assert got["f"] == 0.5
    np.testing.assert_array_equal(got["arr"], np.arange(3))
    pd.testing.assert_frame_equal(got["frame"], values["frame"])
    assert got["obj"] == {1, 2}
    table = ex.get_history()
    assert table.loc[1, "f"] == 0.5
    assert table.loc[1, "arr"] == "array([0, 1, 2])"


CODE_V1 = """
import daskperiment

ex = daskperiment.Experiment(id="code_pj")
a = ex.parameter("a")


@ex.result
def score(a):
    return a * {factor}


ex.set_parameters(a=2)
report(score(a).compute())
"""


def test_code_change_since_the_last_trial_is_logged_in_a_new_process(python: Any) -> None:
    first = python.run(CODE_V1.format(factor=2)).check()
    assert first.result() == 4
    same = python.run(CODE_V1.format(factor=2)).check()
    assert "Code context has been changed" not in same.output
    changed = python.run(CODE_V1.format(factor=3)).check()
    lines = [line.split("] ", 2)[-1] for line in changed.lines if "[WARNING]" in line]
    assert lines[0] == "Code context has been changed: score"
    assert "-    return a * 2" in lines and "+    return a * 3" in lines
    ex = daskperiment.Experiment(id="code_pj")
    assert "a * 2" in ex.get_code(trial_id=1) and "a * 3" in ex.get_code(trial_id=3)
    # one code tree object per distinct code: trials 1 and 2 share theirs
    digests = ex.get_history(verbose=True)["Code Digest"].tolist()
    assert digests[0] == digests[1] != digests[2]


def test_trial_ids_from_the_history_index_are_accepted() -> None:
    ex = memory_experiment("numpy_ids_pj")
    n = ex.parameter("n")

    @ex.result
    def run(n):
        ex.save_metric("m", epoch=0, value=n)
        return n

    for value in (1, 2):
        ex.set_parameters(n=value)
        run(n).compute()
    ids = ex.get_history().index  # numpy int64 values
    assert ex.load_metric("m", ids[0])[1].tolist() == [1]
    assert ex.load_metric("m", ids).columns.tolist() == [1, 2]
    assert ex.get_parameters(ids[1]) == {"n": 2}
    assert ex.get_trial(ids[1])["id"] == 2


def test_a_writer_adds_rows_the_index_lacks() -> None:
    ex = memory_experiment("heal_pj")
    s = two_steps(ex)
    run_trials(ex, s, 3)
    ex._flush_index()
    st = ex.store
    name = trial_record.index_ref(ex.id)
    st.refs.delete(name)  # as if the writer had died before flushing
    reader = daskperiment.Experiment(id="heal_reader_pj", backend=st)  # unrelated: never writes
    reader.get_history()
    assert not st.refs.has(trial_record.index_ref("heal_reader_pj"))
    assert ex.get_history().index.tolist() == [1, 2, 3]
    # the rows ex had to read from records go into its next flush
    ex._reader._final_rows.clear()
    ex.get_history()
    ex._flush_index()
    assert sorted(history.HistoryReader(ex.id)._load_index(st)) == [1, 2, 3]


def test_history_times_print_to_the_microsecond_like_the_seed() -> None:
    ex = memory_experiment("times_pj")
    s = two_steps(ex)
    ex.set_parameters(a=1, b=2)
    s.compute()
    process_time = ex.get_history()["Process Time"]
    assert process_time.dtype.kind == "m"
    assert (process_time.dt.nanoseconds == 0).all()
    assert len(str(process_time.iloc[0]).rsplit(".", 1)[1]) == 6  # 00:00:00.014183


def test_a_final_record_that_cannot_be_written_records_the_trial_as_failed() -> None:
    """A trial whose result cannot be stored (here the first write after the steps fails with
    ENOSPC, as on a full disk) is recorded as failed with that cause, not left running."""
    import errno

    ex = memory_experiment("full_disk_pj")
    s = two_steps(ex)
    ex.set_parameters(a=1, b=2)
    backend = ex.store.backend
    real_put_if_absent = backend.put_if_absent
    calls = {"n": 0}

    @ex.result
    def calculate_score(v):
        def failing_once(key, data):
            backend.put_if_absent = real_put_if_absent  # only the first write fails
            raise OSError(errno.ENOSPC, "No space left on device")

        backend.put_if_absent = failing_once
        calls["n"] += 1
        return np.arange(5) * v  # an array result: stored as its own object

    result = calculate_score(s)
    with pytest.raises(OSError, match="No space left"):
        result.compute()
    row = ex.get_history().loc[1]
    assert not row["Success"]
    assert "No space left" in row["Description"]
    assert ex.get_trial(1)["status"] == "failed"
    assert calls["n"] == 1
    ex.set_parameters(a=2, b=2)
    s.compute()
    assert ex.trial_id == 2


def test_trial_ids_that_are_not_whole_numbers_are_refused_not_coerced() -> None:
    ex = memory_experiment("ids_pj")
    s = two_steps(ex)
    for value in (1, 2):
        ex.set_parameters(a=value, b=2)
        s.compute()
    for bad in ("12", "1", 1.7, True, 2.0):
        with pytest.raises(TrialNotFound, match="not found"):
            ex.get_parameters(trial_id=bad)
    with pytest.raises(TrialNotFound, match="'12' not found"):
        ex.get_trial("12")
    with pytest.raises(TrialNotFound, match="'12' not found"):  # not trials 1 and 2
        ex.load_metric("loss", "12")
    assert ex.get_parameters(trial_id=np.int64(2)) == {"a": 2, "b": 2}
