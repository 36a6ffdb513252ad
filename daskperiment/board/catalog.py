"""What the dashboard shows: the experiments of one store or of a directory of stores.

Everything is read through daskperiment's public API (``list_experiments``, ``Experiment``
and its ``get_*`` methods) on stores opened read-only, so the dashboard can never write.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import xxhash

from daskperiment.errors import ExperimentNotFound, TrialNotFound

from .codediff import diff_text
from .errors import BoardError, PageNotFound
from .jsonable import jsonable
from .query import HistoryQuery, run_query

EXPERIMENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
TRIAL_ID = re.compile(r"^[1-9][0-9]{0,11}$")
#: How long a history snapshot is trusted before the trial refs are listed again (seconds).
HISTORY_TTL = 1.5


def parse_experiment_id(text: str) -> str:
    """Validate an experiment id taken from a URL (letters, digits, ``_``, ``-``)."""
    if not EXPERIMENT_ID.match(text):
        raise PageNotFound(f"no experiment {text!r}: ids are letters, digits, '_' and '-'")
    return text


def parse_trial_id(text: str) -> int:
    """Validate a trial id taken from a URL: a positive decimal integer, nothing else."""
    if not TRIAL_ID.match(text):
        raise PageNotFound(f"no trial {text!r}: trial ids are positive integers like 1, 2, 3")
    return int(text)


@dataclass
class Snapshot:
    """The history of an experiment at one moment, with its cells as text for filtering."""

    version: str
    frame: pd.DataFrame
    checked: float
    _text: pd.DataFrame | None = None

    @property
    def text(self) -> pd.DataFrame:
        if self._text is None:
            self._text = self.frame.astype(str)
        return self._text


class ExperimentView:
    """Read-only access to one experiment, with the history cached between requests."""

    def __init__(self, experiment: Any, store: Any) -> None:
        self.experiment = experiment
        self.store = store
        self.id: str = experiment.id
        # The experiment object is shared by every request thread; calls into it are
        # serialized so its internal caches are never touched concurrently.
        self._lock = threading.RLock()
        self._snapshot: Snapshot | None = None
        self._records: dict[int, dict] = {}
        self._series: dict[tuple[int, str], dict] = {}

    # history -------------------------------------------------------------------------
    def version(self) -> str:
        """A token that changes whenever a trial is added or its record replaced."""
        refs = self.store.refs.list(f"experiments/{self.id}/trials/")
        hasher = xxhash.xxh3_64()
        for name in sorted(refs):
            hasher.update(f"{name}={refs[name]};".encode())
        return hasher.hexdigest()

    def snapshot(self) -> Snapshot:
        """The current history, rebuilt only when the trial refs changed."""
        with self._lock:
            current = self._snapshot
            now = time.monotonic()
            if current is not None and now - current.checked < HISTORY_TTL:
                return current
            version = self.version()
            if current is not None and current.version == version:
                current.checked = now
                return current
            frame = self.experiment.get_history()
            self._snapshot = Snapshot(version, frame, time.monotonic())
            return self._snapshot

    def query(self, query: HistoryQuery) -> dict[str, Any]:
        """One page of the history as JSON-ready data."""
        snap = self.snapshot()
        page = run_query(snap.frame, snap.text, query)
        page["version"] = snap.version
        return page

    # trials --------------------------------------------------------------------------
    def trial(self, trial_id: int) -> dict[str, Any]:
        """The trial record, JSON-ready; finished trials are cached (records never change)."""
        cached = self._records.get(trial_id)
        if cached is not None:
            return cached
        with self._lock:
            try:
                record = jsonable(self.experiment.get_trial(trial_id))
            except KeyError:
                raise TrialNotFound(trial_id, self.id) from None
        if record.get("status") not in ("running", None):
            self._records[trial_id] = record
        return record

    def is_running(self, trial_id: int) -> bool:
        return self.trial(trial_id).get("status") == "running"

    def code(self, trial_id: int) -> str:
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
            self.trial(trial_id)
            with self._lock:
                keys.update(self.experiment.get_metric_keys(trial_id=trial_id))
        return sorted(keys)

    def metric_series(self, key: str, trial_id: int) -> dict[str, list]:
        """``{"epoch": [...], "value": [...]}`` of one metric of one trial ([] if absent)."""
        cached = self._series.get((trial_id, key))
        if cached is not None:
            return cached
        running = self.is_running(trial_id)
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
    stores such as ``./daskperiment_cache`` (one store per subdirectory), a ``store.Store``
    or an ``Experiment`` (its store; the experiment object itself serves its own id).
    """

    def __init__(self, target: Any) -> None:
        self._target = target
        self._lock = threading.Lock()
        self._views: dict[str, ExperimentView] = {}
        self._stores: dict[str, Any] = {}  # location -> opened Store
        self._own: dict[str, Any] = {}  # experiment objects handed to us (id -> experiment)
        if hasattr(target, "get_history") and hasattr(target, "store"):
            self._own[target.id] = target
            self._target = target.store

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
        if not path.exists():
            raise BoardError(
                f"no store at {text!r}: the directory does not exist; pass --store PATH|URL"
            )
        if (path / "config").is_file():
            return [text]
        # a directory of stores (the default ./daskperiment_cache): rescanned on every call so
        # experiments created while the dashboard runs appear
        return [str(p) for p in sorted(path.iterdir()) if (p / "config").is_file()]

    def _open(self, location: Any) -> Any:
        import store

        if not isinstance(location, str):
            return location
        opened = self._stores.get(location)
        if opened is None:
            opened = store.open(location, create=False, read_only=True)
            self._stores[location] = opened
        return opened

    def experiments(self) -> list[dict[str, Any]]:
        """``[{id, trials, last_activity, store}]`` for every experiment, sorted by id."""
        import daskperiment

        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            for location in self._locations():
                opened = self._open(location)
                for entry in daskperiment.list_experiments(opened):
                    exp_id = str(entry["id"])
                    if exp_id in found or not EXPERIMENT_ID.match(exp_id):
                        continue
                    found[exp_id] = {
                        **jsonable(entry),
                        "store": str(location) if isinstance(location, str) else self.label,
                    }
                    self._stores.setdefault(f"id:{exp_id}", opened)
        return [found[k] for k in sorted(found)]

    def view(self, exp_id: str) -> ExperimentView:
        """The read-only view of experiment ``exp_id`` (ExperimentNotFound if absent)."""
        parse_experiment_id(exp_id)
        view = self._views.get(exp_id)
        if view is not None:
            return view
        opened = self._stores.get(f"id:{exp_id}")
        if opened is None:
            self.experiments()
            opened = self._stores.get(f"id:{exp_id}")
        if opened is None:
            raise ExperimentNotFound(exp_id, self.label)
        with self._lock:
            view = self._views.get(exp_id)
            if view is None:
                view = ExperimentView(self._experiment(exp_id, opened), opened)
                self._views[exp_id] = view
        return view

    def _experiment(self, exp_id: str, opened: Any) -> Any:
        own = self._own.get(exp_id)
        if own is not None:
            return own
        import daskperiment

        return daskperiment.Experiment(exp_id, backend=opened)
