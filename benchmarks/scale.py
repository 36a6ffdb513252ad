"""Figures at scale (issue: 100,000 trials, 1,000,000 objects), each beside its baseline.

Used by ``bench_experiment.py --only scale`` (opening, history, ``log -n 20``, dashboard, per
trial at 1k / 10k / 100k trials) and ``bench_store.py --big`` (fsck, gc of 100k and 1M small
objects, push of 10,000 trials to moto S3). Every figure is a median of rounds in which the
figure and its baseline run one after the other, so the load of the shared machine hits both;
the load average is printed with each section.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
}
FIGURES: dict[str, Any] = {}
# The children's working directory: an empty one, so that nothing in the directory the
# benchmark was started from (a store in ./daskperiment_cache, the files a trial's source
# tree would take in) changes what they measure.
CWD = tempfile.mkdtemp(prefix="daskperiment-scale-")
atexit.register(shutil.rmtree, CWD, True)


# A child's own peak RSS in kB. Not getrusage's ru_maxrss: Linux carries a process's peak over
# fork and exec, so a child of this (large) process would report at least the parent's size;
# VmHWM is the peak of the memory the child itself mapped.
PEAK_KB = "int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def wall(cmd: list[str], **env: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env={**ENV, **env}, cwd=CWD, check=True, capture_output=True)
    return time.perf_counter() - t0


def child(code: str) -> str:
    """stdout of a fresh interpreter running ``code``."""
    done = subprocess.run(
        [sys.executable, "-c", code], env=ENV, cwd=CWD, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def show(label: str, value: float, unit: str, base: float | None = None, goal: str = "") -> None:
    text = f"  {label:<58} {value:9.3f} {unit:<3}"
    if base is not None:
        text += f"  baseline {base:8.3f}  ratio {value / base:5.2f}x  extra {value - base:+.3f}"
    print(text + (f"   goal {goal}" if goal else ""), flush=True)


# --- experiments ---------------------------------------------------------------------------


def make_history(path: Path, trials: int, pipeline: Any) -> None:
    """``trials`` trials of the quickstart pipeline, recorded with the real engine (reused)."""
    import daskperiment

    logger = logging.getLogger("daskperiment")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    ex = daskperiment.Experiment(id="history_pj", backend=path)
    if ex.trial_id >= trials:
        return
    result = pipeline(ex)
    for i in range(ex.trial_id + 1, trials + 1):
        ex.set_parameters(a=i, b=2)
        result.compute(scheduler="sync")


OPEN = (
    "import time, logging, sys\nt0 = time.perf_counter()\nimport daskperiment\n"
    "daskperiment.Experiment  # the package imports it on first use\n"
    "logging.getLogger('daskperiment').addHandler(logging.NullHandler())\n"
    "Experiment = daskperiment.Experiment  # its module loads on first use (PEP 562)\n"
    "t1 = time.perf_counter()\nex = Experiment(id='history_pj', backend={path!r})\n"
    "t2 = time.perf_counter()\nh = ex.get_history()\nt3 = time.perf_counter()\n"
    "assert len(h) >= {trials}\nprint(t2 - t1, t3 - t2)"
)


def bench_opening(root: Path, sizes: list[int], pipeline: Any, rounds: int = 5) -> None:
    """Fresh processes: import + open + history vs ``import pandas, dask``; log -n 20.

    Wall time is the figure; CPU time (user + system of the process) is printed beside it,
    as it hardly moves with the load of a shared machine. The checkout is byte-compiled
    first, as an installed package is: with PYTHONDONTWRITEBYTECODE set, every fresh
    process would otherwise compile daskperiment's modules again."""
    import compileall

    for package in ("daskperiment", "store"):
        compileall.compile_dir(REPO / package, quiet=1)
    print(f"\nOpening and reading at scale (fresh processes, medians of {rounds}; {load()})")
    base_cmd = [sys.executable, "-c", "import pandas, dask"]
    floor_cmd = [sys.executable, "-c", "import daskperiment.cli, pandas"]
    for trials in sizes:
        path = root / f"history_{trials}"
        make_history(path, trials, pipeline)
        ours_cmd = [sys.executable, "-c", OPEN.format(path=str(path), trials=trials)]
        log_cmd = [sys.executable, "-m", "daskperiment", "--store", str(path), "log",
                   "history_pj", "-n", "20"]  # fmt: skip
        base, ours, opened, read, log, floor, frame = [], [], [], [], [], [], []
        for _ in range(rounds):
            base.append(_process(base_cmd))
            ours.append(_process(ours_cmd))
            a, b = map(float, ours[-1][0].split())
            opened.append(a)
            read.append(b)
            floor.append(wall(floor_cmd))
            log.append(wall(log_cmd))
            frame.append(wall(log_cmd, DASKPERIMENT_LOG_PATH="frame"))
        m = statistics.median
        b_wall, b_cpu, b_rss = (m(x[k] for x in base) for k in (1, 2, 3))
        o_wall, o_cpu, o_rss = (m(x[k] for x in ours) for k in (1, 2, 3))
        print(f" {trials:,} trials")
        show("Experiment() after import daskperiment", m(opened) * 1000, "ms", goal="<= 20 ms")
        show("get_history() in that process", m(read), "s")
        goal = "<= 1.1x" if trials <= 1000 else "extra <= 1.5 s"
        show("process: import, open, get_history vs import pandas, dask", o_wall, "s", b_wall,
             goal)  # fmt: skip
        show("  its CPU time (user + system)", o_cpu, "s", b_cpu)
        show("  its peak RSS", o_rss, "MB", b_rss)
        show("daskperiment log -n 20 vs the DataFrame path (same text)", m(log), "s", m(frame),
             "<= 0.3 s")  # fmt: skip
        show("  (import daskperiment.cli, pandas: what log cost before)", m(floor), "s")
        FIGURES[f"open_{trials}"] = {
            "experiment_ms": m(opened) * 1000, "get_history_s": m(read), "process_s": o_wall,
            "import_pandas_dask_s": b_wall, "process_cpu_s": o_cpu, "import_cpu_s": b_cpu,
            "process_rss_mb": o_rss, "import_rss_mb": b_rss,
            "log_n20_s": m(log), "cli_import_floor_s": m(floor),
            "log_n20_dataframe_path_s": m(frame),
        }  # fmt: skip


