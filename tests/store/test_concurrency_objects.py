"""Eight real processes writing overlapping objects and racing for the same refs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

import daskperiment_store as store

N_PROCS = 8
N_REFS = 20

# Each worker waits for the "go" file so that all of them start together, then puts objects
# every worker puts (in its own order), a few of its own, one shared 8 MB array (so racing
# writers really overlap on one large file), and races the others to create the same refs.
WORKER = r"""
import json, os, random, sys, time
import numpy as np
import daskperiment_store as store

root, go, me, n_refs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
n_shared, big_size = int(sys.argv[5]), int(sys.argv[6])
st = store.open(root)
while not os.path.exists(go):
    time.sleep(0.001)
shared = list(range(n_shared))
random.Random(me).shuffle(shared)
oids = [st.put({"shared": i, "data": list(range(i))}) for i in shared]
big = np.random.default_rng(123).standard_normal(big_size)
oids.append(st.put(big))
own = [st.put({"worker": me, "i": i}) for i in range(5)]
wins = []
for r in range(n_refs):
    try:
        st.refs.create(f"race/{r}", own[r % len(own)])
        wins.append(r)
    except store.RefExists:
        pass
print(json.dumps({"me": me, "oids": oids, "own": own, "wins": wins}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_parallel_writers_and_ref_races(where, tmp_path, request):
    # S3 round trips to the test server are slow: fewer objects there, same races.
    if where == "local":
        root, n_shared, big_size = str(tmp_path / "s"), 60, 1 << 20
    else:
        root, n_shared, big_size = request.getfixturevalue("s3_url"), 10, 1 << 17
    store.open(root)  # created up front; racing openers are tested below
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, root, str(go), str(i)]
            + [str(N_REFS), str(n_shared), str(big_size)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(N_PROCS)
    ]
    time.sleep(0.5)  # let them import and wait on the go file
    go.touch()
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0
        results.append(json.loads(out))

    st = store.open(root)
    shared = {tuple(sorted(r["oids"])) for r in results}
    assert len(shared) == 1  # every process computed the same oids for the same values
    wins = Counter(r for res in results for r in res["wins"])
    assert wins == Counter(range(N_REFS))  # exactly one winner per ref
    owners = {r: res for res in results for r in res["wins"]}
    for r in range(N_REFS):
        winner = owners[r]
        assert st.refs.get(f"race/{r}") == winner["own"][r % len(winner["own"])]
    for res in results:
        for oid in res["oids"] + res["own"]:
            st.get(oid)  # readable and verified
    big = st.get(results[0]["oids"][-1])
    np.testing.assert_array_equal(big, np.random.default_rng(123).standard_normal(big_size))
    report = st.fsck()
    assert report.ok and report.temp_files == []
    assert report.objects_checked == n_shared + 1 + 5 * N_PROCS
    assert report.refs_checked == N_REFS


OPENER = r"""
import os, sys, time
import daskperiment_store as store
root, go = sys.argv[1], sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.001)
st = store.open(root)
print(st.put("hello"))
"""


def test_racing_openers_agree_on_one_config(tmp_path):
    root = tmp_path / "new"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, str(root), str(go)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    time.sleep(0.5)
    go.touch()
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 1
    st = store.open(root, create=False)
    assert st.get(outs[0]) == "hello"
    assert st.fsck().ok
