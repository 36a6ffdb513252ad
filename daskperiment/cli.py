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
import datetime
import io
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import daskperiment_store as store

from . import __version__, ids, sharing, trial
from .errors import FSCK_ADVICE, DamagedTrial, DaskperimentError, ExperimentNotFound
from .history import DAMAGED
from .log import logger
from .provenance import commands as provenance_commands
from .provenance import inputs as input_files

DEFAULT_STORE = "daskperiment_cache"
#: Failures the user can act on: shown as one line, exit status 1.
EXPECTED = (DaskperimentError, store.errors.StoreError, OSError)


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


def _trial_id(text: str) -> int:
    trial_id = ids.parse_trial_id(text)
    if trial_id is None:
        raise argparse.ArgumentTypeError(
            f"invalid trial id {text!r}: {ids.TRIAL_ID_RULE}, like 1, 2, 3"
        )
    return trial_id


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: a whole number, 1 or more")
    return int(text)


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


def _arguments(subs: dict[str, argparse.ArgumentParser]) -> None:
    """The arguments of every command but board (which parses its own)."""
    _reading_arguments(subs)
    _diff_arguments(subs["diff"])
    _sharing_arguments(subs)
    _maintenance_arguments(subs)
    provenance_commands.add_arguments(subs, EXP_ARG, _trial_id)


