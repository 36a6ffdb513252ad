"""Step caching (``@ex.persist(cache=True)``): what is reused, what runs again, and repairs.

Steps count their calls by appending their name to a file, so the counts are right under
every scheduler (worker processes included). Pipelines are built inside functions so worker
processes receive the steps by value.
"""

from __future__ import annotations

import collections
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
from clusters import process_cluster

import daskperiment
import daskperiment_store as store
from daskperiment import cache

REUSE = "Reused cached result of {} from trial {}"


def calls(path: Path) -> collections.Counter:
    """How often each step ran since the file was last emptied (and empty it)."""
    if not path.exists():
        return collections.Counter()
    names = path.read_text().split()
    path.write_text("")
    return collections.Counter(names)


def build(ex: Any, log: Path, cache_option: Any = True) -> Any:
    """prepare(a) -> features(data) -> score(feat, b), the first two cached."""
    a = ex.parameter("a")
    b = ex.parameter("b")
    log = str(log)

    def note(name: str) -> None:
        with open(log, "a") as f:
            f.write(name + "\n")

    @ex.persist(cache=cache_option)
    def prepare(a):
        note("prepare")
        ex.save_metric("rows", epoch=0, value=1000)
        return np.arange(1000, dtype=float) * a + np.random.random()

    @ex.persist(cache=cache_option)
    def features(data):
        note("features")
        return data * 2

    @ex.result
    def score(feat, b):
        note("score")
        return float(feat.sum()) + b

    return score(features(prepare(a)), b)


def object_file(ex: Any, oid: str) -> Path:
    return Path(ex.store.path_of(oid))


