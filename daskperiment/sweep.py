"""Sweeps: many trials of one result, each with its own parameters, run at the same time.

``ex.sweep(result, grid={"a": [1, 2], "b": [3, 4]})`` (the cartesian product, the last name
varying fastest) or ``ex.sweep(result, trials=[{"a": 1}, ...])``. Each parameter set is an
ordinary trial: its own id, seed, parameters, step records, metrics and persisted outputs,
recorded exactly as ``compute()`` records one. How a sweep runs:

1. Every trial's parameters are resolved first (names not given take the experiment's
   current values or defaults; ``set_parameters`` is neither read later nor changed), so an
   unknown or undefined parameter raises before any trial id is used.
2. The trials are started in order: each gets its id (atomic create of its ref, as in
   ``compute()``), a *running* record and its own copy of the graph, with keys unique to it.
3. All trials' graphs go to the scheduler as one graph, so they run concurrently: on the
   active ``distributed.Client`` if there is one, else on dask's default (or given)
   scheduler. Every task is *guarded*: an exception in a step becomes a :class:`Failure`
   value that flows to the trial's end instead of stopping the whole computation, so a
   failed trial is recorded as failed and the others go on.
4. Each trial is finished (final record, purity check, history row) as soon as its own
   tasks are done, while the others still run. A worker dying under a trial's step is a
   failure of that trial only (distributed retries the step elsewhere first, see
   docs/distributed.md). An interrupt (``KeyboardInterrupt``) or any error of the scheduler
   itself records every unfinished trial as failed, then propagates.

Seeds: ``seed=`` is a *sweep seed*: trial ``i`` (0-based, in sweep order) gets
:func:`derive_seed(seed, i) <derive_seed>`, the same on every machine; ``seeds=`` gives each
trial's seed explicitly (to rerun recorded trials); with neither, each trial draws one.
Each trial's seed is recorded, and rerunning with it reproduces the trial under any
scheduler (steps seed ``random`` and numpy before they run, wherever they run). Those
generators are one per process, so each process runs one step of a sweep at a time (a lock
around every task): several steps at once in one process's threads would draw from each
other's seeds. Parallelism therefore comes from processes (a ``distributed.Client``,
``scheduler="processes"``); ``one_step_per_process=False`` lifts the lock for steps that
draw from no global generator.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import dask.threaded
from dask._task_spec import GraphNode
from dask.base import get_scheduler
from dask.delayed import Delayed

import daskperiment_store as store

from . import cache, seeding
from .guard import HOLDING, Failure, add_gather, guard
from .log import logger
from .steps import StepOutput
from .trial import FAILED, TrialRun, describe_exception
from .trialbar import trial_bar

if TYPE_CHECKING:
    import pandas as pd

    from .trialsession import Session

SWEEP_SEED_TAG = b"daskperiment.sweep-seed/1"


# ---------------------------------------------------------------------------------------
# Parameter sets and seeds
# ---------------------------------------------------------------------------------------


def expand(
    grid: Mapping[str, Iterable[Any]] | None, trials: Iterable[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """The parameter sets of a sweep: the grid's cartesian product, or ``trials`` as given."""
    if (grid is None) == (trials is None):
        raise TypeError(
            "sweep takes exactly one of grid= (a dict of lists) or trials= (a list of dicts)"
        )
    if trials is not None:
        if isinstance(trials, Mapping) or isinstance(trials, str | bytes):
            raise TypeError(f"trials must be a list of parameter dicts, got {trials!r}")
        out = []
        for i, params in enumerate(trials):
            if not isinstance(params, Mapping):
                raise TypeError(f"trials[{i}] must be a dict of parameter values, got {params!r}")
            out.append(dict(params))
        return out
    if not isinstance(grid, Mapping):
        raise TypeError(f"grid must be a dict of parameter name -> list of values, got {grid!r}")
    values = []
    for name, options in grid.items():
        if isinstance(options, str | bytes | Mapping) or not isinstance(options, Iterable):
            raise TypeError(
                f"grid[{name!r}] must be a list of values to try, got {options!r} "
                f"(write [{options!r}] for a single value)"
            )
        values.append(list(options))
    return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*values)]


