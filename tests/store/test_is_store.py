"""``daskperiment_store.is_store``: whether a location holds a store, never creating one."""

from __future__ import annotations

from pathlib import Path

import daskperiment_store as store


def test_a_local_store_is_one_and_nothing_is_created_elsewhere(tmp_path: Path) -> None:
    root = tmp_path / "st"
    assert not store.is_store(root)  # missing
    assert not root.exists()
    root.mkdir()
    (root / "notes.txt").write_text("not a store")
    assert not store.is_store(root)  # a directory without a store
    assert not store.is_store(root / "notes.txt")  # a file
    (root / "notes.txt").unlink()
    st = store.open(root)
    assert store.is_store(root) and store.is_store(str(root)) and store.is_store(f"file://{root}")
    assert store.is_store(st) and store.is_store(st.backend)


def test_a_memory_url_is_a_store_once_opened() -> None:
    url = "memory://is-store-test"
    assert not store.is_store(url)
    store.open(url)
    assert store.is_store(url)
