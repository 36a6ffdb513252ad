"""Parallel coordinates over an experiment's history, and the brushes that filter the table.

An *axis* is a parameter column or the result. A numeric column is a number axis (log-able
when all its values are positive); any other column is a category axis whose values are
placed in the order of their text. A *brush* is a range held on one axis in the browser:
``{"axis": name, "min": x, "max": y}`` on a number axis, ``{"axis": name, "values": [...]}``
(the categories' texts) on a category axis. The history endpoint takes the brushes as JSON in
its ``brush`` parameter and keeps the trials inside every brush, exactly as the page draws
them.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from .query import QueryError, format_cell, parameter_columns

RESULT = "Result"
#: More brushes than this in one request is not something a person draws.
MAX_BRUSHES = 50


def axes_of(frame: pd.DataFrame) -> list[str]:
    """The axes: every parameter column, then the result."""
    names = parameter_columns(frame)
    return [*names, RESULT] if RESULT in frame.columns else names


def _numeric(column: pd.Series) -> pd.Series | None:
    """The column as floats, or None when it is not a number column."""
    if pd.api.types.is_bool_dtype(column):
        return None
    if pd.api.types.is_numeric_dtype(column):
        return column.astype(float)
    converted = pd.to_numeric(column, errors="coerce")
    if converted.notna().sum() == column.notna().sum() and column.notna().any():
        return converted.astype(float)  # an object column holding only numbers
    return None


def _texts(column: pd.Series) -> list[str]:
    return [format_cell(v) for v in column.tolist()]


def parallel_data(frame: pd.DataFrame) -> dict[str, Any]:
    """The trials of ``frame`` as axes of values, JSON-ready (NaN: missing, sent as null).

    ``{"ids": [...], "status": [...], "axes": [{"name", "kind": "number", "values",
    "min", "max", "positive"} | {"name", "kind": "category", "categories", "values"
    (index into categories)}]}``
    """
    axes: list[dict[str, Any]] = []
    for name in axes_of(frame):
        column = frame[name]
        numbers = _numeric(column)
        if numbers is not None:
            finite = numbers[np.isfinite(numbers.to_numpy())]
            values = [None if not math.isfinite(v) else v for v in numbers.tolist()]
            axes.append(
                {
                    "name": name,
                    "kind": "number",
                    "values": values,
                    "min": float(finite.min()) if len(finite) else None,
                    "max": float(finite.max()) if len(finite) else None,
                    "positive": bool(len(finite) and finite.min() > 0),
                }
            )
            continue
        texts = _texts(column)
        present = column.notna().tolist()
        categories = sorted({t for t, p in zip(texts, present, strict=True) if p})
        position = {c: i for i, c in enumerate(categories)}
        values = [position[t] if p else None for t, p in zip(texts, present, strict=True)]
        axes.append({"name": name, "kind": "category", "categories": categories, "values": values})
    return {"ids": [int(i) for i in frame.index], "axes": axes}


def parse_brushes(text: str) -> tuple[dict[str, Any], ...]:
    """The ``brush`` parameter: a JSON list of brushes (see the module docstring)."""
    if not text:
        return ()
    try:
        brushes = json.loads(text)
    except ValueError as exc:
        raise QueryError(f"brush must be a JSON list of brushes: {exc}") from None
    if not isinstance(brushes, list) or len(brushes) > MAX_BRUSHES:
        raise QueryError(f"brush must be a JSON list of at most {MAX_BRUSHES} brushes")
    for brush in brushes:
        ok = isinstance(brush, dict) and isinstance(brush.get("axis"), str)
        numeric = ok and all(isinstance(brush.get(k), (int, float)) for k in ("min", "max"))
        listed = ok and isinstance(brush.get("values"), list)
        if not (numeric or listed):
            raise QueryError(
                f"a brush is {{'axis': name, 'min': x, 'max': y}} or {{'axis': name, "
                f"'values': [...]}}, not {json.dumps(brush)[:100]}"
            )
    return tuple(brushes)


def brush_mask(frame: pd.DataFrame, brushes: tuple[dict[str, Any], ...]) -> np.ndarray:
    """Rows of ``frame`` inside every brush (a trial missing a brushed value is outside)."""
    mask = np.ones(len(frame), dtype=bool)
    for brush in brushes:
        name = brush["axis"]
        if name not in frame.columns:
            raise QueryError(f"cannot brush unknown axis {name!r}; axes are {axes_of(frame)}")
        column = frame[name]
        if "values" in brush:
            wanted = {str(v) for v in brush["values"]}
            inside = np.array([t in wanted for t in _texts(column)], dtype=bool)
            mask &= inside & column.notna().to_numpy()
            continue
        numbers = _numeric(column)
        if numbers is None:
            raise QueryError(f"axis {name!r} holds categories: brush it with 'values'")
        low, high = sorted((float(brush["min"]), float(brush["max"])))
        values = numbers.to_numpy()
        with np.errstate(invalid="ignore"):
            mask &= (values >= low) & (values <= high)
    return mask
