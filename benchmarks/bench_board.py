"""Dashboard benchmark: the first view of a 10,000-trial history, for docs/performance.md.

    python benchmarks/bench_board.py [--dir DIR] [--trials 10000] [--json FILE]

The trials are recorded once with the real engine into ``DIR/board_pj`` (a directory of
stores, like ``./daskperiment_cache``) and reused on later runs. Then, three times each:

* **server cold start**: ``daskperiment board --store DIR`` in a fresh process, until it
  accepts connections;
* **first view over HTTP**: on a freshly started server, the history page's HTML plus the
  first page of rows (``/api/experiments/board_pj/history``), as the browser asks for them;
* **first view in Chromium**: on a freshly started server, from navigation until the first
  rows are in the table, by the page's own clock (``performance.mark`` in board.js) and as
  seen by Playwright (headless /usr/bin/chromium), when available;
* **warm requests**: first page, sorted by result, filtered, page 100 — once cached;
* **comparison and parallel coordinates**: the comparison page of 100 trials (HTML, its
  table as JSON and the metric keys its curves ask for), the parallel-coordinates data of all
  10,000 trials and a brushed page of the table, on a fresh server and warm; in Chromium,
  until the 10,000 lines are drawn;
* **system-metrics sampling** (``--sampling``): a 2-step trial and a 10 s CPU-bound step
  (a fixed amount of work), with sampling on and off alternately in the same process;
  medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "board_pj"
FIGURES: dict[str, Any] = {}
CHROMIUM = "/usr/bin/chromium"


def make_trials(directory: Path, trials: int) -> None:
    import numpy as np

    import daskperiment

    logging.getLogger("daskperiment").addHandler(logging.NullHandler())
    ex = daskperiment.Experiment(id=EXPERIMENT, backend=directory / EXPERIMENT)
    if ex.trial_id >= trials:
        print(f"  reusing {ex.trial_id:,} trials in {directory / EXPERIMENT}")
        return
    lr, depth = ex.parameter("lr"), ex.parameter("depth")

    @ex
    def train(lr, depth):
        return lr * depth

    @ex.result
    def score(x):
        return float(np.sin(x))

    result = score(train(lr, depth))
    t0 = time.perf_counter()
    for i in range(ex.trial_id + 1, trials + 1):
        ex.set_parameters(lr=round(0.001 * (i % 97), 3), depth=i % 13)
        result.compute(scheduler="sync")
        if i % 1000 == 0:
            print(f"  recorded {i:,} trials ({time.perf_counter() - t0:.0f} s)", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(directory: Path) -> Iterator[tuple[str, float]]:
    """A board in a fresh process; yields (base url, seconds until it accepted a connection)."""
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daskperiment.board",
            "--store",
            str(directory),
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("the board exited at start") from None
                time.sleep(0.01)
        yield f"http://127.0.0.1:{port}", time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def report(label: str, values: list[float], key: str) -> None:
    median = statistics.median(values)
    FIGURES[key] = round(median * 1000, 1)
    spread = ", ".join(f"{v * 1000:.0f}" for v in values)
    print(f"  {label:<52} {median * 1000:8.0f} ms   ({spread})")


def bench_http(directory: Path, repeat: int) -> None:
    api = f"/api/experiments/{EXPERIMENT}/history"
    starts, firsts = [], []
    for _ in range(repeat):
        with server(directory) as (base, started):
            starts.append(started)
            firsts.append(
                timed(
                    lambda b=base: (
                        get(f"{b}/experiments/{EXPERIMENT}"),
                        get(f"{b}{api}?page=1&size=50"),
                    )
                )
            )
    report("server start (fresh process, until it accepts)", starts, "server_start_ms")
    report("first view over HTTP (page HTML + first 50 rows)", firsts, "first_view_http_ms")
    with server(directory) as (base, _):
        get(f"{base}{api}")
        for label, query, key in [
            ("warm: first page", "page=1&size=50", "warm_first_page_ms"),
            ("warm: sorted by Result, descending", "sort=Result&order=desc", "warm_sorted_ms"),
            ("warm: filtered (lr>0.05 depth=3)", "q=lr%3E0.05+depth%3D3", "warm_filtered_ms"),
            ("warm: page 100", "page=100&size=50", "warm_page_100_ms"),
        ]:
            report(label, [timed(lambda q=query: get(f"{base}{api}?{q}")) for _ in range(5)], key)


def bench_compare(directory: Path, repeat: int) -> None:
    ids = ",".join(str(i) for i in range(1, 10_000, 100))  # 100 trials spread over the history
    api = f"/api/experiments/{EXPERIMENT}"
    brush = urllib.parse.quote(json.dumps([{"axis": "lr", "min": 0.01, "max": 0.05}]))

    def compare(base: str) -> None:
        get(f"{base}/experiments/{EXPERIMENT}/compare?trials={ids}")
        get(f"{base}{api}/metric-keys?trials={ids}")

    firsts, parallels = [], []
    for _ in range(repeat):
        with server(directory) as (base, _):
            firsts.append(timed(lambda b=base: compare(b)))
        with server(directory) as (base, _):
            parallels.append(timed(lambda b=base: get(f"{b}{api}/parallel")))
    report("compare 100 trials, fresh server (page + curve keys)", firsts, "compare_first_ms")
    report("parallel data of 10,000 trials, fresh server", parallels, "parallel_first_ms")
    with server(directory) as (base, _):
        compare(base)
        get(f"{base}{api}/parallel")
        for label, fn, key in [
            ("warm: compare 100 trials (page + curve keys)", lambda: compare(base), "compare_warm_ms"),
            ("warm: compare table as JSON", lambda: get(f"{base}{api}/compare?trials={ids}"),
             "compare_json_warm_ms"),
            ("warm: parallel data of 10,000 trials", lambda: get(f"{base}{api}/parallel"),
             "parallel_warm_ms"),
            ("warm: history page inside a brush (lr in [0.01, 0.05])",
             lambda: get(f"{base}{api}/history?brush={brush}"), "brushed_page_warm_ms"),
        ]:  # fmt: skip
            report(label, [timed(fn) for _ in range(5)], key)


def _loop(n: int) -> int:
    """The CPU-bound step's work: ``n`` turns of a pure-Python loop."""
    acc = 0
    for i in range(n):
        acc += i * i
    return acc


