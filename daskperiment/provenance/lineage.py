"""Lineage: which trials read a file, or produced or consumed an object.

A query is either a **digest** (32 hex characters, or a prefix of at least 6) or a **path**.
A digest matches a step that read a file with that content (or a tracked directory with that
tree), whose input digest, output digest or persisted object it is, or that consumed it (the
output of an upstream step it received as an argument: step records list those digests). A path (made absolute
against the current directory) matches every step that read that file in any version, or any
file below it when it names a directory. Records are read from the store; nothing is indexed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import daskperiment_store as store

_HEX = re.compile(r"[0-9a-f]{6,32}")


@dataclass(frozen=True)
class Use:
    """One step of one trial that used what the query names."""

    trial: int
    step: str
    #: "read" (an input file), "input" (the step's input digest), "output", "persisted", or
    #: "consumed" (the output of an upstream step, received as an argument).
    role: str
    #: The file path for "read", else None.
    path: str | None
    digest: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "step": self.step,
            "role": self.role,
            "path": self.path,
            "digest": self.digest,
        }


def is_digest_query(query: str) -> bool:
    """Whether ``query`` is read as a digest (else as a path).

    A name of an existing file or directory is a path even if it looks like hex.
    """
    return _HEX.fullmatch(query) is not None and not os.path.exists(query)


def _oid(value: Any) -> str | None:
    if isinstance(value, store.Link):
        return value.oid
    return value if isinstance(value, str) else None


def _step_uses(trial_id: int, label: str, step: Mapping[str, Any]) -> Iterator[Use]:
    for path, digest in (step.get("files") or {}).items():
        yield Use(trial_id, label, "read", path, digest)
    # A persisted object is also the step's output: it is named once, as persisted.
    for role in ("input", "persisted", "output"):
        oid = _oid(step.get("inputs" if role == "input" else role))
        if oid is not None:
            yield Use(trial_id, label, role, None, oid)
    for oid in step.get("consumed") or ():
        yield Use(trial_id, label, "consumed", None, oid)


def _matches(use: Use, query: str, as_digest: bool) -> bool:
    if as_digest:
        return use.digest is not None and use.digest.startswith(query)
    if use.path is None:
        return False
    return use.path == query or use.path.startswith(os.path.join(query, ""))


def find_uses(records: Iterable[tuple[int, Mapping[str, Any]]], query: str) -> list[Use]:
    """The uses of ``query`` (a path or a digest) in ``records`` (trial id, record) pairs."""
    query = os.fspath(query)
    as_digest = is_digest_query(query)
    if not as_digest:
        query = os.path.abspath(query).rstrip(os.sep) or os.sep
    out: list[Use] = []
    for trial_id, record in records:
        steps = record.get("steps") or {}
        for label in sorted(steps, key=lambda k: (steps[k].get("started") or 0, k)):
            seen: set[tuple[str | None, str | None]] = set()
            for use in _step_uses(trial_id, label, steps[label]):
                if _matches(use, query, as_digest) and (use.path, use.digest) not in seen:
                    seen.add((use.path, use.digest))
                    out.append(use)
    return out


def render(uses: list[Use], query: str) -> str:
    """``daskperiment log --uses`` as text: one line per use."""
    if not uses:
        return f"no trial used {query}\n"
    lines = []
    for u in uses:
        what = f"read {u.path}" if u.role == "read" else u.role
        lines.append(f"trial {u.trial}  {u.step}  {what}  {u.digest}")
    return "\n".join(lines) + "\n"
