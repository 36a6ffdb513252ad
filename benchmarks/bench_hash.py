"""Hashing throughput: ``daskperiment_store.codec.digest`` of a 256 MB float64 array vs raw xxh3-128.

``digest`` encodes the array (a 64-byte header plus a view of the array's own memory, no copy)
and hashes it; the reference is ``xxhash.xxh3_128`` over the same buffer. Goal: digest runs at
>= 0.8x the reference's throughput. Prints the median of 5 runs of each.

    python benchmarks/bench_hash.py [size_mb]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import xxhash

from daskperiment_store.codec import digest


def median_seconds(fns: list[Callable[[], object]], repeat: int = 5) -> list[float]:
    """Median wall time of each function; rounds interleave them so that load from other
    processes on the machine hits all of them alike."""
    for fn in fns:
        fn()  # warm up: page in the array, load code
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, spent in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def main(size_mb: int = 256) -> float:
    array = np.random.default_rng(0).random(size_mb * 1024 * 1024 // 8)
    buffer = memoryview(array).cast("B")
    mb = array.nbytes / 1e6

    raw, ours = median_seconds([lambda: xxhash.xxh3_128(buffer).hexdigest(), lambda: digest(array)])
    transposed = np.asfortranarray(array.reshape(-1, 1024))  # hashed via one C-order copy
    (fortran,) = median_seconds([lambda: digest(transposed)], 3)

    print(f"array: {size_mb} MiB float64, median of 5")
    print(f"xxhash.xxh3_128(buffer)    {raw * 1e3:8.1f} ms  {mb / raw:8.0f} MB/s")
    print(f"store.codec.digest(array)  {ours * 1e3:8.1f} ms  {mb / ours:8.0f} MB/s")
    print(f"ratio digest/xxh3 throughput: {raw / ours:.2f}x (goal >= 0.8x)")
    print(f"(Fortran-ordered copy, for reference: {fortran * 1e3:.1f} ms, {mb / fortran:.0f} MB/s)")
    return raw / ours


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 256)
