"""The ``daskperiment`` command line (also ``python -m daskperiment``).

Stores: ``--store PATH|URL`` (default ``./daskperiment_cache``). A URL, or a local path with a
``config`` file, is one store holding experiments by id; any other local path is a directory
holding one store per experiment, so experiment ``EXP`` lives in ``PATH/EXP``.

Exit status: 0 on success; 1 on an expected failure (unknown experiment or trial, corrupt
object, conflict, a bad bundle: one line on stderr, no traceback unless ``--debug``) and for
``diff --exit-code`` when trials differ; 2 on a usage error (one line on stderr).
``daskperiment run`` keeps script semantics: the trial's own traceback when it fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import daskperiment_store as store  # noqa: F401

from . import __version__, ids, team_commands
from .cli_commands import (
    cmd_cat,
    cmd_code,
    cmd_diff,
    cmd_export,
    cmd_fsck,
    cmd_gc,
    cmd_import,
    cmd_list,
    cmd_log,
    cmd_pull,
    cmd_push,
    cmd_run,
    cmd_show,
)
from .cli_common import EXPECTED, _experiment
from .errors import DaskperimentError
from .log import logger
from .provenance import commands as provenance_commands

DEFAULT_STORE = "daskperiment_cache"


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors reported on one line."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------------------


def _experiment_id(text: str) -> str:
    if not ids.is_experiment_id(text):
        shown = repr(text) if len(text) <= 60 else f"{text[:40]!r}... ({len(text)} characters)"
        raise argparse.ArgumentTypeError(f"invalid experiment id {shown}: {ids.EXPERIMENT_ID_RULE}")
    return text


def _trial_id(text: str) -> int | str:
    """A trial number, or a global-id prefix that :func:`_resolve_trials` turns into one."""
    return team_commands.trial_arg(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: seconds, 0 or more")
    return value


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--store and --debug, accepted before or after the command name."""
    default: Any = DEFAULT_STORE if top else argparse.SUPPRESS
    parser.add_argument(
        "--store",
        metavar="PATH|URL",
        default=default,
        help="a store or a directory of stores (default: ./daskperiment_cache)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="show the full traceback of a failure",
    )


def _format(parser: argparse.ArgumentParser, choices: Sequence[str]) -> None:
    parser.add_argument(
        "--format",
        choices=choices,
        default=choices[0],
        help=f"output format (default {choices[0]}; json for machines)",
    )


