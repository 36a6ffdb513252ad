"""A synchronous trial without dask's local scheduler.

``result.compute(scheduler="sync")`` runs a trial's graph on the calling thread, one task
after the other. dask's ``get_sync`` does that through its general local scheduler
(``dask.local.get_async``: ``dask.order``, a ready queue, an executor and its futures),
whose bookkeeping costs more than the few tasks of a typical trial graph themselves. When
nobody can tell the difference, :func:`run_trial` runs the graph here instead:

- the tasks run in a fixed order: depth first from the keys asked for, each task's
  dependencies in the order they were inserted in the graph, every task after all of its
  dependencies (dask.order may run independent branches in another order: only the
  ``started`` times of their steps, and which of two calls of one step is labelled
  ``name#2``, can tell);
- each task gets the values of its dependencies (``node(values)``, as dask's
  ``execute_task`` calls it) and is guarded exactly as :func:`daskperiment.guard.guard`
  guards it for dask (:class:`~daskperiment.guard.Guarded`), then the outputs are gathered
  as :func:`daskperiment.guard.gather` does at the end of a scheduled trial;
- a value is dropped as soon as the last task needing it has run (a big intermediate is not
  kept until the trial ends), as dask's scheduler releases it;
- an exception that is not a step's (guarded tasks turn those into a
  :class:`~daskperiment.guard.Failure`) propagates unchanged, as ``get_sync`` raises it.

dask's scheduler is still used whenever something could watch it (:func:`applies`): an
active ``dask.callbacks.Callback`` (``ProgressBar``, ``Profiler``, a user's own) must see
every task; keyword arguments for the scheduler (``callbacks=``, ``cache=``, ...) and the
``cache`` / ``rerun_exceptions_locally`` settings change what ``get_async`` does; and any
scheduler other than ``get_sync`` gets the graph as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dask.config
from dask._task_spec import GraphNode, Task
from dask.callbacks import Callback
from dask.local import get_sync

from .guard import Guarded, gather

#: keyword arguments get_sync takes without changing what it does (it drops num_workers)
_IGNORED = frozenset({"num_workers"})


def applies(schedule: Any, kwargs: Mapping[str, Any]) -> bool:
    """Whether ``schedule(graph, keys, **kwargs)`` may be replaced by :func:`run_trial`:
    dask's synchronous scheduler, given nothing that changes its behaviour, and no dask
    callback active to watch its tasks."""
    if schedule is not get_sync or not kwargs.keys() <= _IGNORED or Callback.active:
        return False
    settings = dask.config.config
    return settings.get("cache") is None and not settings.get("rerun_exceptions_locally")


def run_trial(graph: Mapping[Any, GraphNode], keys: list[Any]) -> Any:
    """The guarded, gathered outcome of a trial's ``graph`` (see the module docstring): the
    values of ``keys`` as a list, or the :class:`~daskperiment.guard.Failure` of a step."""
    return gather(*run(graph, keys, guarded=True))


def run(graph: Mapping[Any, GraphNode], keys: list[Any], guarded: bool = False) -> list[Any]:
    """The values of ``keys``, computing ``graph`` on this thread; every task guarded
    (:class:`~daskperiment.guard.Guarded`) when ``guarded``."""
    order, needed_by = _plan(graph, keys)
    wanted = set(keys)
    values: dict[Any, Any] = {}
    for key in order:
        node = graph[key]
        deps = node.dependencies
        if guarded and isinstance(node, Task):
            wrapped = Guarded(node)
            values[key] = wrapped(*[values[d] for d in wrapped.deps])
        else:
            values[key] = node({d: values[d] for d in deps})
        for dep in deps:
            needed_by[dep] -= 1
            if not needed_by[dep] and dep not in wanted:
                del values[dep]  # released: nothing left to run needs it
    return [values[k] for k in keys]


def _plan(graph: Mapping[Any, GraphNode], keys: list[Any]) -> tuple[list[Any], dict[Any, int]]:
    """The keys to run, dependencies first, and for each key how many tasks need it."""
    position = {k: i for i, k in enumerate(graph)}
    order: list[Any] = []
    needed_by: dict[Any, int] = {}
    entered: set[Any] = set()
    for root in keys:
        if root in needed_by:
            continue
        _require(graph, root, keys)
        needed_by[root] = 0
        entered.add(root)
        stack = [(root, iter(_deps(graph[root], position)))]
        while stack:
            key, deps = stack[-1]
            dep = next(deps, _DONE)
            if dep is _DONE:
                stack.pop()
                entered.discard(key)
                order.append(key)
                continue
            if dep in entered:
                raise RuntimeError(f"Cycle detected in the trial's graph at key {dep!r}")
            if dep in needed_by:
                needed_by[dep] += 1
                continue
            _require(graph, dep, [key])
            needed_by[dep] = 1
            entered.add(dep)
            stack.append((dep, iter(_deps(graph[dep], position))))
    return order, needed_by


_DONE = object()


def _deps(node: GraphNode, position: Mapping[Any, int]) -> list[Any]:
    deps = node.dependencies
    if len(deps) < 2:
        return list(deps)
    return sorted(deps, key=lambda d: position.get(d, -1))  # a missing one: ValueError next


def _require(graph: Mapping[Any, GraphNode], key: Any, dependents: list[Any]) -> None:
    if key not in graph:
        raise ValueError(f"Missing dependency {key!r} for dependents {dependents}")
