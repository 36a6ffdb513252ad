"""Writes never recreate a store whose directory was removed while it was open.

Recreating it would leave a directory of objects and refs without the ``config`` every
store starts with, which no later ``daskperiment_store.open`` could read. The write fails with
:class:`StoreGone` instead, and opening the location again makes a proper new store.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import daskperiment_store as store
from daskperiment_store.errors import StoreGone, StoreNotFound


def _local(path: Path) -> store.Store:
    return store.open(path)


def _fsspec_file(path: Path) -> store.Store:
    return store.open(store.FsspecBackend(f"file://{path}"))


OPENERS = {"local": _local, "fsspec-file": _fsspec_file}


@pytest.fixture(params=list(OPENERS))
def opener(request: pytest.FixtureRequest) -> Callable[[Path], store.Store]:
    return OPENERS[request.param]


WRITES: dict[str, Callable[[store.Store, str], object]] = {
    "put": lambda s, oid: s.put({"new": "value"}),
    "ref create": lambda s, oid: s.refs.create("runs/2", oid),
    "ref set": lambda s, oid: s.refs.set("runs/1", oid),
    "put_stored": lambda s, oid: _copy_in(s),
}


def _copy_in(s: store.Store) -> bool:
    """Copy an object another store holds into ``s`` (as push and bundle import do)."""
    other = store.open(store.MemoryBackend())
    oid = other.put({"from": "elsewhere"})
    return s.put_stored(oid, other.get_stored(oid))


@pytest.mark.parametrize("write", list(WRITES))
def test_a_write_to_a_removed_store_fails_and_recreates_nothing(
    tmp_path: Path, opener: Callable[[Path], store.Store], write: str
) -> None:
    root = tmp_path / "s"
    s = opener(root)
    oid = s.put({"trial": 1})
    s.refs.create("runs/1", oid)
    shutil.rmtree(root)
    with pytest.raises(StoreGone) as info:
        WRITES[write](s, oid)
    assert not root.exists()
    assert isinstance(info.value, StoreNotFound) and isinstance(info.value, FileNotFoundError)
    assert "is gone" in str(info.value) and "nothing was written" in str(info.value)
    assert str(root) in str(info.value)


def test_opening_the_location_again_makes_a_new_store(tmp_path: Path) -> None:
    root = tmp_path / "s"
    old = store.open(root)
    old.refs.create("runs/1", old.put({"trial": 1}))
    shutil.rmtree(root)
    with pytest.raises(StoreGone):
        old.refs.create("runs/2", old.put({"trial": 2}))
    new = store.open(root)
    new.refs.create("runs/1", new.put({"trial": "again"}))
    assert new.get(new.refs.get("runs/1")) == {"trial": "again"}
    assert (root / "config").is_file()
    assert store.open(root, create=False).fsck().ok


def test_reads_of_a_removed_store_say_not_found(tmp_path: Path) -> None:
    root = tmp_path / "s"
    s = store.open(root)
    oid = s.put({"trial": 1})
    shutil.rmtree(root)
    with pytest.raises(KeyError):
        s.get(oid)
    assert s.refs.list("") == {}
    assert not root.exists()
