"""What a trial diff is: its files (:class:`DiffFile`), the whole (:class:`TrialDiff`) and
how both render like ``git diff``. Built by :func:`daskperiment.diff.diff_trials` and by the
provenance parts in :mod:`daskperiment.provenance.diffparts`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Groups of files, in the order they are rendered (``render(groups=...)`` selects some).
GROUPS = ("parameters", "trial", "code", "source", "steps", "result", "metrics", "environment")
#: Lines of context around each change, as ``git diff``.
CONTEXT = 3
NULL_OID = "0" * 7

_BOLD, _CYAN, _GREEN, _RED, _RESET = "\x1b[1m", "\x1b[36m", "\x1b[32m", "\x1b[31m", "\x1b[m"


class _Missing:
    """Stands for a part present in one trial only."""

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


#: The value of a part absent from one of the two trials.
MISSING: Any = _Missing()


@dataclass(frozen=True)
class PickledObject:
    """An object left unread because it is a pickle (loading it would run code)."""

    oid: str


# ---------------------------------------------------------------------------------------
# Files: the unit of rendering
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffFile:
    """One changed part, as the text lines of each side (None: absent on that side)."""

    path: str
    group: str
    old: list[str] | None
    new: list[str] | None
    old_oid: str | None = None
    new_oid: str | None = None

    def hunks(self) -> list[str]:
        """Unified-diff hunks (``@@`` headers, context, ``-`` and ``+`` lines)."""
        lines = difflib.unified_diff(self.old or [], self.new or [], n=CONTEXT, lineterm="")
        return list(lines)[2:]  # the ---/+++ pair is written by lines()

    def counts(self) -> tuple[int, int]:
        """(lines added, lines removed)."""
        hunks = self.hunks()
        added = sum(1 for h in hunks if h.startswith("+"))
        removed = sum(1 for h in hunks if h.startswith("-"))
        return added, removed

    def lines(self) -> list[str]:
        """The whole section, header included, as ``git diff`` writes a file."""
        out = [f"diff --git a/{self.path} b/{self.path}"]
        if self.old is None:
            out.append("new file")
        elif self.new is None:
            out.append("deleted file")
        if self.old_oid or self.new_oid:
            out.append(f"index {_short(self.old_oid)}..{_short(self.new_oid)}")
        hunks = self.hunks()
        if hunks:
            out.append("--- /dev/null" if self.old is None else f"--- a/{self.path}")
            out.append("+++ /dev/null" if self.new is None else f"+++ b/{self.path}")
            out.extend(hunks)
        return out


def _short(oid: str | None) -> str:
    return oid[:7] if oid else NULL_OID


def colorize(line: str, in_header: bool) -> str:
    """``line`` with git's colours: bold headers, cyan hunk headers, red/green changes."""
    if line.startswith("diff --git") or (
        in_header and line.startswith(("--- ", "+++ ", "index ", "new file", "deleted file"))
    ):
        return f"{_BOLD}{line}{_RESET}"
    if line.startswith("@@"):
        end = line.find("@@", 2)
        return f"{_CYAN}{line[: end + 2]}{_RESET}{line[end + 2 :]}" if end > 0 else line
    if line.startswith("+"):
        return f"{_GREEN}{line}{_RESET}"
    if line.startswith("-"):
        return f"{_RED}{line}{_RESET}"
    return line


# ---------------------------------------------------------------------------------------
# The diff
# ---------------------------------------------------------------------------------------


