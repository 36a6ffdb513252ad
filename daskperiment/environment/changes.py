"""What counts as an environment change, and how much of it the log shows.

A package is the same package when its name and version are: the directory it is installed
in is shown but never compared, so the same environment reached through a symlink or a moved
virtualenv changes nothing. A small change (one category, and at most one package) is logged
as the seed shows it: ``Installed Python packages have been changed`` then its diff lines. A
larger one is ONE warning line::

    environment changed since trial 9: 3 packages upgraded, 1 added; see daskperiment diff --env

with the detail at DEBUG (and in ``daskperiment diff --env`` / ``ex.diff``).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

_LINE = re.compile(r"^(?P<name>\S+) (?P<version>\S+)(?: \((?P<where>.*)\))?$")


def identity(line: str) -> tuple[str, str]:
    """``(normalised name, version)`` of a ``"name version (location)"`` line."""
    m = _LINE.match(line)
    if m is None:
        return line, ""
    return re.sub(r"[-_.]+", "-", m["name"]).lower(), m["version"]


def same_packages_as(old: list[str], new: list[str]) -> list[str]:
    """``new`` with every package ``old`` has in the same version shown as ``old`` shows it,
    so a diff of the two lists shows only packages whose name or version changed."""
    unused: dict[tuple[str, str], list[str]] = {}
    for line in old:  # one name and version may be listed twice (two paths on sys.path)
        unused.setdefault(identity(line), []).append(line)
    out = []
    for line in new:
        candidates = unused.get(identity(line))
        if not candidates:
            out.append(line)
            continue
        chosen = line if line in candidates else candidates[0]
        candidates.remove(chosen)
        out.append(chosen)
    return out


def package_counts(old: list[str], new: list[str]) -> Counter[str]:
    """How many packages were upgraded, downgraded, changed (versions not comparable), added
    and removed, by name."""
    before = _versions(old)
    after = _versions(new)
    counts: Counter[str] = Counter()
    for name in before.keys() | after.keys():
        a, b = before.get(name), after.get(name)
        if a == b:
            continue
        counts[_kind(a, b)] += 1
    return counts


def _versions(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        name, version = identity(line)
        out.setdefault(name, version)  # the first on sys.path is the one imported
    return out


def _kind(a: str | None, b: str | None) -> str:
    if a is None:
        return "added"
    if b is None:
        return "removed"
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:
        return "changed"
    try:
        return "upgraded" if Version(b) > Version(a) else "downgraded"
    except InvalidVersion:
        return "changed"


_ORDER = ("upgraded", "downgraded", "changed", "added", "removed")


def summary(changes: list[tuple[str, list[str]]], old: Mapping[str, Any], new: Mapping) -> str:
    """The parts of the one-line summary: other categories' messages, then package counts
    (``Python version has been changed, 3 packages upgraded, 1 added``)."""
    parts = []
    for message, _ in changes:
        if message != "Installed Python packages have been changed":
            parts.append(message)
    counts = package_counts(list(old.get("packages") or []), list(new.get("packages") or []))
    first = True
    for kind in _ORDER:
        if counts[kind]:
            n = counts[kind]
            parts.append(f"{n} package{'s' if n != 1 else ''} {kind}" if first else f"{n} {kind}")
            first = False
    return ", ".join(parts)


def is_small(changes: list[tuple[str, list[str]]], old: Mapping, new: Mapping) -> bool:
    """One category changed, and if it is the package list, one package in it."""
    if len(changes) != 1:
        return False
    message, _ = changes[0]
    if message != "Installed Python packages have been changed":
        return True
    counts = package_counts(list(old.get("packages") or []), list(new.get("packages") or []))
    return sum(counts.values()) <= 1


def log_changes(
    logger: logging.Logger,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    since: int | None,
    diff: Callable[[Any, Any], list[tuple[str, list[str]]]],
) -> None:
    """Log the change from ``old`` to ``new`` (see the module docstring)."""
    changes = diff(old, new)
    if not changes:
        return
    if is_small(changes, old, new):
        for message, lines in changes:
            logger.warning("%s", message)
            for line in lines:
                logger.warning("%s", line)
        return
    where = f"since trial {since}" if since else "since the last trial"
    logger.warning(
        "environment changed %s: %s; see daskperiment diff --env",
        where,
        summary(changes, old, new),
    )
    for message, lines in changes:
        logger.debug("%s", message)
        for line in lines:
            logger.debug("%s", line)
