"""A small cluster of worker processes for the tests that run on distributed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@contextlib.contextmanager
def process_cluster(
    directory: Path,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    set_as_default: bool = True,
    config: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """A client of a ``LocalCluster`` of worker processes started in ``directory``: workers
    keep the directory they start in, which must not be where any test's store is. ``config``
    is dask configuration set while the cluster starts (its scheduler reads it then)."""
    distributed = pytest.importorskip("distributed")
    import dask

    cwd = os.getcwd()
    os.chdir(directory)
    try:
        with dask.config.set(config or {}):
            cluster = distributed.LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads_per_worker,
                processes=True,
                dashboard_address=None,
            )
    finally:
        os.chdir(cwd)
    with cluster, distributed.Client(cluster, set_as_default=set_as_default) as client:
        yield client
