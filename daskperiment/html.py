"""Rich (HTML) reprs for notebooks: an experiment, a trial, a diff, a text block.

Jupyter calls ``_repr_html_``; plain ``repr()`` is unchanged. Everything shown is escaped
(parameter values, code and descriptions come from the store). Styles are inline, so the
output renders the same in Jupyter, JupyterLab, VS Code and exported HTML, with the colours
of the dashboard's diff (added lines green, removed red, hunk headers blue).

- :func:`experiment_html`: id, store, number of trials, and the last trials' history rows;
- :class:`TrialInfo` (what ``ex.get_trial(n)`` returns, a ``dict``): status, seed,
  parameters, result, steps and metrics as tables;
- :func:`diff_html`: parameters (a table of old/new) and a unified diff of code,
  environment and the rest, coloured line by line;
- :class:`Text`: a ``str`` that a notebook shows as preformatted text (``diff.stat()``).

Sweep results are history DataFrames, which pandas already renders as HTML tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

LAST_TRIALS = 10

_BOX = (
    "font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; font-size: 13px; "
    "line-height: 1.45; max-width: 100%; overflow-x: auto"
)
_MONO = "font-family: SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px"
_CELL = "padding: 2px 8px; text-align: left; border-bottom: 1px solid #d0d7de"
#: Row styles of a unified diff, as the dashboard colours them (board/static/board.css).
DIFF_STYLES = {
    "add": "background: #e6ffec",
    "del": "background: #ffebe9",
    "hunk": "background: #ddf4ff; color: #57606a",
    "file": "font-weight: 600; background: #f6f8fa",
    "meta": "color: #57606a",
    "context": "",
}


class Text(str):
    """A ``str`` a notebook shows as preformatted text rather than an escaped repr."""

    __slots__ = ()

    def _repr_html_(self) -> str:
        return f'<pre style="{_MONO}">{escape(str(self))}</pre>'

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


def _table(rows: Iterable[tuple[Any, ...]], header: tuple[str, ...] | None = None) -> str:
    out = ['<table style="border-collapse: collapse">']
    if header:
        cells = "".join(f'<th style="{_CELL}">{escape(str(h))}</th>' for h in header)
        out.append(f"<tr>{cells}</tr>")
    for row in rows:
        cells = "".join(f'<td style="{_CELL}">{escape(_short(v))}</td>' for v in row)
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    return "".join(out)


def _short(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _title(text: str) -> str:
    return f'<div style="font-weight: 600; margin: 6px 0 4px">{escape(text)}</div>'


def experiment_html(ex: Any) -> str:
    """An experiment: id, store, trial count, and its last trials."""
    head = _title(f"Experiment {ex.id}")
    backend = repr(ex._backend) if ex._backend is not None else str(ex._target)
    trial_id = ex.trial_id
    rows = [("store", backend), ("trials", trial_id)]
    body = [head, _table(rows)]
    if trial_id:
        history = ex.get_history()
        shown = history.tail(LAST_TRIALS)
        label = (
            f"last {len(shown)} of {len(history)} trials"
            if len(history) > len(shown)
            else (f"{len(history)} trial{'s' if len(history) != 1 else ''}")
        )
        body.append(_title(label))
        body.append(shown.to_html(max_cols=30, notebook=False))
    return f'<div class="daskperiment-experiment" style="{_BOX}">{"".join(body)}</div>'


class TrialInfo(dict):  # type: ignore[type-arg]
    """The record of one trial as plain data (a ``dict``); a table in notebooks."""

    def _repr_html_(self) -> str:
        return trial_html(self)


def trial_html(info: Mapping[str, Any]) -> str:
    """One trial: status and timings, parameters, result, steps, metrics."""
    tid = info.get("id", info.get("trial_id"))
    status = info.get("status")
    colour = {"success": "#1a7f37", "failed": "#cf222e"}.get(str(status), "#9a6700")
    head = (
        f'<div style="font-weight: 600; margin: 6px 0 4px">Trial {escape(str(tid))} of '
        f"{escape(str(info.get('experiment')))} "
        f'<span style="color: {colour}">{escape(str(status))}</span></div>'
    )
    summary = [
        ("seed", info.get("seed")),
        ("result", info.get("result_repr")),
        ("result type", info.get("result_type")),
        ("process time (s)", info.get("process_time")),
        ("parent", info.get("parent")),
    ]
    if info.get("description"):
        summary.append(("description", info["description"]))
    body = [head, _table([(k, v) for k, v in summary if v is not None])]
    params = info.get("params") or {}
    if params:
        body += [_title("parameters"), _table(params.items(), ("name", "value"))]
    steps = info.get("steps") or {}
    if steps:
        rows = [
            (name, s.get("kind"), (s.get("output") or "")[:12], s.get("duration"))
            for name, s in steps.items()
        ]
        body += [_title("steps"), _table(rows, ("step", "kind", "output", "seconds"))]
    metrics = info.get("metrics") or {}
    if metrics:
        body += [_title("metrics"), _table(((k,) for k in metrics), ("key",))]
    return f'<div class="daskperiment-trial" style="{_BOX}">{"".join(body)}</div>'


def classify(line: str, in_header: bool) -> str:
    """The dashboard's kind of a unified-diff line (add, del, hunk, file, meta, context)."""
    if line.startswith("diff --git"):
        return "file"
    if in_header and line.startswith(("--- ", "+++ ", "index ", "new file", "deleted file")):
        return "meta"
    if line.startswith("@@"):
        return "hunk"
    if line.startswith("+"):
        return "add"
    if line.startswith("-"):
        return "del"
    return "context"


def diff_html(diff: Any, missing: Any = None) -> str:
    """A TrialDiff: the parameters as a table, then every changed part as a coloured diff
    (``missing``: the value standing for a part one trial lacks)."""
    head = _title(f"Trial {diff.a} → {diff.b} of {diff.experiment}")
    if not diff:
        return f'<div style="{_BOX}">{head}<div>identical</div></div>'
    body = [head]
    if diff.parameters:
        rows = [
            (name, _side(a, missing), _side(b, missing)) for name, (a, b) in diff.parameters.items()
        ]
        body.append(_table(rows, ("parameter", f"trial {diff.a}", f"trial {diff.b}")))
    out = [f'<table class="daskperiment-diff" style="border-collapse: collapse; {_MONO}">']
    for file in diff.files:
        in_header = True
        for line in file.lines():
            kind = classify(line, in_header)
            if kind == "hunk":
                in_header = False
            elif kind == "file":
                in_header = True
            out.append(
                f'<tr class="{kind}" style="{DIFF_STYLES[kind]}"><td style="padding: 0 8px; '
                f'white-space: pre">{escape(line)}</td></tr>'
            )
    out.append("</table>")
    body.append("".join(out))
    return f'<div class="daskperiment-trialdiff" style="{_BOX}">{"".join(body)}</div>'


def _side(value: Any, missing: Any) -> str:
    return "(absent)" if missing is not None and value is missing else _short(value)
