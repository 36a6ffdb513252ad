"""Per-trial cost on three stores, side by side with plain dask.delayed, and files per trial.

    python benchmarks/bench_pertrial.py [--trials 400] [--warmup 40] [--stores memory,shm,disk]
        [--dir DIR] [--profile N] [--dask-sync] [--growth N]

The seed's two-step pipeline (benchmarks/bench_experiment.py ``pipeline``) is run as trials
on a ``memory://`` store (pure CPU), on ``/dev/shm`` (tmpfs: file creation without a disk)
and on a directory of the disk (``--dir``, default the system temp dir), interleaved trial
by trial with the same two functions as plain ``dask.delayed`` (sync scheduler); log lines go
to a real handler (formatted, written to /dev/null). Medians after ``--warmup`` trials; the
means also count the trials that flush the history index and purity log (every 32nd), and
``flush`` is the median of those trials alone.

``--growth N --stores KIND`` runs N trials on one store (memory, shm or disk), each 10th
followed by a plain ``dask.delayed`` run, and prints the median and mean per trial and their
ratio to plain dask in the 1,000-trial windows ending at trial 1,000, 10,000, 100,000 and N:
how the cost grows with the experiment (the purity log, the history index, ids).

``--dask-sync`` adds a row: the same trials on ``memory://`` run through dask's ``get_sync``
(a no-op dask ``Callback`` active keeps a synchronous trial on dask's local scheduler, as
before daskperiment/syncrun.py), interleaved with the others: that change's before/after in
one run.

``--stores memory,disk,disk-nokeep`` adds a row: trials on the disk whose store frees the
old ref's inode at every rewrite instead of keeping it for the next one (the store before
store/backends/_kept.py), interleaved with the others on the same filesystem.

Before and after the trials, the filesystem of ``--dir`` (for ext4, whether it has a journal)
and the time to create a file there are printed: the disk's own state, which on an ext4
without a journal moves with other processes' deletes (docs/performance.md, "Files on a disk
without a journal").

Files per trial: ``os.open`` with ``O_CREAT``, ``os.link`` and ``os.replace`` calls made by
one trial on the disk store, counted by wrapping them (a file a trial creates is one of
these; reads are not counted). ``--profile N`` prints a cProfile of N trials on memory://.

Also run by ``python benchmarks/bench_experiment.py --only pertrial``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import logging
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import dask
from dask.callbacks import Callback

sys.path.insert(0, str(Path(__file__).parent))
from bench_experiment import pipeline, plain_calculate_score, plain_prepare_data  # noqa: E402
from bench_store import describe_filesystem, file_creation_us  # noqa: E402

import daskperiment  # noqa: E402

STORES = ("memory", "shm", "disk")


def log_to_handler() -> None:
    """Log lines formatted by a real handler (written to /dev/null), as a user sees them."""
    logger = logging.getLogger("daskperiment")
    logger.handlers[:] = []
    sink = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives for the run
    sink.setFormatter(logging.Formatter("%(asctime)s [%(name)s] [%(levelname)s] %(message)s"))
    logger.addHandler(sink)
    logger.propagate = False


def backend_of(kind: str, disk: Path) -> Any:
    name = uuid.uuid4().hex[:8]
    if kind == "memory":
        return f"memory://pertrial-{name}"
    if kind == "shm":
        return Path("/dev/shm") / f"pertrial-{name}"
    return disk / f"pertrial-{name}"


def count_files(result: Any, ex: Any, a: int) -> dict[str, int]:
    """os calls that create files (``O_CREAT`` opens, links, replaces) during one trial."""
    counts = {"open(O_CREAT)": 0, "link": 0, "replace": 0}
    real = os.open, os.link, os.replace

    def counting_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            counts["open(O_CREAT)"] += 1
        return real[0](path, flags, *args, **kwargs)

    def counting(name: str, func: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return func(*args, **kwargs)

        return wrapper

    os.open = counting_open  # type: ignore[assignment]
    os.link = counting("link", real[1])  # type: ignore[assignment]
    os.replace = counting("replace", real[2])  # type: ignore[assignment]
    try:
        ex.set_parameters(a=a, b=2)
        result.compute(scheduler="sync")
    finally:
        os.open, os.link, os.replace = real  # type: ignore[assignment]
    return counts


def timed(result: Any, wall: list[float], cpu: list[float], through_dask: bool = False) -> None:
    watching = Callback() if through_dask else contextlib.nullcontext()
    with watching:
        t0, c0 = time.perf_counter(), time.process_time()
        result.compute(scheduler="sync")
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)


#: the row of --dask-sync: memory:// trials through dask's get_sync
DASK_SYNC = "memory-dask"
#: the row of --no-keep: disk trials whose store frees the old ref's inode at every rewrite
#: (the store before store/backends/_kept.py), interleaved with the others
NO_KEEP = "disk-nokeep"


class _FreeEveryTime:
    """A kept-temp stand-in that keeps nothing: the old value's inode is freed."""

    def __init__(self, tmp_dir: str) -> None:
        self.tmp_dir = tmp_dir

    def take(self) -> None:
        return None

    def keep(self, path: str) -> None:
        os.unlink(path)

    def new_name(self) -> str:
        return os.path.join(self.tmp_dir, f"{os.getpid()}-{uuid.uuid4().hex[:16]}.tmp")


