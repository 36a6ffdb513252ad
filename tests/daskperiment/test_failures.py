"""Failures: every trial is recorded whatever happens to it, and errors say what to do."""

from __future__ import annotations

import os
import signal
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import daskperiment
from daskperiment.errors import DaskperimentError


def two_steps(ex: Any, fail: BaseException | None = None) -> Any:
    """``a + b`` then ``10 / s``; the second step raises ``fail`` when given."""
    a = ex.parameter("a")
    b = ex.parameter("b")

    @ex
    def prepare_data(a, b):
        return a + b

    @ex.result
    def calculate_score(s):
        if fail is not None:
            raise fail
        return 10 / s

    return calculate_score(prepare_data(a, b))


def test_exception_in_a_step_is_recorded_and_reraised() -> None:
    ex = daskperiment.Experiment(id="fail_pj")
    s = two_steps(ex, fail=ValueError("bad value"))
    ex.set_parameters(a=1, b=2)
    with pytest.raises(ValueError, match="bad value"):
        s.compute()
    assert ex.trial_id == 1
    history = ex.get_history()
    assert history["Success"].tolist() == [False]
    assert history.loc[1, "Description"] == "ValueError(bad value)"
    assert pd.isna(history.loc[1, "Result"])
    trial = ex.get_trial(1)
    assert trial["status"] == "failed"
    assert "ValueError: bad value" in trial["traceback"]
    assert "calculate_score" in trial["traceback"]


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_keyboard_interrupt_in_a_step_is_recorded_and_reraised(scheduler: str) -> None:
    ex = daskperiment.Experiment(id="interrupt_pj")
    s = two_steps(ex, fail=KeyboardInterrupt())
    ex.set_parameters(a=1, b=2)
    with pytest.raises(KeyboardInterrupt):
        s.compute(scheduler=scheduler)
    history = ex.get_history()
    assert history["Success"].tolist() == [False]
    assert history.loc[1, "Description"].startswith("KeyboardInterrupt")
    # the experiment is usable afterwards and the next trial takes the next id
    ok = two_steps(ex)
    assert ok.compute(scheduler=scheduler) == pytest.approx(10 / 3)
    assert ex.get_history()["Success"].tolist() == [False, True]
    assert ex.trial_id == 2


def test_undefined_parameter_fails_before_any_trial_id_is_used() -> None:
    ex = daskperiment.Experiment(id="undefined_pj")
    s = two_steps(ex)
    ex.set_parameters(a=1)
    with pytest.raises(DaskperimentError, match="'b'") as info:
        s.compute()
    assert isinstance(info.value, ValueError)
    assert "set_parameters" in str(info.value)
    assert ex.trial_id == 0
    assert len(ex.get_history()) == 0
    ex.set_parameters(b=2)
    assert s.compute() == pytest.approx(10 / 3)
    assert ex.trial_id == 1
    assert list(ex.get_history().index) == [1]


def test_parameter_default_is_used_when_not_set() -> None:
    ex = daskperiment.Experiment(id="default_pj")
    a = ex.parameter("a", default=4)

    @ex.result
    def double(a):
        return 2 * a

    assert double(a).compute() == 8
    assert ex.get_parameters(trial_id=1) == {"a": 4}


def test_undeclared_name_in_set_parameters() -> None:
    ex = daskperiment.Experiment(id="undeclared_pj")
    two_steps(ex)
    ex.set_parameters(a=1, b=2)
    with pytest.raises(DaskperimentError, match="'c'") as info:
        ex.set_parameters(a=5, c=3)
    assert isinstance(info.value, KeyError)
    assert "ex.parameter('c')" in str(info.value)
    # nothing of the rejected call was applied
    assert ex.get_parameters() == {"a": 1, "b": 2}


def test_current_trial_id_outside_a_step() -> None:
    ex = daskperiment.Experiment(id="current_pj")
    a = ex.parameter("a")

    @ex.result
    def which_trial(a):
        return ex.current_trial_id

    with pytest.raises(DaskperimentError, match="inside a step") as info:
        ex.current_trial_id  # noqa: B018 - the property access is what raises
    assert isinstance(info.value, RuntimeError)
    ex.set_parameters(a=0)
    assert which_trial(a).compute() == 1
    assert which_trial(a).compute() == 2
    with pytest.raises(DaskperimentError):
        ex.current_trial_id  # noqa: B018


def test_save_metric_outside_a_step() -> None:
    ex = daskperiment.Experiment(id="metric_outside_pj")
    with pytest.raises(DaskperimentError, match="inside a step"):
        ex.save_metric("loss", epoch=0, value=1.0)


@pytest.mark.parametrize("bad", ["bad id", "a/b", "", "../up", "x.y"])
def test_invalid_experiment_id(bad: str) -> None:
    with pytest.raises(ValueError, match="^Experiment ID must be"):
        daskperiment.Experiment(id=bad)


KILLED_SCRIPT = """
import pathlib
import time

import daskperiment

ex = daskperiment.Experiment(id='killed_pj')
a = ex.parameter('a')


@ex.result
def slow(a):
    pathlib.Path('step-started').write_text('yes')
    time.sleep(300)
    return a


ex.set_parameters(a=1)
slow(a).compute()
"""


