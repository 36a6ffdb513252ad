"""The :class:`Experiment`: parameters, steps and trials of one experiment, kept in a store."""

from __future__ import annotations

import numbers
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import daskperiment_store as store
from daskperiment_store import Link, Store

# Opening and reading the history need these; steps, trials, metrics... import where used.
from . import history, recent, teams
from .compat import metric_key_alias
from .errors import (
    DamagedTrial,
    MetricNotFound,
    NotInTrial,
    PersistedNotFound,
    StepNotFound,
    TrialNotFound,
)
from .history import list_experiments  # noqa: F401 - re-exported (daskperiment.list_experiments)
from .html import TrialInfo, experiment_html
from .ids import validate_experiment_id
from .location import StoreHandle, experiment_target, worker_target
from .log import log_diff, logger
from .parameter import UNDEFINED, Parameter, ParameterRegistry
from .provenance.methods import ProvenanceMethods
from .reads import read_parameters, read_value
from .record import effective, trial_ref
from .running import CURRENT_STEP
from .session import ExperimentState, _register_exit_flush
from .sources import SourceMethods

if TYPE_CHECKING:
    from .steps import StepSpec

_INSTANCES: dict[tuple[str, Any], Experiment] = {}
_INSTANCES_LOCK = threading.Lock()


_validate_id = validate_experiment_id


