"""Experiment benchmarks: figures for docs/performance.md, measured side by side in one run.

    python benchmarks/bench_experiment.py [--dir DIR] [--trials 2000] [--history 10000]
        [--history-store DIR] [--mb 100] [--skip-history] [--only SECTIONS] [--json FILE]

* per-trial overhead: the quickstart's two-step pipeline run as trials vs the same two
  functions as plain ``dask.delayed``, both computed with the synchronous scheduler,
  interleaved trial by trial; medians around trial 10 and around trial ``--trials``;
* ``save_metric`` of 100,000 points in one step (points/s), ``load_metric`` of them;
* ``get_history()`` of ``--history`` trials in a fresh process (the trials are generated once;
  ``--history-store DIR`` keeps them in DIR and reuses them on the next run);
* ``import daskperiment`` + ``Experiment()`` in a fresh process vs ``import dask`` alone;
* ``--only pertrial``: per trial on ``memory://``, ``/dev/shm`` and the disk, and the files one
  trial creates (benchmarks/bench_pertrial.py);
* the same ``--mb`` MB array persisted in 5 trials: seconds per trial vs ``np.save`` of the
  array into the same directory, and bytes on disk.

The ``daskperiment`` log records are created as usual but discarded (a handler that drops
them), so thousands of trials do not flood the terminal.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import numpy as np

import daskperiment

MB = 1 << 20
REPO = Path(__file__).resolve().parents[1]
FIGURES: dict[str, Any] = {}


def quiet_log() -> None:
    """Drop daskperiment's log records (a handler of our own replaces the default output)."""
    logger = logging.getLogger("daskperiment")
    logger.addHandler(logging.NullHandler())


def row(
    label: str,
    value: float,
    unit: str,
    base: float | None = None,
    goal: str = "",
    met: bool | None = None,
) -> None:
    text = f"  {label:<46} {value:>11.2f} {unit:<7}"
    if base is not None:
        text += f" baseline {base:>9.2f} {unit:<3} ratio {value / base:6.2f}x"
    if goal:
        text += f"   goal {goal}"
    if met is not None:
        text += "  ok" if met else "  MISSED"
    print(text, flush=True)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


# --- per-trial overhead ---------------------------------------------------------------------


def pipeline(ex: Any) -> Any:
    """The quickstart's steps, with a parameter that changes every trial."""
    a = ex.parameter("a")
    b = ex.parameter("b")

    @ex
    def prepare_data(a, b):
        return a + b

    @ex.result
    def calculate_score(s):
        return 10 / s

    return calculate_score(prepare_data(a, b))


def plain_prepare_data(a, b):
    return a + b


def plain_calculate_score(s):
    return 10 / s


def bench_trials(work: Path, trials: int, rounds: int = 60) -> None:
    """Trial time early and late in a history, side by side with plain dask.

    A long experiment first gets ``trials`` trials. Then, round by round, one trial of a new
    experiment (its trials 1, 2, ...), one trial of the long one and one plain dask compute
    run in turn, so load on the shared machine hits all three alike.
    """
    print(f"\nPer-trial overhead (sync scheduler; after {trials} trials vs a new experiment)")
    long = daskperiment.Experiment(id="trials_pj", backend=work / "trials")
    long_result = pipeline(long)
    for i in range(1, trials + 1):
        long.set_parameters(a=i, b=2)
        long_result.compute(scheduler="sync")
    new = daskperiment.Experiment(id="new_pj", backend=work / "new")
    new_result = pipeline(new)
    early: list[float] = []
    late: list[float] = []
    base: list[float] = []
    for i in range(1, rounds + 1):
        new.set_parameters(a=i, b=2)
        early.append(timed(lambda: new_result.compute(scheduler="sync")))
        long.set_parameters(a=trials + i, b=2)
        late.append(timed(lambda: long_result.compute(scheduler="sync")))
        plain = dask.delayed(plain_calculate_score)(dask.delayed(plain_prepare_data)(i, 2))
        base.append(timed(lambda plain=plain: plain.compute(scheduler="sync")))
    b = median_ms(base)
    row("plain dask.delayed, same two functions", b, "ms")
    for name, times in (
        (f"trials 5-{rounds} of a new experiment", early[4:]),
        (f"trials {trials + 1}-{trials + rounds}", late),
    ):
        t = median_ms(times)
        row(f"trial, {name}", t, "ms", b, "<= 5 ms and <= 2.5x", t <= 5 and t <= 2.5 * b)
        FIGURES[f"trial_ms {name}"] = {"ours": t, "plain_dask": b}
    row(
        "growth: late / early", median_ms(late) / median_ms(early[4:]), "x", goal="~1.0 (no growth)"
    )


