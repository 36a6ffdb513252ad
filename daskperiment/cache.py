"""Step caching: reuse the output of a pure step whose code and inputs were seen before.

Only steps declared with ``@ex.persist(cache=True)`` (or ``@ex(cache=True)``) take part: the
user declares them pure. Everything else runs exactly as without this module.

**Keys.** A cached step's key is the digest of a tagged structure
``["daskperiment.cache/v1", step name, code digest, [argument keys], [[keyword, key], ...]]``
(plus ``["seed", seed]`` for ``cache="seed"``). An argument's key is ``["step", key]`` when it
is the output of an upstream cached step (that step's key, not its value), ``["value",
digest]`` for a parameter or literal, and containers of those for lists, tuples and dicts.
Keys are resolved on the client before anything is scheduled, so a chain of cached steps is
decided from digests alone.

**Entries.** ``experiments/<id>/cache/<step>/<key>`` names a small JSON object: the output
(a link), the trial that computed it, its input digest, argument reprs and metrics. It is
written as soon as the step has run (on the worker that ran it), so a trial that fails later
still leaves its finished steps reusable.

**Planning a trial** (:func:`prepare`, on the client, in dependency order):

- *hit*: every upstream cached step is a hit and the entry exists (and its output object is
  present). The step does not run. If a consumer that is not a hit needs its value, its task
  becomes a load of the stored output; otherwise the task disappears from the graph.
- *miss*: the key is known but there is no entry: the step runs and writes one.
- *check*: the key cannot be decided on the client, because an upstream cached step missed
  (its new output may differ) or an input comes from a step that is not cached. The step's
  worker digests the actual inputs and reuses the entry only if it was computed from exactly
  those inputs; otherwise it runs and writes the entry.

A stored output that cannot be read (corrupt or missing) is a miss with a warning: the step
runs again (loading its own inputs the same way) and the object and entry are repaired.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import dask.local
from dask._task_spec import DataNode, Dict, GraphNode, List, Task, TaskRef, Tuple

import store
from store import Link, codec, objfile
from store.store import object_key

from .log import logger
from .steps import (
    PERSIST,
    STEP,
    StepCall,
    StepOutput,
    StepSpec,
    TrialContext,
    inputs_digest,
    unwrap_inputs,
)

#: Tag of every cache key; a new key layout gets a new tag, so old entries simply miss.
KEY_TAG = "daskperiment.cache/v1"
ENTRY_TYPE = "daskperiment.cache-entry"
#: Accepted values of the ``cache`` option of ``@ex`` / ``@ex.persist``.
OPTIONS = (False, True, "seed")

HIT, MISS, CHECK, RUN = "hit", "miss", "check", "run"


def validate_option(cache: object) -> bool | str:
    """The ``cache=`` option of a step decorator, checked: ``False``, ``True`` or ``"seed"``."""
    if cache is None or cache is False:
        return False
    if cache is True or cache == "seed":
        return cache  # type: ignore[return-value]
    raise ValueError(
        f"cache must be True (reuse outputs whatever the trial seed), 'seed' (reuse only "
        f"under the same seed) or False, got {cache!r}"
    )


def cache_prefix(experiment_id: str, step: str | None = None) -> str:
    """Prefix of the cache refs of an experiment, or of one of its steps."""
    base = f"experiments/{experiment_id}/cache/"
    return base if step is None else f"{base}{step}/"


def cache_ref(experiment_id: str, step: str, key: str) -> str:
    """Name of the ref holding the cache entry of ``step`` under ``key``."""
    return f"{cache_prefix(experiment_id, step)}{key}"


@functools.lru_cache(maxsize=4096)
def code_digest(source: str) -> str:
    """Digest of a step's source (the same oid the trial's code tree links to)."""
    return codec.digest(source)


def make_key(spec: StepSpec, inputs: list, seed: int) -> str:
    """The cache key of ``spec`` for input keys ``inputs`` (see the module docstring)."""
    parts: list[Any] = [KEY_TAG, spec.name, code_digest(spec.code.source), *inputs]
    if spec.cache == "seed":
        parts.append(["seed", seed])
    return codec.digest(parts)


def deferred_key(spec: StepSpec, inputs: str, seed: int) -> str:
    """The key of a step whose inputs are known only where it runs: their digest decides."""
    return make_key(spec, [["inputs", inputs]], seed)


# ---------------------------------------------------------------------------------------
# Entries
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A decoded cache entry."""

    output: str
    trial: int | None
    inputs: str | None
    args: str | None
    kwargs: str | None
    metrics: dict[str, str]