def wait_for(path: Path, proc: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, Path(f"{proc.args[-1]}.out").read_text()
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.05)


def test_sigkilled_trial_shows_as_interrupted(python: Any, workdir: Path) -> None:
    proc = python.popen(KILLED_SCRIPT, name="killed.py")
    try:
        wait_for(workdir / "step-started", proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    ex = daskperiment.Experiment(id="killed_pj")
    assert ex.trial_id == 1
    history = ex.get_history()
    assert list(history.index) == [1]
    assert history.loc[1, "a"] == 1
    assert not history.loc[1, "Success"]
    assert "interrupted" in history.loc[1, "Description"].lower()
    assert ex.get_trial(1)["status"] == "failed"

    a = ex.parameter("a")

    @ex.result
    def fast(a):
        return a

    ex.set_parameters(a=2)
    assert fast(a).compute() == 2
    assert ex.trial_id == 2
    assert ex.get_history()["Success"].tolist() == [False, True]


class Unpicklable:
    """A value that refuses every attempt to serialise it."""

    def __reduce__(self) -> Any:
        raise TypeError("Unpicklable refuses to be pickled")

    def __repr__(self) -> str:
        return "Unpicklable()"


def test_result_that_cannot_be_stored_warns_and_trial_is_recorded(dp_log: Any) -> None:
    ex = daskperiment.Experiment(id="unstorable_pj")
    a = ex.parameter("a")

    @ex.result
    def make_unpicklable(a):
        return Unpicklable()

    ex.set_parameters(a=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = make_unpicklable(a).compute()
    assert isinstance(value, Unpicklable)
    said = dp_log.messages("WARNING") + [str(w.message) for w in caught]
    assert any("make_unpicklable" in m or "Unpicklable" in m for m in said), said
    history = ex.get_history()
    assert history["Success"].tolist() == [True]
    assert "Unpicklable" in str(history.loc[1, "Result Type"])
    assert ex.trial_id == 1


def test_persisted_output_that_cannot_be_stored_warns_and_trial_is_recorded(
    dp_log: Any,
) -> None:
    ex = daskperiment.Experiment(id="unstorable_persist_pj")
    a = ex.parameter("a")

    @ex.persist
    def make_unpicklable(a):
        return Unpicklable()

    @ex.result
    def use(obj):
        return repr(obj)

    ex.set_parameters(a=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert use(make_unpicklable(a)).compute() == "Unpicklable()"
    said = dp_log.messages("WARNING") + [str(w.message) for w in caught]
    assert any("make_unpicklable" in m for m in said), said
    assert ex.get_history()["Success"].tolist() == [True]
    with pytest.raises(KeyError):
        ex.get_persisted("make_unpicklable", trial_id=1)


def _frames(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("File ")]


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_a_failed_steps_traceback_starts_at_the_step(scheduler: str) -> None:
    """The guard, dask's task call and the step wrapper above the step are not shown: the
    recorded traceback reads as if the step had been called directly."""
    ex = daskperiment.Experiment(id=f"trimmed_{scheduler}_pj")
    s = two_steps(ex)
    ex.set_parameters(a=1, b=-1)
    with pytest.raises(ZeroDivisionError) as raised:
        s.compute(scheduler=scheduler)
    # What compute() raises again goes from the caller to the step the same way
    files = [f.filename for f in traceback.extract_tb(raised.value.__traceback__)]
    assert not [f for f in files if f.endswith(("guard.py", "_task_spec.py"))], files
    text = ex.get_trial(1)["traceback"]
    frames = _frames(text)
    assert len(frames) == 1 and frames[0].endswith("in calculate_score"), text
    assert text.startswith("Traceback (most recent call last):\n")
    assert text.rstrip().endswith("ZeroDivisionError: division by zero")


def test_chained_exceptions_are_trimmed_and_frames_below_the_step_kept() -> None:
    ex = daskperiment.Experiment(id="chained_pj")
    a = ex.parameter("a")

    def lookup(a: int) -> int:
        return {1: 2}[a]

    @ex.result
    def score(a: int) -> int:
        try:
            return lookup(a)
        except KeyError as exc:
            raise ValueError(f"no entry for {a}") from exc

    ex.set_parameters(a=5)
    with pytest.raises(ValueError):
        score(a).compute()
    text = ex.get_trial(1)["traceback"]
    cause, effect = text.split("The above exception was the direct cause")
    assert [f.rsplit(" in ", 1)[1] for f in _frames(cause)] == ["score", "lookup"]
    assert [f.rsplit(" in ", 1)[1] for f in _frames(effect)] == ["score"]
    assert "guard.py" not in text and "_task_spec.py" not in text


def test_an_error_in_daskperiment_itself_keeps_every_frame() -> None:
    """With no frame outside daskperiment and dask, nothing is left out."""
    from dask._task_spec import Task

    from daskperiment.guard import Guarded
    from daskperiment.sweep import derive_seed

    failure = Guarded(Task("k", derive_seed, "not a seed", 0))()
    names = [f.rsplit(" in ", 1)[1] for f in _frames(failure.traceback)]
    assert names[0] == "__call__" and "derive_seed" in names and "validate_seed" in names
    assert "daskperiment/guard.py" in failure.traceback
