"""Opening an experiment in constant time, however many trials it holds.

``Experiment()`` needs one number from the store: the id of the last trial (for the
``Loaded Experiment(id: ..., trial_id: N)`` line, ``ex.trial_id`` and the next trial's parent).
Listing every ``trials/<n>`` ref costs ~3 µs a trial on a local disk (0.3 s at 100,000 trials)
and one request per 1,000 keys on S3, so it is not done when opening. Instead:

1. the history index (see :mod:`daskperiment.history`) gives a lower bound: the largest
   trial id of its last chunk (two small objects read);
2. trial ids are allocated one after the other (each trial creates ``trials/<last + 1>``), so
   the trials after that bound are contiguous: a galloping search (``M+1, M+2, M+4, ...``, then
   bisection) finds the last one with ``2 log2(k)`` existence checks for ``k`` trials past the
   bound, ~30 ``stat`` calls even for an experiment without an index.

The answer is a lower bound when ids have gaps above the index (a deleted trial, or a number
that concurrent placements of arriving trials left unused: :mod:`daskperiment.placement`):
reading the history lists every ref and raises ``trial_id`` to the true last id, and a trial
that finds its id taken moves past every existing one and above the number of any deleted
trial (``trial._allocate``, :mod:`daskperiment.numbering`).
"""

from __future__ import annotations

from collections.abc import Callable

import daskperiment_store as store

from . import history
from .log import logger
from .reads import read_json
from .record import index_ref, trial_ref

_DAMAGE = (store.errors.StoreError, KeyError, TypeError, ValueError, AttributeError)


def last_trial_id(
    st: store.Store, experiment_id: str, reader: history.HistoryReader | None = None
) -> int:
    """The id of the experiment's last trial (0 when it has none), without listing refs.
    ``reader``: the experiment's history reader, handed the index chunk read here, so that
    reading the history next does not decode it again."""
    start = indexed_lower_bound(st, experiment_id, reader)
    if start and not _has_trial(st, experiment_id, start):
        start = 0  # an index that names trials the store lacks (restored, edited)
    return gallop(lambda n: _has_trial(st, experiment_id, n), start)


def last_trial_id_after(st: store.Store, experiment_id: str, known: int) -> int:
    """The last trial id, given that trial ``known`` was seen (a few existence checks for the
    trials recorded since, by any process); :func:`last_trial_id` if ``known`` is gone."""
    if known and _has_trial(st, experiment_id, known):
        return gallop(lambda n: _has_trial(st, experiment_id, n), known)
    return last_trial_id(st, experiment_id)


def gallop(exists: Callable[[int], bool], start: int) -> int:
    """The largest ``n >= start`` with ``exists(n)``, for ids contiguous above ``start``
    (``start`` itself exists or is 0): ``O(log k)`` calls for ``k`` ids past ``start``."""
    low, step = start, 1
    while exists(low + step):
        low, step = low + step, step * 2
    high = low + step  # missing; everything up to low exists
    while high - low > 1:
        middle = (low + high) // 2
        if exists(middle):
            low = middle
        else:
            high = middle
    return low


def indexed_lower_bound(
    st: store.Store, experiment_id: str, reader: history.HistoryReader | None = None
) -> int:
    """The largest trial id in the history index's last chunk; 0 without a usable index."""
    try:
        root_oid = st.refs.get(index_ref(experiment_id))
        chunks = history.chunk_links(read_json(st, root_oid))
        if not chunks:
            return 0
        oid = chunks[max(chunks, key=int)].oid
        chunk = read_json(st, oid)
        if reader is not None:
            reader.keep_chunk(oid, chunk)
        ids = chunk["columns"]["trial_id"]
        return max(i for i in ids if isinstance(i, int) and not isinstance(i, bool))
    except store.errors.RefNotFound:
        return 0
    except _DAMAGE as exc:
        # Derived data only: without it the search starts at trial 1.
        logger.debug("history index of %s not used to open it: %s", experiment_id, exc)
        return 0


def _has_trial(st: store.Store, experiment_id: str, trial_id: int) -> bool:
    return st.refs.has(trial_ref(experiment_id, trial_id))
