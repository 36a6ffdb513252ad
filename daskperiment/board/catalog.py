"""What the dashboard shows: the experiments of one store or of a directory of stores.

Everything is read through daskperiment's public API (``list_experiments``, ``Experiment``
and its ``get_*`` methods) on stores opened read-only, so the dashboard can never write.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import xxhash

from daskperiment import ids
from daskperiment.errors import FSCK_ADVICE, DamagedTrial, ExperimentNotFound, TrialNotFound
from daskperiment.ids import EXPERIMENT_ID_RULE, TRIAL_ID_RULE, is_experiment_id
from daskperiment.location import store_locations
from daskperiment.opening import last_trial_id
from daskperiment.record import (
    DAMAGED,
    EXPERIMENTS_PREFIX,
    RUNNING,
    split_trial_ref,
    trial_ref,
    trials_prefix,
)

from . import firstview
from .codediff import diff_text
from .errors import BoardError, PageNotFound
from .jsonable import jsonable
from .parallel import brush_mask, parallel_data
from .query import HistoryQuery, run_query, select, statuses, text_cells

logger = logging.getLogger("daskperiment.board")

#: warm() waits this long for a browser's first history request before reading histories.
WARM_DELAY = 2.0
#: How long a history snapshot is trusted before the trial refs are listed again (seconds).
HISTORY_TTL = 1.5


def parse_experiment_id(text: str) -> str:
    """Validate an experiment id taken from a URL (the one rule of daskperiment.ids)."""
    if not is_experiment_id(text):
        raise PageNotFound(f"no experiment {text!r}: {EXPERIMENT_ID_RULE}")
    return text


def parse_trial_id(text: str) -> int:
    """Validate a trial id taken from a URL: a canonical trial id (daskperiment.ids)."""
    trial_id = ids.parse_trial_id(text)
    if trial_id is None:
        raise PageNotFound(f"no trial {text!r}: {TRIAL_ID_RULE}, like 1, 2, 3")
    return trial_id


@dataclass
class Snapshot:
    """The history of an experiment at one moment, with its cells as text for filtering."""

    version: str
    frame: pd.DataFrame
    checked: float
    running: tuple[int, ...] = ()
    _text: pd.DataFrame | None = None

    def text(self) -> pd.DataFrame:
        """The cells as text, for filters with bare words (made on first use)."""
        if self._text is None:
            self._text = text_cells(self.frame)
        return self._text


def _shown(frame: pd.DataFrame) -> pd.DataFrame:
    """The verbose history without the columns too long for a table (digests, reused)."""
    drop = [
        c
        for c in frame.columns
        if isinstance(c, str) and (c.endswith(" Digest") or c == "Reused Steps")
    ]
    return frame.drop(columns=drop)


class ExperimentView:
    """Read-only access to one experiment, with the history cached between requests."""

    def __init__(self, experiment: Any, store: Any, served: threading.Event | None = None) -> None:
        self.experiment = experiment
        self.store = store
        self.id: str = experiment.id
        # The experiment object is shared by every request thread; calls into it are
        # serialized so its internal caches are never touched concurrently.
        self._lock = threading.RLock()
        self._snapshot: Snapshot | None = None
        self._first_lock = threading.Lock()
        self._served = served or threading.Event()  # a history page was answered
        self._first: tuple[float, HistoryQuery, dict[str, Any]] | None = None
        self._records: dict[int, dict] = {}
        self._series: dict[tuple[int, str], dict] = {}

    # history -------------------------------------------------------------------------
    def version(self, running: tuple[int, ...] = ()) -> str:
        """A token that changes when a trial is added or a ``running`` trial's record changes.

        Finished records never change, so only the names of the trial refs (one directory
        listing, no file reads) and the refs of the trials last seen running are read: with
        10,000 trials this takes milliseconds where reading every ref takes a tenth of a second.
        """
        return self._version_of(sorted(self.store.refs.names(trials_prefix(self.id))), running)

    def _version_of(self, names: list[str], running: tuple[int, ...]) -> str:
        prefix = trials_prefix(self.id)
        hasher = xxhash.xxh3_64()
        for name in names:
            hasher.update(f"{name};".encode())
        for trial_id in running:
            try:
                hasher.update(f"{trial_id}={self.store.refs.get(f'{prefix}{trial_id}')};".encode())
            except KeyError:
                hasher.update(f"{trial_id}=gone;".encode())
            except ValueError:  # a corrupt ref: the trial shows as damaged
                hasher.update(f"{trial_id}=damaged;".encode())
        return hasher.hexdigest()

    def snapshot(self) -> Snapshot:
        """The current history, rebuilt only when the trial refs changed."""
        with self._lock:
            current = self._snapshot
            now = time.monotonic()
            if current is not None and now - current.checked < HISTORY_TTL:
                return current
            running = current.running if current is not None else ()
            version = self.version(running)
            if current is not None and current.version == version:
                current.checked = now
                return current
            # The token is taken before reading, so a change while reading shows up at the
            # next check. When the set of running trials changed, the next check's token
            # (over the new set) differs once more: one extra read, never a stale table.
            frame = _shown(self.experiment.get_history(verbose=True))
            running = tuple(int(i) for i in frame.index[(statuses(frame) == RUNNING).to_numpy()])
            self._snapshot = Snapshot(version, frame, time.monotonic(), running)
            return self._snapshot

    def first_view(self, query: HistoryQuery) -> dict[str, Any] | None:
        """The page the history opens on, made without the whole table (firstview.py);
        None when only the DataFrame can say it. Kept for HISTORY_TTL, like a snapshot, so
        the page warm() made at start answers the browser's first request."""
        with self._first_lock:
            made = self._first
            if made is not None and made[1] == query and time.monotonic() - made[0] < HISTORY_TTL:
                return made[2]
            names = sorted(self.store.refs.names(trials_prefix(self.id)))
            version = self._version_of(names, ())
            page = firstview.first_page(self.store, self.id, names, version, query)
            if page is not None:
                self._first = (time.monotonic(), query, page)
            return page

    def query(self, query: HistoryQuery, brushes: tuple = ()) -> dict[str, Any]:
        """One page of the history as JSON-ready data (inside ``brushes``, parallel.py)."""
        if self._snapshot is None and firstview.is_first_view(query, brushes):
            page = self.first_view(query)
            if page is not None:
                self._served.set()
                return page
        snap = self.snapshot()
        keep = brush_mask(snap.frame, brushes) if brushes else None
        page = run_query(snap.frame, snap.text, query, keep)
        page["version"] = snap.version
        self._served.set()
        return page

    def matching(self, query: HistoryQuery, brushes: tuple = ()) -> list[int]:
        """Ids of every trial the query (and ``brushes``) keeps, in the query's order."""
        snap = self.snapshot()
        keep = brush_mask(snap.frame, brushes) if brushes else None
        return [int(i) for i in select(snap.frame, snap.text, query, keep).index]

    def parallel(self, query: HistoryQuery) -> dict[str, Any]:
        """Parallel-coordinates data of the trials the query's filter and status keep."""
        snap = self.snapshot()
        data = parallel_data(select(snap.frame, snap.text, query))
        data["version"] = snap.version
        return data

    # trials --------------------------------------------------------------------------
    def trial(self, trial_id: int) -> dict[str, Any]:
        """The trial record, JSON-ready; finished trials are cached (records never change)."""
        cached = self._records.get(trial_id)
        if cached is not None:
            return cached
        with self._lock:
            try:
                record = jsonable(self.experiment.get_trial(trial_id))
            except DamagedTrial as exc:
                # Shown as damaged (never cached: it may be repaired), like the history row.
                return damaged_record(exc)
            except TrialNotFound:
                raise  # it names the ids that exist
            except KeyError:
                raise TrialNotFound(trial_id, self.id, self.experiment.trial_id) from None
        if record.get("status") not in (RUNNING, None):
            self._records[trial_id] = record
        return record

    def has_trial(self, trial_id: int) -> bool:
        """Whether trial ``trial_id`` exists (one ref lookup)."""
        return bool(self.store.refs.has(trial_ref(self.id, trial_id)))

    def is_running(self, trial_id: int) -> bool:
        return self.trial(trial_id).get("status") == RUNNING

    def code(self, trial_id: int) -> str:
        if self.trial(trial_id).get("status") == DAMAGED:
            return ""
        with self._lock:
            return str(self.experiment.get_code(trial_id=trial_id))

    def diff(self, a: int, b: int) -> str:
        self.trial(a), self.trial(b)  # unknown ids fail as TrialNotFound before diffing
        with self._lock:
            return diff_text(self.experiment, a, b)

    # metrics -------------------------------------------------------------------------
    def metric_keys(self, trial_ids: list[int]) -> list[str]:
        """Metric keys recorded by any of ``trial_ids``, sorted."""
        keys: set[str] = set()
        for trial_id in trial_ids:
            if self.trial(trial_id).get("status") == DAMAGED:
                continue
            with self._lock:
                keys.update(self.experiment.get_metric_keys(trial_id=trial_id))
        return sorted(keys)

    def metric_series(self, key: str, trial_id: int) -> dict[str, list]:
        """``{"epoch": [...], "value": [...]}`` of one metric of one trial ([] if absent)."""
        cached = self._series.get((trial_id, key))
        if cached is not None:
            return cached
        running = self.is_running(trial_id)
        if self.trial(trial_id).get("status") == DAMAGED:
            return {"epoch": [], "value": []}
        with self._lock:
            if key not in self.experiment.get_metric_keys(trial_id=trial_id):
                return {"epoch": [], "value": []}
            frame = self.experiment.load_metric(key, trial_id=trial_id)
        column = frame.iloc[:, 0] if isinstance(frame, pd.DataFrame) else frame
        column = column.dropna()
        series = {"epoch": jsonable(list(column.index)), "value": jsonable(list(column.to_numpy()))}
        if not running:
            self._series[(trial_id, key)] = series
        return series


