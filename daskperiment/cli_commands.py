"""The commands of ``daskperiment`` that read and share stores (``list``, ``log``, ``show``,
``diff``, ``code``, ``cat``, ``export``, ``import``, ``push``, ``pull``, ``fsck``, ``gc``,
``run``); :mod:`daskperiment.cli` parses the arguments and dispatches to them."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import daskperiment_store as store

from . import quicklog, team_commands
from .cli_common import (
    _experiment,
    _json,
    _location,
    _print,
    _table,
    _use_color,
    _when,
)
from .errors import FSCK_ADVICE, DamagedTrial
from .history import DAMAGED, list_experiments
from .location import experiment_store, open_store, stores_at
from .provenance import commands as provenance_commands
from .record import ordered_params, trial_ref

if TYPE_CHECKING:  # the sharing commands import them: log and show stay light
    from . import sharing

# ---------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for st in stores_at(_location(args)):
        for e in list_experiments(st):
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
    if args.uses is not None:
        return _log_uses(args)
    if os.environ.get("DASKPERIMENT_LOG_PATH") != "frame":  # the same text, without pandas
        text = quicklog.log_text(args)
        if text is not None:
            sys.stdout.write(text)
            return 0
    return log_with_pandas(args)


def log_with_pandas(args: argparse.Namespace) -> int:
    """``log`` through the history DataFrame (what :mod:`daskperiment.quicklog` mirrors)."""
    import pandas as pd

    frame = team_commands.log_frame(_experiment(args)[0], args)
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
    lines = [
        f"trial {r.get('id')} of {experiment_id}",
        f"status:       {r.get('status')}",
        "parameters:   " + (", ".join(f"{k}={v!r}" for k, v in ordered_params(r)) or "(none)"),
        "result:       "
        + (f"{r.get('result_repr')} ({r['result_type']})" if r.get("result_type") else "-"),
        f"seed:         {r.get('seed')}",
        f"started:      {_when(r.get('started'))}",
        f"finished:     {_when(r.get('finished'))}",
    ]
    if isinstance(r.get("process_time"), int | float):
        lines.append(f"process time: {r['process_time']:.6f} s")
    if r.get("description"):
        lines.append(f"description:  {r['description']}")
    lines.append(f"record:       {r.get('record')}")
    lines += team_commands.show_lines(r)
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
    from .provenance import inputs as input_files

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

    st = experiment_store(_location(args), args.experiment)
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
    if args.to:
        from .export import export

        _print(f"wrote {export(st.get(oid), args.to)}")
        return 0
    _write_object(kind, body)
    return 0


def _find_object(location: str, oid: str, experiment_id: str | None) -> store.Store:
    stores = stores_at(location, experiment_id)
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
    if kind in ("json", "container"):
        # A container's elements are its links: `cat` each of them.
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
    st = experiment_store(_location(args), args.experiment)
    trials = args.trials or None
    from . import sharing

    return _report(args, sharing.export_trials(st, args.experiment, args.output, trials))


def cmd_import(args: argparse.Namespace) -> int:
    from . import bundles

    report = bundles.import_bundle(
        args.bundle, id=args.new_id, backend=_location(args), directory=True
    )
    return _report(args, report)


def cmd_push(args: argparse.Namespace) -> int:
    src = experiment_store(_location(args), args.experiment)
    dst = open_store(args.url, args.experiment, create=True, directory=True)
    from . import sharing

    return _report(args, sharing.push_trials(src, args.experiment, dst))


def cmd_pull(args: argparse.Namespace) -> int:
    src = experiment_store(args.url, args.experiment)
    dst = open_store(_location(args), args.experiment, create=True, directory=True)
    from . import sharing

    return _report(args, sharing.pull_trials(dst, args.experiment, src))


def cmd_fsck(args: argparse.Namespace) -> int:
    from .reads import trial_ref_problems

    ok = True
    stores = stores_at(_location(args), args.experiment)
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
    targets = stores_at(location, args.experiment)
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
