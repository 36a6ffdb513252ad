"""Processes running quick trials, killed with SIGKILL wherever they happen to be: in a step,
in the store's writes of a record or ref, between them.

What must hold after every kill (the trial write path's guarantees, daskperiment/trial.py and
store/backends/local.py): every trial a process reported finished is in the history with its
parameters and result; every trial that got a number is visible (numbers run 1..N without a
gap; one that was running shows as failed, interrupted; one recorded just before the kill, as
recorded); fsck finds no damaged object, bad ref
or missing link (a killed writer's temp file is reported, never an error); and the next
process goes on numbering after them. At the end a process that exits normally, then a gc,
leave the store clean with every finished trial still readable.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import daskperiment
import daskperiment_store as store
from daskperiment.record import trial_ref

EXPERIMENT = "killed_mid_pj"

# Two quick steps: most of a trial is the store's writes, so kills land in them often.
SCRIPT = """
import os
import daskperiment

ex = daskperiment.Experiment(id="killed_mid_pj", backend=os.environ["STORE"])
a = ex.parameter("a")
b = ex.parameter("b")


@ex
def prepare(a, b):
    return a + b


@ex.result
def score(x):
    return x * 10


r = score(prepare(a, b))
first = int(os.environ["FIRST"])
for n in range(first, first + int(os.environ.get("TRIALS", "1000000"))):
    ex.set_parameters(a=n, b=1)
    value = r.compute()
    # one write: a kill never leaves half a line (print writes piece by piece unbuffered)
    os.write(1, f"DONE {ex.trial_id} {n} {value}\\n".encode())
"""


def finished(out: Path) -> dict[int, tuple[int, int]]:
    """Trials the process reported finished: trial id -> (a, result)."""
    found = {}
    for line in out.read_text().splitlines():
        if line.startswith("DONE "):
            _, trial, a, value = line.split()
            found[int(trial)] = (int(a), int(value))
    return found


def run_and_kill(python: Any, name: str, env: dict[str, str], delay: float) -> Path:
    """Start the script, let it record trials for ``delay`` s after its first, SIGKILL it."""
    proc = python.popen(SCRIPT, name=name, env=env)
    out = python.directory / f"{name}.out"
    deadline = time.monotonic() + 120
    try:
        while not finished(out):
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.01)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return out


def check_store(path: Path, done: dict[int, tuple[int, int]], why: str) -> list[int]:
    """The guarantees above, read without writing; the trial numbers."""
    st = store.open(path)
    report = st.fsck()
    assert report.ok, f"{why}: {report}"
    assert (report.corrupt_objects, report.bad_refs, report.missing_links) == ([], [], []), why
    prefix = f"experiments/{EXPERIMENT}/trials/"
    ids = sorted(int(name[len(prefix) :]) for name in st.refs.names(prefix))
    assert ids == list(range(1, len(ids) + 1)), f"{why}: a started trial is missing: {ids}"
    assert set(done) <= set(ids), why
    for trial_id in ids:  # every visible trial's record reads back
        record = st.get(st.refs.get(trial_ref(EXPERIMENT, trial_id)), kinds={"json"})
        assert record["trial_id"] == trial_id, why
        if trial_id in done:
            assert record["status"] == "success", why
    return ids


@pytest.mark.slow
def test_trials_killed_anywhere_lose_nothing_finished(python: Any, workdir: Path) -> None:
    path = workdir / "store"
    rng = random.Random()
    delays = [round(rng.uniform(0.02, 0.6), 3) for _ in range(8)]
    why = f"kill delays {delays}"
    done: dict[int, tuple[int, int]] = {}
    for k, delay in enumerate(delays):
        out = run_and_kill(
            python, f"run{k}.py", {"STORE": str(path), "FIRST": str(k * 10_000)}, delay
        )
        new = finished(out)
        assert new and not set(new) & set(done), why  # numbered after the earlier processes
        done.update(new)
        check_store(path, done, f"{why}, after kill {k + 1}")

    # A process that exits normally: its flush (and the catch-up of what the killed ones left)
    python.run(SCRIPT, name="last.py", env={"STORE": str(path), "FIRST": "-1", "TRIALS": "1"})
    ids = check_store(path, done, why)
    ex = daskperiment.Experiment(id=EXPERIMENT, backend=path)
    history = ex.get_history()
    assert list(history.index) == ids, why
    for trial_id, (a, value) in done.items():
        assert history.loc[trial_id, "a"] == a and history.loc[trial_id, "b"] == 1, why
        assert history.loc[trial_id, "Result"] == value and history.loc[trial_id, "Success"]
    last = ids[-1]
    assert history.loc[last, "a"] == -1 and history.loc[last, "Result"] == 0
    for trial_id in set(ids) - set(done) - {last}:
        row = history.loc[trial_id]
        if row["Success"]:  # recorded, killed before it said so: whole all the same
            assert row["Result"] == (row["a"] + 1) * 10, why
        else:  # running when killed
            assert "interrupted" in row["Description"].lower(), why

    # gc removes the killed writers' leftovers and nothing a trial needs
    st = store.open(path)
    st.gc(grace=0)
    after = st.fsck()
    assert after.ok and after.temp_files == [], why
    assert check_store(path, done, why) == ids
    reread = daskperiment.Experiment(id=EXPERIMENT, backend=path).get_history()
    assert reread["Result"].equals(history["Result"]), why  # NaN where a trial failed
