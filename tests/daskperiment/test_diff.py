"""Diffs between trials: decided from digests (proved with a backend that counts reads),
rendered like ``git diff`` (pinned by golden files in tests/daskperiment/golden/).

Golden files are regenerated with ``UPDATE_GOLDEN=1 python -m pytest tests/daskperiment/test_diff.py``;
review the change with ``git diff`` before committing it.
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import daskperiment
import daskperiment_store as store
from daskperiment.diff import MISSING, diff_trials
from daskperiment.errors import TrialNotFound
from daskperiment_store import Link

GOLDEN = Path(__file__).parent / "golden"
EXP = "golden_pj"


class CountingBackend(store.MemoryBackend):
    """A real in-memory backend that counts every read of a key (whole or head)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: collections.Counter[str] = collections.Counter()

    def get(self, key: str) -> bytes:
        self.reads[key] += 1
        return super().get(key)

    def head(self, key: str, n: int) -> bytes:
        self.reads[key] += 1
        return super().head(key, n)

    def object_reads(self) -> dict[str, int]:
        """oid -> number of reads, for object keys only."""
        out = {}
        for key, n in self.reads.items():
            parts = key.split("/")
            if parts[0] == "objects":
                out[parts[1] + parts[2]] = n
        return out


# ---------------------------------------------------------------------------------------
# A store with hand-made trial records (fixed content: fixed digests, stable goldens)
# ---------------------------------------------------------------------------------------

SOURCES = {
    "prepare_data": "@ex\ndef prepare_data(a, b):\n    return a + b\n",
    "prepare_data_v2": "@ex.persist\ndef prepare_data(a, b):\n    return a + b\n",
    "calculate_score": "@ex.result\ndef calculate_score(s):\n    return 10 / s\n",
    "old_step": "@ex\ndef old_step(x):\n    return x\n",
    "report": "@ex\ndef report(s):\n    print(s)\n    return s\n",
}

PACKAGES = [
    "dask 2026.8.0 (/site)",
    "numpy 2.3.0 (/site)",
    "pandas 2.2.0 (/site)",
    "zstd 1.0 (/site)",
]
ENV = {
    "platform": {"system": "Linux", "machine": "x86_64"},
    "python": {"version": "3.11.7", "implementation": "CPython"},
    "packages": PACKAGES,
}


def put_trial(st: store.Store, trial_id: int, **spec: Any) -> tuple[str, dict[str, Any]]:
    """Write one trial record in the engine's schema (daskperiment/trial.py) and its ref."""
    params = spec["params"]
    code = st.put(
        {
            "type": "daskperiment.code",
            "steps": [[name, Link(st.put(SOURCES[src]))] for name, src in spec["code"]],
        }
    )
    env = st.put(
        {
            "type": "daskperiment.environment",
            "categories": {k: Link(st.put(v)) for k, v in spec["env"].items()},
        }
    )
    metrics = {k: Link(st.put(v)) for k, v in spec.get("metrics", {}).items()}
    result = Link(st.put(spec["result"])) if spec["result"] is not None else None
    steps = {}
    for i, (label, inputs, output, persisted) in enumerate(spec["steps"]):
        steps[label] = {
            "step": label,
            "kind": "persist" if persisted else "step",
            "inputs": inputs,
            "output": output,
            "persisted": Link(st.put(persisted)) if persisted is not None else None,
            "reused": False,
            "metrics": {},
            "started": 100.0 + i,
            "args": "()",
            "kwargs": "{}",
        }
    record = {
        "type": "daskperiment.trial",
        "version": 1,
        "experiment": EXP,
        "trial_id": trial_id,
        "status": spec.get("status", "success"),
        "parent": trial_id - 1 or None,
        "seed": spec["seed"],
        "params": params,
        "parameters": Link(st.put(params)),
        "code": Link(code),
        "environment": Link(env),
        "process": {"host": "elsewhere", "pid": 1, "start": 1, "boot": "b"},
        "started": 1000.0 * trial_id,
        "finished": 1000.0 * trial_id + 1,
        "process_time": 1.0 + trial_id,
        "description": spec.get("description"),
        "traceback": None,
        "steps": steps,
        "metrics": metrics,
        "result": result,
        "result_repr": repr(spec["result"]),
        "result_type": str(type(spec["result"])),
        "result_value": spec["result"],
        "digests": {
            "parameters": st.put(params),
            "code": code,
            "environment": env,
            "result": result.oid if result else None,
        },
    }
    oid = st.put(record)
    st.refs.create(f"experiments/{EXP}/trials/{trial_id}", oid)
    return oid, record


