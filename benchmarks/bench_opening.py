"""Opening an experiment and reading its history in a fresh process, beside ``import pandas,
dask`` (issue 16's figure), at 1k / 10k / 100k trials; the section ``scale`` of
bench_experiment.py runs it too, with the dashboard and per-trial figures.

    python benchmarks/bench_opening.py --store /tmp/open-store --sizes 1000,10000,100000

Stores are built once with real trials of the quickstart pipeline (100,000 take ~10 minutes)
and reused from ``--store`` on the next run.
"""

from __future__ import annotations

import argparse
import json
import sys
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
    args = parser.parse_args()
    root = Path(args.store)
    root.mkdir(parents=True, exist_ok=True)
    sizes = [int(n) for n in args.sizes.split(",") if n]
    scale.bench_opening(root, sizes, pipeline, rounds=args.rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(scale.FIGURES, indent=2))


if __name__ == "__main__":
    main()
