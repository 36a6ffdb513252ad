"""Team sharing and the searchable log.

1. **Push of 1,000 trials of which 500 are already there.** An experiment runs ``--trials``
   trials (default 1,000; a persisted 64 KiB array per trial, odd trials distinct, even trials
   one shared array, plus a metric); the first half is pushed to an empty local store first,
   then the whole experiment is pushed: seconds and objects/bytes copied by that second push,
   then a third push (everything there). Runs on any version of daskperiment, so the same
   script measures the code before global identity (``PYTHONPATH=<old checkout>``).
2. **``daskperiment log --where`` on 10,000 trials in a fresh process.** ``--log-trials``
   records (copies of one real trial with other parameters and global ids, indexed as a
   writer process indexes them), then ``daskperiment log EXP --where 'a=3 lr>0.5' --sort
   lr:desc -n 20`` in a new process: its wall time, and the time inside the process from
   the first import of daskperiment to the output, beside the same command on the DataFrame
   path (``DASKPERIMENT_LOG_PATH=frame``; ``--no-log`` skips this part). Only this figure:

    python benchmarks/bench_teams.py --no-push [--log-trials 10000] [--repeat 5]

    python benchmarks/bench_teams.py [--trials 1000] [--log-trials 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import daskperiment
from daskperiment import sharing

ITEMS = (64 << 10) // 8
EXP = "bench_team"


def run_trials(ex: Any, step: Any, first: int, last: int) -> None:
    for n in range(first, last + 1):
        ex.set_parameters(i=n)
        step.compute(seed=1)


def experiment(path: Path) -> tuple[Any, Any]:
    ex = daskperiment.Experiment(EXP, backend=path)
    i = ex.parameter("i")

    @ex.persist
    def make_data(i):
        return np.random.default_rng(i if i % 2 else 0).random(ITEMS)

    @ex.result
    def score(data):
        ex.save_metric("mean", epoch=0, value=float(data.mean()))
        return float(data[0])

    return ex, score(make_data(i))


def bench_push(root: Path, trials: int) -> dict[str, Any]:
    ex, step = experiment(root / "src")
    half = trials // 2
    run_trials(ex, step, 1, half)
    sharing.push_trials(ex.store, EXP, str(root / "team"))
    run_trials(ex, step, half + 1, trials)
    started = time.perf_counter()
    second = sharing.push_trials(ex.store, EXP, str(root / "team"))
    elapsed = time.perf_counter() - started
    started = time.perf_counter()
    third = sharing.push_trials(ex.store, EXP, str(root / "team"))
    again = time.perf_counter() - started
    return {
        "trials": trials,
        "already_there": half,
        "seconds": round(elapsed, 3),
        "trials_added": len(second.trials_added),
        "objects_copied": second.objects_copied,
        "bytes_copied": second.bytes_copied,
        "resend_seconds": round(again, 3),
        "resend_objects": third.objects_copied,
    }


def build_log_store(root: Path, trials: int) -> Path:
    """A cache directory whose experiment has ``trials`` indexed trials."""
    from daskperiment import history

    work = root / "log"
    ex = daskperiment.Experiment(EXP, backend=work / "daskperiment_cache" / EXP)
    a = ex.parameter("a")
    lr = ex.parameter("lr")

    @ex.result
    def fit(a, lr):
        return a * lr

    ex.set_parameters(a=0, lr=0.0)
    fit(a, lr).compute(seed=1)
    st = ex.store
    base = dict(st.get(st.refs.get(f"experiments/{EXP}/trials/1")))
    rows = []
    for n in range(2, trials + 1):
        params = {"a": n % 7, "lr": n / trials}
        record = dict(base, trial_id=n, global_id=f"{n:032x}", params=params)
        oid = st.put(record)
        st.refs.create(f"experiments/{EXP}/trials/{n}", oid)
        rows.append(history.row_of(record, oid, n))
    history.flush_index(st, EXP, rows)
    return work


_TIMED = """
import sys, time
started = time.perf_counter()
from daskperiment.cli import main
code = main(sys.argv[1:])
sys.stderr.write(f"INSIDE {time.perf_counter() - started:.4f}\\n")
sys.exit(code)
"""


def bench_log(work: Path, repeat: int) -> dict[str, Any]:
    """``log --where`` in fresh processes: the plain path (what ``log`` does) beside the
    DataFrame path (``DASKPERIMENT_LOG_PATH=frame``, the same text through pandas), rounds
    interleaved so the machine's load hits both."""
    args = ["log", EXP, "--where", "a=3 lr>0.5", "--sort", "lr:desc", "-n", "20"]
    repo = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])),
    }
    env.pop("DASKPERIMENT_LOG_PATH", None)
    runs: dict[str, dict[str, list[float]]] = {"plain": {}, "frame": {}}
    outputs = {}
    for _ in range(repeat):
        for path in runs:
            run_env = dict(env, DASKPERIMENT_LOG_PATH=path)
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", _TIMED, *args], cwd=work, capture_output=True, text=True,
                env=run_env,
            )  # fmt: skip
            wall = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            runs[path].setdefault("wall", []).append(wall)
            runs[path].setdefault("inside", []).append(float(done.stderr.rsplit("INSIDE ", 1)[1]))
            outputs[path] = done.stdout
    if outputs["plain"] != outputs["frame"]:
        raise SystemExit("log --where: the plain path and the DataFrame path print different text")
    m = statistics.median
    print(f"log --where on {EXP} ({' '.join(args[2:])}), fresh processes, medians of {repeat}; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
    plain, frame = m(runs["plain"]["wall"]), m(runs["frame"]["wall"])
    print(f"  daskperiment log --where (wall)   {plain:7.3f} s   DataFrame path {frame:7.3f} s   "
          f"ratio {plain / frame:4.2f}x   goal <= 0.5 s")  # fmt: skip
    return {
        "rows_shown": outputs["plain"].count("\n") - 2,
        "wall_median_s": round(plain, 3),
        "inside_median_s": round(m(runs["plain"]["inside"]), 3),
        "dataframe_path_wall_median_s": round(frame, 3),
        "dataframe_path_inside_median_s": round(m(runs["frame"]["inside"]), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--log-trials", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-log", action="store_true")
    parser.add_argument("--no-push", action="store_true")
    args = parser.parse_args()
    logging.getLogger("daskperiment").setLevel(logging.WARNING)
    print(f"daskperiment from {os.path.dirname(daskperiment.__file__)}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if not args.no_push:
            print("push:", bench_push(root, args.trials))
        if not args.no_log:
            work = build_log_store(root, args.log_trials)
            print("log --where:", bench_log(work, args.repeat))


if __name__ == "__main__":
    main()
