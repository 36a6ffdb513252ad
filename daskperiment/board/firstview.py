"""The history page's first answer without building the history DataFrame.

A fresh dashboard on an experiment of 100,000 trials used to build the whole table (pandas,
every row, every cell as text) before answering the first request for 50 rows: seconds. The
first view (sorted by trial id, no filter, no status, no brushes: what the page asks for when
it opens) needs less: the trial ids (the listing the version token hashes anyway), the
archived trials, and for the columns' types the parameters, results and seeds of every row,
read column by column from the history index chunks, never as rows. Only the rows of the page
are read whole. The answer is the same JSON :func:`query.run_query` gives on the DataFrame
(``tests/board/test_firstview.py`` compares them); anything the plain columns cannot type as
pandas would (:class:`~daskperiment.quicklog.Unsupported`) returns None and the DataFrame
path answers. Other pages, sorts and filters build the DataFrame once and keep it.
"""

from __future__ import annotations

import json
import math
from typing import Any

import daskperiment_store as store

from .. import annotate, history, recent, teams
from ..ids import TRIAL_ID_LIMIT
from ..quicktable import Column, Unsupported, column_kind, frame_columns, parameter_names_of
from ..reads import read_json
from ..record import index_ref, trials_prefix
from .query import (
    HIDDEN_COLUMNS,
    ID_COLUMN,
    MAX_PAGE_SIZE,
    HistoryQuery,
    format_duration,
    parameter_columns,
)

_DAMAGE = (store.errors.StoreError, KeyError, TypeError, ValueError, AttributeError)
#: Index chunk columns the types of the table's columns depend on.
_TYPED = ("trial_id", "global_id", "record", "params", "parameter_order", "result", "seed")
_GIDS = ("global_id", "record")
#: Index chunks hold plain JSON (no links): parsed without the store's link hook.
_DECODER = json.JSONDecoder()


def is_first_view(query: HistoryQuery, brushes: tuple) -> bool:
    return (
        not brushes
        and 1 <= query.size <= MAX_PAGE_SIZE
        and query.page >= 1
        and query.sort == ID_COLUMN
        and not query.descending
        and not query.filter.strip()
        and query.status == "all"
    )


def first_page(
    st: store.Store, experiment_id: str, names: list[str], version: str, query: HistoryQuery
) -> dict[str, Any] | None:
    """The page ``run_query`` gives for ``query`` (a first view), or None (use the frame)."""
    try:
        return _page(st, experiment_id, names, version, query)
    except Unsupported:
        return None


def _page(
    st: store.Store, experiment_id: str, names: list[str], version: str, query: HistoryQuery
) -> dict[str, Any]:
    prefix = trials_prefix(experiment_id)
    ids = sorted(n for n in (_trial_id(x[len(prefix) :]) for x in names) if n is not None)
    notes = annotate.read_all(st, experiment_id) if ids else {}
    # global ids only matter to match annotations: none, no need to read them
    typed = _typed_columns(st, experiment_id, ids, with_gids=bool(notes))
    shown = [
        i
        for i, gid in enumerate(typed["gid"])
        if (s := notes.get(gid or "")) is None or not s.archived
    ]
    pages = max(1, math.ceil(len(shown) / query.size))
    page = min(query.page, pages)
    on_page = [typed["ids"][i] for i in shown[(page - 1) * query.size : page * query.size]]
    rows = _page_rows(st, typed, on_page)
    params = parameter_names_of(
        [typed["parameter_order"][i] for i in shown], [typed["params"][i] for i in shown]
    )
    kinds = {n: column_kind([typed["params"][i].get(n, math.nan) for i in shown]) for n in params}
    kinds["Result"] = column_kind([_nan(typed["result"][i]) for i in shown])
    kinds["Seed"] = column_kind([typed["seed"][i] for i in shown])
    columns = _page_columns(rows, params, kinds)
    states = [notes.get(r.get("global_id") or r.get("record") or "") for r in rows]
    if any(s is not None and s.tags for s in (notes.get(typed["gid"][i] or "") for i in shown)):
        columns.append(
            Column(teams.TAGS_COLUMN, "str", [", ".join(s.tags) if s else "" for s in states])
        )
    columns.append(
        Column(teams.GLOBAL_ID_COLUMN, "str", [r.get("global_id") or r.get("record") for r in rows])
    )
    columns.append(Column(teams.ORIGIN_COLUMN, "str", teams.origins_in(st, experiment_id, on_page)))
    names_shown = [c.name for c in columns if c.name not in HIDDEN_COLUMNS]
    return {
        "columns": [ID_COLUMN, *names_shown],
        "params": parameter_columns_of([c.name for c in columns]),
        "rows": _rows(on_page, columns, names_shown),
        "total": len(shown),
        "matched": len(shown),
        "page": page,
        "pages": pages,
        "size": query.size,
        "sort": query.sort,
        "descending": query.descending,
        "version": version,
    }


