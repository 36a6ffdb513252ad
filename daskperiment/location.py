"""Where stores are: the one answer to "which store is this location".

- ``Experiment(id, backend=...)`` (:func:`experiment_target`): ``'local'`` is
  ``./daskperiment_cache/<id>``; a path, URL, backend or ``Store`` is the store itself.
- The CLI, sharing and the dashboard (:func:`locate`, :func:`store_locations`): a URL or a
  path holding a store (``daskperiment_store.is_store``) is one store holding experiments by
  id; any other local directory holds one store per experiment, like ``./daskperiment_cache``.
- Another process (:class:`StoreHandle`, :func:`worker_target`): a local store by its
  absolute path, any other by its pickled backend, a memory store not at all.

Whether a path holds a store is asked of the store (``daskperiment_store.is_store``), never
by looking for its files. The experiment-id rule itself is in :mod:`daskperiment.ids`.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any

import daskperiment_store as store

from . import storedir
from .errors import DaskperimentError, ExperimentNotFound, SharingError
from .history import list_experiments
from .opening import last_trial_id
from .record import trials_prefix


def experiment_target(experiment_id: str, backend: Any) -> tuple[Any, Any]:
    """``(target, location key)`` for the ``backend`` argument, without touching storage.

    The target is what ``daskperiment_store.open`` takes: a local path (``str``), a URL, a ``Store`` or a
    backend. Nothing is created here: the store is created by the first trial.
    """
    if isinstance(backend, store.Store):
        return backend, ("store", id(backend))
    if isinstance(backend, store.backends.base.Backend):
        return backend, ("backend", id(backend))
    if isinstance(backend, str) and backend == "local":
        backend = f"daskperiment_cache/{experiment_id}"
    if isinstance(backend, os.PathLike):
        backend = os.fspath(backend)
    if isinstance(backend, str):
        if "://" in backend:
            return backend, ("url", backend)
        backend = storedir.experiment_path(backend, experiment_id)  # daskperiment_cache/
        return backend, ("local", os.path.abspath(backend))
    raise TypeError(
        "backend must be 'local', a pathlib.Path, a store URL (memory://..., s3://...), "
        f"a store.Store or a store backend, got {backend!r}"
    )


def worker_target(target: Any, st: store.Store | None) -> Any:
    """Where a worker process finds the store (None: it cannot, e.g. a memory store)."""
    if isinstance(target, str):
        return os.path.abspath(target) if "://" not in target else target
    if st is None and isinstance(target, store.Store):
        st = target
    if st is not None:
        return shareable_location(st)
    return None if isinstance(target, store.MemoryBackend) else target


_OPEN_STORES: dict[str, store.Store] = {}
_OPEN_LOCK = threading.Lock()


class StoreHandle:
    """A picklable way for a worker to reach the experiment's store.

    In the client process (and in-process workers) it resolves to the very ``Store`` object
    the experiment uses. In another process it reopens the store: a local store by its absolute
    path, any other by its pickled backend. A store that exists only in the client's memory
    (``MemoryBackend``, ``memory://``) resolves to ``None`` elsewhere; steps then hand their
    values back and the client writes them.
    """

    def __init__(self, st: store.Store) -> None:
        self.token = uuid.uuid4().hex
        self.store: store.Store | None = st
        self.location: Any = shareable_location(st)
        _OPEN_STORES[self.token] = st

    def __getstate__(self) -> dict[str, Any]:
        return {"token": self.token, "location": self.location}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.token = state["token"]
        self.location = state["location"]
        self.store = None

    def open(self) -> store.Store | None:
        """The store for writing from this process, or None if it is not reachable here."""
        if self.store is not None:
            return self.store
        with _OPEN_LOCK:
            st = _OPEN_STORES.get(self.token)
            if st is None and self.location is not None:
                st = store.open(self.location, create=False)
                _OPEN_STORES[self.token] = st
        self.store = st
        return st


def shareable_location(st: store.Store) -> Any:
    """Where another process finds ``st``: an absolute local path, its backend, or None
    (a store only this process's memory holds)."""
    backend = st.backend
    if isinstance(backend, store.MemoryBackend) or backend.url.startswith("memory://"):
        return None
    if isinstance(backend, store.LocalBackend):
        # Workers may run with another working directory than the client.
        return os.path.abspath(backend.url)
    return backend


def is_url(location: Any) -> bool:
    """Whether ``location`` is a URL fsspec handles (``file://`` counts as a local path)."""
    return isinstance(location, str) and "://" in location and not location.startswith("file://")


def is_store_directory(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a local directory holding one store per experiment (it has no
    ``config`` of its own but is not empty), like ``./daskperiment_cache``."""
    p = Path(path)
    if not p.is_dir() or store.is_store(p):
        return False
    return any(True for _ in p.iterdir())


def locate(location: Any, experiment_id: str, *, directory: bool | None = None) -> Any:
    """What ``daskperiment_store.open`` needs for ``experiment_id`` at ``location``.

    A ``Store``, a backend or a URL is the store itself (a store holds experiments by id), and
    so is a local path with a ``config``. Any other local path is a directory of stores (one
    per experiment, like ``./daskperiment_cache``), giving ``<path>/<experiment_id>``, when
    ``directory`` is true; when it is None (the Python API, where a path names the store as
    in ``Experiment(backend=path)``) only an existing, non-empty directory counts as one.
    """
    if isinstance(location, store.Store | store.backends.base.Backend) or is_url(location):
        return location
    path = os.fspath(location)
    if path.startswith("file://"):
        path = path.removeprefix("file://")
    if store.is_store(path):
        return path
    if directory or (directory is None and is_store_directory(path)):
        return os.path.join(path, experiment_id)
    return path


def open_store(
    location: Any,
    experiment_id: str,
    *,
    create: bool = False,
    read_only: bool = False,
    directory: bool | None = None,
) -> store.Store:
    """Open the store holding ``experiment_id`` at ``location`` (see :func:`locate`).

    Raises :class:`ExperimentNotFound` when there is no store there and ``create`` is false.
    """
    target = locate(location, experiment_id, directory=directory)
    try:
        return open_target(target, create=create, read_only=read_only and not create)
    except store.errors.StoreNotFound:
        raise ExperimentNotFound(
            experiment_id, f"{display_location(target)} (no store there)"
        ) from None


def open_target(target: Any, *, create: bool = False, read_only: bool = False) -> store.Store:
    """``daskperiment_store.open`` with a URL fsspec cannot handle (unknown protocol, missing package)
    reported as a :class:`SharingError` naming the location."""
    if isinstance(target, store.Store):
        return target
    try:
        return store.open(target, create=create, read_only=read_only)
    except store.errors.StoreError:
        raise
    except (ValueError, ImportError) as exc:
        hint = (
            " (pip install 'daskperiment[s3]' for s3:// URLs)"
            if isinstance(exc, ImportError)
            else ""
        )
        raise SharingError(
            f"cannot open a store at {display_location(target)}: {exc}{hint}"
        ) from exc


def display_location(target: Any) -> str:
    """How ``target`` (a store, backend, path or URL) is named in messages."""
    if isinstance(target, store.Store):
        return target.url
    if isinstance(target, store.backends.base.Backend):
        return target.url
    return os.fspath(target)


def store_locations(location: str) -> list[str]:
    """The store paths or URLs ``location`` names: itself when it is a URL or a store, else
    each store directly inside the directory (rescanned on every call)."""
    if is_url(location) or store.is_store(location):
        return [location]
    path = Path(location)
    if not path.is_dir():
        raise store.errors.StoreError(
            f"no store or directory of stores at {location}; pass --store PATH|URL"
        )
    return [str(sub) for sub in sorted(path.iterdir()) if store.is_store(sub)]


def stores_at(location: str, experiment_id: str | None = None) -> list[store.Store]:
    """The stores at ``location`` opened read-only (the one of ``experiment_id`` if given)."""
    if experiment_id is not None:
        return [experiment_store(location, experiment_id, check_trials=False)]
    return [open_target(loc, read_only=True) for loc in store_locations(location)]


def experiment_store(
    location: str, experiment_id: str, *, check_trials: bool = True, writable: bool = False
) -> store.Store:
    """The store holding ``experiment_id``; ExperimentNotFound naming what is there."""
    try:
        st = open_store(location, experiment_id, read_only=not writable, directory=True)
    except ExperimentNotFound:
        raise experiment_not_found(location, experiment_id) from None
    # Names only: a damaged trial ref must not hide the experiment (it shows as damaged).
    if check_trials and not _has_trials(st, experiment_id):
        raise experiment_not_found(location, experiment_id)
    return st


def _has_trials(st: store.Store, experiment_id: str) -> bool:
    # A few existence checks first (opening.py); the listing only when they find nothing.
    if last_trial_id(st, experiment_id):
        return True
    return bool(st.refs.names(trials_prefix(experiment_id)))


def experiment_not_found(location: str, experiment_id: str) -> ExperimentNotFound:
    """ExperimentNotFound for ``experiment_id`` at ``location``, listing the ones there."""
    try:
        known = sorted({e["id"] for st in stores_at(location) for e in list_experiments(st)})
    except (DaskperimentError, store.errors.StoreError, OSError):
        known = []
    listed = ", ".join(known) if known else "none"
    exc = ExperimentNotFound(experiment_id, location)
    exc.args = (
        f"no experiment {experiment_id!r} in {location} (experiments there: {listed}); "
        "'daskperiment list' shows them, --store PATH|URL reads another store",
    )
    return exc
