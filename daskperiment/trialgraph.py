"""The graph of one trial: the result's graph copied, its parameters found and bound, the
trial context injected, each step's value split from its records; and the scheduler that
computes it (``dask_kwargs`` as ``compute()`` takes them).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from typing import Any

import dask
import dask.threaded
from dask._task_spec import DataNode, GraphNode, Task, TaskRef, convert_legacy_graph
from dask.base import get_scheduler, named_schedulers
from dask.delayed import Delayed

from .parameter import KEY_PREFIX
from .steps import (
    TRIAL_KEY,
    StepCall,
    TrialContext,
)
from .steps import records_of as _records_of
from .steps import value_of as _value_of

_VALUE_SUFFIX = "~value"
_RECORD_SUFFIX = "~record"


class TrialGraph:
    """A private copy of a result's graph, rewritten for one trial.

    - parameter placeholders become the trial's values, the trial placeholder its context;
    - a task that is not a step but consumes a step's output gets the bare value through a
      small ``~value`` task (steps hand :class:`StepOutput` objects to each other);
    - a step whose record cannot reach the result through a chain of steps gets a
      ``~record`` task, so every step's record comes back to the client.
    """

    def __init__(self, result: Delayed, parameter_keys: Mapping[str, str]) -> None:
        self.key = result.key
        self.graph: dict[Any, GraphNode] = convert_legacy_graph(dict(result._dask))
        self.steps: dict[Any, StepCall] = {
            k: node.func
            for k, node in self.graph.items()
            if isinstance(node, Task) and isinstance(node.func, StepCall)
        }
        #: parameter name -> graph key, for the parameters of *this* experiment in the graph
        self.parameters: dict[str, Any] = {}
        for k in self.graph:
            if isinstance(k, str) and k.startswith(KEY_PREFIX) and k in parameter_keys:
                self.parameters[parameter_keys[k]] = k

    def specs(self) -> list[Any]:
        """The step definitions in the graph (each once)."""
        seen: dict[int, Any] = {}
        for call in self.steps.values():
            seen.setdefault(id(call.spec), call.spec)
        return list(seen.values())

    def build(
        self, values: Mapping[str, Any], trial: TrialContext | None, unique_keys: bool = True
    ) -> tuple[dict[Any, GraphNode], list[Any]]:
        """The graph of one computation and the keys to compute (the result first).

        ``self.graph`` is left untouched, so one TrialGraph can give the graphs of many
        trials. Within a trial every key gets a suffix unique to that trial
        (``unique_keys``): several trials of the same graph may run at once on one cluster,
        and a distributed scheduler must never mistake one trial's task for another's. A
        graph that only this thread computes (daskperiment/syncrun.py) needs no suffix.
        """
        graph = dict(self.graph)
        for name, key in self.parameters.items():
            graph[key] = DataNode(key, values[name])
        graph[TRIAL_KEY] = DataNode(TRIAL_KEY, trial)
        if trial is None:
            return graph, [self.key]
        self._unwrap_for_plain_consumers(graph)
        keys = [self.key, *self._record_tasks(graph)]
        if not unique_keys:
            return graph, keys
        suffix = f"-{uuid.uuid4().hex[:12]}"
        subs = {k: suffixed(k, suffix) for k in graph}
        graph = {subs[k]: node.substitute(subs, key=subs[k]) for k, node in graph.items()}
        return graph, [subs[k] for k in keys]

    def _unwrap_for_plain_consumers(self, graph: dict[Any, GraphNode]) -> None:
        steps = self.steps
        subs: dict[Any, Any] = {}
        for key, node in list(graph.items()):
            if key in steps or not (node.dependencies & steps.keys()):
                continue
            for dep in node.dependencies & steps.keys():
                if dep not in subs:
                    subs[dep] = value_key = suffixed(dep, _VALUE_SUFFIX)
                    graph[value_key] = Task(value_key, _value_of, TaskRef(dep))
            graph[key] = node.substitute(subs)

    def _record_tasks(self, graph: dict[Any, GraphNode]) -> list[Any]:
        """``~record`` tasks for the steps whose records do not ride along to the result."""
        steps = self.steps
        reached = set()
        todo = [self.key] if self.key in steps else []
        while todo:
            key = todo.pop()
            if key in reached:
                continue
            reached.add(key)
            todo.extend(dep for dep in graph[key].dependencies if dep in steps)
        extra = []
        for key in steps.keys() - reached:
            record_key = suffixed(key, _RECORD_SUFFIX)
            graph[record_key] = Task(record_key, _records_of, TaskRef(key))
            extra.append(record_key)
        return extra


#: The last few TrialGraphs built, by the result's graph: a trial of the same result (a loop
#: of ``r.compute()``) reuses its TrialGraph instead of converting and scanning the graph again.
_RECENT: dict[tuple[int, Any], tuple[Any, int, TrialGraph]] = {}
_RECENT_MAX = 8
_RECENT_LOCK = threading.Lock()


def trial_graph(result: Delayed, parameter_keys: Mapping[str, str]) -> TrialGraph:
    """The :class:`TrialGraph` of ``result``, reused while ``result``'s graph is the same object
    and the parameter registry names the same parameters (nothing added, none renamed)."""
    hlg = result._dask
    slot = (id(hlg), result.key)
    found = _RECENT.get(slot)
    if found is not None:
        held, size, graph = found
        if (
            held is hlg
            and size == len(parameter_keys)
            and all(parameter_keys.get(key) == name for name, key in graph.parameters.items())
        ):
            return graph
    graph = TrialGraph(result, parameter_keys)
    with _RECENT_LOCK:
        if len(_RECENT) >= _RECENT_MAX:
            _RECENT.pop(next(iter(_RECENT)))
        # The graph object is held, so its id cannot be reused by another while it is here.
        _RECENT[slot] = (hlg, len(parameter_keys), graph)
    return graph


def compute_graph(
    graph: dict[Any, GraphNode], keys: list[Any], dask_kwargs: Mapping[str, Any]
) -> list[Any]:
    """Run ``graph`` on the scheduler ``dask.compute`` would use; the values of ``keys``."""
    schedule, kwargs = resolve_scheduler(dask_kwargs)
    return list(schedule(graph, keys, **kwargs))


def resolve_scheduler(dask_kwargs: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The scheduler function ``dask.compute`` would use, and the keyword arguments left for it.

    The graph goes straight to the scheduler: it is already minimal (only what the result
    needs), so dask's collection optimizations would only cost time. The lookup imports
    ``distributed`` the first time (to find a running Client): a trial resolves it before
    starting its clock, so that import is not counted as the trial's Process Time.
    """
    kwargs = dict(dask_kwargs)
    for unused in ("optimize_graph", "traverse"):  # dask.compute's own options
        kwargs.pop(unused, None)
    scheduler, get = kwargs.pop("scheduler", None), kwargs.pop("get", None)
    schedule = None if get is not None else _named(scheduler)
    if schedule is None:
        schedule = get_scheduler(scheduler=scheduler, get=get)
    if schedule is None:
        schedule = dask.threaded.get  # the default scheduler of dask.delayed
    return schedule, kwargs


def _named(scheduler: Any) -> Any:
    """dask's function for a scheduler named ``"sync"``, ``"threads"``, ``"processes"``...
    (given, else configured), or None.

    What ``get_scheduler`` returns for these names, without its lookup of a distributed
    Client (only the name ``"distributed"`` uses it), which costs ~40 us per trial.
    """
    if scheduler is None:
        scheduler = dask.config.config.get("scheduler")  # a top-level setting: no parsing
    if isinstance(scheduler, str):
        return named_schedulers.get(scheduler.lower())
    return None


def suffixed(key: Any, suffix: str) -> Any:
    return (f"{key[0]}{suffix}", *key[1:]) if isinstance(key, tuple) else f"{key}{suffix}"
