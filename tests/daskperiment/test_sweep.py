"""``ex.sweep``: many trials at once, each recorded as if computed alone.

Local schedulers run in this process; the distributed tests share one two-worker process
cluster (module-scoped: starting one costs seconds). Its scheduler marks a task failed as
soon as one worker dies under it (``allowed-failures: 0``) so the killed-worker test sees
the failure without killing several workers; docs/distributed.md explains the default.
"""

from __future__ import annotations

import itertools
import os
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from clusters import process_cluster

import daskperiment
import daskperiment_store as store
from daskperiment.errors import ParameterUndefined, UnknownParameter
from daskperiment.sweep import derive_seed

REPO = Path(__file__).resolve().parents[2]


def build(ex: Any) -> Any:
    """A two-step pipeline (defined in a function so workers receive the steps by value).

    ``score`` draws one random number, so the result depends on the trial seed; ``b=0``
    makes it fail.
    """
    a = ex.parameter("a")
    b = ex.parameter("b", default=1)
    c = ex.parameter("c", default=10)

    @ex.persist
    def prepare(a, b):
        return np.arange(4, dtype=float) * (a / b)

    @ex.result
    def score(data, c):
        ex.save_metric("pid", epoch=0, value=os.getpid())
        ex.save_metric("sum", epoch=0, value=float(data.sum()))
        return float(data.sum() + c + np.random.random())

    return score(prepare(a, b), c)


def expected(a: float, b: float, c: float, seed: int) -> float:
    data = np.arange(4, dtype=float) * a / b
    return float(data.sum() + c + np.random.RandomState(seed).random_sample())


def experiment(tmp_path: Path, name: str = "sweep_pj") -> Any:
    return daskperiment.Experiment(id=name, backend=tmp_path / "store")


# ---------------------------------------------------------------------------------------
# Local schedulers
# ---------------------------------------------------------------------------------------


def test_grid_runs_the_cartesian_product_each_as_its_own_trial(tmp_path: Path) -> None:
    ex = experiment(tmp_path)
    result = build(ex)
    ex.set_parameters(c=7)

    rows = ex.sweep(result, grid={"a": [1, 2], "b": [1, 4]}, seed=3)

    assert list(rows.index) == [1, 2, 3, 4]
    assert list(zip(rows["a"], rows["b"], strict=True)) == list(itertools.product([1, 2], [1, 4]))
    assert list(rows["c"]) == [7] * 4  # names left out take the current values
    assert rows["Success"].all()
    pd.testing.assert_frame_equal(rows, ex.get_history().loc[[1, 2, 3, 4]])
    assert ex.trial_id == 4
    assert ex.get_parameters() == {"b": 1, "c": 7}  # set_parameters state untouched
    for i, (trial_id, row) in enumerate(rows.iterrows()):
        trial = ex.get_trial(trial_id)
        assert trial["params"] == {"a": row["a"], "b": row["b"], "c": 7}
        assert trial["seed"] == derive_seed(3, i)
        assert trial["sweep"]["index"] == i and trial["sweep"]["size"] == 4
        assert row["Result"] == pytest.approx(expected(row["a"], row["b"], 7, trial["seed"]))
        data = ex.get_persisted("prepare", trial_id)
        np.testing.assert_array_equal(data, np.arange(4.0) * row["a"] / row["b"])
        assert ex.load_metric("sum", trial_id)[trial_id].tolist() == [data.sum()]
    assert len({ex.get_trial(i)["sweep"]["id"] for i in rows.index}) == 1


def test_a_failed_trial_is_recorded_and_the_others_go_on(tmp_path: Path, dp_log: Any) -> None:
    ex = experiment(tmp_path)
    result = build(ex)

    rows = ex.sweep(result, trials=[{"a": 1}, {"a": 1, "b": 0}, {"a": 2, "c": 0}], seed=1)

    assert list(rows["Success"]) == [True, False, True]
    assert rows.loc[2, "Description"] == "ZeroDivisionError(division by zero)"
    assert list(rows["c"]) == [10, 10, 0]
    failed = ex.get_trial(2)
    assert failed["status"] == "failed"
    # The worker's own traceback, down to the step's line
    assert "return np.arange(4, dtype=float) * (a / b)" in failed["traceback"]
    assert failed["traceback"].rstrip().endswith("ZeroDivisionError: division by zero")
    assert "Failed Experiment (trial id=2): ZeroDivisionError(division by zero)" in dp_log.messages(
        "WARNING"
    )
    assert "Finished Experiment (trial id=3)" in dp_log.messages("INFO")
    assert ex.get_trial(3)["result_value"] == pytest.approx(expected(2, 1, 0, derive_seed(1, 2)))


