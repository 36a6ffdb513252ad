"""The shape of the code: no import cycles inside a package, and store/ stands alone.

Imports are read with ``ast`` from the source files, module level and inside functions
alike (a function-level import is still a dependency); only imports under
``if TYPE_CHECKING:`` are left out, since they never run. :func:`import_graph` and
:func:`import_cycles` take a package directory, so each package gets its own test.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module_name(package_dir: Path, path: Path) -> str:
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of every node under an ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            for child in node.body:
                skipped.update(id(sub) for sub in ast.walk(child))
    return skipped


def imported_names(package_dir: Path, path: Path, *, type_checking: bool) -> Iterator[str]:
    """Absolute dotted names ``path`` imports: modules, and ``module.name`` for each name
    of a ``from`` import (which may itself be a module)."""
    module = _module_name(package_dir, path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = set() if type_checking else _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            yield source
            yield from (f"{source}.{alias.name}" for alias in node.names)


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """``{module: modules of the same package it imports}`` (TYPE_CHECKING imports left out).

    Importing ``a.b.c`` also runs ``a.b``'s ``__init__``, so a dependency on a submodule is
    also one on every package above it, up to (not including) the importer's own packages.
    """
    files = {_module_name(package_dir, p): p for p in sorted(package_dir.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets: set[str] = set()
        for name in imported_names(package_dir, path, type_checking=False):
            parts = name.split(".")
            for i in range(len(parts), 0, -1):
                candidate = ".".join(parts[:i])
                if candidate in files:
                    targets.add(candidate)
        own = {module.rsplit(".", k)[0] for k in range(module.count(".") + 1)}
        graph[module] = {t for t in targets if t != module and t not in own}
    return graph


def import_cycles(package_dir: Path) -> list[list[str]]:
    """Every group of modules of ``package_dir`` that import each other in a cycle (the
    strongly connected components with more than one module), sorted."""
    graph = import_graph(package_dir)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; packages are small enough to recurse
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def forbidden_imports(package_dir: Path, forbidden: set[str]) -> list[str]:
    """``"module imports package"`` for each module that imports (TYPE_CHECKING imports
    included) a top-level package in ``forbidden``."""
    found = set()
    for path in sorted(package_dir.rglob("*.py")):
        for name in imported_names(package_dir, path, type_checking=True):
            if name.split(".")[0] in forbidden:
                found.add(f"{_module_name(package_dir, path)} imports {name.split('.')[0]}")
    return sorted(found)


def _describe(cycles: list[list[str]], graph: dict[str, set[str]]) -> str:
    lines = []
    for group in cycles:
        lines.append("cycle: " + " <-> ".join(group))
        for module in group:
            inside = sorted(graph[module] & set(group))
            lines.append(f"    {module} imports {', '.join(inside)}")
    return "\n".join(lines)


# -- the packages ---------------------------------------------------------------------------


def test_store_has_no_import_cycles() -> None:
    package = ROOT / "store"
    cycles = import_cycles(package)
    assert not cycles, _describe(cycles, import_graph(package))


def test_store_never_imports_dask_or_daskperiment() -> None:
    assert forbidden_imports(ROOT / "store", {"dask", "distributed", "daskperiment"}) == []


def test_daskperiment_has_no_import_cycles() -> None:
    package = ROOT / "daskperiment"
    cycles = import_cycles(package)
    assert not cycles, _describe(cycles, import_graph(package))


@pytest.mark.parametrize("package", ["store", "daskperiment"])
def test_no_module_is_over_600_lines(package: str) -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in sorted((ROOT / package).rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 600
    }
    assert long == {}, "split these modules by concern"


def test_the_trial_record_and_ref_names_depend_on_nothing_of_daskperiment() -> None:
    """record.py is what every reader and writer agrees on: it imports none of them."""
    assert import_graph(ROOT / "daskperiment")["daskperiment.record"] == set()


# -- the checker itself -----------------------------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_the_checker_finds_cycles_through_function_level_and_package_imports(
    tmp_path: Path,
) -> None:
    root = _package(
        tmp_path,
        {
            "a.py": "from . import b\n",
            "b.py": "def f():\n    from .sub.c import x\n",
            "sub/__init__.py": "",
            "sub/c.py": "import pkg.a\nx = 1\n",
            "d.py": "from .a import b\n",
        },
    )
    assert import_cycles(root) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
    assert "pkg.b imports pkg.sub.c" in _describe(import_cycles(root), import_graph(root))


def test_the_checker_ignores_type_checking_imports_for_cycles_only(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "a.py": "from . import b\n",
            "b.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from .a import A\n"
                "    import dask\n"
            ),
        },
    )
    assert import_cycles(root) == []
    assert forbidden_imports(root, {"dask"}) == ["pkg.b imports dask"]


@pytest.mark.parametrize(
    "source",
    ["import dask.array\n", "from daskperiment import Experiment\n", "def f():\n    import dask\n"],
)
def test_the_checker_finds_forbidden_imports_anywhere(tmp_path: Path, source: str) -> None:
    root = _package(tmp_path, {"m.py": source})
    assert len(forbidden_imports(root, {"dask", "daskperiment"})) == 1
