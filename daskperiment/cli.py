"""The ``daskperiment`` command line.

``daskperiment run SCRIPT [name=value ...] [--seed N]`` runs the script, then one trial of
the result it builds, with those parameters (see :mod:`daskperiment.script`).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from .errors import DaskperimentError
from .log import logger


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daskperiment",
        description="Reproducible experiments on Dask, recorded in a content-addressed store.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    run = commands.add_parser(
        "run",
        help="run a script, then one trial of its @ex.result",
        description=(
            "Execute SCRIPT (with __name__ == '__daskperiment__', so its own "
            "`if __name__ == '__main__':` block does not run), set the parameters given as "
            "name=value (values read as Python literals, else as text) and compute one "
            "trial of the result the script builds. Prints the result."
        ),
    )
    run.add_argument("script", help="path of the Python script")
    run.add_argument("parameters", nargs="*", metavar="name=value", help="parameter values")
    run.add_argument("--seed", type=int, default=None, help="random seed of the trial")
    return parser


def _run(args: argparse.Namespace) -> int:
    from .script import run_script

    argv = list(args.parameters)
    if args.seed is not None:
        argv += ["--seed", str(args.seed)]
    value = run_script(args.script, argv)
    print(value)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``daskperiment`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
    except DaskperimentError as exc:
        # A mistake on the command line or in the script's set-up: the message says it all.
        logger.error("%s", exc)
        return 2
    except Exception:
        # The trial failed (it is recorded as failed): show where, as Python would.
        traceback.print_exc()
        return 1
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
