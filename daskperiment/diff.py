"""What changed between two trials, decided from digests first and rendered like ``git diff``.

Every part of a trial record is addressed by a digest: its parameter set, its code tree (step
name -> source digest), its environment tree (category -> digest), each step's input and
output digests, its result and each metric. :func:`diff_trials` compares those digests and
reads an object only when its digest differs between the two trials, so unchanged parts cost
nothing whatever their size. Pickle objects are never loaded (loading them would run code):
a differing pickled metric is reported by its digest alone.

The result, a :class:`TrialDiff`, holds the changes as data (``parameters``, ``code``,
``environment``, ``steps``, ``result``, ``metrics``, ``trial``) and as *files*, one per changed
part, which ``str()`` renders in git's unified format::

    diff --git a/prepare_data b/prepare_data
    index 1a2b3c4..5d6e7f8
    --- a/prepare_data
    +++ b/prepare_data
    @@ -1,3 +1,3 @@
    -@ex
    +@ex.persist
     def prepare_data(a, b):
         return a + b

File names: ``parameters``; ``trial`` (seed, status, description); one per changed step's
source (the step's name); ``steps`` (input and output digests of every step); ``result``;
``metrics/<key>`` (summary statistics); ``environment/<category>``. ``bool(diff)`` is False
when the trials are identical in everything compared (timings and trial ids are not compared).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import daskperiment_store as store
from daskperiment_store import Link

from . import environment
from .diffmodel import (
    MISSING,
    DiffFile,
    PickledObject,
    TrialDiff,
)
from .errors import DamagedTrial, TrialNotFound
from .ids import parse_trial_id
from .provenance import inputs as input_files
from .provenance.diffparts import closure_part, source_part
from .reads import MALFORMED, read_json, read_trial
from .record import effective, trial_ref, trials_prefix

# ---------------------------------------------------------------------------------------
# Building a diff from two records
# ---------------------------------------------------------------------------------------


class _Reader:
    """Reads objects for one diff, each at most once, counting the reads."""

    def __init__(self, st: store.Store) -> None:
        self.st = st
        self.count = 0
        self._cache: dict[str, Any] = {}

    def get(self, oid: str) -> Any:
        """The decoded object, or :class:`PickledObject` for a pickle (never unpickled)."""
        if oid not in self._cache:
            self.count += 1
            kind, body = self.st.get_raw(oid)
            self._cache[oid] = PickledObject(oid) if kind == "pickle" else store.decode(kind, body)
        return self._cache[oid]

    def json(self, oid: str) -> Any:
        """A JSON object (a tree): any other kind is malformed (store.UnexpectedKind)."""
        if oid not in self._cache:
            self.count += 1
            self._cache[oid] = read_json(self.st, oid)
        return self._cache[oid]

    def record(self, oid: str, trial_id: int) -> dict[str, Any]:
        """A trial record (typed: JSON trial records only, see daskperiment.reads)."""
        self.count += 1
        return read_trial(self.st, oid, trial_id)


def _oid(value: Any) -> str | None:
    return value.oid if isinstance(value, Link) else None


def _record(reader: _Reader, oid: str, experiment_id: str, trial_id: Any) -> dict[str, Any]:
    """A trial's record, read as JSON only: a malformed (hostile) record raises what
    :func:`reads.read_trial` raises; :class:`DamagedTrial` when it cannot be read."""
    try:
        return reader.record(oid, int(trial_id))
    except MALFORMED:
        raise
    except store.errors.StoreError as exc:
        reason = f"its record: {type(exc).__name__}: {exc}"
        raise DamagedTrial(trial_id, experiment_id, reason) from None


def _record_oid(st: store.Store, experiment_id: str, trial_id: Any) -> str:
    try:
        return st.refs.get(trial_ref(experiment_id, int(trial_id)))
    except store.errors.CorruptRef as exc:
        raise DamagedTrial(trial_id, experiment_id, f"its ref: CorruptRef: {exc}") from None
    except (store.errors.RefNotFound, store.errors.InvalidRefName, ValueError, TypeError):
        found = (
            parse_trial_id(n.rsplit("/", 1)[1]) for n in st.refs.names(trials_prefix(experiment_id))
        )
        ids = [n for n in found if n is not None]
        raise TrialNotFound(trial_id, experiment_id, max(ids, default=0)) from None


def diff_trials(st: store.Store | None, experiment_id: str, a: int, b: int) -> TrialDiff:
    """What changed from trial ``a`` to trial ``b`` of ``experiment_id`` in ``st``.

    Reads the two records, then only the objects whose digests differ (code trees and the
    sources of changed steps, environment trees and changed categories, changed metrics).
    Raises :class:`~daskperiment.errors.TrialNotFound` for an unknown trial.
    """
    if st is None:  # nothing recorded yet
        raise TrialNotFound(a, experiment_id, 0)
    oid_a = _record_oid(st, experiment_id, a)
    oid_b = _record_oid(st, experiment_id, b)
    if oid_a == oid_b:  # the same record: identical without reading anything
        return TrialDiff(experiment_id, int(a), int(b))
    reader = _Reader(st)
    old = effective(_record(reader, oid_a, experiment_id, a))
    new = effective(_record(reader, oid_b, experiment_id, b))
    changes: dict[str, Any] = {}
    files: list[DiffFile] = []
    parts = (_parameters, _trial_fields, _code, closure_part, source_part, _steps, _result)
    for part in (*parts, _metrics, _environment):
        part(reader, old, new, changes, files)
    return TrialDiff(experiment_id, int(a), int(b), files, objects_read=reader.count, **changes)


def _changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{name: (old, new)}`` for names whose values differ, keeping first-seen order."""
    names = list(old) + [n for n in new if n not in old]
    return {
        n: (old.get(n, MISSING), new.get(n, MISSING))
        for n in names
        if n not in old or n not in new or old[n] != new[n] or type(old[n]) is not type(new[n])
    }


