"""dask's entry points and container storage (docs/performance.md, "dask.compute and containers").

1. Per-trial overhead of ``dask.compute(r)`` against ``r.compute()``: the same two-step
   experiment on a local store, alternating the two in rounds so drift hits both alike.
2. A dict of 10 DataFrames of 10 MB each stored as a ``container`` (one object per frame)
   against the same dict as one ``pickle`` object: time and bytes written; then the second
   trial's output, with 9 frames unchanged.

Run: ``python benchmarks/bench_native.py [--trials 300] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd

import daskperiment
import daskperiment_store as store
from daskperiment_store import codec


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def overhead(trials: int, rounds: int) -> dict[str, list[float]]:
    """Per-trial milliseconds: the two calls alternate trial by trial (so load on a shared
    machine hits both alike); each round's median, per call."""
    logging.getLogger("daskperiment").setLevel(logging.WARNING)
    out: dict[str, list[float]] = {"r.compute()": [], "dask.compute(r)": []}
    with tempfile.TemporaryDirectory() as tmp:
        ex = daskperiment.Experiment("bench_native", backend=Path(tmp) / "s", system_metrics=False)
        a = ex.parameter("a", default=1)

        @ex
        def prep(a):
            return a + 1

        @ex.result
        def score(x):
            return x * 2

        r = score(prep(a))
        r.compute()  # warm up: store created, environment captured
        calls = {"r.compute()": r.compute, "dask.compute(r)": lambda: dask.compute(r)}
        for _ in range(rounds):
            times: dict[str, list[float]] = {name: [] for name in calls}
            for i in range(trials):
                order = list(calls) if i % 2 == 0 else list(calls)[::-1]
                for name in order:
                    started = time.perf_counter()
                    calls[name]()
                    times[name].append((time.perf_counter() - started) * 1000)
            for name, values in times.items():
                out[name].append(statistics.median(values))
    return out


def frames(seed: int, n: int = 10, mb: int = 10) -> dict[str, pd.DataFrame]:
    rows = mb * 1024 * 1024 // 8 // 4  # 4 float64 columns
    rng = np.random.default_rng(seed)
    return {
        f"frame{i}": pd.DataFrame(rng.random((rows, 4)), columns=list("abcd")) for i in range(n)
    }


def put_pickled(st: store.Store, value: Any) -> str:
    enc = codec._encode_pickle(value)  # the encoding a dict of frames had before containers
    oid = enc.oid
    st._store_encoded(oid, enc.kind, enc.chunks, enc.size)
    return oid


def containers() -> list[tuple[str, float, int, float, int]]:
    first = frames(0)
    second = dict(first, frame9=frames(1, n=10)["frame9"])  # 9 frames unchanged
    rows = []
    for name, put in (("container", lambda st, v: st.put(v)), ("pickle", put_pickled)):
        with tempfile.TemporaryDirectory() as tmp:
            st = store.open(Path(tmp) / "s")
            started = time.perf_counter()
            put(st, first)
            t1 = time.perf_counter() - started
            b1 = tree_bytes(Path(tmp) / "s")
            started = time.perf_counter()
            put(st, second)
            t2 = time.perf_counter() - started
            b2 = tree_bytes(Path(tmp) / "s") - b1
            rows.append((name, t1, b1, t2, b2))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}; numpy {np.__version__}, pandas {pd.__version__}")
    # Default schedulers on both sides: the trial's own graph runs on dask's default (threads)
    # either way; dask.compute(r) adds the one outer task that runs the trial.
    print(
        "\nPer-trial time, ms (default scheduler, local store; median of round medians, each round)"
    )
    for name, values in overhead(args.trials, args.rounds).items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:18} {statistics.median(values):6.2f}   [{shown}]")
    print("\nA dict of 10 x 10 MB DataFrames: first trial, then second with 9 frames unchanged")
    print(f"  {'stored as':10} {'1st s':>7} {'1st MB':>8} {'2nd s':>7} {'2nd MB':>8}")
    for name, t1, b1, t2, b2 in containers():
        print(f"  {name:10} {t1:7.2f} {b1 / 2**20:8.1f} {t2:7.2f} {b2 / 2**20:8.1f}")


if __name__ == "__main__":
    main()
