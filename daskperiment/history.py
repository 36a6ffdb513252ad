"""History: one summary row per trial, and the index that keeps reading them fast.

Every trial record stays the truth; the *history index* is a derived, disposable summary:
the ref ``experiments/<id>/index`` names a root object ``{"chunks": {"<k>": Link}}`` whose
chunk ``k`` holds the rows of finished trials ``k*256 .. k*256+255`` together with the oid of
the record each row was made from. Reading the history lists the trial refs, takes a row from
the index when the ref still names the record the row was made from, and reads the record
otherwise (trials not yet indexed, running ones). So the table is always correct, however
stale the index is.

A process that runs trials adds their rows to the index in batches (every
:data:`FLUSH_EVERY` trials or :data:`FLUSH_SECONDS` seconds, and at exit), with a
compare-and-swap of the ref, rewriting only the chunks that changed: the cost per trial
does not grow with the history.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping
from typing import Any

import store
from store import Link

from .trial import FAILED, RUNNING, SUCCESS, effective, trials_prefix

CHUNK_SIZE = 256
FLUSH_EVERY = 32
FLUSH_SECONDS = 10.0
INDEX_TYPE = "daskperiment.history-index"

COLUMNS = ["Result", "Result Type", "Success", "Finished", "Process Time", "Description"]
VERBOSE_COLUMNS = [
    "Status",
    "Seed",
    "Parameters Digest",
    "Code Digest",
    "Environment Digest",
    "Result Digest",
    "Reused Steps",
]


def index_ref(experiment_id: str) -> str:
    return f"experiments/{experiment_id}/index"


def row_of(record: Mapping[str, Any], record_oid: str) -> dict[str, Any]:
    """The history row of a trial record (plain JSON data)."""
    record = effective(dict(record))
    status = record.get("status")
    steps = record.get("steps") or {}
    return {
        "trial_id": record["trial_id"],
        "record": record_oid,
        "status": status,
        "interrupted": bool(record.get("interrupted")),
        "params": record.get("params") or {},
        "result": record.get("result_value")
        if record.get("result_value") is not None
        else record.get("result_repr"),
        "result_type": record.get("result_type"),
        "finished": record.get("finished"),
        "process_time": record.get("process_time"),
        "description": record.get("description") or ("Running" if status == RUNNING else None),
        "seed": record.get("seed"),
        "digests": record.get("digests")
        or {
            "parameters": _oid(record.get("parameters")),
            "code": _oid(record.get("code")),
            "environment": _oid(record.get("environment")),
            "result": None,
        },
        "reused": [name for name, s in steps.items() if s.get("reused")],
    }


def _oid(link: Any) -> str | None:
    return link.oid if isinstance(link, Link) else None


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


class HistoryReader:
    """Builds rows for every trial; caches rows by record oid and chunks by oid in memory."""

    def __init__(self, experiment_id: str) -> None:
        self.experiment_id = experiment_id
        self._rows_by_record: dict[str, dict[str, Any]] = {}
        self._chunks: dict[str, dict[str, Any]] = {}
        self._root_oid: str | None = None
        self._indexed: dict[str, dict[str, Any]] = {}

    def trial_refs(self, st: store.Store) -> dict[int, str]:
        """trial id -> record oid, for every trial ref of the experiment."""
        prefix = trials_prefix(self.experiment_id)
        out = {}
        for name, oid in st.refs.list(prefix).items():
            tail = name[len(prefix) :]
            if tail.isdigit():
                out[int(tail)] = oid
        return out

    def rows(self, st: store.Store, refs: Mapping[int, str] | None = None) -> list[dict]:
        """Rows of every trial, ordered by trial id."""
        refs = self.trial_refs(st) if refs is None else refs
        indexed = self._load_index(st)
        rows = []
        for trial_id in sorted(refs):
            oid = refs[trial_id]
            row = self._rows_by_record.get(oid)
            if row is None:
                row = indexed.get(str(trial_id))
                if row is None or row["record"] != oid:
                    row = row_of(st.get(oid), oid)
                if row["status"] != RUNNING:
                    # final records never change: safe to keep (running ones are re-read)
                    self._rows_by_record[oid] = row
            rows.append(row)
        return rows

    def _load_index(self, st: store.Store) -> dict[str, dict[str, Any]]:
        try:
            root_oid = st.refs.get(index_ref(self.experiment_id))
        except store.errors.RefNotFound:
            return {}
        if root_oid == self._root_oid:
            return self._indexed
        rows: dict[str, dict[str, Any]] = {}
        try:
            root = st.get(root_oid)
            for link in root.get("chunks", {}).values():
                chunk = self._chunks.get(link.oid)
                if chunk is None:
                    chunk = self._chunks[link.oid] = st.get(link.oid)["rows"]
                rows.update(chunk)
        except store.errors.StoreError:
            # A damaged index is only slower: every row then comes from its record.
            return {}
        self._root_oid, self._indexed = root_oid, rows
        return rows


# ---------------------------------------------------------------------------------------
# Writing the index
# ---------------------------------------------------------------------------------------


def flush_index(st: store.Store, experiment_id: str, rows: Iterable[dict[str, Any]]) -> None:
    """Add finished ``rows`` to the index (compare-and-swap, retried on a race)."""
    rows = [r for r in rows if r["status"] in (SUCCESS, FAILED) and not r.get("interrupted")]
    if not rows:
        return
    by_chunk: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_chunk.setdefault(str(row["trial_id"] // CHUNK_SIZE), {})[str(row["trial_id"])] = row
    name = index_ref(experiment_id)
    for _ in range(50):
        try:
            current: str | None = st.refs.get(name)
        except store.errors.RefNotFound:
            current = None
        root = st.get(current) if current else {"type": INDEX_TYPE, "chunks": {}}
        chunks = dict(root.get("chunks", {}))
        for k, new_rows in by_chunk.items():
            old = st.get(chunks[k].oid)["rows"] if k in chunks else {}
            chunks[k] = Link(st.put({"rows": {**old, **new_rows}}))
        new_root = st.put({"type": INDEX_TYPE, "version": 1, "chunks": chunks})
        try:
            st.refs.swap(name, current, new_root)
            return
        except store.errors.RefConflict:
            continue


# ---------------------------------------------------------------------------------------
# The DataFrame
# ---------------------------------------------------------------------------------------


def frame(rows: list[dict[str, Any]], parameter_order: Iterable[str] = (), verbose: bool = False):
    """The history DataFrame: parameter columns, then :data:`COLUMNS` (+ verbose ones)."""
    import numpy as np
    import pandas as pd

    names: dict[str, None] = {n: None for n in parameter_order}
    extra: dict[str, None] = {}
    for row in rows:
        for n in row["params"]:
            if n not in names:
                extra[n] = None
    params = [n for n in names if any(n in r["params"] for r in rows)] + list(extra)
    data: dict[str, Any] = {}
    for n in params:
        data[n] = _column([r["params"].get(n, np.nan) for r in rows])
    data["Result"] = _column([_nan(r["result"]) for r in rows])
    data["Result Type"] = pd.Series([r["result_type"] for r in rows], dtype=object)
    data["Success"] = pd.Series([r["status"] == SUCCESS for r in rows], dtype=bool)
    data["Finished"] = pd.to_datetime([_local_time(r["finished"]) for r in rows])
    data["Process Time"] = pd.to_timedelta(
        [r["process_time"] if r["process_time"] is not None else np.nan for r in rows], unit="s"
    )
    data["Description"] = pd.Series(
        [r["description"] if r["description"] is not None else np.nan for r in rows],
        dtype=object,
    )
    if verbose:
        data.update(_verbose_columns(rows))
    index = pd.Index([r["trial_id"] for r in rows], name="Trial ID", dtype="int64")
    for key, col in data.items():
        # Series keep their dtype (object columns stay object, never pandas' str dtype)
        if isinstance(col, pd.Series):
            col.index = index
        else:
            data[key] = pd.Series(col, index=index)
    return pd.DataFrame(data, index=index)


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


def _nan(value: Any) -> Any:
    return math.nan if value is None else value


def _column(values: list) -> Any:
    """Numbers give a numeric column; anything else an object column (never pandas' str)."""
    import pandas as pd

    if all(type(v) in (int, float) for v in values) and values:
        return pd.Series(values)
    if all(type(v) is bool for v in values) and values:
        return pd.Series(values, dtype=bool)
    return pd.Series(values, dtype=object)


def _local_time(epoch: float | None) -> datetime.datetime | None:
    """Seconds since the epoch as naive local time, as the user's clock shows it."""
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch)
