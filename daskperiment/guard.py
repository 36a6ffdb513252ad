"""Guarded graphs: a failing step fails its trial, and what finished before still reaches it.

Every task of a trial's graph is *guarded*: an exception becomes a :class:`Failure` value
that flows to the trial's last task (:func:`gather`) instead of stopping the computation.
A Failure carries the records of every step that had finished by then (its own inputs',
those of sibling branches met on the way, and the failing step's own partial record with
the metric points it saved before raising), so a failed trial's record links the metrics
and persisted outputs of its finished steps — under every scheduler, as the records travel
with the values, never through the client's memory of a worker.

``compute()`` (daskperiment/trial.py) and sweeps (daskperiment/sweep.py) both run guarded
graphs; ``compute()`` then raises the step's own exception again in the client.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Mapping
from typing import Any

import cloudpickle
import dask
from dask._task_spec import GraphNode, Task, TaskRef

from .steps import RECORDS_ATTR, StepOutput


def describe_exception(exc: BaseException) -> str:
    """``ZeroDivisionError(division by zero)``: the history's Description of a failure."""
    return f"{type(exc).__name__}({exc})"


class Failure:
    """What a guarded task returns instead of raising: the error (as text, and the exception
    itself where it can travel) and the records of the steps finished before it."""

    __slots__ = ("description", "traceback", "at", "records", "exc")

    def __init__(
        self,
        description: str,
        traceback: str,
        at: float,
        records: dict[str, dict] | None = None,
        exc: BaseException | None = None,
    ) -> None:
        self.description = description
        self.traceback = traceback
        self.at = at
        self.records: dict[str, dict] = records or {}
        self.exc = exc

    def __reduce__(self) -> tuple[Any, ...]:
        # The exception goes along only if it pickles (some hold sockets, locks, frames):
        # the description and traceback text always do.
        exc = self.exc
        if exc is not None:
            try:
                cloudpickle.dumps(exc)
            except Exception:  # noqa: BLE001 - any pickling failure: send the text only
                exc = None
        return (Failure, (self.description, self.traceback, self.at, self.records, exc))

    def __repr__(self) -> str:
        return f"Failure({self.description})"

    def absorb(self, values: Any) -> Failure:
        """This failure, with the step records found among ``values`` added."""
        for value in values:
            self.records.update(records_in(value))
        return self


def records_in(value: Any) -> dict[str, dict]:
    """Step records carried by a task's value (a step output, a failure, a ``~record``)."""
    if type(value) is StepOutput or type(value) is Failure:
        return value.records
    if type(value) is list:  # the outputs a sweep trial gathers
        out: dict[str, dict] = {}
        for item in value:
            out.update(records_in(item))
        return out
    if type(value) is dict and all(type(v) is dict and "step" in v for v in value.values()):
        return value  # a ``~record`` task's value: task key -> record
    return {}


#: Frames in these directories above a step's own code are how a task reaches the step
#: (the guard, dask's task call, the step wrapper), not where it failed.
_RUNNER_DIRS = tuple(
    os.path.dirname(os.path.abspath(path)) + os.sep for path in (__file__, dask.__file__)
)


def without_runner_frames(exc: BaseException) -> BaseException:
    """``exc`` with its traceback starting at the first frame outside daskperiment and dask
    (the user's step, or whatever it called that failed); an error in daskperiment's own code,
    with no such frame, keeps every frame. What ``compute()`` raises again in the client."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_RUNNER_DIRS):
        tb = tb.tb_next
    if tb is not None:
        exc.__traceback__ = tb
    return exc


def step_traceback(exc: BaseException) -> str:
    """The traceback of an exception raised in a task, as ``show``, the dashboard and the
    record give it: each exception of the chain without its runner frames."""
    pending, seen = [exc], set()
    while pending:
        part = pending.pop()
        if id(part) not in seen:
            seen.add(id(part))
            without_runner_frames(part)
            pending.extend(p for p in (part.__cause__, part.__context__) if p is not None)
    return "".join(traceback.format_exception(exc))


def failure_of(exc: Exception) -> Failure:
    """A Failure for an exception raised by a task (with the records a step attached)."""
    text = step_traceback(exc)
    records = dict(getattr(exc, RECORDS_ATTR, None) or {})
    return Failure(describe_exception(exc), text, time.time(), records, exc)


#: Held while a guarded task runs, when a sweep asks for one step at a time per process.
STEP_LOCK = threading.Lock()
HOLDING = threading.local()


class Guarded:
    """Task function running one original task; an exception becomes a :class:`Failure`,
    and a Failure among the inputs is passed on (with the records of the other inputs)
    without running anything.

    ``exclusive``: run under this process's step lock. Python's ``random`` and numpy's global
    generator are one per process; a step seeds them and then draws, so two steps running at
    once in one process's threads would draw from each other's seeds.
    """

    __slots__ = ("task", "deps", "exclusive")

    def __init__(self, task: Task, exclusive: bool = False) -> None:
        self.task = task
        self.deps = sorted(task.dependencies, key=str)
        self.exclusive = exclusive

    def __reduce__(self) -> tuple[Any, ...]:
        return (Guarded, (self.task, self.exclusive))

    def __repr__(self) -> str:
        return f"Guarded({self.task.key!r})"

    def __call__(self, *values: Any) -> Any:
        for value in values:
            if type(value) is Failure:
                return value.absorb(values)
        try:
            if not self.exclusive:
                return self.task(dict(zip(self.deps, values, strict=True)))
            with STEP_LOCK:
                HOLDING.active = True
                try:
                    return self.task(dict(zip(self.deps, values, strict=True)))
                finally:
                    HOLDING.active = False
        except Exception as exc:  # noqa: BLE001 - recorded as the trial's failure
            return failure_of(exc).absorb(values)


def guard(graph: Mapping[Any, GraphNode], exclusive: bool = False) -> dict[Any, GraphNode]:
    """``graph`` with every task guarded (data nodes and aliases pass values through)."""
    out: dict[Any, GraphNode] = {}
    for key, node in graph.items():
        if isinstance(node, Task):
            wrapped = Guarded(node, exclusive)
            node = Task(key, wrapped, *(TaskRef(d) for d in wrapped.deps))
        out[key] = node
    return out


def gather(*outputs: Any) -> Any:
    """Task function of a trial's last task: all its outputs in one value, or its failure
    with the records of every output that did finish."""
    for output in outputs:
        if type(output) is Failure:
            return output.absorb(outputs)
    return list(outputs)


def add_gather(graph: dict[Any, GraphNode], keys: list[Any], last: Any) -> None:
    """Add the task ``last`` gathering ``keys`` (see :func:`gather`)."""
    graph[last] = Task(last, gather, *(TaskRef(k) for k in keys))