def read_entry(
    st: store.Store, ref: str, step: str, warn: Callable[[str], None] | None = None
) -> Entry | None:
    """The entry named ``ref``; None when absent or unreadable (then ``warn`` is told why,
    by default the log)."""
    try:
        data = st.get(st.refs.get(ref))
        entry = Entry(
            output=data["output"].oid,
            trial=data.get("trial"),
            inputs=data.get("inputs"),
            args=data.get("args"),
            kwargs=data.get("kwargs"),
            metrics={k: v.oid for k, v in (data.get("metrics") or {}).items()},
        )
    except store.errors.RefNotFound:
        return None
    except Exception as exc:  # noqa: BLE001 - any damage means: not usable, run the step
        message = (
            f"Cache entry of {step} cannot be read ({type(exc).__name__}: {exc}), "
            "so the step runs again"
        )
        (warn or (lambda m: logger.warning("%s", m)))(message)
        return None
    return entry


def write_entry(st: store.Store, experiment_id: str, key: str, entry: Mapping[str, Any]) -> None:
    """Store ``entry`` and point the step's cache ref at it (last writer wins: all are valid)."""
    st.refs.set(cache_ref(experiment_id, entry["step"], key), st.put(dict(entry)))


def entry_of(record: Mapping[str, Any], trial_id: int) -> dict[str, Any]:
    """The entry remembering the output a step's ``record`` describes."""
    return {
        "type": ENTRY_TYPE,
        "version": 1,
        "step": record["step"],
        "output": Link(record["output"]),
        "trial": trial_id,
        "inputs": record.get("inputs"),
        "args": record.get("args"),
        "kwargs": record.get("kwargs"),
        "metrics": {k: Link(v) for k, v in (record.get("metrics") or {}).items()},
    }


def hit_record(spec: StepSpec, entry: Entry, key: str) -> dict[str, Any]:
    """The step record of a reused output (as a step that ran would record it)."""
    return {
        "step": spec.name,
        "kind": spec.kind,
        "inputs": entry.inputs,
        "args": entry.args,
        "kwargs": entry.kwargs,
        "reused": True,
        "reused_from": entry.trial,
        "cache": key,
        "started": time.time(),
        "duration": 0.0,
        "output": entry.output,
        "persisted": entry.output,
        "metrics": dict(entry.metrics),
    }


def reuse_message(name: str, trial: int | None) -> str:
    """The INFO line of a reused output."""
    return f"Reused cached result of {name} from trial {trial}"


def rewrite_object(st: store.Store, value: Any, oid: str) -> bool:
    """Replace the object file of ``oid`` by ``value``'s encoding, if ``value`` has that oid.

    ``Store.put`` skips objects that exist, so a damaged object is only repaired this way.
    The backend's ``put`` is an atomic replace: readers see the old or the new file.
    """
    enc = codec.encode(value)
    if enc.oid != oid:
        return False
    header, payload, _ = objfile.build_object(enc, st.compression_level, st.compression_threads)
    st.backend.put(object_key(oid), [header, *payload])
    return True


# ---------------------------------------------------------------------------------------
# Running cached steps (on workers)
# ---------------------------------------------------------------------------------------


