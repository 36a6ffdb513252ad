"""Steps: decorated functions that build dask graphs and record what they did when they run.

Calling a step builds a ``dask.delayed`` task whose function is a :class:`StepCall`. Its first
argument is a placeholder (:data:`TRIAL_KEY`) that the trial replaces with a
:class:`TrialContext` in the trial's own copy of the graph; outside a trial it is ``None`` and
the step simply runs the user's function.

Inside a trial a step runs, on whichever worker dask chose:

1. unwrap its inputs (upstream steps hand over :class:`StepOutput` objects) and digest them,
   reusing the digests upstream steps already computed;
2. seed Python's ``random`` and numpy's global generator with the trial seed;
3. run the function with a context variable set, so ``ex.save_metric`` and
   ``ex.current_trial_id`` work;
4. digest the output; write persisted outputs and metrics straight to the store from this
   worker (only digests travel back) — or, when the store lives only in the client process
   (a memory store), hand the values back for the client to write;
5. return a :class:`StepOutput`: the value plus the records of this step and of the upstream
   steps whose outputs it consumed. The client assembles the trial record from them.
"""

from __future__ import annotations

import functools
import itertools
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dask
from dask._task_spec import DataNode
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from dask.threaded import get as threaded_get

import daskperiment_store as store
from daskperiment_store import codec

from . import live, metrics, seeding, sysmetrics
from .code import CodeSnapshot
from .display import SafeRepr
from .errors import NotInTrial
from .location import StoreHandle
from .provenance import inputs as input_files
from .running import CURRENT_STEP

#: Graph key of the per-trial context placeholder shared by every step.
TRIAL_KEY = "daskperiment-trial"

#: Step kinds, as recorded.
STEP, PERSIST, RESULT = "step", "persist", "result"

_repr = SafeRepr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlist = _repr.maxtuple = _repr.maxdict = 8


# ---------------------------------------------------------------------------------------
# What travels through the graph
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialContext:
    """Everything a step needs to know about the trial it runs in (small, picklable)."""

    experiment_id: str
    trial_id: int
    seed: int
    store: StoreHandle
    #: Whether cached steps may reuse earlier outputs (``compute(cache=False)`` turns it off).
    use_cache: bool = True
    #: Step name -> closure-and-libraries digest, part of cached steps' keys.
    deps: Mapping[str, str] | None = None
    #: Wall-clock start of the trial for system metrics; None: not sampled (sysmetrics.py).
    sys_clock: float | None = None


class StepOutput:
    """A step's value together with the records of the steps that produced it."""

    __slots__ = ("value", "digest", "records")

    def __init__(self, value: Any, digest: str | None, records: dict[str, dict]) -> None:
        self.value = value
        #: Output digest, reused as the input digest of downstream steps.
        self.digest = digest
        #: Task key -> step record, for this step and the upstream steps it consumed.
        self.records = records

    def __repr__(self) -> str:
        return f"StepOutput({self.value!r})"


def value_of(output: Any) -> Any:
    """The value a step returned, with or without its records around it."""
    return output.value if type(output) is StepOutput else output


def records_of(output: Any) -> dict[str, dict]:
    """The step records ``output`` carries ({} for a plain value)."""
    return output.records if type(output) is StepOutput else {}


@dataclass
class StepContext:
    """The running step, visible to ``ex.save_metric`` through a context variable."""

    step: str
    trial_id: int | None
    experiment_id: str
    metrics: metrics.MetricBuffer = field(default_factory=metrics.MetricBuffer)


_CURRENT = CURRENT_STEP


def current_step(what: str) -> StepContext:
    """The running step's context; :class:`NotInTrial` (naming ``what``) outside a step."""
    ctx = _CURRENT.get()
    if ctx is None:
        raise NotInTrial(what)
    return ctx


# ---------------------------------------------------------------------------------------
# The task function
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepSpec:
    """One definition of a step: the user's function, how to treat its output, its code."""

    name: str
    func: Callable[..., Any]
    kind: str
    code: CodeSnapshot
    cache: bool | str = False  # False, True or "seed" (daskperiment.cache)

    @property
    def persist(self) -> bool:
        return self.kind == PERSIST


