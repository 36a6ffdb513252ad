"""``--where`` and ``--sort`` on the plain columns of :mod:`daskperiment.quicklog`.

The filter language is :mod:`daskperiment.search`'s (its parser: terms, columns, values); this
module evaluates it the way pandas does on the history DataFrame, for the column types where
that is plain Python (numbers, bools, text). Anything else raises
:class:`~daskperiment.quicklog.Unsupported` and ``log`` takes the DataFrame path.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from . import search
from .quicktable import Column, Table, Unsupported

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}


def is_missing(kind: str, value: Any) -> bool:
    if kind in ("datetime", "timedelta", "str"):
        return value is None
    return value is None or (type(value) is float and math.isnan(value))


def as_text(kind: str, value: Any) -> str | None:
    """``Series.astype(str)`` of one cell: None for a missing one (pandas' string dtype keeps
    it missing, and missing cells match nothing)."""
    if kind in ("datetime", "timedelta"):
        raise Unsupported("text of a time column")
    if is_missing(kind, value):
        return None
    if kind == "float" or type(value) is float:
        return repr(float(value))
    return _plain_str(value)


def _plain_str(value: Any) -> str:
    if not isinstance(value, str | int | float | type(None)):
        raise Unsupported(f"text of a {type(value).__name__}")
    return str(value)


def _cell_text(kind: str, value: Any) -> str | None:
    """search.text_cells of one cell: what a bare word is searched in."""
    if kind == "datetime":
        return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""
    if kind == "timedelta":
        return ""
    return as_text(kind, value)


def _contains(text: str | None, word: str) -> bool:
    # pandas' str.contains(case=False, regex=False): both sides upper-cased
    return text is not None and word.upper() in text.upper()


def _numeric(kind: str, values: list[Any]) -> list[Any]:
    """pd.to_numeric(series, errors='coerce'), for the kinds where that is the values."""
    if kind in ("int", "float", "bool"):
        return values
    if kind == "object" and all(
        v is None or (type(v) in (int, float) and abs(v) <= 2**53) for v in values
    ):
        return [math.nan if v is None else v for v in values]
    raise Unsupported(f"numbers of a {kind} column")


def _compare(kind: str, values: list[Any], op: str, value: Any) -> list[bool]:
    if value is None:
        missing = [is_missing(kind, v) for v in values]
        return [not m for m in missing] if op == "!=" else missing
    if op == "~":
        word = str(value)
        return [_contains(as_text(kind, v), word) for v in values]
    compare = _OPS[op]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [compare(v, value) for v in _numeric(kind, values)]
    if isinstance(value, bool):
        if kind not in ("int", "float", "bool", "object"):
            raise Unsupported("a bool compared with a time column")
        wanted = str(value).lower()  # Series.map(lambda v: str(v).lower()): no missing
        return [compare(_plain_str(v).lower(), wanted) for v in values]
    texts = [as_text(kind, v) for v in values]
    # missing cells of pandas' string dtype: only != holds
    return [op == "!=" if t is None else compare(t, value) for t in texts]


def matching(table: Table, expression: str) -> list[int]:
    """Positions of the rows of ``table`` matching the filter ``expression``."""
    keep = [True] * len(table.index)
    names = [c.name for c in table.columns]
    for term in search.split_terms(expression):
        parsed = search.parse_term(term)
        if parsed is None:
            texts = [[_cell_text(c.kind, v) for v in c.values] for c in table.columns]
            hits = [any(_contains(col[i], term) for col in texts) for i in range(len(keep))]
        else:
            name, op, value = parsed
            column = search.resolve_name(names, name)
            if column == search.ID_COLUMN:
                hits = _compare("int", table.index, op, value)
            else:
                col = table.column(column)
                hits = _compare(col.kind, col.values, op, value)
        keep = [k and h for k, h in zip(keep, hits, strict=True)]
    return [i for i, k in enumerate(keep) if k]


def sort_order(table: Table, spec: str) -> list[int]:
    """Positions in the order teams.sort gives: stable, missing values last."""
    name, _, order = spec.rpartition(":") if ":" in spec else (spec, "", "asc")
    if order.lower() not in ("asc", "desc"):
        name, order = spec, "asc"
    descending = order.lower() == "desc"
    try:
        column = search.resolve_name([c.name for c in table.columns], name)
    except search.QueryError:
        raise Unsupported("unknown sort column") from None  # the DataFrame path says why
    positions = list(range(len(table.index)))
    if column == search.ID_COLUMN:
        return sorted(positions, key=table.index.__getitem__, reverse=descending)
    col = table.column(column)
    present = [i for i in positions if not is_missing(col.kind, col.values[i])]
    missing = [i for i in positions if is_missing(col.kind, col.values[i])]
    keys = _sort_keys(col)
    return sorted(present, key=keys.__getitem__, reverse=descending) + missing


def _sort_keys(col: Column) -> list[Any]:
    if col.kind in ("int", "float", "bool", "datetime", "timedelta", "str"):
        return col.values
    present = [v for v in col.values if not is_missing(col.kind, v)]
    if all(type(v) is str for v in present) or all(type(v) in (int, float) for v in present):
        return col.values
    raise Unsupported("sorting mixed values")