def series(values: list[float]) -> pd.Series:
    index = pd.Index(np.arange(len(values)), name="epoch")
    return pd.Series(np.asarray(values, dtype=float), index=index, name="m")


BASE = {
    "params": {"a": 1, "b": 2},
    "seed": 1,
    "code": [
        ("prepare_data", "prepare_data"),
        ("calculate_score", "calculate_score"),
        ("old_step", "old_step"),
    ],
    "env": ENV,
    "steps": [
        ("prepare_data", "11" * 16, "22" * 16, None),
        ("calculate_score", "33" * 16, "44" * 16, None),
    ],
    "result": 10 / 3,
    "metrics": {"dummy_score": series([100.0, 99.5, 98.0]), "loss": series([1.0, 0.5])},
}

CHANGED = {
    "params": {"a": 1, "b": 3, "c": "x"},
    "seed": 2,
    "code": [
        ("prepare_data", "prepare_data_v2"),
        ("calculate_score", "calculate_score"),
        ("report", "report"),
    ],
    "env": {**ENV, "packages": [p.replace("pandas 2.2.0", "pandas 2.2.1") for p in PACKAGES]},
    "steps": [
        ("prepare_data", "11" * 16, "55" * 16, 4),
        ("calculate_score", "66" * 16, "77" * 16, None),
        ("report", "77" * 16, "77" * 16, None),
    ],
    "result": 2.5,
    "metrics": {
        "dummy_score": series([100.0, 97.0, 96.0, 90.0]),
        "loss": series([1.0, 0.5]),
        "acc": series([0.5, 0.75]),
    },
}


@pytest.fixture
def counted() -> tuple[store.Store, CountingBackend, dict[int, tuple[str, dict]]]:
    backend = CountingBackend()
    st = store.open(backend)
    trials = {1: put_trial(st, 1, **BASE), 2: put_trial(st, 2, **CHANGED)}
    trials[3] = put_trial(st, 3, **{**BASE, "metrics": dict(BASE["metrics"])})
    backend.reads.clear()
    return st, backend, trials


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 once and review it"
    assert text == path.read_text()


# ---------------------------------------------------------------------------------------
# Golden renderings
# ---------------------------------------------------------------------------------------


def test_full_rendering_is_pinned(counted) -> None:
    st, _, _ = counted
    check_golden("diff_full.txt", str(diff_trials(st, EXP, 1, 2)))


def test_code_only_rendering_is_pinned(counted) -> None:
    st, _, _ = counted
    check_golden("diff_code.txt", diff_trials(st, EXP, 1, 2).render(["code"]))


def test_stat_rendering_is_pinned(counted) -> None:
    st, _, _ = counted
    check_golden("diff_stat.txt", diff_trials(st, EXP, 1, 2).stat())


def test_color_rendering_is_pinned(counted) -> None:
    st, _, _ = counted
    text = diff_trials(st, EXP, 1, 2).render(color=True)
    assert "\x1b[31m-b = 2\x1b[m" in text and "\x1b[32m+b = 3\x1b[m" in text
    check_golden("diff_color.txt", text)


def test_json_form_is_pinned(counted) -> None:
    st, _, _ = counted
    data = diff_trials(st, EXP, 1, 2).to_dict()
    check_golden("diff.json", json.dumps(data, indent=2, sort_keys=True) + "\n")


def test_rendering_uses_git_file_headers(counted) -> None:
    st, _, _ = counted
    lines = str(diff_trials(st, EXP, 1, 2)).splitlines()
    headers = [line for line in lines if line.startswith("diff --git")]
    assert headers == [
        "diff --git a/parameters b/parameters",
        "diff --git a/trial b/trial",
        "diff --git a/prepare_data b/prepare_data",
        "diff --git a/old_step b/old_step",
        "diff --git a/report b/report",
        "diff --git a/steps b/steps",
        "diff --git a/result b/result",
        "diff --git a/metrics/acc b/metrics/acc",
        "diff --git a/metrics/dummy_score b/metrics/dummy_score",
        "diff --git a/environment/packages b/environment/packages",
    ]
    i = lines.index("diff --git a/prepare_data b/prepare_data")
    assert lines[i + 2 : i + 6] == [
        "--- a/prepare_data",
        "+++ b/prepare_data",
        "@@ -1,3 +1,3 @@",
        "-@ex",
    ]
    j = lines.index("diff --git a/old_step b/old_step")
    assert lines[j + 1] == "deleted file" and "+++ /dev/null" in lines[j : j + 6]
    k = lines.index("diff --git a/report b/report")
    assert lines[k + 1] == "new file" and "--- /dev/null" in lines[k : k + 6]


