"""Provenance benchmarks: figures for docs/performance.md ("Provenance").

    python benchmarks/bench_provenance.py [--trials 300] [--blocks 6] [--json FILE]

* **Added cost per trial when nothing changed**: the seed's two-step pipeline, run as a script
  (``daskperiment run`` style) from a project directory holding a local helper module. The
  provenance capture of a trial (source tree: module list and stat checks; code closures:
  revalidation; the tree objects, already written) is timed directly, median over
  ``--trials`` calls; and whole trials are timed in interleaved blocks with capture on and off
  (``DASKPERIMENT_PROVENANCE=0``, the behaviour before it existed). Goal: <= 0.1 ms.
* **reproduce of a 2-step trial**: wall time of ``ex.reproduce(1)`` (checkout, fresh
  interpreter, trial, comparison) and of the ``daskperiment reproduce`` command as a whole
  (its own interpreter start included). Goal: <= 1.5 s.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from daskperiment import trialgraph  # noqa: E402
from daskperiment.provenance import record, sourcetree  # noqa: E402
from daskperiment.script import RUN_NAME, find_result  # noqa: E402

HELPERS = "OFFSET = 0\n\n\ndef add(a, b):\n    return a + b + OFFSET\n"
SCRIPT = """
import daskperiment

import helpers

ex = daskperiment.Experiment(id="bench_prov")
a = ex.parameter("a")
b = ex.parameter("b")


@ex
def prepare_data(a, b):
    return helpers.add(a, b)


@ex.result
def calculate_score(s):
    return 10 / s


ex.set_parameters(a=1, b=2)
s = calculate_score(prepare_data(a, b))
"""
FIGURES: dict[str, Any] = {}


def project(directory: Path) -> Path:
    (directory / "helpers.py").write_text(HELPERS)
    script = directory / "pipeline.py"
    script.write_text(SCRIPT)
    return script


def load(script: Path) -> Any:
    sourcetree.note_script(str(script))
    sys.path.insert(0, str(script.parent))
    return find_result(runpy.run_path(str(script), run_name=RUN_NAME), str(script))


def capture_cost(result: Any, n: int) -> float:
    """Median seconds of one trial's provenance capture, nothing having changed."""
    ex = result._experiment
    st = ex._store_for_writing()
    specs = trialgraph.TrialGraph(result, ex._parameters.by_key).specs()
    record.apply({"digests": {}}, st, ex.id, specs)  # the first: everything written
    times = []
    for _ in range(n):
        base: dict[str, Any] = {"digests": {}}
        t0 = time.perf_counter()
        record.apply(base, st, ex.id, specs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def trial_blocks(result: Any, trials: int, blocks: int) -> dict[str, float]:
    """Median trial wall time with capture on and off, in interleaved blocks."""
    per = {"on": [], "off": []}
    for block in range(blocks * 2):
        mode = "on" if block % 2 == 0 else "off"
        os.environ["DASKPERIMENT_PROVENANCE"] = "1" if mode == "on" else "0"
        times = []
        for i in range(trials // blocks):
            t0 = time.perf_counter()
            result.compute(seed=i)
            times.append(time.perf_counter() - t0)
        per[mode].append(statistics.median(times))
    os.environ.pop("DASKPERIMENT_PROVENANCE", None)
    return {mode: statistics.median(values) for mode, values in per.items()}


def reproduce_wall(result: Any, directory: Path) -> tuple[float, float]:
    ex = result._experiment
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    report = ex.reproduce(1)
    api = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    FIGURES["reproduce_child_cpu_s"] = cpu
    print(f"fresh process of ex.reproduce: {cpu:.2f} s of CPU (user + system)")
    assert report, str(report)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "daskperiment", "reproduce", "bench_prov", "1"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    cli = time.perf_counter() - t0
    assert done.returncode == 0, done.stdout + done.stderr
    return api, cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    logging.getLogger("daskperiment").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        os.chdir(directory)
        result = load(project(directory))
        result.compute(seed=1)  # trial 1: the one reproduced
        cost = capture_cost(result, args.trials)
        FIGURES["capture_us"] = cost * 1e6
        print(f"provenance capture per trial, nothing changed: {cost * 1e6:.1f} us (median)")
        blocks = trial_blocks(result, args.trials, args.blocks)
        FIGURES["trial_on_ms"] = blocks["on"] * 1e3
        FIGURES["trial_off_ms"] = blocks["off"] * 1e3
        print(
            f"whole trial: {blocks['on'] * 1e3:.3f} ms with provenance, "
            f"{blocks['off'] * 1e3:.3f} ms without (medians of block medians)"
        )
        api, cli = reproduce_wall(result, directory)
        FIGURES["reproduce_api_s"], FIGURES["reproduce_cli_s"] = api, cli
        print(f"reproduce of a 2-step trial: ex.reproduce {api:.2f} s, command {cli:.2f} s")
        print(f"load average during the run: {os.getloadavg()[0]:.1f}")
        os.chdir(REPO)
    if args.json:
        Path(args.json).write_text(json.dumps(FIGURES, indent=2))


if __name__ == "__main__":
    main()
