"""``ex.reproduce(trial)`` / ``daskperiment reproduce EXP TRIAL``: re-run a trial from the store
alone and prove the re-run identical, step by step.

1. The trial's source tree is checked out into a temporary directory (:mod:`.checkout`): the
   script and local modules exactly as they were, not the working copy.
2. A fresh Python process (``python -m daskperiment.provenance.reproduce``) runs the checked-out
   script the way ``daskperiment run`` does, with the checkout first on ``sys.path`` and the
   *current* directory as its working directory (relative data paths resolve as in the
   original run), then computes one trial of its result with the original trial's parameters
   and seed, without the step cache, on dask's threaded scheduler. The new trial is recorded with ``"reproduces": TRIAL``.
3. The two records are compared step by step in the order the original's steps ran; the
   first step that differs is named with what differs at it: an input file (path, old and new
   digests), a library version, the code closure, the step's inputs, or its output with
   identical inputs (nondeterminism); then the result.

Only trials of scripts can be reproduced: a notebook's cells are checked out as
``notebook.py`` for reading but not re-run.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import daskperiment_store as store
from daskperiment_store import Link

from ..errors import DaskperimentError
from ..reads import read_parameters
from . import checkout as _checkout
from .record import REPRODUCES_ENV

#: Package directory to put on the fresh process's path, so it imports this very library.
_LIBRARY_ROOT = str(Path(__file__).resolve().parents[2])


class ReproduceError(DaskperimentError, RuntimeError):
    """A trial cannot be re-run (not a script's trial, the re-run failed to start, ...)."""


@dataclass(frozen=True)
class Divergence:
    """The first difference between a trial and its reproduction."""

    step: str | None
    what: str  # "missing step", "input file", "library", "closure", "inputs", "output", ...
    details: tuple[str, ...]

    def __str__(self) -> str:
        where = f"step {self.step}" if self.step else "the trial"
        return f"{where}: {self.what}" + "".join(f"\n    {d}" for d in self.details)


@dataclass
class ReproduceReport:
    """Outcome of :func:`reproduce`: ``bool(report)`` is True when everything was identical."""

    experiment: str
    original: int
    reproduction: int | None
    steps: int
    divergence: Divergence | None
    seconds: float = 0.0
    later: list[Divergence] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.divergence is None

    def __bool__(self) -> bool:
        return self.identical

    def __str__(self) -> str:
        if self.identical:
            return (
                f"Trial {self.reproduction} reproduces trial {self.original} of "
                f"{self.experiment}: {self.steps} steps and the result are identical"
            )
        lines = [
            f"Trial {self.reproduction} does NOT reproduce trial {self.original} of "
            f"{self.experiment}",
            f"first divergence at {self.divergence}",
        ]
        if self.later:
            lines.append(
                "also differs afterwards: " + ", ".join(d.step or d.what for d in self.later)
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = self.divergence
        return {
            "experiment": self.experiment,
            "original": self.original,
            "reproduction": self.reproduction,
            "identical": self.identical,
            "steps": self.steps,
            "divergence": None
            if d is None
            else {"step": d.step, "what": d.what, "details": list(d.details)},
            "seconds": self.seconds,
        }


# ---------------------------------------------------------------------------------------
# Comparing two records
# ---------------------------------------------------------------------------------------


def _ordered_steps(record: dict) -> list[tuple[str, dict]]:
    steps = record.get("steps") or {}
    return sorted(steps.items(), key=lambda kv: (kv[1].get("started") or 0, kv[0]))


def _link(value: Any) -> str | None:
    return value.oid if isinstance(value, Link) else value if isinstance(value, str) else None


def _short(oid: Any) -> str:
    return str(oid)[:12] if oid else "none"


def _pair_paths(old: list[str], new: list[str]) -> list[tuple[str | None, str | None]]:
    """Old and new paths of the same input: equal paths, else the longest common tail of
    path components (a trial reproduced in another directory reads ``/b/proj/data.csv``
    where the original read ``/a/proj/data.csv``)."""
    pairs: list[tuple[str | None, str | None]] = [(p, p) for p in old if p in new]
    rest_new = [q for q in new if q not in old]
    for p in (p for p in old if p not in new):
        parts = p.replace("\\", "/").split("/")
        best, score = None, 0
        for q in rest_new:
            other = q.replace("\\", "/").split("/")
            n = 0
            while n < min(len(parts), len(other)) and parts[-1 - n] == other[-1 - n]:
                n += 1
            if n > score:
                best, score = q, n
        if best is not None:
            rest_new.remove(best)
        pairs.append((p, best))
    pairs += [(None, q) for q in rest_new]
    return pairs


def compare_step(label: str, old: dict, new: dict) -> Divergence | None:
    """The difference at one step, the most telling first (files, libraries, code, data)."""
    files_a, files_b = old.get("files") or {}, new.get("files") or {}
    changed = [
        (p, q, files_a.get(p), files_b.get(q))
        for p, q in _pair_paths(list(files_a), list(files_b))
        if files_a.get(p) != files_b.get(q)
    ]
    if changed:
        details = tuple(
            f"{p or q}: {_short(d_a)} -> {_short(d_b)}"
            + (f" (now {q})" if p and q and p != q else "")
            for p, q, d_a, d_b in changed
        )
        return Divergence(label, "input file", details)
    libs_a, libs_b = old.get("libraries") or {}, new.get("libraries") or {}
    if libs_a != libs_b:
        names = sorted(n for n in set(libs_a) | set(libs_b) if libs_a.get(n) != libs_b.get(n))
        details = tuple(
            f"{n}: {libs_a.get(n, 'absent')} -> {libs_b.get(n, 'absent')}" for n in names
        )
        return Divergence(label, "library version", details)
    if _link(old.get("closure")) != _link(new.get("closure")):
        return Divergence(
            label,
            "code closure",
            (
                f"closure {_short(_link(old.get('closure')))} -> {_short(_link(new.get('closure')))}",
            ),
        )
    if old.get("inputs") != new.get("inputs"):
        return Divergence(
            label,
            "inputs",
            (f"input digest {_short(old.get('inputs'))} -> {_short(new.get('inputs'))}",),
        )
    if old.get("output") != new.get("output"):
        return Divergence(
            label,
            "nondeterministic output with identical inputs",
            (
                f"inputs {_short(old.get('inputs'))} (identical)",
                f"output {_short(old.get('output'))} -> {_short(new.get('output'))}",
            ),
        )
    return None


def compare(old: dict, new: dict) -> tuple[Divergence | None, list[Divergence], int]:
    """(first divergence, later ones, steps compared) between a trial and its reproduction."""
    found: list[Divergence] = []
    new_steps = dict(new.get("steps") or {})
    ordered = _ordered_steps(old)
    for label, entry in ordered:
        if label not in new_steps:
            found.append(Divergence(label, "step did not run in the reproduction", ()))
            continue
        diverged = compare_step(label, entry, new_steps[label])
        if diverged is not None:
            found.append(diverged)
    for label in sorted(set(new_steps) - {label for label, _ in ordered}):
        found.append(Divergence(label, "step ran only in the reproduction", ()))
    if new.get("status") != old.get("status"):
        desc = new.get("description") or new.get("status")
        found.append(
            Divergence(None, f"status {old.get('status')} -> {new.get('status')}", (str(desc),))
        )
    res_a = (old.get("digests") or {}).get("result")
    res_b = (new.get("digests") or {}).get("result")
    if res_a != res_b:
        found.append(
            Divergence(
                None,
                "result",
                (
                    f"{old.get('result_repr')} ({_short(res_a)}) -> "
                    f"{new.get('result_repr')} ({_short(res_b)})",
                ),
            )
        )
    first = found[0] if found else None
    return first, found[1:], len(ordered)


# ---------------------------------------------------------------------------------------
# Re-running
# ---------------------------------------------------------------------------------------


def _parameters(st: store.Store, record: dict) -> dict[str, Any]:
    link = record.get("parameters")
    if isinstance(link, Link):
        return dict(
            read_parameters(st, link.oid, unpickle=True, what="parameters")
        )  # reproduce runs the trial's code anyway
    return dict(record.get("params") or {})


def reproduce(
    st: store.Store | None,
    experiment_id: str,
    trial_id: int,
    *,
    cwd: str | os.PathLike[str] | None = None,
    python: str | None = None,
) -> ReproduceReport:
    """Re-run trial ``trial_id`` from the store and compare (see the module docstring)."""
    from ..errors import TrialNotFound

    if st is None:
        raise TrialNotFound(trial_id, experiment_id, 0)
    started = time.perf_counter()
    record = _checkout.read_record(st, experiment_id, trial_id)
    _, tree = _checkout.source_tree(st, experiment_id, trial_id)
    if tree.get("kind") != "script" or not tree.get("main"):
        raise ReproduceError(
            f"trial {trial_id} of {experiment_id!r} was not run from a script "
            f"({tree.get('kind') or 'unknown'}): reproduce re-runs scripts; "
            f"'daskperiment checkout {experiment_id} {trial_id} DIR' writes its source"
        )
    if record.get("status") == "running":
        raise ReproduceError(f"trial {trial_id} is still running; reproduce it when it ends")
    work = Path(tempfile.mkdtemp(prefix="daskperiment-reproduce-"))
    try:
        new_id = _run_fresh(st, experiment_id, trial_id, record, work, cwd, python)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        new = _checkout.read_record(st, experiment_id, new_id)
    except KeyError:
        raise ReproduceError(
            f"the re-run recorded trial {new_id} in the store its script names, not in this "
            "one; run reproduce with the store the script uses (--store)"
        ) from None
    first, later, steps = compare(record, new)
    return ReproduceReport(
        experiment_id, trial_id, new_id, steps, first, time.perf_counter() - started, later
    )


def _run_fresh(
    st: store.Store,
    experiment_id: str,
    trial_id: int,
    record: dict,
    work: Path,
    cwd: Any,
    python: str | None,
) -> int:
    """Check out, run the script in a new process; the new trial's id."""
    src = work / "src"
    done = _checkout.checkout(st, experiment_id, trial_id, src)
    main = src / str(done.main)
    params = work / "parameters.pkl"
    params.write_bytes(pickle.dumps(_parameters(st, record)))
    out = work / "out.json"
    env = dict(os.environ)
    paths = [str(main.parent), _LIBRARY_ROOT, env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env[REPRODUCES_ENV] = f"{experiment_id}:{trial_id}"
    command = [python or sys.executable, "-m", __name__, str(main), experiment_id]
    command += [str(params), str(record.get("seed")), str(out)]
    proc = subprocess.run(
        command, cwd=cwd or os.getcwd(), env=env, capture_output=True, text=True, check=False
    )
    if not out.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise ReproduceError(
            f"the re-run of trial {trial_id} did not start a trial (exit {proc.returncode}): "
            + " | ".join(tail)
        )
    answer = json.loads(out.read_text())
    if answer.get("error") and answer.get("trial") is None:
        raise ReproduceError(f"the re-run of trial {trial_id} failed: {answer['error']}")
    return int(answer["trial"])


def _child(argv: list[str]) -> int:
    """In the fresh process: run the checked-out script's result once; write the trial id."""
    import logging
    import runpy

    from ..script import RUN_NAME, find_result
    from .sourcetree import note_script

    script, experiment_id, params_file, seed_text, out = argv
    logging.getLogger("daskperiment").setLevel(logging.WARNING)
    sys.path.insert(0, str(Path(script).parent))
    sys.argv = [script]
    note_script(script)
    answer: dict[str, Any] = {"trial": None}
    try:
        namespace = runpy.run_path(script, run_name=RUN_NAME)
        result = find_result(namespace, script)
        ex = result._experiment
        if ex.id != experiment_id:
            raise ReproduceError(f"the script builds experiment {ex.id!r}, not {experiment_id!r}")
        parameters = pickle.loads(Path(params_file).read_bytes())
        seed = int(seed_text) if seed_text.lstrip("-").isdigit() else None
        before = ex._last_trial_id
        try:
            # dask's threaded scheduler, named so no distributed Client is looked for.
            ex._run_trial(
                result, seed=seed, parameters=parameters, cache=False, scheduler="threads"
            )
        except Exception as exc:  # noqa: BLE001 - recorded as a failed trial; compared below
            answer["error"] = f"{type(exc).__name__}: {exc}"
        if ex._last_trial_id > before:
            answer["trial"] = ex._last_trial_id
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        answer["error"] = f"{type(exc).__name__}: {exc}"
    Path(out).write_text(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