def derive_seed(sweep_seed: int, index: int) -> int:
    """The seed of trial ``index`` (0-based) of a sweep run with ``seed=sweep_seed``.

    The first 8 bytes of BLAKE2b over a fixed tag and both numbers, below 2**31: independent
    of the platform, the Python version and ``PYTHONHASHSEED``, so a sweep seed gives the
    same trial seeds everywhere.
    """
    sweep_seed = seeding.validate_seed(sweep_seed)
    data = SWEEP_SEED_TAG + b"\0%d\0%d" % (sweep_seed, index)
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return int.from_bytes(digest, "big") % 2**31


def trial_seeds(
    n: int, seed: int | None, seeds: Sequence[int] | None
) -> list[tuple[int | None, str]]:
    """``(seed or None to draw, how it was chosen)`` for each of ``n`` trials."""
    if seeds is not None:
        if seed is not None:
            raise TypeError("give either seed= (a sweep seed) or seeds= (one per trial), not both")
        seeds = list(seeds)
        if len(seeds) != n:
            raise ValueError(f"seeds= has {len(seeds)} seeds for {n} trials; give one per trial")
        return [(seeding.validate_seed(s), "given") for s in seeds]
    if seed is not None:
        return [(derive_seed(seed, i), "derived") for i in range(n)]
    return [(None, "drawn")] * n


# ---------------------------------------------------------------------------------------
# One trial of a sweep
# ---------------------------------------------------------------------------------------


class SweepTrial(TrialRun):
    """A trial run in two halves: :meth:`start` (id, running record, graph) and
    :meth:`succeed` / :meth:`fail` once its tasks are done."""

    def __init__(
        self,
        session: Session,
        result: Delayed,
        params: Mapping[str, Any],
        seed: int | None,
        seed_note: str,
        info: dict[str, Any],
        use_cache: bool,
    ) -> None:
        super().__init__(session, result, params, seed, None, use_cache, extra={"sweep": info})
        self.seed_note = seed_note
        self.info = info
        self.done = False
        self.started_at = time.time()
        self._failure: Failure | None = None

    def start(
        self, st: store.Store, token: str, exclusive: bool = False
    ) -> tuple[dict[Any, GraphNode], Any]:
        """Begin the trial (:meth:`TrialRun.begin`) and guard its graph; returns the graph
        and its last key."""
        graph, keys, context = self.begin(st)
        graph = guard(cache.prepare(st, self.experiment_id, graph, keys, context), exclusive)
        last = f"trial-{self.trial_id}-{token}"
        add_gather(graph, keys, last)
        return graph, last

    def _log_seed(self) -> None:
        if self.seed_note == "derived":
            logger.info(
                "Random seed is derived from the sweep's seed %d: %d",
                self.info["seed"],
                self.seed,
            )
        else:
            super()._log_seed()

    def succeed(self, st: store.Store, outputs: list[Any]) -> None:
        """Record the trial from its outputs (the result's first)."""
        self.record_success(st, tuple(outputs), _span(outputs))
        self.done = True
        logger.info("Finished Experiment (trial id=%d)", self.trial_id)

    def fail(self, st: store.Store, failure: Failure | BaseException) -> None:
        """Record the trial as failed: a step's :class:`Failure`, or an error from outside
        its steps (a dead worker, an interrupt, the scheduler)."""
        if isinstance(failure, Failure):
            self._failure = failure
            elapsed = max(failure.at - self.started_at, 0.0)
        else:
            elapsed = time.time() - self.started_at
        self.record_failure(st, failure, elapsed)
        self.done = True
        logger.warning(
            "Failed Experiment (trial id=%d): %s",
            self.trial_id,
            self._failure.description if self._failure else describe_exception(failure),  # type: ignore[arg-type]
        )

    def _finalize(
        self, st: store.Store, record: dict[str, Any], running_oid: str, elapsed: float
    ) -> None:
        if self._failure is not None and record.get("status") == FAILED:
            # The error happened in a worker: keep its own description and traceback.
            record["description"] = self._failure.description
            record["traceback"] = self._failure.traceback
        super()._finalize(st, record, running_oid, elapsed)