def flip_bytes(path: Path) -> None:
    """Damage an object file in place, keeping its size (as a disk error would)."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 16, len(data)):
        data[i] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def persisted(ex: Any, trial_id: int, step: str) -> str:
    return ex.get_trial(trial_id)["steps"][step]["persisted"]


@pytest.fixture
def log(workdir: Path) -> Path:
    return workdir / "calls.log"


# ---------------------------------------------------------------------------------------
# Hits and misses
# ---------------------------------------------------------------------------------------


def test_repeat_trial_reuses_whole_chain_and_says_so(log: Path, dp_log: Any) -> None:
    ex = daskperiment.Experiment(id="cache_pj")
    result = build(ex, log)
    ex.set_parameters(a=1, b=2)
    first = result.compute(seed=1)
    assert calls(log) == {"prepare": 1, "features": 1, "score": 1}
    dp_log.clear()

    second = result.compute(seed=2)  # a new seed: the pure steps are reused anyway

    assert second == first
    assert calls(log) == {"score": 1}
    infos = dp_log.messages("INFO")
    assert REUSE.format("prepare", 1) in infos
    assert REUSE.format("features", 1) in infos
    steps = ex.get_trial(2)["steps"]
    assert steps["prepare"]["reused"] is True and steps["prepare"]["reused_from"] == 1
    assert steps["features"]["reused"] is True
    assert steps["score"]["reused"] is False
    # the reused outputs are the very objects of trial 1, and stay readable per trial
    assert persisted(ex, 2, "features") == persisted(ex, 1, "features")
    np.testing.assert_array_equal(ex.get_persisted("features", 2), ex.get_persisted("features", 1))
    # metrics a reused step saved come with it
    assert ex.load_metric("rows", trial_id=2)[2].tolist() == [1000]
    history = ex.get_history(verbose=True)
    assert history.loc[1, "Reused Steps"] == ""
    assert history.loc[2, "Reused Steps"] == "prepare, features"


def test_parameter_change_misses_only_the_steps_depending_on_it(log: Path) -> None:
    ex = daskperiment.Experiment(id="cache_pj")
    result = build(ex, log)
    ex.set_parameters(a=1, b=2)
    result.compute()
    calls(log)

    ex.set_parameters(b=3)  # only score reads b
    result.compute()
    assert calls(log) == {"score": 1}

    ex.set_parameters(a=5)
    value = result.compute()
    assert calls(log) == {"prepare": 1, "features": 1, "score": 1}
    assert value == pytest.approx(float((ex.get_persisted("prepare", 3) * 2).sum()) + 3)

    ex.set_parameters(a=1)  # back to a value seen before: its entries are still there
    result.compute()
    assert calls(log) == {"score": 1}
    assert ex.get_trial(4)["steps"]["prepare"]["reused_from"] == 1


def test_code_change_misses_and_so_does_everything_downstream(log: Path) -> None:
    ex = daskperiment.Experiment(id="cache_pj")
    a = ex.parameter("a")
    ran = []

    @ex.persist(cache=True)
    def prepare(a):
        ran.append("prepare")
        return a + 1

    @ex.persist(cache=True)
    def features(x):
        ran.append("features")
        return x * 10

    @ex.result
    def score(x):
        return x

    ex.set_parameters(a=1)
    assert score(features(prepare(a))).compute() == 20
    assert score(features(prepare(a))).compute() == 20
    assert ran == ["prepare", "features"]
    ran.clear()

    @ex.persist(cache=True)  # noqa: F811 - the user edits the step
    def features(x):
        ran.append("features")
        return x * 100

    assert score(features(prepare(a))).compute() == 200
    assert ran == ["features"]  # prepare's code and input did not change
    ran.clear()

    @ex.persist(cache=True)  # noqa: F811 - an upstream edit
    def prepare(a):
        ran.append("prepare")
        return a + 2

    assert score(features(prepare(a))).compute() == 300
    assert ran == ["prepare", "features"]  # features' code is the same, its input's key is not


def test_seed_is_not_part_of_the_key_unless_asked(log: Path) -> None:
    ex = daskperiment.Experiment(id="seeded_pj")
    result = build(ex, log, cache_option="seed")
    ex.set_parameters(a=1, b=0)
    first = result.compute(seed=1)
    calls(log)

    assert result.compute(seed=1) == first
    assert calls(log) == {"score": 1}

    other = result.compute(seed=2)  # prepare draws a random number: another seed, another output
    assert calls(log) == {"prepare": 1, "features": 1, "score": 1}
    assert other != first

    plain = daskperiment.Experiment(id="unseeded_pj")
    result = build(plain, log, cache_option=True)
    plain.set_parameters(a=1, b=0)
    first = result.compute(seed=1)
    calls(log)
    assert result.compute(seed=2) == first  # declared pure: the seed does not matter
    assert calls(log) == {"score": 1}


def test_plain_step_with_cache_is_stored_and_reused(log: Path) -> None:
    ex = daskperiment.Experiment(id="cache_pj")
    a = ex.parameter("a")
    ran = []

    @ex(cache=True)
    def double(a):
        ran.append(a)
        return [a, a]

    @ex.result
    def total(x):
        return sum(x)

    ex.set_parameters(a=4)
    assert total(double(a)).compute() == 8
    assert total(double(a)).compute() == 8
    assert ran == [4]
    step = ex.get_trial(2)["steps"]["double"]
    assert step["reused"] is True and step["kind"] == "step"


def test_invalid_cache_option_is_refused_when_decorating() -> None:
    ex = daskperiment.Experiment(id="cache_pj")
    with pytest.raises(ValueError, match="cache must be True"):

        @ex.persist(cache="always")
        def prepare(a):
            return a


# ---------------------------------------------------------------------------------------
# Steps whose key is only known where they run
# ---------------------------------------------------------------------------------------


def test_cached_step_after_an_uncached_one_is_decided_by_its_input_digest() -> None:
    ex = daskperiment.Experiment(id="cache_pj")
    a = ex.parameter("a")
    ran = []

    @ex
    def load(a):
        ran.append("load")
        return abs(a)

    @ex.persist(cache=True)
    def expensive(x):
        ran.append("expensive")
        return x * 3

    @ex.result
    def score(x):
        return x

    result = score(expensive(load(a)))
    ex.set_parameters(a=2)
    assert result.compute() == 6
    ex.set_parameters(a=-2)  # another parameter, but load gives the same value
    assert result.compute() == 6
    assert ran == ["load", "expensive", "load"]
    assert ex.get_trial(2)["steps"]["expensive"]["reused_from"] == 1
    ex.set_parameters(a=3)
    assert result.compute() == 9
    assert ran[3:] == ["load", "expensive"]


def test_cleared_upstream_reruns_and_downstream_is_reused_only_if_its_input_is_unchanged(
    log: Path,
) -> None:
    ex = daskperiment.Experiment(id="cache_pj")
    result = build(ex, log)
    ex.set_parameters(a=1, b=0)
    first = result.compute(seed=1)
    calls(log)

    assert ex.clear_cache("prepare") == 1
    # prepare runs again with the same seed (same output): features' entry still fits
    assert result.compute(seed=1) == first
    assert calls(log) == {"prepare": 1, "score": 1}

    assert ex.clear_cache("prepare") == 1
    # another seed changes prepare's output: features must not be reused for it
    value = result.compute(seed=5)
    assert calls(log) == {"prepare": 1, "features": 1, "score": 1}
    assert value == pytest.approx(float((ex.get_persisted("prepare", 3) * 2).sum()))


# ---------------------------------------------------------------------------------------
# Forcing and forgetting
# ---------------------------------------------------------------------------------------


def test_compute_without_cache_recomputes_and_refreshes_entries(log: Path) -> None:
    ex = daskperiment.Experiment(id="cache_pj")
    result = build(ex, log)
    ex.set_parameters(a=1, b=2)
    result.compute(seed=1)
    calls(log)

    result.compute(seed=1, cache=False)
    assert calls(log) == {"prepare": 1, "features": 1, "score": 1}
    assert not ex.get_trial(2)["steps"]["prepare"]["reused"]

    result.compute(seed=1)
    assert calls(log) == {"score": 1}
    assert ex.get_trial(3)["steps"]["prepare"]["reused_from"] == 2  # the refreshed entry


def test_clear_cache_forgets_entries_but_keeps_trials(log: Path) -> None:
    ex = daskperiment.Experiment(id="cache_pj")
    assert ex.clear_cache() == 0  # nothing recorded yet: nothing to do
    result = build(ex, log)
    ex.set_parameters(a=1, b=2)
    result.compute()
    ex.set_parameters(a=2)
    result.compute()
    calls(log)
    refs = ex.store.refs.list(cache.cache_prefix("cache_pj"))
    assert len(refs) == 4  # two steps x two parameter values

    assert ex.clear_cache("features") == 2
    assert ex.clear_cache("features") == 0
    assert ex.clear_cache() == 2
    assert ex.store.refs.list(cache.cache_prefix("cache_pj")) == {}

    # trial records and what they keep are untouched
    assert ex.get_persisted("features", 1) is not None
    assert len(ex.get_history()) == 2
    result.compute()
    assert calls(log) == {"prepare": 1, "features": 1, "score": 1}


# ---------------------------------------------------------------------------------------
# Damaged or missing outputs
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", [None, "sync"])
def test_corrupt_cached_output_is_recomputed_with_a_warning_and_repaired(
    scheduler: str | None, log: Path, dp_log: Any
) -> None:
    ex = daskperiment.Experiment(id="cache_pj")
    result = build(ex, log)
    ex.set_parameters(a=1, b=2)
    with dask.config.set(scheduler=scheduler):
        first = result.compute(seed=1)
        _corrupt_output_recomputed(ex, result, first, log, dp_log)


def _corrupt_output_recomputed(ex: Any, result: Any, first: Any, log: Path, dp_log: Any) -> None:
    calls(log)
    oid = persisted(ex, 1, "features")
    flip_bytes(object_file(ex, oid))
    with pytest.raises(store.errors.StoreError):
        ex.store.get(oid)
    dp_log.clear()

    assert result.compute(seed=2) == first  # never wrong data
    # features ran again from prepare's reused output (prepare itself did not run)
    assert calls(log) == {"features": 1, "score": 1}
    warnings = dp_log.messages("WARNING")
    assert len(warnings) == 1
    assert "Cached result of features from trial 1 cannot be read" in warnings[0]
    np.testing.assert_array_equal(ex.store.get(oid), ex.get_persisted("features", 1))
    assert not ex.get_trial(2)["steps"]["features"]["reused"]
    dp_log.clear()

    result.compute(seed=3)
    assert calls(log) == {"score": 1}
    assert dp_log.messages("WARNING") == []


def test_outputs_not_needed_are_not_even_read(log: Path, dp_log: Any) -> None:
    ex = daskperiment.Experiment(id="cache_pj")
    result = build(ex, log)
    ex.set_parameters(a=1, b=2)
    first = result.compute()
    calls(log)
    # prepare's output feeds only features, which is reused: damage goes unnoticed
    flip_bytes(object_file(ex, persisted(ex, 1, "prepare")))
    dp_log.clear()

    assert result.compute() == first
    assert calls(log) == {"score": 1}
    assert dp_log.messages("WARNING") == []


def test_missing_cached_output_is_a_miss_with_a_warning(log: Path, dp_log: Any) -> None:
    ex = daskperiment.Experiment(id="cache_pj")
    result = build(ex, log)
    ex.set_parameters(a=1, b=2)
    first = result.compute(seed=1)
    calls(log)
    oid = persisted(ex, 1, "prepare")
    object_file(ex, oid).unlink()
    dp_log.clear()

    assert result.compute(seed=1) == first
    # prepare runs again; features is checked against its actual input and reused
    assert calls(log) == {"prepare": 1, "score": 1}
    warnings = dp_log.messages("WARNING")
    assert len(warnings) == 1 and "prepare" in warnings[0] and "missing" in warnings[0]
    assert ex.store.has(oid)
    result.compute(seed=1)
    assert calls(log) == {"score": 1}


def test_unreadable_entry_is_a_miss_with_a_warning(log: Path, dp_log: Any) -> None:
    ex = daskperiment.Experiment(id="cache_pj")
    result = build(ex, log)
    ex.set_parameters(a=1, b=2)
    result.compute()
    calls(log)
    prefix = cache.cache_prefix("cache_pj", "prepare")
    ((name, entry_oid),) = ex.store.refs.list(prefix).items()
    flip_bytes(object_file(ex, entry_oid))
    dp_log.clear()

    result.compute()
    assert calls(log)["prepare"] == 1
    assert any("Cache entry of prepare cannot be read" in m for m in dp_log.messages("WARNING"))
    assert ex.store.refs.get(name) != entry_oid  # rewritten


def test_failed_trial_keeps_the_entries_of_steps_that_finished(log: Path) -> None:
    ex = daskperiment.Experiment(id="cache_pj")
    a = ex.parameter("a")
    ran = []

    @ex.persist(cache=True)
    def prepare(a):
        ran.append("prepare")
        return a * 2

    @ex.result
    def score(x):
        return 10 / (x - 2)

    ex.set_parameters(a=1)
    with pytest.raises(ZeroDivisionError):
        score(prepare(a)).compute()

    @ex.result  # noqa: F811 - the user fixes the failing step
    def score(x):
        return 10 / (x + 2)

    assert score(prepare(a)).compute() == 2.5
    assert ran == ["prepare"]
    assert ex.get_trial(2)["steps"]["prepare"]["reused_from"] == 1


def test_purity_is_still_checked_where_a_cached_step_runs(dp_log: Any) -> None:
    ex = daskperiment.Experiment(id="cache_pj")
    a = ex.parameter("a")

    @ex.persist(cache=True)  # declared pure, but it is not
    def noisy(a):
        return a + np.random.random()

    @ex.result
    def score(x):
        return x

    ex.set_parameters(a=1)
    first = score(noisy(a)).compute(seed=1)
    assert score(noisy(a)).compute(seed=2) == first  # reused: nothing to check
    assert not [m for m in dp_log.messages("WARNING") if "result is changed" in m]
    score(noisy(a)).compute(seed=3, cache=False)  # runs: the impurity shows
    assert [m for m in dp_log.messages("WARNING") if "result is changed" in m]


# ---------------------------------------------------------------------------------------
# Other processes, other stores, other schedulers
# ---------------------------------------------------------------------------------------

PIPELINE = """
import dask
import numpy as np
import daskperiment

