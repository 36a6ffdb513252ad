"""Cached steps where they run: keys, cache entries, and the task functions of cached steps.

The client decides what each cached step of a trial does (:mod:`daskperiment.cache`); this
module holds what runs on the workers — :class:`CachedStepCall` (look up, run, remember) and
:func:`load_cached` (read a reused output, or recompute it when it cannot be read) — and the
key and entry formats both sides share.
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
from dask._task_spec import GraphNode

import daskperiment_store as store
from daskperiment_store import Link, codec

from .log import logger
from .provenance import inputs as input_files
from .provenance.record import dependency_key
from .reads import read_json, read_value
from .record import cache_ref
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


@functools.lru_cache(maxsize=4096)
def code_digest(source: str) -> str:
    """Digest of a step's source (the same oid the trial's code tree links to)."""
    return codec.digest(source)


def make_key(spec: StepSpec, inputs: list, seed: int, deps: str | None = None) -> str:
    """The cache key of ``spec`` for input keys ``inputs`` (see the module docstring);
    ``deps`` is the digest of the step's code closure and libraries."""
    parts: list[Any] = [KEY_TAG, spec.name, code_digest(spec.code.source), *inputs]
    if spec.cache == "seed":
        parts.append(["seed", seed])
    if deps is not None:
        parts.append(["deps", deps])
    return codec.digest(parts)


def deferred_key(spec: StepSpec, inputs: str, trial: TrialContext) -> str:
    """The key of a step whose inputs are known only where it runs: their digest decides."""
    deps = dependency_key(spec, trial)
    return make_key(spec, [["inputs", inputs]], trial.seed, deps)


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
    #: Input files the output was computed from: path -> digest.
    files: dict[str, str] = dataclasses.field(default_factory=dict)


def read_entry(
    st: store.Store, ref: str, step: str, warn: Callable[[str], None] | None = None
) -> Entry | None:
    """The entry named ``ref``; None when absent or unreadable (then ``warn`` is told why,
    by default the log)."""
    try:
        data = read_json(st, st.refs.get(ref))
        entry = Entry(
            output=data["output"].oid,
            trial=data.get("trial"),
            inputs=data.get("inputs"),
            args=data.get("args"),
            kwargs=data.get("kwargs"),
            metrics={k: v.oid for k, v in (data.get("metrics") or {}).items()},
            files=dict(data.get("files") or {}),
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
    files = {"files": dict(record["files"])} if record.get("files") else {}
    return {
        **files,
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
        **({"files": dict(entry.files)} if entry.files else {}),
    }


def reuse_message(name: str, trial: int | None) -> str:
    """The INFO line of a reused output."""
    return f"Reused cached result of {name} from trial {trial}"


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
            cache_key = deferred_key(self.spec, record["inputs"], trial)
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
        cache_key = self.key or deferred_key(self.spec, inputs, trial)
        if st is None or not trial.use_cache:
            return None, cache_key, None
        ref = cache_ref(trial.experiment_id, self.spec.name, cache_key)
        entry = read_entry(st, ref, self.spec.name, lambda m: self._log(logs, logging.WARNING, m))
        if entry is None or entry.inputs != inputs:
            return None, cache_key, None
        changed = input_files.changed_file(entry.files)
        if changed is not None:
            self._log(logs, logging.INFO, files_changed_message(self.spec.name, entry, changed))
            return None, cache_key, None
        try:
            value = read_value(st, entry.output)  # a trial run trusts its store
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
                    st.repair(repair, value)
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


def files_changed_message(name: str, entry: Entry, path: str) -> str:
    """The INFO line of a cached output not reused because an input file changed."""
    return (
        f"Cached result of {name} from trial {entry.trial} is not reused: "
        f"input file {path} changed, so the step runs again"
    )


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
            return StepOutput(read_value(st, plan.oid), plan.oid, dict(plan.records))
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
