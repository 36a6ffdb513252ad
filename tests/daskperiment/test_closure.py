"""Code closures: which local helpers a step's digest covers (daskperiment/provenance/closure.py)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

from daskperiment.provenance import closure

HELPERS = """
import functools
import json

import numpy as np

THRESH = 0.5
NAMES = ("a", "b")


def deco(f):
    @functools.wraps(f)
    def wrapper(*args):
        return f(*args)

    return wrapper


def in_lambda(x):
    return x + 1


def in_comprehension(x):
    return x * 2


def as_default(x):
    return x


def in_cell(x):
    return x


def hidden(x):
    return x


@deco
def decorated(x):
    return x - 1


class Base:
    def base_method(self):
        return 1


class Model(Base):
    def fit(self, x):
        return np.mean(x)

    @staticmethod
    def helper():
        return json.dumps({})


def make(inner):
    def made(x):
        return inner(x)

    return made


made = make(in_cell)
USES = (hidden,)
"""

MAIN = """
import helpers_cl as h


def lambda_step(x):
    f = lambda v: h.in_lambda(v) + h.THRESH
    return f(x)


def comprehension_step(xs):
    return [h.in_comprehension(v) for v in xs]


def default_step(x, fn=h.as_default):
    return fn(x)


def cell_step(x):
    return h.made(x)


def wrapped_step(x):
    return h.decorated(x)


def class_step(x):
    m = h.Model()
    return m.fit(x)


def dynamic_step(x):
    return getattr(h, "hid" + "den")(x)


def declared_step(x):
    h.USES
    return getattr(h, "hid" + "den")(x)


def plain_step(x):
    return x
"""


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    (tmp_path / "helpers_cl.py").write_text(HELPERS)
    (tmp_path / "main_cl.py").write_text(MAIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("helpers_cl", "main_cl"):
        sys.modules.pop(name, None)
    main = importlib.import_module("main_cl")
    yield main, sys.modules["helpers_cl"]
    for name in ("helpers_cl", "main_cl"):
        sys.modules.pop(name, None)


def names(func: Any) -> list[str]:
    return sorted(closure.compute(func).entries)


def test_nested_code_defaults_cells_and_wrapped_helpers(modules: Any) -> None:
    main, _ = modules
    assert names(main.lambda_step) == ["helpers_cl.THRESH", "helpers_cl.in_lambda"]
    assert names(main.comprehension_step) == ["helpers_cl.in_comprehension"]
    assert names(main.default_step) == ["helpers_cl.as_default"]
    assert names(main.cell_step) == ["helpers_cl.in_cell", "helpers_cl.make.<locals>.made"]
    assert names(main.wrapped_step) == ["helpers_cl.decorated"]
    assert names(main.plain_step) == []


def test_classes_bring_their_methods_bases_and_libraries(modules: Any) -> None:
    main, _ = modules
    found = closure.compute(main.class_step)
    assert "helpers_cl.Model" in found.entries and "helpers_cl.Base" in found.entries
    assert "def fit(self, x):" in found.entries["helpers_cl.Model"]
    assert set(found.libraries) == {"numpy"}  # json is the standard library: no version


def test_dynamic_lookups_escape_unless_declared(modules: Any) -> None:
    main, _ = modules
    assert names(main.dynamic_step) == []
    assert names(main.declared_step) == ["helpers_cl.hidden"]


def test_a_redefined_helper_changes_the_key_in_the_same_process(modules: Any) -> None:
    main, helpers = modules
    before = closure.of(main.lambda_step)
    assert closure.of(main.lambda_step) is before  # revalidated, not recomputed
    namespace: dict[str, Any] = {}
    exec("def in_lambda(x):\n    return x + 2\n", namespace)  # a notebook cell run again
    helpers.in_lambda = namespace["in_lambda"]
    after = closure.of(main.lambda_step)
    assert after is not before and after.key != before.key
    helpers.THRESH = 0.7
    assert closure.of(main.lambda_step).key != after.key


def test_the_key_is_the_same_in_another_interpreter(modules: Any, tmp_path: Path) -> None:
    import subprocess

    main, _ = modules
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import main_cl;"
        "from daskperiment.provenance import closure;"
        "print(closure.compute(main_cl.class_step).key)"
    )
    repo = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": repo, "PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == closure.compute(main.class_step).key


def test_an_object_that_cannot_be_followed_is_a_warning_not_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Hostile:
        def __getattribute__(self, name: str) -> Any:
            raise RuntimeError("no attributes here")

    def step(x: int) -> int:
        return x

    step.__wrapped__ = Hostile()  # type: ignore[attr-defined]
    found = closure.of(step)
    assert list(found.entries) == ["<unavailable>"]
    assert "cannot be followed" in caplog.text
