"""The filter language of the history, shared by ``daskperiment log --where``,
``Experiment.get_history(where=...)`` and the dashboard (one implementation).

Filter syntax (space-separated terms, all must hold; quote values with spaces):

- ``a>1``, ``b<=0.5``, ``lr=0.01``, ``model!=svm``, ``optimizer~ad`` (``~``: contains,
  case-insensitive). Column names are matched case-insensitively; ``id`` is the trial id.
- a bare word matches rows where any cell contains it (case-insensitive).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is imported by the functions that take frames
    import pandas as pd

ID_COLUMN = "Trial ID"
_TERM = re.compile(r"^(?P<name>[^<>=!~]+?)\s*(?P<op>>=|<=|!=|==|=|>|<|~)(?P<value>.*)$")


class QueryError(ValueError):
    """A history query (filter, sort column, page) the table cannot answer; says which part."""


def _parse_value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("nan", "none", "null", ""):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def resolve_column(frame: pd.DataFrame, name: str) -> str:
    return resolve_name(list(frame.columns), name)


def resolve_name(columns: list[str], name: str) -> str:
    """The column ``name`` designates (any case; ``id`` the trial id) among ``columns``."""
    wanted = name.strip().lower()
    if wanted in ("id", "trial", "trial id", "trial_id"):
        return ID_COLUMN
    for column in columns:
        if str(column).lower() == wanted:
            return column
    names = ", ".join([ID_COLUMN, *map(str, columns)])
    raise QueryError(f"unknown column {name.strip()!r} in filter; columns are: {names}")


def parse_term(term: str) -> tuple[str, str, Any] | None:
    """``(column name, operator, value)`` of a comparison term; None for a bare word."""
    match = _TERM.match(term)
    if match is None:
        return None
    return match["name"], match["op"], _parse_value(match["value"])


def split_terms(expression: str) -> list[str]:
    """The terms of a filter expression (shell-like quoting)."""
    try:
        return shlex.split(expression)
    except ValueError as exc:
        raise QueryError(f"cannot read filter {expression!r}: {exc}") from None


def _compare(series: pd.Series, op: str, value: Any) -> pd.Series:
    import pandas as pd

    if value is None:
        missing = series.isna()
        return ~missing if op == "!=" else missing
    if op == "~":
        return series.astype(str).str.contains(str(value), case=False, regex=False)
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if numeric and series.dtype != object:
        left: pd.Series = pd.to_numeric(series, errors="coerce")
    elif numeric:
        left = pd.to_numeric(series, errors="coerce")
    elif isinstance(value, bool):
        left, value = series.map(lambda v: str(v).lower()), str(value).lower()
    else:
        left, value = series.astype(str), str(value)
    ops = {
        "=": left.__eq__,
        "==": left.__eq__,
        "!=": left.__ne__,
        ">": left.__gt__,
        "<": left.__lt__,
        ">=": left.__ge__,
        "<=": left.__le__,
    }
    return ops[op](value).fillna(False).astype(bool)


def text_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as the text a bare filter word is searched in (as the table shows it)."""
    import pandas as pd

    out = {}
    for name, column in frame.items():
        if pd.api.types.is_datetime64_any_dtype(column):
            out[name] = column.dt.strftime("%Y-%m-%d %H:%M:%S").fillna("")
        elif pd.api.types.is_timedelta64_dtype(column):
            # formatting 10,000 timedeltas one by one is slow and nobody searches for them
            out[name] = pd.Series("", index=frame.index)
        else:
            out[name] = column.astype(str)
    return pd.DataFrame(out, index=frame.index)


def filter_mask(
    frame: pd.DataFrame, text: Callable[[], pd.DataFrame], expression: str
) -> pd.Series:
    """Rows of ``frame`` matching the filter ``expression``; ``text()`` gives the cells as
    strings (only called for bare words, and may be cached by the caller)."""
    import pandas as pd

    mask = pd.Series(True, index=frame.index)
    for term in split_terms(expression):
        parsed = parse_term(term)
        if parsed is None:
            cells = text()
            hit = cells.apply(lambda col, t=term: col.str.contains(t, case=False, regex=False))
            mask &= hit.any(axis=1)
            continue
        name, op, value = parsed
        column = resolve_column(frame, name)
        series = frame.index.to_series() if column == ID_COLUMN else frame[column]
        mask &= _compare(series, op, value)
    return mask


def sort_frame(frame: pd.DataFrame, column: str, descending: bool) -> pd.DataFrame:
    """Sort by ``column`` (or the trial id), missing values last, ties by trial id."""
    if column == ID_COLUMN:
        return frame.sort_index(ascending=not descending, kind="stable")
    if column not in frame.columns:
        raise QueryError(f"cannot sort by unknown column {column!r}")
    series = frame[column]
    try:
        order = series.sort_values(ascending=not descending, na_position="last", kind="stable")
    except TypeError:
        # mixed types in one parameter column (1, "a"): sort them by their text instead
        order = (
            series.astype(str)
            .where(series.notna())
            .sort_values(ascending=not descending, na_position="last", kind="stable")
        )
    return frame.loc[order.index]
