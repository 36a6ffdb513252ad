"""Running one trial: prepare its graph, allocate its id, compute, and record it.

Order of a trial (see docs/design.md):

1. Copy the result's graph, find its parameters and resolve their values (an undefined
   parameter raises here, before any trial id is used).
2. Store the code tree, the environment tree (deduplicated objects) and, when they are not
   plain JSON, the parameters (plain JSON parameters live in the record itself).
3. Allocate the id: create the ref ``experiments/<id>/trials/<n>`` pointing at a *running*
   record (atomic create-if-absent; on ``RefExists`` try ``n + 1``). The running record names
   the process (host, pid, process start time) so a later reader can tell a trial whose
   process died from one still running.
4. Inject the parameter values and the trial context into the graph copy and compute it on
   the chosen scheduler. Steps record digests, persisted outputs and metrics as they run and
   hand their records back with their values.
5. Check purity, store the result (a JSON scalar result lives in the record), write the final
   record and swap the ref from the running record to it (compare-and-swap: nobody else may
   have touched it), then remember the new outputs' purity entries with the final record.
"""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dask._task_spec import GraphNode
from dask.delayed import Delayed

import daskperiment_store as store
from daskperiment_store import Link, Oid

from . import cache, display, live, purity, seeding, syncrun, sysmetrics
from .errors import RecordError, StepFailed
from .guard import (
    RECORDS_ATTR,
    Failure,
    add_gather,
    describe_exception,
    guard,
    without_runner_frames,
)
from .log import logger
from .provenance import record as provenance
from .record import (
    FAILED,
    RECORD_TYPE,
    RECORD_VERSION,
    RUNNING,
    SUCCESS,
    declaration_order,
    process_identity,
    trial_ref,
)
from .steps import (
    PERSIST,
    StepOutput,
    TrialContext,
)
from .trialgraph import resolve_scheduler, suffixed, trial_graph

if TYPE_CHECKING:
    from .trialsession import Session

# ---------------------------------------------------------------------------------------
# One trial
# ---------------------------------------------------------------------------------------