def _process(cmd: list[str]) -> tuple[str, float, float, float]:
    """stdout, wall seconds, CPU seconds (user + system) and peak RSS (MB) of a fresh process
    ``[python, "-c", code]`` (which prints its peak RSS to stderr at the end: see PEAK_KB)."""
    cmd = cmd[:-1] + [cmd[-1] + f"\nimport sys\nprint({PEAK_KB}, file=sys.stderr)"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=ENV, cwd=CWD, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read() if proc.stdout else b""  # both small: no deadlock reading in turn
    err = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)  # not wait(): its rusage is the CPU figure
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return out.decode(), seconds, usage.ru_utime + usage.ru_stime, int(err.split()[-1]) / 1024


def bench_trial_growth(root: Path, sizes: list[int], pipeline: Any, rounds: int = 40) -> None:
    """Per-trial time on a new experiment and after 1k/10k/100k trials vs plain dask.delayed,
    interleaved; log lines go to a real handler (a stream on /dev/null, formatted)."""
    import dask

    import daskperiment

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_experiment import plain_calculate_score, plain_prepare_data
    from bench_pertrial import log_to_handler

    log_to_handler()
    print(f"\nPer trial (sync scheduler, local store, log to a handler; {load()})")
    runs = {}
    new = daskperiment.Experiment(id="history_pj", backend=root / "trial_new")
    runs["new experiment"] = (new, pipeline(new))
    for trials in sizes:
        ex = daskperiment.Experiment(id="history_pj", backend=root / f"history_{trials}")
        runs[f"after {trials:,} trials"] = (ex, pipeline(ex))
    times: dict[str, list[float]] = {name: [] for name in runs}
    base: list[float] = []
    for i in range(rounds):
        for name, (ex, result) in runs.items():
            ex.set_parameters(a=10**7 + i, b=2)
            t0 = time.perf_counter()
            result.compute(scheduler="sync")
            times[name].append(time.perf_counter() - t0)
        plain = dask.delayed(plain_calculate_score)(dask.delayed(plain_prepare_data)(i, 2))
        t0 = time.perf_counter()
        plain.compute(scheduler="sync")
        base.append(time.perf_counter() - t0)
    b = statistics.median(base) * 1000
    for name, values in times.items():
        t = statistics.median(values[3:]) * 1000
        show(f"trial, {name}", t, "ms", b, "<= 1.5x, flat")
        FIGURES[f"trial_ms {name}"] = {"ours": t, "plain_dask": b}


