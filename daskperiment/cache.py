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

import os
from collections.abc import Mapping
from typing import Any, cast

from dask._task_spec import DataNode, Dict, GraphNode, List, Task, TaskRef, Tuple

import daskperiment_store as store
from daskperiment_store import Link, codec

from .cache_run import (
    ENTRY_TYPE,
    KEY_TAG,
    CachedStepCall,
    Entry,
    LoadPlan,
    code_digest,
    entry_of,
    files_changed_message,
    hit_record,
    load_cached,
    make_key,
    read_entry,
    reuse_message,
    unreadable_message,
    write_entry,
)
from .log import logger
from .provenance import inputs as input_files
from .provenance.record import dependency_key
from .reads import read_value
from .record import cache_prefix, cache_ref
from .steps import StepCall, StepOutput, StepSpec, TrialContext
from .steps import records_of as _records_of

__all__ = [
    "ENTRY_TYPE",
    "KEY_TAG",
    "OPTIONS",
    "after_trial",
    "cache_prefix",
    "cache_ref",
    "clear",
    "code_digest",
    "derive_entries",
    "make_key",
    "prepare",
    "validate_option",
]

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


# ---------------------------------------------------------------------------------------
# Planning a trial (on the client)
# ---------------------------------------------------------------------------------------


class _Unresolved(Exception):
    """An input whose key cannot be known before the trial runs."""


def is_cached_step(node: GraphNode | None) -> bool:
    return (
        isinstance(node, Task) and isinstance(node.func, StepCall) and bool(_call(node).spec.cache)
    )


def _call(node: Task) -> StepCall:
    """The step call a cached step's task runs."""
    return cast(StepCall, node.func)


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
        self._loads: dict[Any, GraphNode] = {}

    # -- deciding ----------------------------------------------------------------------

    def decide(self, k: Any) -> str:
        """Status of the cached step ``k`` (its cached dependencies decided first)."""
        if k in self.status:
            return self.status[k]
        node = self._task(k)
        upstream = [d for d in node.dependencies if is_cached_step(self.graph.get(d))]
        ups = [self.decide(d) for d in upstream]
        spec = _call(node).spec
        try:
            deps = dependency_key(spec, self.trial)
            key = make_key(spec, self._input_keys(node), self.trial.seed, deps)
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
        changed = input_files.changed_file(entry.files)
        if changed is not None:
            logger.info("%s", files_changed_message(spec.name, entry, changed))
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

    def _task(self, k: Any) -> Task:
        """The task of step ``k`` (every cached step's node is a Task)."""
        return cast(Task, self.graph[k])

    def _wrapped(self, k: Any, check: bool) -> Task:
        node = self._task(k)
        call = CachedStepCall(_call(node).spec, self.keys[k], check, self.repair.get(k), self.pid)
        return Task(k, call, *node.args, **node.kwargs)

    def _carried(self, k: Any, needed: set[Any]) -> dict[str, dict]:
        """Records of hit ``k`` and of the dropped hits upstream whose records it carries."""
        records = {self._task(k).args[1]: self.hits[k][1]}
        for d in self.graph[k].dependencies:
            if d in self.hits and d not in needed:
                records.update(self._carried(d, needed))
        return records

    def _load_node(self, k: Any, needed: set[Any]) -> GraphNode:
        if k not in self._loads:
            node = self._task(k)
            entry = self.hits[k][0]
            fallback: dict[Any, GraphNode] = {
                k: Task(
                    k,
                    CachedStepCall(_call(node).spec, self.keys[k], False, entry.output, self.pid),
                    *node.args,
                    **node.kwargs,
                )
            }
            for d in node.dependencies:
                fallback[d] = self._load_node(d, needed) if d in self.hits else self.graph[d]
            plan = LoadPlan(
                k,
                node.args[1],
                _call(node).spec.name,
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
            value = read_value(self.st, plan.oid)  # a trial run trusts its store
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


def _is_pickle(st: store.Store, oid: str) -> bool:
    """Whether ``oid`` is a pickle (read from its header; an unreadable object counts as one)."""
    try:
        return st.info(oid).kind == "pickle"
    except store.errors.StoreError:
        return True


def derive_entries(
    st: store.Store, experiment_id: str, arrived: Mapping[int, tuple[str, Mapping]]
) -> int:
    """Create cache entries for the cached steps of trials that arrived from another store.

    Cache refs never travel (two stores' entries for one key would conflict); the receiving
    side derives them from the records instead. An existing entry is kept. Outputs stored as
    pickles get no entry: a later trial reusing one would run code chosen by the sender, so
    only data (JSON, arrays, frames, bytes) arrives reusable. Returns how many were created.
    """
    created = 0
    for trial_id in sorted(arrived, reverse=True):
        _, record = arrived[trial_id]
        for step in (record.get("steps") or {}).values():
            key, persisted = step.get("cache"), step.get("persisted")
            if not key or not isinstance(persisted, Link):
                continue
            if _is_pickle(st, persisted.oid):  # reusing it would run the sender's code
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
