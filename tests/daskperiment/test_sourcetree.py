"""The source tree's stat cache and what it includes (daskperiment/provenance/sourcetree.py)."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import pytest

import daskperiment_store as store
from daskperiment.provenance import sourcetree


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    root = tmp_path / "project"
    root.mkdir()
    (root / "main.py").write_text("print('main')\n")
    (root / "mod_st.py").write_text("VALUE = 'aaaa'\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "far_st.py").write_text("X = 1\n")
    monkeypatch.setattr(sourcetree, "_script", str(root / "main.py"))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.syspath_prepend(str(outside))
    for name in ("mod_st", "far_st"):
        sys.modules.pop(name, None)
    importlib.import_module("mod_st")
    importlib.import_module("far_st")
    yield root
    for name in ("mod_st", "far_st"):
        sys.modules.pop(name, None)


def tree_of(st: store.Store, oid: str) -> dict[str, Any]:
    tree = st.get(oid)
    return {path: st.get(link.oid) for path, link in tree["files"].items()}


def test_only_local_modules_under_the_root(project: Path) -> None:
    st = store.open(store.MemoryBackend())
    oid = sourcetree.SourceTree().capture(st)
    files = tree_of(st, oid)
    assert sorted(files) == ["main.py", "mod_st.py"]  # far_st lies outside the root
    assert files["mod_st.py"] == b"VALUE = 'aaaa'\n"
    assert st.get(oid)["main"] == "main.py" and st.get(oid)["kind"] == "script"


def test_a_same_size_rewrite_within_one_tick_is_seen(project: Path) -> None:
    st = store.open(store.MemoryBackend())
    tree = sourcetree.SourceTree()
    first = tree.capture(st)
    assert tree.capture(st) == first
    path = project / "mod_st.py"
    stat = path.stat()
    path.write_text("VALUE = 'bbbb'\n")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime: one tick
    second = tree.capture(st)
    assert second != first
    assert tree_of(st, second)["mod_st.py"] == b"VALUE = 'bbbb'\n"


def test_a_vanished_module_file_is_left_out_not_an_error(project: Path) -> None:
    st = store.open(store.MemoryBackend())
    (project / "mod_st.py").unlink()
    oid = sourcetree.SourceTree().capture(st)
    assert sorted(tree_of(st, oid)) == ["main.py"]


def test_each_store_gets_its_own_copy_of_the_tree(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trees written to one store are written again to the next, even at a reused id()."""
    import daskperiment

    for n in range(3):
        ex = daskperiment.Experiment(f"tree_pj{n}", backend=store.MemoryBackend())

        @ex.result
        def score(x: int) -> int:
            return x

        score(n).compute(seed=1)
        done = ex.checkout(1, tmp_path / f"co{n}")
        assert sorted(done.files) == ["main.py", "mod_st.py"]
        assert (tmp_path / f"co{n}" / "main.py").read_bytes() == b"print('main')\n"
        del ex
