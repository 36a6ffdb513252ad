"""dask's own entry points run and record trials exactly like ``result.compute()``.

``dask.compute(r)``, ``dask.compute(r1, r2)`` (one or two experiments), ``r.persist()``,
``client.compute(r)`` and a result embedded in a larger ``dask.delayed`` graph, each under
the sync, threads and distributed schedulers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import pytest
from clusters import process_cluster

import daskperiment
from daskperiment.errors import ParameterUndefined

SCHEDULERS = ["sync", "threads", "distributed"]


def build(ex: Any) -> Any:
    """a + noise, doubled; ``noise`` has a default (the issue's failing case)."""
    a = ex.parameter("a")
    noise = ex.parameter("noise", default=3)

    @ex.persist
    def add(a, noise):
        ex.save_metric("seen", epoch=0, value=ex.current_trial_id)
        return a + noise

    @ex.result
    def double(x):
        if x < 0:
            raise ValueError("negative total")
        return x * 2

    return double(add(a, noise))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with process_cluster(
        tmp_path_factory.mktemp("cluster"), threads_per_worker=2, set_as_default=False
    ) as client:
        yield client


@pytest.fixture(params=SCHEDULERS)
def scheduler(request: pytest.FixtureRequest) -> Any:
    if request.param == "distributed":
        return request.getfixturevalue("client")
    return request.param


def make(tmp_path: Path, name: str = "native") -> tuple[Any, Any]:
    ex = daskperiment.Experiment(name, backend=tmp_path / name)
    result = build(ex)
    ex.set_parameters(a=1)
    return ex, result


def check_trial(ex: Any, trial_id: int, expected: int, a: int = 1) -> None:
    hist = ex.get_history()
    row = hist.loc[trial_id]
    assert row["Result"] == expected
    assert row["a"] == a and row["noise"] == 3  # the default applied
    assert bool(row["Success"]) is True
    assert ex.get_persisted("add", trial_id) == expected // 2
    assert ex.load_metric("seen", trial_id)[trial_id].tolist() == [trial_id]


def test_dask_compute_one_result_records_one_trial(tmp_path: Path, scheduler: Any) -> None:
    ex, r = make(tmp_path)
    assert dask.compute(r, scheduler=scheduler) == (8,)
    assert ex.trial_id == 1
    check_trial(ex, 1, 8)


def test_dask_compute_two_experiments(tmp_path: Path, scheduler: Any) -> None:
    ex1, r1 = make(tmp_path, "one")
    ex2, r2 = make(tmp_path, "two")
    ex2.set_parameters(a=10)
    assert dask.compute(r1, r2, scheduler=scheduler) == (8, 26)
    assert (ex1.trial_id, ex2.trial_id) == (1, 1)
    check_trial(ex1, 1, 8)
    check_trial(ex2, 1, 26, a=10)


def test_two_results_of_one_experiment_are_two_trials(tmp_path: Path, scheduler: Any) -> None:
    ex, r = make(tmp_path)
    r2 = build(ex)
    out = dask.compute(r, r2, r, scheduler=scheduler)
    assert out == (8, 8, 8)
    assert ex.trial_id == 2  # the same object twice is one task, hence one trial
    assert sorted(ex.get_history().index) == [1, 2]


def test_persist_and_embedding(tmp_path: Path, scheduler: Any) -> None:
    ex, r = make(tmp_path)
    (persisted,) = dask.persist(r, scheduler=scheduler)
    assert persisted.compute(scheduler=scheduler) == 8
    assert ex.trial_id == 1
    # A new result object: under distributed, a live future of r's key is r's value (dask's
    # rule: same key, same value), so embedding r itself would reuse trial 1's result.
    outer = dask.delayed(lambda v: v + 1)(build(ex))
    assert outer.compute(scheduler=scheduler) == 9
    assert ex.trial_id == 2
    check_trial(ex, 2, 8)


def test_r_persist_sync(tmp_path: Path) -> None:
    ex, r = make(tmp_path)
    assert r.persist(scheduler="sync").compute() == 8
    check_trial(ex, 1, 8)


def test_client_compute_records_a_trial(tmp_path: Path, client: Any) -> None:
    ex, r = make(tmp_path)
    assert client.compute(r).result() == 8
    assert ex.trial_id == 1  # written by a worker, seen by the client
    check_trial(ex, 1, 8)
    ex.set_parameters(a=5)
    assert client.persist(r) is not None
    assert client.gather(client.compute(build(ex))) == 16


def test_parameters_taken_when_dask_takes_the_graph(tmp_path: Path) -> None:
    ex, r = make(tmp_path)
    outer = dask.delayed(lambda v: v)(r)  # embedded now: a=1
    ex.set_parameters(a=100)
    assert outer.compute(scheduler="sync") == 8
    assert dask.compute(r, scheduler="sync") == (206,)


def test_undefined_parameter_raises_before_any_trial(tmp_path: Path) -> None:
    ex = daskperiment.Experiment("undef", backend=tmp_path / "undef")
    r = build(ex)  # 'a' has no value
    with pytest.raises(ParameterUndefined, match="'a'"):
        dask.compute(r)
    assert ex.trial_id == 0


def test_failing_trial_is_recorded_and_raises(tmp_path: Path, scheduler: Any, dp_log: Any) -> None:
    ex, r = make(tmp_path)
    ex.set_parameters(a=-10)
    with pytest.raises(ValueError, match="negative total"):
        dask.compute(r, scheduler=scheduler)
    hist = ex.get_history()
    assert hist.loc[1, "Success"] == False  # noqa: E712 - numpy bool
    assert "negative total" in hist.loc[1, "Description"]
    if not hasattr(scheduler, "submit"):  # a worker logs in its own process
        assert "Started Experiment (trial id=1)" in dp_log.messages("INFO")


def test_memory_store_on_process_workers_says_what_to_do(client: Any) -> None:
    ex = daskperiment.Experiment("mem", backend="memory://native-mem")
    r = build(ex)
    ex.set_parameters(a=1)
    with pytest.raises(Exception, match="worker process cannot reach"):
        client.compute(r).result()


# ---------------------------------------------------------------------------------------
# dask.compute(r) runs the trial as r.compute() does: on the calling thread, its steps on
# the scheduler r.compute() picks (daskperiment/native.py, TrialScheduler).
# ---------------------------------------------------------------------------------------

#: (step name, thread name) of each step run, in this process
RAN_ON: list[tuple[str, str]] = []


def build_watched(ex: Any) -> Any:
    """``build`` whose steps note the thread they run on."""
    a = ex.parameter("a")

    @ex
    def add_one(a):
        RAN_ON.append(("add_one", threading.current_thread().name))
        return a + 1

    @ex.result
    def times_ten(x):
        RAN_ON.append(("times_ten", threading.current_thread().name))
        if x < 0:
            raise ValueError("negative input")
        return x * 10

    return times_ten(add_one(a))


def pools(run: Any) -> set[str]:
    """The thread pools (names without the thread number) the steps of ``run()`` ran on."""
    RAN_ON.clear()
    run()
    assert [step for step, _ in RAN_ON] == ["add_one", "times_ten"]
    return {name.rsplit("_", 1)[0] for _, name in RAN_ON}


def started_on(log: Any) -> list[str]:
    return [r.threadName for r in log.records if r.getMessage().startswith("Started Experiment")]


def test_default_scheduler_runs_the_trial_on_the_calling_thread(
    tmp_path: Path, dp_log: Any
) -> None:
    ex = daskperiment.Experiment("watched", backend=tmp_path / "w")
    r = build_watched(ex)
    ex.set_parameters(a=1)
    by_compute = pools(r.compute)
    by_dask = pools(lambda: dask.compute(r))
    # r.compute() runs the steps on dask's default thread pool; dask.compute(r) runs the
    # trial on this thread, whose steps then use that same pool (a trial run inside a pool
    # thread would start a pool of its own for its steps).
    assert by_dask == by_compute
    assert threading.current_thread().name not in by_compute
    me = threading.current_thread().name
    assert started_on(dp_log) == [me, me]
    assert ex.trial_id == 2
    assert ex.get_history()["Result"].tolist() == [20, 20]


def test_explicit_sync_runs_the_steps_synchronously(tmp_path: Path) -> None:
    ex = daskperiment.Experiment("watched", backend=tmp_path / "w")
    r = build_watched(ex)
    ex.set_parameters(a=2)
    me = threading.current_thread().name
    assert pools(lambda: r.compute(scheduler="sync")) == {me}
    assert pools(lambda: dask.compute(r, scheduler="sync")) == {me}
    with dask.config.set(scheduler="sync"):
        assert pools(lambda: dask.compute(r)) == {me}
        assert pools(lambda: dask.delayed(lambda v: v)(r).compute()) == {me}
    assert ex.get_history()["Result"].tolist() == [30, 30, 30, 30]


def test_each_dask_compute_is_a_trial_with_the_parameters_of_that_moment(
    tmp_path: Path,
) -> None:
    ex, r = make(tmp_path)
    assert dask.compute(r) == (8,)
    assert dask.compute(r) == (8,)  # the same values again: a second trial all the same
    ex.set_parameters(a=2)
    assert dask.compute(r) == (10,)
    ex.set_parameters(a=1)  # back to an equal value
    assert dask.compute(r) == (8,)
    assert ex.get_history()["a"].tolist() == [1, 1, 2, 1]
    assert ex.trial_id == 4


def test_a_result_mixes_with_other_collections(tmp_path: Path) -> None:
    ex, r = make(tmp_path)
    other = dask.delayed(lambda: "other")()
    # neither order is refused as mixing default schedulers
    assert dask.compute(r, other) == (8, "other")
    assert dask.compute(other, r, {"n": 1}) == ("other", 8, {"n": 1})
    assert dask.compute([r, 5]) == ([8, 5],)
    assert ex.trial_id == 3
    check_trial(ex, 3, 8)


def test_default_scheduler_failure_is_recorded_like_compute(tmp_path: Path, dp_log: Any) -> None:
    ex = daskperiment.Experiment("watched", backend=tmp_path / "w")
    r = build_watched(ex)
    ex.set_parameters(a=-5)
    with pytest.raises(ValueError, match="negative input"):
        r.compute()
    with pytest.raises(ValueError, match="negative input"):
        dask.compute(r)
    hist = ex.get_history()
    assert hist["Success"].tolist() == [False, False]
    assert hist.loc[1, "Description"] == hist.loc[2, "Description"]
    assert "negative input" in hist.loc[2, "Description"]
    failed = [m for m in dp_log.messages("WARNING") if m.startswith("Failed Experiment")]
    assert [m.split(":")[0] for m in failed] == [
        "Failed Experiment (trial id=1)",
        "Failed Experiment (trial id=2)",
    ]
    assert failed[0].split(":", 1)[1] == failed[1].split(":", 1)[1]


def test_scheduler_keywords_reach_the_steps(tmp_path: Path) -> None:
    ex = daskperiment.Experiment("watched", backend=tmp_path / "w")
    r = build_watched(ex)
    ex.set_parameters(a=3)
    # num_workers goes to dask's threaded scheduler, as r.compute(num_workers=1) passes it
    assert pools(lambda: dask.compute(r, num_workers=1)) == pools(lambda: r.compute(num_workers=1))
    assert ex.trial_id == 2


def test_processes_scheduler_records_the_trial_like_compute(tmp_path: Path) -> None:
    ex, r = make(tmp_path)
    assert r.compute(scheduler="processes") == 8
    # the trial task runs in a worker process, which writes the record to the shared store
    assert dask.compute(r, scheduler="processes") == (8,)
    assert ex.trial_id == 2
    check_trial(ex, 1, 8)
    check_trial(ex, 2, 8)
    assert ex.get_trial(2)["process"]["pid"] != os.getpid()
