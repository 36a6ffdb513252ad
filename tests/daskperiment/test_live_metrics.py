"""Live metrics: what a running step has saved so far is readable from another process.

The writer side is a real interpreter running a trial; this process reads it the way a
notebook or the dashboard would (``get_metric_keys`` / ``load_metric`` on the running trial).
Steps are paced by files the test creates, never by sleeps, so the assertions hold on a slow
machine too; the only time limits are generous deadlines.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import daskperiment
import daskperiment_store as store
from daskperiment import live
from daskperiment import record as trial_record

KEYS = ["loss", "a/b", "..", "x.lock", "über"]

WRITER = """
import pathlib
import time

import daskperiment

ex = daskperiment.Experiment("live_pj", backend="store", system_metrics=False)
KEYS = {keys!r}


def wait_for(name):
    deadline = time.monotonic() + 120
    while not pathlib.Path(name).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(name)
        time.sleep(0.02)


@ex.result
def train():
    for stage in range(2):
        for epoch in range(stage * 10, stage * 10 + 10):
            for key in KEYS:
                ex.save_metric(key, epoch=epoch, value=epoch * 0.5)
        pathlib.Path(f"saved{{stage}}").touch()
        wait_for(f"go{{stage}}")
    return 1


if __name__ == "__main__":  # worker processes import this file
    train().compute(scheduler="{scheduler}")
"""


def wait_until(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def points(ex: Any, key: str, trial_id: int) -> list[float]:
    if key not in ex.get_metric_keys(trial_id):
        return []
    return ex.load_metric(key, trial_id)[trial_id].tolist()


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_a_running_trials_metrics_are_read_from_another_process(
    python: Any, scheduler: str
) -> None:
    writer = python.popen(WRITER.format(keys=KEYS, scheduler=scheduler), name="writer.py")
    try:
        wait_until((python.directory / "saved0").exists, "the first ten points")
        ex = daskperiment.Experiment("live_pj", backend=python.directory / "store")

        # One pass of the writer's thread writes the keys one after another: a reader can
        # see one key's points a moment before the next key's.
        wait_until(
            lambda: all(len(points(ex, key, 1)) == 10 for key in KEYS),
            "ten points of every key to be readable",
        )
        assert ex.get_trial(1)["status"] == "running"
        assert ex.get_metric_keys(1) == sorted(KEYS)
        for key in KEYS:
            assert points(ex, key, 1) == [e * 0.5 for e in range(10)]

        (python.directory / "go0").touch()
        wait_until((python.directory / "saved1").exists, "the next ten points")
        wait_until(lambda: len(points(ex, "über", 1)) == 20, "twenty points to be readable")
        assert ex.get_trial(1)["status"] == "running"

        (python.directory / "go1").touch()
        assert writer.wait(timeout=120) == 0, (python.directory / "writer.py.out").read_text()
    finally:
        writer.kill()
    assert ex.get_trial(1)["status"] == "success"
    assert points(ex, "x.lock", 1) == [e * 0.5 for e in range(20)]
    st = store.open(python.directory / "store", create=False)
    assert st.refs.names("experiments/live_pj/live/") == []  # superseded by the record
    assert st.fsck().ok


def test_a_killed_trial_keeps_the_points_saved_before(python: Any) -> None:
    source = WRITER.format(keys=["loss"], scheduler="sync")
    writer = python.popen(source, name="writer.py")
    try:
        wait_until((python.directory / "saved0").exists, "the first ten points")
        ex = daskperiment.Experiment("live_pj", backend=python.directory / "store")
        wait_until(lambda: len(points(ex, "loss", 1)) == 10, "ten points to be readable")
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()

    trial = ex.get_trial(1)
    assert trial["status"] == "failed"
    assert trial["description"].startswith("Interrupted")
    assert ex.get_metric_keys(1) == ["loss"]
    assert points(ex, "loss", 1) == [e * 0.5 for e in range(10)]


class CountingBackend(store.LocalBackend):
    """A local backend remembering the key of every write."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.written: list[str] = []

    def put(self, key: str, data: Any) -> Any:
        self.written.append(key)
        return super().put(key, data)

    def put_if_absent(self, key: str, data: Any) -> Any:
        self.written.append(key)
        return super().put_if_absent(key, data)

    def live_writes(self) -> list[str]:
        return [k for k in self.written if "/live/" in k]


def test_points_are_written_in_batches_not_one_by_one(tmp_path: Path) -> None:
    """A step saving points quickly until its first live write is visible: at most one
    live write per key and interval, however many points it saved."""
    backend = CountingBackend(tmp_path / "store")
    ex = daskperiment.Experiment("live_pj", backend=backend, system_metrics=False)
    seen: dict[str, Any] = {}

    @ex.result
    def train():
        st = store.open(backend)
        started = time.monotonic()
        epoch = 0
        while not st.refs.names(trial_record.live_prefix("live_pj", 1)):
            for _ in range(1000):
                ex.save_metric("loss", epoch=epoch, value=1.0 / (epoch + 1))
                epoch += 1
            time.sleep(0.01)
            assert time.monotonic() - started < 60, "no live write within a minute"
        seen["duration"] = time.monotonic() - started
        seen["points"] = epoch
        return epoch

    train().compute(scheduler="threads")

    writes = [k for k in backend.live_writes() if k.startswith("refs/")]
    # one per flush while the step ran, plus the one pointing at the final series
    assert 2 <= len(writes) <= seen["duration"] / live.LIVE_INTERVAL + 2
    assert seen["points"] > 100 * len(writes)
    assert len(ex.load_metric("loss", 1)) == seen["points"]
    assert store.open(backend).refs.names("experiments/live_pj/live/") == []


def test_short_steps_write_nothing_live(tmp_path: Path) -> None:
    backend = CountingBackend(tmp_path / "store")
    ex = daskperiment.Experiment("live_pj", backend=backend)
    a = ex.parameter("a")

    @ex.result
    def quick(a):
        for epoch in range(100):
            ex.save_metric("loss", epoch=epoch, value=a * epoch)
        return a

    ex.sweep(quick(a), grid={"a": list(range(20))})

    assert backend.live_writes() == []
    assert ex.load_metric("loss", 20)[20].iloc[-1] == 19 * 99


def test_a_failed_trial_keeps_its_points_and_leaves_no_live_refs(tmp_path: Path) -> None:
    backend = CountingBackend(tmp_path / "store")
    ex = daskperiment.Experiment("live_pj", backend=backend, system_metrics=False)

    @ex.result
    def crash():
        st = store.open(backend)
        ex.save_metric("loss", epoch=0, value=1.0)
        deadline = time.monotonic() + 60
        while not st.refs.names(trial_record.live_prefix("live_pj", 1)):
            assert time.monotonic() < deadline, "no live write within a minute"
            time.sleep(0.05)
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        crash().compute(scheduler="threads")

    assert backend.live_writes()  # it was visible while the step ran
    assert store.open(backend).refs.names("experiments/live_pj/live/") == []
    assert ex.get_trial(1)["status"] == "failed"
    # the points saved before the failure are the record's, not live refs' any more
    assert ex.get_metric_keys(1) == ["loss"]
    assert ex.load_metric("loss", 1)[1].tolist() == [1.0]
