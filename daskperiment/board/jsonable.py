"""Turning records, DataFrame cells and numpy values into plain JSON-ready data."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd


def jsonable(value: Any) -> Any:
    """A copy of ``value`` made only of dict/list/str/int/float/bool/None.

    NaN and infinities become None (JSON has no spelling for them); timestamps become ISO
    strings; durations seconds; anything else unknown its ``repr`` (shown as text, never run).
    """
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if value is pd.NaT:
        return None
    if isinstance(value, (pd.Timestamp, datetime, date)):
        return value.isoformat()
    if isinstance(value, (pd.Timedelta, timedelta)):
        return pd.Timedelta(value).total_seconds()
    if isinstance(value, bytes):
        return value.hex()
    return repr(value)
