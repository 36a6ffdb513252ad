"""What the comparison page and the diff page show besides the diff text.

The comparison of N trials is built from the cached history table (parameters, result,
status, timings: no record read) plus, for tags and notes, the records of the compared
trials, which are few. Input files and local source files come from the records: per step
``files`` (``{path: digest}``) and per trial ``source`` (a source-tree oid), when recorded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

from .query import format_cell, parameter_columns, statuses

#: Most trials one comparison page shows (its table and its curves).
MAX_COMPARE = 100
#: Columns of the history shown for every compared trial.
RESULT_COLUMNS = ("Result", "Process Time", "Finished", "Description")
#: Record fields shown as tags and notes when a record has them.
ANNOTATIONS = ("tags", "notes", "note")


def differing(frame: pd.DataFrame, ids: list[int]) -> tuple[list[str], list[str]]:
    """``(parameters whose values differ among trials ids, parameters equal in all)``."""
    rows = frame.loc[ids]
    differ: list[str] = []
    same: list[str] = []
    for name in parameter_columns(frame):
        texts = {format_cell(v) if pd.notna(v) else "\0missing" for v in rows[name].tolist()}
        (differ if len(texts) > 1 else same).append(name)
    return differ, same


def comparison(
    frame: pd.DataFrame, ids: list[int], records: Mapping[int, Mapping[str, Any]]
) -> dict[str, Any]:
    """The comparison table of trials ``ids``: one row per trial, JSON-ready."""
    differ, same = differing(frame, ids)
    rows = frame.loc[ids]
    status = statuses(rows).tolist()
    results = [c for c in RESULT_COLUMNS if c in frame.columns]
    annotations = [name for name in ANNOTATIONS if any(records.get(i, {}).get(name) for i in ids)]
    table = []
    for position, trial_id in enumerate(ids):
        row = rows.loc[trial_id]
        record = records.get(trial_id, {})
        table.append(
            {
                "id": trial_id,
                "status": status[position],
                "params": [format_cell(row[name]) for name in differ],
                "results": [format_cell(row[name]) for name in results],
                "annotations": [_annotation(record.get(name)) for name in annotations],
            }
        )
    first = frame.loc[ids[0]]
    return {
        "ids": ids,
        "differing": differ,
        "same": [(name, format_cell(first[name])) for name in same],
        "results": results,
        "annotations": annotations,
        "rows": table,
    }


def _annotation(value: Any) -> str:
    if isinstance(value, (list, tuple, set)):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def changed_files(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, str]]:
    """Input files that differ between two records, per step: ``[{step, path, a, b}]``
    (an empty digest: the trial did not read the file). Empty when neither records files."""
    steps_a, steps_b = _steps(a), _steps(b)
    out = []
    for step in sorted(set(steps_a) | set(steps_b)):
        files_a = _files(steps_a.get(step))
        files_b = _files(steps_b.get(step))
        for path in sorted(set(files_a) | set(files_b)):
            old, new = files_a.get(path, ""), files_b.get(path, "")
            if old != new:
                out.append({"step": step, "path": path, "a": old, "b": new})
    return out


def source_change(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[str, str] | None:
    """The two trials' source-tree oids when they differ (None: same, or not recorded)."""
    old, new = _oid(a.get("source")), _oid(b.get("source"))
    if (old or new) and old != new:
        return old, new
    return None


def _steps(record: Mapping[str, Any]) -> dict[str, Any]:
    steps = record.get("steps") or {}
    return steps if isinstance(steps, dict) else {}


def _files(step: Any) -> dict[str, str]:
    files = step.get("files") if isinstance(step, dict) else None
    if not isinstance(files, dict):
        return {}
    return {str(path): _oid(digest) for path, digest in files.items()}


_LINK = re.compile(r"^Link\(oid='([0-9a-f]+)'\)$")


def _oid(value: Any) -> str:
    # a JSON-ready record keeps a link as its repr, Link(oid='...'), or as {"oid": ...}
    if isinstance(value, dict):
        return str(value.get("oid") or "")
    text = "" if value is None else str(value)
    found = _LINK.match(text)
    return found.group(1) if found else text
