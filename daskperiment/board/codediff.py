"""The diff of two trials, as git-style text, split into lines the page can colour.

``diff_text`` is the single place that produces the text. It uses the library's
``Experiment.diff(a, b)`` (whose ``str()`` renders like ``git diff``) when the experiment has
it, and otherwise a unified diff of the two trials' parameters and code made here with
``difflib``. Everything else (classifying and rendering lines) works on the text alone.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DiffLine:
    """One line of a unified diff with the CSS class that colours it."""

    kind: str  # "add" | "del" | "hunk" | "file" | "meta" | "context"
    text: str


def diff_text(experiment: Any, a: int, b: int) -> str:
    """The git-style diff between trials ``a`` and ``b`` of ``experiment``."""
    library_diff = getattr(experiment, "diff", None)
    if callable(library_diff):
        return str(library_diff(a, b))
    return _fallback_diff(experiment, a, b)


def _fallback_diff(experiment: Any, a: int, b: int) -> str:
    params_a = _params_text(experiment.get_trial(a))
    params_b = _params_text(experiment.get_trial(b))
    parts = [
        _unified("parameters", params_a, params_b, a, b),
        _unified("code", experiment.get_code(trial_id=a), experiment.get_code(trial_id=b), a, b),
    ]
    return "".join(parts)


def _params_text(record: dict) -> str:
    params = record.get("params") or record.get("parameters") or {}
    return "".join(
        f"{name} = {json.dumps(value, default=repr)}\n" for name, value in sorted(params.items())
    )


def _unified(name: str, old: str, new: str, a: int, b: int) -> str:
    if old == new:
        return ""
    old_lines = old.splitlines(keepends=True)
    new_lines = new.splitlines(keepends=True)
    body = difflib.unified_diff(
        old_lines, new_lines, fromfile=f"a/{name} (trial {a})", tofile=f"b/{name} (trial {b})"
    )
    text = "".join(line if line.endswith("\n") else line + "\n" for line in body)
    return f"diff --git a/{name} b/{name}\n{text}"


def classify(text: str) -> list[DiffLine]:
    """Split a git-style diff into lines tagged for colouring (headers, hunks, +, -)."""
    lines = []
    in_header = False
    for line in text.splitlines():
        if line.startswith("diff --git"):
            kind, in_header = "file", True
        elif in_header and line.startswith(("--- ", "+++ ", "index ", "new file", "deleted file")):
            kind = "meta"
        elif line.startswith("@@"):
            kind, in_header = "hunk", False
        elif line.startswith("+") and not in_header:
            kind = "add"
        elif line.startswith("-") and not in_header:
            kind = "del"
        else:
            kind = "context"
        lines.append(DiffLine(kind, line))
    return lines


def diff_stat(lines: list[DiffLine]) -> tuple[int, int]:
    """Counts of added and removed lines."""
    added = sum(1 for line in lines if line.kind == "add")
    removed = sum(1 for line in lines if line.kind == "del")
    return added, removed


@dataclass(frozen=True)
class NumberedLine:
    """A diff line with its line numbers in the old and new text (None where absent)."""

    kind: str
    text: str
    old: int | None
    new: int | None


@dataclass
class DiffFile:
    """The part of a diff about one file (``diff --git a/<name> b/<name>``)."""

    name: str
    lines: list[NumberedLine]


_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def split_files(lines: list[DiffLine]) -> list[DiffFile]:
    """Group classified lines per file and number them as a code review shows them."""
    files: list[DiffFile] = []
    old = new = 0
    for line in lines:
        if line.kind == "file" or not files:
            name = line.text.split(" b/", 1)[-1] if line.kind == "file" else ""
            files.append(DiffFile(name, []))
            if line.kind == "file":
                continue
        if line.kind == "meta":
            continue
        current = files[-1].lines
        if line.kind == "hunk":
            match = _HUNK.match(line.text)
            if match:
                old, new = int(match[1]), int(match[2])
            current.append(NumberedLine("hunk", line.text, None, None))
        elif line.kind == "add":
            current.append(NumberedLine("add", line.text, None, new))
            new += 1
        elif line.kind == "del":
            current.append(NumberedLine("del", line.text, old, None))
            old += 1
        else:
            current.append(NumberedLine("context", line.text, old or None, new or None))
            old, new = old + 1 if old else 0, new + 1 if new else 0
    return [f for f in files if f.lines]