class CachedStepCall(StepCall):
    """The task function of a cached step that may run: looks up (``check``), runs, remembers.

    ``key`` is the key decided on the client (None: derive it from the inputs' digest).
    ``check``: look for a usable entry here first, trusting it only if it was computed from
    exactly these inputs. ``repair``: the oid of a stored output found damaged or missing,
    rewritten if the step gives it again.
    """

    __slots__ = ("key", "check", "repair", "client_pid", "_runner")

    def __init__(
        self,
        spec: StepSpec,
        key: str | None,
        check: bool = False,
        repair: str | None = None,
        client_pid: int | None = None,
    ) -> None:
        super().__init__(spec)
        self.key = key
        self.check = check
        self.repair = repair
        self.client_pid = os.getpid() if client_pid is None else client_pid
        # A cached output is always stored, so every cached step runs as a persisted one
        # (one digest and one write); its record keeps the kind the user declared.
        kind = PERSIST if spec.kind == STEP else spec.kind
        self._runner = StepCall(dataclasses.replace(spec, kind=kind))

    def __reduce__(self) -> tuple[Any, ...]:
        return (CachedStepCall, (self.spec, self.key, self.check, self.repair, self.client_pid))

    def __call__(self, trial: TrialContext | None, key: str, *args: Any, **kwargs: Any) -> Any:
        if trial is None:
            return self._runner._run_plain(args, kwargs)
        st = trial.store.open()
        logs: list[list] = []
        cache_key, repair = self.key, self.repair
        if self.check:
            found, cache_key, bad = self._reuse(st, trial, key, args, kwargs, logs)
            if found is not None:
                return found
            repair = bad or repair
        out = self._runner._run_in_trial(trial, key, args, kwargs)
        record = out.records[key]
        record["kind"] = self.spec.kind
        if cache_key is None and record.get("inputs"):
            cache_key = deferred_key(self.spec, record["inputs"], trial.seed)
        record["cache"] = cache_key
        self._remember(st, trial, record, out.value, repair, logs)
        return out

    def _log(self, logs: list[list], level: int, message: str) -> None:
        """Log here if this is the client's process, else send it to the client's log."""
        if os.getpid() == self.client_pid:
            logger.log(level, "%s", message)
        else:
            logs.append([level, message, os.getpid()])

    def _reuse(
        self,
        st: store.Store | None,
        trial: TrialContext,
        key: str,
        args: tuple,
        kwargs: dict,
        logs: list[list],
    ) -> tuple[StepOutput | None, str | None, str | None]:
        """``(output if reused, cache key, oid of a damaged stored output)``."""
        records: dict[str, dict] = {}
        plain_args, plain_kwargs, known = unwrap_inputs(args, kwargs, records)
        inputs = inputs_digest(plain_args, plain_kwargs, known)
        if inputs is None:
            self._log(
                logs,
                logging.WARNING,
                f"Step {self.spec.name} runs without its cache: an input cannot be digested",
            )
            return None, self.key, None
        cache_key = self.key or deferred_key(self.spec, inputs, trial.seed)
        if st is None or not trial.use_cache:
            return None, cache_key, None
        ref = cache_ref(trial.experiment_id, self.spec.name, cache_key)
        entry = read_entry(st, ref, self.spec.name, lambda m: self._log(logs, logging.WARNING, m))
        if entry is None or entry.inputs != inputs:
            return None, cache_key, None
        try:
            value = st.get(entry.output)
        except Exception as exc:  # noqa: BLE001 - unreadable for any reason: run the step
            self._log(logs, logging.WARNING, unreadable_message(self.spec.name, entry.trial, exc))
            return None, cache_key, entry.output
        record = hit_record(self.spec, entry, cache_key)
        self._log(logs, logging.INFO, reuse_message(self.spec.name, entry.trial))
        if logs:
            record["_cache_log"] = logs
        records[key] = record
        return StepOutput(value, entry.output, records), cache_key, None

    def _remember(
        self,
        st: store.Store | None,
        trial: TrialContext,
        record: dict[str, Any],
        value: Any,
        repair: str | None,
        logs: list[list],
    ) -> None:
        """Write the entry for the output just computed (or leave it to the client)."""
        name = self.spec.name
        if record.get("output") is None or record.get("cache") is None:
            if record.get("output_error") and self.spec.kind != PERSIST:
                self._log(
                    logs,
                    logging.WARNING,
                    f"Output of cached step {name} cannot be stored "
                    f"({record['output_error']}), so it is not cached",
                )
        elif st is None:
            # The store lives only in the client's memory: the client writes the entry.
            record["_cache_entry"] = entry_of(record, trial.trial_id)
        else:
            try:
                if repair is not None and repair == record["output"]:
                    rewrite_object(st, value, repair)
                write_entry(
                    st, trial.experiment_id, record["cache"], entry_of(record, trial.trial_id)
                )
            except (store.errors.StoreError, OSError) as exc:
                # The cache only saves time: the trial goes on without the entry.
                self._log(
                    logs,
                    logging.WARNING,
                    f"Cache entry of {name} not written: {type(exc).__name__}: {exc}",
                )
        if logs:
            record.setdefault("_cache_log", []).extend(logs)


