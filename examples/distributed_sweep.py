"""A parameter sweep on a local Dask cluster: every parameter set is its own trial, all run at
once on the cluster's workers; one fails and the others go on; their metrics are watched
while they run; the best trial is rerun from its recorded seed.

    python examples/distributed_sweep.py

Needs ``distributed`` (``pip install daskperiment[distributed]``). See docs/distributed.md.
"""

import threading
import time

import numpy as np
from distributed import Client, LocalCluster

import daskperiment
import daskperiment_store as store

ex = daskperiment.Experiment(id="distributed_sweep_pj")
lr = ex.parameter("lr")
noise = ex.parameter("noise", default=0.1)


@ex.persist
def make_data(noise):
    x = np.linspace(0, 1, 200)
    return x, 3 * x + 1 + np.random.default_rng(0).normal(0, noise, x.shape)


@ex.result
def fit(data, lr):
    if lr >= 1:
        raise ValueError(f"learning rate {lr} diverges")
    x, y = data
    w, b = np.random.normal(0, 1, 2)  # a random start: seeded per trial, so reproducible
    for epoch in range(40):
        error = w * x + b - y
        w -= lr * float((error * x).mean())
        b -= lr * float(error.mean())
        ex.save_metric("loss", epoch=epoch, value=float((error**2).mean()))
        time.sleep(0.05)  # a longer training: its metrics become visible while it runs
    return float(((w * x + b - y) ** 2).mean())


def watch(stop: threading.Event) -> None:
    """What another process (a notebook, the dashboard) sees while the sweep runs."""
    reader = None
    reported = set()
    while not stop.wait(0.5):
        if reader is None:
            try:  # a store of its own, read-only, as another process would open it
                st = store.open("daskperiment_cache/distributed_sweep_pj", read_only=True)
            except store.errors.StoreNotFound:  # no trial has started yet
                continue
            reader = daskperiment.Experiment("distributed_sweep_pj", backend=st)
        history = reader.get_history(verbose=True)
        for trial_id in history.index[history["Status"] == "running"]:
            if trial_id in reported or "loss" not in reader.get_metric_keys(int(trial_id)):
                continue
            loss = reader.load_metric("loss", int(trial_id))[trial_id]
            print(f"live: trial {trial_id} is running, {len(loss)} losses so far")
            reported.add(trial_id)


if __name__ == "__main__":  # workers start by importing this file: build no cluster there
    result = fit(make_data(noise), lr)
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(stop,))
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        with Client(cluster):
            watcher.start()
            rows = ex.sweep(result, grid={"lr": [0.2, 0.5, 1.5], "noise": [0.1, 0.3]}, seed=7)
            stop.set()
            watcher.join()

    print(rows[["lr", "noise", "Result", "Success", "Description"]].to_string())
    best = int(rows["Result"].idxmin())
    print(f"best trial: {best}, parameters {ex.get_parameters(trial_id=best)}")
    print(ex.load_metric("loss", trial_id=[best]).tail(3))
    again = ex.sweep(
        result,
        trials=[ex.get_parameters(trial_id=best)],
        seeds=[ex.get_trial(best)["seed"]],
        scheduler="sync",
        progress=False,
    )
    print(
        "rerun with its seed gives the same result:",
        again["Result"].iloc[0] == rows.loc[best, "Result"],
    )
