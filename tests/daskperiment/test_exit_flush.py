"""The history index gets a process's last rows when the process exits, on every store.

The index is derived data (records are the truth), but a process that leaves its last rows
out of it leaves every later ``get_history()`` reading those records one by one for good.
On S3 the flush at exit needs the HTTP client's executors, which Python shuts down before
``atexit`` handlers run: this test runs on local and S3 stores in fresh interpreters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import daskperiment_store as store
from daskperiment import history
from daskperiment import record as trial_record

SCRIPT = """
import sys
import daskperiment

ex = daskperiment.Experiment(id="exit_pj", backend=sys.argv[1])
a = ex.parameter("a")

@ex.result
def double(a):
    return 2 * a

s = double(a)
for value in range(3):
    ex.set_parameters(a=value)
    s.compute()
"""


def _indexed_trials(st: store.Store) -> set[int]:
    root = st.get(st.refs.get(trial_record.index_ref("exit_pj")))
    indexed: set[int] = set()
    for link in history.chunk_links(root).values():
        indexed |= set(history.rows_of_chunk(st.get(link.oid)))
    return indexed


def _run_and_check(python: Any, url: str) -> None:
    done = python.run(SCRIPT, url)
    assert done.returncode == 0, done.stderr
    assert "Could not update the history index" not in done.stderr
    assert _indexed_trials(store.open(url, create=False)) == {1, 2, 3}


def test_last_rows_reach_the_index_at_exit_on_a_local_store(python: Any, workdir: Path) -> None:
    _run_and_check(python, str(workdir / "exit_store"))


@pytest.mark.s3
def test_last_rows_reach_the_index_at_exit_on_s3(python: Any, s3_url: str) -> None:
    _run_and_check(python, s3_url)
