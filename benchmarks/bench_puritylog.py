"""The purity log: a flush's purity writes, and how the log grows to 100,000 trials.

    python benchmarks/bench_puritylog.py [--dir DIR] [--trials 1000,10000,100000] [--rounds 15]

1. **One flush, side by side** (on ``--dir``, default the system temp dir, and on ``/dev/shm``):
   the purity writes of one flush of 32 two-step trials of a sweep (64 new inputs) as one
   batch of the log (``puritylog.record``: one object, one ref) against one ref per input
   (``refs.set`` of 64 refs naming a record: how stores were written before the log),
   alternating, ``--rounds`` each; medians.
2. **Growth** (memory://, the encoding and merging cost without the filesystem's): a sweep's
   log written flush by flush (64 new entries each) up to each size of ``--trials``; per
   size, the median cost of a flush over the last 320 trials, the mean over all flushes so far
   (merges included), the batches the log keeps, the time a new process takes to load it
   (``puritylog.refresh`` into an empty table) and that table's memory (tracemalloc).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

import daskperiment_store as store
from daskperiment import puritylog
from daskperiment.record import purity_log_prefix, purity_ref

EXP = "bench_plog"
PER_FLUSH = 64  # 32 trials x 2 steps, every input new


def flush_entries(first_trial: int) -> list[puritylog.Entry]:
    rows = []
    for k in range(PER_FLUSH // 2):
        trial = first_trial + k
        for step in ("prepare_data", "calculate_score"):
            inputs = f"{trial:016x}{hash(step) & 0xFFFF:016x}"
            rows.append(puritylog.Entry(step, inputs, f"{trial:032x}", trial, "ab" * 16))
    return rows


def one_flush(where: Path, rounds: int) -> dict[str, float]:
    root = where / f"plog-{uuid.uuid4().hex[:8]}"
    st = store.open(root)
    record_oid = st.put({"type": "daskperiment.trial", "trial_id": 1})
    new, old = [], []
    trial = 1
    for _ in range(rounds):
        for kind in ("log", "refs"):
            batch = flush_entries(trial)
            trial += PER_FLUSH // 2
            os.sync()
            t0 = time.perf_counter()
            if kind == "log":
                puritylog.record(st, EXP, batch)
            else:
                for e in batch:
                    st.refs.set(purity_ref(EXP, e.step, e.inputs), record_oid)
            elapsed = (time.perf_counter() - t0) * 1000
            (new if kind == "log" else old).append(elapsed)
    shutil.rmtree(root, ignore_errors=True)
    return {"log": statistics.median(new), "refs": statistics.median(old)}


def growth(sizes: list[int]) -> list[dict[str, float]]:
    st = store.open(f"memory://plog-{uuid.uuid4().hex[:8]}")
    rows = []
    times: list[float] = []
    trial = 1
    for size in sizes:
        while trial <= size:
            batch = flush_entries(trial)
            trial += PER_FLUSH // 2
            t0 = time.perf_counter()
            puritylog.record(st, EXP, batch)
            times.append(time.perf_counter() - t0)
        loads = []
        for _ in range(3):
            t0 = time.perf_counter()
            table = puritylog.Table()
            puritylog.refresh(st, EXP, table)
            loads.append(time.perf_counter() - t0)
            del table
        load = statistics.median(loads)
        tracemalloc.start()  # slows allocation: a load of its own for the memory
        table = puritylog.Table()
        puritylog.refresh(st, EXP, table)
        memory = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert len(table.known) == 2 * (trial - 1)
        rows.append(
            {
                "trials": trial - 1,
                "flush": statistics.median(times[-10:]) * 1000,
                "mean": statistics.mean(times) * 1000,
                "batches": len(st.refs.names(purity_log_prefix(EXP))),
                "load": load * 1000,
                "bytes": memory / len(table.known),
            }
        )
        del table
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--trials", default="1000,10000,100000")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    print(f"\nOne flush of {PER_FLUSH // 2} two-step trials' purity writes ({PER_FLUSH} new "
          f"inputs), {args.rounds} alternating rounds, medians")  # fmt: skip
    for where in (Path(args.dir), Path("/dev/shm")):
        if not where.is_dir():
            continue
        f = one_flush(where, args.rounds)
        print(f"  {str(where):<22} one batch {f['log']:7.2f} ms   one ref per input "
              f"{f['refs']:7.2f} ms   = {f['log'] / f['refs']:.2f}x")  # fmt: skip
    sizes = [int(n) for n in args.trials.split(",")]
    print("\nGrowth of a sweep's log (memory://): per flush of 32 trials")
    print(f"  {'trials':>8} {'flush ms':>9} {'mean ms':>8} {'batches':>8} {'load ms':>8} "
          f"{'bytes/entry':>12}")  # fmt: skip
    for row in growth(sizes):
        print(f"  {row['trials']:>8} {row['flush']:9.2f} {row['mean']:8.2f} {row['batches']:>8} "
              f"{row['load']:8.1f} {row['bytes']:12.0f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