def unreadable_message(name: str, trial: int | None, exc: BaseException) -> str:
    return (
        f"Cached result of {name} from trial {trial} cannot be read "
        f"({type(exc).__name__}: {exc}), so the step runs again and the cache is repaired"
    )


@dataclass
class LoadPlan:
    """How a task loads a reused output, and how it recomputes it if the load fails.

    ``fallback`` is a self-contained graph computing ``key``: the step itself (as a
    :class:`CachedStepCall` that repairs ``oid``) and, for each upstream reused step, a load
    task of the same kind. Its inputs are all parameters, literals or reused outputs, so it
    never depends on the rest of the trial's graph.
    """

    key: Any
    #: The key the step's record has (its task key before the trial's suffix).
    record_key: str
    name: str
    oid: str
    trial: int | None
    records: dict[str, dict]
    fallback: dict[Any, GraphNode]
    client_pid: int
    #: False: go straight to the fallback (the client already found the output unreadable).
    load: bool = True


def load_cached(trial: TrialContext, plan: LoadPlan) -> StepOutput:
    """Task function of a reused step: its stored output, or its recomputation."""
    st = trial.store.open()
    problem = None
    if st is not None and plan.load:
        try:
            return StepOutput(st.get(plan.oid), plan.oid, dict(plan.records))
        except Exception as exc:  # noqa: BLE001 - unreadable for any reason: recompute
            problem = unreadable_message(plan.name, plan.trial, exc)
    out = dask.local.get_sync(plan.fallback, plan.key)
    if problem is not None:
        if os.getpid() == plan.client_pid:
            logger.warning("%s", problem)
        else:
            out.records[plan.record_key].setdefault("_cache_log", []).append(
                [logging.WARNING, problem, os.getpid()]
            )
    return out


# ---------------------------------------------------------------------------------------
# Planning a trial (on the client)
# ---------------------------------------------------------------------------------------


class _Unresolved(Exception):
    """An input whose key cannot be known before the trial runs."""


def is_cached_step(node: GraphNode) -> bool:
    return isinstance(node, Task) and isinstance(node.func, StepCall) and bool(node.func.spec.cache)