def _parameters(reader: _Reader, old: dict, new: dict, changes: dict, files: list) -> None:
    oid_a, oid_b = _digest(old, "parameters"), _digest(new, "parameters")
    if oid_a is not None and oid_a == oid_b:
        return
    # Records carry their parameters inline; the parameter object is only read if not.
    values_a = _params_of(reader, old, oid_a)
    values_b = _params_of(reader, new, oid_b)
    changes["parameters"] = _changed(values_a, values_b)
    if changes["parameters"] or oid_a != oid_b:
        files.append(
            DiffFile(
                "parameters",
                "parameters",
                _param_lines(values_a),
                _param_lines(values_b),
                oid_a,
                oid_b,
            )
        )


def _digest(record: dict, part: str) -> str | None:
    """The digest of a part of the record: from ``digests``, else from its link."""
    digests = record.get("digests")
    found = digests.get(part) if isinstance(digests, dict) else None
    return found if isinstance(found, str) else _oid(record.get(part))


def _params_of(reader: _Reader, record: dict, oid: str | None) -> dict[str, Any]:
    params = record.get("params")
    if isinstance(params, dict):
        return params
    link = _oid(record.get("parameters"))
    value = reader.json(link) if link else {}
    return value if isinstance(value, dict) else {}


def _param_lines(values: Mapping[str, Any]) -> list[str]:
    return [f"{name} = {values[name]!r}" for name in sorted(values)]


def _trial_fields(reader: _Reader, old: dict, new: dict, changes: dict, files: list) -> None:
    fields_a, fields_b = _fields(old), _fields(new)
    changes["trial"] = _changed(fields_a, fields_b)
    if changes["trial"]:
        files.append(DiffFile("trial", "trial", _field_lines(fields_a), _field_lines(fields_b)))


def _fields(record: dict) -> dict[str, Any]:
    out = {"seed": record.get("seed"), "status": record.get("status")}
    if record.get("description") is not None:
        out["description"] = record["description"]
    return out


def _field_lines(fields: Mapping[str, Any]) -> list[str]:
    return [f"{name}: {value}" for name, value in fields.items()]


def _code(reader: _Reader, old: dict, new: dict, changes: dict, files: list) -> None:
    oid_a, oid_b = _oid(old.get("code")), _oid(new.get("code"))
    changes["code"] = {}
    if oid_a == oid_b:
        return
    steps_a, steps_b = _code_tree(reader, oid_a), _code_tree(reader, oid_b)
    for name in list(steps_a) + [n for n in steps_b if n not in steps_a]:
        src_a, src_b = steps_a.get(name), steps_b.get(name)
        if src_a == src_b:
            continue  # same digest: the source is not read
        text_a = reader.get(src_a) if src_a else MISSING
        text_b = reader.get(src_b) if src_b else MISSING
        changes["code"][name] = (text_a, text_b)
        files.append(DiffFile(name, "code", _text_lines(text_a), _text_lines(text_b), src_a, src_b))


def _code_tree(reader: _Reader, oid: str | None) -> dict[str, str]:
    if oid is None:
        return {}
    tree = reader.json(oid)
    return {name: link.oid for name, link in tree.get("steps", [])}


def _text_lines(text: Any) -> list[str] | None:
    if text is MISSING:
        return None
    if isinstance(text, PickledObject):
        return [f"(pickled object {text.oid}, not loaded)"]
    return str(text).splitlines()


def _steps(reader: _Reader, old: dict, new: dict, changes: dict, files: list) -> None:
    steps_a, steps_b = _steps_of(old), _steps_of(new)
    changes["steps"] = _changed(steps_a, steps_b)
    if changes["steps"]:
        files.append(DiffFile("steps", "steps", _step_lines(steps_a), _step_lines(steps_b)))


def _steps_of(record: dict) -> dict[str, dict[str, Any]]:
    """Step label -> digests, in the order the steps started (records keep keys sorted)."""
    steps = record.get("steps") or {}
    order = sorted(steps, key=lambda k: (_started(steps[k]), k))
    return {label: _step_digests(steps[label]) for label in order}


def _started(entry: Any) -> float:
    started = entry.get("started") if isinstance(entry, Mapping) else None
    return started if isinstance(started, int | float) else math.inf