# --- metrics ----------------------------------------------------------------------------------

POINTS = 100_000


def bench_metrics(work: Path, repeat: int = 5) -> None:
    print(f"\nMetrics: {POINTS:,} points saved in one step, then loaded")
    ex = daskperiment.Experiment(id="metrics_pj", backend=work / "metrics")
    a = ex.parameter("a")
    inside: list[float] = []

    @ex.result
    def with_metrics(a):
        t0 = time.perf_counter()
        for i in range(POINTS):
            ex.save_metric("loss", epoch=i, value=float(i))
        inside.append(time.perf_counter() - t0)
        return a

    @ex.result
    def without_metrics(a):
        return a

    ex.set_parameters(a=1)
    full, empty, trial_ids = [], [], []
    for _ in range(repeat):
        full.append(timed(lambda: with_metrics(a).compute(scheduler="sync")))
        trial_ids.append(ex.trial_id)
        empty.append(timed(lambda: without_metrics(a).compute(scheduler="sync")))
    extra = statistics.median(full) - statistics.median(empty)
    rate = POINTS / extra
    row(
        "save_metric, whole trial minus an empty trial",
        rate / 1e6,
        "M pts/s",
        goal=">= 1 M pts/s",
        met=rate >= 1e6,
    )
    row(
        "save_metric, calls inside the step only",
        POINTS / statistics.median(inside) / 1e6,
        "M pts/s",
    )
    FIGURES["save_metric_points_per_s"] = rate
    FIGURES["save_metric_in_step_points_per_s"] = POINTS / statistics.median(inside)

    loads = [timed(lambda t=t: ex.load_metric("loss", trial_id=t)) for t in trial_ids * 3]
    frame = ex.load_metric("loss", trial_id=trial_ids[0])
    assert frame.shape == (POINTS, 1), frame.shape
    row(
        "load_metric of 100,000 points",
        median_ms(loads),
        "ms",
        goal="<= 20 ms",
        met=median_ms(loads) <= 20,
    )
    FIGURES["load_metric_ms"] = median_ms(loads)
    cold = fresh_process(
        f"ex = daskperiment.Experiment(id='metrics_pj', backend={str(work / 'metrics')!r})\n"
        f"t0 = time.perf_counter(); ex.load_metric('loss', trial_id={trial_ids[0]})\n"
        "print(time.perf_counter() - t0)"
    )
    row("load_metric in a fresh process (first call)", cold * 1000, "ms")
    FIGURES["load_metric_fresh_process_ms"] = cold * 1000


# --- history ----------------------------------------------------------------------------------


