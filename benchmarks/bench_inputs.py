"""Input files: what recording them adds per step, and how fast a new file is hashed.

1. **Per trial, nothing changed.** A step that opens 10 small input files, with and without
   recording (audit hook gate, context variable, one stat and a stat-cache lookup per file,
   no file read). Also the cost of an ``open`` outside any step once the hook is installed,
   and of a trial whose steps open no files (start and stop only).
2. **A new 1 GB file.** ``StatCache.digest`` (empty cache) vs. the raw loop it must keep up
   with: ``readinto`` 1 MiB blocks + ``xxh3_128.update``. The file is written and
   ``os.sync()``-ed first, then read once so both run from the page cache; best of 5 interleaved rounds
   (goal: >= 0.8x).

    python benchmarks/bench_inputs.py [size_mb]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import xxhash

from daskperiment.provenance import inputs, statcache


def best_per_call(fns: list[Callable[[], object]], n: int, repeat: int = 15) -> list[float]:
    """Fastest round (of ``repeat``, interleaved) per call of each function, in seconds.

    The machine is shared: the minimum is the cost least disturbed by other processes.
    """
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            for _ in range(n):
                fn()
            best[i] = min(best[i], (time.perf_counter() - start) / n)
    return best


def step_overhead(directory: Path) -> None:
    paths = []
    for i in range(10):
        p = directory / f"input_{i}.csv"
        p.write_text("a,b\n" + "1,2\n" * 100)
        paths.append(str(p))
    os.environ["DASKPERIMENT_STAT_CACHE"] = str(directory / "stat-cache.json")
    old = time.time_ns() - 10**9  # older than the racy window: entries are trusted
    for p in paths:
        os.utime(p, ns=(old, old))

    def read_all() -> None:
        for p in paths:
            with open(p, "rb") as f:
                f.read()

    def recorded(read: bool = True) -> None:
        rec, token = inputs.start()
        try:
            if read:
                read_all()
        finally:
            inputs.stop(token)
        record: dict = {}
        inputs.add_to_record(record, rec, None)

    def check_only() -> None:
        rec = inputs.Recorder()
        rec.read = dict.fromkeys(paths)
        inputs.add_to_record({}, rec, None)

    def stat_only() -> None:
        for p in paths:
            os.stat(p)

    def hook_calls() -> None:  # what the hook does for 10 opens of a recording step
        for p in paths:
            inputs._hook("open", (p, "r", 0))

    (plain,) = best_per_call([read_all], 300)
    inputs.install()
    rec, token = inputs.start()
    (hook10,) = best_per_call([hook_calls], 300)
    inputs.stop(token)
    hooked, with_files, empty, check, stat10 = best_per_call(
        [read_all, recorded, lambda: recorded(False), check_only, stat_only], 300
    )
    print("a step opening 10 input files (100 lines each), stat cache warm, best of 15:")
    print(f"  open+read, no hook installed    {plain * 1e6:8.1f} us")
    print(f"  open+read, hook, not recording  {hooked * 1e6:8.1f} us")
    print(f"  open+read, recorded + checked   {with_files * 1e6:8.1f} us")
    print(
        f"  added per trial by recording    {(with_files - hooked) * 1e6:8.1f} us  (goal: all of provenance <= 100 us)"
    )
    print(
        f"    of which the end-of-step check {check * 1e6:7.1f} us  (10 x os.stat alone: {stat10 * 1e6:.1f} us)"
    )
    print(f"    of which the hook, 10 opens    {hook10 * 1e6:7.1f} us")
    print(f"  stable estimate: hook + check + start/stop = {(hook10 + check + empty) * 1e6:.1f} us")
    print(f"  a step opening no files         {empty * 1e6:8.2f} us  (start/stop only)")


def hashing(directory: Path, size_mb: int) -> None:
    path = directory / "big.bin"
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size_mb):
            f.write(block)
    os.sync()
    size = path.stat().st_size

    def raw() -> str:
        h = xxhash.xxh3_128()
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
        return h.hexdigest()

    def ours() -> str:
        return statcache.StatCache(None).digest(str(path))

    raw()  # into the page cache
    times: dict[str, list[float]] = {"raw": [], "ours": []}
    for _ in range(5):
        for name, fn in (("raw", raw), ("ours", ours)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    assert raw() == ours()
    r, o = min(times["raw"]), min(times["ours"])
    print(f"new {size / 1e9:.2f} GB input file, page cache warm, best of 5 (interleaved):")
    print(f"  raw readinto + xxh3_128   {r:6.3f} s  {size / r / 1e6:6.0f} MB/s")
    print(f"  StatCache.digest (new)    {o:6.3f} s  {size / o / 1e6:6.0f} MB/s")
    print(f"  ratio: {r / o:.2f}x (goal >= 0.8x)")
    path.unlink()
    os.sync()


def main(size_mb: int = 1024) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        step_overhead(Path(tmp))
        hashing(Path(tmp), size_mb)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1024)
