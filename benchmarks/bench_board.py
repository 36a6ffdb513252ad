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
* **warm requests**: first page, sorted by result, filtered, page 100 — once cached.
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


def bench_chromium(directory: Path, repeat: int) -> None:
    if not os.path.exists(CHROMIUM):
        print("  (no /usr/bin/chromium: browser figure skipped)")
        return
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
    marks, walls = [], []
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
                ctx.close()
    report(
        "first view in Chromium: navigation -> rows (page clock)", marks, "first_view_chromium_ms"
    )
    report(
        "  the same seen from the test driver (Playwright)", walls, "first_view_chromium_wall_ms"
    )


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
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    print(f"history of {args.trials:,} trials in {args.dir}")
    make_trials(args.dir, args.trials)
    bench_http(args.dir, args.repeat)
    bench_chromium(args.dir, args.repeat)
    if args.json:
        args.json.write_text(json.dumps(FIGURES, indent=2))


if __name__ == "__main__":
    main()
