"""The quickstart's steps on a local Dask cluster: every record made on the workers (metrics,
persisted outputs, digests, seeds) reaches the trial, as with the synchronous scheduler.

    python examples/local_cluster.py

Needs ``distributed`` (``pip install daskperiment[distributed]``).
"""

import os

import numpy as np
import pandas as pd
from distributed import Client, LocalCluster

import daskperiment

ex = daskperiment.Experiment(id="distributed_pj")
a = ex.parameter("a")
b = ex.parameter("b")


@ex.persist
def prepare_data(a, b):
    return a + b


@ex.result
def calculate_score(s):
    for i in range(10):
        ex.save_metric("dummy_score", epoch=i, value=100 - np.random.random() * i)
    ex.save_metric("worker pid", epoch=0, value=os.getpid())
    return 10 / s


if __name__ == "__main__":  # workers start by importing this file: build no cluster there
    pd.set_option("display.max_columns", None)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        with Client(cluster):
            s = calculate_score(prepare_data(a, b))
            for value in (1, 2, 3):
                ex.set_parameters(a=value, b=2)
                print("result:", s.compute(seed=1))  # runs on the cluster's workers

    last = ex.trial_id
    print("prepare_data:", ex.get_persisted("prepare_data", trial_id=last))
    print(
        "steps ran in another process:", ex.load_metric("worker pid", last)[last][0] != os.getpid()
    )
    print(ex.load_metric("dummy_score", trial_id=[last - 1, last]).head(3))
    print(ex.get_history(verbose=True)[["a", "b", "Result", "Success", "Seed"]].tail(3))
