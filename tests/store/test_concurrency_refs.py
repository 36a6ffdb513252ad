"""Refs under real concurrent processes: racing creates, compare-and-swap counters, and lock
holders killed with SIGKILL, on the local backend, fsspec file:// (lock objects) and S3.

The workers are this file run as a script (``python test_concurrency_refs.py <spec>``); they
all wait for a "go" file so they hit the refs at the same moment, after their imports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


# -- the worker --------------------------------------------------------------------------------


def _backend(spec: dict[str, Any]) -> Any:
    from daskperiment_store.backends import FsspecBackend, LocalBackend

    if spec["kind"] == "local":
        return LocalBackend(spec["location"], create=False)
    return FsspecBackend(spec["location"], create=False, **spec.get("options", {}))


def _counter_oid(n: int) -> str:
    return f"{n:032x}"


def _increment(refs: Any, name: str) -> int:
    """Add one to the counter ref; return how many conflicts it took."""
    from daskperiment_store.errors import RefConflict

    conflicts = 0
    while True:
        current = refs.get(name)
        try:
            refs.swap(name, current, _counter_oid(int(current, 16) + 1))
            return conflicts
        except RefConflict:
            conflicts += 1


def worker(spec: dict[str, Any]) -> None:
    from daskperiment_store.errors import RefExists
    from daskperiment_store.refs import RefStore

    refs = RefStore(_backend(spec))
    while not os.path.exists(spec["go"]):
        time.sleep(0.001)
    if spec["op"] == "create":
        won = []
        for name in spec["refs"]:
            try:
                refs.create(name, spec["oid"])
                won.append(name)
            except RefExists:
                pass
        print(json.dumps({"won": won}), flush=True)
    elif spec["op"] == "increment":
        conflicts = sum(_increment(refs, spec["ref"]) for _ in range(spec["times"]))
        print(json.dumps({"conflicts": conflicts}), flush=True)
    elif spec["op"] == "increment-forever":
        done = 0
        while True:
            _increment(refs, spec["ref"])
            done += 1
            print(done, flush=True)
    elif spec["op"] == "hold-lock":
        with refs.backend.lock("refs/" + spec["ref"]):
            print("locked", flush=True)
            time.sleep(600)


# -- running workers ---------------------------------------------------------------------------


def start(spec: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def run_all(specs: list[dict[str, Any]], go: Path, timeout: float = 240) -> list[dict[str, Any]]:
    procs = [start(spec) for spec in specs]
    go.touch()
    results = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, f"worker failed: {out}"
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


@pytest.fixture(
    params=["local", "fsspec-file", pytest.param("s3", marks=pytest.mark.s3)],
)
def place(request, tmp_path) -> dict[str, Any]:
    """Where the racing processes meet: kind, location, worker count and workload size."""
    from daskperiment_store.backends import FsspecBackend, LocalBackend

    if request.param == "local":
        location = str(tmp_path / "store")
        backend = LocalBackend(location)
        return {"kind": "local", "location": location, "backend": backend, "procs": 8, "n": 25}
    if request.param == "fsspec-file":
        location = f"file://{tmp_path}/store"
        backend = FsspecBackend(location)
        return {"kind": "fsspec", "location": location, "backend": backend, "procs": 8, "n": 15}
    location = request.getfixturevalue("s3_url")
    backend = FsspecBackend(location)
    return {"kind": "s3", "location": location, "backend": backend, "procs": 4, "n": 8}


def spec(place: dict[str, Any], go: Path, **fields: Any) -> dict[str, Any]:
    return {"kind": place["kind"], "location": place["location"], "go": str(go), **fields}


# -- the tests ---------------------------------------------------------------------------------


def test_processes_racing_to_create_the_same_refs_have_one_winner_each(place, tmp_path):
    from daskperiment_store.refs import RefStore

    names = [f"experiments/x/trials/{i}" for i in range(place["n"] * 2)]
    go = tmp_path / "go"
    specs = [
        spec(place, go, op="create", refs=names, oid=f"{i + 1:02x}" * 16)
        for i in range(place["procs"])
    ]
    results = run_all(specs, go)
    refs = RefStore(place["backend"])
    for name in names:
        winners = [i for i, r in enumerate(results) if name in r["won"]]
        assert len(winners) == 1, f"{name} was created by workers {winners}"
        assert refs.get(name) == specs[winners[0]]["oid"]
    assert sorted(refs.list("experiments/x/trials/")) == sorted(names)
    assert list(place["backend"].list_temp()) == []


def test_processes_incrementing_a_counter_by_swap_lose_no_update(place, tmp_path):
    from daskperiment_store.refs import RefStore

    refs = RefStore(place["backend"])
    refs.create("counter", _counter_oid(0))
    go = tmp_path / "go"
    specs = [
        spec(place, go, op="increment", ref="counter", times=place["n"])
        for _ in range(place["procs"])
    ]
    run_all(specs, go)
    assert int(refs.get("counter"), 16) == place["procs"] * place["n"]


@pytest.mark.parametrize("kind", ["local", "fsspec-file"])
def test_a_lock_holder_killed_with_sigkill_does_not_wedge_the_ref(kind, tmp_path):
    from daskperiment_store.backends import FsspecBackend, LocalBackend
    from daskperiment_store.errors import LockTimeout
    from daskperiment_store.refs import RefStore

    if kind == "local":
        location, make = str(tmp_path / "store"), LocalBackend
        impatient = make(location, lock_timeout=0.3)
        patient = make(location, lock_timeout=20)
    else:
        location, make = f"file://{tmp_path}/store", FsspecBackend
        impatient = make(location, lock_timeout=0.3, stale_lock_after=60)
        patient = make(location, lock_timeout=20, stale_lock_after=0.5)
    refs = RefStore(impatient)
    refs.create("counter", _counter_oid(1))
    go = tmp_path / "go"
    go.touch()
    holder = start(
        spec(
            {"kind": "local" if kind == "local" else "fsspec", "location": location},
            go,
            op="hold-lock",
            ref="counter",
        )
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        # While the holder lives, the lock excludes this process.
        with pytest.raises(LockTimeout, match="refs/counter"):
            refs.swap("counter", _counter_oid(1), _counter_oid(2))
        assert refs.get("counter") == _counter_oid(1)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # Local: the kernel dropped the dead process's flock. fsspec: the lock object outlived
    # its holder and is broken once it has been seen unchanged for stale_lock_after.
    RefStore(patient).swap("counter", _counter_oid(1), _counter_oid(2))
    assert refs.get("counter") == _counter_oid(2)


@pytest.mark.s3
def test_s3_incrementer_killed_mid_loop_leaves_a_counter_others_keep_updating(s3_url, tmp_path):
    from daskperiment_store.backends import FsspecBackend
    from daskperiment_store.refs import RefStore

    refs = RefStore(FsspecBackend(s3_url))
    refs.create("counter", _counter_oid(0))
    place = {"kind": "s3", "location": s3_url}
    go = tmp_path / "go"
    go.touch()
    victim = start(spec(place, go, op="increment-forever", ref="counter"))
    try:
        done = 0
        while done < 3:
            done = int(victim.stdout.readline())
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    done = max([done, *(int(line) for line in victim.stdout.read().split())])
    survivor_go = tmp_path / "go2"
    run_all(
        [spec(place, survivor_go, op="increment", ref="counter", times=4) for _ in range(2)],
        survivor_go,
    )
    final = int(refs.get("counter"), 16)
    # The victim finished `done` increments and possibly one more before the kill landed.
    assert final - 8 in (done, done + 1)


if __name__ == "__main__":
    worker(json.loads(sys.argv[1]))
