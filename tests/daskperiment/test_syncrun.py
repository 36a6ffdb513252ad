"""A synchronous trial without dask's local scheduler (daskperiment/syncrun.py).

Every trial test runs the same pipeline twice, on two stores of one experiment id: once on
the lean path (``scheduler="sync"``, nothing watching) and once with a no-op dask
``Callback`` active, which makes the trial go through dask's ``get_sync`` as before. Both
must give the same value or exception, the same record (times and process aside) and the
same log lines; which path ran is told by counting calls of ``dask.local.get_async``.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import random
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import dask
import dask.local
import dask.threaded
import pytest
from dask.callbacks import Callback
from dask.diagnostics import ProgressBar

import daskperiment

# ---------------------------------------------------------------------------------------
# Which path ran
# ---------------------------------------------------------------------------------------


@pytest.fixture
def async_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The graphs dask's local scheduler (``get_async``, behind ``get_sync``) was given."""
    calls: list[Any] = []
    real = dask.local.get_async

    def counting(submit: Any, workers: Any, dsk: Any, result: Any, **kwargs: Any) -> Any:
        calls.append(dict(dsk if isinstance(dsk, Mapping) else dsk.__dask_graph__()))
        return real(submit, workers, dsk, result, **kwargs)

    monkeypatch.setattr(dask.local, "get_async", counting)
    return calls


class Lines(logging.Handler):
    """The messages of the ``daskperiment`` logger while it is attached."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def captured() -> Iterator[Lines]:
    handler = Lines()
    logging.getLogger("daskperiment").addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger("daskperiment").removeHandler(handler)


@dataclass
class Outcome:
    value: Any
    record: dict[str, Any]
    log: list[str]
    scheduled: int
    ex: Any


def run_trial(
    build: Callable[[Any], Any],
    params: dict[str, Any],
    calls: list[Any],
    through_dask: bool,
    trials: int = 1,
    seed: int = 7,
) -> Outcome:
    """``trials`` trials of ``build(ex)`` on a new store; the last one's outcome."""
    ex = daskperiment.Experiment(id="syncrun_pj", backend=f"memory://syncrun-{uuid.uuid4().hex}")
    result = build(ex)
    ex.set_parameters(**params)
    watching = Callback() if through_dask else contextlib.nullcontext()
    for _ in range(trials):
        before = len(calls)
        with captured() as log, watching:
            try:
                value: Any = result.compute(scheduler="sync", seed=seed)
            except BaseException as exc:  # noqa: BLE001 - compared between the paths
                value = exc
    return Outcome(value, ex.get_trial(trials), log.lines, len(calls) - before, ex)


