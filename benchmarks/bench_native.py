"""dask's entry points and container storage (docs/performance.md, "dask.compute and containers").

1. Per-trial overhead of ``dask.compute(r)`` against ``r.compute()``: the same two-step
   experiment on a local store, the calls alternating trial by trial so drift hits both
   alike; medians per round, their median, the ratio; under dask's default scheduler (no
   keywords), ``scheduler="sync"`` and ``scheduler="threads"``. Beside them, dask.compute's
   own cost: ``dask.compute`` of a plain ``dask.delayed`` call against calling the function.
2. A dict of 10 DataFrames of 10 MB each stored as a ``container`` (one object per frame)
   against the same dict as one ``pickle`` object: time and bytes written; then the second
   trial's output, with 9 frames unchanged.

Run: ``python benchmarks/bench_native.py [--trials 300] [--rounds 5]
[--only overhead|containers] [--schedulers default,sync,threads] [--store local|memory]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import uuid
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


SCHEDULERS: dict[str, dict[str, Any]] = {
    "default": {},
    "sync": {"scheduler": "sync"},
    "threads": {"scheduler": "threads"},
}


def overhead(
    trials: int, rounds: int, kwargs: dict[str, Any], memory: bool = False
) -> dict[str, list[float]]:
    """Per-trial milliseconds of ``r.compute(**kwargs)`` and ``dask.compute(r, **kwargs)``,
    and dask.compute's own floor: ``dask.compute(d)`` of a plain ``dask.delayed`` call
    against calling its function. The calls alternate, their order flipping every trial, so
    load on a shared machine hits them alike; each round's median, per call. ``memory``: on a
    ``memory://`` store (no file system: the steadier figure on a loaded machine)."""
    logging.getLogger("daskperiment").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        backend = f"memory://bench_native-{uuid.uuid4().hex}" if memory else Path(tmp) / "s"
        ex = daskperiment.Experiment("bench_native", backend=backend, system_metrics=False)
        a = ex.parameter("a", default=1)

        @ex
        def prep(a):
            return a + 1

        @ex.result
        def score(x):
            return x * 2

        r = score(prep(a))

        def plain(x: int) -> int:
            return x * 2

        d = dask.delayed(plain)(1)
        calls = {
            "r.compute()": lambda: r.compute(**kwargs),
            "dask.compute(r)": lambda: dask.compute(r, **kwargs),
            "plain function": lambda: plain(1),
            "dask.compute(delayed)": lambda: dask.compute(d, **kwargs),
        }
        for call in calls.values():
            call()  # warm up: store created, environment captured, pools started
        out: dict[str, list[float]] = {name: [] for name in calls}
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


def show_overhead(trials: int, rounds: int, schedulers: list[str], memory: bool = False) -> None:
    for name in schedulers:
        kwargs = SCHEDULERS[name]
        shown_kwargs = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no keywords"
        where = "memory:// store" if memory else "local store"
        print(f"\nPer-trial time, ms: scheduler {name} ({shown_kwargs}); {where}")
        print(f"  load average before: {os.getloadavg()[0]:.2f}")
        out = overhead(trials, rounds, kwargs, memory)
        med = {call: statistics.median(values) for call, values in out.items()}
        for call, values in out.items():
            shown = ", ".join(f"{v:.3f}" for v in values)
            print(f"  {call:22} {med[call]:7.3f}   rounds [{shown}]")
        ratios = [n / b for n, b in zip(out["dask.compute(r)"], out["r.compute()"], strict=True)]
        gap = med["dask.compute(r)"] - med["r.compute()"]
        floor = med["dask.compute(delayed)"] - med["plain function"]
        print(
            f"  ratio dask.compute(r) / r.compute(): {statistics.median(ratios):.3f} "
            f"(rounds {', '.join(f'{x:.3f}' for x in ratios)}); "
            f"difference {gap:+.3f} ms"
        )
        print(f"  dask.compute's own cost for a plain delayed call: {floor:+.3f} ms")
        print(f"  load average after: {os.getloadavg()[0]:.2f}")


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
    parser.add_argument("--trials", type=int, default=300, help="trials per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--only", choices=["overhead", "containers"], help="run one of the two sections"
    )
    parser.add_argument(
        "--schedulers",
        default="default,sync,threads",
        help="comma-separated, of: " + ", ".join(SCHEDULERS),
    )
    parser.add_argument(
        "--store", choices=["local", "memory"], default="local", help="where trials are stored"
    )
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}; numpy {np.__version__}, pandas {pd.__version__}, ", end="")
    print(f"dask {dask.__version__}; load average {os.getloadavg()}")
    if args.only in (None, "overhead"):
        show_overhead(args.trials, args.rounds, args.schedulers.split(","), args.store == "memory")
    if args.only in (None, "containers"):
        print("\nA dict of 10 x 10 MB DataFrames: first trial, then second with 9 frames unchanged")
        print(f"  {'stored as':10} {'1st s':>7} {'1st MB':>8} {'2nd s':>7} {'2nd MB':>8}")
        for name, t1, b1, t2, b2 in containers():
            print(f"  {name:10} {t1:7.2f} {b1 / 2**20:8.1f} {t2:7.2f} {b2 / 2**20:8.1f}")


if __name__ == "__main__":
    main()