class TrialRun:
    """One trial of ``result`` for the experiment of ``session``; see the module docstring.

    Its life: :meth:`begin` (record written *running*, id taken, graph built), then
    :meth:`record_success` or :meth:`record_failure`. :meth:`run` does all three on one
    graph; a sweep (daskperiment/sweep.py) begins many trials and computes them together.
    """

    def __init__(
        self,
        session: Session,
        result: Delayed,
        parameters: Mapping[str, Any] | None = None,
        seed: int | None = None,
        dask_kwargs: Mapping[str, Any] | None = None,
        use_cache: bool = True,
        *,
        extra: Mapping[str, Any] | None = None,
        parameter_keys: Mapping[str, str] | None = None,
    ) -> None:
        self.session = session
        self.graph = trial_graph(result, parameter_keys or session.parameters.by_key)
        # Resolve before anything is written: an undefined parameter uses no trial id.
        # parameter_keys: values already resolved where dask took the graph (native.py).
        self.values = declaration_order(
            dict(parameters or {})
            if parameter_keys is not None
            else session.parameters.resolve(self.graph.parameters, parameters),
            session.parameters.names,
        )
        self.seed_given = seed is not None
        self.seed = seeding.validate_seed(seed) if seed is not None else seeding.draw_seed()
        self.dask_kwargs = dict(dask_kwargs or {})
        self.use_cache = use_cache
        #: fields added to the record (a sweep's ``{"sweep": ...}``)
        self.extra = dict(extra or {})
        self.trial_id: int | None = None
        self.base: dict[str, Any] = {}
        self.running_oid = ""
        #: purity updates to remember with the final record (see daskperiment/purity.py)
        self._purity_updates: list[purity.Update] = []
        self._step_prov: dict[str, dict[str, Any]] = {}
        self._deps: dict[str, str] = {}

    @property
    def experiment_id(self) -> str:
        return self.session.experiment_id

    def _taken_id(self) -> int:
        """The trial's id, once :meth:`begin` has taken it."""
        if self.trial_id is None:
            raise RuntimeError("the trial has not begun: TrialRun.begin takes its id")
        return self.trial_id

    # -- the lifecycle -------------------------------------------------------------------

    def begin(
        self, st: store.Store, unique_keys: bool = True
    ) -> tuple[dict[Any, GraphNode], list[Any], TrialContext]:
        """Write the running record, take the trial id and build the trial's graph:
        ``(graph, keys of the result, the context steps run in)``; ``unique_keys``: see
        :meth:`TrialGraph.build`."""
        self.base = self._base_record(st)
        self.base.update(self.extra)
        self.trial_id, self.running_oid = self._allocate(st, self.base)
        logger.info("Started Experiment (trial id=%d)", self.trial_id)
        self._log_seed()
        self.session.note_environment(self.base["environment"].oid, self._env)
        context = TrialContext(
            self.experiment_id, self.trial_id, self.seed, self.session.handle(),
            self.use_cache, self._deps,
            sys_clock=sysmetrics.trial_clock(self.session.system_metrics),
        )  # fmt: skip
        graph, keys = self.graph.build(self.values, context, unique_keys)
        return graph, keys, context

    def record_success(self, st: store.Store, outputs: tuple[Any, ...], elapsed: float) -> Any:
        """Record the trial as succeeded from its outputs (the result's first); its value."""
        return self._finish_success(st, self.base, self.running_oid, outputs, elapsed)

    def record_failure(
        self, st: store.Store, failure: BaseException | Failure, elapsed: float
    ) -> None:
        """Record the trial as failed, keeping what its finished steps saved."""
        self._finish_failed(st, self.base, self.running_oid, failure, elapsed)

    def _log_seed(self) -> None:
        if self.seed_given:
            logger.info("Random seed is initialized with given seed: %d", self.seed)
        else:
            logger.info(
                "Random seed is not provided, initialized with generated seed: %d", self.seed
            )

    def run(self) -> Any:
        """Begin, compute and record the trial; the result's value (or the step's error)."""
        st = self.session.store_for_writing()
        # One-time lookups (the first imports distributed) stay off the trial's clock. An
        # unknown scheduler is raised once the trial has begun, so that it is recorded.
        unresolved: Exception | None = None
        try:
            schedule, kwargs = resolve_scheduler(self.dask_kwargs)
        except Exception as exc:  # noqa: BLE001 - raised again below
            schedule, kwargs, unresolved = None, {}, exc
        lean = unresolved is None and syncrun.applies(schedule, kwargs)
        graph, keys, context = self.begin(st, unique_keys=not lean)
        started = time.perf_counter()
        try:
            if unresolved is not None:
                raise unresolved
            # Cached steps: reused outputs are loaded or left out (daskperiment/cache.py).
            graph = cache.prepare(st, self.experiment_id, graph, keys, context)
            # Guarded: a failing step's Failure reaches the end with the records of every
            # step that finished (daskperiment/guard.py).
            if lean:  # dask's synchronous scheduler, nobody watching its tasks
                outcome = syncrun.run_trial(graph, keys)
            else:
                graph = guard(graph)
                last = suffixed(keys[0], "~trial")
                add_gather(graph, keys, last)
                (outcome,) = schedule(graph, [last], **kwargs)
        except BaseException as exc:
            self.record_failure(st, exc, time.perf_counter() - started)
            log_failed(self.trial_id, describe_exception(exc))
            raise
        elapsed = time.perf_counter() - started
        if type(outcome) is Failure:
            self.record_failure(st, outcome, elapsed)
            log_failed(self.trial_id, outcome.description)
            raise _exception_of(outcome)
        try:
            value = self.record_success(st, outcome, elapsed)
        except BaseException as exc:
            # The final record could not be written (a full disk, a lost connection): record
            # the trial as failed with that cause rather than leave it "running", then raise.
            self._record_failure_of_recording(st, self.base, self.running_oid, exc, elapsed)
            raise
        logger.info("Finished Experiment (trial id=%d)", self.trial_id)
        return value

    def _record_failure_of_recording(
        self,
        st: store.Store,
        base: dict[str, Any],
        running_oid: str,
        exc: BaseException,
        elapsed: float,
    ) -> None:
        try:
            self._finish_failed(st, base, running_oid, exc, elapsed)
        except BaseException as again:  # noqa: BLE001 - the original error is what is raised
            logger.error(
                "Trial %d could not be recorded (%s: %s); it will show as interrupted",
                self.trial_id,
                type(again).__name__,
                again,
            )

    # -- before ------------------------------------------------------------------------

    def _base_record(self, st: store.Store) -> dict[str, Any]:
        session = self.session
        params, params_oid = _parameter_fields(st, self.values)
        code_oid = session.code_tree(st, self.graph.specs())
        env_oid, self._env = session.environment_tree(st)
        base = {
            "type": RECORD_TYPE,
            "version": RECORD_VERSION,
            "experiment": session.experiment_id,
            "trial_id": None,
            # Never changes, wherever the trial is shared (daskperiment/identity.py).
            "global_id": uuid.uuid4().hex,
            "status": RUNNING,
            "parent": session.last_trial_id() or None,
            "seed": self.seed,
            **params,
            # params are canonical JSON (sorted keys): the order they were declared in
            "parameter_order": list(self.values),
            "code": Link(Oid(code_oid)),
            "environment": Link(Oid(env_oid)),
            "digests": {
                "parameters": params_oid,
                "code": code_oid,
                "environment": env_oid,
                "result": None,
            },
            "process": process_identity(),
            "started": time.time(),
        }
        # Source tree, step closures and libraries: daskperiment/provenance/record.py
        self._step_prov, self._deps = provenance.apply(
            base, st, session.experiment_id, self.graph.specs()
        )
        return base

    def _allocate(self, st: store.Store, base: dict[str, Any]) -> tuple[int, str]:
        """Create the first free ``trials/<n>`` ref, pointing at the running record; never
        the number of a deleted trial (above the high-water mark, daskperiment/numbering.py)."""
        from .numbering import high_water

        session = self.session
        deleted = high_water(st, session.experiment_id)
        candidate = max(session.last_trial_id(), deleted) + 1
        for _ in range(100_000):
            record = dict(base, trial_id=candidate)
            oid = st.put(record, new=True)  # its start time makes it new: no existence check
            try:
                st.refs.create(trial_ref(session.experiment_id, candidate), oid)
            except store.errors.RefExists:
                # Another process took it: jump to what exists now rather than step by one.
                latest = max(session.scan_last_trial_id(st), high_water(st, session.experiment_id))
                candidate = max(candidate, latest) + 1
                continue
            session.took_trial_id(candidate)
            return candidate, oid
        raise RecordError(candidate, "no free trial id found after many attempts")

    # -- after -------------------------------------------------------------------------

    def _finish_success(
        self,
        st: store.Store,
        base: dict[str, Any],
        running_oid: str,
        outputs: tuple[Any, ...],
        elapsed: float,
    ) -> Any:
        output, *extra = outputs
        records = dict(output.records) if type(output) is StepOutput else {}
        for more in extra:
            records.update(more)
        value = output.value if type(output) is StepOutput else output
        record = dict(base, trial_id=self.trial_id, status=SUCCESS)
        record["steps"], record["metrics"] = self._steps_and_metrics(st, records)
        cache.after_trial(st, self.experiment_id, self._taken_id(), record["steps"])
        try:
            # A killed process's last trials first (once per process; daskperiment/purity.py)
            self.session.catch_up(st, self._taken_id())
            self._purity_updates = purity.check(st, self.experiment_id, record["steps"])
        except store.errors.StoreError as exc:
            # Purity refs are derived data: failing to read one must not lose the trial.
            logger.warning("Purity of trial %s could not be checked: %s", self.trial_id, exc)
        fields, result_digest = _result_fields(st, value, self.trial_id)
        record.update(fields)
        record["digests"] = dict(record["digests"], result=result_digest)
        self._finalize(st, record, running_oid, elapsed)
        return value

    def _finish_failed(
        self,
        st: store.Store,
        base: dict[str, Any],
        running_oid: str,
        exc: BaseException | Failure,
        elapsed: float,
    ) -> None:
        """Record the trial as failed, keeping what its finished steps saved: their records
        (persisted outputs, metrics), the points the failing step saved before raising and
        live points of steps whose records never came back (a worker that died)."""
        record = dict(base, trial_id=self.trial_id, status=FAILED)
        if isinstance(exc, Failure):
            description, text, records = exc.description, exc.traceback, exc.records
        else:
            description = describe_exception(exc)
            text = "".join(traceback.format_exception(exc))
            records = dict(getattr(exc, RECORDS_ATTR, None) or {})
        record.update(
            steps={},
            metrics={},
            result=None,
            result_value=None,
            result_repr=None,
            result_type=None,
            description=description,
            traceback=text,
        )
        try:
            extra = live.parts_without_records(st, self.experiment_id, self._taken_id(), records)
            record["steps"], record["metrics"] = self._steps_and_metrics(st, records, extra)
        except (store.errors.StoreError, OSError, KeyError, TypeError, ValueError) as exc2:
            # What the steps saved is a bonus here: the failure itself must be recorded.
            logger.warning(
                "Trial %s is recorded as failed without its steps' outputs and metrics: %s",
                self.trial_id,
                exc2,
            )
            record["steps"], record["metrics"] = {}, {}
        self._finalize(st, record, running_oid, elapsed)

    def _finalize(
        self, st: store.Store, record: dict[str, Any], running_oid: str, elapsed: float
    ) -> None:
        record["finished"] = time.time()
        record["process_time"] = elapsed
        record.setdefault("description", None)
        record.setdefault("traceback", None)
        live_refs = live.take_flags(record)  # live metrics: daskperiment/live.py
        oid = st.put(record, new=True)
        trial_id = self._taken_id()
        try:
            st.refs.swap(trial_ref(self.experiment_id, trial_id), running_oid, oid)
        except store.errors.StoreError as exc:
            raise RecordError(self.trial_id, f"{type(exc).__name__}: {exc}") from exc
        # Written with the history index's next flush, which trial_recorded may start: the
        # refs must be pending before this trial's row can be indexed (daskperiment/purity.py).
        purity.remember(st, self._purity_updates, oid, trial_id)
        self.session.trial_recorded(trial_id, oid, record)
        # The trial is recorded from here on: what follows is derived data, whose failure
        # (a store error, or an OS error such as a full disk) is a warning, not the trial's.
        try:
            live.cleanup(st, self.experiment_id, trial_id, live_refs)
        except (store.errors.StoreError, OSError) as exc:
            logger.warning("Live metrics of trial %s not cleaned up: %s", self.trial_id, exc)

    def _steps_and_metrics(
        self,
        st: store.Store,
        records: dict[str, dict],
        extra_metrics: Mapping[str, list[str]] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The record's ``steps`` (by name; ``name#2`` for a second call) and ``metrics``
        (``extra_metrics``: series parts of steps without a record, by key)."""
        steps: dict[str, Any] = {}
        metric_parts: dict[str, list] = {k: list(v) for k, v in (extra_metrics or {}).items()}
        for rec in sorted(records.values(), key=lambda r: r["started"]):
            name = rec["step"]
            label, n = name, 2
            while label in steps:
                label, n = f"{name}#{n}", n + 1
            if rec.get("output_error") and rec.get("kind") == PERSIST:
                logger.warning(
                    "Output of step %s in trial %s cannot be stored (%s); the trial is "
                    "recorded without it, so get_persisted will not find it",
                    name,
                    self.trial_id,
                    rec["output_error"],
                )
            deferred = rec.pop("_deferred_value", _NOTHING)
            if deferred is not _NOTHING:
                st.put(deferred)
            for series in rec.pop("_deferred_metrics", {}).values():
                st.put(series)
            for key, oid in rec["metrics"].items():
                metric_parts.setdefault(key, []).append(oid)
            entry = dict(rec)
            if entry.get("persisted"):
                entry["persisted"] = Link(entry["persisted"])
            entry["metrics"] = {k: Link(v) for k, v in rec["metrics"].items()}
            entry.update(self._step_prov.get(name, {}))
            steps[label] = entry
        metrics_out = {
            key: Link(Oid(_merge_metric(st, oids))) for key, oids in metric_parts.items()
        }
        return steps, metrics_out


_NOTHING = object()


def log_failed(trial_id: int | None, description: str) -> None:
    """The line a failed trial ends with, as sweeps log it (after its Started line)."""
    logger.warning("Failed Experiment (trial id=%s): %s", trial_id, description)


def _exception_of(failure: Failure) -> BaseException:
    """The exception ``compute()`` raises for a failed step: the step's own when it could
    travel back from its worker, else :class:`StepFailed` with its description."""
    if failure.exc is None:
        return StepFailed(failure.description)
    # The records are in the store now: the user's exception need not hold them.
    getattr(failure.exc, "__dict__", {}).pop(RECORDS_ATTR, None)
    return without_runner_frames(failure.exc)


def _merge_metric(st: store.Store, oids: list[str]) -> str:
    """One object per key and trial, even if several steps saved the same key."""
    if len(oids) == 1:
        return oids[0]
    from .metrics import merge_series
    from .reads import read_metric

    # This trial's own parts, just written by its steps: a series only pickle holds is kept.
    return st.put(merge_series(read_metric(st, oid, unpickle=True) for oid in oids))


_SCALARS = (int, float, bool, str, type(None))


def _result_fields(st: store.Store, value: Any, trial_id: int | None) -> tuple[dict, str | None]:
    """How the result appears in the record, and its digest.

    A result that is a plain JSON scalar (``int``, ``float``, ``bool``, ``None``, a short
    ``str``) is kept in the record itself (``result_value``): its digest is computed as for
    any object but names no separate object, saving a write per trial. Any other result is
    stored as its own object and linked (``result``).
    """
    fields: dict[str, Any] = {
        "result_type": str(type(value)),
        "result_repr": _short_repr(value),
        "result_value": _inline(value),
        "result": None,
    }
    if value is None or (type(value) in _SCALARS and fields["result_value"] is not None):
        return fields, store.codec.digest(value)
    try:
        oid = st.put(value)
    except store.errors.EncodeError as exc:
        logger.warning(
            "Result of trial %s (%s) cannot be stored: %s. The trial is recorded with the "
            "result's repr only; return a picklable value to keep it.",
            trial_id,
            type(value).__name__,
            exc,
        )
        return fields, None
    fields["result"] = Link(oid)
    return fields, oid


def _parameter_fields(
    st: store.Store, values: Mapping[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """The record's parameter fields and the digest of the parameter set.

    Parameters that are plain JSON (the usual numbers and strings) are kept exactly in the
    record (``params``); only a set holding other values (arrays, frames, objects) is stored
    as its own object (``parameters``), with a display copy inline.
    """
    values = dict(values)
    try:
        enc = store.codec.encode(values)
    except store.errors.EncodeError:
        return {"params": inline_parameters(values)}, None
    if enc.kind == "json" and not any(display.is_wide_int(v) for v in values.values()):
        return {"params": values}, enc.oid
    return {"params": inline_parameters(values), "parameters": Link(st.put(values))}, enc.oid


def inline_parameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """Parameter values as the record shows them (the history's columns).

    The exact values are in the record's ``parameters`` object. Inline, a numpy scalar is
    shown as the Python number it holds and anything the store cannot write as JSON by its
    ``repr``, so the record itself always stays JSON (and keeps its links followable).
    """
    out = {}
    for name, value in values.items():
        if _unprintable(value):
            value = _short_repr(value)  # a lone surrogate, a wide int: shown by repr
        elif type(value) not in _SCALARS:
            scalar = _inline(value)
            value = scalar if scalar is not None else value
            try:
                if store.codec.encode(value).kind != "json":
                    value = _short_repr(value)
            except store.errors.EncodeError:
                value = _short_repr(value)
        out[name] = value
    return out


def _unprintable(value: Any) -> bool:
    """A str with a lone surrogate or an int too wide for ``str()``."""
    if type(value) is str:
        return not display.is_utf8(value)
    return display.is_wide_int(value)


def _inline(value: Any) -> Any:
    """``value`` as a plain JSON scalar kept in the record, or None if it is not one.

    Strings longer than 1,000 characters or holding a lone surrogate, and ints too wide for
    ``str()``, are not inlined: they are stored exactly as objects and shown by their repr
    (daskperiment/display.py), so records stay printable."""
    if type(value) in _SCALARS:
        if isinstance(value, str):
            return value if len(value) <= 1000 and display.is_utf8(value) else None
        return None if display.is_wide_int(value) else value
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "shape", None) == ():
        try:
            inner = item()
        except Exception:  # noqa: BLE001 - anything odd simply is not inlined
            return None
        return inner if type(inner) in _SCALARS else None
    return None


def _short_repr(value: Any) -> str:
    return display.short_repr(value, 200)
