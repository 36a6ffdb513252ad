"""Crashes and failing writes, with real processes: no partial object ever becomes visible."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import daskperiment_store as store

# A writer that announces the oid it is about to put, then puts 300 MB of random bytes (stored
# raw, so the write itself is long) with fsync durability (longer still).
WRITER = r"""
import sys
import numpy as np
import daskperiment_store as store

st = store.open(sys.argv[1], durability="fsync")
data = np.frombuffer(np.random.default_rng(int(sys.argv[2])).bytes(300 << 20), dtype=np.uint8)
print(store.digest(data), flush=True)
st.put(data)
print("done", flush=True)
"""


def temp_files(root) -> list[os.DirEntry]:
    try:
        return [e for e in os.scandir(root / "tmp") if e.is_file()]
    except FileNotFoundError:
        return []


def kill_writer_mid_put(root, seed: int) -> str | None:
    """Start a writer, SIGKILL it once its temp file has data; return the oid it was putting,
    or None if it finished before it could be killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), str(seed)], stdout=subprocess.PIPE, text=True
    )
    try:
        oid = proc.stdout.readline().strip()
        assert store.is_oid(oid), oid
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if any(e.stat().st_size > 0 for e in temp_files(root)):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.001)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return oid if proc.returncode == -signal.SIGKILL else None


@pytest.mark.slow
def test_writer_killed_mid_put_leaves_only_a_temp_file(tmp_path):
    root = tmp_path / "s"
    st = store.open(root)
    kept = st.put({"a": 1})
    st.refs.create("keep", kept)
    for seed in range(3):  # the kill can lose the race to a fast disk; try a new object
        oid = kill_writer_mid_put(root, seed)
        if oid is not None:
            break
    else:
        pytest.fail("the writer finished three times before it could be killed")

    assert not st.has(oid)
    with pytest.raises(store.ObjectNotFound):
        st.get(oid)
    assert list(st.iter_oids()) == [kept]

    report = st.fsck()
    assert report.ok
    assert (report.corrupt_objects, report.bad_refs, report.missing_links) == ([], [], [])
    assert len(report.temp_files) == 1

    young = st.gc()  # the default grace protects what may be another writer's temp file
    assert young.temp_removed == [] and young.objects_removed == []
    assert len(st.fsck().temp_files) == 1

    dry = st.gc(grace=0, dry_run=True)
    assert dry.temp_removed == report.temp_files and dry.bytes_freed > 0
    assert len(st.fsck().temp_files) == 1

    collected = st.gc(grace=0)
    assert collected.temp_removed == report.temp_files
    assert collected.objects_removed == []
    assert collected.bytes_freed == dry.bytes_freed
    after = st.fsck()
    assert after.ok and after.temp_files == [] and after.objects_checked == 1
    assert temp_files(root) == []
    assert st.get(kept) == {"a": 1}


# Under RLIMIT_FSIZE (conftest's run_with_file_size_limit) the kernel fails any write past
# 1 MiB with EFBIG: a real OS write failure in the middle of a put, like ENOSPC on a full disk.
LIMITED_WRITER = r"""
import json, sys
import numpy as np
import daskperiment_store as store

st = store.open(sys.argv[1])
small = st.put(list(range(1000)))
big = np.frombuffer(np.random.default_rng(5).bytes(4 << 20), dtype=np.uint8)
try:
    st.put(big)
except OSError as exc:
    out = {"small": small, "big": store.digest(big), "errno": exc.errno, "message": str(exc)}
else:
    out = {"errno": None}
print(json.dumps(out))
"""


def test_failing_write_leaves_no_partial_object(tmp_path, run_with_file_size_limit):
    root = tmp_path / "s"
    st = store.open(root)
    code = LIMITED_WRITER.replace("sys.argv[1]", repr(str(root)))
    done = run_with_file_size_limit(code, limit=1 << 20)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["errno"] == errno.EFBIG, "the write past RLIMIT_FSIZE did not fail"
    assert str(root) in result["message"]  # the error names the store
    assert st.get(result["small"]) == list(range(1000))
    assert not st.has(result["big"])
    report = st.fsck()
    assert report.ok and report.temp_files == [] and report.objects_checked == 1
    # the same put succeeds once the failure is gone
    big = np.frombuffer(np.random.default_rng(5).bytes(4 << 20), dtype=np.uint8)
    assert st.put(big) == result["big"]
    np.testing.assert_array_equal(st.get(result["big"]), big)


def test_full_disk_leaves_no_partial_object(tiny_tmpfs):
    st = store.open(tiny_tmpfs.path / "s")
    small = st.put({"fits": True})
    too_big = np.random.default_rng(6).bytes(2 << 20)  # twice the filesystem
    with pytest.raises(OSError) as exc:
        st.put(too_big)
    assert exc.value.errno == errno.ENOSPC
    assert not st.has(store.digest(too_big))
    report = st.fsck()
    assert report.ok and report.temp_files == [] and report.objects_checked == 1
    assert st.get(small) == {"fits": True}
    assert st.put(b"still room for this") in st  # the store works on once space is back