ex = daskperiment.Experiment(id="shared_pj", backend=STORE)
a = ex.parameter("a")


@ex.persist(cache=True)
def prepare(a):
    with open(LOG, "a") as f:
        f.write("prepare\\n")
    return np.arange(10.0) * a


@ex.result
def score(x):
    return float(x.sum())


result = score(prepare(a))
"""


def write_pipeline(directory: Path, store_path: Path, log: Path) -> str:
    """A module holding the pipeline, importable by the test and by subprocesses alike."""
    name = f"pipeline_{os.getpid()}_{abs(hash(str(directory))) % 10**8}"
    header = f"STORE = {str(store_path)!r}\nLOG = {str(log)!r}\n"
    (directory / f"{name}.py").write_text(header + PIPELINE)
    return name


def test_reuse_across_processes_on_a_shared_store(
    python: Any, workdir: Path, log: Path, monkeypatch: pytest.MonkeyPatch, dp_log: Any
) -> None:
    name = write_pipeline(workdir, workdir / "team_store", log)
    run = python.run(
        f"import {name} as p\np.ex.set_parameters(a=2)\nreport(p.result.compute())\n",
        pythonpath=[str(workdir)],
    ).check()
    assert run.result() == 90.0
    assert calls(log) == {"prepare": 1}

    # a colleague's process on the same store
    monkeypatch.syspath_prepend(str(workdir))
    module = __import__(name)
    module.ex.set_parameters(a=2)
    assert module.result.compute() == 90.0
    assert calls(log) == {}
    assert REUSE.format("prepare", 1) in dp_log.messages("INFO")
    sys.modules.pop(name, None)


def test_trials_pulled_from_another_store_make_their_steps_reusable(log: Path) -> None:
    here = daskperiment.Experiment(id="pulled_pj", backend="origin")
    result = build(here, log)
    here.set_parameters(a=1, b=2)
    first = result.compute()
    calls(log)

    other = store.open("copy")
    other.pull(here.store, refs=["experiments/pulled_pj/trials/1"])
    record = other.get(other.refs.get("experiments/pulled_pj/trials/1"))
    assert cache.derive_entries(other, "pulled_pj", {1: ("", record)}) == 2
    assert cache.derive_entries(other, "pulled_pj", {1: ("", record)}) == 0  # kept

    there = daskperiment.Experiment(id="pulled_pj", backend="copy")
    result = build(there, log)
    there.set_parameters(a=1, b=2)
    assert result.compute() == first
    assert calls(log) == {"score": 1}
    assert there.get_trial(2)["steps"]["prepare"]["reused_from"] == 1


def test_pulled_pickled_outputs_get_no_cache_entry(log: Path) -> None:
    """Reusing a pulled pickle would run the sender's code: it arrives without an entry."""
    here = daskperiment.Experiment(id="pickled_pj", backend="origin")
    a = here.parameter("a")
    path = str(log)

    @here.persist(cache=True)
    def as_set(a):
        with open(path, "a") as f:
            f.write("as_set\n")
        return {a, a + 1}  # a set: only pickle can store it

    @here.result
    def size(values):
        return len(values)

    result = size(as_set(a))
    here.set_parameters(a=1)
    assert result.compute() == 2
    assert calls(log) == {"as_set": 1}
    record = here.get_trial(1)
    assert store.open("origin").info(record["steps"]["as_set"]["persisted"]).kind == "pickle"

    other = store.open("copy")
    other.pull(here.store, refs=["experiments/pickled_pj/trials/1"])
    pulled = other.get(other.refs.get("experiments/pickled_pj/trials/1"), kinds={"json"})
    assert cache.derive_entries(other, "pickled_pj", {1: ("", pulled)}) == 0
    assert other.refs.names("experiments/pickled_pj/cache/") == []

    there = daskperiment.Experiment(id="pickled_pj", backend="copy")
    b = there.parameter("a")

    @there.persist(cache=True)
    def as_set(a):  # noqa: F811 - the same step in the colleague's process
        with open(path, "a") as f:
            f.write("as_set\n")
        return {a, a + 1}

    @there.result
    def size(values):  # noqa: F811
        return len(values)

    there.set_parameters(a=1)
    assert size(as_set(b)).compute() == 2
    assert calls(log) == {"as_set": 1}  # ran again: nothing of the sender's was unpickled


