"""The diff of two trials, as git-style text, split into lines the page can colour.

The text is the library's own ``Experiment.diff(a, b)`` rendered with ``str()`` (``git diff``
format: ``diff --git`` headers, ``@@`` hunks, ``+``/``-`` lines), so the dashboard shows
exactly what ``daskperiment diff EXP A B`` prints. Everything here works on that text alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DiffLine:
    """One line of a unified diff with the CSS class that colours it."""

    kind: str  # "add" | "del" | "hunk" | "file" | "meta" | "context"
    text: str


def diff_text(experiment: Any, a: int, b: int) -> str:
    """The git-style diff between trials ``a`` and ``b`` of ``experiment`` ('' if identical)."""
    return str(experiment.diff(a, b))


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
