"""Rewrite imports of the store package from ``store`` to its installed name ``daskperiment_store``.

The store is developed in the folder ``store/`` and installed as ``daskperiment_store`` (see
``[tool.setuptools]`` in pyproject.toml), so that a user's own ``store.py`` cannot shadow it.
Run from the repository root, then let ruff sort the rewritten imports::

    python scripts/rename_store_imports.py && python -m ruff check --select I --fix -q . \
        && python -m ruff format -q .

What it rewrites, in tracked text files (symlinks skipped):

- ``import store`` -> ``import daskperiment_store as store`` (at the start of a line, after
  ``>>>``/``...``, or inside a quoted one-liner such as ``"import store; ..."``), so every use
  of the module name ``store`` in that file stays valid and no variable is touched;
- ``import store.x as y`` -> ``import daskperiment_store.x as y``;
- ``from store import ...`` / ``from store.x import ...`` -> ``from daskperiment_store...``;
- references in backticks (docs, docstrings, comments) to the package's public names:
  ``store.open``, ``store.Store``, ``store.errors.X``, ``store.codec.digest``, ... become
  ``daskperiment_store.…``; ``store.refs``/``store.put`` on their own name a Store *instance*'s
  attribute and are left alone.

It is idempotent (rewritten text never matches again) and prints every file it changed, then
any remaining line that still looks like an import of ``store`` for a human to look at.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

NEW = "daskperiment_store"
SUFFIXES = {".py", ".md", ".txt", ".rst", ".ipynb", ".html", ".cfg", ".ini"}
SKIP = {"scripts/rename_store_imports.py", "pyproject.toml"}
# Start of a statement: line start (+ indentation, doctest prompt) or inside a quoted one-liner.
START = r"""(^[ \t]*(?:>>> |\.\.\. )?|(?<=["';])[ \t]*)"""
PUBLIC = (
    "open|Store|Link|Backend|MemoryBackend|LocalBackend|FsspecBackend|errors|codec|codec_pandas"
    "|digest|backends|store|objfile|bundle|sync|compress|gc|fsck|config|testing"
)
RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(START + r"import store(?=[ \t]*(?:[;\"'#]|$))", re.M), rf"\1import {NEW} as store"),
    (re.compile(START + r"import store\.(?=\w)", re.M), rf"\1import {NEW}."),
    (re.compile(START + r"from store(?=[ .])", re.M), rf"\1from {NEW}"),
    (re.compile(r"`import store`"), f"`import {NEW}`"),
    (re.compile(rf"([`~])store\.(?=(?:{PUBLIC})\b|refs\.)"), rf"\1{NEW}."),
]
LEFTOVER = re.compile(r"(?<![\w.])(?:import store\b(?! as)|from store\b)")


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], capture_output=True, check=True).stdout
    names = [n for n in out.decode().split("\0") if n]
    return [Path(n) for n in names if n not in SKIP and Path(n).suffix in SUFFIXES]


def rewrite(text: str) -> str:
    for pattern, replacement in RULES:
        text = pattern.sub(replacement, text)
    return text


def main() -> int:
    changed = 0
    for path in tracked_files():
        if path.is_symlink() or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        new = rewrite(text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed += 1
            print(f"rewrote {path}")
        for number, line in enumerate(new.splitlines(), 1):
            if LEFTOVER.search(line) and "daskperiment_store" not in line:
                print(f"check by hand: {path}:{number}: {line.strip()}", file=sys.stderr)
    print(f"{changed} files rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
