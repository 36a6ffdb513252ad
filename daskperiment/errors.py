"""Errors raised by daskperiment.

Every error derives from :class:`DaskperimentError`; where a built-in exception fits it is mixed
in (``TrialNotFound`` is also a ``KeyError``), so callers can catch either the specific class,
the package root or the familiar built-in. Errors carry their data as attributes so that callers
never parse messages, and each message says what was wrong and what to do about it.

Errors of the object store underneath live in ``daskperiment_store.errors``; they are not wrapped.
"""

from __future__ import annotations

from collections.abc import Iterable


def _names(names: Iterable[object]) -> str:
    """``'a', 'b'`` for a message, or ``(none)`` when there is nothing to list."""
    listed = ", ".join(repr(n) for n in sorted(names, key=str))
    return listed or "(none)"


class DaskperimentError(Exception):
    """Root of every error daskperiment raises."""


class NotFound(DaskperimentError, KeyError):
    """Something looked up by name or id does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return str(self.args[0]) if self.args else ""


class InvalidExperimentId(DaskperimentError, ValueError):
    """An experiment id is empty, too long, or has characters other than ASCII letters,
    digits, ``_`` and ``-`` (the rule is in :mod:`daskperiment.ids`)."""

    #: The longest experiment id (``daskperiment.ids.MAX_EXPERIMENT_ID_LENGTH`` is this).
    MAX_LENGTH = 200

    def __init__(self, experiment_id: object) -> None:
        self.experiment_id = experiment_id
        shown = repr(experiment_id)
        if isinstance(experiment_id, str) and len(shown) > 80:
            shown = f"{shown[:60]}... ({len(experiment_id)} characters)"
        super().__init__(
            f"Experiment ID must be 1 to {self.MAX_LENGTH} ASCII letters, digits, "
            f"'_' and '-', got {shown}"
        )


class ExperimentNotFound(NotFound):
    """No experiment with this id has been recorded in the store."""

    def __init__(self, experiment_id: str, where: str = "") -> None:
        self.experiment_id = experiment_id
        self.where = where
        super().__init__(
            f"experiment {experiment_id!r} not found"
            + (f" in {where}" if where else "")
            + "; check the id and the store (daskperiment.list_experiments lists them)"
        )


class ParameterUndefined(DaskperimentError, ValueError):
    """A trial needs parameters that have neither a value nor a default."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = sorted(names)
        super().__init__(
            f"parameters without a value: {_names(self.names)}; "
            "set them with ex.set_parameters(name=value) before computing"
        )


class UnknownParameter(NotFound):
    """A parameter name was used that the experiment never declared."""

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(
            f"parameter {name!r} is not declared in this experiment "
            f"(declared: {_names(self.known)}); declare it first with ex.parameter({name!r})"
        )


class TrialNotFound(NotFound):
    """No trial with this id has been recorded."""

    def __init__(self, trial_id: object, experiment_id: str = "", last: int | None = None) -> None:
        self.trial_id = trial_id
        self.experiment_id = experiment_id
        self.last = last
        where = f" in experiment {experiment_id!r}" if experiment_id else ""
        hint = (
            "no trial has run yet; call .compute() on a result first"
            if not last
            else f"trial ids run from 1 to {last}"
        )
        super().__init__(f"trial {trial_id!r} not found{where}; {hint}")


class StepNotFound(NotFound):
    """No step (decorated function) with this name exists, or none ran in the trial."""

    def __init__(self, step: str, known: Iterable[str] = (), trial_id: int | None = None) -> None:
        self.step = step
        self.known = sorted(known)
        self.trial_id = trial_id
        where = f" in trial {trial_id}" if trial_id is not None else ""
        super().__init__(f"step {step!r} not found{where}; known steps: {_names(self.known)}")


class PersistedNotFound(NotFound):
    """A step's output was not persisted in the given trial."""

    def __init__(self, step: str, trial_id: int) -> None:
        self.step = step
        self.trial_id = trial_id
        super().__init__(
            f"no persisted output of step {step!r} in trial {trial_id}; only steps decorated "
            "with @ex.persist keep their output, and only in trials where they ran"
        )