@pytest.mark.parametrize("scheduler", ["threads", "processes", "sync"])
def test_chain_resolution_under_a_scheduler(scheduler: str, log: Path, dp_log: Any) -> None:
    ex = daskperiment.Experiment(id="cache_pj")
    result = build(ex, log)
    ex.set_parameters(a=1, b=2)
    first = result.compute(seed=1, scheduler=scheduler)
    assert calls(log) == {"prepare": 1, "features": 1, "score": 1}

    assert result.compute(seed=2, scheduler=scheduler) == first
    assert calls(log) == {"score": 1}
    assert ex.get_history(verbose=True).loc[2, "Reused Steps"] == "prepare, features"


def test_memory_store_outputs_reach_worker_processes(log: Path) -> None:
    # A memory store exists only in this process: reused outputs are loaded here and sent.
    ex = daskperiment.Experiment(id="cache_pj", backend=store.MemoryBackend())
    result = build(ex, log)
    ex.set_parameters(a=1, b=2)
    first = result.compute(seed=1, scheduler="processes")
    assert calls(log) == {"prepare": 1, "features": 1, "score": 1}
    assert result.compute(seed=2, scheduler="processes") == first
    assert calls(log) == {"score": 1}
    assert ex.get_trial(2)["steps"]["features"]["reused_from"] == 1


