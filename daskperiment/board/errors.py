"""Errors of the dashboard; each says what was wrong and what to do.

Unknown experiments and trials are daskperiment's own ``ExperimentNotFound`` and
``TrialNotFound`` (the server answers them with 404).
"""

from __future__ import annotations

from daskperiment.errors import DaskperimentError, NotFound


class BoardError(DaskperimentError):
    """A problem the dashboard reports to its user (bad --store, missing extra, ...)."""


class BadRequest(BoardError, ValueError):
    """A request parameter is missing or malformed; the message says which and why."""


class PageNotFound(NotFound, BoardError):
    """Nothing at this URL: an unknown page, static file, or an id that cannot be one."""