def bench_board_first_view(path: Path, trials: int, repeat: int = 3) -> None:
    """Dashboard on the ``trials`` store: fresh server, page HTML + first 50 rows (answered
    without the DataFrame, board/firstview.py), then what the table costs once built: the
    first sorted page (builds it) and one more sorted page (from memory)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_board import get, server

    print(f"\nDashboard first view, {trials:,} trials ({load()})")
    api = "/api/experiments/history_pj/history?page=1&size=50"
    starts, firsts, sorted_first, sorted_next = [], [], [], []
    for _ in range(repeat):
        with server(path) as (base, started):
            starts.append(started)
            t0 = time.perf_counter()
            get(f"{base}/experiments/history_pj")
            get(f"{base}{api}")
            firsts.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            get(f"{base}{api}&sort=Result&order=desc")
            sorted_first.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            get(f"{base}{api.replace('page=1', 'page=2')}&sort=Result&order=desc")
            sorted_next.append(time.perf_counter() - t0)
    m = statistics.median
    show("server start (fresh process, until it accepts)", m(starts), "s")
    show("first view over HTTP (page HTML + first 50 rows)", m(firsts), "s", goal="<= 1 s")
    show("then a sorted page (builds the whole table once)", m(sorted_first), "s")
    show("then another sorted page (table in memory)", m(sorted_next), "s")
    FIGURES[f"board_{trials}"] = {"start_s": m(starts), "first_view_s": m(firsts),
                                  "sorted_page_building_s": m(sorted_first),
                                  "sorted_page_cached_s": m(sorted_next)}  # fmt: skip


# --- big stores ----------------------------------------------------------------------------

FILL = (
    "import sys\nimport daskperiment_store as store\nfrom daskperiment_store import Link\n"
    "st = store.open({path!r}, create=True)\n"
    "for p in range(len(list(st.refs.names('groups/'))) * 2, {objects} // 10):\n"
    "    leaves = [Link(st.put({{'leaf': p * 9 + j}})) for j in range(9)]\n"
    "    oid = st.put({{'parent': p, 'children': leaves}})\n"
    "    if p % 2 == 0:\n"
    "        st.refs.set(f'groups/{{p // 1000}}/{{p}}', oid)\n"
)

MEASURE = (
    "import time\nimport daskperiment_store as store\n"
    "st = store.open({path!r}, create=False)\nt0 = time.perf_counter()\n{call}\n"
    "print(time.perf_counter() - t0, " + PEAK_KB + ")"
)

BASELINE = (
    "import os, time\nt0 = time.perf_counter(); n = 0\n"
    "for top, dirs, files in os.walk({objects!r}):\n"
    "    for f in files:\n"
    "        with open(os.path.join(top, f), 'rb') as fh: fh.read(); n += 1\n"
    "print(time.perf_counter() - t0, " + PEAK_KB + ")"
)


def bench_big_stores(root: Path, sizes: list[int]) -> None:
    """fsck and gc (nothing old enough to remove: a full mark and sweep) of stores of small
    objects (parents of 9 leaves; refs reach half), in fresh processes: seconds, peak RSS."""
    print(f"\nfsck / gc of big stores (fresh processes; {load()})")
    for objects in sizes:
        path = root / f"objects_{objects}"
        child(FILL.format(path=str(path), objects=objects))
        figures = {}
        for name, code in (
            ("read every object file (os.walk + read)", BASELINE.format(objects=str(path / "objects"))),
            ("fsck", MEASURE.format(path=str(path), call="r = st.fsck(); assert r.ok")),
            ("gc (grace 1 h: marks and sweeps, removes nothing)",
             MEASURE.format(path=str(path), call="st.gc()")),
        ):  # fmt: skip
            seconds, rss_kb = map(float, child(code).split())
            figures[name] = (seconds, rss_kb)
            print(f"  {objects:>9,} objects  {name:<52} {seconds:7.1f} s  "
                  f"{seconds / objects * 1e6:6.1f} us/object  peak RSS {rss_kb / 1024:7.0f} MB",
                  flush=True)  # fmt: skip
        FIGURES[f"big_{objects}"] = figures


def bench_push_s3(source: Path, trials: int) -> None:
    """push of an experiment of ``trials`` trials to a moto S3 server, in a fresh process."""
    print(f"\npush of {trials:,} trials to S3 (moto, 127.0.0.1; {load()})")
    sys.path.insert(0, str(REPO / "tests"))
    from s3server import S3Server

    server = S3Server()
    url = server.start()
    try:
        code = (
            "import os, time, boto3\nimport daskperiment_store as store\n"
            f"os.environ.update(AWS_ACCESS_KEY_ID='b', AWS_SECRET_ACCESS_KEY='b', "
            f"AWS_DEFAULT_REGION='us-east-1', AWS_ENDPOINT_URL={url!r}, AWS_ENDPOINT_URL_S3={url!r})\n"
            "boto3.client('s3').create_bucket(Bucket='bench')\n"
            f"src = store.open({str(source)!r}, create=False)\n"
            "dst = store.open('s3://bench/store', create=True)\n"
            "t0 = time.perf_counter(); r = src.push(dst, 'experiments/history_pj/trials/')\n"
            "print(time.perf_counter() - t0, r.objects_copied, len(r.refs_updated), "
            f"{PEAK_KB})"
        )
        seconds, objects, refs, rss = map(float, child(code).split())
    finally:
        server.stop()
    print(f"  {seconds:7.1f} s  {objects:,.0f} objects  {refs:,.0f} refs  "
          f"{seconds / objects * 1000:5.2f} ms/object  peak RSS {rss / 1024:5.0f} MB")  # fmt: skip
    FIGURES[f"push_s3_{trials}"] = {"s": seconds, "objects": objects, "rss_mb": rss / 1024}


def main() -> None:
    """Only the opening (``log -n 20``) and dashboard figures, on a store built once:

    python benchmarks/scale.py --store /tmp/scale-store --trials 100000 --only opening,board
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--store", default="/tmp/scale-store", help="directory of the stores")
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--only", default="opening,board")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_experiment import pipeline

    root = Path(args.store)
    only = set(args.only.split(","))
    if "opening" in only:
        bench_opening(root, [args.trials], pipeline, rounds=args.rounds)
    if "board" in only:
        path = root / f"history_{args.trials}"
        make_history(path, args.trials, pipeline)
        bench_board_first_view(path, args.trials, repeat=min(args.rounds, 3))


if __name__ == "__main__":
    main()
