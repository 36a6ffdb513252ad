"""The text pandas prints for the history table (``to_string``, ``to_csv``, the JSON records of
``daskperiment log``), made from the plain columns of :mod:`daskperiment.quicklog`.

This follows pandas' formatting rules (``pandas.io.formats.format``: right-justified cells with
a leading space for numbers and text, floats at 6 decimals trimmed alike in a column,
scientific notation for tiny or huge values, times at the finest resolution any cell needs,
long cells whole) for the types the history holds; a value of any other type
raises :class:`~daskperiment.quicklog.Unsupported`.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import re
from typing import Any

from .quicktable import Column, Table, Unsupported

_DIGITS = 6
_NUMBER_WITH_DECIMAL = re.compile(r"^\s*[+-]?[0-9]+\.[0-9]*$")
_ESCAPES = {"\t": r"\t", "\n": r"\n", "\r": r"\r"}
_NUMERIC = ("int", "float", "bool")


# ---------------------------------------------------------------------------------------
# to_string
# ---------------------------------------------------------------------------------------


def table_text(table: Table) -> str:
    """``frame.to_string()`` with no row or column limit."""
    if not table.index:
        names = ", ".join(c.name for c in table.columns)
        return f"Empty DataFrame\nColumns: [{names}]\nIndex: []\n"
    index = ["", "Trial ID", *map(str, table.index)]
    strcols = [_fixed_width(index, "left")]
    for col in table.columns:
        label = _escape(col.name)
        header = [" " + label if col.kind in _NUMERIC else label, ""]
        header_width = max(len(x) for x in header)
        cells = _fixed_width(_fixed_width(_cells(col), "right"), "right", minimum=header_width)
        width = max(header_width, *(len(x) for x in cells))
        strcols.append([x.rjust(width) for x in header] + cells)
    return _adjoin(strcols) + "\n"


def _adjoin(strcols: list[list[str]]) -> str:
    widths = [max(len(x) for x in col) + 1 for col in strcols[:-1]]
    widths.append(max(len(x) for x in strcols[-1]))
    return "\n".join(
        "".join(x.ljust(w) for x, w in zip(line, widths, strict=True))
        for line in zip(*strcols, strict=True)
    )


def _fixed_width(strings: list[str], justify: str, minimum: int = 0) -> list[str]:
    # to_string() leaves display.max_colwidth out: long cells are shown whole
    max_len = max(minimum, *(len(x) for x in strings)) if strings else minimum
    if justify == "left":
        return [x.ljust(max_len) for x in strings]
    return [x.rjust(max_len) for x in strings]


def _cells(col: Column) -> list[str]:
    if col.kind == "int":
        return [f"{v: d}" for v in col.values]
    if col.kind == "float":
        return _floats(col.values)
    if col.kind == "datetime":
        return _datetimes(col.values, "NaT")
    if col.kind == "timedelta":
        return _timedeltas(col.values, "NaT")
    if col.kind == "str":
        return [" NaN" if v is None else " " + _escape(v) for v in col.values]
    return [_generic(v) for v in col.values]


def _generic(value: Any) -> str:
    """A cell of an object (or bool) column: pandas' GenericArrayFormatter."""
    if type(value) is float:
        if math.isnan(value):
            return " NaN"
        text = f"{value: .{_DIGITS}f}".rstrip("0")
        return text + "0" if text.endswith(".") else text
    if value is None:
        return " None"
    if type(value) in (str, int, bool):
        return " " + _escape(str(value))
    raise Unsupported(f"a {type(value).__name__} in a table")


def _escape(text: str) -> str:
    for char, escaped in _ESCAPES.items():
        text = text.replace(char, escaped)
    return text


def _floats(values: list[float]) -> list[str]:
    finite = [abs(v) for v in values if not math.isnan(v)]
    if any(math.isinf(v) for v in finite):
        raise Unsupported("an infinite float")
    cells = _format_floats(values, "f")
    too_long = max(len(x) for x in cells) > _DIGITS + 6
    large = any(v > 1e6 for v in finite)
    small = any(0 < v < 10**-_DIGITS for v in finite)
    if small or (too_long and large):
        cells = _format_floats(values, "e")
    return cells


