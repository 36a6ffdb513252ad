"""HTML pages, rendered with Jinja2 templates that always escape (autoescape on).

Bokeh already depends on Jinja2, so the ``board`` extra adds nothing for it. Pages carry no
inline script: their JavaScript is ``/static/board.js`` configured through ``data-*``
attributes, so the Content-Security-Policy can forbid inline scripts altogether.
"""

from __future__ import annotations

import functools
from datetime import datetime
from pathlib import Path
from typing import Any

from ..record import ordered_params
from ..team_commands import team_rows
from .codediff import classify, diff_stat, split_files
from .query import format_duration

TEMPLATES = Path(__file__).with_name("templates")


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every value, in every template, is HTML-escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **context: Any) -> str:
    """Render ``template`` with ``context`` (values escaped by Jinja2)."""
    context.setdefault("data", {})
    context.setdefault("plots", False)
    return _environment().get_template(template).render(**context)


def experiments_page(experiments: list[dict[str, Any]], store_label: str) -> str:
    rows = [{**e, "last_activity_text": _when(e.get("last_activity"))} for e in experiments]
    return render("experiments.html", page="experiments", experiments=rows, store_label=store_label)


def history_page(experiment_id: str, store_label: str) -> str:
    return render(
        "history.html",
        page="history",
        plots=True,
        experiment_id=experiment_id,
        store_label=store_label,
        data={"experiment": experiment_id},
    )


def trial_page(
    experiment_id: str, record: dict[str, Any], code: str, store_label: str, has_next: bool
) -> str:
    trial_id = int(record.get("id") or record.get("trial_id") or 0)
    status = str(record.get("status") or "unknown")
    return render(
        "trial.html",
        page="trial",
        plots=True,
        experiment_id=experiment_id,
        store_label=store_label,
        trial_id=trial_id,
        prev_id=trial_id - 1 if trial_id > 1 else None,
        next_id=trial_id + 1 if has_next else None,
        status=status,
        summary=_summary(record),
        params=[(str(k), _literal(v)) for k, v in ordered_params(record)],
        steps=_steps(record.get("steps") or {}, code),
        files=_files(record.get("steps")),
        digests=sorted((str(k), str(v)) for k, v in (record.get("digests") or {}).items()),
        error=record.get("description") if status in ("failed", "damaged") else None,
        traceback=record.get("traceback"),
        code_lines=code.splitlines(),
        environment=_environment_rows(record),
        data={"experiment": experiment_id, "trial": trial_id, "status": status},
    )


def diff_page(
    experiment_id: str,
    a: int,
    b: int,
    text: str,
    store_label: str,
    inputs: dict[str, Any] | None = None,
) -> str:
    """The diff of trials ``a`` and ``b``; ``inputs``: their changed input files
    (``files``) and source trees (``source``) when the records have them (compare.py)."""
    lines = classify(text)
    added, removed = diff_stat(lines)
    inputs = inputs or {}
    return render(
        "diff.html",
        page="diff",
        plots=True,
        experiment_id=experiment_id,
        store_label=store_label,
        a=a,
        b=b,
        lines=lines,
        files=split_files(lines),
        added=added,
        removed=removed,
        changed_files=inputs.get("files") or [],
        source=inputs.get("source"),
        data={"experiment": experiment_id, "trials": f"{a},{b}"},
    )


def compare_page(experiment_id: str, table: dict[str, Any], store_label: str) -> str:
    """N trials side by side: differing parameters, results, annotations, and curves."""
    ids = ",".join(str(i) for i in table["ids"])
    return render(
        "compare.html",
        page="compare",
        plots=True,
        experiment_id=experiment_id,
        store_label=store_label,
        table=table,
        data={"experiment": experiment_id, "trials": ids},
    )


def error_page(status: int, reason: str, message: str, store_label: str) -> str:
    return render(
        "error.html",
        page="error",
        status=status,
        reason=reason,
        message=message,
        store_label=store_label,
    )


# record formatting -------------------------------------------------------------------
def _when(value: Any) -> str:
    if value in (None, ""):
        return ""
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    text = str(value)
    try:
        return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return text


def _literal(value: Any) -> str:
    # Parameters are shown as the Python literal they were set to ('a' vs a vs 1).
    return repr(value) if isinstance(value, str) else str(value)


def _summary(record: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        ("Result", _first(record, "result_repr", "result")),
        ("Result type", record.get("result_type")),
        ("Seed", record.get("seed")),
        ("Started", _when(record.get("started"))),
        ("Finished", _when(record.get("finished"))),
        ("Process time", _duration(record.get("process_time"))),
        ("Description", record.get("description")),
        *team_rows(record),
    ]
    return [(name, str(value)) for name, value in rows if value not in (None, "")]


def _first(record: dict[str, Any], *names: str) -> Any:
    for name in names:
        if record.get(name) is not None:
            return record[name]
    return None


def _duration(value: Any) -> str | None:
    if isinstance(value, (int, float)):
        return format_duration(float(value))
    return None if value is None else str(value)


def _files(steps: Any) -> list[tuple[str, str, str]]:
    """(step, path, digest) of every input file the trial's steps read."""
    if not isinstance(steps, dict):
        return []
    return [(n, p, d) for n, s in steps.items() for p, d in (s.get("files") or {}).items()]


def _steps(steps: Any, code: str) -> list[dict[str, Any]]:
    if isinstance(steps, list):  # a list of {name: ...} records is accepted as well
        steps = {str(s.get("name")): s for s in steps if isinstance(s, dict)}
    rows = []
    for name, step in steps.items():
        step = step if isinstance(step, dict) else {}
        rows.append(
            {
                "name": name,
                "inputs": step.get("inputs") or step.get("inputs_digest") or "",
                "output": step.get("output") or step.get("output_digest") or "",
                "persisted": step.get("persisted"),
                "reused": bool(step.get("reused")),
            }
        )

    # records keep steps sorted by name; show them in the order the code defines them
    def position(row: dict[str, Any]) -> int:
        found = code.find(f"def {row['name'].split('#')[0]}(")
        return found if found >= 0 else len(code)

    return sorted(rows, key=position)


def _environment_rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    summary = record.get("environment_summary") or {}
    if not isinstance(summary, dict):
        return [("environment", str(summary))]
    return [(str(k).replace("_", " "), _flat(v)) for k, v in summary.items()]


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_flat(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value)
    return "" if value is None else str(value)