class StepCall:
    """The function of a step's dask task (see the module docstring for what it does)."""

    __slots__ = ("spec",)

    def __init__(self, spec: StepSpec) -> None:
        self.spec = spec

    def __reduce__(self) -> tuple[Any, ...]:
        return (StepCall, (self.spec,))

    def __dask_tokenize__(self) -> Any:
        return ("daskperiment.StepCall", self.spec.name, id(self.spec))

    def __repr__(self) -> str:  # shown by dask's visualize and error messages
        return self.spec.name

    @property
    def __name__(self) -> str:  # dask names tasks after their function
        return self.spec.name

    def __call__(self, trial: TrialContext | None, key: str, *args: Any, **kwargs: Any) -> Any:
        if trial is None:
            return self._run_plain(args, kwargs)
        return self._run_in_trial(trial, key, args, kwargs)

    def _run_plain(self, args: tuple, kwargs: dict) -> Any:
        """Outside a trial (computing an intermediate step): just the value, nothing recorded."""
        records: dict[str, dict] = {}
        args, kwargs, _ = unwrap_inputs(args, kwargs, records)
        token = _CURRENT.set(StepContext(self.spec.name, None, ""))
        try:
            return self.spec.func(*args, **kwargs)
        finally:
            _CURRENT.reset(token)

    def _run_in_trial(self, trial: TrialContext, key: str, args: tuple, kwargs: dict) -> StepOutput:
        spec = self.spec
        records: dict[str, dict] = {}
        args, kwargs, digests = unwrap_inputs(args, kwargs, records)
        record: dict[str, Any] = {
            "step": spec.name,
            "kind": spec.kind,
            "inputs": inputs_digest(args, kwargs, digests),
            "args": _repr.repr(tuple(args)),
            "kwargs": _repr.repr(dict(kwargs)),
            "reused": False,
            "started": time.time(),
        }
        consumed = sorted({d for d in digests.values() if d})  # upstream outputs (lineage)
        if consumed:
            record["consumed"] = consumed
        ctx = StepContext(spec.name, trial.trial_id, trial.experiment_id)
        st = trial.store.open()
        # Metrics readable while the step runs: watched from the step's first point on, so
        # a step saving none never registers with (or starts) the live thread.
        watching = _LiveStart(st, trial, key, ctx.metrics)
        token = _CURRENT.set(ctx)
        reading, reading_token = input_files.start(input_files.ignored_for(trial.store.location))
        sampling = sysmetrics.start(trial.sys_clock, ctx.metrics)
        started = time.perf_counter()
        try:
            seeding.apply_seed(trial.seed)
            value = spec.func(*args, **kwargs)
        except Exception as exc:
            live.unwatch(watching.watch)
            _keep_failed_step(exc, record, ctx, st, watching.watch, started, records, key)
            raise
        finally:
            input_files.stop(reading_token)
            sysmetrics.stop(sampling)
            _CURRENT.reset(token)
            ctx.metrics.on_first_point = None
            live.unwatch(watching.watch)
        record["duration"] = time.perf_counter() - started
        input_files.add_to_record(record, reading, st)
        record["output"], record["persisted"] = _output_digest(spec, value, st, record)
        record["metrics"] = ctx.metrics.flush(st, record)
        live.settle(watching.watch, record)
        # Records are keyed by task key: the same step may be called several times in a graph.
        records[key] = record
        return StepOutput(value, record["output"], records)


#: Attribute set on a step's exception: the records of the steps it knew of (upstream ones
#: and its own partial record), picked up by daskperiment/guard.py.
RECORDS_ATTR = "_daskperiment_records"


def _keep_failed_step(
    exc: Exception,
    record: dict[str, Any],
    ctx: StepContext,
    st: store.Store | None,
    watch: live.Watch | None,
    started: float,
    records: dict[str, dict],
    key: str,
) -> None:
    """Store the metric points a failing step saved before raising, and attach its partial
    record (with those of its inputs' steps) to the exception, so the failed trial keeps
    them. Never replaces the step's own exception."""
    record["duration"] = time.perf_counter() - started
    record["output"] = record["persisted"] = None
    record["failed"] = f"{type(exc).__name__}({exc})"
    try:
        record["metrics"] = ctx.metrics.flush(st, record)
        live.settle(watch, record)
    except Exception as again:  # noqa: BLE001 - the step's own error is what matters
        record["metrics"] = {}
        record.pop("_deferred_metrics", None)
        record["metrics_error"] = f"{type(again).__name__}: {again}"
    records[key] = record
    try:
        setattr(exc, RECORDS_ATTR, {**(getattr(exc, RECORDS_ATTR, None) or {}), **records})
    except Exception:  # noqa: BLE001 - an exception type refusing attributes keeps none
        pass


