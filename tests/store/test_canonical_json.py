"""The canonical JSON text (codec.canonical_json, the body of json objects) is the one the
format specifies, written independently here: a tree copied whole, then ``json.dumps``."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tests.hypothesis_profiles  # noqa: F401  (loads the "ci" profile)
from daskperiment_store import codec
from daskperiment_store.codec import Link, canonical_json, encode
from daskperiment_store.errors import EncodeError


def reference_tree(value: Any) -> Any:
    """docs/store-format.md section 5's translation, building a new tree every time."""
    cls = type(value)
    if cls in (str, bool) or value is None:
        return value
    if cls is int:
        return {"$int": format(value, "x")} if value.bit_length() > 2048 else value
    if cls is float:
        if math.isfinite(value):
            return value
        return {"$float": "nan" if value != value else ("inf" if value > 0 else "-inf")}
    if cls is list:
        return [reference_tree(x) for x in value]
    if cls is tuple:
        return {"$tuple": [reference_tree(x) for x in value]}
    if cls is Link:
        return {"$link": value.oid}
    if cls is dict:
        assert all(type(k) is str for k in value)
        out = {k: reference_tree(v) for k, v in value.items()}
        if len(out) == 1 and next(iter(out)).startswith("$"):
            ((k, v),) = out.items()
            return {"$dict": [k, v]}
        return out
    raise AssertionError(f"not plain data: {cls}")


def reference_text(value: Any) -> bytes:
    return json.dumps(
        reference_tree(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")


oids = st.text("0123456789abcdef", min_size=32, max_size=32)
keys = st.text(max_size=8) | st.sampled_from(["$tuple", "$link", "$dict", "$float", "$", "a"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**3000), max_value=2**3000)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text().filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
    | oids.map(Link)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(keys, inner, max_size=5)
    ),
    max_leaves=30,
)


@given(json_values)
def test_property_canonical_text_is_the_reference_text(value):
    before = copy.deepcopy(value)
    assert canonical_json(value) == reference_text(value)
    body = encode(value)
    assert body.kind == "json" and b"".join(bytes(c) for c in body.chunks) == reference_text(value)
    assert repr(value) == repr(before)  # encoding never changes the value it encodes


def test_escapes_deep_inside_values_that_need_none_elsewhere():
    shared = {"plain": [1, 2.5, "x"], "also": {"k": None}}
    value = {
        "a": [shared, [shared, {"$only": 1}]],
        "b": {"c": {"d": [1, 2, (3, 4)]}},
        "e": [float("nan"), 2**2049, Link("ab" * 16)],
        "f": shared,
    }
    text = canonical_json(value)
    assert text == reference_text(value)
    assert b'{"$dict":["$only",1]}' in text and b'{"$tuple":[3,4]}' in text
    assert value["a"][1][1] == {"$only": 1} and value["b"]["c"]["d"][2] == (3, 4)


class Text(str):
    pass


class Table(dict):
    pass


class Count(int):
    pass


@pytest.mark.parametrize(
    "value",
    [Text("a"), {"k": Text("a")}, [Table(a=1)], {"n": [Count(3)]}, {1: "int key"}, {"s": {1, 2}}],
)
def test_subclasses_and_other_types_are_not_plain_json(value):
    with pytest.raises(EncodeError, match="not plain JSON data"):
        canonical_json(value)
    assert encode(value).kind == "pickle"


def test_a_cycle_is_not_plain_json():
    value: list[Any] = [1]
    value.append(value)
    with pytest.raises(EncodeError):
        canonical_json(value)
    assert codec.encode({"c": value}).kind == "pickle"


def test_text_that_cannot_be_utf8_is_not_plain_json():
    with pytest.raises(EncodeError):
        canonical_json({"s": "lone \ud800"})
