"""A process that has listed an S3 store once must still see every later write.

s3fs caches directory listings per filesystem instance (its ``dircache``), and a cached
listing makes s3fs answer "no such file" for a key created after it, without asking the
server. These tests run real processes against the moto server: writers create objects and
refs while another process lists, runs fsck and gc, and must then find every write.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import daskperiment_store as store

ROOT = Path(__file__).resolve().parents[2]
WRITERS = 4
TRIALS = 25

WRITER = """
import json, sys
import daskperiment_store as store
url, w, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
start = int(sys.argv[4]) if len(sys.argv) > 4 else 0
s = store.open(url)
for i in range(start, start + n):
    oid = s.put({"writer": w, "trial": i, "payload": list(range(i))})
    s.refs.create(f"runs/{w}/{i}", oid)
print("done", flush=True)
"""

# Lists once before the writers start (with fsck, gc and ref listings, which fill s3fs's
# listing cache), then keeps listing and collecting while they run, then reads every write.
OBSERVER = """
import json, sys, time
import daskperiment_store as store
url, expected = sys.argv[1], int(sys.argv[2])
s = store.open(url)
s.fsck(); s.gc(); s.refs.list("runs/"); list(s.iter_oids())
print("listed", flush=True)
while sys.stdin.readline().strip() != "go":
    pass
rounds = 0
while True:
    rounds += 1
    s.gc()
    s.fsck()
    refs = s.refs.list("runs/")
    if len(refs) == expected:
        break
    time.sleep(0.05)
values = {name: s.get(oid) for name, oid in refs.items()}
listed = set(s.iter_oids())
report = s.fsck()
print(json.dumps({
    "refs": len(refs),
    "values": sorted(f"{v['writer']}/{v['trial']}" for v in values.values()),
    "missing_from_listing": sorted(set(refs.values()) - listed),
    "fsck_ok": report.ok,
    "objects_checked": report.objects_checked,
    "rounds": rounds,
}), flush=True)
"""


def _python(script: str, *args: str, stdin: bool = False) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def test_a_process_that_listed_once_sees_every_later_write(s3_url: str) -> None:
    store.open(s3_url).put({"seed": True})  # the store exists before anyone lists it
    observer = _python(OBSERVER, s3_url, str(WRITERS * TRIALS), stdin=True)
    assert observer.stdout is not None and observer.stdin is not None
    assert observer.stdout.readline().strip() == "listed", observer.stderr.read()
    writers = [_python(WRITER, s3_url, str(w), str(TRIALS)) for w in range(WRITERS)]
    observer.stdin.write("go\n")
    observer.stdin.flush()
    for proc in writers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    out, err = observer.communicate(timeout=300)
    assert observer.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["refs"] == WRITERS * TRIALS
    assert result["values"] == sorted(f"{w}/{i}" for w in range(WRITERS) for i in range(TRIALS))
    assert result["missing_from_listing"] == []
    assert result["fsck_ok"]
    assert result["objects_checked"] == WRITERS * TRIALS + 1


@pytest.mark.parametrize("given", ["url", "filesystem"])
def test_refs_and_objects_written_after_a_listing_are_found_in_process(
    s3_url: str, s3_fs: object, given: str
) -> None:
    # A filesystem passed in keeps s3fs's listing cache on (the default for s3fs).
    root = s3_url.removeprefix("s3://")
    reader = store.open(s3_url if given == "url" else store.FsspecBackend(s3_fs, root))
    _write_in_another_process(s3_url, 0, 64)  # objects in a quarter of the shard directories
    assert len(reader.refs.list("runs/9/")) == 64
    assert reader.fsck().ok  # lists every shard directory and refs/runs/9
    _write_in_another_process(s3_url, 64, 64)  # new keys in directories listed above
    later = reader.refs.list("runs/9/")
    assert len(later) == 128
    for name, oid in later.items():
        assert reader.refs.get(name) == oid
        assert reader.get(oid)["trial"] == int(name.rsplit("/", 1)[1])
        assert reader.info(oid).kind == "json"
        assert reader.has(oid)


def _write_in_another_process(url: str, start: int, n: int) -> None:
    """Refs ``runs/9/<start>...`` and their objects, written by another process."""
    proc = _python(WRITER, url, "9", str(n), str(start))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err


@pytest.fixture(autouse=True)
def _no_stray(s3_server: str) -> None:
    """Every test here needs the S3 server."""
