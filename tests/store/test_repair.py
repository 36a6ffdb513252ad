"""Store.repair: replace a damaged object file from a value that encodes to its oid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import daskperiment_store as store
from daskperiment_store.errors import CorruptObject, ReadOnlyStore
from daskperiment_store.objfile import object_key


def test_repair_replaces_a_damaged_object_file(tmp_path: Path) -> None:
    s = store.open(tmp_path / "s")
    value = np.arange(1000.0)
    oid = s.put(value)
    path = tmp_path / "s" / object_key(oid)
    damaged = bytearray(path.read_bytes())
    damaged[-1] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptObject):
        s.get(oid)
    assert s.put(value) == oid  # put skips an object that exists, damaged or not
    with pytest.raises(CorruptObject):
        s.get(oid)
    assert s.repair(oid, value) is True
    np.testing.assert_array_equal(s.get(oid), value)
    assert store.open(tmp_path / "s").fsck().ok


def test_repair_refuses_a_value_of_another_oid(tmp_path: Path) -> None:
    s = store.open(tmp_path / "s")
    oid = s.put({"a": 1})
    before = (tmp_path / "s" / object_key(oid)).read_bytes()
    assert s.repair(oid, {"a": 2}) is False
    assert (tmp_path / "s" / object_key(oid)).read_bytes() == before


def test_repair_on_a_read_only_store_is_refused(tmp_path: Path) -> None:
    oid = store.open(tmp_path / "s").put({"a": 1})
    with pytest.raises(ReadOnlyStore):
        store.open(tmp_path / "s", read_only=True).repair(oid, {"a": 1})
