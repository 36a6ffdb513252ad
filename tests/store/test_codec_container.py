"""The ``container`` kind: dicts/lists/tuples of arrays, frames and scalars as linked objects.

Round trips are exact (types all the way down), each element is its own object (stored once
however many containers hold it), nothing is pickled, and the store's link-following tools
(gc, fsck, bundles) see the elements.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as hst

import daskperiment_store as store
import tests.hypothesis_profiles  # noqa: F401  (loads the shared "ci" profile)
from daskperiment_store.codec import digest
from daskperiment_store.errors import EncodeError


def same(a: object, b: object) -> None:
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a) == list(b) or sorted(a) == sorted(b)
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b)
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a == b
    else:
        assert a == b


@pytest.fixture
def st(tmp_path: Path) -> store.Store:
    return store.open(tmp_path / "s")


def nested() -> dict:
    frame = pd.DataFrame({"x": np.arange(4), "y": list("abcd")})
    return {
        "frames": {"train": frame, "test": frame.iloc[:2]},
        "arrays": [np.arange(3.0), (np.zeros((2, 2), dtype="i4"), b"raw")],
        "scalars": {"auc": np.float64(0.91), "n": np.int32(7), "name": "run", "ok": True},
        "series": pd.Series([1.5, 2.5], name="s"),
        "empty": [],
        "none": None,
    }


def test_nested_containers_round_trip_exactly_without_pickle(st: store.Store) -> None:
    value = nested()
    oid = st.put(value)
    assert st.info(oid).kind == "container"
    assert digest(value) == oid  # the digest without storing is the stored oid
    same(st.get(oid), value)
    kinds = {st.info(link).kind for link in st.links(oid)}
    assert kinds <= {"ndarray", "pandas", "bytes"}  # every element its own, none a pickle
    assert len(st.links(oid)) == 8  # 2 frames, 2 arrays, bytes, 2 scalars, a series


def test_each_element_is_stored_once(st: store.Store) -> None:
    big = pd.DataFrame({"v": np.arange(10_000.0)})
    first = st.put({"a": big, "b": np.arange(5)})
    before = set(st.walk([first])) if hasattr(st, "walk") else None
    second = st.put({"again": big, "b": np.arange(5), "c": np.ones(2)})
    shared = set(st.links(first)) & set(st.links(second))
    assert len(shared) == 2  # the frame and the array: the same objects
    assert before is None or len(set(st.walk([second])) - before) == 2  # c and the container


def test_elements_are_hashed_from_the_arrays_own_memory() -> None:
    array = np.arange(50_000, dtype=np.float64)
    enc = store.codec.encode({"w": array})
    assert enc.kind == "container"
    ((_, child),) = enc.children
    views = [np.asarray(c) for c in child.chunks if isinstance(c, memoryview)]
    assert any(np.shares_memory(v, array) for v in views)


def test_dict_order_does_not_change_the_digest() -> None:
    a = np.arange(3)
    assert digest({"x": a, "y": 1}) == digest({"y": 1, "x": a})
    assert digest([a, 1]) != digest((a, 1))  # list and tuple stay distinct


def test_numpy_scalar_and_zero_d_array_stay_distinct(st: store.Store) -> None:
    value = {"scalar": np.float64(1.0), "array": np.array(1.0)}
    back = st.get(st.put(value))
    assert type(back["scalar"]) is np.float64
    assert type(back["array"]) is np.ndarray and back["array"].shape == ()


@pytest.mark.parametrize(
    "value",
    [{1: np.arange(2)}, {"a": np.arange(2), "b": {1, 2}}, [np.arange(2), object()]],
    ids=["int-key", "set-leaf", "object-leaf"],
)
def test_what_is_not_a_container_still_pickles(st: store.Store, value: object) -> None:
    assert st.info(st.put(value)).kind == "pickle"


def test_a_link_inside_is_refused_as_before(st: store.Store) -> None:
    with pytest.raises(EncodeError, match="Link"):
        st.put({"a": np.arange(2), "l": store.Link("0" * 32)})


def test_gc_keeps_elements_of_a_referenced_container(st: store.Store) -> None:
    oid = st.put({"a": np.arange(100), "b": pd.Series([1.0])})
    st.refs.set("keep", oid)
    st.put(np.arange(7))  # unreachable
    report = st.gc(grace=0)
    assert len(report.objects_removed) == 1
    assert st.get(oid)["a"].sum() == 4950


def test_fsck_reports_a_missing_element(st: store.Store, tmp_path: Path) -> None:
    oid = st.put({"a": np.arange(100)})
    (element,) = st.links(oid)
    st.backend.delete(store.store.object_key(element))
    report = st.fsck()
    assert any(element in str(m) for m in report.missing_links)
    with pytest.raises(store.errors.ObjectNotFound):
        st.get(oid)


def test_container_travels_in_a_bundle(st: store.Store, tmp_path: Path) -> None:
    oid = st.put(nested())
    st.refs.set("experiments/x/trials/1", st.put({"result": store.Link(oid)}))
    path = tmp_path / "b.dpb"
    st.export_bundle(path, "experiments/x/")
    other = store.open(tmp_path / "other")
    other.import_bundle(path)
    same(other.get(oid), nested())


def test_element_kinds_are_checked_when_loading(st: store.Store) -> None:
    """A container whose link names a pickle (a hostile store) is refused, not unpickled."""
    evil = st.put({1: "int keys only pickle"})
    body = json.dumps({"a": {"$link": evil}}, separators=(",", ":")).encode()
    fake = store.codec.Encoded("container", [body], len(body))
    oid = fake.oid
    st._store_encoded(oid, "container", [body], len(body))
    with pytest.raises(store.errors.UnexpectedKind):
        st.get(oid)


arrays = hst.builds(
    lambda n, f: np.arange(n, dtype=f), hst.integers(0, 5), hst.sampled_from(["i8", "f4", "u1"])
)
leaves = hst.one_of(arrays, hst.integers(-5, 5), hst.text(max_size=3), hst.none())
trees = hst.recursive(
    leaves,
    lambda kids: hst.one_of(
        hst.lists(kids, max_size=3),
        hst.lists(kids, max_size=3).map(tuple),
        hst.dictionaries(hst.text(max_size=3), kids, max_size=3),
    ),
    max_leaves=8,
)


@given(trees)
def test_any_nested_tree_round_trips(value: object) -> None:
    st = store.open(store.MemoryBackend())
    oid = st.put(value)
    assert oid == digest(value)
    same(st.get(oid), value)