def fresh_process(code: str, repeat: int = 3) -> float:
    """Median of the number a fresh interpreter prints after running ``code``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    prelude = "import time, logging\nimport daskperiment\ndaskperiment.Experiment  # imported on first use\n"
    prelude += "logging.getLogger('daskperiment').addHandler(logging.NullHandler())\n"
    values = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", prelude + code],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        values.append(float(out.strip().splitlines()[-1]))
    return statistics.median(values)


def make_history(path: Path, trials: int) -> None:
    ex = daskperiment.Experiment(id="history_pj", backend=path)
    if ex.trial_id >= trials:
        print(f"  reusing {ex.trial_id} trials in {path}")
        return
    result = pipeline(ex)
    t0 = time.perf_counter()
    for i in range(ex.trial_id + 1, trials + 1):
        ex.set_parameters(a=i, b=2)
        result.compute(scheduler="sync")
        if i % 1000 == 0:
            print(f"  generated {i} trials ({time.perf_counter() - t0:.0f} s)", flush=True)


def bench_history(path: Path, trials: int) -> None:
    print(f"\nget_history() of {trials:,} trials in a fresh process")
    make_history(path, trials)
    code = (
        f"ex = daskperiment.Experiment(id='history_pj', backend={str(path)!r})\n"
        "t0 = time.perf_counter(); h = ex.get_history()\n"
        f"assert len(h) >= {trials}, len(h)\n"
        "print(time.perf_counter() - t0)"
    )
    seconds = fresh_process(code)
    row("get_history()", seconds, "s", goal="<= 0.5 s", met=seconds <= 0.5)
    FIGURES["get_history_s"] = seconds
    code = (
        "t0 = time.perf_counter()\n"
        f"ex = daskperiment.Experiment(id='history_pj', backend={str(path)!r})\n"
        "print(time.perf_counter() - t0)"
    )
    row(f"Experiment() on the {trials:,}-trial store", fresh_process(code) * 1000, "ms")


# --- import -----------------------------------------------------------------------------------


def bench_import(work: Path, existing: Path | None = None) -> None:
    """``existing``: a store already holding trials of ``trials_pj``, also measured."""
    print("\nimport daskperiment + Experiment() in a fresh process")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))

    def run(code: str) -> float:
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout
        return float(out.strip().splitlines()[-1])

    ours, base, wall = [], [], []
    for i in range(5):
        target = work / f"import_{i}"
        ours.append(
            run(
                "import time; t0 = time.perf_counter()\nimport daskperiment\n"
                f"daskperiment.Experiment(id='import_pj', backend={str(target)!r})\n"
                "print(time.perf_counter() - t0)"
            )
        )
        base.append(
            run(
                "import time; t0 = time.perf_counter()\nimport dask\n"
                "print(time.perf_counter() - t0)"
            )
        )
        wall.append(
            timed(
                lambda: subprocess.run(
                    [sys.executable, "-c", "import daskperiment; daskperiment.Experiment"],
                    env=env,
                    check=True,
                )
            )
        )
    t, b = statistics.median(ours), statistics.median(base)
    row("import daskperiment + Experiment(), new store", t, "s", b, "<= 1 s", t <= 1)
    FIGURES["import_and_experiment_s"] = {"ours": t, "import_dask": b}
    if existing is not None:
        loaded = statistics.median(
            run(
                "import time; t0 = time.perf_counter()\nimport daskperiment\n"
                f"daskperiment.Experiment(id='trials_pj', backend={str(existing)!r})\n"
                "print(time.perf_counter() - t0)"
            )
            for _ in range(5)
        )
        row("  the same, loading a store with trials", loaded, "s", b, "<= 1 s", loaded <= 1)
        FIGURES["import_and_experiment_existing_s"] = loaded
    row("whole process: import daskperiment (and its Experiment)", statistics.median(wall), "s")


# --- scale: opening, history, log -n 20, dashboard and per-trial at 1k / 10k / 100k ------------


def bench_scale(root: Path, sizes_text: str) -> None:
    """The issue's figures at scale, each beside its baseline (benchmarks/scale.py)."""
    import scale

    sizes = [int(n) for n in sizes_text.split(",") if n]
    root.mkdir(parents=True, exist_ok=True)
    scale.bench_opening(root, sizes, pipeline)
    scale.bench_board_first_view(root / f"history_{max(sizes)}", max(sizes))
    scale.bench_trial_growth(root, sizes, pipeline)
    FIGURES.update(scale.FIGURES)


# --- persisting a large array -------------------------------------------------------------------


