"""A trial running in another process, watched in the browser: the pages follow it live."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# One quick trial (so the store exists), then a trial that saves a point per epoch, waits
# at epoch 5 until the test creates the file ``go1`` and at epoch 8 until it creates ``go``.
SCRIPT = textwrap.dedent(
    """
    import pathlib, sys, time
    import daskperiment

    here = pathlib.Path(sys.argv[1])
    ex = daskperiment.Experiment(id="live", backend=here / "cache" / "live", system_metrics=False)
    epochs = ex.parameter("epochs")

    @ex.result
    def train(epochs):
        for epoch in range(epochs):
            ex.save_metric("loss", epoch=epoch, value=1.0 / (epoch + 1))
            time.sleep(0.05)
            for hold, release in ((5, "go1"), (8, "go")):
                if epoch == hold:
                    (here / f"waiting-{hold}").touch()
                    while not (here / release).exists() and not (here / "go").exists():
                        time.sleep(0.05)
        return epochs

    result = train(epochs)
    ex.set_parameters(epochs=1)
    result.compute()
    ex.set_parameters(epochs=10)
    result.compute()
    """
)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


@pytest.fixture
def running_trial(tmp_path: Path):
    """Trial 2 of experiment ``live``, held running at epoch 5 (until ``go1`` exists) and
    at epoch 8 (until ``go``); ``go`` alone lets it run to the end."""
    script = tmp_path / "live.py"
    script.write_text(SCRIPT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(tmp_path / "waiting-5", proc)
        yield tmp_path, proc
    finally:
        (tmp_path / "go").touch()
        proc.wait(timeout=60)


@pytest.mark.browser
def test_a_running_trials_metrics_appear_live(running_trial, serve, open_page, shot):
    directory, proc = running_trial
    board = serve(str(directory / "cache"))
    page = open_page(board).page
    page.goto(f"{board.url}/experiments/live")
    page.wait_for_selector("#history tbody tr.status-running[data-trial='2']")
    page.locator("tr[data-trial='1'] input[type=checkbox]").check()
    page.locator("tr[data-trial='2'] input[type=checkbox]").check()
    # trial 1 saved one point; the running trial 2 the six of epochs 0-5 so far
    page.wait_for_selector("#metric-plot[data-curves='2'][data-points='7']", timeout=30_000)
    (directory / "go1").touch()
    wait_for(directory / "waiting-8", proc)
    page.wait_for_selector("#metric-plot[data-points='10']", timeout=30_000)  # no reload
    shot(page, "board-live.png")

    page.goto(f"{board.url}/experiments/live/trials/2")
    assert page.locator("#status").inner_text() == "running"
    page.wait_for_selector("#trial-metrics .plot[data-key='loss'][data-points='9']", timeout=30_000)
    (directory / "go").touch()
    assert proc.wait(timeout=60) == 0
    page.wait_for_selector("#status:has-text('finished')")
    page.wait_for_selector("#trial-metrics .plot[data-key='loss'][data-points='10']")
    page.goto(f"{board.url}/experiments/live")
    page.wait_for_selector("#history tbody tr.status-success[data-trial='2']")


def test_history_json_follows_a_trial_from_running_to_finished(running_trial, serve):
    directory, proc = running_trial
    board = serve(str(directory / "cache"))
    rows = board.get("/api/experiments/live/history").json()["rows"]
    assert [(r["id"], r["status"]) for r in rows] == [(1, "success"), (2, "running")]
    version = board.get("/api/experiments/live/version").json()["version"]
    deadline = time.monotonic() + 30  # a running step's points are written every second
    while not board.get("/api/experiments/live/metric-keys?trials=2").json()["keys"]:
        assert time.monotonic() < deadline, "the running trial's metric never appeared"
        time.sleep(0.2)
    assert board.get("/api/experiments/live/metric-keys?trials=2").json() == {
        "keys": ["loss"],
        "running": [2],
    }
    live = board.get("/api/experiments/live/metrics?key=loss&trials=2").json()
    assert live["series"]["2"]["epoch"] == list(range(6)) and live["running"] == [2]

    (directory / "go").touch()
    assert proc.wait(timeout=60) == 0
    deadline = time.monotonic() + 10
    while board.get("/api/experiments/live/version").json()["version"] == version:
        assert time.monotonic() < deadline, "the history never saw the trial finish"
        time.sleep(0.2)
    rows = board.get("/api/experiments/live/history").json()["rows"]
    assert [(r["id"], r["status"]) for r in rows] == [(1, "success"), (2, "success")]
    series = board.get("/api/experiments/live/metrics?key=loss&trials=2").json()["series"]["2"]
    assert series["epoch"] == list(range(10)) and series["value"][1] == 0.5
