"""Opening an experiment and reading its history in a fresh process, beside ``import pandas,
dask`` (issue 16's figure), at 1k / 10k / 100k trials; the section ``scale`` of
bench_experiment.py runs it too, with the dashboard and per-trial figures.

    python benchmarks/bench_opening.py --store /tmp/open-store --sizes 1000,10000,100000

Stores are built once with real trials of the quickstart pipeline (100,000 take ~10 minutes)
and reused from ``--store`` on the next run.

``--against CHECKOUT`` compares two checkouts (e.g. ``git worktree add /tmp/before main``)
instead: each round runs ``import pandas, dask``, this checkout and the other one, one after
the other, so the machine's load hits all three alike; medians of wall and CPU time, ratios
to ``import pandas, dask``:

    python benchmarks/bench_opening.py --store /tmp/open-store --sizes 1000,10000 \
        --rounds 21 --against /tmp/before
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale  # noqa: E402
from bench_experiment import pipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="directory of the stores (reused)")
    parser.add_argument("--sizes", default="1000,10000", help="trial counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=9, help="fresh processes per figure")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--against", help="another checkout: compare it with this one")
    args = parser.parse_args()
    root = Path(args.store)
    root.mkdir(parents=True, exist_ok=True)
    sizes = [int(n) for n in args.sizes.split(",") if n]
    if args.against:
        compare(root, sizes, Path(args.against).resolve(), args.rounds)
    else:
        scale.bench_opening(root, sizes, pipeline, rounds=args.rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(scale.FIGURES, indent=2))


def compare(root: Path, sizes: list[int], other: Path, rounds: int) -> None:
    """Fresh processes, interleaved: ``import pandas, dask``, this checkout, ``other``."""
    checkouts = {"this checkout": scale.REPO, other.name: other}
    for checkout in checkouts.values():
        for package in ("daskperiment", "store"):
            compileall.compile_dir(checkout / package, quiet=1)
    print(f"\nOpening and reading, {rounds} interleaved rounds ({scale.load()})")
    for trials in sizes:
        path = root / f"history_{trials}"
        scale.make_history(path, trials, pipeline)
        code = scale.OPEN.format(path=str(path), trials=trials)
        runs: dict[str, list[tuple[float, float]]] = {"import pandas, dask": []}
        runs.update({name: [] for name in checkouts})
        for _ in range(rounds):
            runs["import pandas, dask"].append(_run("import pandas, dask", scale.REPO))
            for name, checkout in checkouts.items():
                runs[name].append(_run(code, checkout))
        base_wall, base_cpu = (
            statistics.median(x[k] for x in runs["import pandas, dask"]) for k in (0, 1)
        )
        print(f" {trials:,} trials ({scale.load()})")
        for name, values in runs.items():
            wall, cpu = (statistics.median(x[k] for x in values) for k in (0, 1))
            print(f"  {name:<22} wall {wall:.3f} s ({wall / base_wall:.3f}x)"
                  f"   CPU {cpu:.3f} s ({cpu / base_cpu:.3f}x)", flush=True)  # fmt: skip


def _run(code: str, checkout: Path) -> tuple[float, float]:
    """Wall and CPU seconds of a fresh interpreter running ``code`` on ``checkout`` (run in
    it: ``-c`` puts the working directory first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=checkout,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        raise subprocess.CalledProcessError(os.waitstatus_to_exitcode(status), code)
    return seconds, usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