_VOLATILE = {"started", "finished", "process_time", "global_id", "process", "duration"}


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its times and process; steps as a sorted list (two calls of one step
    on independent branches may run in either order, so ``name#2`` may go to either)."""
    out = {k: v for k, v in record.items() if k not in _VOLATILE}
    out["steps"] = sorted(
        json.dumps({k: v for k, v in step.items() if k not in _VOLATILE}, sort_keys=True)
        for step in record["steps"].values()
    )
    return out


def same_on_both_paths(
    build: Callable[[Any], Any], params: dict[str, Any], calls: list[Any], trials: int = 1
) -> Outcome:
    """Run on both paths, assert they agree and that the lean one skipped dask; lean's."""
    lean = run_trial(build, params, calls, through_dask=False, trials=trials)
    assert lean.scheduled == 0, "the synchronous trial went through dask's scheduler"
    ref = run_trial(build, params, calls, through_dask=True, trials=trials)
    assert ref.scheduled == 1
    if isinstance(ref.value, BaseException):
        assert type(lean.value) is type(ref.value)
        assert str(lean.value) == str(ref.value)
    else:
        assert lean.value == ref.value
    assert comparable(lean.record) == comparable(ref.record)
    assert lean.log == ref.log
    return lean


# ---------------------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------------------


def two_steps(ex: Any) -> Any:
    a, b = ex.parameter("a"), ex.parameter("b")

    @ex.persist
    def prepare_data(a, b):
        for epoch in range(3):
            ex.save_metric("loss", epoch=epoch, value=(a + b) / (epoch + 1))
        return [a] * 3 + [b]

    @ex.result
    def calculate_score(s):
        return sum(s) + random.random()  # seeded by the trial

    return calculate_score(prepare_data(a, b))


def diamond(ex: Any) -> Any:
    a = ex.parameter("a")

    @ex
    def source(a):
        return a * 10

    @ex.persist
    def left(x):
        ex.save_metric("left", epoch=0, value=x)
        return x + 1

    @ex
    def right(x):
        return x - 1

    @ex.result
    def join(x, y):
        return x * y

    s = source(a)
    return join(left(s), right(s))


def step_used_twice(ex: Any) -> Any:
    a, b = ex.parameter("a"), ex.parameter("b")

    @ex.persist
    def double(x):
        return 2 * x

    @ex.result
    def add(x, y):
        return x + y

    return add(double(a), double(double(b)))


def plain_tasks_mixed_in(ex: Any) -> Any:
    """A plain task between steps, a parameter read by a plain task, a step whose record
    reaches the result only through a plain task."""
    a, b = ex.parameter("a"), ex.parameter("b")

    @ex.persist
    def scale(x):
        ex.save_metric("scaled", epoch=0, value=x)
        return x * 3

    @ex.result
    def finish(total, offset):
        return {"total": total, "offset": offset}

    total = dask.delayed(lambda s, p: s + p, pure=True)(scale(a), b)
    offset = dask.delayed(abs)(b)
    return finish(total, offset)


def several_outputs(ex: Any) -> Any:
    """The result gathers a list and a dict of step outputs (nested references)."""
    a = ex.parameter("a")

    @ex
    def square(x):
        return x * x

    @ex
    def cube(x):
        return x * x * x

    @ex.result
    def collect(items, named):
        return [*items, named["c"]]

    return collect([square(a), cube(a)], {"c": cube(square(a))})


PIPELINES = {
    "two steps": (two_steps, {"a": 1, "b": 2}),
    "diamond": (diamond, {"a": 3}),
    "a step used twice": (step_used_twice, {"a": 1, "b": 5}),
    "plain tasks mixed in": (plain_tasks_mixed_in, {"a": 2, "b": -4}),
    "several outputs": (several_outputs, {"a": 2}),
}


@pytest.mark.parametrize("name", PIPELINES)
def test_a_sync_trial_gives_what_dasks_get_sync_gives(name: str, async_calls: list) -> None:
    build, params = PIPELINES[name]
    lean = same_on_both_paths(build, params, async_calls)
    assert lean.record["status"] == "success"
    assert lean.log[0] == "Started Experiment (trial id=1)"
    assert lean.log[-1] == "Finished Experiment (trial id=1)"


def test_records_persisted_outputs_and_metrics_of_every_step(async_calls: list) -> None:
    lean = same_on_both_paths(*PIPELINES["plain tasks mixed in"], async_calls)
    assert lean.value == {"total": 2, "offset": 4}
    assert set(lean.record["steps"]) == {"scale", "finish"}
    assert lean.ex.get_persisted("scale", 1) == 6
    assert lean.ex.load_metric("scaled", 1)[1].tolist() == [2]
    twice = same_on_both_paths(*PIPELINES["a step used twice"], async_calls)
    assert twice.value == 2 + 20
    assert sorted(twice.record["steps"]) == ["add", "double", "double#2", "double#3"]
    assert twice.ex.get_persisted("double", 1) in (2, 10, 20)


def cached_pipeline(ex: Any) -> Any:
    a = ex.parameter("a")

    @ex.persist(cache=True)
    def expensive(a):
        ex.save_metric("work", epoch=0, value=a)
        return list(range(a))

    @ex.result
    def count(items):
        return len(items)

    return count(expensive(a))


def test_a_cached_step_is_reused_as_under_dask(async_calls: list) -> None:
    lean = same_on_both_paths(cached_pipeline, {"a": 4}, async_calls, trials=2)
    assert lean.value == 4
    assert lean.record["steps"]["expensive"]["reused"] is True
    assert lean.record["steps"]["expensive"]["reused_from"] == 1
    assert any("expensive" in line and "trial 1" in line for line in lean.log)


# ---------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------


def failing_branch(ex: Any) -> Any:
    a = ex.parameter("a")

    @ex.persist
    def good(x):
        ex.save_metric("good", epoch=0, value=x)
        return x + 1

    @ex
    def bad(x):
        ex.save_metric("before", epoch=0, value=x)
        raise ValueError(f"bad input {x}")

    @ex.result
    def join(x, y):
        return x + y

    return join(good(a), bad(a))


def test_a_failing_step_fails_the_trial_with_the_finished_steps(async_calls: list) -> None:
    lean = same_on_both_paths(failing_branch, {"a": 1}, async_calls)
    assert isinstance(lean.value, ValueError)
    assert str(lean.value) == "bad input 1"
    record = lean.record
    assert record["status"] == "failed"
    assert record["description"] == "ValueError(bad input 1)"
    assert "raise ValueError" in record["traceback"]
    assert record["steps"]["good"]["persisted"]
    assert record["steps"]["bad"]["failed"] == "ValueError(bad input 1)"
    assert lean.ex.get_persisted("good", 1) == 2
    assert lean.ex.load_metric("before", 1)[1].tolist() == [1]
    assert lean.log[-1] == "Failed Experiment (trial id=1): ValueError(bad input 1)"


def plain_task_raising(ex: Any) -> Any:
    a = ex.parameter("a")

    @ex.persist
    def first(x):
        return x + 1

    @ex.result
    def last(x):
        return x

    def explode(x):
        raise KeyError(f"no entry {x}")

    return last(dask.delayed(explode)(first(a)))


def test_a_plain_task_raising_fails_the_trial_as_under_dask(async_calls: list) -> None:
    lean = same_on_both_paths(plain_task_raising, {"a": 1}, async_calls)
    assert type(lean.value) is KeyError
    assert lean.record["status"] == "failed"
    assert lean.record["description"] == "KeyError('no entry 2')"
    assert lean.ex.get_persisted("first", 1) == 2


def interrupted(ex: Any) -> Any:
    a = ex.parameter("a")

    @ex.persist
    def first(x):
        return x + 1

    @ex.result
    def stop(x):
        raise KeyboardInterrupt

    return stop(first(a))


def test_a_base_exception_propagates_unchanged(async_calls: list) -> None:
    lean = run_trial(interrupted, {"a": 1}, async_calls, through_dask=False)
    ref = run_trial(interrupted, {"a": 1}, async_calls, through_dask=True)
    assert (lean.scheduled, ref.scheduled) == (0, 1)
    assert type(lean.value) is type(ref.value) is KeyboardInterrupt
    assert lean.record["status"] == ref.record["status"] == "failed"
    assert lean.record["description"] == ref.record["description"]
    assert lean.log == ref.log


def test_an_unknown_scheduler_is_recorded_as_a_failed_trial() -> None:
    ex = daskperiment.Experiment(id="unknown_pj", backend=f"memory://{uuid.uuid4().hex}")
    result = two_steps(ex)
    ex.set_parameters(a=1, b=2)
    with pytest.raises(ValueError, match="Expected one of"):
        result.compute(scheduler="no-such-scheduler")
    assert ex.get_trial(1)["status"] == "failed"
    assert ex.get_trial(1)["description"].startswith("ValueError(Expected one of")


# ---------------------------------------------------------------------------------------
# When dask's scheduler still runs the trial
# ---------------------------------------------------------------------------------------


def test_a_progress_bar_and_callbacks_still_see_every_task(async_calls: list) -> None:
    ex = daskperiment.Experiment(id="watched_pj", backend=f"memory://{uuid.uuid4().hex}")
    result = diamond(ex)
    ex.set_parameters(a=3)
    started: list[Any] = []
    finished: list[Any] = []
    counting = Callback(
        pretask=lambda key, dsk, state: started.append(key),
        posttask=lambda key, res, dsk, state, worker: finished.append(key),
    )
    out = io.StringIO()
    with ProgressBar(out=out, minimum=0), counting:
        assert result.compute(scheduler="sync") == 31 * 29
    assert len(async_calls) == 1
    # four steps and the task gathering the trial's outputs, each seen once
    assert len(started) == len(finished) == 5
    names = sorted(str(k).split("-")[0] for k in started)
    assert names == ["join", "join", "left", "right", "source"]
    assert str(started[-1]).endswith("~trial")  # the gathering task, last
    assert "100%" in out.getvalue()


def test_callbacks_given_to_compute_keep_dasks_scheduler(async_calls: list) -> None:
    ex = daskperiment.Experiment(id="given_pj", backend=f"memory://{uuid.uuid4().hex}")
    result = two_steps(ex)
    ex.set_parameters(a=1, b=2)
    seen: list[Any] = []
    pretask = (lambda key, dsk, state: seen.append(key),)  # get_async's callback tuples
    result.compute(scheduler="sync", callbacks=[(None, None, *pretask, None, None)])
    assert len(async_calls) == 1 and len(seen) == 3


def test_rerun_exceptions_locally_keeps_dasks_scheduler(async_calls: list) -> None:
    ex = daskperiment.Experiment(id="rerun_pj", backend=f"memory://{uuid.uuid4().hex}")
    result = two_steps(ex)
    ex.set_parameters(a=1, b=2)
    with dask.config.set(rerun_exceptions_locally=True):
        result.compute(scheduler="sync")
    assert len(async_calls) == 1


@pytest.mark.parametrize("name", ["sync", "synchronous", "single-threaded"])
def test_every_name_of_the_sync_scheduler_and_the_configured_one(
    name: str, async_calls: list
) -> None:
    ex = daskperiment.Experiment(id="names_pj", backend=f"memory://{uuid.uuid4().hex}")
    result = two_steps(ex)
    ex.set_parameters(a=1, b=2)
    first = result.compute(scheduler=name, seed=3)
    with dask.config.set(scheduler=name):
        second = result.compute(seed=3)
    assert first == second
    assert async_calls == []
    assert ex.get_trial(2)["status"] == "success"


def test_dask_compute_with_the_sync_scheduler_runs_the_steps_lean(async_calls: list) -> None:
    ex = daskperiment.Experiment(id="native_pj", backend=f"memory://{uuid.uuid4().hex}")
    result = two_steps(ex)
    ex.set_parameters(a=1, b=2)
    (value,) = dask.compute(result, scheduler="sync", seed=None)
    assert value == ex.get_trial(1)["result_value"]
    # dask.compute's own one-task graph (the trial) only; its steps ran without get_async
    assert len(async_calls) == 1 and len(async_calls[0]) == 1


def test_other_schedulers_still_get_the_graph(async_calls: list) -> None:
    ex = daskperiment.Experiment(id="threads_pj", backend=f"memory://{uuid.uuid4().hex}")
    result = two_steps(ex)
    ex.set_parameters(a=1, b=2)
    seen: list[Any] = []
    real = dask.threaded.get

    def counting(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        seen.append(list(dsk))
        return real(dsk, keys, **kwargs)

    value = result.compute(scheduler=counting, seed=5)
    assert value == result.compute(scheduler="threads", seed=5)
    assert len(seen) == 1
    # keys unique to the trial (a cluster may run several trials of one graph at once)
    suffix = str(seen[0][0]).rsplit("-", 1)[-1]
    assert len(suffix) == 12 and all(suffix in str(k) for k in seen[0])


def test_concurrent_sync_trials_in_threads_keep_their_own_records(async_calls: list) -> None:
    ex = daskperiment.Experiment(id="threaded_pj", backend=f"memory://{uuid.uuid4().hex}")
    result = two_steps(ex)
    ex.set_parameters(a=1, b=2)
    values: dict[int, float] = {}

    def one(seed: int) -> None:
        values[seed] = result.compute(scheduler="sync", seed=seed)

    threads = [threading.Thread(target=one, args=(seed,)) for seed in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert async_calls == []
    records = [ex.get_trial(n) for n in range(1, 7)]
    assert sorted(r["seed"] for r in records) == list(range(1, 7))
    for record in records:
        assert record["status"] == "success"
        assert record["result_value"] == values[record["seed"]]
        assert ex.load_metric("loss", record["trial_id"])[record["trial_id"]].tolist() == [
            3.0,
            1.5,
            1.0,
        ]


# ---------------------------------------------------------------------------------------
# Memory: a value is released once consumed
# ---------------------------------------------------------------------------------------


class Big:
    """Stands for a big intermediate (an object a weak reference can watch)."""

    def __init__(self, n: int) -> None:
        self.n = n


def releasing(ex: Any, alive: list[Any]) -> Any:
    a = ex.parameter("a")

    @ex
    def make(a):
        big = Big(a)
        alive.append(weakref.ref(big))
        return big

    @ex
    def shrink(big):
        return big.n + 1

    @ex.result
    def check(n):
        gc.collect()
        return [n, alive[-1]() is None]

    return check(shrink(make(a)))


@pytest.mark.parametrize("through_dask", [False, True])
def test_a_big_intermediate_is_released_once_consumed(
    through_dask: bool, async_calls: list
) -> None:
    alive: list[Any] = []
    outcome = run_trial(lambda ex: releasing(ex, alive), {"a": 1}, async_calls, through_dask)
    assert outcome.scheduled == int(through_dask)
    assert outcome.value == [2, True]