def _span(outputs: list[Any]) -> float:
    """Wall time from the first step's start to the last step's end (queueing excluded)."""
    first, *extra = outputs
    records = dict(first.records) if type(first) is StepOutput else {}
    for more in extra:
        records.update(more)
    starts = [r["started"] for r in records.values() if r.get("started")]
    ends = [r["started"] + (r.get("duration") or 0) for r in records.values() if r.get("started")]
    return max(ends) - min(starts) if starts else 0.0


# ---------------------------------------------------------------------------------------
# Running the trials together
# ---------------------------------------------------------------------------------------


class Sweep:
    """The trials of one sweep and the computation that runs them (see the module docstring)."""

    def __init__(
        self,
        session: Session,
        result: Delayed,
        param_sets: list[dict[str, Any]],
        seeds: list[tuple[int | None, str]],
        sweep_seed: int | None,
        use_cache: bool = True,
        progress: bool | None = None,
        dask_kwargs: Mapping[str, Any] | None = None,
        one_step_per_process: bool = True,
    ) -> None:
        self.session = session
        # A sweep started from inside a step already holds its process's step lock.
        self.exclusive = one_step_per_process and not getattr(HOLDING, "active", False)
        self.token = uuid.uuid4().hex[:12]
        n = len(param_sets)
        # Every trial resolves its parameters here, before any of them is allocated.
        self.trials = [
            SweepTrial(
                session,
                result,
                params,
                trial_seed,
                note,
                {"id": self.token, "index": i, "size": n, "seed": sweep_seed},
                use_cache,
            )
            for i, (params, (trial_seed, note)) in enumerate(zip(param_sets, seeds, strict=True))
        ]
        self.progress = _interactive() if progress is None else bool(progress)
        self.dask_kwargs = dict(dask_kwargs or {})
        self.errors: list[BaseException] = []
        self.st: store.Store | None = None

    def run(self) -> list[int]:
        """Run every trial; returns their ids in sweep order."""
        if not self.trials:
            return []
        self.st = st = self.session.store_for_writing()
        try:
            graph, by_key = self._start_all(st)
            now = time.time()
            for t in self.trials:
                t.started_at = now  # a failure's Process Time counts from here
            if by_key:
                self._compute(graph, by_key)
        except BaseException as exc:
            for t in self.trials:
                if t.trial_id is not None and not t.done:
                    self._finish(t, exc)
            raise
        if self.errors:
            raise self.errors[0]
        return [t.trial_id for t in self.trials if t.trial_id is not None]

    def _start_all(self, st: store.Store) -> tuple[dict[Any, GraphNode], dict[Any, SweepTrial]]:
        graph: dict[Any, GraphNode] = {}
        by_key: dict[Any, SweepTrial] = {}
        for t in self.trials:
            try:
                trial_graph, last = t.start(st, self.token, self.exclusive)
            except Exception as exc:
                if t.trial_id is None:  # nothing allocated: the store itself is failing
                    raise
                self._finish(t, exc)
                continue
            graph.update(trial_graph)
            by_key[last] = t
        return graph, by_key

    def _compute(self, graph: dict[Any, GraphNode], by_key: dict[Any, SweepTrial]) -> None:
        kwargs = dict(self.dask_kwargs)
        for unused in ("optimize_graph", "traverse"):  # dask.compute's own options
            kwargs.pop(unused, None)
        schedule = get_scheduler(scheduler=kwargs.pop("scheduler", None))
        if schedule is None:
            schedule = dask.threaded.get  # the default scheduler of dask.delayed
        client = getattr(schedule, "__self__", None)
        distributed = sys.modules.get("distributed")
        if distributed is not None and isinstance(client, distributed.Client):
            self._run_distributed(client, graph, by_key, kwargs)
        else:
            self._run_local(schedule, graph, by_key, kwargs)

    def _finish(self, t: SweepTrial, outcome: Any) -> None:
        """Record one trial from its gathered outputs, its Failure or an exception."""
        st = self.st
        assert st is not None  # set by run() before any trial starts
        try:
            if isinstance(outcome, Failure | BaseException):
                t.fail(st, outcome)
            else:
                t.succeed(st, outcome)
        except Exception as exc:  # noqa: BLE001 - the other trials must still be recorded
            t.done = True
            logger.error("Trial %s could not be recorded: %s", t.trial_id, exc)
            self.errors.append(exc)

    def _run_local(
        self,
        schedule: Any,
        graph: dict[Any, GraphNode],
        by_key: dict[Any, SweepTrial],
        kwargs: dict[str, Any],
    ) -> None:
        from dask.callbacks import Callback

        def posttask(key: Any, result: Any, dsk: Any, state: dict, worker_id: Any) -> None:
            t = by_key.get(key)
            if t is not None:
                self._finish(t, result)
                # The trial is recorded: let its result go instead of holding every
                # trial's result until the whole sweep ends.
                state["cache"][key] = None

        # As dask.compute does: callbacks active around the sweep (a user's ProgressBar,
        # say) apply to this computation only, not to schedulers nested inside tasks.
        active, Callback.active = Callback.active, set()
        callbacks = [*active, (None, None, None, posttask, None)]
        if self.progress:
            from dask.diagnostics import ProgressBar

            callbacks.append(ProgressBar()._callback)
        try:
            schedule(graph, list(by_key), callbacks=callbacks, **kwargs)
        finally:
            Callback.active = active

    def _run_distributed(
        self,
        client: Any,
        graph: dict[Any, GraphNode],
        by_key: dict[Any, SweepTrial],
        kwargs: dict[str, Any],
    ) -> None:
        from distributed import as_completed

        futures = client.get(graph, list(by_key), sync=False, **kwargs)
        bar = None
        if self.progress:
            bar = trial_bar(len(futures), _in_notebook() and _has_module("ipywidgets"))
        try:
            # Results are fetched by the client's event loop as tasks finish, not one
            # blocking round trip per trial from here.
            done = as_completed(futures, with_results=True, raise_errors=False)
            for future, result in done:
                if future.status == "error":
                    result = result[1]  # (type, exception, traceback): KilledWorker, ...
                self._finish(by_key[future.key], result)
                future.release()
                if bar is not None:
                    bar.update(failed=isinstance(result, Failure | BaseException))
        finally:
            pending = [f for f in futures if not f.done()]
            if pending:
                client.cancel(pending)
            if bar is not None:
                bar.close()


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # sys.modules[name] = None: an import blocked on purpose
        return False


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    return get_ipython is not None and "ipykernel" in sys.modules and get_ipython() is not None


