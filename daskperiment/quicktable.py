"""The history table as plain Python columns, typed as pandas types the history DataFrame.

:func:`daskperiment.history.frame` builds the history DataFrame; :func:`frame_columns` builds
the same columns from the same rows without pandas (kinds: see :class:`Column`), for
``daskperiment log`` (:mod:`daskperiment.quicklog`) and the dashboard's first view
(:mod:`daskperiment.board.firstview`). What cannot be typed as pandas would type it raises
:class:`Unsupported`, and the caller takes the DataFrame path.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from typing import Any

from .record import SUCCESS

#: Largest magnitude of an int a float keeps exactly, and the int64 range of int columns.
_EXACT_IN_FLOAT = 2**53
_INT64 = 2**63


class Unsupported(Exception):
    """The plain path cannot promise the DataFrame's text: the caller falls back."""


@dataclass
class Column:
    """One column, typed as pandas would type it.

    ``kind``: ``int`` (int64), ``float`` (float64, NaN for missing), ``bool``, ``object``
    (values as they are; None and NaN missing), ``str`` (pandas' string dtype: NaN missing),
    ``datetime`` (naive ``datetime`` or None), ``timedelta`` (nanoseconds or None).
    """

    name: str
    kind: str
    values: list[Any]

    def take(self, order: list[int]) -> Column:
        return Column(self.name, self.kind, [self.values[i] for i in order])


@dataclass
class Table:
    index: list[int]
    columns: list[Column] = field(default_factory=list)

    def take(self, order: list[int]) -> Table:
        return Table([self.index[i] for i in order], [c.take(order) for c in self.columns])

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


# ---------------------------------------------------------------------------------------
# Columns, as history.frame and teams.history_frame build them
# ---------------------------------------------------------------------------------------


def numeric_column(name: str, values: list[Any]) -> Column:
    """history._column: numbers give a numeric column, bools a bool one, else object."""
    kind = column_kind(values)
    if kind == "float":
        return Column(name, kind, [float(v) for v in values])
    return Column(name, kind, values)


def column_kind(values: list[Any]) -> str:
    """The kind of column history._column makes of ``values``."""
    types = set(map(type, values))
    if values and types <= {int, float}:
        ints = [v for v in values if type(v) is int] if int in types else []
        if ints and float in types and max(map(abs, ints)) > _EXACT_IN_FLOAT:
            return "object"  # a float column (NaN for a failed trial) would round them
        if ints and not (-_INT64 <= min(ints) and max(ints) < _INT64):
            raise Unsupported("ints beyond int64")  # pandas picks uint64 or object
        return "float" if float in types else "int"
    if values and types == {bool}:
        return "bool"
    return "object"


def _object(name: str, values: list[Any]) -> Column:
    return Column(name, "object", values)


def strings_column(name: str, values: list[Any]) -> Column:
    """A list assigned to a frame: strings (None missing) become pandas' string dtype."""
    if any(isinstance(v, str) for v in values) and all(v is None or type(v) is str for v in values):
        return Column(name, "str", values)
    if all(v is None for v in values):
        return Column(name, "object", values)
    raise Unsupported("mixed list column")


def parameter_names(rows: list[dict[str, Any]]) -> list[str]:
    """The parameter columns of history.frame (no declared order: the CLI declares none)."""
    return parameter_names_of([r.get("parameter_order") for r in rows], [r["params"] for r in rows])


def parameter_names_of(orders: list[Any], params: list[dict[str, Any]]) -> list[str]:
    """history.frame's parameter columns from each row's parameter order and parameters:
    the declared names in order of first appearance, then the others (each distinct order
    and key list looked at once: a history of 100,000 trials has a handful)."""
    names: dict[str, None] = {}
    for order in dict.fromkeys(tuple(o or ()) for o in orders):
        names.update((n, None) for n in order if n not in names)
    key_lists = dict.fromkeys(tuple(p) for p in params)
    extra: dict[str, None] = {}
    for keys in key_lists:
        extra.update((n, None) for n in keys if n not in names and n not in extra)
    present = {n for keys in key_lists for n in keys}
    return [n for n in names if n in present] + list(extra)


def process_time_ns(seconds: Any) -> int | None:
    """pandas' to_timedelta(seconds, unit="s").round("us"), in nanoseconds."""
    if seconds is None:
        return None
    if type(seconds) not in (int, float) or not math.isfinite(seconds) or seconds < 0:
        raise Unsupported("unusual process time")
    seconds = float(seconds)
    base = int(seconds)
    frac = round((seconds - base) * 1e9) / 1e9  # numpy.round(frac, 9)
    ns = base * 1_000_000_000 + int(frac * 1e9)
    q, rem = divmod(ns, 1000)
    if rem > 500 or (rem == 500 and q % 2):
        q += 1
    return q * 1000


def frame_columns(rows: list[dict[str, Any]], verbose: bool) -> list[Column]:
    """The columns of history.frame(rows, (), verbose)."""
    cols = [
        numeric_column(n, [r["params"].get(n, math.nan) for r in rows])
        for n in parameter_names(rows)
    ]
    cols.append(numeric_column("Result", [_nan(r["result"]) for r in rows]))
    cols.append(_object("Result Type", [r["result_type"] for r in rows]))
    cols.append(Column("Success", "bool", [r["status"] == SUCCESS for r in rows]))
    cols.append(Column("Finished", "datetime", [_local_time(r["finished"]) for r in rows]))
    cols.append(
        Column("Process Time", "timedelta", [process_time_ns(r["process_time"]) for r in rows])
    )
    cols.append(
        _object(
            "Description", [d if (d := r["description"]) is not None else math.nan for r in rows]
        )
    )
    if verbose:
        status = ["interrupted" if r.get("interrupted") else r["status"] for r in rows]
        cols += [
            _object("Status", status),
            numeric_column("Seed", [r["seed"] for r in rows]),
            *(
                _object(f"{label} Digest", [r["digests"].get(key) for r in rows])
                for label, key in (
                    ("Parameters", "parameters"),
                    ("Code", "code"),
                    ("Environment", "environment"),
                    ("Result", "result"),
                )
            ),
            _object("Reused Steps", [", ".join(r.get("reused") or []) for r in rows]),
        ]
    return cols


def _nan(value: Any) -> Any:
    return math.nan if value is None else value


def _local_time(epoch: Any) -> datetime.datetime | None:
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch)
