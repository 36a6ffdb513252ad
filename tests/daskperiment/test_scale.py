"""Large experiments stay quick to open and to list: a 20,000-trial history built directly in a
memory store (cloned from one real trial's record), read the way users read it."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import daskperiment
import daskperiment_store as store
from daskperiment import history, opening
from daskperiment.record import index_ref, trial_ref

REPO = Path(__file__).resolve().parents[2]
TRIALS = 20_000
INDEXED = 19_950  # the index lags behind the last trials, as after a writer's crash


class CountingBackend(store.MemoryBackend):
    """A memory backend that counts listings and reads (what opening costs)."""

    def __init__(self) -> None:
        super().__init__()
        self.listed: list[str] = []
        self.exists_calls = 0

    def list(self, prefix: str = "") -> Any:
        self.listed.append(prefix)
        return super().list(prefix)

    def exists(self, key: str) -> bool:
        self.exists_calls += 1
        return super().exists(key)


def one_real_record(exp_id: str) -> tuple[store.Store, dict[str, Any]]:
    backend = CountingBackend()
    st = store.open(backend, create=True)
    ex = daskperiment.Experiment(exp_id, backend=st)
    a = ex.parameter("a")

    @ex.result
    def half(a):
        return a / 2

    ex.set_parameters(a=1)
    half(a).compute(scheduler="sync")
    _, record = history.load_trial(st, exp_id, 1)
    return st, record


def build_history(exp_id: str, trials: int = TRIALS, indexed: int = INDEXED) -> store.Store:
    """``trials`` final trials (trial n ran with a=n, result n/2), ``indexed`` of them in the
    history index; the last trial is still running."""
    st, template = one_real_record(exp_id)
    rows = []
    for n in range(2, trials + 1):
        running = n == trials
        record = dict(template, trial_id=n, params={"a": n}, result_value=n / 2)
        if running:
            record = {k: v for k, v in record.items() if k not in ("result_value", "finished")}
            record["status"] = "running"
        oid = st.put(record)
        st.refs.create(trial_ref(exp_id, n), oid)
        if n <= indexed:
            rows.append(history.row_of(record, oid))
    history.flush_index(st, exp_id, rows)
    return st


@pytest.fixture(scope="module")
def big() -> store.Store:
    return build_history("big_pj")


def fresh(st: store.Store, exp_id: str = "big_pj") -> daskperiment.Experiment:
    """A new Experiment instance on ``st`` (instances are shared per store object)."""
    return daskperiment.Experiment(exp_id, backend=store.open(st.backend, create=False))


def test_opening_lists_no_trials_and_checks_few_refs(big: store.Store) -> None:
    backend = big.backend
    backend.listed.clear()
    backend.exists_calls = 0
    ex = fresh(big)
    assert ex.trial_id == TRIALS
    assert not [p for p in backend.listed if "trials" in p], backend.listed
    # the index gives 19,950; the 50 after it are found by galloping then bisecting
    assert backend.exists_calls <= 2 * math.ceil(math.log2(TRIALS - INDEXED)) + 4


def test_last_trial_id_without_an_index(big: store.Store) -> None:
    copy = store.open(store.MemoryBackend(), create=True)
    for key in big.backend.list(""):
        copy.backend.put(key, big.backend.get(key))
    copy.refs.delete(index_ref("big_pj"))
    assert opening.last_trial_id(copy, "big_pj") == TRIALS
    assert opening.last_trial_id(copy, "no_such_pj") == 0


def test_an_index_naming_trials_the_store_lacks_is_not_trusted() -> None:
    st = build_history("lag_pj", trials=600, indexed=599)
    for n in range(300, 601):  # as if restored from an older copy: the index says 599
        st.refs.delete(trial_ref("lag_pj", n))
    assert opening.last_trial_id(st, "lag_pj") == 299


@pytest.mark.parametrize("last", [0, 1, 2, 3, 7, 8, 9, 1000, 4097])
@pytest.mark.parametrize("start", [0, 1, 5])
def test_gallop_finds_the_last_of_contiguous_ids(start: int, last: int) -> None:
    if last < start:
        return
    calls: list[int] = []

    def exists(n: int) -> bool:
        calls.append(n)
        return 1 <= n <= last

    assert opening.gallop(exists, start) == last
    assert len(calls) <= 2 * math.log2(last - start + 2) + 2


def test_last_n_rows_equal_the_tail_of_the_whole_history(big: store.Store) -> None:
    ex = fresh(big)
    whole = ex.get_history(verbose=True)
    assert len(whole) == TRIALS
    assert whole.index.tolist() == list(range(1, TRIALS + 1))
    assert whole["a"].iloc[:-1].tolist() == list(range(1, TRIALS))
    assert whole["Result"].iloc[1:-1].tolist() == [n / 2 for n in range(2, TRIALS)]
    assert whole["Status"].iloc[-1] == "running"
    for count in (1, 20, 60, 300):
        last = ex.get_history(verbose=True, last=count)
        assert last.index.tolist() == list(range(TRIALS - count + 1, TRIALS + 1))
        # the same values (a one-row frame may hold them in another dtype)
        pd.testing.assert_frame_equal(last, whole.tail(count), check_dtype=False)


def test_last_more_than_there_are(big: store.Store) -> None:
    st = build_history("small_pj", trials=5, indexed=3)
    ex = fresh(st, "small_pj")
    assert ex.get_history(last=50).index.tolist() == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="whole number of trials, 1 or more"):
        ex.get_history(last=0)


def test_last_rows_show_a_damaged_trial_and_skip_a_missing_one() -> None:
    st = build_history("holes_pj", trials=10, indexed=0)
    st.refs.delete(trial_ref("holes_pj", 8))
    st.refs.swap(trial_ref("holes_pj", 7), st.refs.get(trial_ref("holes_pj", 7)), "0" * 32)
    rows = fresh(st, "holes_pj").get_history(verbose=True, last=3)
    assert rows.index.tolist() == [6, 7, 9, 10][-3:]
    assert rows.loc[7, "Status"] == "damaged"


def test_experiment_opens_without_importing_pandas_or_scanning_packages(tmp_path: Path) -> None:
    code = (
        "import sys, daskperiment\n"
        "from daskperiment import environment\n"
        f"ex = daskperiment.Experiment('open_pj', backend={str(tmp_path / 's')!r})\n"
        "a = ex.parameter('a')\n"
        "@ex.result\n"
        "def f(a):\n"
        "    return a\n"
        "if ex.trial_id == 0:\n"
        "    ex.set_parameters(a=1); f(a).compute(); print('ran')\n"
        "else:\n"
        "    print(ex.trial_id, 'pandas' in sys.modules, environment._static is not None)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run() -> str:
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run() == "ran"
    assert run() == "1 False False"


@pytest.mark.parametrize("garbage", [b"garbage\n", b"0" * 32 + b"\n"])
def test_a_damaged_index_only_makes_opening_search_from_trial_one(garbage: bytes) -> None:
    st = build_history("dmg_pj", trials=300, indexed=290)
    st.backend.put("refs/" + index_ref("dmg_pj"), garbage)
    assert opening.last_trial_id(st, "dmg_pj") == 300
    assert fresh(st, "dmg_pj").get_history(last=2).index.tolist() == [299, 300]


def test_cli_log_n_shows_the_last_trials_and_refuses_a_bad_count(tmp_path: Path) -> None:
    st = store.open(str(tmp_path / "s"), create=True)
    ex = daskperiment.Experiment("cli_n_pj", backend=st)
    a = ex.parameter("a")

    @ex.result
    def ident(a):
        return a

    for value in range(1, 8):
        ex.set_parameters(a=value)
        ident(a).compute(scheduler="sync")
    ex._flush_index()
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def log(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "daskperiment", "--store", str(tmp_path / "s"), "log"]
        return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=120)

    done = log("cli_n_pj", "-n", "3", "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert [line.split(",")[:2] for line in done.stdout.splitlines()[1:]] == [
        ["5", "5"], ["6", "6"], ["7", "7"],
    ]  # fmt: skip
    bad = log("cli_n_pj", "-n", "0")
    assert bad.returncode == 2
    assert "invalid row count '0': a whole number >= 1" in bad.stderr