def _interactive() -> bool:
    """Whether a progress bar would be seen: a notebook, or stdout is a terminal."""
    if _in_notebook():
        return True
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty())


def run_sweep(
    session: Session,
    result: Delayed,
    grid: Mapping[str, Iterable[Any]] | None = None,
    *,
    trials: Iterable[Mapping[str, Any]] | None = None,
    seed: int | None = None,
    seeds: Sequence[int] | None = None,
    progress: bool | None = None,
    verbose: bool = False,
    cache: bool = True,
    one_step_per_process: bool = True,
    **dask_kwargs: Any,
) -> pd.DataFrame:
    """Run one trial of ``result`` per parameter set, concurrently; their history rows.

    See :meth:`daskperiment.Experiment.sweep` and the module docstring.
    ``one_step_per_process=False`` lets a process's threads run several steps at once: only
    for steps that draw no random numbers from ``random`` or numpy's global generator.
    """
    if not isinstance(result, Delayed):
        raise TypeError(
            f"sweep runs the output of an @ex.result step (a dask Delayed), got {result!r}"
        )
    param_sets = expand(grid, trials)
    if seed is None and seeds is None:
        seed = session.default_seed
    chosen = trial_seeds(len(param_sets), seed, seeds)
    sweep_seed = seeding.validate_seed(seed) if seed is not None and seeds is None else None
    run = Sweep(
        session,
        result,
        param_sets,
        chosen,
        sweep_seed,
        cache,
        progress,
        dask_kwargs,
        one_step_per_process,
    )
    try:
        ids = run.run()
    finally:
        # A sweep is a natural batch: its rows join the history index now (one
        # compare-and-swap), rather than only at the next periodic flush or at exit.
        session.flush_index()
    return session.history(verbose).loc[ids]
