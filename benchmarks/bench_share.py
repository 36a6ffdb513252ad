"""Sharing and diff at the experiment level, on trials recorded by the engine.

Builds an experiment of ``--trials`` trials (default 1,000) whose persisted step returns a
1 MB float64 array: odd trials each a different random array (incompressible, stored raw),
even trials all the same one, so the store holds ``trials/2 + 1`` arrays. Then measures:

- ``ex.push`` to an empty local store, then a second push (must copy nothing): seconds,
  trials, objects and bytes copied;
- ``ex.export`` of every trial to one bundle, and ``import_bundle`` into an empty store;
- ``ex.diff`` of two trials whose code is identical (parameters differ) and of two trials
  whose code differs in one step: median wall time and objects read.

    python benchmarks/bench_share.py [--trials 1000] [--repeat 20] [--memory] [--s3]

``--memory`` also pushes to a ``memory://`` store (fsspec, in this process); ``--s3`` to a
moto S3 server on 127.0.0.1 (the tests' server; needs the ``test`` extra).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import daskperiment
from daskperiment import sharing

ARRAY_ITEMS = (1 << 20) // 8  # 1 MB of float64


def build(path: Path, trials: int) -> Any:
    """The experiment, with ``trials`` trials plus one after a code change."""
    ex = daskperiment.Experiment("bench_share", backend=path)
    i = ex.parameter("i")

    @ex.persist
    def make_data(i):
        seed = i if i % 2 else 0  # even trials: one identical array
        return np.random.default_rng(seed).random(ARRAY_ITEMS)

    @ex.result
    def score(data):
        ex.save_metric("mean", epoch=0, value=float(data.mean()))
        return float(data[0])

    s = score(make_data(i))
    for n in range(1, trials + 1):
        ex.set_parameters(i=n)
        s.compute(seed=1)

    @ex.result
    def score(data):  # noqa: F811 - the same step with changed code
        ex.save_metric("mean", epoch=0, value=float(data.mean()))
        return float(data[1])

    s = score(make_data(i))
    s.compute(seed=1)  # trial trials + 1: same parameters as the last, other code
    return ex


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def row(label: str, seconds: float, report: sharing.ShareReport) -> str:
    return (
        f"  {label:<22} {seconds:7.2f} s  {len(report.trials_added):5d} trials  "
        f"{report.objects_copied:6d} objects  {report.bytes_copied / 1e6:9.1f} MB"
    )


class DeriveClock:
    """Times :func:`sharing.derive` (purity refs and index rows made on arrival) inside a push."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._derive = sharing.derive
        sharing.derive = self  # sharing looks it up by name at each call

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        try:
            self._derive(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def moto_url() -> tuple[str, Any]:
    """A fresh bucket on the tests' moto server, started on 127.0.0.1 (needs the test extra)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from s3server import S3Server  # the same server the tests use

    server = S3Server()
    endpoint = server.start()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
        AWS_ENDPOINT_URL_S3=endpoint,
    )
    import boto3

    boto3.client("s3").create_bucket(Bucket="bench-share")
    return "s3://bench-share/store", server


def bench_push(ex: Any, tmp: Path, memory: bool, s3: str | None) -> None:
    targets = [("local", str(tmp / "pushed"))]
    if memory:
        targets.append(("memory://", "memory://bench-share/store"))
    if s3:
        targets.append(("s3 (moto)", s3))
    clock = DeriveClock()
    for label, url in targets:
        for run in ("first", "second"):
            seconds, report = timed(lambda url=url: ex.push(url))
            derived = clock.take()
            print(row(f"push {label} {run}", seconds, report) + f"  (derive {derived:.2f} s)")
            os.sync()


def bench_bundle(ex: Any, tmp: Path) -> None:
    bundle = tmp / "all.dpb"
    seconds, report = timed(lambda: ex.export(bundle))
    print(row("export (bundle file)", seconds, report))
    os.sync()
    seconds, report = timed(
        lambda: daskperiment.import_bundle(bundle, backend=str(tmp / "imported"))
    )
    print(row("import into empty", seconds, report))
    seconds, report = timed(
        lambda: daskperiment.import_bundle(bundle, backend=str(tmp / "imported"))
    )
    print(row("import again", seconds, report))


def bench_diff(ex: Any, trials: int, repeat: int) -> None:
    cases = [
        ("identical code", 1, 3),
        ("different code", trials, trials + 1),
    ]
    for label, a, b in cases:
        times, d = [], None
        for _ in range(repeat):
            seconds, d = timed(lambda a=a, b=b: ex.diff(a, b))
            times.append(seconds)
        changed = ", ".join(sorted({f.group for f in d.files}))
        print(
            f"  diff {label:<16} {statistics.median(times) * 1e3:7.2f} ms (median of {repeat})  "
            f"{d.objects_read:3d} objects read  changed: {changed}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--memory", action="store_true", help="also push to memory://")
    parser.add_argument("--s3", action="store_true", help="also push to a local moto S3 server")
    args = parser.parse_args()
    s3_url, server = moto_url() if args.s3 else (None, None)
    logging.getLogger("daskperiment").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench_share_", dir=".") as tmp_name:
        tmp = Path(tmp_name)
        seconds, ex = timed(lambda: build(tmp / "source", args.trials))
        os.sync()  # time the transfers, not the write-back of the source just recorded
        stored = sum(p.stat().st_size for p in (tmp / "source").rglob("*") if p.is_file())
        print(
            f"experiment: {args.trials} trials (+1 with changed code) recorded in {seconds:.1f} s; "
            f"source store {stored / 1e6:.1f} MB"
        )
        try:
            bench_push(ex, tmp, args.memory, s3_url)
        finally:
            if server is not None:
                server.stop()
        bench_bundle(ex, tmp)
        bench_diff(ex, args.trials, args.repeat)


if __name__ == "__main__":
    main()