class Planner:
    """Decides every cached step of one trial's graph and rewrites the graph accordingly."""

    def __init__(
        self,
        st: store.Store,
        experiment_id: str,
        graph: dict[Any, GraphNode],
        trial: TrialContext,
    ) -> None:
        self.st = st
        self.experiment_id = experiment_id
        self.graph = graph
        self.trial = trial
        self.pid = os.getpid()
        self.keys: dict[Any, str | None] = {}
        self.status: dict[Any, str] = {}
        self.hits: dict[Any, tuple[Entry, dict]] = {}
        self.repair: dict[Any, str] = {}
        self._digests: dict[Any, str] = {}
        self._loads: dict[Any, Task] = {}

    # -- deciding ----------------------------------------------------------------------

    def decide(self, k: Any) -> str:
        """Status of the cached step ``k`` (its cached dependencies decided first)."""
        if k in self.status:
            return self.status[k]
        node = self.graph[k]
        upstream = [d for d in node.dependencies if is_cached_step(self.graph.get(d))]
        ups = [self.decide(d) for d in upstream]
        spec = node.func.spec
        try:
            key = make_key(spec, self._input_keys(node), self.trial.seed)
        except _Unresolved:
            key = None
        self.keys[k] = key
        if not self.trial.use_cache:
            status = RUN
        elif key is None or any(s != HIT for s in ups):
            status = CHECK
        else:
            status = self._lookup(k, spec, key)
        self.status[k] = status
        return status

    def _lookup(self, k: Any, spec: StepSpec, key: str) -> str:
        entry = read_entry(self.st, cache_ref(self.experiment_id, spec.name, key), spec.name)
        if entry is None:
            return MISS
        missing = [o for o in (entry.output, *entry.metrics.values()) if not self._has(o)]
        if missing:
            logger.warning(
                "Cached result of %s from trial %s is missing from the store (object %s), "
                "so the step runs again and the cache is repaired",
                spec.name,
                entry.trial,
                missing[0],
            )
            self.repair[k] = entry.output
            return MISS
        self.hits[k] = (entry, hit_record(spec, entry, key))
        logger.info("%s", reuse_message(spec.name, entry.trial))
        return HIT

    def _has(self, oid: str) -> bool:
        try:
            return self.st.has(oid)
        except store.errors.StoreError:
            return False

    def _input_keys(self, node: Task) -> list:
        args = [self._arg_key(a) for a in node.args[2:]]  # after the trial context and key
        kwargs = [[name, self._arg_key(v)] for name, v in sorted(node.kwargs.items())]
        return [args, kwargs]

    def _arg_key(self, arg: Any) -> Any:
        if isinstance(arg, TaskRef):
            dep = self.graph.get(arg.key)
            if isinstance(dep, DataNode):
                if arg.key not in self._digests:
                    self._digests[arg.key] = self._value_digest(dep.value)
                return ["value", self._digests[arg.key]]
            if self.keys.get(arg.key) is not None:
                return ["step", self.keys[arg.key]]
            raise _Unresolved(arg.key)
        if isinstance(arg, DataNode):
            return ["value", self._value_digest(arg.value)]
        if isinstance(arg, List | Tuple):
            return [type(arg).__name__.lower(), [self._arg_key(a) for a in arg.args]]
        if isinstance(arg, Dict):
            pairs = list(zip(arg.args[::2], arg.args[1::2], strict=True))
            return ["dict", [[self._arg_key(n), self._arg_key(v)] for n, v in pairs]]
        if isinstance(arg, GraphNode):  # sets, nested tasks, aliases: decided where they run
            raise _Unresolved(arg)
        return ["value", self._value_digest(arg)]

    @staticmethod
    def _value_digest(value: Any) -> str:
        try:
            return codec.digest(value)
        except store.errors.EncodeError as exc:
            raise _Unresolved(value) from exc

    # -- rewriting ---------------------------------------------------------------------

    def rewrite(self, keys: list[Any]) -> dict[Any, GraphNode]:
        """The trial's graph with hits loaded or dropped and the other cached steps wrapped."""
        from .trial import _records_of

        graph = dict(self.graph)
        consumers: dict[Any, list[Any]] = {}
        for k, node in graph.items():
            for d in node.dependencies:
                consumers.setdefault(d, []).append(k)

        def is_record_task(c: Any) -> bool:
            return isinstance(graph[c], Task) and graph[c].func is _records_of

        needed = {
            k
            for k in self.hits
            if k in keys
            or any(c not in self.hits and not is_record_task(c) for c in consumers.get(k, ()))
        }
        for k, status in self.status.items():
            if status != HIT:
                graph[k] = self._wrapped(k, check=status == CHECK)
            elif k in needed:
                graph[k] = self._load_node(k, needed)
            else:
                del graph[k]
                for c in consumers.get(k, ()):
                    if is_record_task(c):
                        graph[c] = DataNode(c, self._carried(k, needed))
        return _cull(graph, keys)

    def _wrapped(self, k: Any, check: bool) -> Task:
        node = self.graph[k]
        call = CachedStepCall(node.func.spec, self.keys[k], check, self.repair.get(k), self.pid)
        return Task(k, call, *node.args, **node.kwargs)

    def _carried(self, k: Any, needed: set[Any]) -> dict[str, dict]:
        """Records of hit ``k`` and of the dropped hits upstream whose records it carries."""
        records = {self.graph[k].args[1]: self.hits[k][1]}
        for d in self.graph[k].dependencies:
            if d in self.hits and d not in needed:
                records.update(self._carried(d, needed))
        return records

    def _load_node(self, k: Any, needed: set[Any]) -> Task:
        if k not in self._loads:
            node = self.graph[k]
            entry = self.hits[k][0]
            fallback: dict[Any, GraphNode] = {
                k: Task(
                    k,
                    CachedStepCall(node.func.spec, self.keys[k], False, entry.output, self.pid),
                    *node.args,
                    **node.kwargs,
                )
            }
            for d in node.dependencies:
                fallback[d] = self._load_node(d, needed) if d in self.hits else self.graph[d]
            plan = LoadPlan(
                k,
                node.args[1],
                node.func.spec.name,
                entry.output,
                entry.trial,
                self._carried(k, needed),
                fallback,
                self.pid,
            )
            trial_ref = node.args[0]  # every step's first argument is the trial context
            self._loads[k] = self._loaded_here(plan) or Task(k, load_cached, trial_ref, plan)
        return self._loads[k]

    def _loaded_here(self, plan: LoadPlan) -> DataNode | None:
        """For a store only this process reaches (a memory store), the output loaded here:
        a worker in another process could not read it."""
        if self.trial.store.location is not None:
            return None
        try:
            value = self.st.get(plan.oid)
        except Exception as exc:  # noqa: BLE001 - unreadable for any reason: recompute
            logger.warning("%s", unreadable_message(plan.name, plan.trial, exc))
            plan.load = False
            return None
        return DataNode(plan.key, StepOutput(value, plan.oid, dict(plan.records)))