class MetricNotFound(NotFound):
    """No metric with this key was saved in the given trial."""

    def __init__(self, key: str, trial_id: int | None = None, known: Iterable[str] = ()) -> None:
        self.key = key
        self.trial_id = trial_id
        self.known = sorted(known)
        where = f" in trial {trial_id}" if trial_id is not None else ""
        super().__init__(
            f"metric {key!r} not found{where}; saved metrics: {_names(self.known)} "
            "(ex.get_metric_keys(trial_id) lists them)"
        )


class NotInTrial(DaskperimentError, RuntimeError):
    """Something that only makes sense inside a running step was used outside of one."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(
            f"{what} is only available inside a step while a trial runs "
            "(a function decorated with @ex, @ex.persist or @ex.result, during .compute())"
        )


class ConflictError(DaskperimentError):
    """Two things claim the same name or slot and daskperiment will not pick one silently."""

    def __init__(self, what: str, detail: str, hint: str = "") -> None:
        self.what = what
        self.detail = detail
        self.hint = hint
        super().__init__(f"{what}: {detail}" + (f"; {hint}" if hint else ""))


class RecordError(DaskperimentError):
    """A trial record could not be written or read back; the trial is not safely recorded."""

    def __init__(self, trial_id: object, reason: str) -> None:
        self.trial_id = trial_id
        self.reason = reason
        super().__init__(
            f"could not record trial {trial_id!r}: {reason}; the trial's result is not saved, "
            "check that the store is writable and reachable, then run the trial again"
        )


class InvalidTrialId(DaskperimentError, ValueError):
    """A trial id is not a canonical positive integer in range (see daskperiment.ids)."""

    def __init__(self, trial_id: object, reason: str) -> None:
        self.trial_id = trial_id
        self.reason = reason
        super().__init__(f"invalid trial id {trial_id!r}: {reason}")


class MalformedRecord(DaskperimentError, ValueError):
    """A stored object where a trial record belongs is not one: a malformed or hostile store.

    Nothing in it was run. ``oid`` names the object, ``reason`` says what is wrong with it.
    """

    def __init__(self, oid: str, reason: str) -> None:
        self.oid = oid
        self.reason = reason
        super().__init__(
            f"object {oid} is a malformed or hostile trial record: {reason}; it was not "
            "loaded (nothing ran). Run 'daskperiment fsck' and remove the ref that names it"
        )


class PickleRefused(DaskperimentError, ValueError):
    """A value asked for is stored as a pickle, and the caller did not opt in to unpickling.

    Loading a pickle runs code chosen by whoever wrote the store; the calls that can load
    one take ``unpickle=True`` (only for stores you trust, see docs/security.md).
    """

    def __init__(self, oid: str, what: str) -> None:
        self.oid = oid
        self.what = what
        super().__init__(
            f"{what} is stored as a pickle (object {oid}): loading it runs code chosen by "
            "whoever wrote the store, so it was not loaded; pass unpickle=True to load it "
            "anyway (only for stores you trust)"
        )


class StepFailed(DaskperimentError, RuntimeError):
    """A step raised an exception that could not be sent back from the worker that ran it."""

    def __init__(self, description: str) -> None:
        self.description = description
        super().__init__(
            f"a step failed with {description}; the trial is recorded as failed with the "
            "step's traceback (see get_trial(...)['traceback'] or `daskperiment show`)"
        )


#: What to run when a stored trial cannot be read.
FSCK_ADVICE = (
    "run `daskperiment fsck` to see what is damaged; restore the store from a copy "
    "(`daskperiment pull` or `import` bring back only missing objects) after deleting the "
    "damaged files fsck names"
)


class DamagedTrial(DaskperimentError, LookupError):
    """A trial's ref or record exists but cannot be read (corrupt, missing or malformed)."""

    def __init__(self, trial_id: object, experiment_id: str, reason: str) -> None:
        self.trial_id = trial_id
        self.experiment_id = experiment_id
        self.reason = reason
        super().__init__(
            f"trial {trial_id} of experiment {experiment_id!r} is damaged ({reason}); {FSCK_ADVICE}"
        )


class SharingError(DaskperimentError, ValueError):
    """A bundle or a store cannot be shared as asked (e.g. a bundle of several experiments)."""
