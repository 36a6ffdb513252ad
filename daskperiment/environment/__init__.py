"""The environment a trial runs in, captured cheaply and compared between trials.

:func:`capture` returns a dict of categories, each plain JSON data (dicts with string keys,
lists, strings, integers, booleans, None) so the store's canonical JSON encodes it:

``platform``
    system, release, kernel version, machine, ``platform.platform()``, libc.
``python``
    version, implementation, compiler, build, executable.
``hardware``
    hostname, CPU count (machine and usable), CPU model, total memory in bytes.
``packages``
    sorted ``"name version (location)"`` lines of every installed distribution, as
    ``importlib.metadata`` finds them on ``sys.path``.
``numpy`` / ``pandas``
    version and build information, when installed.
``git``
    commit, branch, dirty flag, digest of ``git diff HEAD`` and changed files, only when the
    working directory is inside a git work tree (see :mod:`.git`).

Capturing is cheap enough for every trial: what cannot change in a running process is read
once, the package list is rescanned only when a ``sys.path`` directory changed, and git is
asked again only when its files or a tracked file changed. On Linux, while inotify watches
on the ``sys.path`` entries and on git's files (set up before they are looked at) report
nothing, a capture costs a few reads of those watches and no ``stat`` (~7-10 us). While nothing changed, ``capture``
returns the very same dict object, so a caller may skip re-encoding it; treat it as read-only.

:func:`diff` compares two captures category by category into the warnings the user sees,
e.g. ``Installed Python packages have been changed`` then ``@@ -142 +142 @@``,
``-pandas 0.23.4 (...)``, ``+pandas 0.24.0 (...)``.
"""

from __future__ import annotations

import difflib
import json
import threading
from collections.abc import Mapping
from typing import Any

from . import platform as _platform
from .changes import same_packages_as
from .git import GitWatcher
from .packages import PackageWatcher

__all__ = ["CATEGORIES", "capture", "diff", "render", "summary"]

#: Categories in the order they are reported.
CATEGORIES = ("platform", "python", "hardware", "packages", "numpy", "pandas", "git")

_MESSAGES = {
    "platform": "Platform has been changed",
    "hardware": "Hardware has been changed",
    "packages": "Installed Python packages have been changed",
    "numpy": "NumPy build has been changed",
    "pandas": "pandas build has been changed",
}

_lock = threading.Lock()
_static: dict[str, Any] | None = None
_packages = PackageWatcher()
_git = GitWatcher()
_last: dict[str, Any] | None = None


def _static_categories() -> dict[str, Any]:
    """The categories that cannot change while this process runs."""
    found = {
        "platform": _platform.platform_info(),
        "python": _platform.python_info(),
        "hardware": _platform.hardware_info(),
        "numpy": _platform.numpy_info(),
        "pandas": _platform.pandas_info(),
    }
    return {name: value for name, value in found.items() if value is not None}


def capture(cache: bool = True, *, workdir: str | None = None) -> dict[str, Any]:
    """The current environment, as described in this module's docstring.

    ``workdir`` is where git is looked for (default: the current directory; a script's
    directory is a better choice when a script is run from elsewhere). ``cache=False``
    reads everything afresh (the result still refreshes the cache).
    """
    global _static, _last
    with _lock:
        if _static is None or not cache:
            _static = _static_categories()
        static = _static
    packages = _packages.current(cache)
    git = _git.current(workdir, cache)
    with _lock:
        last = _last
        if (
            cache
            and last is not None
            and last.get("packages") is packages
            and last.get("git") is git
            and all(last.get(k) is v for k, v in static.items())
        ):
            return last
        env = {**static, "packages": packages}
        if git is not None:
            env["git"] = git
        _last = env
        return env


def render(category: str, value: Any) -> list[str]:
    """The lines a category is compared by: the package list as is, dicts as ``key: value``.

    Nested dicts give dotted keys; lists give one line per item; values other than strings
    are written as JSON (``true``, ``null``, ``8``).
    """
    if value is None:
        return []
    if category == "packages" and isinstance(value, list):
        return [str(v) for v in value]
    lines: list[str] = []
    _render_into(lines, "", value)
    return lines


def _render_into(lines: list[str], prefix: str, value: Any) -> None:
    if isinstance(value, Mapping):
        if not value:
            lines.append(f"{prefix}: {{}}" if prefix else "{}")
        for key in sorted(value, key=str):
            _render_into(lines, f"{prefix}.{key}" if prefix else str(key), value[key])
    elif isinstance(value, list):
        if not value:
            lines.append(f"{prefix}: []")
        for item in value:
            _render_into(lines, prefix, item)
    else:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        lines.append(f"{prefix}: {text}" if prefix else text)


def _message(category: str, old: Any, new: Any) -> str:
    if category == "python":
        old_version = (old or {}).get("version")
        if old_version != (new or {}).get("version"):
            return "Python version has been changed"
        return "Python interpreter has been changed"
    if category == "git":
        old, new = old or {}, new or {}
        if old.get("commit") != new.get("commit") or not old or not new:
            return "Git commit has been changed"
        if old.get("branch") != new.get("branch"):
            return "Git branch has been changed"
        return "Git working tree has been changed"
    return _MESSAGES.get(category, f"Environment ({category}) has been changed")


def diff(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
) -> list[tuple[str, list[str]]]:
    """``(message, difflines)`` for each category that differs between two captures.

    ``difflines`` are unified-diff lines without context (``@@ -142 +142 @@``,
    ``-pandas 0.23.4 (...)``, ``+pandas 0.24.0 (...)``), without the ``---``/``+++`` lines.
    Nothing to compare with (``old`` is None, the first trial) gives ``[]``.
    """
    if old is None or new is None:
        return []
    extra = sorted((set(old) | set(new)) - set(CATEGORIES))
    changes = []
    for category in (*CATEGORIES, *extra):
        before, after = old.get(category), new.get(category)
        if category == "packages" and isinstance(before, list) and isinstance(after, list):
            after = same_packages_as(before, after)  # an install path alone is no change
        if before == after:
            continue
        lines = list(
            difflib.unified_diff(
                render(category, before), render(category, after), n=0, lineterm=""
            )
        )
        changes.append((_message(category, before, after), lines[2:]))  # drop ---/+++
    return changes


def summary(env: Mapping[str, Any]) -> dict[str, Any]:
    """A few key fields of a capture, for display in trial records and listings."""
    python = env.get("python") or {}
    platform_ = env.get("platform") or {}
    hardware = env.get("hardware") or {}
    git = env.get("git") or {}
    packages = env.get("packages")
    return {
        "python": python.get("version"),
        "platform": platform_.get("platform"),
        "hostname": hardware.get("hostname"),
        "packages": len(packages) if isinstance(packages, list) else None,
        "git_commit": git.get("commit"),
        "git_branch": git.get("branch"),
        "git_dirty": git.get("dirty"),
    }
