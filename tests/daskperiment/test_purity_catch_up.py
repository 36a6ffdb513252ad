"""Purity entries are written with the history index's flush; a killed process loses none of
their information (daskperiment/purity.py).

A process runs trials and is killed with SIGKILL before its flush: no purity entry and no
index row of its trials is in the store. The next process's first trial derives the purity
entries from those trials' records (in trial order) before its own check, so it warns exactly
as the killed process would have made it warn, and its own exit flush leaves the purity log,
index and fsck clean.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import daskperiment_store as store
from daskperiment import history, puritylog
from daskperiment import record as trial_record

EXPERIMENT = "catch_pj"
WARNING = "Experiment step result is changed with the same input"

# The step's output is the OUTPUTS environment variable's next value: same input, chosen
# outputs. READY is printed once every trial is recorded; then the process waits to be killed.
SCRIPT = """
import os, sys, time
import daskperiment

ex = daskperiment.Experiment(id="catch_pj", backend=sys.argv[1])
a = ex.parameter("a")
outputs = iter(os.environ["OUTPUTS"].split(","))

@ex
def noisy(a):
    return a * 100 + int(next(outputs))

@ex.result
def score(x):
    return x + 1

s = score(noisy(a))
ex.set_parameters(a=1)
for _ in os.environ["OUTPUTS"].split(","):
    s.compute(seed=1)
print("READY", flush=True)
if os.environ.get("WAIT"):
    time.sleep(120)
"""


def remembered(path: Path, step: str = "noisy") -> list[puritylog.Entry]:
    """The purity log's entries of ``step`` (all steps for None)."""
    found = puritylog.entries(store.open(path), EXPERIMENT)
    return [e for (name, _), e in sorted(found.items()) if step is None or name == step]


def record_of(path: Path, trial_id: int) -> str:
    return store.open(path).refs.get(trial_record.trial_ref(EXPERIMENT, trial_id))


def killed_after_trials(python: Any, path: Path, outputs: str) -> str:
    """Run trials with ``outputs`` in a process, SIGKILL it once they are recorded; its log."""
    proc = python.popen(SCRIPT.replace("sys.argv[1]", repr(str(path))), name="killed.py",
                        env={"OUTPUTS": outputs, "WAIT": "1"})  # fmt: skip
    out = python.directory / "killed.py.out"
    deadline = time.monotonic() + 120
    try:
        while "READY" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return out.read_text()


def run_trials(python: Any, path: Path, outputs: str) -> str:
    done = python.run(SCRIPT, str(path), env={"OUTPUTS": outputs}).check()
    return done.output


def indexed(path: Path) -> set[int]:
    st = store.open(path)
    root = st.get(st.refs.get(trial_record.index_ref(EXPERIMENT)))
    ids: set[int] = set()
    for link in history.chunk_links(root).values():
        ids |= set(history.rows_of_chunk(st.get(link.oid)))
    return ids


def test_a_killed_processs_purity_comes_back_for_the_next_process(
    python: Any, workdir: Path
) -> None:
    path = workdir / "store"
    log = killed_after_trials(python, path, "1,1")
    assert WARNING not in log
    # Killed before its flush: neither its purity entries nor its index rows were written...
    assert remembered(path, None) == []
    with pytest.raises(store.errors.RefNotFound):
        store.open(path).refs.get(trial_record.index_ref(EXPERIMENT))
    # ...yet a new process warns for a changed output of the same input, on its first trial.
    log = run_trials(python, path, "2")
    assert log.count(WARNING) == 1
    st = store.open(path)
    assert [(e.trial_id, e.record) for e in remembered(path)] == [(3, record_of(path, 3))]
    assert indexed(path) == {1, 2, 3}  # the killed process's rows too
    assert st.fsck().ok


def test_catch_up_follows_trial_order(python: Any, workdir: Path) -> None:
    """Output 1, then 2 (a warning in the killed process): 2 is what is remembered."""
    path = workdir / "store"
    log = killed_after_trials(python, path, "1,2")
    assert log.count(WARNING) == 1
    assert remembered(path, None) == []
    assert WARNING not in run_trials(python, path, "2")  # same as the last trial: no warning
    assert run_trials(python, path, "1").count(WARNING) == 1  # back to 1: changed
    st = store.open(path)
    assert indexed(path) == {1, 2, 3, 4}
    assert [(e.trial_id, e.record) for e in remembered(path)] == [(4, record_of(path, 4))]
    assert st.fsck().ok


def test_within_a_process_warnings_do_not_wait_for_the_flush(python: Any, workdir: Path) -> None:
    """Pending updates are what the check reads: the seed's warnings in one process are kept."""
    path = workdir / "store"
    log = run_trials(python, path, "1,1,2,2,1")
    assert log.count(WARNING) == 2  # trial 3 (1 -> 2) and trial 5 (2 -> 1)
    assert [(e.trial_id, e.record) for e in remembered(path)] == [(5, record_of(path, 5))]


def test_a_failed_purity_flush_keeps_refs_and_index_rows_for_the_next(
    tmp_path: Path, dp_log: Any
) -> None:
    """A purity batch that cannot be written (a file where its ref directory belongs) leaves
    the index unwritten too and both pending: the next flush writes them once it can."""
    import daskperiment

    path = tmp_path / "store"
    ex = daskperiment.Experiment(id=EXPERIMENT, backend=path)
    a = ex.parameter("a")
    outputs = iter([1, 2])

    @ex.result
    def noisy(a):
        return a * 100 + next(outputs)

    s = noisy(a)
    blocker = path / "refs" / "experiments" / EXPERIMENT / "purity-log"
    ex.set_parameters(a=1)
    s.compute()
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way\n")
    ex._flush_index()  # fails quietly: derived data
    st = store.open(path)
    with pytest.raises(store.errors.RefNotFound):
        st.refs.get(trial_record.index_ref(EXPERIMENT))
    s.compute()  # same input, another output: the pending update is what the check reads
    assert sum(WARNING in m for m in dp_log.messages()) == 1
    blocker.unlink()
    ex._flush_index()
    assert indexed(path) == {1, 2}
    assert [(e.trial_id, e.record) for e in remembered(path)] == [(2, record_of(path, 2))]
