"""``daskperiment tag / untag / note / archive / unarchive / delete`` and the options of
``daskperiment log`` that search the history (registered by :mod:`daskperiment.cli`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import Any

from . import identity
from .errors import DaskperimentError

SUMMARIES = {
    "tag": "tag trials (the record never changes; tags travel with push, pull and bundles)",
    "untag": "remove tags from trials",
    "note": "add a note to a trial (every note is kept, with who wrote it and when)",
    "archive": "hide trials from the default history ('log --all' shows them)",
    "unarchive": "show archived trials in the default history again",
    "delete": (
        "remove a trial from this store (then 'gc' reclaims what nothing else reaches; "
        "its number is never given to another trial)"
    ),
}
EXAMPLES = {
    "tag": "tag quickstart_pj 3 baseline",
    "untag": "untag quickstart_pj 3 baseline",
    "note": "note quickstart_pj 3 'first run with the new loss'",
    "archive": "archive quickstart_pj 1 2",
    "unarchive": "unarchive quickstart_pj 1",
    "delete": "delete quickstart_pj 2 --yes",
}

#: Opens the experiment named by ``args``: ``(experiment, store)``; writable if asked.
Opener = Callable[..., tuple[Any, Any]]


class NotConfirmed(DaskperimentError, RuntimeError):
    """``delete`` without ``--yes`` and without a 'y' answer."""


def trial_arg(text: str) -> int | str:
    """A trial on the command line: its number, or a global-id prefix (resolved later)."""
    from .ids import TRIAL_ID_RULE, parse_trial_id

    number = parse_trial_id(text)
    if number is not None:
        return number
    low = text.lower()
    digits = text.isascii() and text.isdigit()  # decimal digits are always a number
    if not digits and len(low) >= identity.MIN_PREFIX and all(c in _HEX for c in low):
        return low
    raise argparse.ArgumentTypeError(
        f"invalid trial id {text!r}: {TRIAL_ID_RULE}, like 1, 2, 3 (or the start of a "
        f"trial's global id: at least {identity.MIN_PREFIX} hex characters, not all digits)"
    )


_HEX = frozenset("0123456789abcdef")


def add_arguments(subs: Mapping[str, argparse.ArgumentParser], exp_arg: dict) -> None:
    for name in ("tag", "untag"):
        subs[name].add_argument("experiment", **exp_arg)
        subs[name].add_argument("trial", type=trial_arg, metavar="TRIAL", help="trial")
        subs[name].add_argument("tags", nargs="+", metavar="TAG", help="tag(s)")
    subs["note"].add_argument("experiment", **exp_arg)
    subs["note"].add_argument("trial", type=trial_arg, metavar="TRIAL", help="trial")
    subs["note"].add_argument("text", metavar="TEXT", help="the note")
    for name in ("archive", "unarchive"):
        subs[name].add_argument("experiment", **exp_arg)
        subs[name].add_argument("trials", type=trial_arg, nargs="+", metavar="TRIAL")
    d = subs["delete"]
    d.add_argument("experiment", **exp_arg)
    d.add_argument("trial", type=trial_arg, metavar="TRIAL", help="trial")
    d.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


def add_log_arguments(log: argparse.ArgumentParser) -> None:
    log.add_argument(
        "--where",
        metavar="EXPR",
        help="only trials matching EXPR, the dashboard's filter: 'lr<0.1 model=svm', "
        "'description~nan', a bare word searches every cell",
    )
    log.add_argument("--sort", metavar="COL[:desc]", help="sort by a column (id: the trial)")
    log.add_argument(
        "-n",
        "--max-count",
        dest="n",
        type=_count,
        metavar="N",
        help="only the last N trials (with --sort: the first N rows after sorting)",
    )
    log.add_argument(
        "--columns", metavar="COL,COL", help="only these columns (comma-separated, any case)"
    )
    log.add_argument("--tag", action="append", metavar="TAG", help="only trials with this tag")
    log.add_argument("--all", action="store_true", help="archived trials too")


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid row count {text!r}: a whole number >= 1")
    return int(text)


def log_frame(ex: Any, args: argparse.Namespace) -> Any:
    """The history ``daskperiment log`` prints, searched, sorted, cut as asked.

    ``-n N`` alone reads only the last N trials (time independent of the history's length);
    with ``--where``/``--tag``/``--all`` it keeps the last N matching trials, and with
    ``--sort`` the first N rows of the sorted table."""
    from . import teams

    if args.n and not (args.where or args.tag or args.sort or args.all):
        frame = ex.get_history(verbose=args.verbose, last=args.n)
    else:
        frame = ex.get_history(verbose=args.verbose, where=args.where, tags=args.tag, all=args.all)
        if args.sort:
            frame = teams.sort(frame, args.sort)
        if args.n:
            frame = frame.head(args.n) if args.sort else frame.tail(args.n)
    if args.columns:
        frame = frame[_columns(frame, args.columns)]
    elif not args.verbose:
        from .quicklog import VERBOSE_ONLY

        frame = frame.drop(columns=list(VERBOSE_ONLY))
    return frame


def _columns(frame: Any, spec: str) -> list[str]:
    by_name = {str(c).lower(): c for c in frame.columns}
    out = []
    for name in (n.strip() for n in spec.split(",") if n.strip()):
        if name.lower() not in by_name:
            from .teams import SearchError

            known = ", ".join(map(str, frame.columns))
            raise SearchError(f"unknown column {name!r} in --columns; columns are: {known}")
        out.append(by_name[name.lower()])
    return out


# ---------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------


def handlers(open_experiment: Opener) -> dict[str, Callable[[argparse.Namespace], int]]:
    """The commands, given the CLI's way to open an experiment."""

    def annotate(action: str) -> Callable[[argparse.Namespace], int]:
        def run(args: argparse.Namespace) -> int:
            ex, _ = open_experiment(args, writable=True)
            if action in ("tag", "untag"):
                getattr(ex, action)(args.trial, *args.tags)
                done = f"{action}ged trial {args.trial}: {', '.join(args.tags)}"
            elif action == "note":
                ex.note(args.trial, args.text)
                done = f"noted trial {args.trial}"
            else:
                getattr(ex, action)(*args.trials)
                done = f"{action}d {len(args.trials)} trial(s)"
            print(done)
            return 0

        return run

    def delete(args: argparse.Namespace) -> int:
        ex, _ = open_experiment(args, writable=True)
        if not args.yes:
            if not sys.stdin.isatty():
                raise NotConfirmed(
                    f"delete trial {args.trial} of {args.experiment}: not confirmed (pass "
                    "--yes to delete without asking)"
                )
            answer = input(f"Delete trial {args.trial} of {args.experiment}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return 1
        number = ex.delete(args.trial)
        print(f"deleted trial {number} of {args.experiment} ('daskperiment gc' reclaims space)")
        return 0

    out = {name: annotate(name) for name in ("tag", "untag", "note", "archive", "unarchive")}
    out["delete"] = delete
    return out


def show_lines(record: dict[str, Any]) -> list[str]:
    """``daskperiment show`` lines for identity, origin, tags and notes."""
    lines = [f"global id:    {record.get('global_id')}"]
    origin = identity.describe_origin(record.get("origin"))
    if origin:
        lines.append(f"origin:       {origin}")
    if record.get("tags"):
        lines.append(f"tags:         {', '.join(record['tags'])}")
    if record.get("archived"):
        lines.append("archived:     yes ('daskperiment unarchive' shows it in the log again)")
    for note in record.get("notes") or []:
        lines.append(f"note:         {note['text']}  ({note.get('who')}, {_when(note['when'])})")
    return lines


def _when(epoch: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def team_rows(record: dict[str, Any]) -> list[tuple[str, Any]]:
    """The dashboard's trial summary rows for identity, origin, tags and notes (read-only)."""
    notes = record.get("notes") or []
    return [
        ("Global ID", record.get("global_id")),
        ("Origin", identity.describe_origin(record.get("origin"))),
        ("Tags", ", ".join(record.get("tags") or [])),
        ("Notes", " | ".join(f"{n.get('text')} ({n.get('who')})" for n in notes)),
        ("Archived", "yes" if record.get("archived") else None),
    ]