def test_seeds_derived_given_or_drawn(tmp_path: Path, dp_log: Any) -> None:
    ex = experiment(tmp_path)
    result = build(ex)

    first = ex.sweep(result, grid={"a": [1, 2, 3]}, seed=42, verbose=True)
    again = ex.sweep(result, grid={"a": [1, 2, 3]}, seed=42, verbose=True)
    drawn = ex.sweep(result, grid={"a": [1, 2, 3]}, verbose=True)
    given = ex.sweep(result, trials=[{"a": 3}], seeds=[first["Seed"].iloc[2]], scheduler="sync")

    assert list(first["Seed"]) == [derive_seed(42, i) for i in range(3)]
    assert list(again["Seed"]) == list(first["Seed"])
    assert list(again["Result"]) == list(first["Result"])
    assert len(set(drawn["Seed"]) | set(first["Seed"])) == 6
    assert given["Result"].iloc[0] == first["Result"].iloc[2]
    messages = dp_log.messages("INFO")
    assert f"Random seed is derived from the sweep's seed 42: {derive_seed(42, 0)}" in messages
    assert f"Random seed is initialized with given seed: {derive_seed(42, 2)}" in messages
    assert any(m.startswith("Random seed is not provided, initialized with") for m in messages)
    # Derived seeds do not depend on anything but the two numbers
    assert derive_seed(42, 0) == 1073144562


def test_threads_never_mix_the_seeds_of_concurrent_trials(tmp_path: Path) -> None:
    """Steps of different trials share one process on the threaded scheduler, and with it
    numpy's global generator: a step that seeds, yields the GIL and then draws must still
    draw from its own trial's seed."""
    ex = experiment(tmp_path)
    a = ex.parameter("a")

    @ex.result
    def draw(a):
        time.sleep(0.05)  # another trial's step would run (and seed) here
        return float(np.random.random())

    rows = ex.sweep(draw(a), grid={"a": list(range(6))}, seed=11, scheduler="threads")

    seeds = [derive_seed(11, i) for i in range(6)]
    assert list(rows["Result"]) == [np.random.RandomState(s).random_sample() for s in seeds]


def test_mistakes_are_reported_before_any_trial_id_is_used(tmp_path: Path) -> None:
    ex = experiment(tmp_path)
    result = build(ex)

    with pytest.raises(TypeError, match="exactly one of grid= .* or trials="):
        ex.sweep(result)
    with pytest.raises(TypeError, match="exactly one of grid="):
        ex.sweep(result, grid={"a": [1]}, trials=[{"a": 1}])
    with pytest.raises(TypeError, match=r"grid\['a'\] must be a list of values to try"):
        ex.sweep(result, grid={"a": 5})
    with pytest.raises(TypeError, match=r"trials\[1\] must be a dict"):
        ex.sweep(result, trials=[{"a": 1}, 2])
    with pytest.raises(UnknownParameter):
        ex.sweep(result, grid={"a": [1], "nope": [2]})
    with pytest.raises(ParameterUndefined):
        ex.sweep(result, trials=[{"a": 1}, {"b": 2}])  # the second has no a
    with pytest.raises(ValueError, match="seeds= has 1 seeds for 2 trials"):
        ex.sweep(result, grid={"a": [1, 2]}, seeds=[1])
    with pytest.raises(TypeError, match="either seed= .* or seeds="):
        ex.sweep(result, grid={"a": [1]}, seed=1, seeds=[1])
    with pytest.raises(ValueError, match="seed must be an integer"):
        ex.sweep(result, grid={"a": [1]}, seed=-1)
    with pytest.raises(TypeError, match="output of an @ex.result step"):
        ex.sweep(lambda: 1, grid={"a": [1]})

    assert ex.trial_id == 0
    assert not (tmp_path / "store").exists()
    assert ex.sweep(result, grid={"a": []}).empty


def test_an_interrupt_records_every_unfinished_trial(tmp_path: Path) -> None:
    ex = experiment(tmp_path)
    a = ex.parameter("a")

    @ex.result
    def stop(a):
        if a == 2:
            raise KeyboardInterrupt
        return a

    with pytest.raises(KeyboardInterrupt):
        ex.sweep(stop(a), grid={"a": [1, 2, 3, 4]}, scheduler="sync")

    statuses = {i: ex.get_trial(i)["status"] for i in range(1, 5)}
    assert "running" not in statuses.values()
    assert statuses[2] == "failed"
    assert ex.get_trial(2)["description"] == "KeyboardInterrupt()"


