"""What the commands of :mod:`daskperiment.cli` share: opening experiments quietly, and
printing tables, JSON and times."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import daskperiment_store as store

from .errors import DaskperimentError
from .location import experiment_store
from .log import logger

#: Failures the user can act on: shown as one line, exit status 1.
EXPECTED = (DaskperimentError, store.errors.StoreError, OSError)


# ---------------------------------------------------------------------------------------
# Stores and experiments
# ---------------------------------------------------------------------------------------


def _location(args: argparse.Namespace) -> str:
    return args.store


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the library's log while an experiment is opened for reading (its load
    messages and environment warnings are about this process, not the stored trials)."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _experiment(args: argparse.Namespace) -> tuple[Any, store.Store]:
    """The experiment named on the command line, opened read-only, and its store."""
    from .experiment import Experiment

    st = experiment_store(_location(args), args.experiment)
    with _quiet():
        return Experiment(args.experiment, backend=st), st


# ---------------------------------------------------------------------------------------
# Output helpers
# ---------------------------------------------------------------------------------------


def _print(text: str = "") -> None:
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")


def _json(value: Any) -> None:
    _print(json.dumps(value, indent=2, default=_jsonable, ensure_ascii=False))


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    return str(value)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines) + "\n"


def _when(epoch: Any) -> str:
    if not isinstance(epoch, int | float):
        return "-"
    return datetime.datetime.fromtimestamp(epoch).isoformat(sep=" ", timespec="seconds")


def _use_color(choice: str) -> bool:
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return sys.stdout.isatty()