# ---------------------------------------------------------------------------------------
# Digests first: what is read, and what never is
# ---------------------------------------------------------------------------------------


def test_only_differing_parts_are_read(counted) -> None:
    st, backend, trials = counted
    (oid1, rec1), (oid2, rec2) = trials[1], trials[2]
    d = diff_trials(st, EXP, 1, 2)
    reads = backend.object_reads()
    unchanged = {
        st.put(SOURCES["calculate_score"]),  # same source in both code trees
        rec1["metrics"]["loss"].oid,  # same metric series
        st.put(ENV["python"]),  # same environment categories
        st.put(ENV["platform"]),
        rec1["parameters"].oid,  # parameters are inline in the records
        rec2["parameters"].oid,
        rec1["result"].oid,  # the result's repr is inline too
        rec2["result"].oid,
    }
    assert unchanged.isdisjoint(reads)
    changed = {
        oid1,
        oid2,
        rec1["code"].oid,
        rec2["code"].oid,
        st.put(SOURCES["prepare_data"]),
        st.put(SOURCES["prepare_data_v2"]),
        st.put(SOURCES["old_step"]),
        st.put(SOURCES["report"]),
        rec1["metrics"]["dummy_score"].oid,
        rec2["metrics"]["dummy_score"].oid,
        rec2["metrics"]["acc"].oid,
        rec1["environment"].oid,
        rec2["environment"].oid,
        st.put(BASE["env"]["packages"]),
        st.put(CHANGED["env"]["packages"]),
    }
    assert set(reads) == changed
    assert all(n == 1 for n in reads.values()), "each object is read once"
    assert d.objects_read == len(changed)


def test_equal_code_and_environment_digests_read_only_the_records(counted) -> None:
    st, backend, trials = counted
    d = diff_trials(st, EXP, 1, 3)  # trial 3 differs from 1 only in its id and timings
    assert set(backend.object_reads()) == {trials[1][0], trials[3][0]}
    assert d.objects_read == 2
    assert not d and str(d) == "" and d.stat() == ""


def test_a_trial_against_itself_reads_nothing(counted) -> None:
    st, backend, _ = counted
    d = diff_trials(st, EXP, 2, 2)
    assert not d and backend.object_reads() == {} and d.objects_read == 0


def test_changes_as_data(counted) -> None:
    st, _, _ = counted
    d = diff_trials(st, EXP, 1, 2)
    assert d.parameters == {"b": (2, 3), "c": (MISSING, "x")}
    assert d.trial == {"seed": (1, 2)}
    assert set(d.code) == {"prepare_data", "old_step", "report"}
    assert d.code["old_step"][1] is MISSING and d.code["report"][0] is MISSING
    assert d.code["prepare_data"][1] == SOURCES["prepare_data_v2"]
    assert set(d.steps) == {"prepare_data", "calculate_score", "report"}
    assert d.steps["prepare_data"][1]["persisted"] is not None
    assert d.result[0]["value"] == repr(10 / 3) and d.result[1]["value"] == "2.5"
    assert set(d.metrics) == {"dummy_score", "acc"}
    assert d.metrics["dummy_score"][0] == {
        "count": 3,
        "epochs": "0..2",
        "first": 100.0,
        "last": 98.0,
        "min": 98.0,
        "max": 100.0,
        "mean": 99.166666666667,
    }
    assert d.metrics["acc"][0] is MISSING
    assert set(d.environment) == {"packages"}
    assert bool(d)


def test_groups_select_files(counted) -> None:
    st, _, _ = counted
    d = diff_trials(st, EXP, 1, 2)
    params = d.render(["parameters"])
    assert params.startswith("diff --git a/parameters b/parameters\n")
    assert "diff --git a/prepare_data" not in params
    assert d.render(["environment"]).count("diff --git") == 1
    with pytest.raises(ValueError, match="unknown diff groups"):
        d.render(["nonsense"])