#: Each command: what it does (its help line) and the example its --help shows.
SUMMARIES = {
    "list": "experiments in the store, with trial counts and last activity",
    "log": "the history of an experiment, one row per trial",
    "show": "one trial: parameters, result, status, seed, timings, steps, digests",
    "diff": "what changed between two trials, as git diff shows it",
    "code": "the code of the steps a trial ran",
    "cat": "an object by its digest",
    "export": "write trials and everything they reference into a bundle file",
    "import": "import a bundle file made by export",
    "push": "copy an experiment's trials to another store",
    "pull": "copy an experiment's trials from another store",
    "fsck": "verify every object and ref of the stores",
    "gc": "remove objects no trial reaches and leftover temp files",
    "run": "run a script, then one trial of its @ex.result",
    **provenance_commands.SUMMARIES,
    **team_commands.SUMMARIES,
    "board": "serve the dashboard in a browser (options: daskperiment board --help)",
}
EXAMPLES = {
    "list": "list",
    "log": "log quickstart_pj --format csv",
    "show": "show quickstart_pj 3",
    "diff": "diff quickstart_pj 1 3 --code",
    "code": "code quickstart_pj 1",
    "cat": "cat 4819e70b47af1c1181b767fa8b14154e",
    "export": "export quickstart_pj 1 3 -o trials.dpb",
    "import": "import trials.dpb --as quickstart_copy",
    "push": "push quickstart_pj s3://team-bucket/experiments",
    "pull": "pull quickstart_pj s3://team-bucket/experiments",
    "fsck": "fsck",
    "gc": "gc --dry-run",
    "run": "run my_experiment.py a=1 b=2 --seed 1",
    **provenance_commands.EXAMPLES,
    **team_commands.EXAMPLES,
    "board": "board --port 5000",
}
COMMANDS = [(name, SUMMARIES[name], f"daskperiment {EXAMPLES[name]}") for name in SUMMARIES]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``daskperiment`` command."""
    parser = _Parser(
        prog="daskperiment",
        description="Reproducible experiments on Dask, recorded in a content-addressed store.",
        epilog="example:\n  daskperiment log quickstart_pj\n\n"
        "'daskperiment COMMAND --help' describes a command, with an example.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"daskperiment {__version__}")
    _common(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    subs = {}
    for name, summary, example in COMMANDS:
        sub = commands.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            add_help=name != "board",
        )
        if name != "board":
            _common(sub, top=False)
        subs[name] = sub
    _arguments(subs)
    return parser


EXP_ARG: dict[str, Any] = {"type": _experiment_id, "metavar": "EXP", "help": "experiment id"}


def _arguments(subs: Mapping[str, argparse.ArgumentParser]) -> None:
    """The arguments of every command but board (which parses its own)."""
    _reading_arguments(subs)
    _diff_arguments(subs["diff"])
    _sharing_arguments(subs)
    _maintenance_arguments(subs)
    provenance_commands.add_arguments(subs, EXP_ARG, _trial_id)
    team_commands.add_arguments(subs, EXP_ARG)
    team_commands.add_log_arguments(subs["log"])


def _reading_arguments(subs: Mapping[str, argparse.ArgumentParser]) -> None:
    _format(subs["list"], ("table", "csv", "json"))
    subs["log"].add_argument("experiment", **EXP_ARG)
    subs["log"].add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="add result type, process time, status, seed, digests, reused steps, global id",
    )
    subs["log"].add_argument(
        "--uses",
        metavar="PATH|DIGEST",
        help="only the trials whose steps read this file (any version) or used this digest",
    )
    _format(subs["log"], ("table", "csv", "json"))
    subs["show"].add_argument("experiment", **EXP_ARG)
    subs["show"].add_argument("trial", type=_trial_id, metavar="TRIAL", help="trial id")
    _format(subs["show"], ("text", "json"))
    subs["code"].add_argument("experiment", **EXP_ARG)
    subs["code"].add_argument(
        "trial", type=_trial_id, nargs="?", metavar="TRIAL", help="trial id (default: the last)"
    )
    c = subs["cat"]
    c.add_argument("oid", metavar="OID", help="32-hex digest of the object")
    c.add_argument("-e", "--experiment", type=_experiment_id, help="look only in EXP's store")
    c.add_argument("--info", action="store_true", help="kind and sizes instead of the content")
    c.add_argument(
        "--unpickle-runs-code",
        action="store_true",
        help="load pickle objects too: this RUNS CODE chosen by whoever stored the object",
    )
    c.add_argument("--to", metavar="FILE", help="write the object to FILE: .npy, .parquet or .csv")


def _diff_arguments(d: argparse.ArgumentParser) -> None:
    d.add_argument("experiment", **EXP_ARG)
    d.add_argument("a", type=_trial_id, metavar="A", help="the older trial id")
    d.add_argument("b", type=_trial_id, metavar="B", help="the newer trial id")
    d.add_argument("--code", action="store_true", help="only the code of the steps")
    d.add_argument("--params", action="store_true", help="only the parameters")
    d.add_argument("--env", action="store_true", help="only the environment")
    d.add_argument("--stat", action="store_true", help="a summary of changed parts (as git)")
    d.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the output (auto: only on a terminal, unless NO_COLOR is set)",
    )
    d.add_argument(
        "--exit-code", action="store_true", help="exit with status 1 when the trials differ"
    )
    _format(d, ("text", "json"))


def _sharing_arguments(subs: Mapping[str, argparse.ArgumentParser]) -> None:
    e = subs["export"]
    e.add_argument("experiment", **EXP_ARG)
    e.add_argument("trials", type=_trial_id, nargs="*", metavar="TRIAL", help="default: all")
    e.add_argument("-o", "--output", required=True, metavar="FILE", help="bundle file to write")
    i = subs["import"]
    i.add_argument("bundle", metavar="FILE", help="bundle file")
    i.add_argument(
        "--as", dest="new_id", type=_experiment_id, metavar="NEW_ID", help="new experiment id"
    )
    for name in ("push", "pull"):
        subs[name].add_argument("experiment", **EXP_ARG)
        subs[name].add_argument("url", metavar="URL", help="the other store: a path or URL")
    for name in ("export", "import", "push", "pull"):
        _format(subs[name], ("text", "json"))


def _maintenance_arguments(subs: Mapping[str, argparse.ArgumentParser]) -> None:
    for name in ("fsck", "gc"):
        subs[name].add_argument(
            "experiment", nargs="?", type=_experiment_id, metavar="EXP", help="only EXP's store"
        )
        subs[name].add_argument(
            "--progress",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="a progress bar on stderr (default: when stderr is a terminal)",
        )
    subs["gc"].add_argument("--dry-run", action="store_true", help="only list what would go")
    subs["gc"].add_argument(
        "--grace",
        type=_seconds,
        default=3600.0,
        metavar="SECONDS",
        help="keep anything younger than this (default 3600: running writers are safe)",
    )
    r = subs["run"]
    r.description = (
        "Execute SCRIPT (with __name__ == '__daskperiment__', so its own "
        "`if __name__ == '__main__':` block does not run), set the parameters given as "
        "name=value (values read as Python literals, else as text) and compute one "
        "trial of the result the script builds. Prints the result."
    )
    r.add_argument("script", help="path of the Python script")
    r.add_argument("parameters", nargs="*", metavar="name=value", help="parameter values")
    r.add_argument("--seed", type=int, default=None, help="random seed of the trial")


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": cmd_list,
    "log": cmd_log,
    "show": cmd_show,
    "diff": cmd_diff,
    "code": cmd_code,
    "cat": cmd_cat,
    "export": cmd_export,
    "import": cmd_import,
    "push": cmd_push,
    "pull": cmd_pull,
    "fsck": cmd_fsck,
    "gc": cmd_gc,
    "checkout": provenance_commands.cmd_checkout,
    "reproduce": provenance_commands.cmd_reproduce,
}


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    return " ".join(text.split())


def _run_script(args: argparse.Namespace) -> int:
    try:
        return cmd_run(args)
    except DaskperimentError as exc:
        # A mistake on the command line or in the script's set-up: the message says it all.
        if args.debug:
            traceback.print_exc()
        logger.error("%s", exc)
        return 2
    except Exception:
        # The trial failed (it is recorded as failed): show where, as Python would.
        traceback.print_exc()
        return 1


def _board(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> int:
    from .board import main as board_main

    if args.store != DEFAULT_STORE and "--store" not in extra:
        extra = ["--store", args.store, *extra]
    return board_main(extra)


HANDLERS.update(team_commands.handlers(_experiment))

_TRIAL_ARGS = ("trial", "trials", "a", "b")


def _resolve_trials(args: argparse.Namespace) -> None:
    """Global-id prefixes given for trials become the trials' numbers in this store."""
    named = [n for n in _TRIAL_ARGS if isinstance(getattr(args, n, None), str | list)]
    if not any(
        isinstance(v, str) for n in named for v in _as_list(getattr(args, n))
    ) or not getattr(args, "experiment", None):
        return
    from . import teams

    ex = _experiment(args)[0]
    for n in named:
        value = getattr(args, n)
        if isinstance(value, list):
            setattr(args, n, [teams.resolve(ex, v) for v in value])
        else:
            setattr(args, n, teams.resolve(ex, value))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``daskperiment`` command; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "board":
        return _board(parser, args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "run":
        return _run_script(args)
    try:
        _resolve_trials(args)
        return HANDLERS[args.command](args)
    except BrokenPipeError:
        # The reader went away (`daskperiment log x | head`): stop quietly, as Unix tools do.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 141
    except EXPECTED as exc:
        if args.debug:
            traceback.print_exc()
        print(f"daskperiment {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
