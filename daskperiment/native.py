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
- where the trial runs: ``dask.compute(r)`` / ``r.persist()`` on dask's default scheduler
  (no ``scheduler=``, none configured, no active Client) run a lone trial on the calling
  thread, its steps on the scheduler ``r.compute()`` picks (:class:`TrialScheduler`), with
  the keywords given (``num_workers=``); so its cost is ``r.compute()``'s plus dask's own
  work for any ``dask.compute`` call. Several trials in one call run concurrently on dask's
  threads, as before. A trial task that dask runs on the very thread that took the graph
  (``scheduler="sync"``, configured or given) runs its steps synchronously too, as
  ``r.compute(scheduler="sync")`` does; elsewhere (``scheduler="threads"``: one pool thread
  hand-off; ``"processes"``: the trial in a worker process) its steps run on dask's default
  threads, and under distributed on the cluster;
- a store living only in the client's memory is not reachable from worker processes: the
  trial then fails with :class:`~daskperiment.errors.StoreUnreachable`. Use a path or URL.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from dask._task_spec import Task
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from dask.threaded import get as threaded_get

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

    __slots__ = ("experiment", "result", "values", "keys", "seed", "pid", "thread", "token")

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
        # The thread that took the graph: a task run there by dask ran synchronously.
        self.thread = threading.get_ident() if pid is None else None
        # dask tokenizes graphs it computes; pickling the experiment for that is slow. Each
        # task (its parameter values taken) is a new token, so dask never reuses a stale one.
        self.token = uuid.uuid4().hex
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

    def __dask_tokenize__(self) -> str:
        return self.token

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
            # Run by dask.compute(..., scheduler="sync") (or a graph embedding the result):
            # the steps run synchronously too, as result.compute(scheduler="sync") runs them.
            ran_here = os.getpid() == self.pid and threading.get_ident() == self.thread
            return self._run(TrialRun, {"scheduler": "sync"} if ran_here else {})
        with client as c:  # steps run on the cluster; this task secedes meanwhile
            return self._run(TrialRun, {"scheduler": c.get})

    def run_here(self, dask_kwargs: Mapping[str, Any]) -> Any:
        """Run the trial on the calling thread, its steps on the scheduler ``result.compute``
        picks for ``dask_kwargs`` (what :class:`TrialScheduler` does)."""
        from .trial import TrialRun

        return self._run(TrialRun, dict(dask_kwargs))

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


def trial_graph(result: Any) -> HighLevelGraph:
    """The graph dask gets for an ``@ex.result`` output: one task running its trial."""
    from . import trialgraph
    from .record import declaration_order

    ex = result._experiment
    registry = ex._parameters
    # dask asks for .dask several times per compute: the TrialGraph is kept between calls
    found = trialgraph.trial_graph(result, registry.by_key).parameters
    values = registry.resolve(found, None)  # ParameterUndefined now, before any trial
    seed, thread = ex._default_seed, threading.get_ident()
    # (parameter values, seed, thread, graph) of the last graph dask took, kept on the result
    taken = result._taken
    if taken is not None and _same(taken, values, seed, thread):
        return taken[3]  # the very same values: the same task (and token) again
    keys = {key: name for name, key in found.items()}
    ordered = declaration_order(values, registry.names)
    task = TrialTask(ex, result, ordered, keys, seed)
    layer = {result.key: Task(result.key, task)}
    graph = HighLevelGraph.from_collections(result.key, layer, dependencies=())
    object.__setattr__(result, "_taken", (values, seed, thread, graph))
    return graph


def _same(taken: tuple[Any, ...], values: dict[str, Any], seed: Any, thread: int) -> bool:
    """Whether a graph taken before holds these very parameter objects (identity, so a
    changed value, even an equal one set again, builds a new task), seed and thread."""
    old, old_seed, old_thread, _ = taken
    if old_seed != seed or old_thread != thread or old.keys() != values.keys():
        return False
    return all(old[name] is value for name, value in values.items())


class TrialScheduler:
    """The default scheduler of an ``@ex.result`` output (its ``__dask_scheduler__``).

    ``dask.compute(r)`` with no ``scheduler=``, no configured scheduler and no active
    Client asks the collections for theirs. When the graph is one trial task, the trial runs
    right here, on the calling thread, its steps on the scheduler ``r.compute()`` would pick
    (dask's threads, or ``scheduler=``/``num_workers=`` style keywords passed through): no
    task hand-off to a pool thread. Any other graph (several trials, other collections) goes
    to dask's threaded scheduler, as for any ``dask.delayed`` object.

    It compares equal to dask's threaded ``get`` (``dask.delayed``'s default), so
    ``dask.compute(r, other_delayed)`` is not refused as mixing default schedulers.
    """

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        graph = dsk if isinstance(dsk, Mapping) else dsk.__dask_graph__()
        task = _lone_trial(graph)
        if task is None:
            return threaded_get(graph, keys, **kwargs)
        value = task.run_here(kwargs)
        return (value,) if isinstance(keys, list) else value

    def __eq__(self, other: object) -> bool:
        return other is self or other is threaded_get or isinstance(other, TrialScheduler)

    def __hash__(self) -> int:
        return hash(threaded_get)

    def __repr__(self) -> str:
        return "TrialScheduler()"


def _lone_trial(graph: Mapping[Any, Any]) -> TrialTask | None:
    """The trial task when ``graph`` is exactly one trial and nothing else."""
    if len(graph) != 1:
        return None
    (node,) = graph.values()
    if isinstance(node, Task) and isinstance(node.func, TrialTask):
        if not node.args and not node.kwargs:
            return node.func
    return None


steps.RESULT_GRAPH[0] = trial_graph  # what ResultDelayed.dask returns
steps.RESULT_SCHEDULER[0] = TrialScheduler()  # what ResultDelayed.__dask_scheduler__ is

__all__ = ["StoreUnreachable", "TrialScheduler", "TrialTask", "trial_graph"]
