"""``daskperiment log`` without pandas: the history searched, sorted and printed in plain Python.

``daskperiment log`` prints the table :meth:`Experiment.get_history` gives, searched, sorted
and cut (:func:`daskperiment.team_commands.log_frame`). Importing pandas and dask costs ~0.5 s
before anything is read, more than reading the last 20 rows of 100,000 trials, so the common
cases are answered here from the same rows (:func:`daskperiment.recent.read_rows`) with
columns typed as :func:`daskperiment.history.frame` types them (:mod:`daskperiment.quicktable`),
filtered and sorted (:mod:`daskperiment.quickfilter`) and printed
(:mod:`daskperiment.quickformat`) to the very text the DataFrame gives. Whatever this module
cannot promise to print identically (a value of an unusual type, a filter on a time column,
...) makes :func:`log_text` return None, and the caller takes the DataFrame path.
``tests/daskperiment/test_quicklog.py`` compares both over varied histories.
"""

from __future__ import annotations

import argparse
from typing import Any

from . import annotate, history, recent, search, teams
from .location import experiment_store
from .quicktable import Table, Unsupported, frame_columns, strings_column

# ---------------------------------------------------------------------------------------
# The table daskperiment log prints
# ---------------------------------------------------------------------------------------


def history_table(st: Any, experiment_id: str, rows: list[dict[str, Any]], args: Any) -> Table:
    """teams.history_frame, then log_frame's sort, count and columns, on plain columns."""
    notes = annotate.read_all(st, experiment_id) if rows else {}
    state = [notes.get(r.get("global_id") or r.get("record") or "") for r in rows]
    keep = [args.all or s is None or not s.archived for s in state]
    rows = [r for r, k in zip(rows, keep, strict=True) if k]
    state = [s for s, k in zip(state, keep, strict=True) if k]
    table = Table([r["trial_id"] for r in rows], frame_columns(rows, args.verbose))
    if any(s is not None and s.tags for s in state) or args.tag:
        table.columns.append(
            strings_column(teams.TAGS_COLUMN, [", ".join(s.tags) if s else "" for s in state])
        )
    if args.verbose:
        gids = [r.get("global_id") or r.get("record") for r in rows]
        table.columns.append(strings_column(teams.GLOBAL_ID_COLUMN, gids))
        origins = teams.origins_in(st, experiment_id, table.index)
        table.columns.append(strings_column(teams.ORIGIN_COLUMN, origins))
    if args.tag:
        known = {t for s in notes.values() for t in s.tags}
        for tag in args.tag:
            if tag not in known:
                raise teams.UnknownTag(tag, known)
        has = [s is not None and set(args.tag) <= set(s.tags) for s in state]
        table = table.take([i for i, h in enumerate(has) if h])
    if args.where:
        from .quickfilter import matching

        table = table.take(matching(table, args.where))
    return table


def log_table(args: argparse.Namespace) -> Table:
    """The table ``daskperiment log`` prints (Unsupported: use the DataFrame path)."""
    from .quickfilter import sort_order

    st = experiment_store(args.store, args.experiment)
    simple = args.n and not (args.where or args.tag or args.sort or args.all)
    rows = recent.read_rows(st, history.HistoryReader(args.experiment), args.n if simple else None)
    table = history_table(st, args.experiment, rows, args)
    if args.sort and not simple:
        table = table.take(sort_order(table, args.sort))
    if args.n and not simple:
        n = len(table.index)
        table = table.take(
            list(range(min(args.n, n))) if args.sort else list(range(max(n - args.n, 0), n))
        )
    table.columns = [table.column(c) for c in shown_columns([c.name for c in table.columns], args)]
    if not table.columns or len(table.columns) > 100:
        raise Unsupported("no columns, or more than pandas lists")
    return table


def shown_columns(names: list[str], args: argparse.Namespace) -> list[str]:
    """The columns ``log`` shows: ``--columns`` (any case, any column), else every column but
    the verbose-only ones unless ``--verbose``."""
    if args.columns:
        by_name = {n.lower(): n for n in names}
        out = []
        for name in (n.strip() for n in args.columns.split(",") if n.strip()):
            if name.lower() not in by_name:
                known = ", ".join(names)
                raise teams.SearchError(
                    f"unknown column {name!r} in --columns; columns are: {known}"
                )
            out.append(by_name[name.lower()])
        return out
    if args.verbose:
        return names
    return [n for n in names if n not in VERBOSE_ONLY]


#: Columns of the history DataFrame that ``daskperiment log`` shows only with ``--verbose``.
VERBOSE_ONLY = ("Result Type", "Process Time")


def log_text(args: argparse.Namespace) -> str | None:
    """What ``daskperiment log`` prints, or None when only the DataFrame path can say it."""
    from . import quickformat

    try:
        table = log_table(args)
        if args.format == "csv":
            return quickformat.csv_text(table)
        if args.format == "json":
            return quickformat.json_text(table)
        return quickformat.table_text(table)
    except (Unsupported, search.QueryError):
        return None
