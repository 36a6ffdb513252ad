"""The state an experiment keeps for its trials: :class:`ExperimentState`, the base class of
:class:`~daskperiment.experiment.Experiment` (the store, opened lazily, the last trial, the
code and environment trees already stored, the history rows not yet in the index), and the
flush of those rows at exit.

What a trial or a sweep gets of it is a :class:`~daskperiment.trialsession.Session`
(``ExperimentState._session()``), made when the first trial starts: opening an experiment and
reading its history never import that module.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import daskperiment_store as store
from daskperiment_store import Link

# environment (package lists, git) is imported when a trial first needs it, not on opening
from . import history, opening
from .errors import DamagedTrial
from .location import StoreHandle
from .log import logger
from .reads import MALFORMED, read_json

if TYPE_CHECKING:
    from .parameter import ParameterRegistry
    from .steps import StepSpec
    from .trialsession import Session

CODE_TYPE = "daskperiment.code"
ENVIRONMENT_TYPE = "daskperiment.environment"


class ExperimentState:
    """The per-experiment state trials read and update: the store (opened lazily, created
    by the first trial), the last trial, the code and environment trees already stored,
    the history rows not yet in the index. :class:`~daskperiment.experiment.Experiment`
    inherits it and sets the attributes in ``_setup``; :meth:`_session` is what a trial
    gets of it."""

    id: str
    _lock: threading.RLock
    _target: Any
    _store: store.Store | None
    _backend: Any
    _writable: store.Store | None
    _handle_obj: StoreHandle | None
    _parameters: ParameterRegistry
    _steps: dict[str, StepSpec]
    _reader: history.HistoryReader
    _last_trial_id: int
    _last_record: dict[str, Any] | None
    _env_seen: str | None
    _tree_cache: dict[Any, Any]
    _pending_rows: list[dict[str, Any]]
    _last_flush: float
    _default_seed: int | None
    _system_metrics: bool
    #: whether this process derived purity entries from unindexed records (catch_up)
    _caught_up: bool = False

    def get_history(self, verbose: bool = False, last: int | None = None) -> Any:
        raise NotImplementedError  # the experiment's history table (Experiment.get_history)

    def _read_store(self) -> store.Store | None:
        """The store for reading, or None while it does not exist yet (nothing recorded)."""
        if self._store is None:
            if self._target is None:  # a worker's stand-in for a store it cannot reach
                return None
            try:
                self._store = store.open(self._target, create=False)
            except store.errors.StoreNotFound:
                return None
            self._backend = self._store.backend
        return self._store

    def _store_for_writing(self) -> store.Store:
        """The store for recording trials, created on first use."""
        if self._writable is None:
            st = self._read_store()
            if st is None or st.read_only:
                st = store.open(self._target, create=True)
                if self._store is None:
                    self._store, self._backend = st, st.backend
            self._writable = st
        return self._writable

    @property
    def _handle(self) -> StoreHandle:
        if self._handle_obj is None:
            self._handle_obj = StoreHandle(self._store_for_writing())
        return self._handle_obj

    def _refreshed_trial_id(self) -> int:
        """The last trial id, counting trials other processes recorded (no listing)."""
        st = self._read_store()
        if st is not None:
            latest = opening.last_trial_id_after(st, self.id, self._last_trial_id)
            self._last_trial_id = max(self._last_trial_id, latest)
        return self._last_trial_id

    def _load(self) -> None:
        st = self._read_store()
        if st is None:
            return
        # Constant time however many trials (opening.py); the environment is compared with
        # the last trial's when the next trial starts, not here (no scan, no pandas import).
        self._last_trial_id = opening.last_trial_id(st, self.id, self._reader)
        if not self._last_trial_id:
            return
        try:
            self._last_record = history.load_trial(st, self.id, self._last_trial_id)[1]
        except store.errors.RefNotFound:  # deleted since the listing
            pass
        except MALFORMED as exc:  # never run it; its trial reads as malformed, others work
            logger.warning("Trial %d of %s: %s", self._last_trial_id, self.id, exc)
        except DamagedTrial as exc:
            # Only the code and environment diffs of the next trial need it: new trials
            # still take fresh ids after the damaged one.
            logger.warning("%s", exc)
        where = "path" if isinstance(self._backend, store.LocalBackend) else "url"
        logger.info(
            "Loaded Experiment(id: %s, trial_id: %d) from %s=%s",
            self.id,
            self._last_trial_id,
            where,
            st.url,
        )

    def _scan_last_trial_id(self, st: store.Store) -> int:
        ids = self._reader.trial_ids(st)
        return ids[-1] if ids else 0

    def _took_trial_id(self, trial_id: int) -> None:
        self._last_trial_id = max(self._last_trial_id, trial_id)

    def _session(self) -> Session:
        """What a trial or a sweep needs of this experiment (daskperiment/trialsession.py)."""
        from .trialsession import Session

        return Session(
            experiment_id=self.id,
            parameters=self._parameters,
            system_metrics=self._system_metrics,
            default_seed=self._default_seed,
            store_for_writing=self._store_for_writing,
            handle=lambda: self._handle,
            code_tree=self._code_tree,
            environment_tree=self._environment_tree,
            note_environment=self._note_environment,
            last_trial_id=lambda: self._last_trial_id,
            scan_last_trial_id=self._scan_last_trial_id,
            took_trial_id=self._took_trial_id,
            trial_recorded=self._trial_recorded,
            flush_index=self._flush_index,
            catch_up=self._catch_up,
            history=lambda verbose: self.get_history(verbose=verbose),
        )

    def _code_tree(self, st: store.Store, specs: Iterable[StepSpec]) -> str:
        order = {name: i for i, name in enumerate(self._steps)}
        specs = sorted(specs, key=lambda s: order.get(s.name, len(order)))
        cache_key = ("code", tuple(id(s.code) for s in specs))
        oid = self._tree_cache.get(cache_key)
        if oid is None:
            steps = [[s.name, Link(st.put(s.code.source))] for s in specs]
            oid = st.put({"type": CODE_TYPE, "steps": steps})
            self._tree_cache[cache_key] = oid
            self._tree_cache[("code-keep", cache_key)] = specs  # keep ids valid
        return oid

    def _environment_tree(self, st: store.Store) -> tuple[str, dict[str, Any]]:
        from . import environment

        env = environment.capture()
        cached = self._tree_cache.get("env")
        if cached is not None and cached[0] is env:
            return cached[1], env
        tree = {name: Link(st.put(value)) for name, value in env.items()}
        oid = st.put({"type": ENVIRONMENT_TYPE, "categories": tree})
        self._tree_cache["env"] = (env, oid)
        return oid, env

    def _note_environment(self, env_oid: str | None, env: dict[str, Any]) -> None:
        """Log what changed in the environment since the last trial (once per change)."""
        if env_oid is None:
            from daskperiment_store import codec

            tree = {name: Link(codec.digest(value)) for name, value in env.items()}
            env_oid = codec.digest({"type": ENVIRONMENT_TYPE, "categories": tree})
        previous = self._env_seen
        if previous is None and self._last_record is not None:
            link = self._last_record.get("environment")
            previous = link.oid if isinstance(link, Link) else None
        self._env_seen = env_oid
        if previous is None or previous == env_oid:
            return
        try:
            old = self._read_environment(self._read_store(), previous)
        except store.errors.StoreError:
            return
        from . import environment
        from .environment.changes import log_changes

        since = (self._last_record or {}).get("trial_id")
        log_changes(logger, old, env, since, environment.diff)

    def _trial_recorded(self, trial_id: int, oid: str, record: dict[str, Any]) -> None:
        """Called once a trial's final record is in the store."""
        with self._lock:
            self._last_trial_id = max(self._last_trial_id, trial_id)
            self._last_record = record
            row = history.row_of(record, oid)
            self._reader.remember(row)
            self._pending_rows.append(row)
            due = time.monotonic() - self._last_flush >= history.FLUSH_SECONDS
            if len(self._pending_rows) >= history.FLUSH_EVERY or due:
                self._flush_index()

    def _flush_index(self) -> None:
        """Write the pending purity entries, then the history rows not yet in the index (in
        that order: a trial missing from the index has its purity entries derived by the
        next process's catch-up, so the log must never lag behind the index)."""
        rows, self._pending_rows = self._pending_rows, []
        self._last_flush = time.monotonic()
        if self._writable is None:  # this process only reads: it never writes the index
            return
        from . import purity  # only writers need it: opening and reading stay light

        st = self._writable
        discovered = self._reader.take_discovered()
        try:
            if discovered:  # unindexed trials get_history() found: their refs may lag too
                purity.catch_up(st, self.id, purity.records_of(st, discovered))
            purity.flush(st, self.id)
        except (store.errors.StoreError, OSError) as exc:
            # Derived data, like the index: kept pending, and the index is not written
            # either, so the next flush, or the next process's catch_up from the records,
            # still finds the trials whose refs are missing.
            logger.debug("history index not updated: purity log could not be written: %s", exc)
            self._pending_rows = rows + self._pending_rows
            return
        rows += discovered
        if rows:
            try:
                history.flush_index(st, self.id, rows)
            except store.errors.StoreError as exc:
                # The index only speeds reading up: the records are already safe.
                logger.debug("history index not updated: %s", exc)

    def _catch_up(self, st: store.Store, trial_id: int) -> None:
        """Once per process: the final trials past the history index below ``trial_id``
        (a killed process's last ones) get their purity entries and index rows back."""
        with self._lock:
            if self._caught_up:
                return
            self._caught_up = True
            from . import purity

            found = purity.unindexed_final(st, self.id, trial_id)
            if not found:
                return
            purity.catch_up(st, self.id, found)
            self._pending_rows.extend(history.row_of(rec, oid, n) for n, oid, rec in found)

    def _read_environment(self, st: store.Store | None, oid: str) -> dict[str, Any]:
        if st is None:
            raise store.errors.ObjectNotFound(oid)
        tree = read_json(st, oid)
        return {name: read_json(st, link.oid) for name, link in tree["categories"].items()}


