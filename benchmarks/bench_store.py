"""Store benchmarks: figures for docs/performance.md, measured side by side in one run.

    python benchmarks/bench_store.py [--dir DIR] [--mb 100] [--repeat 7] [--small 10000]
    python benchmarks/bench_store.py --after-deletes 20000 [--dir DIR]

Every comparison interleaves the store and its baseline in the same loop (same disk, same
page cache, same neighbours on a shared machine) and reports medians and their ratio:

* put / get of a random float64 array vs ``np.save`` / ``np.load`` of the same array into the
  same directory: durability "atomic" against plain np.save (neither fsyncs), durability
  "fsync" against np.save followed by ``os.fsync`` (both flush to disk);
* putting the identical array again (a new Store, so the existence check hits the backend;
  and the same Store, which remembers what it wrote);
* hashing (``daskperiment_store.digest``) vs ``xxhash.xxh3_128`` over the array's buffer;
* a compressible array: stored bytes and time;
* many small JSON objects: puts/s and gets/s.
* ``--after-deletes N``: file creation in ``--dir`` before and after N files there are
  deleted (another process's cleanup), probed every 2 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xxhash

import daskperiment_store as store
from daskperiment_store.store import object_key

MB = 1 << 20


def median_time(
    fn: Callable[[], object], setup: Callable[[], object] | None = None, repeat: int = 7
) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs (``setup`` runs untimed before each)."""
    times = []
    for _ in range(repeat):
        if setup:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def side_by_side(pairs: dict[str, tuple[Callable, Callable | None]], repeat: int) -> dict:
    """Run several (fn, setup) pairs interleaved, ``repeat`` rounds; return median seconds."""
    times: dict[str, list[float]] = {name: [] for name in pairs}
    for _ in range(repeat):
        for name, (fn, setup) in pairs.items():
            if setup:
                setup()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def row(
    label: str, ours: float, base: float | None = None, unit: str = "ms", goal: str = ""
) -> None:
    scale = 1000 if unit == "ms" else 1
    text = f"  {label:<44} {ours * scale:9.1f} {unit}"
    if base is not None:
        text += f"   baseline {base * scale:9.1f} {unit}   ratio {ours / base:5.2f}x"
    if goal:
        text += f"   (goal {goal})"
    print(text)


class PutGet:
    """put/get of one array vs np.save/np.load into the same directory, new files every round.

    The store is opened once, as a store in use would be: its 256 object directories exist
    (a store past its first few hundred objects has them all), so a put creates one file and
    one directory entry, as np.save does.
    """

    def __init__(self, work: Path, array: np.ndarray, durability: str) -> None:
        self.work, self.array, self.durability = work, array, durability
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        self.st = store.open(work / "store", durability=durability)
        self.round = 0
        self.oid: str | None = None

    def setup(self) -> None:
        # A new value each round (same size, same hashing cost); what the previous round
        # wrote is deleted here, outside the timing, so both sides create new files.
        if self.oid is not None:
            self.st.backend.delete(object_key(self.oid))
        (self.work / "a.npy").unlink(missing_ok=True)
        for i in range(256):
            (self.work / "store" / "objects" / f"{i:02x}").mkdir(parents=True, exist_ok=True)
        self.round += 1
        self.array[0] = self.round

    def put(self) -> None:
        self.oid = self.st.put(self.array)

    def save(self) -> None:
        with open(self.work / "a.npy", "wb") as f:
            np.save(f, self.array)
            if self.durability == "fsync":
                f.flush()
                os.fsync(f.fileno())

    def get(self) -> None:
        self.got = self.st.get(self.oid)

    def load(self) -> None:
        self.loaded = np.load(self.work / "a.npy")


