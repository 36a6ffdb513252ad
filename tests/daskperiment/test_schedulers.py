"""The same pipeline under every dask scheduler: same results, same records.

Steps running in worker processes (``processes``, ``distributed``) record metrics, persisted
outputs, digests and seeds there; all of it must reach the trial record exactly as under the
synchronous scheduler.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from clusters import process_cluster

import daskperiment

SCHEDULERS = ["sync", "threads", "processes", "distributed"]
PARAMS = {"x": 2.0, "n": 10}
SEED = 7


def build(ex: Any) -> Any:
    """The pipeline; defined in a function so workers receive the steps by value.

    Only ``add_noise`` draws random numbers, so the expected result follows from the seed.
    """
    x = ex.parameter("x")
    n = ex.parameter("n")

    @ex.persist
    def make_data(x, n):
        return np.arange(n, dtype=float) * x

    @ex
    def add_noise(data):
        ex.save_metric("trial", epoch=0, value=ex.current_trial_id)
        ex.save_metric("pid", epoch=0, value=os.getpid())
        return data + np.random.random(data.shape)

    @ex.result
    def score(noisy):
        for epoch in range(5):
            ex.save_metric("loss", epoch=epoch, value=float(noisy[epoch]))
        return float(noisy.sum())

    return score(add_noise(make_data(x, n)))


def expected() -> dict[str, Any]:
    data = np.arange(PARAMS["n"], dtype=float) * PARAMS["x"]
    noisy = data + np.random.RandomState(SEED).random_sample(PARAMS["n"])
    return {"data": data, "noisy": noisy, "result": float(noisy.sum())}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One two-worker process cluster for the module (starting one costs seconds)."""
    with process_cluster(tmp_path_factory.mktemp("cluster")) as client:
        yield client


def compute_kwargs(scheduler: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if scheduler == "distributed":
        return {"scheduler": request.getfixturevalue("client")}
    return {"scheduler": scheduler}


def records(ex: Any, trial_id: int) -> dict[str, Any]:
    """What must not depend on the scheduler: values, digests, seed, metrics."""
    trial = ex.get_trial(trial_id)
    verbose = ex.get_history(verbose=True).loc[trial_id]
    random = ("Finished", "Process Time", "Global ID")  # differ per trial whatever the scheduler
    keep = [c for c in verbose.index if c not in random]
    keep = [c for c in keep if "nvironment" not in str(c)]
    return {
        # NaN (Description of a success) != NaN: compare it as None
        "history": {k: None if pd.isna(v) else v for k, v in verbose[keep].items()},
        "digests": {k: v for k, v in trial["digests"].items() if k != "environment"},
        "steps": {name: (step["inputs"], step["output"]) for name, step in trial["steps"].items()},
        "seed": trial["seed"],
        "loss": ex.load_metric("loss", trial_id=trial_id)[trial_id].tolist(),
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The records of the pipeline run with the synchronous scheduler, elsewhere."""
    directory = tmp_path_factory.mktemp("reference")
    ex = daskperiment.Experiment(id="schedulers_pj", backend=directory / "store")
    result = build(ex)
    ex.set_parameters(**PARAMS)
    result.compute(seed=SEED, scheduler="sync")
    return records(ex, 1)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_same_result_and_records(
    scheduler: str, request: pytest.FixtureRequest, reference: dict[str, Any], dp_log: Any
) -> None:
    ex = daskperiment.Experiment(id="schedulers_pj")
    result = build(ex)
    ex.set_parameters(**PARAMS)
    want = expected()

    value = result.compute(seed=SEED, **compute_kwargs(scheduler, request))

    assert value == pytest.approx(want["result"], rel=1e-12)
    assert ex.trial_id == 1
    np.testing.assert_array_equal(ex.get_persisted("make_data", trial_id=1), want["data"])
    assert ex.load_metric("loss", trial_id=1)[1].tolist() == want["noisy"][:5].tolist()
    assert ex.load_metric("trial", trial_id=1)[1].tolist() == [1]
    got = records(ex, 1)
    assert got == reference
    assert got["seed"] == SEED
    assert got["history"]["Seed"] == SEED
    assert sorted(got["steps"]) == ["add_noise", "make_data", "score"]
    assert dp_log.messages("WARNING") == []
    # the records above came from worker processes where the scheduler has them
    ran_in = ex.load_metric("pid", trial_id=1)[1].tolist()[0]
    assert (ran_in != os.getpid()) == (scheduler in ("processes", "distributed"))


@pytest.mark.parametrize("scheduler", ["processes", "distributed"])
def test_digests_from_workers_match_the_main_process(
    scheduler: str, request: pytest.FixtureRequest, dp_log: Any
) -> None:
    """A trial in workers then the same trial in-process: no purity warning, same digests."""
    ex = daskperiment.Experiment(id="purity_pj")
    result = build(ex)
    ex.set_parameters(**PARAMS)
    first = result.compute(seed=SEED, **compute_kwargs(scheduler, request))
    second = result.compute(seed=SEED, scheduler="sync")
    assert first == second
    assert dp_log.messages("WARNING") == []
    one, two = records(ex, 1), records(ex, 2)
    assert one["steps"] == two["steps"]
    assert one["digests"] == two["digests"]
    history = ex.get_history()
    assert history["Success"].tolist() == [True, True]


@pytest.mark.parametrize("scheduler", ["threads", "processes", "distributed"])
def test_failure_in_a_worker_is_recorded(scheduler: str, request: pytest.FixtureRequest) -> None:
    ex = daskperiment.Experiment(id="failure_pj")
    result = build(ex)
    ex.set_parameters(x=1.0, n=2)  # score reads noisy[2..4]: IndexError in the worker
    with pytest.raises(IndexError):
        result.compute(**compute_kwargs(scheduler, request))
    history = ex.get_history()
    assert history["Success"].tolist() == [False]
    assert history.loc[1, "Description"].startswith("IndexError(")
    assert pd.isna(history.loc[1, "Result"])


def test_default_distributed_client_is_used(client: Any, workdir: Path) -> None:
    """With a Client created (the usual notebook set-up), compute() runs on its workers."""
    import dask

    ex = daskperiment.Experiment(id="default_client_pj")
    result = build(ex)
    ex.set_parameters(**PARAMS)
    with dask.config.set(scheduler=client):
        value = result.compute(seed=SEED)
    assert value == pytest.approx(expected()["result"], rel=1e-12)
    assert ex.load_metric("pid", trial_id=1)[1].tolist()[0] != os.getpid()