def _trial_id(text: str) -> int | None:
    """ids.parse_trial_id without its regex (100,000 names): ``[1-9][0-9]{0,18}`` < 2**63."""
    if text.isascii() and text.isdigit() and text[0] != "0" and len(text) <= 19:
        value = int(text)
        return value if value < TRIAL_ID_LIMIT else None
    return None


def parameter_columns_of(names: list[str]) -> list[str]:
    class _Names:  # parameter_columns reads only ``.columns``
        columns = names

    return parameter_columns(_Names())  # type: ignore[arg-type]


def _nan(value: Any) -> Any:
    return math.nan if value is None else value


def _page_rows(st: store.Store, typed: dict[str, Any], ids: list[int]) -> list[dict[str, Any]]:
    """Whole rows of the page's trials: from their index chunk, or as read from the record."""
    chunks: dict[str, dict[int, dict[str, Any]]] = {}
    rows = []
    for n in ids:
        row = typed["read"].get(n)
        if row is None:
            key = str(n // history.CHUNK_SIZE)
            if key not in chunks:
                try:
                    chunks[key] = history.rows_of_chunk(read_json(st, typed["links"][key].oid))
                except _DAMAGE:
                    raise Unsupported("a damaged index chunk") from None
            row = chunks[key][n]
        rows.append(row)
    return rows


def _typed_columns(
    st: store.Store, experiment_id: str, ids: list[int], with_gids: bool
) -> dict[str, Any]:
    """For every trial in ``ids``: its global id (if ``with_gids``) and the fields the column
    types depend on, from the index chunks (column by column) or, for the trials they lack,
    the records."""
    columns, links = _index_columns(st, experiment_id, with_gids)
    if columns["trial_id"] == ids:  # every trial indexed, in order: the columns as they are
        whole: dict[str, Any] = {f: columns[f] for f in _TYPED[1:]}
        whole["gid"] = [g or r for g, r in zip(whole["global_id"], whole["record"], strict=True)]
        return {**whole, "ids": ids, "read": {}, "links": links}
    position = {n: i for i, n in enumerate(columns["trial_id"])}
    missing = [n for n in ids if n not in position]
    read = {n: row for n in missing if (row := recent.record_row(st, experiment_id, n))}
    out: dict[str, list[Any]] = {f: [] for f in ("ids", *_TYPED[1:])}
    for n in ids:
        i = position.get(n)
        if i is not None:
            for f in _TYPED[1:]:
                out[f].append(columns[f][i])
        elif n in read:
            for f in _TYPED[1:]:
                out[f].append(read[n].get(f))
        else:  # deleted while we listed
            continue
        out["ids"].append(n)
    out["gid"] = [g or r for g, r in zip(out["global_id"], out["record"], strict=True)]
    return {**out, "read": read, "links": links}


def _index_columns(
    st: store.Store, experiment_id: str, with_gids: bool
) -> tuple[dict[str, list], dict[str, Any]]:
    """The typed fields of every indexed row, column by column (no row dicts)."""
    columns: dict[str, list[Any]] = {f: [] for f in _TYPED}
    wanted = [f for f in _TYPED if with_gids or f not in _GIDS]
    try:
        root = read_json(st, st.refs.get(index_ref(experiment_id)))
        links = history.chunk_links(root)
    except store.errors.RefNotFound:
        return columns, {}
    except _DAMAGE:
        raise Unsupported("a damaged index") from None
    try:
        ordered = sorted(links.items(), key=lambda item: int(item[0]))  # "10" after "9"
    except ValueError:
        raise Unsupported("an index chunk not named by its number") from None
    for _, link in ordered:
        try:
            chunk = chunk_columns(st, link.oid, wanted)
            size = len(chunk["trial_id"])
            for f in _TYPED:
                values = chunk[f] if f in chunk else [None] * size
                if len(values) != size:
                    raise ValueError("columns of different lengths")
                columns[f].extend(values)
        except _DAMAGE:
            raise Unsupported("a damaged index chunk") from None
    return columns, links


def chunk_columns(st: store.Store, oid: str, wanted: list[str]) -> dict[str, list[Any]]:
    """The ``wanted`` columns of an index chunk, each parsed alone from the chunk's canonical
    JSON (``{"columns":{"description":[...],"digests":[...],...}}``, keys sorted, no spaces):
    the digests, the largest part, are never parsed.

    A column's key is looked for after the previous wanted column's array (keys are sorted,
    so nothing in between can be a key of a wanted column: the columns between hold strings,
    numbers and the digests' dicts of strings; a quote inside a string is escaped), after
    ``,``; its array must be followed by the next key or the end. Anything else decodes the
    whole chunk."""
    kind, body = st.get_raw(oid)
    if kind != "json":
        return _whole_chunk(st, oid, wanted)
    text = str(body, "utf-8")
    out: dict[str, list[Any]] = {}
    end = 0
    for name in sorted(wanted):
        key = f',"{name}":['
        at = text.find(key, end)
        if at < 0 and name == "parameter_order":
            continue  # chunks written before it was kept
        if at < 0:
            return _whole_chunk(st, oid, wanted)
        try:
            value, end = _DECODER.raw_decode(text, at + len(key) - 1)
        except ValueError:
            return _whole_chunk(st, oid, wanted)
        if text[end : end + 2] not in (',"', "}}") or not isinstance(value, list):
            return _whole_chunk(st, oid, wanted)
        out[name] = value
    if text[end:] != "}}" or any(len(v) != len(out["trial_id"]) for v in out.values()):
        return _whole_chunk(st, oid, wanted)  # trial_id, the last column, ends the chunk
    return out


def _whole_chunk(st: store.Store, oid: str, wanted: list[str]) -> dict[str, list[Any]]:
    columns = read_json(st, oid)["columns"]
    return {f: columns[f] for f in wanted if f in columns}


def _page_columns(
    rows: list[dict[str, Any]], params: list[str], kinds: dict[str, str]
) -> list[Column]:
    """The page's columns of the verbose history (without digests and reused steps), typed as
    the whole table types them."""
    by_name = {c.name: c for c in frame_columns(rows, verbose=True)}
    columns = [
        _retyped(Column(n, "object", [r["params"].get(n, math.nan) for r in rows]), kinds[n])
        for n in params
    ]
    for name in (
        "Result",
        "Result Type",
        "Success",
        "Finished",
        "Process Time",
        "Description",
        "Status",
        "Seed",
    ):
        column = by_name[name]
        if name in kinds:
            column = _retyped(Column(name, "object", list(column.values)), kinds[name])
        columns.append(column)
    return columns


def _retyped(column: Column, kind: str) -> Column:
    if kind == "float":
        values = [float(v) if v is not None else math.nan for v in column.values]
        return Column(column.name, "float", values)
    return Column(column.name, kind, column.values)


def _rows(ids: list[int], columns: list[Column], shown: list[str]) -> list[dict[str, Any]]:
    by_name = {c.name: c for c in columns}
    status = by_name["Status"].values
    out = []
    for i, trial_id in enumerate(ids):
        word = str(status[i]).lower()
        word = "failed" if word in ("interrupted", "damaged") else word
        cells = [str(trial_id), *(_cell(by_name[n].kind, by_name[n].values[i]) for n in shown)]
        if word == "running" and "Success" in shown:
            cells[shown.index("Success") + 1] = "running"
        out.append({"id": trial_id, "status": word, "cells": cells})
    return out


def _cell(kind: str, value: Any) -> str:
    """query.format_cell of the value pandas would hold for this cell."""
    from .query import MAX_CELL_CHARS

    if value is None or (type(value) is float and math.isnan(value)):
        return ""
    if kind == "datetime":
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if kind == "timedelta":
        return format_duration(value / 1e9)
    if type(value) is bool:
        return "True" if value else "False"
    if type(value) is float:
        return f"{value:.6g}"
    if type(value) not in (int, str):
        raise Unsupported(f"a {type(value).__name__} cell")
    text = str(value)
    if len(text) > MAX_CELL_CHARS:
        text = text[: MAX_CELL_CHARS - 1] + "\u2026"
    return text
