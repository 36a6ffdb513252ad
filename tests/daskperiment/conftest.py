"""Fixtures for the experiment engine's tests.

Every test runs in a fresh working directory, so the default store
(``daskperiment_cache/<id>``) lands in a temporary directory and never in the checkout.
Subprocess helpers run real Python processes: restore, crash and cross-process digest tests
need separate interpreters, not mocks.
"""

from __future__ import annotations

import contextlib
import json
import linecache
import logging
import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
RESULT_MARK = "RESULT:"

#: Prepended to subprocess scripts: ``report(value)`` prints one JSON line the test reads
#: back, so the subprocess's own log output can never be mistaken for its result.
REPORT_PRELUDE = f"""\
import json as _json


def report(value):
    print({RESULT_MARK!r} + _json.dumps(value, default=str), flush=True)


"""


class LogCapture(logging.Handler):
    """Collects the records of the ``daskperiment`` logger (and its children).

    Attached to the ``daskperiment`` logger itself, so it sees every record whether or not
    the library lets its records propagate to the root logger.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: str | None = None) -> list[str]:
        """Messages in order, optionally only those of one level name (``"WARNING"``)."""
        return [r.getMessage() for r in self.records if level is None or r.levelname == level]

    def clear(self) -> None:
        self.records.clear()


@contextlib.contextmanager
def capture_log() -> Iterator[LogCapture]:
    """Capture the ``daskperiment`` logger's records for the duration of the block."""
    handler = LogCapture()
    logger = logging.getLogger("daskperiment")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh current directory per test: ``daskperiment_cache/`` lands in tmp."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def dp_log() -> Iterator[LogCapture]:
    """Records logged on the ``daskperiment`` logger during the test."""
    with capture_log() as handler:
        yield handler


# ---------------------------------------------------------------------------------------
# Running code the way users do: source files, notebook cells, fresh interpreters.
# ---------------------------------------------------------------------------------------


class Cells:
    """Executes source snippets in one namespace, like a notebook session.

    Each cell is written to a real ``cell_<n>.py`` file (``notebook=False``) so that
    ``inspect.getsource`` finds the steps' source, or registered in ``linecache`` under a
    file name that does not exist on disk (``notebook=True``), which is how IPython makes
    cell source available.
    """

    def __init__(self, directory: Path, notebook: bool = False) -> None:
        self.directory = directory
        self.notebook = notebook
        self.ns: dict[str, Any] = {"__name__": "__cells__"}
        self.count = 0

    def run(self, source: str) -> dict[str, Any]:
        """Run one cell; returns the shared namespace."""
        self.count += 1
        text = textwrap.dedent(source).lstrip("\n")
        if self.notebook:
            filename = str(self.directory / f"ipykernel_{os.getpid()}" / f"{self.count}.py")
            lines = text.splitlines(keepends=True)
            # mtime None: linecache.checkcache never drops the entry (as IPython does).
            linecache.cache[filename] = (len(text), None, lines, filename)
        else:
            path = self.directory / f"cell_{self.count}.py"
            path.write_text(text)
            filename = str(path)
        exec(compile(text, filename, "exec"), self.ns)
        return self.ns


@dataclass
class Run:
    """A finished subprocess."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout then stderr: where the library prints its log is not part of the contract."""
        return self.stdout + self.stderr

    @property
    def lines(self) -> list[str]:
        return self.output.splitlines()

    def result(self) -> Any:
        """The value the script passed to ``report()`` (the last one)."""
        found = [line for line in self.stdout.splitlines() if line.startswith(RESULT_MARK)]
        assert found, f"no {RESULT_MARK} line in the output:\n{self.describe()}"
        return json.loads(found[-1][len(RESULT_MARK) :])

    def check(self) -> Run:
        """Assert the process exited with 0; returns self."""
        assert self.returncode == 0, self.describe()
        return self

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.args)}\nexit code {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


def subprocess_env(extra: dict[str, str] | None = None, pythonpath: list[str] = ()) -> dict:
    """The environment for a child interpreter: this checkout importable first."""
    env = dict(os.environ)
    env.pop("PYTHONHASHSEED", None)
    paths = [*pythonpath, str(REPO)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra or {})
    return env


class Python:
    """Writes scripts into a directory and runs them in fresh interpreters there."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, name: str, source: str, report: bool = True) -> Path:
        """Write a script (dedented; with ``report()`` defined unless ``report=False``)."""
        path = self.directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        body = textwrap.dedent(source).lstrip("\n")
        path.write_text((REPORT_PRELUDE if report else "") + body)
        return path

    def run_args(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        pythonpath: list[str] = (),
        timeout: float = 180,
    ) -> Run:
        """Run a command in the directory and wait for it."""
        proc = subprocess.run(
            args,
            cwd=self.directory,
            env=subprocess_env(env, pythonpath),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Run(args, proc.returncode, proc.stdout, proc.stderr)

    def run(self, source: str, *args: str, name: str = "snippet.py", **kwargs: Any) -> Run:
        """Write ``source`` to ``name`` and run it with this interpreter."""
        path = self.write(name, source)
        return self.run_args([sys.executable, str(path), *args], **kwargs)

    def popen(
        self,
        source: str,
        name: str = "snippet.py",
        env: dict[str, str] | None = None,
        pythonpath: list[str] = (),
    ) -> subprocess.Popen:
        """Start ``source`` without waiting (stdout and stderr to ``<name>.out``)."""
        path = self.write(name, source)
        out = open(self.directory / f"{name}.out", "w")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(
            [sys.executable, str(path)],
            cwd=self.directory,
            env=subprocess_env(env, pythonpath),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def python(workdir: Path) -> Python:
    """Run scripts in fresh interpreters with the test's directory as CWD."""
    return Python(workdir)


@pytest.fixture
def cells(workdir: Path) -> Cells:
    """A notebook-like session whose cells are real source files in the test directory."""
    return Cells(workdir)


@pytest.fixture(scope="session")
def helpers() -> types.SimpleNamespace:
    """The classes above, for module-scoped fixtures and tests.

    Test directories here are not packages (a ``tests/daskperiment`` package would shadow
    the library), so test modules reach these through a fixture instead of an import.
    """
    return types.SimpleNamespace(
        Cells=Cells, Python=Python, Run=Run, LogCapture=LogCapture, capture_log=capture_log
    )


@pytest.fixture
def stat_calls(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``stat_calls(paths=None)`` records the ``os.stat`` calls made from then on (on
    ``paths`` only, when given) into the list it returns."""

    def start(paths: Any = None) -> list[str]:
        seen: list[str] = []
        watched = None if paths is None else {str(p) for p in paths}
        real = os.stat

        def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
            if watched is None or str(path) in watched:
                seen.append(str(path))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(os, "stat", counting)
        return seen

    return start