class _LiveStart:
    """Starts the live view of a step's metrics when its buffer receives its first point."""

    __slots__ = ("st", "trial", "key", "buffer", "since", "watch")

    def __init__(
        self, st: store.Store | None, trial: TrialContext, key: str, buffer: metrics.MetricBuffer
    ) -> None:
        self.st, self.trial, self.key, self.buffer = st, trial, key, buffer
        self.since = time.monotonic()
        self.watch: live.Watch | None = None
        buffer.on_first_point = self

    def __call__(self) -> None:
        self.watch = live.watch(self.st, self.trial, self.key, self.buffer)
        if self.watch is not None:
            self.watch.since = self.since  # the step's age, as if watched from its start


def _output_digest(
    spec: StepSpec, value: Any, st: store.Store | None, record: dict[str, Any]
) -> tuple[str | None, str | None]:
    """``(output digest, persisted oid)``; persisted values are written here when possible."""
    try:
        if not spec.persist:
            return codec.digest(value), None
        if st is not None:
            oid = st.put(value)
            return oid, oid
        # The store is not reachable from this process: the client writes the value.
        record["_deferred_value"] = value
        oid = codec.digest(value)
        return oid, oid
    except store.errors.EncodeError as exc:
        record["output_error"] = f"{type(exc).__name__}: {exc}"
        return None, None


def unwrap_inputs(
    args: tuple, kwargs: dict, records: dict[str, dict]
) -> tuple[tuple, dict, dict[str, str | None]]:
    """Replace :class:`StepOutput` inputs by their values, collecting upstream records.

    Returns the plain ``args`` and ``kwargs`` and the known digests of the inputs that came
    from steps (position or keyword -> digest), so they need not be hashed again.
    """
    digests: dict[str, str | None] = {}
    plain_args = []
    for i, arg in enumerate(args):
        if type(arg) is StepOutput:
            records.update(arg.records)
            digests[str(i)] = arg.digest
            arg = arg.value
        elif type(arg) in (list, tuple, dict):
            arg = _unwrap_nested(arg, records)
        plain_args.append(arg)
    plain_kwargs = {}
    for name, arg in kwargs.items():
        if type(arg) is StepOutput:
            records.update(arg.records)
            digests[name] = arg.digest
            arg = arg.value
        elif type(arg) in (list, tuple, dict):
            arg = _unwrap_nested(arg, records)
        plain_kwargs[name] = arg
    return tuple(plain_args), plain_kwargs, digests


def _unwrap_nested(obj: Any, records: dict[str, dict]) -> Any:
    if type(obj) is StepOutput:
        records.update(obj.records)
        return obj.value
    if type(obj) is list:
        return [_unwrap_nested(x, records) for x in obj]
    if type(obj) is tuple:
        return tuple(_unwrap_nested(x, records) for x in obj)
    if type(obj) is dict:
        return {k: _unwrap_nested(v, records) for k, v in obj.items()}
    return obj


def inputs_digest(args: tuple, kwargs: dict, known: dict[str, str | None]) -> str | None:
    """Digest of a step's inputs, the same in every process; None if one cannot be digested.

    A tagged structure of the inputs' own digests is hashed (not the values side by side),
    so an input that came from a step is represented by the digest that step computed.
    """
    try:
        arg_digests = [
            known[str(i)] if str(i) in known else codec.digest(a) for i, a in enumerate(args)
        ]
        kw_digests = {
            k: known[k] if k in known else codec.digest(v) for k, v in sorted(kwargs.items())
        }
    except store.errors.EncodeError:
        return None
    if None in arg_digests or None in kw_digests.values():
        return None
    return codec.digest(["daskperiment.inputs/1", arg_digests, kw_digests])


# ---------------------------------------------------------------------------------------
# What users call: decorated functions returning delayed objects
# ---------------------------------------------------------------------------------------


def _trial_placeholder() -> Delayed:
    graph = HighLevelGraph.from_collections(
        TRIAL_KEY, {TRIAL_KEY: DataNode(TRIAL_KEY, None)}, dependencies=()
    )
    return Delayed(TRIAL_KEY, graph)


_TRIAL_PLACEHOLDER = _trial_placeholder()
_SERIAL = itertools.count()
#: The ``@ex.result`` output built last in this process, by any experiment (script mode
#: runs it when a script's last line is a bare call such as ``calculate_score(d)``).
LAST_RESULT: list[Any] = [None]


#: Builds the graph dask sees for an ``@ex.result`` output; daskperiment/native.py (imported
#: by the experiment module, before any result exists) installs it.
def _native_not_loaded(result: Any) -> Any:
    raise RuntimeError("daskperiment.native is not loaded: import daskperiment first")


