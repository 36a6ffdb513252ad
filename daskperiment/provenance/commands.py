"""``daskperiment checkout`` and ``daskperiment reproduce`` (registered by :mod:`daskperiment.cli`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from ..location import experiment_store

SUMMARIES = {
    "checkout": "write a trial's source tree (script and local modules) into a directory",
    "reproduce": "re-run a trial from the store alone and compare it step by step",
}
EXAMPLES = {
    "checkout": "checkout quickstart_pj 3 ./trial-3",
    "reproduce": "reproduce quickstart_pj 3",
}


def add_arguments(
    subs: Mapping[str, argparse.ArgumentParser], exp_arg: dict, trial_type: Any
) -> None:
    c = subs["checkout"]
    c.add_argument("experiment", **exp_arg)
    c.add_argument("trial", type=trial_type, metavar="TRIAL", help="trial id")
    c.add_argument("directory", metavar="DIR", help="where to write (new or empty)")
    c.add_argument("--force", action="store_true", help="write into a non-empty DIR")
    r = subs["reproduce"]
    r.description = (
        "Check out TRIAL's source tree into a temporary directory, run its script in a fresh "
        "process (working directory: the current one) with TRIAL's parameters and seed, "
        "record the new trial, and compare both step by step. Exit 0 with one line when "
        "identical; exit 1 naming the first step that diverged and what differs."
    )
    r.add_argument("experiment", **exp_arg)
    r.add_argument("trial", type=trial_type, metavar="TRIAL", help="trial id")
    r.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )


def show_lines(record: dict[str, Any]) -> list[str]:
    """``daskperiment show`` lines for the source tree and the reproduced trial."""
    source = record.get("source")
    shown = "source" in (record.get("digests") or {})
    lines = [f"  {'source':<12} {getattr(source, 'oid', source)}"] if source and not shown else []
    if record.get("reproduces"):
        lines.append(f"reproduces:   trial {record['reproduces']}")
    return lines


def cmd_checkout(args: argparse.Namespace) -> int:
    from .checkout import checkout

    st = experiment_store(args.store, args.experiment)
    done = checkout(st, args.experiment, args.trial, args.directory, force=args.force)
    print(done)
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import reproduce

    st = experiment_store(args.store, args.experiment)
    report = reproduce(st, args.experiment, args.trial)
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        sys.stdout.write(f"{report}\n")
    return 0 if report else 1
