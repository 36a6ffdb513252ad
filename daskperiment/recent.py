"""The last trials of an experiment, read in time that does not grow with its history.

``daskperiment log -n 20`` and ``ex.get_history(last=20)`` need 20 rows, not 100,000: the last
trial id comes from :func:`daskperiment.opening.last_trial_id` (no listing), and the rows from
the history index chunks that hold those ids (one chunk per 256 trials) or, for trials the
index lacks, from their records -- the same rows :meth:`HistoryReader.rows` gives, read the
same way (JSON only, damaged and malformed trials shown as such).
"""

from __future__ import annotations

from typing import Any

import daskperiment_store as store

from . import history, opening
from .errors import DamagedTrial
from .log import logger
from .reads import MALFORMED, read_json
from .record import index_ref

_DAMAGE = (store.errors.StoreError, KeyError, TypeError, ValueError, AttributeError)


def last_rows(st: store.Store, experiment_id: str, count: int) -> list[dict[str, Any]]:
    """History rows of the last ``count`` trials, oldest first."""
    if count < 1:
        return []
    chunks = _index_chunks(st, experiment_id)
    loaded: dict[str, dict[int, dict[str, Any]]] = {}
    rows: list[dict[str, Any]] = []
    trial_id = opening.last_trial_id(st, experiment_id)
    while trial_id >= 1 and len(rows) < count:
        row = _indexed_row(st, chunks, loaded, trial_id) or _record_row(st, experiment_id, trial_id)
        if row is not None:
            rows.append(row)
        trial_id -= 1
    rows.reverse()
    return rows


def _index_chunks(st: store.Store, experiment_id: str) -> dict[str, store.Link]:
    try:
        root = read_json(st, st.refs.get(index_ref(experiment_id)))
        return dict(history.chunk_links(root))
    except store.errors.RefNotFound:
        return {}
    except _DAMAGE as exc:  # derived data: the rows then come from the records
        logger.debug("history index of %s ignored: %s", experiment_id, exc)
        return {}


def _indexed_row(
    st: store.Store,
    chunks: dict[str, store.Link],
    loaded: dict[str, dict[int, dict[str, Any]]],
    trial_id: int,
) -> dict[str, Any] | None:
    key = str(trial_id // history.CHUNK_SIZE)
    if key not in loaded:
        link = chunks.get(key)
        try:
            loaded[key] = history.rows_of_chunk(read_json(st, link.oid)) if link else {}
        except _DAMAGE as exc:
            logger.debug("history index chunk %s ignored: %s", key, exc)
            loaded[key] = {}
    return loaded[key].get(trial_id)


def _record_row(st: store.Store, experiment_id: str, trial_id: int) -> dict[str, Any] | None:
    """The row read from the trial's record (None: no such trial), as HistoryReader does."""
    try:
        oid, record = history.load_trial(st, experiment_id, trial_id)
        return history.row_of(record, oid)
    except store.errors.RefNotFound:
        return None
    except MALFORMED as exc:
        return history.malformed_row(trial_id, getattr(exc, "oid", None), exc)
    except DamagedTrial as exc:
        return history.damaged_row(trial_id, exc.reason)
    except _DAMAGE as exc:
        return history.damaged_row(trial_id, f"its record: {type(exc).__name__}: {exc}")


def read_rows(
    st: store.Store, reader: history.HistoryReader, last: int | None = None
) -> list[dict[str, Any]]:
    """The history rows of the last ``last`` trials (time independent of the history's
    length), or of every trial: what ``get_history`` and ``daskperiment log`` show."""
    if last is not None:
        return last_rows(st, reader.experiment_id, validate_count(last))
    return reader.rows(st, reader.trial_ids(st))


def record_row(st: store.Store, experiment_id: str, trial_id: int) -> dict[str, Any] | None:
    """The row of one trial read from its record, as :class:`HistoryReader` reads the trials
    its index lacks (None: no such trial), without loading the index."""
    return history.HistoryReader(experiment_id)._read_row(st, trial_id)


def validate_count(count: object) -> int:
    """``count`` as a number of trials; ValueError saying what is accepted otherwise."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"last must be a whole number of trials, 1 or more, got {count!r}")
    return count