RESULT_GRAPH: list[Callable[[Any], Any]] = [_native_not_loaded]
#: An ``@ex.result`` output's default scheduler (``__dask_scheduler__``); native.py too.
RESULT_SCHEDULER: list[Callable[..., Any]] = [threaded_get]


class _ResultScheduler:
    """``ResultDelayed.__dask_scheduler__``, read on the class or an instance alike: the
    scheduler native.py installs."""

    def __get__(self, obj: Any, owner: Any = None) -> Callable[..., Any]:
        return RESULT_SCHEDULER[0]


class StepDelayed(Delayed):
    """The delayed output of a step; ``compute()`` gives its value without recording."""

    __slots__ = ("_experiment", "_serial")

    def __init__(self, key: str, graph: Any, experiment: Any) -> None:
        super().__init__(key, graph)
        object.__setattr__(self, "_experiment", experiment)
        # Creation order: script mode runs the result a script built last.
        object.__setattr__(self, "_serial", next(_SERIAL))

    def compute(self, **kwargs: Any) -> Any:
        """Compute this intermediate value with the current parameters (no trial)."""
        return self._experiment._compute_plain(self, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Delayed, (self.key, step_graph(self)))


def step_graph(delayed: Delayed) -> Any:
    """The graph of a step's delayed output: its steps and parameter placeholders (an
    ``@ex.result`` output shows dask a one-task trial graph instead)."""
    return delayed._dask


class ResultDelayed(StepDelayed):
    """The delayed result of an experiment: ``compute()`` runs and records one trial."""

    #: the one-task graph dask took last, with what it was built from (native.trial_graph)
    __slots__ = ("_taken",)

    def __init__(self, key: str, graph: Any, experiment: Any) -> None:
        super().__init__(key, graph, experiment)
        object.__setattr__(self, "_taken", None)

    def compute(self, seed: int | None = None, **dask_kwargs: Any) -> Any:
        """Run one trial with the current parameters and return its result.

        ``seed`` seeds ``random`` and numpy's global generator in every step (drawn and
        recorded when not given); other keyword arguments go to ``dask.compute``
        (``scheduler="processes"``, ...).
        """
        return self._experiment._run_trial(self, seed=seed, **dask_kwargs)

    @property
    def dask(self) -> Any:
        """What dask.compute, persist, client.compute and embedding see: one task running a
        trial (daskperiment/native.py). The steps' graph itself is ``step_graph(self)``."""
        return RESULT_GRAPH[0](self)

    #: Runs a lone trial on the calling thread (native.TrialScheduler).
    __dask_scheduler__ = _ResultScheduler()

    @staticmethod
    def __dask_optimize__(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """A one-task trial graph has nothing to optimize (the steps' graph is prepared by
        the trial itself)."""
        return dsk

    def visualize(self, *args: Any, **kwargs: Any) -> Any:
        """Draw the steps' graph (not the one-task trial graph dask computes)."""
        return Delayed(self.key, step_graph(self)).visualize(*args, **kwargs)


def make_step(experiment: Any, spec: StepSpec) -> Callable[..., StepDelayed]:
    """The function users call in place of ``spec.func``: it builds a delayed task."""
    call = StepCall(spec)
    delayed_call = dask.delayed(call, pure=False)
    kind = ResultDelayed if spec.kind == RESULT else StepDelayed

    @functools.wraps(spec.func)
    def step(*args: Any, **kwargs: Any) -> StepDelayed:
        key = f"{spec.name}-{uuid.uuid4().hex}"
        # A result fed to another step is that step's input, not a trial of its own.
        args, kwargs = _steps_of(args), _steps_of(kwargs)
        out = delayed_call(_TRIAL_PLACEHOLDER, key, *args, dask_key_name=key, **kwargs)
        built = kind(out.key, out.dask, experiment)
        if kind is ResultDelayed:
            experiment._last_result = LAST_RESULT[0] = built
        return built

    step.spec = spec  # type: ignore[attr-defined]
    return step


def _steps_of(value: Any) -> Any:
    """``value`` with each ``@ex.result`` output in it replaced by its plain step graph."""
    if isinstance(value, ResultDelayed):
        return Delayed(value.key, step_graph(value))
    if type(value) in (list, tuple):
        return type(value)(_steps_of(v) for v in value)
    if type(value) is dict:
        return {k: _steps_of(v) for k, v in value.items()}
    return value


def next_serial() -> int:
    """The serial the next step output built will get (see ``StepDelayed._serial``)."""
    global _SERIAL
    n = next(_SERIAL)
    _SERIAL = itertools.count(n)
    return n