def disk_usage(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_persist(work: Path, mb: int) -> None:
    print(f"\nThe same {mb} MB array persisted in 5 trials")
    array = np.random.default_rng(0).random(mb * MB // 8)
    target = work / "persist"
    ex = daskperiment.Experiment(id="persist_pj", backend=target)
    a = ex.parameter("a")

    @ex.persist
    def load_data(a):
        return array if a else np.zeros(1)

    @ex.result
    def first_value(data):
        return float(data[0])

    result = first_value(load_data(a))
    # a warm-up trial with a tiny output: the experiment's first-trial costs (store creation,
    # environment capture) are not the array's
    ex.set_parameters(a=0)
    result.compute(scheduler="sync")
    ex.set_parameters(a=1)
    before = disk_usage(target)
    # Interleaved with np.save into new files that are kept until the end, as the store keeps
    # its object: writing a file and deleting it at once lets the kernel recycle the same
    # pages, which on this machine is several times faster than writing data that stays.
    trials, saves = [], []
    for i in range(5):
        path = work / f"np_save_{i}.npy"
        saves.append(timed(lambda path=path: np.save(path, array)))
        trials.append(timed(lambda: result.compute(scheduler="sync")))
    stored = disk_usage(target) - before
    for path in work.glob("np_save_*.npy"):
        path.unlink()
    save = statistics.median(saves)
    first, repeat = trials[0], statistics.median(trials[1:])
    row("first trial", first * 1000, "ms", save * 1000, "<= 1.3x np.save", first <= 1.3 * save)
    row(
        "later trials (median)",
        repeat * 1000,
        "ms",
        save * 1000,
        "<= 0.1x np.save",
        repeat <= 0.1 * save,
    )
    row(
        "bytes on disk for 5 trials",
        stored / MB,
        "MB",
        array.nbytes / MB,
        "stored once (1.0x)",
        stored <= 1.1 * array.nbytes,
    )
    FIGURES["persist"] = {
        "first_trial_s": first,
        "later_trials_s": repeat,
        "np_save_s": save,
        "bytes_on_disk": stored,
        "array_bytes": array.nbytes,
    }
    loaded = ex.get_persisted("load_data", trial_id=ex.trial_id)
    assert np.array_equal(loaded, array)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="directory on the disk to measure (default: a temp dir)")
    parser.add_argument("--trials", type=int, default=2000, help="trials for the overhead run")
    parser.add_argument("--history", type=int, default=10_000, help="trials for get_history")
    parser.add_argument("--history-store", help="keep (and reuse) the history trials here")
    parser.add_argument("--skip-history", action="store_true", help="skip get_history")
    parser.add_argument(
        "--only",
        default="trials,import,metrics,persist,history",  # "scale" (minutes at 100k), "pertrial"
        help="comma-separated sections to run (default: all)",
    )
    parser.add_argument("--mb", type=int, default=100, help="size of the persisted array")
    parser.add_argument(
        "--scale", default="1000,10000,100000", help="trial counts of the 'scale' section"
    )
    parser.add_argument("--scale-store", help="keep (and reuse) the scale section's trials here")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    quiet_log()
    work = Path(tempfile.mkdtemp(prefix="bench-experiment-", dir=args.dir)).resolve()
    print(
        f"python {sys.version.split()[0]}, dask {dask.__version__}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; working in {work}"
    )
    try:
        only = set(args.only.split(","))
        if "trials" in only:
            bench_trials(work, args.trials)
        if "pertrial" in only:  # per trial on memory://, /dev/shm and the disk; files per trial
            sys.path.insert(0, str(Path(__file__).parent))
            import bench_pertrial

            disk = Path(args.dir or tempfile.gettempdir())
            FIGURES["pertrial_ms"] = bench_pertrial.run(400, 40, list(bench_pertrial.STORES), disk)
        if "import" in only:
            bench_import(work, work / "trials" if "trials" in only else None)
        if "metrics" in only:
            bench_metrics(work)
        if "persist" in only:
            bench_persist(work, args.mb)
        if "history" in only and not args.skip_history:
            history = Path(args.history_store) if args.history_store else work / "history"
            bench_history(history, args.history)
        if "scale" in only:
            bench_scale(
                Path(args.scale_store).resolve() if args.scale_store else work / "scale", args.scale
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(FIGURES, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
