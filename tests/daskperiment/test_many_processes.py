"""Several processes running trials of one experiment on one store at the same time.

Four real interpreters each record 50 trials (25 ``compute()`` calls, then a sweep of 25)
into the same store on the local filesystem, and 20 each (10 and 10) on S3 (the moto server,
where every trial is ~20 requests). Nothing may be lost or overwritten: distinct ids with
none skipped, complete records, every purity entry and history index row present, and
``fsck`` clean.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

import daskperiment
import daskperiment_store as store
from daskperiment import history, puritylog
from daskperiment import record as trial_record

PROCESSES = 4
PER_PROCESS_LOCAL = 50
PER_PROCESS_S3 = 20

SCRIPT = """
import logging
import pathlib
import time

import numpy as np

import daskperiment

logging.getLogger("daskperiment").setLevel(logging.WARNING)
ex = daskperiment.Experiment("many_pj", backend=WHERE)
p = ex.parameter("p")
i = ex.parameter("i")


@ex.persist
def prepare(p, i):
    return np.full(3, p * 1000 + i)


seen = []  # ids of this process's trials: ex.trial_id may name another process's trial


@ex.result
def score(data):
    ex.save_metric("value", epoch=0, value=float(data[0]))
    seen.append(ex.current_trial_id)
    return float(data[0])


result = score(prepare(p, i))
while not pathlib.Path("go").exists():  # start together
    time.sleep(0.005)
ids = []
for k in range(HALF):
    ex.set_parameters(p=PROC, i=k)
    result.compute(scheduler="sync")
    ids.append(seen[-1])
rows = ex.sweep(result, trials=[{"p": PROC, "i": k} for k in range(HALF, 2 * HALF)], scheduler="threads")
ids += [int(n) for n in rows.index]
report(ids)
"""


def run_processes(python: Any, where: str, per_process: int) -> dict[int, list[int]]:
    """Run the script in PROCESSES interpreters at once, each recording ``per_process``
    trials; the trial ids each reports."""
    script = SCRIPT.replace("WHERE", repr(where)).replace("HALF", str(per_process // 2))
    procs = {
        n: python.popen(script.replace("PROC", str(n)), name=f"proc{n}.py")
        for n in range(PROCESSES)
    }
    time.sleep(0.3)
    (python.directory / "go").touch()
    reported = {}
    for n, proc in procs.items():
        proc.wait(timeout=240)
        out = (python.directory / f"proc{n}.py.out").read_text()
        assert proc.returncode == 0, f"process {n} exited {proc.returncode}:\n{out}"
        line = [x for x in out.splitlines() if x.startswith("RESULT:")][-1]
        reported[n] = json.loads(line[len("RESULT:") :])
    return reported


def check_store(where: str, reported: dict[int, list[int]], per_process: int) -> None:
    """Every trial of every process is there, complete, once; nothing derived is lost."""
    total = PROCESSES * per_process
    ids = sorted(i for ids in reported.values() for i in ids)
    assert ids == list(range(1, total + 1))  # distinct, none skipped

    ex = daskperiment.Experiment("many_pj", backend=where)
    rows = ex.get_history()
    assert list(rows.index) == ids
    assert rows["Success"].all()
    pairs = {(int(r.p), int(r.i)) for r in rows.itertuples()}
    assert pairs == {(p, i) for p in range(PROCESSES) for i in range(per_process)}
    assert (rows["Result"] == rows["p"] * 1000 + rows["i"]).all()

    st = store.open(where, create=False)
    prefix = trial_record.trials_prefix("many_pj")
    records = {int(n[len(prefix) :]): st.get(oid) for n, oid in st.refs.list(prefix).items()}
    remembered = puritylog.entries(st, "many_pj")
    assert len(remembered) == 2 * total  # one per step and input: every input is new
    pids: dict[int, set[int]] = {}
    for n, trial_ids in reported.items():
        for trial_id in trial_ids:
            record = records[trial_id]
            assert record["status"] == "success" and record["params"]["p"] == n
            pids.setdefault(n, set()).add(record["process"]["pid"])
            metric = st.get(record["metrics"]["value"].oid)
            assert metric.tolist() == [record["result_value"]]
            for step in record["steps"].values():
                entry = remembered[(step["step"], step["inputs"])]
                assert (entry.output, entry.trial_id) == (step["output"], trial_id)
    assert all(len(p) == 1 for p in pids.values()) and len(set.union(*pids.values())) == 4

    # Every process's rows reached the one history index (compare-and-swap, no lost update)
    root = st.get(st.refs.get(trial_record.index_ref("many_pj")))
    indexed = set()
    for link in history.chunk_links(root).values():
        indexed |= set(history.rows_of_chunk(st.get(link.oid)))
    assert indexed == set(ids)
    assert st.refs.names("experiments/many_pj/live/") == []
    report = st.fsck()  # every object rehashed, every link and ref resolves
    assert report.ok, report.summary()


def test_four_processes_on_one_local_store(python: Any) -> None:
    where = str(python.directory / "shared-store")
    check_store(where, run_processes(python, where, PER_PROCESS_LOCAL), PER_PROCESS_LOCAL)


@pytest.mark.slow  # ~1,600 requests to the moto server
def test_four_processes_on_one_s3_store(python: Any, s3_url: str) -> None:
    check_store(s3_url, run_processes(python, s3_url, PER_PROCESS_S3), PER_PROCESS_S3)