def test_cached_steps_are_reused_by_later_sweeps(tmp_path: Path) -> None:
    ex = experiment(tmp_path)
    a = ex.parameter("a")
    runs: list[int] = []

    @ex.persist(cache=True)
    def prepare(a):
        runs.append(a)
        return a * 10

    @ex.result
    def score(data):
        return data + 1

    result = score(prepare(a))
    first = ex.sweep(result, grid={"a": [1, 2]}, verbose=True)
    second = ex.sweep(result, grid={"a": [1, 2, 3]}, verbose=True)
    uncached = ex.sweep(result, grid={"a": [1]}, cache=False, verbose=True)

    assert list(first["Reused Steps"]) == ["", ""]
    assert list(second["Reused Steps"]) == ["prepare", "prepare", ""]
    assert list(second["Result"]) == [11, 21, 31]
    assert list(uncached["Reused Steps"]) == [""]
    assert sorted(runs) == [1, 1, 2, 3]


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_progress_bar_on_local_schedulers(tmp_path: Path, scheduler: str, capsys: Any) -> None:
    ex = experiment(tmp_path)
    result = build(ex)

    rows = ex.sweep(result, grid={"a": [1, 2]}, seed=5, scheduler=scheduler, progress=True)
    shown = capsys.readouterr().out
    quiet = ex.sweep(result, grid={"a": [1, 2]}, seed=5, scheduler=scheduler, progress=False)

    assert "100% Completed" in shown
    assert "Completed" not in capsys.readouterr().out
    assert list(rows["Result"]) == list(quiet["Result"])
    assert rows["Result"].tolist() == pytest.approx(
        [expected(a, 1, 10, derive_seed(5, i)) for i, a in enumerate([1, 2])]
    )
    assert {int(ex.load_metric("pid", int(i)).iloc[0, 0]) for i in rows.index} == {os.getpid()}


# ---------------------------------------------------------------------------------------
# A distributed.Client on a LocalCluster
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with process_cluster(
        tmp_path_factory.mktemp("cluster"), config={"distributed.scheduler.allowed-failures": 0}
    ) as client:
        yield client


def test_sweep_runs_on_the_active_client(tmp_path: Path, client: Any, capsys: Any) -> None:
    ex = experiment(tmp_path)
    result = build(ex)

    rows = ex.sweep(result, grid={"a": [1, 2, 3], "b": [1, 0]}, seed=9, progress=True)

    bar = capsys.readouterr().out.split("\r")[-1]
    assert "100% Completed | 6 of 6 trials | 3 failed |" in bar
    assert list(rows["Success"]) == [True, False] * 3
    assert set(rows.loc[~rows["Success"], "Description"]) == {"ZeroDivisionError(division by zero)"}
    for i, trial_id in enumerate(rows.index):
        if rows.loc[trial_id, "Success"]:
            a = rows.loc[trial_id, "a"]
            assert rows.loc[trial_id, "Result"] == pytest.approx(
                expected(a, 1, 10, derive_seed(9, i))
            )
            assert ex.load_metric("pid", int(trial_id)).iloc[0, 0] != os.getpid()
            assert ex.get_persisted("prepare", int(trial_id))[1] == a
    # The dashboard groups tasks by key prefix: the steps' names
    prefixes = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    assert {"prepare", "score", "trial"} <= set(prefixes)


