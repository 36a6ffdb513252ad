"""Sweep benchmarks: figures for docs/performance.md ("Sweeps").

    python benchmarks/bench_sweep.py [--dir DIR] [--trials 200] [--cpu 1.0] [--repeat 3]
        [--json FILE]

* **parallel speed-up**: 8 trials whose one step burns ``--cpu`` seconds of CPU, on a
  ``LocalCluster(n_workers=2, threads_per_worker=1)``: one ``ex.sweep`` vs the same 8 run one
  by one with ``compute()`` on the same cluster (goal: the sweep >= 1.7x faster), and the
  same work as plain ``dask.delayed`` tasks (one by one vs one ``dask.compute``), which shows
  the parallelism the machine offered during the run;
* **per-trial overhead**: ``--trials`` trivial trials (the quickstart's two steps) through one
  ``ex.sweep`` vs as many sequential ``compute()`` calls, on dask's default local scheduler
  (threads) and on the cluster; plain ``dask.delayed`` of the same two functions (200 computed
  one by one, and 200 in one ``dask.compute``) for scale;
* **live metrics**: what watching a step costs every step, and one live write of a key
  holding 100,000 points.

Every figure is the median of ``--repeat`` runs, each on a fresh experiment (the speed-up
also the best of them: the run least disturbed by other processes on the machine). The
``daskperiment`` log records are dropped (a handler of our own replaces the default output).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask

import daskperiment

FIGURES: dict[str, Any] = {}


def burn(seconds: float) -> int:
    """Spend ``seconds`` of this thread's CPU time (CPU-bound: no sleeping, no I/O)."""
    start = time.thread_time()
    n = 0
    while time.thread_time() - start < seconds:
        for _ in range(1000):
            n += 1
    return n


def cpu_pipeline(ex: Any, seconds: float) -> Any:
    i = ex.parameter("i")

    @ex.result
    def heavy(i):
        return burn(seconds) * 0 + i

    return heavy(i)


def trivial_pipeline(ex: Any) -> Any:
    a = ex.parameter("a")
    b = ex.parameter("b")

    @ex
    def prepare_data(a, b):
        return a + b

    @ex.result
    def calculate_score(s):
        return 10 / s

    return calculate_score(prepare_data(a, b))


