"""The history DataFrame, built column by column from history rows (:mod:`.history` reads
the rows; this module only turns them into the seed's table)."""

from __future__ import annotations

import contextlib
import datetime
import gc
import itertools
import math
import operator
from collections.abc import Iterable, Iterator
from typing import Any

from .record import SUCCESS


def frame(rows: list[dict[str, Any]], parameter_order: Iterable[str] = (), verbose: bool = False):
    """The history DataFrame: parameter columns, then :data:`COLUMNS` (+ verbose ones).

    Built column by column from the rows (one pass per column, type checks on sets of types,
    never one Python call per cell where a C loop does), with the cyclic garbage collector
    paused: the rows are plain acyclic data, and a collection would walk every object of
    pandas and dask each time the allocation count crosses its threshold."""
    import numpy as np
    import pandas as pd

    with paused_gc():
        params, results, result_types, statuses, finished, seconds, descriptions, ids = _fields(
            rows, _FRAME_FIELDS
        )
        data: dict[str, Any] = {}
        for name in _parameter_names(rows, params, parameter_order):
            data[name] = _column(list(map(operator.methodcaller("get", name, np.nan), params)))
        data["Result"] = _column([math.nan if v is None else v for v in results])
        data["Result Type"] = pd.Series(list(result_types), dtype=object)
        data["Success"] = pd.Series([s == SUCCESS for s in statuses], dtype=bool)
        local = datetime.datetime.fromtimestamp  # naive local time, as _local_time
        data["Finished"] = pd.to_datetime([None if e is None else local(e) for e in finished])
        # Microseconds, as the timer's resolution is shown elsewhere (00:00:00.014183), not
        # the nanosecond digits a float of seconds would otherwise print; a float array
        # converts in one vectorized step (a list goes object by object: 10x slower).
        times = np.array([math.nan if v is None else v for v in seconds], dtype=float)
        data["Process Time"] = pd.to_timedelta(times, unit="s").round("us")
        data["Description"] = pd.Series(
            [np.nan if d is None else d for d in descriptions], dtype=object
        )
        if verbose:
            data.update(_verbose_columns(rows))
        index = pd.Index(list(ids), name="Trial ID", dtype="int64")
        for key, col in data.items():
            # Series keep their dtype (object columns stay object, never pandas' str dtype)
            if isinstance(col, pd.Series):
                col.index = index
            else:
                data[key] = pd.Series(col, index=index)
        labels = _labels(list(data))
        if labels is None:
            return pd.DataFrame(data, index=index)
        # pandas would build the labels from the dict's keys: number the columns, then name
        # them with the labels already built
        table = pd.DataFrame(dict(enumerate(data.values())), index=index)
        table.columns = labels
        return table


def _labels(names: list[str]) -> Any:
    """The column labels as the Index pandas infers for them (its default ``str`` dtype),
    built from Arrow buffers when that dtype is Arrow-backed; None: let pandas build them.

    pandas builds them with ``pyarrow.array``, whose first call in a process imports
    pyarrow's pandas layer (it compiles a version parser): ~3 ms, most of the fixed cost of
    a fresh process's first history table. The labels are the same either way."""
    import numpy as np
    import pandas as pd

    dtype = pd.api.types.pandas_dtype("str")
    arrow = isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"
    if not arrow or dtype.na_value is not np.nan or not all(type(n) is str for n in names):
        return None
    import pyarrow as pa

    try:
        data = [name.encode() for name in names]
    except UnicodeEncodeError:  # a lone surrogate: pandas says what it makes of it
        return None
    offsets = np.zeros(len(data) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in data], out=offsets[1:])
    array = pa.LargeStringArray.from_buffers(
        len(data), pa.py_buffer(offsets), pa.py_buffer(b"".join(data))
    )
    try:
        labels = pd.Index(pd.arrays.ArrowStringArray(array, dtype=dtype))
    except TypeError:  # a pandas whose ArrowStringArray takes no dtype
        return None
    return labels if labels.dtype == dtype else None


#: Row fields the DataFrame's own columns are made of, in :func:`frame`'s order.
_FRAME_FIELDS = (
    "params",
    "result",
    "result_type",
    "status",
    "finished",
    "process_time",
    "description",
    "trial_id",
)


def _fields(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """One tuple per field, of that field's value in every row (in C: ``itemgetter`` and
    ``zip``); a row lacking a field raises KeyError, as reading it row by row would."""
    if not rows:
        return [() for _ in fields]
    return list(zip(*map(operator.itemgetter(*fields), rows), strict=True))


def _parameter_names(
    rows: list[dict[str, Any]], params: tuple[dict[str, Any], ...], declared: Iterable[str]
) -> list[str]:
    """Parameter columns: in declaration order (``declared``, then as each trial recorded
    its own), keeping only those some trial has; then the others, in order of appearance."""
    names = dict.fromkeys(declared)
    orders = filter(None, map(operator.methodcaller("get", "parameter_order"), rows))
    names.update(dict.fromkeys(itertools.chain.from_iterable(orders)))
    present = dict.fromkeys(itertools.chain.from_iterable(params))
    return [n for n in names if n in present] + [n for n in present if n not in names]


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector paused (if it runs at all) while a table is built."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _verbose_columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    import pandas as pd

    def obj(values: list) -> pd.Series:
        return pd.Series(values, dtype=object)

    status = ["interrupted" if r.get("interrupted") else r["status"] for r in rows]
    return {
        "Status": obj(status),
        "Seed": _column([r["seed"] for r in rows]),
        "Parameters Digest": obj([r["digests"].get("parameters") for r in rows]),
        "Code Digest": obj([r["digests"].get("code") for r in rows]),
        "Environment Digest": obj([r["digests"].get("environment") for r in rows]),
        "Result Digest": obj([r["digests"].get("result") for r in rows]),
        "Reused Steps": obj([", ".join(r.get("reused") or []) for r in rows]),
    }


def _column(values: list) -> Any:
    """Numbers give a numeric column; anything else an object column (never pandas' str)."""
    import pandas as pd

    types = set(map(type, values))
    if types and types <= _NUMBERS:
        if float in types and int in types and _beyond_float(values):
            # A float column (NaN for a failed trial) would round these: keep them exact.
            return pd.Series(values, dtype=object)
        return pd.Series(values)
    if types == _BOOL:
        return pd.Series(values, dtype=bool)
    return pd.Series(values, dtype=object)


_NUMBERS = frozenset({int, float})
_BOOL = frozenset({bool})


def _beyond_float(values: list) -> bool:
    """Whether an int among ``values`` (ints and floats) is too large for a float to hold."""
    ints = [v for v in values if type(v) is int]
    return max(ints) > _EXACT_IN_FLOAT or min(ints) < -_EXACT_IN_FLOAT


#: Largest int magnitude every float represents exactly (2**53).
_EXACT_IN_FLOAT = 2**53