def _format_floats(values: list[float], style: str) -> list[str]:
    cells = ["NaN" if math.isnan(v) else f"{v: .{_DIGITS}{style}}" for v in values]
    is_number = [_NUMBER_WITH_DECIMAL.match(x) is not None for x in cells]
    if not any(is_number):
        return cells
    while all(x.endswith("0") for x, n in zip(cells, is_number, strict=True) if n):
        cells = [x[:-1] if n else x for x, n in zip(cells, is_number, strict=True)]
    return [x + "0" if n and x.endswith(".") else x for x, n in zip(cells, is_number, strict=True)]


def _datetimes(values: list[datetime.datetime | None], missing: str) -> list[str]:
    present = [v for v in values if v is not None]
    if present and all(v.hour == v.minute == v.second == v.microsecond == 0 for v in present):
        return [v.strftime("%Y-%m-%d") if v is not None else missing for v in values]
    if any(v.microsecond % 1000 for v in present):
        digits = 6
    elif any(v.microsecond for v in present):
        digits = 3
    else:
        digits = 0
    out = []
    for v in values:
        if v is None:
            out.append(missing)
            continue
        text = v.strftime("%Y-%m-%d %H:%M:%S")
        if digits:
            text += f".{v.microsecond:06d}"[: digits + 1]
        out.append(text)
    return out


def _timedeltas(values: list[int | None], missing: str) -> list[str]:
    present = [v for v in values if v is not None]
    day = 86_400 * 10**9
    if all(v % day == 0 for v in present):
        return [f"{v // day} days" if v is not None else missing for v in values]
    fraction = any(v % 10**9 for v in present)
    out = []
    for v in values:
        if v is None:
            out.append(missing)
            continue
        days, rest = divmod(v, day)
        seconds, ns = divmod(rest, 10**9)
        hours, seconds = divmod(seconds, 3600)
        minutes, seconds = divmod(seconds, 60)
        text = f"{days} days {hours:02d}:{minutes:02d}:{seconds:02d}"
        out.append(text + f".{ns // 1000:06d}" if fraction else text)
    return out


# ---------------------------------------------------------------------------------------
# to_csv and JSON records
# ---------------------------------------------------------------------------------------


def csv_text(table: Table) -> str:
    """``frame.to_csv()``."""
    columns = [_csv_cells(c) for c in table.columns]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["Trial ID", *(c.name for c in table.columns)])
    for i, trial_id in enumerate(table.index):
        writer.writerow([trial_id, *(col[i] for col in columns)])
    return out.getvalue()


def _csv_cells(col: Column) -> list[Any]:
    if col.kind == "datetime":
        return _datetimes(col.values, "")
    if col.kind == "timedelta":
        return _timedeltas(col.values, "")
    out = []
    for v in col.values:
        if v is None or (type(v) is float and math.isnan(v)):
            out.append("")
        elif type(v) in (str, int, bool):
            out.append(v)
        elif type(v) is float:
            out.append(repr(v))
        else:
            raise Unsupported(f"a {type(v).__name__} in csv")
    return out


def json_text(table: Table) -> str:
    """The JSON records ``daskperiment log --format json`` prints (cli_commands._history_records)."""
    records = []
    for i, trial_id in enumerate(table.index):
        item: dict[str, Any] = {"Trial ID": trial_id}
        for col in table.columns:
            item[col.name] = _json_value(col.kind, col.values[i])
        records.append(item)
    return json.dumps(records, indent=2, ensure_ascii=False) + "\n"


def _json_value(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "datetime":
        return value.isoformat()
    if kind == "timedelta":
        return value / 1e9
    if type(value) is float and math.isnan(value):
        return None
    if type(value) in (str, int, bool, float):
        return value
    raise Unsupported(f"a {type(value).__name__} in json")