def bench_put_get(work: Path, mb: int, repeat: int, durability: str) -> None:
    array = np.random.default_rng(0).standard_normal(mb * MB // 8)
    case = PutGet(work / durability, array, durability)
    sides = {"store.put": (case.put, case.setup), "np.save": (case.save, None)}
    writes = side_by_side(sides, repeat)
    # reads: the files just written, warm in the page cache for both
    reads = side_by_side({"store.get": (case.get, None), "np.load": (case.load, None)}, repeat)
    np.testing.assert_array_equal(case.got, case.loaded)
    goal = "<= 1.3x"
    row(
        f"put {mb} MB random float64 ({durability})",
        writes["store.put"],
        writes["np.save"],
        goal=goal,
    )
    row(
        f"get {mb} MB random float64 ({durability})",
        reads["store.get"],
        reads["np.load"],
        goal=goal,
    )
    if durability == "atomic":
        reput_new = median_time(
            lambda: store.open(case.work / "store").put(array), repeat=2 * repeat
        )
        reput_same = median_time(lambda: case.st.put(array), repeat=2 * repeat)
        first = writes["store.put"]
        row("re-put identical array (new Store)", reput_new, first, goal="<= 0.1x")
        row("re-put identical array (same Store)", reput_same, first, goal="<= 0.1x")
    shutil.rmtree(case.work, ignore_errors=True)


def bench_hash(mb: int, repeat: int) -> None:
    array = np.random.default_rng(1).standard_normal(mb * MB // 8)
    buf = memoryview(array).cast("B")
    times = side_by_side(
        {
            "store.digest": (lambda: store.digest(array), None),
            "xxh3_128": (lambda: xxhash.xxh3_128(buf).hexdigest(), None),
        },
        repeat,
    )
    ours, base = times["store.digest"], times["xxh3_128"]
    print(
        f"  {'hash ' + str(mb) + ' MB float64':<44} {mb / ours / 1024:9.2f} GB/s"
        f"   xxh3_128 {mb / base / 1024:9.2f} GB/s   throughput {base / ours:5.2f}x"
        "   (goal >= 0.8x)"
    )


class Compressible:
    """put/get of a compressible array at one zstd level, vs np.save/np.load."""

    def __init__(self, path: Path, array: np.ndarray, level: int) -> None:
        self.path, self.array, self.level = path, array, level
        self.st: store.Store | None = None
        self.oid: str | None = None

    def setup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.st = store.open(self.path / "store", compression_level=self.level)

    def put(self) -> None:
        self.oid = self.st.put(self.array)

    def save(self) -> None:
        np.save(self.path / "a.npy", self.array)


def bench_compressible(work: Path, mb: int, repeat: int, level: int) -> None:
    case = Compressible(work / "compressible", np.arange(mb * MB // 8, dtype=np.float64), level)
    writes = side_by_side({"put": (case.put, case.setup), "save": (case.save, None)}, repeat)
    st, oid = case.st, case.oid
    reads = side_by_side(
        {
            "get": (lambda: st.get(oid), None),
            "load": (lambda: np.load(case.path / "a.npy"), None),
        },
        repeat,
    )
    info = st.info(oid)
    print(
        f"  {f'compressible {mb} MB (np.arange float64), level {level}':<44} "
        f"stored {info.stored_size / MB:8.2f} MB of {info.size / MB:.0f} MB "
        f"({info.size / info.stored_size:.1f}:1, {info.compression})"
    )
    row("  put", writes["put"], writes["save"])
    row("  get", reads["get"], reads["load"])
    shutil.rmtree(case.path, ignore_errors=True)


def bench_small(work: Path, n: int, target: str) -> None:
    if target == "local":
        path = work / "small"
        shutil.rmtree(path, ignore_errors=True)
        st = store.open(path)
    else:
        st = store.open(store.MemoryBackend())
    values = [
        {"trial": i, "params": {"lr": 0.001 * i, "layers": [64, 32]}, "ok": True} for i in range(n)
    ]
    t0 = time.perf_counter()
    oids = [st.put(v) for v in values]
    put_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for oid in oids:
        st.get(oid)
    get_s = time.perf_counter() - t0
    fresh = store.open(st.backend)  # no remembered oids: every re-put asks the backend
    t0 = time.perf_counter()
    for v in values:
        fresh.put(v)
    reput_s = time.perf_counter() - t0
    print(
        f"  {f'{n} small JSON objects ({target})':<44} put {n / put_s:9.0f}/s   "
        f"get {n / get_s:9.0f}/s   re-put {n / reput_s:9.0f}/s"
    )


def bench_swaps(work: Path, n: int, rounds: int = 7) -> None:
    """Rewriting a ref (compare-and-swap, what finishing a trial does): the new file exchanged
    with the old one (renameat2 RENAME_EXCHANGE, the default) vs renamed over it (os.replace,
    the fallback), interleaved in blocks of ``n`` swaps, median per swap."""
    from daskperiment_store.backends import _osio

    st = store.open(work / "swaps")
    names = [f"bench/{i}" for i in range(64)]
    oids = [f"{i:032x}" for i in range(2)]
    for name in names:
        st.refs.create(name, oids[0])
    found = _osio._load_renameat2()
    current = dict.fromkeys(names, 0)

    def block(exchange: bool) -> None:
        _osio._renameat2 = found if exchange else False
        for i in range(n):
            name = names[i % len(names)]
            k = current[name]
            st.refs.swap(name, oids[k], oids[1 - k])
            current[name] = 1 - k

    times = side_by_side(
        {"exchange": (lambda: block(True), None), "replace": (lambda: block(False), None)},
        rounds,
    )
    _osio._renameat2 = None
    per = {k: v / n for k, v in times.items()}
    print(f"\nRef swaps on {work} ({n} per block, {rounds} blocks each, interleaved)")
    row("swap by exchange (default)", per["exchange"] * 1e6, per["replace"] * 1e6, "us")
    row("swap by os.replace (fallback)", per["replace"] * 1e6, unit="us")


def bench_big(args: argparse.Namespace) -> int:
    """fsck and gc of big stores, push of many trials to S3 (benchmarks/scale.py)."""
    import scale

    if args.big:
        root = Path(args.big_store or tempfile.mkdtemp(prefix="bench-big-", dir=args.dir)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        scale.bench_big_stores(root, [int(n) for n in args.big.split(",")])
    if args.push_source:
        trials = len(store.open(args.push_source).refs.names("experiments/history_pj/trials/"))
        scale.bench_push_s3(Path(args.push_source).resolve(), trials)
    return 0


def describe_filesystem(path: Path) -> str:
    """The filesystem holding ``path`` and, for ext4, whether it has a journal: without one,
    creating a file skips every inode freed in the last 60 s (360 s while its inode table block
    is unwritten), so file creation there slows after any process deletes files
    (docs/performance.md, "Files on a disk without a journal")."""
    path = Path(path).resolve()
    best: tuple[str, str, str] | None = None
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            fields = line.split()
            point, device = fields[4], fields[2]
            fstype = fields[fields.index("-") + 1]
            if (path == Path(point) or Path(point) in path.parents) and (
                best is None or len(point) > len(best[0])
            ):
                best = (point, device, fstype)
    if best is None:
        return f"{path}: filesystem unknown"
    point, device, fstype = best
    text = f"{fstype} mounted on {point}"
    if fstype == "ext4":
        name = os.path.basename(os.path.realpath(f"/sys/dev/block/{device}"))
        try:
            task = Path(f"/sys/fs/ext4/{name}/journal_task").read_text().strip()
        except OSError:
            return text
        text += (
            ", without a journal (a new file skips inodes freed in the last 60-360 s)"
            if task == "<none>"
            else ", with a journal"
        )
    return text


def file_creation_us(directory: Path, count: int = 300) -> float:
    """Median time (us) to create, write 300 bytes to and close a new file in ``directory``
    (the files are left there: removing them would be deletes of the kind measured below)."""
    times = []
    for _ in range(count):
        path = directory / os.urandom(8).hex()
        t0 = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"x" * 300)
        os.close(fd)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def bench_after_deletes(work: Path, files: int) -> None:
    """File creation (open, write 300 bytes, close) before and after ``files`` files of 5 KB
    are deleted in the same filesystem: whether another process's deletes slow a store's
    writes there, and for how long (medians of 300 creations per probe)."""

    def probe() -> float:
        return file_creation_us(work / "probe")

    (work / "probe").mkdir()
    junk = work / "junk"
    junk.mkdir()
    for n in range(files):
        (junk / str(n)).write_bytes(b"y" * 5000)
    os.sync()
    time.sleep(3)
    print(f"{describe_filesystem(work)}\nfile creation in {work}: settled {probe():.1f} us")
    shutil.rmtree(junk)
    start = time.monotonic()
    for _ in range(8):
        print(f"  {time.monotonic() - start:4.0f} s after deleting {files} files: {probe():.1f} us")
        time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="directory on the disk to measure (default: a temp dir)")
    parser.add_argument("--mb", type=int, default=100, help="size of the large arrays")
    parser.add_argument("--hash-mb", type=int, default=256, help="size of the hashed array")
    parser.add_argument("--repeat", type=int, default=11, help="rounds per measurement")
    parser.add_argument("--small", type=int, default=10_000, help="number of small objects")
    parser.add_argument(
        "--big", help="only fsck/gc of stores of these many objects (e.g. 100000,1000000)"
    )
    parser.add_argument("--big-store", help="keep (and reuse) the big stores in this directory")
    parser.add_argument("--push-source", help="a store of 'history_pj' trials to push to moto S3")
    parser.add_argument("--swaps", type=int, default=0, help="only ref swaps, N per block")
    parser.add_argument(
        "--after-deletes", type=int, default=0, help="only file creation after N files deleted"
    )
    args = parser.parse_args(argv)
    if args.big or args.push_source:
        return bench_big(args)
    work = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    if args.after_deletes:
        try:
            bench_after_deletes(work, args.after_deletes)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    if args.swaps:
        try:
            bench_swaps(work, args.swaps, args.repeat)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    print(
        f"store benchmarks in {work} (python {sys.version.split()[0]}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}); medians of {args.repeat}"
    )
    try:
        bench_hash(args.hash_mb, args.repeat)
        bench_put_get(work, args.mb, args.repeat, "atomic")
        bench_put_get(work, args.mb, max(3, args.repeat // 2), "fsync")
        bench_compressible(work, args.mb, max(3, args.repeat // 2), level=3)  # the default
        bench_compressible(work, args.mb, max(3, args.repeat // 2), level=1)
        bench_small(work, args.small, "local")
        bench_small(work, args.small, "memory")
        bench_swaps(work, 1000, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
