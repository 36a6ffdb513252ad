"""The in-order executor of synchronous trials (daskperiment/syncrun.py) on plain dask graphs,
and the scheduler lookup that decides whether a trial uses it (daskperiment/trialgraph.py).
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

import dask
import dask.local
import dask.threaded
import pytest
from dask._task_spec import Alias, DataNode, List, Task, TaskRef
from dask.base import get_scheduler

from daskperiment import syncrun
from daskperiment.trialgraph import resolve_scheduler


class Big:
    """Stands for a big intermediate (an object a weak reference can watch)."""

    def __init__(self, n: int) -> None:
        self.n = n


# ---------------------------------------------------------------------------------------
# The executor itself, on plain dask graphs
# ---------------------------------------------------------------------------------------


def add(*xs: Any) -> Any:
    return sum(xs)


def scaled_sum(xs: list[int], by: int) -> int:
    return sum(xs) * by


def test_run_computes_every_kind_of_node_as_get_sync_does() -> None:
    graph = {
        "x": DataNode("x", 1),
        "y": Task("y", add, TaskRef("x"), 10),
        "z": Alias("z", "y"),
        "w": Task("w", scaled_sum, List(TaskRef("x"), TaskRef("z")), by=TaskRef("y")),
    }
    assert syncrun.run(graph, ["w", "z"]) == list(dask.local.get_sync(graph, ["w", "z"]))
    assert syncrun.run(graph, ["w"]) == [(1 + 11) * 11]


def test_run_order_is_depth_first_in_insertion_order() -> None:
    ran: list[str] = []

    def note(name: str) -> Callable[..., str]:
        def task(*_: Any) -> str:
            ran.append(name)
            return name

        return task

    graph = {
        "z": Task("z", note("z")),
        "c": Task("c", note("c"), TaskRef("a")),
        "a": Task("a", note("a")),
        "d": Task("d", note("d"), TaskRef("c"), TaskRef("z")),
    }
    syncrun.run(graph, ["d"])
    assert ran == ["z", "a", "c", "d"]


def test_run_releases_values_nothing_needs_any_more() -> None:
    watched: list[Any] = []

    def make() -> Big:
        big = Big(3)
        watched.append(weakref.ref(big))
        return big

    def alive_then(n: int) -> bool:
        gc.collect()
        return watched[0]() is not None

    graph = {
        "big": Task("big", make),
        "n": Task("n", lambda b: b.n, TaskRef("big")),
        "check": Task("check", alive_then, TaskRef("n")),
    }
    assert syncrun.run(graph, ["check"]) == [False]
    watched.clear()
    kept = syncrun.run(graph, ["check", "big"])  # asked for: kept to the end
    assert kept[0] is True and isinstance(kept[1], Big)


def test_run_propagates_a_task_exception_itself() -> None:
    error = ZeroDivisionError("boom")

    def fail() -> None:
        raise error

    graph = {"f": Task("f", fail), "g": Task("g", add, TaskRef("f"))}
    with pytest.raises(ZeroDivisionError) as info:
        syncrun.run(graph, ["g"])
    assert info.value is error


def test_run_reports_cycles_and_missing_dependencies() -> None:
    cycle = {"a": Task("a", add, TaskRef("b")), "b": Task("b", add, TaskRef("a"))}
    with pytest.raises(RuntimeError, match="Cycle detected"):
        syncrun.run(cycle, ["a"])
    missing = {"a": Task("a", add, TaskRef("nowhere"))}
    with pytest.raises(ValueError, match="Missing dependency 'nowhere'"):
        syncrun.run(missing, ["a"])


def test_run_handles_a_long_chain_without_recursion() -> None:
    graph: dict[Any, Any] = {"k0": DataNode("k0", 0)}
    for i in range(1, 5000):
        graph[f"k{i}"] = Task(f"k{i}", add, TaskRef(f"k{i - 1}"), 1)
    assert syncrun.run(graph, ["k4999"]) == [4999]


# ---------------------------------------------------------------------------------------
# Resolving the scheduler
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [
        {"scheduler": "sync"},
        {"scheduler": "Single-Threaded"},
        {"scheduler": "threads", "num_workers": 2},
        {"scheduler": "processes"},
        {"scheduler": dask.local.get_sync},
        {},
    ],
)
def test_resolve_scheduler_answers_what_dask_answers(given: dict[str, Any]) -> None:
    expected = get_scheduler(scheduler=given.get("scheduler")) or dask.threaded.get
    schedule, kwargs = resolve_scheduler({**given, "optimize_graph": False})
    assert schedule is expected
    assert kwargs == {k: v for k, v in given.items() if k != "scheduler"}
    with dask.config.set(scheduler="sync"):
        assert resolve_scheduler({})[0] is dask.local.get_sync
        assert resolve_scheduler({"scheduler": "threads"})[0] is dask.threaded.get


def test_resolve_scheduler_refuses_what_dask_refuses() -> None:
    with pytest.raises(ValueError, match="Expected one of"):
        resolve_scheduler({"scheduler": "no-such-scheduler"})
    with pytest.raises(RuntimeError, match="no Client active"):
        resolve_scheduler({"scheduler": "distributed"})
    with pytest.raises(TypeError):
        resolve_scheduler({"get": dask.local.get_sync})