def test_unknown_trial_raises_trial_not_found(counted) -> None:
    st, _, _ = counted
    with pytest.raises(TrialNotFound, match="trial 9 not found.*from 1 to 3"):
        diff_trials(st, EXP, 1, 9)
    with pytest.raises(KeyError):
        diff_trials(st, EXP, "x", 1)


def test_pickled_metric_is_not_loaded(counted, tmp_path: Path) -> None:
    st, _, _ = counted
    marker = tmp_path / "unpickled"

    class Loud:  # loading this pickle would write the marker file
        def __reduce__(self):
            return (Path.write_text, (marker, "code ran"))

    put_trial(st, 4, **{**BASE, "metrics": {"odd": Loud()}})
    _, rec = put_trial(st, 5, **{**BASE, "metrics": {"odd": {1, 2, 3}}})
    _, rec4 = put_trial(st, 6, **{**BASE, "metrics": {"odd": Loud()}})
    assert st.info(rec["metrics"]["odd"].oid).kind == "pickle"
    d = diff_trials(st, EXP, 4, 5)
    text = str(d)
    assert f"(pickled object {rec['metrics']['odd'].oid}, not loaded)" in text
    assert f"(pickled object {rec4['metrics']['odd'].oid}, not loaded)" in text
    assert not marker.exists()


# ---------------------------------------------------------------------------------------
# Trials recorded by the engine
# ---------------------------------------------------------------------------------------


@pytest.fixture
def engine_trials() -> tuple[Any, CountingBackend]:
    backend = CountingBackend()
    ex = daskperiment.Experiment("diff_engine", backend=store.open(backend))
    a, b = ex.parameter("a"), ex.parameter("b")

    @ex
    def prepare_data(a, b):
        return a + b

    @ex.result
    def calculate_score(s):
        ex.save_metric("score", epoch=0, value=float(s))
        return 10 / s

    s = calculate_score(prepare_data(a, b))
    ex.set_parameters(a=1, b=2)
    s.compute(seed=1)  # trial 1
    ex.set_parameters(b=3)
    s.compute(seed=1)  # trial 2: other parameters, same code
    ex.set_parameters(b=2)
    s.compute(seed=1)  # trial 3: the same as trial 1

    @ex.result
    def calculate_score(s):  # noqa: F811 - a changed step, as a user edits it
        ex.save_metric("score", epoch=0, value=float(s))
        return 20 / s

    s = calculate_score(prepare_data(a, b))
    s.compute(seed=1)  # trial 4: changed code of one step
    return ex, backend


def test_engine_trials_with_equal_code_read_no_code(engine_trials) -> None:
    ex, backend = engine_trials
    st = ex.store
    r1, r2 = ex.get_trial(1), ex.get_trial(2)
    assert r1["digests"]["code"] == r2["digests"]["code"]
    backend.reads.clear()
    d = diff_trials(st, ex.id, 1, 2)
    reads = backend.object_reads()
    assert r1["digests"]["code"] not in reads
    assert r1["digests"]["environment"] not in reads
    # the records, and the two differing one-point metric series
    assert len(reads) == d.objects_read == 4
    assert d.parameters == {"b": (2, 3)} and not d.code and d.result is not None
    assert "diff --git a/parameters b/parameters" in str(d)


def test_engine_trials_identical_in_everything_compared(engine_trials) -> None:
    ex, backend = engine_trials
    backend.reads.clear()
    d = diff_trials(ex.store, ex.id, 1, 3)
    assert not d, str(d)
    assert str(d) == "" and d.objects_read == 2


def test_engine_trials_with_changed_code_read_only_the_changed_step(engine_trials) -> None:
    ex, backend = engine_trials
    st = ex.store
    tree1 = st.get(ex.get_trial(3)["digests"]["code"])
    unchanged = dict(tree1["steps"])["prepare_data"].oid
    backend.reads.clear()
    d = diff_trials(st, ex.id, 3, 4)
    assert unchanged not in backend.object_reads()
    assert list(d.code) == ["calculate_score"]
    text = str(d)
    assert "-    return 10 / s\n+    return 20 / s\n" in text
    assert "diff --git a/calculate_score b/calculate_score" in text


def test_experiment_diff_method(engine_trials) -> None:
    ex, _ = engine_trials
    if not hasattr(ex, "diff"):
        pytest.fail("Experiment.diff is not there yet (requested in /tmp/team/REQUESTS.md)")
    d = ex.diff(1, 2)
    assert d.parameters == {"b": (2, 3)}
    assert str(d) == str(diff_trials(ex.store, ex.id, 1, 2))