def measure(
    kinds: list[str], disk: Path, trials: int, warmup: int, roots: list[str] | None = None
) -> dict[str, Any]:
    """Interleaved trials on each store and plain dask computes; medians in ms. The stores'
    directories are removed, or added to ``roots`` for the caller to remove later."""
    runs = {}
    for kind in kinds:
        base = {DASK_SYNC: "memory", NO_KEEP: "disk"}.get(kind, kind)
        ex = daskperiment.Experiment(id="pertrial_pj", backend=backend_of(base, disk))
        if kind == NO_KEEP:
            ex.store.backend._kept = _FreeEveryTime(ex.store.backend._tmp_dir)
        runs[kind] = (ex, pipeline(ex))
    times: dict[str, list[float]] = {kind: [] for kind in [*runs, "plain"]}
    cpu: dict[str, list[float]] = {kind: [] for kind in times}
    for i in range(trials + warmup):
        for kind, (ex, result) in runs.items():
            ex.set_parameters(a=i, b=2)
            timed(result, times[kind], cpu[kind], through_dask=kind == DASK_SYNC)
        plain = dask.delayed(plain_calculate_score)(dask.delayed(plain_prepare_data)(i, 2))
        timed(plain, times["plain"], cpu["plain"])
    figures: dict[str, Any] = {}
    for kind, values in times.items():
        figures[kind] = statistics.median(values[warmup:]) * 1000
        # the mean includes the batched flushes (history index, purity refs) every 32 trials
        figures[f"{kind} mean"] = statistics.mean(values[warmup:]) * 1000
        # CPU time (user + system, file creation included) is what load on the machine
        # disturbs least: a steadier before/after figure than wall time
        figures[f"{kind} cpu"] = statistics.mean(cpu[kind][warmup:]) * 1000
        if kind != "plain":
            # the trials that flushed (every FLUSH_EVERY-th of the store's experiment)
            flushed = [t for k, t in enumerate(values) if k >= warmup and (k + 1) % 32 == 0]
            figures[f"{kind} flush"] = statistics.median(flushed) * 1000 if flushed else None
    if "disk" in runs or "shm" in runs:
        kind = "disk" if "disk" in runs else "shm"
        ex, result = runs[kind]
        figures["files"] = count_files(result, ex, 10**6)
    kept = [getattr(ex.store.backend, "root", None) for ex, _ in runs.values()]
    if roots is None:
        remove_dirs(kept)
    else:
        roots.extend(kept)
    return figures


def remove_dirs(paths: list[Any]) -> None:
    for path in paths:
        if path and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)


def report(figures: dict[str, Any], disk: Path) -> None:
    where = {
        "memory": "memory://",
        DASK_SYNC: "memory://, dask's get_sync",
        "shm": "/dev/shm (tmpfs)",
        "disk": f"{disk} (disk)",
        NO_KEEP: f"{disk}, old inodes freed",
    }
    plain = figures["plain"]
    print(
        f"  {'':<34} {'median':>8} {'ratio':>7} {'mean':>8} {'ratio':>7} {'CPU':>8} {'ratio':>7}"
        f" {'flush':>8}"
    )
    for kind in ("plain", "memory", DASK_SYNC, *STORES[1:], NO_KEEP):
        if kind not in figures:
            continue
        label = "plain dask.delayed" if kind == "plain" else "trial, " + where[kind]
        t, mean, cpu = figures[kind], figures[f"{kind} mean"], figures[f"{kind} cpu"]
        text = (
            f"  {label:<34} {t:6.3f}ms {t / plain:6.2f}x {mean:6.3f}ms "
            f"{mean / figures['plain mean']:6.2f}x {cpu:6.3f}ms {cpu / figures['plain cpu']:6.2f}x"
        )
        if kind != "plain":
            flush = figures.get(f"{kind} flush")
            text += f" {flush:6.2f}ms" if flush is not None else f" {'-':>8}"
            text += "  goal <= 1.5x " + ("ok" if t <= 1.5 * plain else "MISSED")
        print(text)
    if DASK_SYNC in figures and "memory" in figures:
        lean, before = figures["memory"], figures[DASK_SYNC]
        print(
            f"  synchronous trial on memory:// without / with dask's get_sync: {lean:.3f} / "
            f"{before:.3f} ms = {lean / before:.2f}x (CPU "
            f"{figures['memory cpu'] / figures[DASK_SYNC + ' cpu']:.2f}x)"
        )
    if "files" in figures:
        files = figures["files"]
        print(f"  file-creating calls of one trial: {sum(files.values())} ({files})")