class Catalog:
    """The experiments reachable from one ``--store`` target.

    ``target`` is a store root (a directory with a ``config``, or a URL), a directory of
    stores such as ``./daskperiment_cache`` (one store per subdirectory), a ``daskperiment_store.Store``
    or an ``Experiment`` (its store, reopened read-only when it is a local directory).
    """

    def __init__(self, target: Any) -> None:
        self._lock = threading.Lock()
        self._views: dict[str, ExperimentView] = {}
        self._stores: dict[str, Any] = {}  # location -> opened Store
        self._open_lock = threading.Lock()
        self._served = threading.Event()  # a history page was answered (see warm)
        import daskperiment

        daskperiment.Experiment  # noqa: B018 - imported now, not in the first request
        if hasattr(target, "get_history") and hasattr(target, "trial_id"):
            target = _experiment_store(target)
        self._target = target

    @property
    def label(self) -> str:
        """Where the experiments come from, for the page header."""
        backend = getattr(self._target, "backend", None)
        if backend is not None:
            return str(getattr(backend, "url", backend))
        return str(self._target)

    def _locations(self) -> list[Any]:
        target = self._target
        if not isinstance(target, (str, Path)):
            return [target]
        text = str(target)
        if "://" in text:
            return [text]
        path = Path(text)
        if not path.is_dir():
            raise BoardError(
                f"no store at {text!r}: no such directory; pass --store PATH|URL (a store, or a "
                "directory of stores such as ./daskperiment_cache)"
            )
        # a store, or a directory of stores (the default ./daskperiment_cache): rescanned on
        # every call so experiments created while the dashboard runs appear
        return list(store_locations(text))

    def check(self) -> None:
        """Fail now (BoardError) when the target is not a store or a directory of stores."""
        import daskperiment_store as store

        for location in self._locations():
            try:
                self._open(location)
            except store.errors.StoreError as exc:
                raise BoardError(f"cannot read the store at {location}: {exc}") from exc

    def _open(self, location: Any) -> Any:
        import daskperiment_store as store

        if not isinstance(location, str):
            return location
        with self._open_lock:
            opened = self._stores.get(location)
            if opened is None:
                opened = store.open(location, create=False, read_only=True)
                self._stores[location] = opened
            return opened

    def experiments(self) -> list[dict[str, Any]]:
        """``[{id, trials, last_activity, store}]`` for every experiment, sorted by id."""
        import daskperiment

        found: dict[str, dict[str, Any]] = {}
        for location in self._locations():
            for entry in daskperiment.list_experiments(self._open(location)):
                exp_id = str(entry["id"])
                if not is_experiment_id(exp_id):
                    continue
                if exp_id in found and _where(location).name != exp_id:
                    continue  # the store named after an experiment wins (as in view())
                found[exp_id] = {**jsonable(entry), "store": self._shown(location)}
        return [found[k] for k in sorted(found)]

    def ids(self) -> list[str]:
        """Ids of the experiments with at least one trial (cheap: ref names only)."""
        found: set[str] = set()
        for location in self._locations():
            for name in self._open(location).refs.names(EXPERIMENTS_PREFIX):
                split = split_trial_ref(name)
                if split is not None and is_experiment_id(split[0]):
                    found.add(split[0])
        return sorted(found)

    def _shown(self, location: Any) -> str:
        return location if isinstance(location, str) else self.label

    def _store_of(self, exp_id: str) -> Any | None:
        """The store holding experiment ``exp_id``; in a directory of stores, the store
        named after the experiment is looked at first (and usually is the only one)."""
        locations = self._locations()
        locations.sort(key=lambda loc: _where(loc).name != exp_id)
        prefix = trials_prefix(exp_id)
        for location in locations:
            opened = self._open(location)
            # a few existence checks first (opening.py): listing 100,000 trial refs takes long
            if last_trial_id(opened, exp_id) or opened.refs.names(prefix):
                return opened
        return None

    def view(self, exp_id: str) -> ExperimentView:
        """The read-only view of experiment ``exp_id`` (ExperimentNotFound if absent)."""
        parse_experiment_id(exp_id)
        view = self._views.get(exp_id)
        if view is not None:
            return view
        with self._lock:
            view = self._views.get(exp_id)
            if view is None:
                opened = self._store_of(exp_id)
                if opened is None:
                    raise ExperimentNotFound(exp_id, self.label)
                import daskperiment

                experiment = daskperiment.Experiment(exp_id, backend=opened)
                view = ExperimentView(experiment, opened, self._served)
                self._views[exp_id] = view
        return view

    def warm(self) -> None:
        """Read every experiment's history once, so later pages, sorts and filters are served
        from memory. A browser opening the dashboard right away is answered first (its first
        view is made on demand, firstview.py): building 100,000 rows takes seconds of the one
        interpreter lock, so warming waits for that answer, or WARM_DELAY seconds."""
        self._served.wait(WARM_DELAY)
        for exp_id in self.ids():
            try:
                view = self.view(exp_id)
                view.first_view(HistoryQuery())
                view.snapshot()
            except Exception:  # noqa: BLE001 - the request will report the same error
                logger.debug("warming %s failed", exp_id, exc_info=True)


def _where(location: Any) -> Path:
    return Path(location) if isinstance(location, str) and "://" not in location else Path("")


def _experiment_store(experiment: Any) -> Any:
    """Where the dashboard reads ``experiment`` from: its store's directory opened
    read-only, or (a remote or in-memory store) the store object itself, through which the
    dashboard only ever reads."""
    import daskperiment_store as store

    if not experiment.trial_id:
        # ex.store would create the store: a dashboard never writes, so say what to do
        raise BoardError(
            f"experiment {experiment.id!r} has no trials yet; run one (result.compute()) and "
            "start the dashboard again"
        )
    backend = experiment.store.backend
    if isinstance(backend, store.LocalBackend):
        return backend.root
    # a remote store may need options (credentials, endpoint) only its object carries
    return experiment.store


def damaged_record(exc: DamagedTrial) -> dict[str, Any]:
    """What the trial page and API show for a trial whose ref or record cannot be read."""
    return {
        "id": exc.trial_id,
        "status": DAMAGED,
        "description": f"Damaged: {exc.reason}; {FSCK_ADVICE}",
        "params": {},
    }
