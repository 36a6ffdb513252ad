"""Directories of stores: ``daskperiment_cache/`` holds one store per experiment, by id.

``Experiment(id, backend=path)`` and ``list_experiments(path)`` accept such a directory as
well as a store: the experiment's store is ``path/<id>``, and the experiments listed are those
of every store in it. A directory is a store when it has the store's ``config`` file
(docs/store-format.md); it is a directory of stores when it is not one itself and at least
one of its subdirectories is.
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG = "config"


def is_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a local store (it has the store's ``config``)."""
    return (Path(path) / CONFIG).is_file()


def stores_in(path: str | os.PathLike[str]) -> list[Path]:
    """The stores directly inside ``path``, by name; [] when ``path`` is itself a store."""
    root = Path(path)
    if is_store(root) or not root.is_dir():
        return []
    try:
        children = sorted(root.iterdir())
    except OSError:
        return []
    return [child for child in children if child.is_dir() and is_store(child)]


def experiment_path(path: str, experiment_id: str) -> str:
    """Where experiment ``experiment_id`` lives given the local ``path`` a user passed:
    ``path/<id>`` when ``path`` is a directory of stores, else ``path`` itself."""
    if stores_in(path):
        return os.path.join(path, experiment_id)
    return path
