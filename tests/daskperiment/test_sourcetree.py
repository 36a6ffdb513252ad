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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_an_unchanged_tree_is_reused_without_looking_at_each_file(
    project: Path, stat_calls: Any
) -> None:
    st = store.open(store.MemoryBackend())
    tree = sourcetree.SourceTree()
    first = tree.capture(st)
    files = [project / "main.py", project / "mod_st.py"]
    stats = stat_calls(files)
    for _ in range(5):
        assert tree.capture(st) == first
    assert stats == []  # nothing changed: no file was looked at
    (project / "mod_st.py").write_text("VALUE = 'cccc'\n")
    second = tree.capture(st)
    assert second != first and stats  # the edit was noticed, then the files looked at
    assert tree_of(st, second)["mod_st.py"] == b"VALUE = 'cccc'\n"


def test_edits_renames_deletes_and_new_modules_are_seen_every_time(
    project: Path, tmp_path: Path
) -> None:
    """Whatever changes between two trials shows in the second one's tree, including an
    editor's save by rename, a write from another process and a module imported since."""
    import subprocess

    st = store.open(store.MemoryBackend())
    tree = sourcetree.SourceTree()
    path = project / "mod_st.py"
    tree.capture(st)
    for n in range(20):  # same size and a tight loop: the racy case, over and over
        path.write_text(f"VALUE = '{n:04d}'\n")
        assert tree_of(st, tree.capture(st))["mod_st.py"] == f"VALUE = '{n:04d}'\n".encode()
    saved = project / "mod_st.py.swp"
    saved.write_text("VALUE = 'renamed'\n")
    os.replace(saved, path)
    assert tree_of(st, tree.capture(st))["mod_st.py"] == b"VALUE = 'renamed'\n"
    script = f"open({str(path)!r}, 'w').write(\"VALUE = 'other process'\\n\")"
    subprocess.run([sys.executable, "-c", script], check=True)
    assert tree_of(st, tree.capture(st))["mod_st.py"] == b"VALUE = 'other process'\n"
    (project / "new_st.py").write_text("NEW = 1\n")
    try:
        importlib.import_module("new_st")
        assert sorted(tree_of(st, tree.capture(st))) == ["main.py", "mod_st.py", "new_st.py"]
        (project / "new_st.py").unlink()
        assert sorted(tree_of(st, tree.capture(st))) == ["main.py", "mod_st.py"]
    finally:
        sys.modules.pop("new_st", None)


def test_without_inotify_every_trial_looks_at_the_files(
    project: Path, monkeypatch: pytest.MonkeyPatch, stat_calls: Any
) -> None:
    from daskperiment.environment import watch

    def unavailable(paths: Any) -> Any:
        raise OSError("no inotify here")

    monkeypatch.setattr(watch, "InotifyWatch", unavailable)
    st = store.open(store.MemoryBackend())
    tree = sourcetree.SourceTree()
    first = tree.capture(st)
    stats = stat_calls([project / "mod_st.py"])
    assert tree.capture(st) == first and stats  # looked at again
    (project / "mod_st.py").write_text("VALUE = 'dddd'\n")
    assert tree_of(st, tree.capture(st))["mod_st.py"] == b"VALUE = 'dddd'\n"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_sees_its_own_edits(project: Path) -> None:
    """A child shares its parent's inotify queue; it must not trust the parent's watch."""
    st = store.open(store.MemoryBackend())
    tree = sourcetree.SourceTree()
    tree.capture(st)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: edit, capture, report
        try:
            (project / "mod_st.py").write_text("VALUE = 'child'\n")
            ok = tree_of(st, tree.capture(st))["mod_st.py"] == b"VALUE = 'child'\n"
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    os.close(read)
    assert tree_of(st, tree.capture(st))["mod_st.py"] == b"VALUE = 'child'\n"