class TrialDiff:
    """What changed from trial ``a`` to trial ``b`` of one experiment.

    Attributes hold only what changed, as ``{name: (value in a, value in b)}`` with
    :data:`MISSING` for a side that lacks it:

    - ``parameters``: parameter values;
    - ``trial``: ``seed``, ``status``, ``description``;
    - ``code``: step name -> source text;
    - ``steps``: step label -> ``{"inputs", "output", "persisted", "reused"}`` digests;
    - ``result``: ``{"type", "value", "digest"}`` pair, or None when unchanged;
    - ``metrics``: key -> summary statistics (``count``, ``first``, ``last``, ``min``,
      ``max``, ``mean``), or :class:`PickledObject` for a pickled series (never loaded);
    - ``environment``: category -> captured value.

    ``files`` are the rendered units; ``objects_read`` counts the objects read from the
    store to build the diff (records included).
    """

    def __init__(
        self,
        experiment: str,
        a: int,
        b: int,
        files: list[DiffFile] | None = None,
        objects_read: int = 0,
        **changes: Any,
    ) -> None:
        self.experiment = experiment
        self.a, self.b = a, b
        self.files = files or []
        self.objects_read = objects_read
        self.parameters: dict[str, tuple[Any, Any]] = changes.get("parameters", {})
        self.trial: dict[str, tuple[Any, Any]] = changes.get("trial", {})
        self.code: dict[str, tuple[Any, Any]] = changes.get("code", {})
        self.steps: dict[str, tuple[Any, Any]] = changes.get("steps", {})
        self.result: tuple[Any, Any] | None = changes.get("result")
        self.metrics: dict[str, tuple[Any, Any]] = changes.get("metrics", {})
        self.environment: dict[str, tuple[Any, Any]] = changes.get("environment", {})
        #: local file path -> text, and helper name -> source (daskperiment/provenance/)
        self.source: dict[str, tuple[Any, Any]] = changes.get("source", {})
        self.closure: dict[str, tuple[Any, Any]] = changes.get("closure", {})

    def __bool__(self) -> bool:
        return bool(self.files)

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        changed = ", ".join(g for g in GROUPS if any(f.group == g for f in self.files))
        return (
            f"TrialDiff(experiment: {self.experiment}, a: {self.a}, b: {self.b}, "
            f"changed: {changed or 'nothing'})"
        )

    def selected(self, groups: Iterable[str] | None = None) -> list[DiffFile]:
        """The files of ``groups`` (every group by default), in rendering order."""
        if groups is None:
            return list(self.files)
        wanted = set(groups)
        unknown = wanted - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown diff groups {sorted(unknown)}; choose from {GROUPS}")
        return [f for f in self.files if f.group in wanted]

    def render(self, groups: Iterable[str] | None = None, color: bool = False) -> str:
        """The diff in git's unified format ("" when nothing differs)."""
        out: list[str] = []
        for file in self.selected(groups):
            in_header = True
            for line in file.lines():
                if line.startswith("@@"):
                    in_header = False
                out.append(colorize(line, in_header) if color else line)
        return "".join(f"{line}\n" for line in out)

    def stat(self, groups: Iterable[str] | None = None, color: bool = False) -> str:
        """A ``git diff --stat`` summary: one line per file, then the totals."""
        files = self.selected(groups)
        if not files:
            return ""
        counts = [f.counts() for f in files]
        width = max(len(f.path) for f in files)
        most = max((a + r for a, r in counts), default=0)
        digits = len(str(most))
        scale = min(1.0, 50 / most) if most else 1.0
        lines = []
        for file, (added, removed) in zip(files, counts, strict=True):
            plus, minus = _bar(added, scale, "+"), _bar(removed, scale, "-")
            if color:
                plus = f"{_GREEN}{plus}{_RESET}" if plus else ""
                minus = f"{_RED}{minus}{_RESET}" if minus else ""
            lines.append(f" {file.path:<{width}} | {added + removed:>{digits}} {plus}{minus}")
        added = sum(a for a, _ in counts)
        removed = sum(r for _, r in counts)
        lines.append(
            f" {_plural(len(files), 'file')} changed, {_plural(added, 'insertion')}(+), "
            f"{_plural(removed, 'deletion')}(-)"
        )
        return "".join(f"{line.rstrip()}\n" for line in lines)

    def to_dict(self) -> dict[str, Any]:
        """The diff as JSON-ready data: each change as ``{"a": old, "b": new}`` (a side is
        left out where that trial lacks the part)."""
        out = {
            "experiment": self.experiment,
            "a": self.a,
            "b": self.b,
            "identical": not self,
            "parameters": _pairs(self.parameters),
            "trial": _pairs(self.trial),
            "code": sorted(self.code),
            "steps": _pairs(self.steps),
            "result": _pair(self.result) if self.result else None,
            "metrics": _pairs(self.metrics),
            "environment": sorted(self.environment),
            "files": [
                {"path": f.path, "group": f.group, "added": a, "removed": r}
                for f, (a, r) in ((f, f.counts()) for f in self.files)
            ],
            "objects_read": self.objects_read,
        }
        # Local files and helpers (daskperiment/provenance/), listed when they changed.
        out.update(
            {k: sorted(v) for k, v in (("source", self.source), ("closure", self.closure)) if v}
        )
        return out


def _bar(n: int, scale: float, char: str) -> str:
    return "" if n == 0 else char * max(1, round(n * scale))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _pair(pair: tuple[Any, Any]) -> dict[str, Any]:
    out = {}
    for side, value in zip("ab", pair, strict=True):
        if value is not MISSING:
            out[side] = (
                {"oid": value.oid, "pickled": True} if isinstance(value, PickledObject) else value
            )
    return out


def _pairs(changes: Mapping[str, tuple[Any, Any]]) -> dict[str, Any]:
    return {name: _pair(pair) for name, pair in changes.items()}