_EXIT_FLUSH: weakref.WeakSet[ExperimentState] = weakref.WeakSet()


_EXIT_FLUSH_REGISTERED = False


def _register_exit_flush(ex: ExperimentState) -> None:
    global _EXIT_FLUSH_REGISTERED
    if not _EXIT_FLUSH_REGISTERED:
        _EXIT_FLUSH_REGISTERED = True
        # Remote stores (s3fs/aiohttp) need concurrent.futures executors, which shut down in
        # threading's exit hooks, before atexit handlers run: flushing from an atexit handler
        # would fail on S3 and lose the last rows of the history index. Register with the
        # same hook list concurrent.futures uses, so this flush runs before that shutdown
        # (hooks run last-registered first, and this one is registered after theirs).
        register = getattr(threading, "_register_atexit", None)
        try:
            if register is None:
                raise RuntimeError("no threading exit hooks")
            register(_flush_all)
        except RuntimeError:  # interpreter already shutting down, or no such hook
            atexit.register(_flush_all)
    _EXIT_FLUSH.add(ex)


def _flush_all() -> None:
    for ex in list(_EXIT_FLUSH):
        try:
            ex._flush_index()
        except Exception as exc:  # noqa: BLE001 - the index is derived data; records are safe
            logger.warning(
                "Could not update the history index of %s at exit (%s); the trial records "
                "are stored and get_history() reads them",
                ex.id,
                exc,
            )