def bench_sampling(repeat: int, busy_seconds: float) -> None:
    """System metrics on vs off, alternately in one process, so both see the same load."""
    import numpy as np

    import daskperiment

    logging.getLogger("daskperiment").addHandler(logging.NullHandler())
    root = Path(tempfile.mkdtemp(prefix="bench-sys-"))
    runs = {}
    for on in (True, False):
        ex = daskperiment.Experiment(f"sys_{on}", backend=root / f"sys_{on}", system_metrics=on)
        n = ex.parameter("n")

        @ex
        def prepare(n):
            return np.arange(n, dtype=float)

        @ex.result
        def total(x):
            return float(x.sum())

        @ex.result
        def spin(n):
            return _loop(n)

        runs[on] = (ex, total(prepare(n)), spin(n))
    # the CPU-bound step: as many loop turns as take busy_seconds here, the same in every run
    spin_n = int(2_000_000 * busy_seconds / timed(lambda: _loop(2_000_000)))
    small: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    busy: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    orders = ((True, False), (False, True))  # alternate which runs first
    for turn in range(50):
        for on in orders[turn % 2]:
            ex, two_steps, _ = runs[on]
            ex.set_parameters(n=1000)
            small[on].append(wall_and_cpu(lambda t=two_steps: t.compute(scheduler="sync")))
    for turn in range(repeat):
        for on in orders[turn % 2]:
            ex, _, spin_step = runs[on]
            ex.set_parameters(n=spin_n)
            busy[on].append(wall_and_cpu(lambda s=spin_step: s.compute(scheduler="sync")))
    sampled = runs[True][0]
    points = len(sampled.load_metric("sys/cpu", trial_id=sampled.trial_id))
    for label, values, key in [("2-step trial", small, "sys_two_step"),
                               (f"{busy_seconds:.0f} s CPU-bound step", busy, "sys_busy")]:  # fmt: skip
        for index, clock in ((0, "wall"), (1, "cpu")):
            on = statistics.median(v[index] for v in values[True])
            off = statistics.median(v[index] for v in values[False])
            FIGURES[f"{key}_{clock}_on_ms"] = round(on * 1000, 2)
            FIGURES[f"{key}_{clock}_off_ms"] = round(off * 1000, 2)
            FIGURES[f"{key}_{clock}_ratio"] = round(on / off, 4)
            print(f"  {label:<26} {clock:<4} sampling on {on * 1000:9.1f} ms   off "
                  f"{off * 1000:9.1f} ms   ratio {on / off:.4f}   ({len(values[True])} each)")  # fmt: skip
    sampler_cpu = _sampler_thread_cpu()
    busy_on = sum(v[0] for v in busy[True]) + sum(v[0] for v in small[True])
    FIGURES["sys_sampler_thread_cpu_s"] = round(sampler_cpu, 4)
    FIGURES["sys_sampler_share"] = round(sampler_cpu / busy_on, 6)
    FIGURES["sys_busy_points"] = points
    print(f"  points of sys/cpu in the last busy trial: {points}")
    micro_sampling()
    print(f"  CPU used by the sampling thread: {sampler_cpu * 1000:.1f} ms over "
          f"{busy_on:.0f} s of sampled trials = {100 * sampler_cpu / busy_on:.4f} %")  # fmt: skip