def test_progress_bars_in_a_notebook(tmp_path: Path, client: Any) -> None:
    """In a real Jupyter kernel: on the Client, a widget counting finished trials (text where
    ipywidgets cannot be imported); dask's ProgressBar on the threaded scheduler; all shown by
    default and each complete when its cell ends."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("ipywidgets")
    sources = [
        f"""
        import logging
        import sys
        import daskperiment
        from distributed import Client
        logging.getLogger("daskperiment").setLevel(logging.WARNING)
        client = Client({client.scheduler.address!r})
        ex = daskperiment.Experiment("notebook_pj", backend={str(tmp_path / "store")!r})
        a = ex.parameter("a")

        @ex.result
        def inverse(a):
            return 1 / a
        """,
        "with_widget = ex.sweep(inverse(a), grid={'a': [1, 2, 0, 4]})",
        "sys.modules['ipywidgets'] = None\n"
        "on_cluster = ex.sweep(inverse(a), grid={'a': [1, 2, 4]})",
        "on_threads = ex.sweep(inverse(a), grid={'a': [8]}, scheduler='threads')",
        "print(len(with_widget), list(on_cluster['Result']), list(on_threads['Result']))\n"
        "client.close()",
    ]
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(textwrap.dedent(src)) for src in sources]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    runner = nbclient.NotebookClient(
        notebook, timeout=120, resources={"metadata": {"path": str(tmp_path)}}
    )
    with runner.setup_kernel(env=env):
        for index, cell in enumerate(notebook.cells):
            runner.execute_cell(cell, index)

    def text(cell: Any) -> str:
        assert all(o["output_type"] != "error" for o in cell.outputs), cell.outputs
        return "".join(o.get("text", "") for o in cell.outputs if o["output_type"] == "stream")

    # The widget: displayed in its cell, its final state a full bar marked as having failures
    views = [o for o in notebook.cells[1].outputs if o["output_type"] == "display_data"]
    assert len(views) == 1 and "Completed" not in text(notebook.cells[1])
    box = views[0]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
    state = runner.widget_state
    bar_id, label_id = (ref.removeprefix("IPY_MODEL_") for ref in state[box]["children"])
    assert state[bar_id]["_model_name"] == "IntProgressModel"
    assert (state[bar_id]["value"], state[bar_id]["max"]) == (4, 4)
    assert state[bar_id]["bar_style"] == "danger"
    assert "100% Completed | 4 of 4 trials | 1 failed" in state[label_id]["value"]

    assert "100% Completed | 3 of 3 trials |" in text(notebook.cells[2])
    assert "failed" not in text(notebook.cells[2])
    assert "100% Completed" in text(notebook.cells[3])
    assert text(notebook.cells[4]).strip() == "4 [1.0, 0.5, 0.25] [0.125]"


def test_a_quick_sweep_on_a_client_always_ends_its_bar(tmp_path: Path, client: Any) -> None:
    """Each trial's future is let go once it is recorded: the bar counts recorded trials itself,
    so it ends with the sweep however soon the trials finish, and leaves nothing running."""
    import contextlib
    import io

    ex = experiment(tmp_path)
    a = ex.parameter("a")

    @ex.result
    def double(a: int) -> int:
        return 2 * a

    before = set(threading.enumerate())
    for _ in range(10):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            ex.sweep(double(a), grid={"a": [1, 2, 3]}, progress=True)
        last = out.getvalue().split("\r")[-1]
        assert "100% Completed | 3 of 3 trials |" in last and last.endswith("\n")
    assert set(threading.enumerate()) <= before

    def feeds(dask_scheduler: Any) -> list[str]:
        import asyncio

        names = (t.get_coro().__qualname__ for t in asyncio.all_tasks())
        return [name for name in names if "feed" in name]

    assert client.run_on_scheduler(feeds) == []  # no scheduler-side bar waits on lost keys


def test_workers_write_persisted_outputs_and_send_only_digests(tmp_path: Path, client: Any) -> None:
    """A persisted intermediate is written by the worker that made it; the client never
    receives it (each unpickling leaves a marker file named after the process)."""
    marks = tmp_path / "unpickled-in"
    marks.mkdir()
    ex = experiment(tmp_path)
    n = ex.parameter("n")

    class Big:
        def __init__(self, payload: bytes) -> None:
            self.payload = payload

        def __reduce__(self) -> Any:
            return (arrive, (self.payload,))

    def arrive(payload: bytes) -> Big:
        (marks / f"{os.getpid()}-{time.monotonic_ns()}").touch()
        return Big(payload)

    @ex.persist
    def make_big(n):
        return Big(os.urandom(n))

    @ex.result
    def size(big):
        return len(big.payload)

    rows = ex.sweep(size(make_big(n)), grid={"n": [1_000_000, 2_000_000]})

    assert list(rows["Result"]) == [1_000_000, 2_000_000]
    arrived_in = {int(p.name.split("-")[0]) for p in marks.iterdir()}
    assert os.getpid() not in arrived_in
    st = store.open(tmp_path / "store", create=False)
    for trial_id in rows.index:
        oid = ex.get_trial(int(trial_id))["steps"]["make_big"]["persisted"]
        assert st.info(oid).size > 1_000_000  # stored: random bytes do not compress
    # Loading it here is what leaves a marker of this process
    assert len(ex.get_persisted("make_big", int(rows.index[1])).payload) == 2_000_000
    assert os.getpid() in {int(p.name.split("-")[0]) for p in marks.iterdir()}


def test_workers_write_to_an_s3_store_given_with_storage_options(
    client: Any, s3_url_factory: Any, s3_storage_options: dict[str, Any]
) -> None:
    """The backend, options included, travels to the workers, which write there themselves."""
    backend = store.FsspecBackend(s3_url_factory(), **s3_storage_options)
    ex = daskperiment.Experiment(id="sweep_s3_pj", backend=backend)
    result = build(ex)

    rows = ex.sweep(result, grid={"a": [1, 2]}, seed=4)

    assert rows["Success"].all()
    for i, trial_id in enumerate(rows.index):
        trial_id = int(trial_id)
        assert ex.load_metric("pid", trial_id).iloc[0, 0] != os.getpid()
        assert ex.get_persisted("prepare", trial_id)[1] == rows.loc[trial_id, "a"]
        assert rows.loc[trial_id, "Result"] == pytest.approx(
            expected(rows.loc[trial_id, "a"], 1, 10, derive_seed(4, i))
        )
    assert store.open(backend).fsck().ok


def test_recorded_seeds_reproduce_trials_under_every_scheduler(tmp_path: Path, client: Any) -> None:
    ex = experiment(tmp_path)
    result = build(ex)
    rows = ex.sweep(result, grid={"a": [1, 2]}, verbose=True)  # seeds drawn on the cluster

    seeds = [int(s) for s in rows["Seed"]]
    trials = [{"a": int(a)} for a in rows["a"]]
    for scheduler in ["sync", "threads", "processes", client]:
        again = ex.sweep(result, trials=trials, seeds=seeds, scheduler=scheduler)
        assert list(again["Result"]) == list(rows["Result"])
        pids = {int(ex.load_metric("pid", int(i)).iloc[0, 0]) for i in again.index}
        assert (os.getpid() in pids) == (scheduler in ("sync", "threads"))
    ex.set_parameters(a=2)
    assert result.compute(seed=seeds[1], scheduler="sync") == rows["Result"].iloc[1]


def test_a_killed_worker_fails_its_trial_only(tmp_path: Path, client: Any) -> None:
    """SIGKILL the worker process running one trial's step: that trial is recorded failed
    (KilledWorker), the others complete, and the sweep returns every row.

    The victim's step leaves its worker's thread pool (``secede``) before it sleeps, so the
    other trials' tasks never wait behind it on that worker: when it is killed, it is the only
    task there (every task on a dead worker counts as killed, see docs/distributed.md).
    """
    from distributed import secede

    pids = tmp_path / "pids"
    pids.mkdir()
    ex = experiment(tmp_path)
    a = ex.parameter("a")

    @ex.result
    def work(a):
        for epoch in range(3):
            ex.save_metric("progress", epoch=epoch, value=epoch)
        if a == 0:
            secede()
            (pids / "victim").write_text(str(os.getpid()))
            time.sleep(60)
        return a

    outcome: dict[str, Any] = {}
    # A seceded step still holds its process's step lock: lift it (no step draws numbers).
    grid = {"a": [1, 2, 0, 3, 4]}
    thread = threading.Thread(
        target=lambda: outcome.update(rows=ex.sweep(work(a), grid=grid, one_step_per_process=False))
    )
    thread.start()
    victim, others = 3, [1, 2, 4, 5]  # a=0 is the third trial
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (pids / "victim").exists() and ex.trial_id == 5:
            if all(ex.get_trial(i)["status"] == "success" for i in others):
                break
        time.sleep(0.1)
    assert [ex.get_trial(i)["status"] for i in others] == ["success"] * 4
    # The victim's live metrics are readable from here while its step runs on the worker
    while "progress" not in ex.get_metric_keys(victim) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ex.load_metric("progress", victim)[victim].tolist() == [0, 1, 2]

    os.kill(int((pids / "victim").read_text()), signal.SIGKILL)
    thread.join(timeout=60)

    rows = outcome["rows"]
    assert list(rows.index) == [1, 2, 3, 4, 5]
    assert list(rows["Success"]) == [True, True, False, True, True]
    assert rows.loc[victim, "Description"].startswith("KilledWorker(")
    assert ex.get_trial(victim)["status"] == "failed"
    assert list(rows.loc[rows["Success"], "Result"]) == [1, 2, 3, 4]