def profile(n: int) -> None:
    ex = daskperiment.Experiment(id="profile_pj", backend=backend_of("memory", Path()))
    result = pipeline(ex)
    for i in range(20):
        ex.set_parameters(a=i, b=2)
        result.compute(scheduler="sync")
    prof = cProfile.Profile()
    prof.enable()
    for i in range(n):
        ex.set_parameters(a=100 + i, b=2)
        result.compute(scheduler="sync")
    prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
    pstats.Stats(prof).sort_stats("tottime").print_stats(30)


def run(
    trials: int, warmup: int, kinds: list[str], disk: Path, dask_sync: bool = False
) -> dict[str, Any]:
    log_to_handler()
    print(
        f"\nPer trial by store ({trials} trials after {warmup}, sync scheduler, log to a "
        f"handler; load average {os.getloadavg()[0]:.1f})"
    )
    on_disk = any(k in ("disk", NO_KEEP) for k in kinds)
    probe = Path(tempfile.mkdtemp(prefix="pertrial-probe-", dir=disk)) if on_disk else None
    roots: list[Any] = []
    try:
        if probe is not None:
            # The filesystem's own state: on an ext4 without a journal, creating a file skips
            # every inode freed there in the last 60-360 s (docs/performance.md, "Files on a
            # disk without a journal").
            print(f"  {describe_filesystem(disk)}")
            print(f"  creating a file in {disk} now: {probe_file_creation(probe):.1f} us")
        figures = measure([*kinds, DASK_SYNC] if dask_sync else kinds, disk, trials, warmup, roots)
        if probe is not None:
            print(f"  creating a file in {disk} after: {probe_file_creation(probe):.1f} us")
        report(figures, disk)
    finally:
        remove_dirs([*roots, probe])
    return figures


def probe_file_creation(probe: Path) -> float:
    """Median time (us) to create a small file in ``probe`` (bench_store.py). The files
    stay until the run ends: deleting them before the trials would slow the trials' own file
    creation on an ext4 without a journal (docs/performance.md)."""
    return file_creation_us(probe, 200)


def growth(total: int, kind: str, disk: Path) -> None:
    """``total`` trials on one store, each 10th followed by a plain ``dask.delayed`` run: the
    median and mean (flushes included) per trial and their ratio to plain dask, by window."""
    log_to_handler()
    ex = daskperiment.Experiment(id="growth_pj", backend=backend_of(kind, disk))
    result = pipeline(ex)
    times: list[float] = []
    plain: list[float] = []
    cpu: list[float] = []
    for i in range(total):
        ex.set_parameters(a=i, b=2)
        timed(result, times, cpu)
        if i % 10 == 0:
            computed = dask.delayed(plain_calculate_score)(dask.delayed(plain_prepare_data)(i, 2))
            timed(computed, plain, [])
    marks = [m for m in (1_000, 10_000, 100_000, 1_000_000) if m <= total]
    if total not in marks:
        marks.append(total)
    print(f"\nGrowth on {kind} ({total} trials; windows of 1,000 trials ending at each mark)")
    print(f"  {'trial':>9} {'median':>9} {'ratio':>7} {'mean':>9} {'ratio':>7} {'plain':>9}")
    for mark in marks:
        window = times[max(0, mark - 1000) : mark]
        base = statistics.median(plain[max(0, mark - 1000) // 10 : mark // 10])
        med, mean = statistics.median(window) * 1000, statistics.mean(window) * 1000
        print(f"  {mark:>9} {med:7.3f}ms {med / base / 1000:6.2f}x {mean:7.3f}ms "
              f"{mean / base / 1000:6.2f}x {base * 1000:7.3f}ms")  # fmt: skip
    remove_dirs([getattr(ex.store.backend, "root", None)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--stores", default=",".join(STORES), help="memory,shm,disk,disk-nokeep")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="directory on the disk")
    parser.add_argument("--profile", type=int, default=0, help="cProfile N trials (memory://)")
    parser.add_argument(
        "--dask-sync",
        action="store_true",
        help="add memory:// trials through dask's get_sync (a no-op dask Callback active)",
    )
    parser.add_argument(
        "--growth",
        type=int,
        default=0,
        help="run N trials on the first of --stores: cost per trial by 1,000-trial window",
    )
    args = parser.parse_args(argv)
    if args.growth:
        growth(args.growth, args.stores.split(",")[0], Path(args.dir))
        return 0
    if args.profile:
        log_to_handler()
        profile(args.profile)
        return 0
    run(args.trials, args.warmup, args.stores.split(","), Path(args.dir), args.dask_sync)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