def micro_sampling() -> None:
    """The two costs sampling adds, measured directly: registering and unregistering a step
    (every step pays it) and one sample (once a second per process running steps)."""
    from daskperiment import sysmetrics
    from daskperiment.metrics import MetricBuffer

    buffer, clock = MetricBuffer(), time.time()
    n = 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        sysmetrics.stop(sysmetrics.start(clock, buffer))
    per_step = (time.perf_counter() - t0) / n
    sampler = sysmetrics._sampler()
    watch = sysmetrics.start(clock, buffer)
    assert watch is not None
    watch.since -= sysmetrics.INTERVAL  # old enough to be sampled
    t0 = time.perf_counter()
    for _ in range(1000):
        sampler._sample()
    per_sample = (time.perf_counter() - t0) / 1000
    sysmetrics.stop(watch)
    FIGURES["sys_per_step_us"] = round(per_step * 1e6, 2)
    FIGURES["sys_per_sample_us"] = round(per_sample * 1e6, 1)
    print(f"  start+stop per step: {per_step * 1e6:.1f} us; one sample: {per_sample * 1e6:.0f} us"
          f" = {100 * per_sample / sysmetrics.INTERVAL:.4f} % of a core at one per second")  # fmt: skip


def wall_and_cpu(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of ``fn()`` (CPU time ignores waiting for a core,
    so it is the steadier figure on a shared machine)."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def _sampler_thread_cpu() -> float:
    """CPU seconds the system-metrics thread of this process has used."""
    import psutil

    from daskperiment import sysmetrics

    sampler = sysmetrics._SAMPLER
    if sampler is None:
        return 0.0
    for thread in psutil.Process().threads():  # in clock ticks: 0 means under 10 ms
        if thread.id == sampler.thread.native_id:
            return thread.user_time + thread.system_time
    return 0.0


def bench_chromium(directory: Path, repeat: int) -> None:
    if not os.path.exists(CHROMIUM):
        print("  (no /usr/bin/chromium: browser figure skipped)")
        return
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
    marks, walls, drawn = [], [], []
    with sync_playwright() as pw:
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as profile, server(directory) as (base, _):
                ctx = pw.chromium.launch_persistent_context(
                    profile, executable_path=CHROMIUM, headless=True, args=args
                )
                page = ctx.new_page()
                page.goto(f"{base}/static/board.css")  # browser warm-up; no history read
                t0 = time.perf_counter()
                page.goto(f"{base}/experiments/{EXPERIMENT}")
                page.wait_for_selector("#history tbody tr", timeout=60_000)
                walls.append(time.perf_counter() - t0)
                # the page's own clock: navigation start -> first rows in the table
                mark = page.evaluate(
                    "() => performance.getEntriesByName('history-rows')[0].startTime"
                )
                marks.append(mark / 1000)
                page.wait_for_selector("#parallel[data-lines='10000']", timeout=60_000)
                drawn.append(time.perf_counter() - t0)
                ctx.close()
    report(
        "first view in Chromium: navigation -> rows (page clock)", marks, "first_view_chromium_ms"
    )
    report(
        "  the same seen from the test driver (Playwright)", walls, "first_view_chromium_wall_ms"
    )
    report("  ... until parallel coordinates of 10,000 drawn", drawn, "parallel_drawn_ms")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()) / "daskperiment-bench-board"
    )
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--sampling", action="store_true", help="also measure system metrics")
    parser.add_argument("--busy", type=float, default=10.0, help="seconds of the CPU-bound step")
    parser.add_argument("--only-sampling", action="store_true", help="skip the dashboard parts")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.only_sampling:
        bench_sampling(args.repeat, args.busy)
        if args.json:
            args.json.write_text(json.dumps(FIGURES, indent=2))
        return
    print(f"history of {args.trials:,} trials in {args.dir}")
    make_trials(args.dir, args.trials)
    bench_http(args.dir, args.repeat)
    bench_compare(args.dir, args.repeat)
    bench_chromium(args.dir, args.repeat)
    if args.sampling:
        print("system metrics: sampling on vs off, alternately")
        bench_sampling(args.repeat, args.busy)
    if args.json:
        args.json.write_text(json.dumps(FIGURES, indent=2))


if __name__ == "__main__":
    main()