def timed(func: Callable[[], Any]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def median_of(repeat: int, run: Callable[[int], float]) -> float:
    return statistics.median(run(k) for k in range(repeat))


def report(label: str, seconds: float, unit: str = "s", per: int = 1) -> None:
    value = seconds / per * (1000 if unit == "ms" else 1)  # "us": given in microseconds
    FIGURES[label] = round(value, 4)
    print(f"  {label:<62} {value:>9.3f} {unit}", flush=True)


def bench_speedup(root: Path, client: Any, cpu: float, repeat: int) -> None:
    print(f"8 trials, one step burning {cpu:g} s of CPU, LocalCluster(2 workers x 1 thread):")

    def one_by_one(k: int) -> float:
        ex = daskperiment.Experiment(f"seq{k}", backend=root / f"seq{k}")
        result = cpu_pipeline(ex, cpu)

        def run() -> None:
            for i in range(8):
                ex.set_parameters(i=i)
                result.compute()

        return timed(run)

    def swept(k: int) -> float:
        ex = daskperiment.Experiment(f"sweep{k}", backend=root / f"sweep{k}")
        result = cpu_pipeline(ex, cpu)
        return timed(lambda: ex.sweep(result, grid={"i": list(range(8))}, progress=False))

    @dask.delayed
    def plain_heavy(i):
        return burn(cpu) * 0 + i

    def plain_one_by_one(k: int) -> float:
        return timed(lambda: [plain_heavy(i).compute() for i in range(8)])

    def plain_together(k: int) -> float:
        return timed(lambda: dask.compute(*[plain_heavy(i) for i in range(8)]))

    # Interleaved rounds, so a change of the machine's load hits all four the same way; the
    # minimum is the run least disturbed by other processes (as timeit reports). Plain
    # dask.delayed tasks doing the same work show what parallelism the machine offered.
    runs: dict[str, list[float]] = {"seq": [], "par": [], "plain seq": [], "plain par": []}
    for k in range(repeat):
        runs["seq"].append(one_by_one(k))
        runs["par"].append(swept(k))
        runs["plain seq"].append(plain_one_by_one(k))
        runs["plain par"].append(plain_together(k))
    for how, pick in (("median", statistics.median), ("best", min)):
        seq, par = pick(runs["seq"]), pick(runs["par"])
        plain_seq, plain_par = pick(runs["plain seq"]), pick(runs["plain par"])
        report(f"one by one: 8 compute() calls ({how} of {repeat})", seq)
        report(f"ex.sweep of the 8 ({how} of {repeat})", par)
        report(f"plain dask.delayed, 8 compute() calls ({how})", plain_seq)
        report(f"plain dask.delayed, one dask.compute of 8 ({how})", plain_par)
        FIGURES[f"speedup ({how})"] = round(seq / par, 2)
        FIGURES[f"plain speedup ({how})"] = round(plain_seq / plain_par, 2)
        verdict = "met" if seq / par >= 1.7 else "MISSED"
        print(f"  {'speed-up (' + how + ')':<62} {seq / par:>9.2f} x    (goal >= 1.7x: {verdict})")
        print(
            f"  {'plain dask speed-up, same machine (' + how + ')':<62} {plain_seq / plain_par:>9.2f} x"
        )


def bench_overhead(root: Path, client: Any, trials: int, repeat: int) -> None:
    print(f"{trials} trivial trials (two steps), per trial:")
    grid = [{"a": i, "b": 1} for i in range(trials)]
    where = {"threads (default local scheduler)": ("t", "threads"), "LocalCluster": ("d", client)}
    for name, (tag, scheduler) in where.items():

        def computes(k: int, tag: str = tag, scheduler: Any = scheduler) -> float:
            ex = daskperiment.Experiment(f"c{tag}{k}", backend=root / f"c{tag}{k}")
            result = trivial_pipeline(ex)

            def run() -> None:
                for params in grid:
                    ex.set_parameters(**params)
                    result.compute(scheduler=scheduler)

            return timed(run)

        def sweep(k: int, tag: str = tag, scheduler: Any = scheduler) -> float:
            ex = daskperiment.Experiment(f"s{tag}{k}", backend=root / f"s{tag}{k}")
            result = trivial_pipeline(ex)
            return timed(lambda: ex.sweep(result, trials=grid, scheduler=scheduler, progress=False))

        report(f"{name}: sequential compute()", median_of(repeat, computes), "ms", trials)
        report(f"{name}: one ex.sweep", median_of(repeat, sweep), "ms", trials)
        for together, how in ((False, "one by one"), (True, "one dask.compute")):
            seconds = plain(scheduler, trials, repeat, together)
            report(f"{name}: plain dask.delayed, {how}", seconds, "ms", trials)


def plain(scheduler: Any, trials: int, repeat: int, together: bool) -> float:
    @dask.delayed
    def prepare_data(a, b):
        return a + b

    @dask.delayed
    def calculate_score(s):
        return 10 / s

    def run(k: int) -> float:
        results = [calculate_score(prepare_data(i, 1)) for i in range(trials)]
        if together:
            return timed(lambda: dask.compute(*results, scheduler=scheduler))
        return timed(lambda: [r.compute(scheduler=scheduler) for r in results])

    return median_of(repeat, run)


def bench_live(root: Path, repeat: int) -> None:
    """What the live view of running trials costs: per step, and per write."""
    import daskperiment_store as store
    from daskperiment import live, metrics
    from daskperiment import record as trial_record

    print("live metrics:")
    st = store.open(root / "live")
    trial = type("Trial", (), {"experiment_id": "x", "trial_id": 1})()
    n = 10_000

    def watch_unwatch(k: int) -> float:
        buffer = metrics.MetricBuffer()
        start = time.perf_counter()
        for _ in range(n):
            live.unwatch(live.watch(st, trial, "step-key", buffer))
        return time.perf_counter() - start

    report(
        "watch + unwatch, per step (every step in a trial pays it)",
        median_of(repeat, watch_unwatch) * 1e6 / n,
        "us",
    )
    buffer = metrics.MetricBuffer()
    for i in range(100_000):
        buffer.add("loss", i, 1.0 / (i + 1))
    w = live.Watch(st, trial_record.live_prefix("x", 1), "step-key", buffer)

    def flush(k: int) -> float:
        w.sizes.clear()
        buffer.add("loss", 100_000 + k, 0.0)  # new points: a new object each time
        return timed(w.flush)

    report(
        "one live write of a key with 100,000 points (object + ref)", median_of(repeat, flush), "ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where the stores go (temp)")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--cpu", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.getLogger("daskperiment").addHandler(logging.NullHandler())
    from distributed import Client, LocalCluster

    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        cwd = os.getcwd()
        os.chdir(root)  # the workers' working directory
        try:
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
        finally:
            os.chdir(cwd)
        with cluster, Client(cluster) as client:  # the active client: sweeps run there
            client.run(lambda: __import__("daskperiment"))  # warm the workers' imports
            bench_speedup(root, client, args.cpu, args.repeat)
            bench_overhead(root, client, args.trials, args.repeat)
        bench_live(root, args.repeat)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(FIGURES, indent=2))


if __name__ == "__main__":
    main()
