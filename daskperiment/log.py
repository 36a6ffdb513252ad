"""The ``daskperiment`` logger.

Everything daskperiment reports goes through the standard :mod:`logging` module, on the logger
named ``daskperiment`` (children such as ``daskperiment.cli`` propagate to it). Out of the box
its records are printed to ``sys.stderr`` as::

    2019-02-03 12:34:56,789 [daskperiment] [INFO] Started Experiment (trial id=1)

That default output comes from one handler attached when this module is first imported. It
behaves like :data:`logging.lastResort`: it prints a record only when no other handler would
receive it, i.e. when neither the logger that made the record (``daskperiment`` or a child)
nor any ancestor it propagates to (normally the root logger) has a handler of its own. So
ordinary logging configuration always wins and nothing is printed twice:

- silence the INFO lines: ``logging.getLogger("daskperiment").setLevel(logging.WARNING)``;
- silence everything: ``logging.getLogger("daskperiment").disabled = True`` (or a level of
  ``logging.CRITICAL + 1``);
- redirect: add your own handler, either to the ``daskperiment`` logger or to the root logger
  (``logging.basicConfig(...)``); records then go there, in your format, instead of stderr;
- capture in tests: pytest's ``caplog`` sees every record, since records propagate.

The level is set to INFO only if the logger has none yet, so importing (or reloading) this
module never undoes a level the user chose. Configuration happens once per process: re-importing
or :func:`importlib.reload` never adds a second handler, nor puts back one the user removed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

LOGGER_NAME = "daskperiment"
FORMAT = "%(asctime)s [daskperiment] [%(levelname)s] %(message)s"
#: Name of the default handler, how a reloaded module recognises the one already attached.
HANDLER_NAME = "daskperiment-default"
_CONFIGURED = "_daskperiment_configured"


class _DefaultHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record.

    Looking the stream up per record, rather than keeping the one present at import, keeps
    output visible when Jupyter or a test runner replaces ``sys.stderr`` after import.
    """

    def __init__(self) -> None:
        super().__init__()
        self.set_name(HANDLER_NAME)
        self.setFormatter(logging.Formatter(FORMAT))
        self.addFilter(_only_if_unhandled)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - matches StreamHandler.stream
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        # StreamHandler.__init__ assigns a stream; the property above ignores it on purpose.
        pass


def _only_if_unhandled(record: logging.LogRecord) -> bool:
    """Let the default handler emit ``record`` only if no configured handler would get it.

    The walk starts at the logger that made the record (``daskperiment`` or a child of it) and
    follows propagation upwards, as :class:`logging.Logger` itself does.
    """
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        if any(h.get_name() != HANDLER_NAME for h in logger.handlers):
            return False
        if not logger.propagate:
            break
        logger = logger.parent
    return True


def get_logger() -> logging.Logger:
    """Return the ``daskperiment`` logger, configured once per process (safe to call often).

    The configuration is marked on the logger object itself, which outlives a reload of this
    module, so a handler the user removed is not put back by a later call or a reload.
    """
    logger = logging.getLogger(LOGGER_NAME)
    if getattr(logger, _CONFIGURED, False):
        return logger
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if not any(h.get_name() == HANDLER_NAME for h in logger.handlers):
        logger.addHandler(_DefaultHandler())
    setattr(logger, _CONFIGURED, True)
    return logger


def log_diff(logger: logging.Logger, header: str, difflines: Iterable[str]) -> None:
    """Log ``header`` then each diff line as its own WARNING record, as the seed shows.

    Lines are passed as arguments, never as format strings, so a ``%`` in code is printed
    as is.
    """
    logger.warning("%s", header)
    for line in difflines:
        logger.warning("%s", line)


logger = get_logger()