def _step_digests(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "inputs": entry.get("inputs"),
        "output": entry.get("output"),
        "persisted": _oid(entry.get("persisted")),
        "reused": bool(entry.get("reused")),
        **({"files": dict(entry["files"])} if entry.get("files") else {}),
    }


def _step_lines(steps: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = []
    for label, d in steps.items():
        flags = (" persisted" if d["persisted"] else "") + (" reused" if d["reused"] else "")
        lines.append(f"{label}: inputs {d['inputs']} output {d['output']}{flags}")
        lines += input_files.file_lines(d)
    return lines


def _result(reader: _Reader, old: dict, new: dict, changes: dict, files: list) -> None:
    res_a, res_b = _result_of(old), _result_of(new)
    if res_a == res_b:
        return
    changes["result"] = (res_a, res_b)
    files.append(
        DiffFile(
            "result",
            "result",
            _field_lines(res_a),
            _field_lines(res_b),
            res_a["digest"],
            res_b["digest"],
        )
    )


def _result_of(record: dict) -> dict[str, Any]:
    # The record keeps the result's type and repr inline: no need to load the result.
    return {
        "type": record.get("result_type"),
        "value": record.get("result_repr"),
        "digest": _digest(record, "result"),
    }


def _metrics(reader: _Reader, old: dict, new: dict, changes: dict, files: list) -> None:
    keys_a = {k: _oid(v) for k, v in (old.get("metrics") or {}).items()}
    keys_b = {k: _oid(v) for k, v in (new.get("metrics") or {}).items()}
    changes["metrics"] = {}
    for key in sorted(set(keys_a) | set(keys_b)):
        oid_a, oid_b = keys_a.get(key), keys_b.get(key)
        if oid_a == oid_b:
            continue  # same digest: the series is not read
        stats_a = _stats(reader.get(oid_a)) if oid_a else MISSING
        stats_b = _stats(reader.get(oid_b)) if oid_b else MISSING
        changes["metrics"][key] = (stats_a, stats_b)
        files.append(
            DiffFile(
                f"metrics/{key}",
                "metrics",
                _stat_lines(stats_a),
                _stat_lines(stats_b),
                oid_a,
                oid_b,
            )
        )


def _stats(series: Any) -> Any:
    """Summary statistics of a metric series (the pickled stand-in as is)."""
    if isinstance(series, PickledObject):
        return series
    values = list(getattr(series, "values", series))
    epochs = list(getattr(series, "index", range(len(values))))
    out: dict[str, Any] = {"count": len(values)}
    if values:
        out["epochs"] = f"{_num(epochs[0])}..{_num(epochs[-1])}"
        out["first"], out["last"] = _num(values[0]), _num(values[-1])
        numbers = [_num(v) for v in values if _is_number(v)]
        if numbers:
            out["min"], out["max"] = min(numbers), max(numbers)
            out["mean"] = _num(math.fsum(numbers) / len(numbers))
    return out


def _is_number(value: Any) -> bool:
    try:
        return not isinstance(value, str | bytes) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _num(value: Any) -> Any:
    """Plain Python numbers (numpy scalars unwrapped) for display and JSON."""
    item = getattr(value, "item", None)
    value = item() if callable(item) else value
    return round(value, 12) if isinstance(value, float) else value


def _stat_lines(stats: Any) -> list[str] | None:
    if stats is MISSING:
        return None
    if isinstance(stats, PickledObject):
        return [f"(pickled object {stats.oid}, not loaded)"]
    return [f"{name}: {value}" for name, value in stats.items()]


def _environment(reader: _Reader, old: dict, new: dict, changes: dict, files: list) -> None:
    oid_a, oid_b = _oid(old.get("environment")), _oid(new.get("environment"))
    changes["environment"] = {}
    if oid_a == oid_b:
        return
    cats_a, cats_b = _env_tree(reader, oid_a), _env_tree(reader, oid_b)
    known = [c for c in environment.CATEGORIES if c in cats_a or c in cats_b]
    extra = sorted((set(cats_a) | set(cats_b)) - set(known))
    for category in known + extra:
        cat_a, cat_b = cats_a.get(category), cats_b.get(category)
        if cat_a == cat_b:
            continue  # same digest: the category is not read
        value_a = reader.get(cat_a) if cat_a else MISSING
        value_b = reader.get(cat_b) if cat_b else MISSING
        changes["environment"][category] = (value_a, value_b)
        files.append(
            DiffFile(
                f"environment/{category}",
                "environment",
                _env_lines(category, value_a),
                _env_lines(category, value_b),
                cat_a,
                cat_b,
            )
        )


def _env_tree(reader: _Reader, oid: str | None) -> dict[str, str]:
    if oid is None:
        return {}
    tree = reader.json(oid)
    return {name: link.oid for name, link in tree.get("categories", {}).items()}


def _env_lines(category: str, value: Any) -> list[str] | None:
    if value is MISSING:
        return None
    if isinstance(value, PickledObject):
        return [f"(pickled object {value.oid}, not loaded)"]
    return environment.render(category, value)
