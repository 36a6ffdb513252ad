"""Code snapshots: decorators included, Jupyter cells, bytecode stand-in, seed-exact diffs."""

# ruff: noqa: F811  (prepare_data is redefined on purpose, as the seed does)

from __future__ import annotations

import functools
import hashlib
import importlib
import linecache
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from daskperiment.code import (
    CodeSnapshot,
    capture_source,
    code_diff,
    format_code,
    normalize,
    strip_decorators,
)
from daskperiment.log import get_logger, log_diff

REPO = Path(__file__).resolve().parents[2]


class FakeExperiment:
    """Stands in for an Experiment: only the decorator spelling matters here."""

    def __call__(self, func):
        return func

    def persist(self, func):
        return func

    def result(self, func):
        return func


ex = FakeExperiment()


# The seed's definitions, spelled as in quickstart.txt.
@ex
def prepare_data(a, b):
    return a + b


SEED_PREPARE_DATA = prepare_data


@ex.persist
def prepare_data(a, b):
    return a + b


SEED_PERSISTED_PREPARE_DATA = prepare_data


@ex.result
def calculate_score(s):
    return 10 / s


# Lines of quickstart.txt after "... [WARNING] ", redefining @ex -> @ex.persist.
SEED_DIFF = [
    "@@ -1,3 +1,3 @@",
    "-@ex",
    "+@ex.persist",
    " def prepare_data(a, b):",
    "     return a + b",
]

# The seed's ``ex.get_code(trial_id=1)`` listing.
SEED_CODE_TRIAL_1 = """\
def prepare_data(a, b):
    return a + b

def calculate_score(s):
    return 10 / s
"""


def test_decorator_lines_are_part_of_the_source() -> None:
    snap = capture_source(SEED_PREPARE_DATA)
    assert snap == CodeSnapshot(
        "prepare_data", "@ex\ndef prepare_data(a, b):\n    return a + b\n", True
    )
    assert capture_source(SEED_PERSISTED_PREPARE_DATA).source.startswith("@ex.persist\n")


def test_code_diff_reproduces_the_seed_warning_lines() -> None:
    old = capture_source(SEED_PREPARE_DATA).source
    new = capture_source(SEED_PERSISTED_PREPARE_DATA).source
    assert code_diff(old, new, "prepare_data") == SEED_DIFF


def test_code_change_warning_is_the_seed_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    old = capture_source(SEED_PREPARE_DATA).source
    new = capture_source(SEED_PERSISTED_PREPARE_DATA).source
    with caplog.at_level(logging.INFO, logger="daskperiment"):
        log_diff(get_logger(), "Code context has been changed: prepare_data", code_diff(old, new))
    formatted = [f"[{r.levelname}] {r.getMessage()}" for r in caplog.records]
    # quickstart.txt, after "... " (its elided timestamps)
    assert formatted == [
        "[WARNING] Code context has been changed: prepare_data",
        "[WARNING] @@ -1,3 +1,3 @@",
        "[WARNING] -@ex",
        "[WARNING] +@ex.persist",
        "[WARNING]  def prepare_data(a, b):",
        "[WARNING]      return a + b",
    ]


def test_code_diff_of_equal_sources_is_empty() -> None:
    source = capture_source(calculate_score).source
    assert code_diff(source, source, "calculate_score") == []


def test_code_diff_keeps_three_lines_of_context_and_several_hunks() -> None:
    old = "".join(f"x{i} = {i}\n" for i in range(20))
    new = old.replace("x2 = 2", "x2 = -2").replace("x17 = 17", "x17 = -17")
    assert code_diff(old, new, "m") == [
        "@@ -1,6 +1,6 @@",
        " x0 = 0",
        " x1 = 1",
        "-x2 = 2",
        "+x2 = -2",
        " x3 = 3",
        " x4 = 4",
        " x5 = 5",
        "@@ -15,6 +15,6 @@",
        " x14 = 14",
        " x15 = 15",
        " x16 = 16",
        "-x17 = 17",
        "+x17 = -17",
        " x18 = 18",
        " x19 = 19",
    ]


def test_format_code_matches_the_seed_listing_without_decorators() -> None:
    snapshots = {
        "prepare_data": capture_source(SEED_PREPARE_DATA).source,
        "calculate_score": capture_source(calculate_score).source,
    }
    assert format_code(snapshots, decorators=False) == SEED_CODE_TRIAL_1
    assert format_code(snapshots) == (
        "@ex\ndef prepare_data(a, b):\n    return a + b\n\n"
        "@ex.result\ndef calculate_score(s):\n    return 10 / s\n"
    )
    assert format_code({}) == ""


def test_format_code_keeps_the_given_order() -> None:
    listing = format_code({"b": "def b():\n    pass\n", "a": "def a():\n    pass"})
    assert listing == "def b():\n    pass\n\ndef a():\n    pass\n"


def test_strip_decorators_handles_multiline_decorators_and_comments() -> None:
    source = "@ex.persist(\n    name='x',\n)\n# why\n@functools.cache\ndef f():\n    return 1\n"
    assert strip_decorators(source) == "def f():\n    return 1\n"
    assert strip_decorators("lambda x: (x,\n") == "lambda x: (x,\n"


