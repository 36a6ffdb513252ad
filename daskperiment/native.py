"""Trials through dask's own entry points: ``dask.compute``, ``persist``, ``client.compute``.

Dask asks a collection for its graph (``__dask_graph__``) whenever it computes, persists or
embeds it. An ``@ex.result`` output answers with a graph of ONE task under its own key: the
task runs a whole trial (:class:`daskperiment.trial.TrialRun`) and returns its result. So
every entry point records a trial exactly as ``r.compute()`` does:

- ``dask.compute(r)``, ``dask.compute(r1, r2)`` (one trial per distinct result, of one or
  several experiments), ``r.persist()``, ``dask.persist(r)``;
- ``client.compute(r)`` / ``client.persist(r)`` (the trial runs on a worker, which writes to
  the store; its steps run on the cluster through ``worker_client``);
- ``dask.delayed(f)(r)``: ``r``'s trial runs when the larger graph is computed.

Choices (docs/distributed.md, "dask's own entry points"):

- parameter values (defaults applied) and the default seed are taken when dask takes the
  graph: when ``dask.compute`` is called, or when a larger graph embeds the result. An
  undefined parameter raises there, before any trial id is used;
- the same result object given twice (``dask.compute(r, r)``) is one task, hence one trial;
- a store living only in the client's memory is not reachable from worker processes: the
  trial then fails with :class:`~daskperiment.errors.StoreUnreachable`. Use a path or URL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dask._task_spec import Task
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from daskperiment_store import MemoryBackend, Store

from . import steps
from .errors import DaskperimentError


class StoreUnreachable(DaskperimentError, RuntimeError):
    """A trial started on a worker cannot reach a store that lives in the client's memory."""

    def __init__(self, experiment_id: str) -> None:
        self.experiment_id = experiment_id
        super().__init__(
            f"experiment {experiment_id!r} keeps its store in the client's memory, which a "
            "worker process cannot reach: give Experiment(backend=...) a path or a URL, or "
            "call result.compute() in the client"
        )


class TrialTask:
    """The function of a result's one-task graph: runs one trial and returns its result."""

    __slots__ = ("experiment", "result", "values", "keys", "seed", "pid")

    def __init__(
        self,
        experiment: Any,
        result: Delayed,
        values: Mapping[str, Any],
        keys: Mapping[str, str],
        seed: int | None,
        pid: int | None = None,
    ) -> None:
        self.pid = os.getpid() if pid is None else pid  # the client's process
        self.experiment = experiment
        self.result = Delayed(result.key, result._dask)  # plain: pickles without the facade
        self.values = dict(values)
        self.keys = dict(keys)
        self.seed = seed

    def __reduce__(self) -> tuple[Any, ...]:
        state = (self.experiment, self.result, self.values, self.keys, self.seed, self.pid)
        return (TrialTask, state)

    def __repr__(self) -> str:
        return f"trial of {self.experiment.id}"

    @property
    def __name__(self) -> str:  # dask names tasks after their function
        return f"trial-{self.experiment.id}"

    def __call__(self) -> Any:
        from .trial import TrialRun

        ex = self.experiment
        if os.getpid() != self.pid and _in_memory(ex._target):
            raise StoreUnreachable(ex.id)
        client = _worker_client()
        if client is None:
            return self._run(TrialRun, {})
        with client as c:  # steps run on the cluster; this task secedes meanwhile
            return self._run(TrialRun, {"scheduler": c.get})

    def _run(self, run_type: Any, dask_kwargs: dict[str, Any]) -> Any:
        run = run_type(
            self.experiment._session(), self.result, self.values, self.seed, dask_kwargs,
            parameter_keys=self.keys,
        )  # fmt: skip
        return run.run()


def _in_memory(target: Any) -> bool:
    """Whether a store target exists only in one process's memory (or is a worker's
    stand-in, None, for such a store)."""
    if target is None or isinstance(target, MemoryBackend):
        return True
    if isinstance(target, Store):
        return _in_memory(target.backend)
    url = target if isinstance(target, str) else getattr(target, "url", "")
    return isinstance(url, str) and url.startswith("memory://")


def _worker_client() -> Any:
    """``distributed.worker_client()`` inside a distributed worker's task, else None."""
    try:
        from distributed import get_worker, worker_client
    except ImportError:
        return None
    try:
        get_worker()
    except ValueError:
        return None
    return worker_client()


#: result key -> its parameters (name -> placeholder key); keys are unique per built result
_FOUND: dict[Any, dict[str, Any]] = {}


def trial_graph(result: Any) -> HighLevelGraph:
    """The graph dask gets for an ``@ex.result`` output: one task running its trial."""
    from .record import declaration_order
    from .trialgraph import TrialGraph

    ex = result._experiment
    registry = ex._parameters
    # dask asks for .dask several times per compute; a result's graph never changes
    found = _FOUND.get(result.key)
    if found is None:
        found = TrialGraph(result, registry.by_key).parameters
        if len(_FOUND) >= 1024:
            _FOUND.clear()
        _FOUND[result.key] = found
    values = registry.resolve(found, None)  # ParameterUndefined now, before any trial
    values = declaration_order(values, registry.names)
    keys = {key: name for name, key in found.items()}
    task = TrialTask(ex, result, values, keys, ex._default_seed)
    layer = {result.key: Task(result.key, task)}
    return HighLevelGraph.from_collections(result.key, layer, dependencies=())


steps.RESULT_GRAPH[0] = trial_graph  # what ResultDelayed.dask returns

__all__ = ["StoreUnreachable", "TrialTask", "trial_graph"]
