"""Typed reads: ``Store.get(oid, kinds=...)`` refuses other kinds from the header alone, and
``import_bundle(check=...)`` can refuse an import before any ref is created."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import daskperiment_store as store
from daskperiment_store.store import object_key
from tests.hostile import plant_pickle


def test_a_pickle_read_as_json_is_refused_before_it_runs(tmp_path: Path) -> None:
    st = store.open(tmp_path / "s", create=True)
    marker = tmp_path / "ran"
    evil = plant_pickle(st, marker)
    with pytest.raises(store.UnexpectedKind) as caught:
        st.get(evil, kinds={"json"})
    exc = caught.value
    assert isinstance(exc, store.StoreError) and isinstance(exc, ValueError)
    assert (exc.oid, exc.kind, exc.expected) == (evil, "pickle", ("json",))
    assert "malformed or hostile" in str(exc) and "nothing ran" in str(exc)
    with pytest.raises(store.UnexpectedKind, match="'ndarray' or 'pandas'"):
        st.get(evil, kinds={"pandas", "ndarray"})
    assert not marker.exists()
    st.get(evil)  # no kinds: the caller asked for anything, pickles included
    assert marker.exists()


def test_accepted_kinds_decode_as_before(tmp_path: Path) -> None:
    st = store.open(tmp_path / "s", create=True)
    assert st.get(st.put({"a": [1, 2]}), kinds={"json"}) == {"a": [1, 2]}
    array = np.arange(5.0)
    assert (st.get(st.put(array), kinds=frozenset({"ndarray", "pandas"})) == array).all()


def test_the_kind_is_checked_from_the_header_before_the_payload(tmp_path: Path) -> None:
    st = store.open(tmp_path / "s", create=True)
    oid = st.put(np.arange(1000))
    path = Path(st.backend.root) / object_key(oid)
    data = bytearray(path.read_bytes())
    data[-8:] = b"\xff" * 8  # a damaged payload: a full read would report corruption
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(store.UnexpectedKind):
        st.get(oid, kinds={"json"})
    with pytest.raises(store.CorruptObject):
        st.get(oid, kinds={"ndarray"})


def test_import_check_refuses_before_any_ref_is_created(tmp_path: Path) -> None:
    src = store.open(tmp_path / "src", create=True)
    src.refs.set("a/1", src.put({"x": 1}))
    src.export_bundle(tmp_path / "b.dpb", "")
    dst = store.open(tmp_path / "dst", create=True)
    seen = []

    def check(refs: dict) -> None:
        seen.append(dict(refs))
        assert all(dst.has(oid) for oid in refs.values())  # objects are there, refs not yet
        assert dst.refs.list("") == {}
        raise ValueError("refused by the caller")

    with pytest.raises(ValueError, match="refused by the caller"):
        dst.import_bundle(tmp_path / "b.dpb", check=check)
    assert seen == [{"a/1": src.refs.get("a/1")}]
    assert dst.refs.list("") == {}
    report = dst.import_bundle(tmp_path / "b.dpb", check=lambda refs: None)
    assert report.refs_updated == ["a/1"]


def test_push_check_refuses_before_anything_is_copied(tmp_path: Path) -> None:
    from daskperiment_store import sync

    src = store.open(tmp_path / "src", create=True)
    src.refs.set("a/1", src.put({"x": 1}))
    dst = store.open(tmp_path / "dst", create=True)

    def check(selected: dict) -> None:
        assert selected == {"a/1": src.refs.get("a/1")}
        raise ValueError("moved")

    with pytest.raises(ValueError, match="moved"):
        sync.push(src, dst, ["a/1"], check=check)
    assert dst.refs.list("") == {} and list(dst.iter_oids()) == []
    assert sync.push(src, dst, ["a/1"], check=lambda s: None).refs_updated == ["a/1"]