def test_corrupt_output_repaired_in_a_worker_process_warns_once_on_the_client(
    log: Path, dp_log: Any
) -> None:
    ex = daskperiment.Experiment(id="cache_pj")
    result = build(ex, log)
    ex.set_parameters(a=1, b=2)
    first = result.compute(seed=1, scheduler="processes")
    calls(log)
    oid = persisted(ex, 1, "features")
    flip_bytes(object_file(ex, oid))
    dp_log.clear()

    assert result.compute(seed=1, scheduler="processes") == first
    assert calls(log) == {"features": 1, "score": 1}
    warnings = [m for m in dp_log.messages("WARNING") if "cannot be read" in m]
    assert len(warnings) == 1 and "features" in warnings[0]
    np.testing.assert_array_equal(ex.store.get(oid), ex.get_persisted("features", 1))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A small process cluster for the module, started away from every test's store."""
    with process_cluster(
        tmp_path_factory.mktemp("cluster"), n_workers=1, threads_per_worker=2
    ) as client:
        yield client


def test_chain_resolution_and_repair_on_a_distributed_cluster(
    client: Any, log: Path, dp_log: Any
) -> None:
    ex = daskperiment.Experiment(id="cache_pj")
    result = build(ex, log)
    ex.set_parameters(a=1, b=2)
    first = result.compute(seed=1, scheduler=client)
    assert calls(log) == {"prepare": 1, "features": 1, "score": 1}

    assert result.compute(seed=2, scheduler=client) == first
    assert calls(log) == {"score": 1}
    assert REUSE.format("features", 1) in dp_log.messages("INFO")

    flip_bytes(object_file(ex, persisted(ex, 1, "features")))
    dp_log.clear()
    assert result.compute(seed=3, scheduler=client) == first
    assert calls(log) == {"features": 1, "score": 1}
    assert len([m for m in dp_log.messages("WARNING") if "cannot be read" in m]) == 1


def test_pulled_trials_make_their_cached_steps_reusable(log: Path, dp_log: Any) -> None:
    origin = daskperiment.Experiment(id="pulled_pj", backend=Path("origin"))
    result = build(origin, log)
    origin.set_parameters(a=1, b=2)
    first = result.compute()
    calls(log)

    here = daskperiment.Experiment(id="pulled_pj", backend=Path("here"))
    here.pull(Path("origin"))
    result = build(here, log)
    here.set_parameters(a=1, b=2)
    assert result.compute() == first
    assert calls(log) == {"score": 1}
    assert REUSE.format("features", 1) in dp_log.messages("INFO")