def _reading_arguments(subs: dict[str, argparse.ArgumentParser]) -> None:
    _format(subs["list"], ("table", "csv", "json"))
    subs["log"].add_argument("experiment", **EXP_ARG)
    subs["log"].add_argument(
        "--verbose", "-v", action="store_true", help="add status, seed, digests, reused steps"
    )
    subs["log"].add_argument(
        "-n", "--max-count", type=_count, metavar="N", help="only the last N trials"
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


def _sharing_arguments(subs: dict[str, argparse.ArgumentParser]) -> None:
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


def _maintenance_arguments(subs: dict[str, argparse.ArgumentParser]) -> None:
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


# ---------------------------------------------------------------------------------------
# Stores and experiments
# ---------------------------------------------------------------------------------------


def _location(args: argparse.Namespace) -> str:
    return args.store


def _stores(location: str, experiment_id: str | None = None) -> list[store.Store]:
    """The stores at ``location``: the store itself, or each store of a directory."""
    if experiment_id is not None:
        return [_experiment_store(location, experiment_id, check_trials=False)]
    if sharing.is_url(location) or (Path(location) / "config").exists():
        return [sharing.open_target(location, read_only=True)]
    path = Path(location)
    if not path.is_dir():
        raise store.errors.StoreError(
            f"no store or directory of stores at {location}; pass --store PATH|URL"
        )
    return [
        store.open(str(sub), create=False, read_only=True)
        for sub in sorted(path.iterdir())
        if (sub / "config").is_file()
    ]


def _experiment_store(
    location: str, experiment_id: str, *, check_trials: bool = True, writable: bool = False
) -> store.Store:
    """The store holding ``experiment_id``; ExperimentNotFound naming what is there."""
    try:
        st = sharing.open_store(location, experiment_id, read_only=not writable, directory=True)
    except ExperimentNotFound:
        raise _not_found(location, experiment_id) from None
    # Names only: a damaged trial ref must not hide the experiment (it shows as damaged).
    if check_trials and not _has_trials(st, experiment_id):
        raise _not_found(location, experiment_id)
    return st


def _has_trials(st: store.Store, experiment_id: str) -> bool:
    # A few existence checks first (opening.py); the listing only when they find nothing.
    from .opening import last_trial_id

    if last_trial_id(st, experiment_id):
        return True
    return bool(st.refs.names(trial.trials_prefix(experiment_id)))


def _not_found(location: str, experiment_id: str) -> ExperimentNotFound:
    try:
        known = sorted({e["id"] for st in _stores(location) for e in _experiments(st)})
    except EXPECTED:
        known = []
    listed = ", ".join(known) if known else "none"
    exc = ExperimentNotFound(experiment_id, location)
    exc.args = (
        f"no experiment {experiment_id!r} in {location} (experiments there: {listed}); "
        "'daskperiment list' shows them, --store PATH|URL reads another store",
    )
    return exc


def _experiments(st: store.Store) -> list[dict[str, Any]]:
    from .experiment import list_experiments

    return list_experiments(st)


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

    st = _experiment_store(_location(args), args.experiment)
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


# ---------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for st in _stores(_location(args)):
        for e in _experiments(st):
            last = e["last_activity"]
            rows.append(
                {
                    "experiment": e["id"],
                    "trials": e["trials"],
                    "last_activity": last.isoformat(sep=" ", timespec="seconds") if last else None,
                    "store": st.url,
                }
            )
    if args.format == "json":
        _json(rows)
    elif args.format == "csv":
        _csv(rows, ["experiment", "trials", "last_activity", "store"])
    elif rows:
        header = ["EXPERIMENT", "TRIALS", "LAST ACTIVITY", "STORE"]
        cells = [
            [r["experiment"], r["trials"], r["last_activity"] or "-", r["store"]] for r in rows
        ]
        _print(_table(cells, header))
    return 0


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> None:
    import csv

    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    sys.stdout.write(out.getvalue())


def cmd_log(args: argparse.Namespace) -> int:
    import pandas as pd

    if args.uses is not None:
        return _log_uses(args)
    frame = _experiment(args)[0].get_history(verbose=args.verbose, last=args.max_count)
    if args.format == "csv":
        sys.stdout.write(frame.to_csv())
    elif args.format == "json":
        _json(_history_records(frame))
    else:
        with pd.option_context("display.max_rows", None, "display.max_columns", None):
            _print(frame.to_string())
    return 0


def _log_uses(args: argparse.Namespace) -> int:
    """``log --uses``: one line (or row) per step that read the file or used the digest."""
    from .provenance import lineage

    uses = _experiment(args)[0].trials_using(args.uses)
    rows = [u.to_dict() for u in uses]
    if args.format == "json":
        _json(rows)
    elif args.format == "csv":
        _csv(rows, ["trial", "step", "role", "path", "digest"])
    else:
        _print(lineage.render(uses, args.uses))
    return 0


def _history_records(frame: Any) -> list[dict[str, Any]]:
    """History rows as JSON data: times in ISO 8601, durations in seconds, NaN as null."""
    import pandas as pd

    out = []
    for trial_id, row in frame.iterrows():
        item: dict[str, Any] = {"Trial ID": int(trial_id)}
        for column, value in row.items():
            if isinstance(value, pd.Timestamp):
                value = value.isoformat()
            elif isinstance(value, pd.Timedelta):
                value = value.total_seconds()
            elif value is pd.NaT or (isinstance(value, float) and value != value):
                value = None
            item[str(column)] = value
        out.append(item)
    return out


def cmd_show(args: argparse.Namespace) -> int:
    from .trial import trial_ref

    ex, st = _experiment(args)
    try:
        record = ex.get_trial(args.trial)
    except DamagedTrial as exc:
        return _show_damaged(args, exc)
    record["record"] = st.refs.get(trial_ref(args.experiment, args.trial))
    if args.format == "json":
        _json(record)
    else:
        _print(_show_text(args.experiment, record))
    return 0


def _show_damaged(args: argparse.Namespace, exc: DamagedTrial) -> int:
    """``show`` of a trial whose ref or record cannot be read: what is wrong, what to do
    (exit status 1: nothing of the trial could be shown)."""
    if args.format == "json":
        _json(
            {
                "id": exc.trial_id,
                "status": DAMAGED,
                "description": exc.reason,
                "advice": FSCK_ADVICE,
            }
        )
    else:
        _print(
            f"trial {exc.trial_id} of {args.experiment}\n"
            f"status:       {DAMAGED}\n"
            f"description:  {exc.reason}\n"
            f"advice:       {FSCK_ADVICE}"
        )
    return 1


def _show_text(experiment_id: str, r: dict[str, Any]) -> str:
    """``daskperiment show`` as text: one ``name: value`` line per field, then sections."""
    params = r.get("params") or {}
    lines = [
        f"trial {r.get('id')} of {experiment_id}",
        f"status:       {r.get('status')}",
        "parameters:   " + (", ".join(f"{k}={v!r}" for k, v in sorted(params.items())) or "(none)"),
        f"result:       {r.get('result_repr')} ({r.get('result_type')})",
        f"seed:         {r.get('seed')}",
        f"started:      {_when(r.get('started'))}",
        f"finished:     {_when(r.get('finished'))}",
    ]
    if isinstance(r.get("process_time"), int | float):
        lines.append(f"process time: {r['process_time']:.6f} s")
    if r.get("description"):
        lines.append(f"description:  {r['description']}")
    lines.append(f"record:       {r.get('record')}")
    lines.append("digests:")
    lines += [f"  {k:<12} {v or '-'}" for k, v in (r.get("digests") or {}).items()]
    lines += provenance_commands.show_lines(r)
    lines += _show_steps(r.get("steps") or {})
    metrics = r.get("metrics") or {}
    if metrics:
        lines.append("metrics:")
        lines += [f"  {k}  {v}" for k, v in sorted(metrics.items())]
    lines += _show_environment(r.get("environment_summary"))
    if r.get("traceback"):
        lines.append("traceback:")
        lines += ["  " + line for line in str(r["traceback"]).rstrip("\n").splitlines()]
    return "\n".join(lines) + "\n"


def _show_steps(steps: dict[str, Any]) -> list[str]:
    if not steps:
        return []
    lines = ["steps:"]
    width = max(len(s) for s in steps)
    for label in sorted(steps, key=lambda s: steps[s].get("started") or 0):
        s = steps[label]
        flags = (
            (" persisted" if s.get("persisted") else "")
            + (" reused" if s.get("reused") else "")
            + (f" failed: {s['failed']}" if s.get("failed") else "")
        )
        lines.append(
            f"  {label:<{width}}  {s.get('kind', '-'):<7}  inputs {s.get('inputs')}  "
            f"output {s.get('output')}{flags}"
        )
        lines += ["  " + line for line in input_files.file_lines(s)]
    return lines


def _show_environment(env: dict[str, Any] | None) -> list[str]:
    if not env:
        return []
    git = env.get("git_commit")
    git_text = f"{git[:12]}{' (dirty)' if env.get('git_dirty') else ''}" if git else "-"
    return [
        f"environment:  python {env.get('python')}, {env.get('packages')} packages, "
        f"host {env.get('hostname')}, git {git_text}",
        f"platform:     {env.get('platform')}",
    ]


def cmd_diff(args: argparse.Namespace) -> int:
    from .diff import diff_trials

    st = _experiment_store(_location(args), args.experiment)
    result = diff_trials(st, args.experiment, args.a, args.b)
    groups = [
        g
        for g, on in (("code", args.code), ("parameters", args.params), ("environment", args.env))
        if on
    ] or None
    if groups and "code" in groups:
        groups.append("source")  # the local files the steps' code came from
    if args.format == "json":
        _json(result.to_dict())
    else:
        color = _use_color(args.color)
        text = result.stat(groups, color=color) if args.stat else result.render(groups, color=color)
        sys.stdout.write(text)
    differs = bool(result.selected(groups))
    return 1 if args.exit_code and differs else 0


def cmd_code(args: argparse.Namespace) -> int:
    ex, _ = _experiment(args)
    trial_id = args.trial if args.trial is not None else ex.trial_id
    sys.stdout.write(ex.get_code(trial_id=trial_id))
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    oid = store.validate_oid(args.oid.strip().lower())
    st = _find_object(_location(args), oid, args.experiment)
    if args.info:
        info = st.info(oid)
        _print(
            f"oid:          {oid}\nkind:         {info.kind}\nsize:         {info.size}\n"
            f"stored size:  {info.stored_size}\ncompression:  {info.compression}\n"
            f"store:        {st.url}"
        )
        return 0
    kind, body = st.get_raw(oid)  # verified: a damaged object is an error, never printed
    if kind == "pickle" and not args.unpickle_runs_code:
        raise store.errors.StoreError(
            f"object {oid} is a pickle: loading it runs code chosen by whoever stored it; "
            "pass --unpickle-runs-code to load it anyway (only for stores you trust)"
        )
    _write_object(kind, body)
    return 0


def _find_object(location: str, oid: str, experiment_id: str | None) -> store.Store:
    stores = _stores(location, experiment_id)
    for st in stores:
        if st.has(oid):
            return st
    where = ", ".join(st.url for st in stores) or location
    raise store.errors.ObjectNotFound(oid, where)


def _write_object(kind: str, body: Any) -> None:
    if kind == "bytes":
        sys.stdout.flush()
        sys.stdout.buffer.write(bytes(body))
        return
    if kind == "json":
        # The stored JSON itself (links appear as {"$link": oid}); text is printed as is.
        doc = json.loads(bytes(body).decode("utf-8"))
        if isinstance(doc, str):
            sys.stdout.write(doc)
        else:
            _print(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    value = store.decode(kind, body)
    if kind == "pandas":
        _print(value.to_string())
    else:
        import numpy as np

        with np.printoptions(threshold=1000) if kind == "ndarray" else contextlib.nullcontext():
            _print(repr(value))


def _report(args: argparse.Namespace, report: sharing.ShareReport) -> int:
    if args.format == "json":
        _json(report.to_dict())
    else:
        _print(str(report))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    st = _experiment_store(_location(args), args.experiment)
    trials = args.trials or None
    return _report(args, sharing.export_trials(st, args.experiment, args.output, trials))


def cmd_import(args: argparse.Namespace) -> int:
    report = sharing.import_bundle(
        args.bundle, id=args.new_id, backend=_location(args), directory=True
    )
    return _report(args, report)


def cmd_push(args: argparse.Namespace) -> int:
    src = _experiment_store(_location(args), args.experiment)
    dst = sharing.open_store(args.url, args.experiment, create=True, directory=True)
    return _report(args, sharing.push_trials(src, args.experiment, dst))


def cmd_pull(args: argparse.Namespace) -> int:
    src = _experiment_store(args.url, args.experiment)
    dst = sharing.open_store(_location(args), args.experiment, create=True, directory=True)
    return _report(args, sharing.pull_trials(dst, args.experiment, src))


def cmd_fsck(args: argparse.Namespace) -> int:
    from .reads import trial_ref_problems

    ok = True
    stores = _stores(_location(args), args.experiment)
    if not stores:
        raise store.errors.StoreError(f"no stores in {_location(args)}; pass --store PATH|URL")
    for st in stores:
        with _progress_bar(args, f"fsck {st.url}") as bar:
            report = st.fsck(progress=bar)
        problems = trial_ref_problems(st)
        ok = ok and report.ok and not problems
        first, *rest = report.summary().splitlines()
        if problems and report.ok:
            first = first.rsplit(": ", 1)[0] + ": PROBLEMS FOUND"
        _print(f"{st.url}: {first}")
        for line in rest + [f"trial ref {ref}: {problem}" for ref, problem in problems]:
            _print(f"  {line}")
    return 0 if ok else 1


@contextlib.contextmanager
def _progress_bar(args: argparse.Namespace, label: str) -> Iterator[Any]:
    """A progress bar on stderr for fsck and gc, when asked or when stderr is a terminal."""
    from daskperiment_store.progress import TerminalBar

    wanted = args.progress if args.progress is not None else sys.stderr.isatty()
    bar = TerminalBar(label, sys.stderr) if wanted else None
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


def cmd_gc(args: argparse.Namespace) -> int:
    location = _location(args)
    targets = _stores(location, args.experiment)
    for st in targets:
        if not args.dry_run:
            st = store.open(st.url, create=False)  # writable this time
        with _progress_bar(args, f"gc {st.url}") as bar:
            report = st.gc(grace=args.grace, dry_run=args.dry_run, progress=bar)
        verb = "would remove" if args.dry_run else "removed"
        _print(
            f"{st.url}: {verb} {len(report.objects_removed)} objects "
            f"({report.bytes_freed} bytes) and {len(report.temp_removed)} temp files; "
            f"{report.objects_kept} objects kept"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .script import run_script

    argv = list(args.parameters)
    if args.seed is not None:
        argv += ["--seed", str(args.seed)]
    value = run_script(args.script, argv)
    print(value)
    return 0


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