def test_nested_function_is_dedented_and_keeps_its_string_literals() -> None:
    def outer():
        @functools.lru_cache(maxsize=8)
        def inner(x):
            text = """
flush left"""
            return text * x

        return inner

    snap = capture_source(outer())
    assert snap.exact
    assert snap.name == "inner"
    assert snap.source == (
        "@functools.lru_cache(maxsize=8)\n"
        "def inner(x):\n"
        '    text = """\n'
        'flush left"""\n'
        "    return text * x\n"
    )


def test_partials_wrappers_methods_and_callable_objects() -> None:
    def base(a, b):
        return a - b

    @functools.wraps(base)
    def wrapper(*args):
        return base(*args)

    class Scorer:
        def __call__(self, x):
            return x

        def score(self, x):
            return x

    assert capture_source(functools.partial(base, 1)).source.startswith("def base(a, b):")
    assert capture_source(wrapper).source.startswith("def base(a, b):")
    assert capture_source(Scorer().score).source.startswith("def score(self, x):")
    callable_snap = capture_source(Scorer())
    assert callable_snap.name == "Scorer"
    assert callable_snap.source.startswith("class Scorer:")


def test_normalize_line_endings_and_final_newline() -> None:
    assert normalize("    def f():\r\n        return 1\r\n\r\n") == "def f():\n    return 1\n"


def test_ipykernel_cell_registered_in_linecache_is_captured() -> None:
    # ipykernel compiles each cell under a file name like this and puts its text in linecache.
    filename = f"/tmp/ipykernel_{os.getpid()}/2717281728.py"
    cell = "@ex.persist\ndef cell_step(x):\n    return x + 1\n"
    linecache.cache[filename] = (len(cell), None, cell.splitlines(keepends=True), filename)
    try:
        namespace = {"__name__": "__main__", "ex": ex}
        exec(compile(cell, filename, "exec"), namespace)
        snap = capture_source(namespace["cell_step"])
    finally:
        del linecache.cache[filename]
    assert snap == CodeSnapshot("cell_step", cell, True)


def test_ipython_shell_cell_is_captured() -> None:
    pytest.importorskip("IPython")
    script = textwrap.dedent(
        """
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_cell("def deco(f):\\n    return f\\n")
        shell.run_cell("@deco\\ndef step(x):\\n    return x * 2\\n")
        shell.run_cell("from daskperiment.code import capture_source")
        result = shell.run_cell("snap = capture_source(step)")
        assert result.success
        print(repr(shell.user_ns["snap"]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=True,
    ).stdout
    assert out.strip().splitlines()[-1] == repr(
        CodeSnapshot("step", "@deco\ndef step(x):\n    return x * 2\n", True)
    )


EXEC_SOURCE = """\
def made_by_exec(x, *, scale=2.5, label=("a", None)):
    words = {"alpha", "beta", "gamma", "delta"}
    def inner(y):
        return y in words
    try:
        return [inner(w) for w in x], scale, label
    except TypeError:
        return None
"""

PRINT_EXEC_SNAPSHOT = f"""
from daskperiment.code import capture_source
ns = {{}}
exec({EXEC_SOURCE!r}, ns)
snap = capture_source(ns["made_by_exec"])
print(snap.exact)
print(snap.source, end="")
"""


def test_exec_function_falls_back_to_bytecode_text() -> None:
    ns: dict[str, object] = {}
    exec(EXEC_SOURCE, ns)
    snap = capture_source(ns["made_by_exec"])  # type: ignore[arg-type]
    assert snap.exact is False
    assert snap.name == "made_by_exec"
    assert snap.source.startswith("# source of made_by_exec is not available")
    assert "code inner" in snap.source
    assert "0x" not in snap.source  # no object addresses

    changed: dict[str, object] = {}
    exec(EXEC_SOURCE.replace("scale=2.5", "scale=3.5"), changed)
    assert capture_source(changed["made_by_exec"]).source != snap.source  # type: ignore[arg-type]
    moved: dict[str, object] = {}
    exec("\n\n\n" + EXEC_SOURCE, moved)
    assert capture_source(moved["made_by_exec"]).source == snap.source  # type: ignore[arg-type]


def test_bytecode_text_and_digest_are_the_same_in_every_process() -> None:
    outputs = []
    for seed in ("1", "2", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", PRINT_EXEC_SNAPSHOT],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=60,
            check=True,
        )
        outputs.append(proc.stdout)
    assert outputs[0].startswith("False\n")
    # A set literal is a frozenset constant whose iteration order follows the hash seed.
    assert "const: frozenset({'alpha', 'beta', 'delta', 'gamma'})" in outputs[0]
    digests = {hashlib.sha256(out.encode()).hexdigest() for out in outputs}
    assert len(digests) == 1


def test_source_of_a_file_changed_since_import_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "edited_module_for_code_test.py"
    module.write_text("def original(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    imported = importlib.import_module("edited_module_for_code_test")
    try:
        assert capture_source(imported.original).exact
        module.write_text("def renamed(x):\n    return x * 100\n")
        os.utime(module, (1, 1))  # make sure linecache sees a different mtime
        snap = capture_source(imported.original)
    finally:
        sys.modules.pop("edited_module_for_code_test", None)
    assert snap.exact is False
    assert "x * 100" not in snap.source
    assert snap.source.startswith("# source of original is not available")


def test_builtin_without_code_still_gives_a_snapshot() -> None:
    snap = capture_source(len)
    assert snap.exact is False
    assert snap.name == "len"
    assert "builtin_function_or_method" in snap.source
