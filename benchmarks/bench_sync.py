"""push, pull and bundles on a store of 1,000 trial-like records, each linking a 1 MB array.

Half the records share one identical array, the others each have their own (random float64,
stored raw: incompressible), so the source holds 1,000 records + 501 arrays. Prints, for each
target: the first push to an empty store and a second push (which must copy nothing) with
seconds, objects and bytes copied; then export and import of one bundle of the same refs.

    python benchmarks/bench_sync.py [--records 1000] [--targets local,memory] [--s3]

``--s3`` also pushes to a moto S3 server started on 127.0.0.1 (needs the ``test`` extra).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import daskperiment_store as store
from daskperiment_store.bundle import export_bundle, import_bundle
from daskperiment_store.sync import push

ARRAY_BYTES = 1 << 20
PREFIX = "experiments/bench/trials/"


def build_source(path: Path, records: int) -> store.Store:
    src = store.open(path)
    rng = np.random.default_rng(0)
    shared = src.put(rng.random(ARRAY_BYTES // 8))
    for i in range(1, records + 1):
        arr = shared if i % 2 else src.put(rng.random(ARRAY_BYTES // 8))
        record = src.put({"id": i, "params": {"i": i}, "persisted": store.Link(arr)})
        src.refs.create(f"{PREFIX}{i}", record)
    return src


def timed_push(src: store.Store, dst: store.Store, label: str) -> None:
    for run in ("first", "second"):
        t0 = time.perf_counter()
        report = push(src, dst, PREFIX)
        dt = time.perf_counter() - t0
        print(
            f"  {label:<8} push {run:<6}: {dt:7.2f} s  {report.objects_copied:6d} objects  "
            f"{report.bytes_copied / 1e6:9.1f} MB  refs created {len(report.refs_updated)}"
        )


def moto_store() -> tuple[store.Store, object]:
    """An empty store in a fresh bucket of the tests' moto server, started on 127.0.0.1."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from s3server import S3Server  # the same server the tests use

    server = S3Server()
    url = server.start()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=url,
        AWS_ENDPOINT_URL_S3=url,
    )
    import boto3

    boto3.client("s3").create_bucket(Bucket="bench")
    return store.open("s3://bench/store"), server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--targets", default="local,memory")
    parser.add_argument("--s3", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        src = build_source(root / "src", args.records)
        n_objects = len(list(src.iter_oids()))
        print(
            f"source: {args.records} records, {n_objects} objects, built in "
            f"{time.perf_counter() - t0:.1f} s (cpus: {os.cpu_count()})"
        )
        targets = [t for t in args.targets.split(",") if t]
        for target in targets:
            dst = (
                store.open(root / f"dst-{target}")
                if target == "local"
                else store.open(store.MemoryBackend())
            )
            timed_push(src, dst, target)
        if args.s3:
            dst, server = moto_store()
            try:
                timed_push(src, dst, "s3/moto")
            finally:
                server.stop()  # type: ignore[attr-defined]

        bundle = root / "all.dpb"
        t0 = time.perf_counter()
        rep = export_bundle(src, bundle, PREFIX)
        print(
            f"  bundle   export      : {time.perf_counter() - t0:7.2f} s  {rep.objects:6d} objects  "
            f"{rep.bytes / 1e6:9.1f} MB"
        )
        dst = store.open(root / "dst-bundle")
        for run in ("first", "second"):
            t0 = time.perf_counter()
            imp = import_bundle(dst, bundle)
            print(
                f"  bundle   import {run:<6}: {time.perf_counter() - t0:7.2f} s  "
                f"{imp.objects_copied:6d} objects  {imp.bytes_copied / 1e6:9.1f} MB"
            )


if __name__ == "__main__":
    main()
