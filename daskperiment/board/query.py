"""Server-side filtering, sorting and paging of an experiment's history table.

The history is one pandas DataFrame (from ``Experiment.get_history``); a browser asks for one
page at a time, so 10,000 trials never travel to the page at once.

Filter syntax (space-separated terms, all must hold; quote values with spaces):

- ``a>1``, ``b<=0.5``, ``lr=0.01``, ``model!=svm``, ``optimizer~ad`` (``~``: contains,
  case-insensitive). Column names are matched case-insensitively; ``id`` is the trial id.
- a bare word matches rows where any cell contains it (case-insensitive).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from ..search import (  # noqa: F401 - the filter language lives in daskperiment/search.py
    ID_COLUMN,
    QueryError,
    filter_mask,
    sort_frame,
    text_cells,
)

#: The history's fixed columns (the seed's) plus those ``verbose=True`` adds; every other
#: column is a parameter.
FIXED_COLUMNS = (
    "Result",
    "Result Type",
    "Success",
    "Finished",
    "Process Time",
    "Description",
    "Seed",
    "Started",
    "Status",
    "Reused Steps",
    "Tags",
    "Global ID",
    "Origin",
)
#: Columns used for filtering by status but not shown as a column of their own.
HIDDEN_COLUMNS = ("Status",)
MAX_PAGE_SIZE = 500
MAX_CELL_CHARS = 200


@dataclass(frozen=True)
class HistoryQuery:
    """One request for a page of the history."""

    page: int = 1
    size: int = 50
    sort: str = ID_COLUMN
    descending: bool = False
    filter: str = ""
    status: str = "all"  # all | success | failed | running


def status_of(success: Any) -> str:
    """Map the history's ``Success`` cell to a status word (missing = still running)."""
    if success is True or success is np.True_:
        return "success"
    if success is False or success is np.False_:
        return "failed"
    return "running"


def parameter_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of ``frame`` that hold parameters (everything but the fixed ones)."""
    return [str(c) for c in frame.columns if c not in FIXED_COLUMNS and not _is_digest_col(c)]


def shown_columns(frame: pd.DataFrame) -> list[str]:
    """The columns the table shows (all but the hidden status)."""
    return [str(c) for c in frame.columns if c not in HIDDEN_COLUMNS]


def _is_digest_col(name: Any) -> bool:
    # verbose history adds digest columns ("Parameters Digest", "code" ...); they are not
    # parameters, whatever their exact names turn out to be.
    return isinstance(name, str) and "digest" in name.lower()


def format_cell(value: Any) -> str:
    """Render one history cell as short display text (never HTML: callers escape)."""
    if value is None or value is pd.NaT:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (pd.Timedelta, timedelta)):
        return format_duration(pd.Timedelta(value).total_seconds())
    text = str(value)
    if len(text) > MAX_CELL_CHARS:
        text = text[: MAX_CELL_CHARS - 1] + "\u2026"
    return text


def format_duration(seconds: float) -> str:
    """``0.014 s``, ``12.5 s``, ``1:02:03`` — readable at a glance in a table."""
    if seconds < 60:
        return f"{seconds:.3g} s"
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def select(
    frame: pd.DataFrame,
    text: Callable[[], pd.DataFrame],
    query: HistoryQuery,
    keep: np.ndarray | None = None,
) -> pd.DataFrame:
    """The rows of ``frame`` the query's filter and status (and ``keep``, a boolean mask over
    ``frame`` such as the parallel-coordinates brushes) let through, in the query's order."""
    mask = np.ones(len(frame), dtype=bool) if keep is None else keep
    if query.filter.strip():
        mask = mask & filter_mask(frame, text, query.filter).to_numpy()
    selected = frame[mask]
    if query.status != "all":
        if query.status not in ("success", "failed", "running"):
            raise QueryError(
                f"status must be all, success, failed or running, not {query.status!r}"
            )
        statuses = _statuses(selected)
        selected = selected[(statuses == query.status).to_numpy()]
    return sort_frame(selected, query.sort, query.descending)


def run_query(
    frame: pd.DataFrame,
    text: Callable[[], pd.DataFrame],
    query: HistoryQuery,
    keep: np.ndarray | None = None,
) -> dict[str, Any]:
    """Apply ``query`` to the history ``frame``; return one JSON-ready page
    (``text``: see :func:`filter_mask`; ``keep``: see :func:`select`)."""
    if not 1 <= query.size <= MAX_PAGE_SIZE:
        raise QueryError(f"page size must be between 1 and {MAX_PAGE_SIZE}, got {query.size}")
    if query.page < 1:
        raise QueryError(f"page must be 1 or more, got {query.page}")
    selected = select(frame, text, query, keep)
    pages = max(1, math.ceil(len(selected) / query.size))
    page = min(query.page, pages)
    chunk = selected.iloc[(page - 1) * query.size : page * query.size]
    columns = shown_columns(frame)
    return {
        "columns": [ID_COLUMN, *columns],
        "params": parameter_columns(frame),
        "rows": _rows(chunk, columns),
        "total": len(frame),
        "matched": len(selected),
        "page": page,
        "pages": pages,
        "size": query.size,
        "sort": query.sort,
        "descending": query.descending,
    }


def _statuses(frame: pd.DataFrame) -> pd.Series:
    if "Status" in frame.columns:
        # an interrupted trial (its process died) or a damaged one (its record cannot be
        # read) is a failure to whoever filters
        statuses = frame["Status"].astype(str).str.lower()
        return statuses.replace({"interrupted": "failed", "damaged": "failed"})
    if "Success" not in frame.columns:
        return pd.Series("success", index=frame.index)
    return frame["Success"].map(status_of)


def _rows(chunk: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    statuses = _statuses(chunk).tolist()
    success = columns.index("Success") + 1 if "Success" in columns else None
    rows = []
    for trial_id, values, status in zip(
        chunk.index, chunk[columns].itertuples(index=False), statuses, strict=True
    ):
        cells = [str(int(trial_id)), *(format_cell(v) for v in values)]
        if status == "running" and success is not None:
            cells[success] = "running"  # not "False": it has not failed (yet)
        rows.append({"id": int(trial_id), "status": status, "cells": cells})
    return rows


def statuses(frame: pd.DataFrame) -> pd.Series:
    """``success`` | ``failed`` | ``running`` for every trial of the history."""
    return _statuses(frame)
