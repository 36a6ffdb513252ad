"""A failed trial keeps what it saved: finished steps' persisted outputs and metrics, and
the points the failing step saved before raising (the loss curve of a diverged run).

Checked under every scheduler the engine supports, for ``compute()`` and for sweeps, through
the API and the CLI in a fresh process.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clusters import process_cluster

import daskperiment
from daskperiment.errors import StepFailed

SCHEDULERS = ["sync", "threads", "processes", "distributed"]
LOSSES = [1.0, 0.5, 0.25, 8.0, float("inf")]


def diverging(ex: Any) -> Any:
    """``train(data, side)``: two finished persisted steps, then a step that saves five loss
    points and raises. ``side`` is a sibling branch (not an input of ``data``)."""
    n = ex.parameter("n")

    @ex.persist
    def make_data(n):
        ex.save_metric("rows", epoch=0, value=n)
        return np.arange(n, dtype=float)

    @ex.persist
    def side(n):
        return {"n": n, "pid": os.getpid()}

    @ex.result
    def train(data, extra):
        for epoch, loss in enumerate([1.0, 0.5, 0.25, 8.0, float("inf")]):
            ex.save_metric("loss", epoch=epoch, value=loss)
        if extra["n"] > 0:
            raise FloatingPointError("loss diverged")
        return float(data.sum())

    return train(make_data(n), side(n))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with process_cluster(tmp_path_factory.mktemp("cluster")) as client:
        yield client


def scheduler_kwargs(scheduler: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if scheduler == "distributed":
        return {"scheduler": request.getfixturevalue("client")}
    return {"scheduler": scheduler}


def assert_kept(ex: Any, trial_id: int, n: int) -> None:
    """What the failed trial ``trial_id`` must still give back."""
    history = ex.get_history(verbose=True)
    assert history.loc[trial_id, "Status"] == "failed"
    assert history.loc[trial_id, "Description"] == "FloatingPointError(loss diverged)"
    assert ex.load_metric("loss", trial_id)[trial_id].tolist() == LOSSES
    assert ex.load_metric("rows", trial_id)[trial_id].tolist() == [n]
    np.testing.assert_array_equal(ex.get_persisted("make_data", trial_id), np.arange(n))
    assert ex.get_persisted("side", trial_id)["n"] == n
    steps = ex.get_trial(trial_id)["steps"]
    assert steps["train"]["failed"] == "FloatingPointError(loss diverged)"
    assert steps["train"]["persisted"] is None
    assert sorted(ex.get_metric_keys(trial_id)) == ["loss", "rows"]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_failed_trial_keeps_outputs_and_points(
    scheduler: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    ex = daskperiment.Experiment("keep_pj", backend=tmp_path / "store")
    result = diverging(ex)
    ex.set_parameters(n=4)
    with pytest.raises(FloatingPointError, match="loss diverged"):
        result.compute(**scheduler_kwargs(scheduler, request))
    assert_kept(ex, 1, 4)
    # the record is final: live refs are gone, fsck is clean
    assert ex.store.refs.names("experiments/keep_pj/live/") == []
    assert ex.store.fsck().ok


@pytest.mark.parametrize("scheduler", ["sync", "processes", "distributed"])
def test_sweep_trial_that_fails_keeps_its_outputs(
    scheduler: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    ex = daskperiment.Experiment("keep_sweep_pj", backend=tmp_path / "store")
    result = diverging(ex)
    rows = ex.sweep(
        result, grid={"n": [0, 3, 0]}, progress=False, **scheduler_kwargs(scheduler, request)
    )
    assert rows.index.tolist() == [1, 2, 3]
    history = ex.get_history()
    assert history["Success"].tolist() == [True, False, True]
    assert_kept(ex, 2, 3)
    # the trials that succeeded are unaffected
    assert ex.load_metric("loss", 1)[1].tolist() == LOSSES
    assert ex.get_trial(3)["steps"]["train"].get("failed") is None


def test_cli_and_diff_show_what_a_failed_trial_kept(python: Any) -> None:
    python.write(
        "diverge.py",
        """
        import daskperiment
        from test_failed_trials_steps import diverging

        if __name__ == "__main__":
            ex = daskperiment.Experiment("keep_cli_pj")
            result = diverging(ex)
            ex.set_parameters(n=0)
            result.compute(scheduler="processes")
            ex.set_parameters(n=5)
            try:
                result.compute(scheduler="processes")
            except FloatingPointError:
                pass
        """,
    )
    source = Path(__file__).read_text()
    start, end = source.index("def diverging"), source.index("@pytest.fixture")
    steps = "import os\nimport numpy as np\nfrom typing import Any\n\n" + source[start:end]
    (python.directory / "test_failed_trials_steps.py").write_text(steps)
    python.run_args([sys.executable, "diverge.py"]).check()

    def cli(*args: str) -> Any:
        return python.run_args([sys.executable, "-m", "daskperiment", *args]).check()

    shown = json.loads(cli("show", "keep_cli_pj", "2", "--format", "json").stdout)
    assert shown["status"] == "failed"
    assert sorted(shown["metrics"]) == ["loss", "rows"]
    assert shown["steps"]["make_data"]["persisted"]
    assert shown["steps"]["train"]["failed"] == "FloatingPointError(loss diverged)"
    text = cli("show", "keep_cli_pj", "2").stdout
    assert "metrics:" in text and "loss" in text
    assert "failed: FloatingPointError(loss diverged)" in text
    log = json.loads(cli("log", "keep_cli_pj", "--format", "json").stdout)
    assert [row["Success"] for row in log] == [True, False]
    diff = cli("diff", "keep_cli_pj", "1", "2").stdout
    assert "metrics/rows" in diff  # 0 rows in trial 1, 5 in trial 2: both were recorded


def test_points_flushed_live_survive_a_killed_worker(python: Any) -> None:
    """The step's record never comes back (its worker process is killed): the points its
    live view had written are linked by the failed record."""
    run = python.run(
        """
        import os, signal, time
        import daskperiment
        import daskperiment_store as store
        from daskperiment import live
        from daskperiment import record as trial_record

        live.LIVE_INTERVAL = 0.2
        ex = daskperiment.Experiment("killed_pj")

        @ex.result
        def train():
            st = store.open(os.path.abspath("daskperiment_cache/killed_pj"))
            for epoch in range(3):
                ex.save_metric("loss", epoch=epoch, value=1.0 / (epoch + 1))
            while not st.refs.names(trial_record.live_prefix("killed_pj", 1)):
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)

        if __name__ == "__main__":
            try:
                train().compute(scheduler="processes")
            except Exception as exc:
                print("raised", type(exc).__name__)
            report({
                "status": ex.get_trial(1)["status"],
                "loss": ex.load_metric("loss", 1)[1].tolist(),
                "live": ex.store.refs.names("experiments/killed_pj/live/"),
            })
        """
    ).check()
    assert "raised BrokenProcessPool" in run.stdout
    assert run.result() == {"status": "failed", "loss": [1.0, 0.5, 1 / 3], "live": []}


def test_an_exception_that_cannot_travel_back_is_raised_as_step_failed(tmp_path: Path) -> None:
    ex = daskperiment.Experiment("unpicklable_pj", backend=tmp_path / "store")

    @ex.result
    def bad():
        import threading

        ex.save_metric("loss", epoch=0, value=2.0)
        error = RuntimeError("holding a lock")
        error.lock = threading.Lock()  # an exception pickle cannot send back
        raise error

    with pytest.raises(StepFailed, match=r"RuntimeError\(holding a lock\)") as info:
        bad().compute(scheduler="processes")
    assert "daskperiment show" in str(info.value)
    trial = ex.get_trial(1)
    assert trial["description"] == "RuntimeError(holding a lock)"
    assert "holding a lock" in trial["traceback"]
    assert ex.load_metric("loss", 1)[1].tolist() == [2.0]