class Experiment(ExperimentState, teams.TrialManagement, ProvenanceMethods, SourceMethods):
    """One experiment: its parameters, its steps and the trials recorded in its store.

    ``Experiment(id, backend='local', seed=None)``. ``backend`` is ``'local'`` (a store at
    ``daskperiment_cache/<id>`` under the current directory), a ``pathlib.Path``, a store URL
    or a ``daskperiment_store.Store``. The same id and store in one process give the same instance.
    Creating an experiment or reading from it never writes to the store; the store is
    created by the first trial. ``seed`` is the default seed of ``compute()``.
    ``system_metrics=False`` stops sampling ``sys/cpu``, ``sys/mem``... while steps run.
    """

    def __new__(  # noqa: A002
        cls, id: str, backend: Any = "local", seed: int | None = None,
        system_metrics: bool | None = None,
    ) -> Experiment:  # fmt: skip
        experiment_id = _validate_id(id)
        target, location = experiment_target(experiment_id, backend)
        key = (experiment_id, location)
        with _INSTANCES_LOCK:
            instance = _INSTANCES.get(key)
            if instance is None:
                instance = super().__new__(cls)
                instance._setup(experiment_id, target)
                _INSTANCES[key] = instance
        if seed is not None:
            instance._default_seed = seed
        if system_metrics is not None:  # sys/cpu, sys/mem... while steps run: sysmetrics.py
            instance._system_metrics = bool(system_metrics)
        return instance

    def __init__(  # noqa: A002
        self, id: str, backend: Any = "local", seed: int | None = None,
        system_metrics: bool | None = None,
    ) -> None:  # fmt: skip
        """Everything happens in ``__new__``, which may return an existing instance."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Steps that use ``ex`` (save_metric, current_trial_id) carry it to workers: send how
        # to find the store, not the instance with its locks and caches.
        return (_worker_instance, (self.id, worker_target(self._target, self._store)))

    def _setup(self, experiment_id: str, target: Any, load: bool = True) -> None:
        self.id = experiment_id
        self._default_seed: int | None = None
        self._system_metrics = True
        self._lock = threading.RLock()
        self._target = target
        self._store: store.Store | None = target if isinstance(target, store.Store) else None
        self._backend = self._store.backend if self._store is not None else None
        if isinstance(target, store.backends.base.Backend):
            self._backend = target
        self._writable: store.Store | None = None
        self._handle_obj: StoreHandle | None = None
        self._parameters = ParameterRegistry(_token(experiment_id, target))
        self._steps: dict[str, StepSpec] = {}
        self._last_result: Any = None
        self._reader = history.HistoryReader(experiment_id)
        self._last_trial_id = 0
        self._last_record: dict[str, Any] | None = None
        self._last_code: dict[str, str] | None = None
        self._env_seen: str | None = None
        self._tree_cache: dict[Any, Any] = {}
        self._pending_rows: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        _register_exit_flush(self)
        if load:
            self._load()

    # -- the store ---------------------------------------------------------------------

    @property
    def store(self) -> store.Store:
        """The experiment's store (created if it does not exist yet)."""
        return self._read_store() or self._store_for_writing()

    def __repr__(self) -> str:
        if self._backend is not None:
            shown = repr(self._backend)
        elif isinstance(self._target, str) and "://" not in self._target:
            # The store does not exist yet: show the backend it will have.
            shown = f"LocalBackend({self._target!r})"
        else:
            shown = str(self._target)
        return f"Experiment(id: {self.id}, trial_id: {self.trial_id}, backend: {shown})"

    _repr_html_ = experiment_html  # notebooks: summary and last trials (html.py)

    # -- loading -----------------------------------------------------------------------

    @property
    def trial_id(self) -> int:
        """Id of the last trial (0 before the first), by any process."""
        return self._refreshed_trial_id()

    @property
    def current_trial_id(self) -> int:
        """Id of the trial the calling step runs in; :class:`NotInTrial` elsewhere."""
        ctx = CURRENT_STEP.get()
        if ctx is None or ctx.trial_id is None:
            raise NotInTrial("ex.current_trial_id")
        return ctx.trial_id

    # -- parameters --------------------------------------------------------------------

    def parameter(self, name: str, default: Any = None) -> Parameter:
        """Declare (or get) the parameter ``name``; ``default`` is used while none is set."""
        return self._parameters.declare(name, default)

    def set_parameters(self, **values: Any) -> None:
        """Set parameter values for the next trials; parameters not named keep theirs."""
        self._parameters.set(values)

    def get_parameters(
        self, trial_id: int | None = None, *, unpickle: bool = False
    ) -> dict[str, Any]:
        """Current parameter values, or those trial ``trial_id`` ran with.

        A trial's parameter set holding values only pickle can store (arrays, frames, other
        objects) raises :class:`~daskperiment.errors.PickleRefused` unless ``unpickle=True``,
        which runs code chosen by whoever wrote the store (trusted stores only)."""
        if trial_id is None:
            return {
                name: value
                for name in self._parameters.names
                if (value := self._parameters.current(name)) is not UNDEFINED
            }
        record = self._record(trial_id)
        link = record.get("parameters")
        if isinstance(link, Link):
            # the exact values (the record's inline copy is only JSON for display)
            what = f"the parameter set of trial {record['trial_id']}"
            st = self._need_store()
            return dict(read_parameters(st, link.oid, unpickle=unpickle, what=what))
        return dict(record.get("params") or {})

    # -- steps -------------------------------------------------------------------------

    def __call__(self, func: Callable | None = None, *, cache: bool | str = False) -> Any:
        """Decorate a step: ``@ex`` (bare) or ``@ex(...)``."""
        from .steps import STEP

        return self._decorator(func, STEP, cache)

    def persist(self, func: Callable | None = None, *, cache: bool | str = False) -> Any:
        """Decorate a step whose output is kept in the store (``get_persisted``).

        ``cache=True`` declares the step pure: an output computed before from the same code
        and inputs is reused instead of running it again (``cache="seed"``: only under the
        same trial seed). See docs/caching.md.
        """
        from .steps import PERSIST

        return self._decorator(func, PERSIST, cache)

    def result(self, func: Callable | None = None) -> Any:
        """Decorate the step giving the experiment's result; ``.compute()`` runs a trial."""
        from .steps import RESULT

        return self._decorator(func, RESULT, False)

    def _decorator(self, func: Callable | None, kind: str, cache: bool | str) -> Any:
        from . import cache as step_cache
        from . import native  # noqa: F401 - from now on dask.compute(result) runs a trial
        from .steps import make_step

        cache = step_cache.validate_option(cache)
        if func is None:
            return lambda f: self._decorator(f, kind, cache)
        if not callable(func):
            raise TypeError(f"@ex decorates a function, got {func!r}")
        return make_step(self, self._register(func, kind, cache))

    def _register(self, func: Callable, kind: str, cache: bool | str) -> StepSpec:
        from . import code
        from .steps import StepSpec

        snapshot = code.capture_source(func)
        name = getattr(func, "__name__", None) or snapshot.name
        if not snapshot.exact:
            logger.warning(
                "Source code of step %s is not available (defined by exec or at an "
                "interactive prompt); its compiled form is tracked instead",
                name,
            )
        spec = StepSpec(name, func, kind, snapshot, cache)
        with self._lock:
            before = self._steps.get(name)
            old = before.code.source if before is not None else self._last_trial_code().get(name)
            if old is not None and old != snapshot.source:
                log_diff(
                    logger,
                    f"Code context has been changed: {name}",
                    code.code_diff(old, snapshot.source, name),
                )
            self._steps[name] = spec
        return spec

    def _last_trial_code(self) -> dict[str, str]:
        if self._last_code is None:
            self._last_code = {}
            if self._last_record is not None and self._store is not None:
                self._last_code = self._read_code(self._store, self._last_record)
        return self._last_code

    # -- running -----------------------------------------------------------------------

    def _run_trial(
        self,
        result: Any,
        seed: int | None = None,
        parameters: dict[str, Any] | None = None,
        cache: bool = True,
        **dask_kwargs: Any,
    ) -> Any:
        from . import trial

        if seed is None:
            seed = self._default_seed
        run = trial.TrialRun(self._session(), result, parameters, seed, dask_kwargs, cache)
        return run.run()

    def sweep(
        self,
        result: Any,
        grid: dict[str, Iterable[Any]] | None = None,
        *,
        trials: Iterable[dict[str, Any]] | None = None,
        seed: int | None = None,
        seeds: Iterable[int] | None = None,
        progress: bool | None = None,
        verbose: bool = False,
        cache: bool = True,
        **dask_kwargs: Any,
    ) -> Any:
        """Run one trial of ``result`` per parameter set, all at once; their history rows.

        ``grid={"a": [1, 2], "b": [3, 4]}`` runs the cartesian product (4 trials),
        ``trials=[{"a": 1}, {"a": 2, "b": 5}]`` the sets given; parameters a set leaves out
        take their current values. The trials run concurrently on the active
        ``distributed.Client``, else on dask's default scheduler (or ``scheduler=``); a failed
        trial is recorded and the others go on. ``seed`` is a sweep seed from which each
        trial's seed is derived (``seeds`` gives one per trial; with neither, each trial
        draws one). ``progress`` shows a progress bar (default: in a terminal or notebook).
        See docs/distributed.md.
        """
        from .sweep import run_sweep

        return run_sweep(
            self._session(),
            result,
            grid,
            trials=trials,
            seed=seed,
            seeds=None if seeds is None else list(seeds),
            progress=progress,
            verbose=verbose,
            cache=cache,
            **dask_kwargs,
        )

    def clear_cache(self, step: str | None = None) -> int:
        """Forget the cached outputs of every step, or of ``step``; return how many entries
        were removed. Trial records (and the outputs they keep) are untouched."""
        from . import cache as step_cache

        st = self._read_store()
        if st is None:
            return 0
        return step_cache.clear(self._store_for_writing(), self.id, step)

    def run_from_command_line(self, result: Any = None, argv: Any = None) -> Any:
        """Run one trial from the script's command line: ``python script.py a=1 b=2 --seed 1``.

        Call it at the end of a script. It acts only when the calling module is the program
        being run (``__name__ == "__main__"``): importing the script, or running it with
        ``daskperiment run`` (which runs the trial itself), does nothing. ``result`` defaults
        to the ``@ex.result`` output built last; ``argv`` to ``sys.argv[1:]``. Returns the
        result (None when it did nothing).
        """
        from . import script

        caller = sys._getframe(1).f_globals.get("__name__", "")
        return script.run_from_command_line(self, result, argv, caller)

    def _compute_plain(self, delayed: Any, **dask_kwargs: Any) -> Any:
        from . import trialgraph

        graph = trialgraph.TrialGraph(delayed, self._parameters.by_key)
        values = self._parameters.resolve(graph.parameters, None)
        dsk, keys = graph.build(values, None)
        return trialgraph.compute_graph(dsk, keys, dask_kwargs)[0]

    # -- reading -----------------------------------------------------------------------

    def _need_store(self) -> Store:
        st = self._read_store()
        if st is None:
            raise TrialNotFound(None, self.id, 0)
        return st

    def _record_oid(self, trial_id: int) -> str:
        st = self._need_store()
        # Only whole numbers name trials: int("3") or int(3.7) would silently pick another one.
        if not isinstance(trial_id, numbers.Integral) or isinstance(trial_id, bool):
            raise self._not_found(st, trial_id)
        try:
            return st.refs.get(trial_ref(self.id, int(trial_id)))
        except store.errors.CorruptRef as exc:
            raise DamagedTrial(trial_id, self.id, f"its ref: CorruptRef: {exc}") from None
        except (store.errors.RefNotFound, ValueError, TypeError):
            raise self._not_found(st, trial_id) from None

    def _not_found(self, st: Store, trial_id: object) -> TrialNotFound:
        # The trials written since this instance last looked (by other processes) count.
        self._last_trial_id = max(self._last_trial_id, self._scan_last_trial_id(st))
        return TrialNotFound(trial_id, self.id, self._last_trial_id)

    def _record(self, trial_id: int | None) -> dict[str, Any]:
        """The (effective) record of a trial; :class:`DamagedTrial` if it cannot be read."""
        trial_id = teams.resolve(self, trial_id)
        if trial_id is None:
            if not self._last_trial_id:
                self._last_trial_id = self._scan_last_trial_id(self._need_store())
            trial_id = self._last_trial_id
        self._record_oid(trial_id)  # validates the id: TrialNotFound, DamagedTrial
        try:
            _, record = history.load_trial(self._need_store(), self.id, int(trial_id))
        except store.errors.RefNotFound:  # deleted meanwhile
            raise self._not_found(self._need_store(), trial_id) from None
        return effective(record)

    def get_history(
        self,
        verbose: bool = False,
        last: int | None = None,
        *,
        where: str | None = None,
        tags: Iterable[str] | str | None = None,
        all: bool = False,  # noqa: A002 - as the CLI's --all
    ) -> Any:
        """A DataFrame of every trial, indexed by ``Trial ID``: parameters, ``Result``,
        ``Result Type``, ``Success``, ``Finished``, ``Process Time``, ``Description`` (+
        ``verbose`` columns; ``Tags`` once a trial has one). ``last=n``: only the last ``n``
        trials, read in time that does not grow with the history. ``all``: archived trials
        too; ``tags``, ``where`` (the dashboard's filter): see daskperiment/teams.py."""
        st = self._read_store()
        rows: list[dict[str, Any]] = []
        if last is not None:
            recent.validate_count(last)
        if st is not None:
            rows = recent.read_rows(st, self._reader, last)
            if rows:
                self._last_trial_id = max(self._last_trial_id, rows[-1]["trial_id"])
        return teams.history_frame(self, rows, verbose, where=where, tags=tags, all=all)

    def get_trial(self, trial_id: int) -> dict[str, Any]:
        """The record of one trial as plain data (digests as strings)."""
        trial_id = teams.resolve(self, trial_id)
        record = self._record(trial_id)
        st = self._need_store()
        out = TrialInfo(_plain(record))  # a dict; a table in notebooks
        out["id"] = record["trial_id"]
        out.update(teams.extras_of(self, trial_id, record))
        env_link = record.get("environment")
        if isinstance(env_link, Link):
            from . import environment

            try:
                out["environment_summary"] = environment.summary(
                    self._read_environment(st, env_link.oid)
                )
            except store.errors.StoreError:
                out["environment_summary"] = None
        return out

    def get_persisted(self, step: str, trial_id: int | None = None, *, to: Any = None) -> Any:
        """The output step ``step`` (decorated with ``@ex.persist``) gave in a trial; ``to``:
        also written to that file (``.npy``, ``.parquet``, ``.csv``: export.py)."""
        if to is not None:
            from . import export

            return export.written(self.get_persisted(step, trial_id), to)
        record = self._record(trial_id)
        steps = record.get("steps") or {}
        if step not in steps:
            if step in self._steps:
                raise PersistedNotFound(step, record["trial_id"])
            raise StepNotFound(step, {s.split("#")[0] for s in steps}, record["trial_id"])
        link = steps[step].get("persisted")
        if not isinstance(link, Link):
            raise PersistedNotFound(step, record["trial_id"])
        return read_value(self._need_store(), link.oid)  # unpickles: documented

    @metric_key_alias
    def save_metric(self, key: str, epoch: Any, value: Any) -> None:
        """Save one point of metric ``key`` from inside a running step."""
        ctx = CURRENT_STEP.get()
        if ctx is None:
            raise NotInTrial("ex.save_metric")
        ctx.metrics.add(key, epoch, value)

    def get_metric_keys(self, trial_id: int | None = None) -> list[str]:
        """Keys of the metrics saved in a trial (the last one by default); for a running
        trial, those its steps have saved so far (daskperiment/live.py)."""
        from . import live

        return sorted(live.metrics_of(self._need_store(), self.id, self._record(trial_id)))

    @metric_key_alias
    def load_metric(
        self, key: str, trial_id: int | Iterable[int], *, unpickle: bool = False
    ) -> Any:
        """Metric ``key`` of one trial or several: columns are trial ids, index the epochs.

        Series are pandas/numpy objects, which load without running code. A series whose
        values only pickle could hold raises :class:`~daskperiment.errors.PickleRefused` unless
        ``unpickle=True``: that runs code chosen by whoever wrote the store (trusted stores
        only, see docs/security.md)."""
        from . import live, metrics

        # numpy integers too: ids often come from a history DataFrame's index
        if isinstance(trial_id, numbers.Integral) or not isinstance(trial_id, Iterable):
            ids: list[Any] = [trial_id]  # a single id; a non-integer one is refused below
        elif isinstance(trial_id, str | bytes):
            ids = [trial_id]  # "12" is not trials 1 and 2
        else:
            ids = list(trial_id)
        st = self._need_store()
        series = {}
        for tid in ids:
            found = live.metrics_of(st, self.id, self._record(tid))
            tid = int(tid)
            if key not in found:
                raise MetricNotFound(key, tid, found)
            what = f"metric {key!r} of trial {tid}"
            series[tid] = live.load_series(st, found[key], unpickle=unpickle, what=what)
        return metrics.frame(series)

    # -- comparing and sharing (daskperiment/diff.py, daskperiment/sharing.py) ----------

    def diff(self, a: int, b: int) -> Any:
        """What changed from trial ``a`` to trial ``b``: a :class:`daskperiment.diff.TrialDiff`
        (``str()`` renders it like ``git diff``; ``bool()`` is False when nothing differs).
        Parts with equal digests are never read from the store."""
        from .diff import diff_trials

        return diff_trials(self._read_store(), self.id, a, b)

    def export(self, path: Any, trials: Iterable[int] | None = None) -> Any:
        """Write trials (default: every finished one) and every object they reference into
        one bundle file; returns a :class:`daskperiment.sharing.ShareReport`."""
        from .sharing import export_trials

        return export_trials(self._read_store(), self.id, path, trials)

    def push(self, url: Any) -> Any:
        """Copy this experiment's finished trials, and the objects the other store lacks, to
        the store at ``url`` (a path, a URL or a ``daskperiment_store.Store``; created if absent)."""
        from .sharing import push_trials

        return push_trials(self._read_store(), self.id, url)

    def pull(self, url: Any) -> Any:
        """Copy this experiment's trials from the store at ``url`` into this one."""
        from .sharing import pull_trials

        st = self._store_for_writing()
        report = pull_trials(st, self.id, url)
        self._last_trial_id = max(self._last_trial_id, self._scan_last_trial_id(st))
        return report

    def load(self, oid: str) -> Any:
        """The object stored under digest ``oid``. Loading a pickle object runs code chosen
        by whoever stored it: only load from stores you trust."""
        from .sharing import load_object

        return load_object(self._read_store(), oid)

    def start_dashboard(self, port: int = 5000, host: str = "127.0.0.1", **kwargs: Any) -> Any:
        """Serve the dashboard for this experiment's store (blocking in a script, in the
        background in Jupyter); returns a handle with ``.url`` and ``.stop()``. Needs the
        ``board`` extra (``pip install daskperiment[board]``)."""
        from .board import start

        return start(self, port=port, host=host, **kwargs)


def _worker_instance(experiment_id: str, target: Any) -> Experiment:
    """The experiment in a worker process: the existing instance if there is one, else one
    that is not loaded (no log lines, no environment capture) until it is used for reading."""
    location = ("local", target) if isinstance(target, str) and "://" not in target else None
    with _INSTANCES_LOCK:
        for (eid, where), instance in _INSTANCES.items():
            if eid == experiment_id and (where == location or where[1] == target):
                return instance
        instance = object.__new__(Experiment)
        instance._setup(experiment_id, target, load=False)
        _INSTANCES[(experiment_id, location or ("worker", id(instance)))] = instance
        return instance


def _plain(value: Any) -> Any:
    """A record with Links replaced by their oids (for users and JSON output)."""
    if isinstance(value, Link):
        return value.oid
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _token(experiment_id: str, target: Any) -> str:
    import hashlib

    where = target.url if isinstance(target, store.Store) else str(target)
    return hashlib.blake2b(f"{experiment_id}\0{where}".encode(), digest_size=6).hexdigest()