def _cull(graph: dict[Any, GraphNode], keys: list[Any]) -> dict[Any, GraphNode]:
    """Only what ``keys`` need: dropped hits leave parameters nobody reads any more."""
    out: dict[Any, GraphNode] = {}
    todo = list(keys)
    while todo:
        k = todo.pop()
        if k in out:
            continue
        out[k] = graph[k]
        todo.extend(graph[k].dependencies)
    return out


def prepare(
    st: store.Store,
    experiment_id: str,
    graph: dict[Any, GraphNode],
    keys: list[Any],
    trial: TrialContext,
) -> dict[Any, GraphNode]:
    """Decide the cached steps of one trial's ``graph`` (see the module docstring).

    Returns the graph to compute instead; a graph without cached steps is returned as is.
    """
    cached = [k for k, node in graph.items() if is_cached_step(node)]
    if not cached:
        return graph
    planner = Planner(st, experiment_id, graph, trial)
    for k in cached:
        planner.decide(k)
    return planner.rewrite(keys)


def after_trial(st: store.Store, experiment_id: str, trial_id: int, steps: Mapping) -> None:
    """Finish on the client what workers could not: relay their cache log lines, and write
    the entries of steps that ran where the store is not reachable (a memory store)."""
    for entry in steps.values():
        for level, message, pid in entry.pop("_cache_log", None) or ():
            if pid != os.getpid():
                logger.log(level, "%s", message)
        pending = entry.pop("_cache_entry", None)
        if pending is not None and entry.get("cache"):
            try:
                write_entry(st, experiment_id, entry["cache"], pending)
            except store.errors.StoreError as exc:
                logger.warning("Cache entry of %s not written: %s", entry["step"], exc)


def clear(st: store.Store, experiment_id: str, step: str | None = None) -> int:
    """Delete the cache refs of an experiment (or of one step); return how many were deleted.

    Only refs go: trial records and the objects they link to stay. Outputs no longer
    reachable from any ref are removed by the store's ``gc``.
    """
    removed = 0
    for name in st.refs.list(cache_prefix(experiment_id, step)):
        try:
            st.refs.delete(name)
        except store.errors.RefNotFound:  # deleted meanwhile by another process
            continue
        removed += 1
    return removed


def derive_entries(
    st: store.Store, experiment_id: str, arrived: Mapping[int, tuple[str, Mapping]]
) -> int:
    """Create cache entries for the cached steps of trials that arrived from another store.

    Cache refs never travel (two stores' entries for one key would conflict); the receiving
    side derives them from the records instead. An existing entry is kept. Returns how many
    were created.
    """
    created = 0
    for trial_id in sorted(arrived, reverse=True):
        _, record = arrived[trial_id]
        for step in (record.get("steps") or {}).values():
            key, persisted = step.get("cache"), step.get("persisted")
            if not key or not isinstance(persisted, Link):
                continue
            plain = dict(step, output=persisted.oid)
            plain["metrics"] = {k: v.oid for k, v in (step.get("metrics") or {}).items()}
            source = step.get("reused_from") if step.get("reused") else trial_id
            try:
                oid = st.put(entry_of(plain, source))
                st.refs.create(cache_ref(experiment_id, step["step"], key), oid)
            except (store.errors.RefExists, store.errors.InvalidRefName):
                continue
            created += 1
    return created
