"""Codecs: every kind round-trips to an equal value of the same type, and digests are canonical."""

from __future__ import annotations

import collections
import math
import pickle
import threading
from dataclasses import FrozenInstanceError
from typing import Any

import cloudpickle
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tests.hypothesis_profiles  # noqa: F401  (loads the "ci" profile)
from daskperiment_store.codec import DecodeError, Link, decode, digest, encode, find_links
from daskperiment_store.digest import hash_chunks
from daskperiment_store.errors import EncodeError, InvalidOid, StoreError

OID_A = "a" * 32
OID_B = "0123456789abcdef" * 2


def body_of(value: Any) -> tuple[str, bytes]:
    enc = encode(value)
    body = b"".join(bytes(chunk) for chunk in enc.chunks)
    assert len(body) == enc.size
    return enc.kind, body


def roundtrip(value: Any, writable: bool = False) -> tuple[str, Any]:
    kind, body = body_of(value)
    assert digest(value) == hash_chunks(kind, [body])
    return kind, decode(kind, bytearray(body) if writable else body)


def assert_same(a: Any, b: Any) -> None:
    """Equal, with equal types all the way down; nan equals nan; -0.0 differs from 0.0."""
    assert type(a) is type(b), (a, b)
    if type(a) is float:
        assert (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        ), (a, b)
    elif type(a) in (list, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif type(a) is dict:
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    else:
        assert a == b


# --- json ------------------------------------------------------------------------------------

JSON_VALUES = [
    {},
    [],
    (),
    "",
    "unicode: é ✓ 😀 \u2028 \x00",
    0,
    -1,
    2**64,
    2**2048 - 1,
    2**2048,
    -(2**5000),
    1.5,
    -0.0,
    0.1,
    1e300,
    5e-324,
    float("nan"),
    float("inf"),
    float("-inf"),
    True,
    False,
    None,
    Link(OID_A),
    {"a": [1, (2, (3,)), {"b": None}], "c": ()},
    [True, 1, 1.0, "1"],
    {"$tuple": [1]},
    {"$link": "not an oid"},
    {"$": 1},
    {"$dict": ["x", 1]},
    {"$x": 1, "y": 2},
    {"nested": {"$float": "nan"}},
    (Link(OID_A), [Link(OID_B)]),
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
def test_json_values_round_trip_exactly(value):
    kind, out = roundtrip(value)
    assert kind == "json"
    assert_same(out, value)


def test_json_body_is_canonical_text():
    assert body_of({"b": 1, "a": [2.0, None, True]}) == ("json", b'{"a":[2.0,null,true],"b":1}')
    assert body_of((1, "é"))[1] == '{"$tuple":[1,"é"]}'.encode()
    assert body_of(float("-inf"))[1] == b'{"$float":"-inf"}'
    assert body_of(-0.0)[1] == b"-0.0"
    assert body_of(Link(OID_A))[1] == b'{"$link":"' + OID_A.encode() + b'"}'
    assert body_of({"$tuple": 5})[1] == b'{"$dict":["$tuple",5]}'
    assert body_of(-(2**2049))[1] == b'{"$int":"-2' + b"0" * 512 + b'"}'


def test_json_keeps_bool_int_float_tuple_list_apart():
    values = [1, True, 1.0, "1", [1], (1,), {"1": 1}, None, 0, False, 0.0, -0.0]
    assert len({digest(v) for v in values}) == len(values)


def test_json_digest_ignores_dict_insertion_order():
    assert digest({"a": 1, "b": {"x": 1, "y": 2}}) == digest({"b": {"y": 2, "x": 1}, "a": 1})


def test_every_nan_has_one_digest():
    other_nan = np.frombuffer(np.array([0x7FF8000000000001], dtype="<u8").tobytes(), "<f8")[0]
    assert digest(float("nan")) == digest(float(other_nan)) == digest(-float("nan"))


NOT_JSON = [
    {1: "a"},
    {"a": {1, 2}},
    collections.OrderedDict(a=1),
    np.float64(1.5),
    np.int64(3),
    [1, {2, 3}],
    "lone surrogate \ud800",
    frozenset({"x"}),
]


@pytest.mark.parametrize("value", NOT_JSON, ids=repr)
def test_values_outside_json_fall_back_to_pickle(value):
    kind, out = roundtrip(value)
    assert kind == "pickle"
    assert out == value
    assert type(out) is type(value)


def test_str_and_dict_subclasses_keep_their_type_through_pickle():
    class Name(str):
        pass

    kind, out = roundtrip({"k": Name("v")})
    assert kind == "pickle"
    assert type(out["k"]) is Name


def test_cyclic_value_goes_to_pickle():
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    kind, out = roundtrip(cyclic)
    assert kind == "pickle"
    assert out[1] is out


@pytest.mark.parametrize(
    "body",
    [b'{"$set":[1]}', b'{"$float":"1.5"}', b'{"$int":"0x10"}', b'{"$dict":[1,2]}', b"[1,"],
)
def test_malformed_or_unknown_json_is_a_decode_error(body):
    with pytest.raises(DecodeError) as info:
        decode("json", body)
    assert isinstance(info.value, StoreError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "body, expected",
    [
        # "$" written as \u0024 is still an escape key (bodies are decoded without the
        # escape hook only when no key can start with "$")
        (b'{"\\u0024link":"' + b"a" * 32 + b'"}', Link("a" * 32)),
        (b'[{"\\u0024tuple":[1,2]},{"$float":"nan"}]', [(1, 2), math.nan]),
        (
            b'{"a":{"b":[1,2.5,"x$"]},"$":1,"c":null}',
            {"a": {"b": [1, 2.5, "x$"]}, "$": 1, "c": None},
        ),
    ],
)
def test_escapes_are_undone_however_the_dollar_is_written(body, expected):
    out = decode("json", body)
    if isinstance(expected, list) and isinstance(expected[-1], float):
        assert out[0] == expected[0] and math.isnan(out[1])
    else:
        assert out == expected


def test_a_dollar_spelled_out_in_a_malformed_escape_is_still_refused():
    with pytest.raises(DecodeError, match="unknown or malformed escape"):
        decode("json", b'{"\\u0024set":[1]}')


def test_unknown_kind_is_a_decode_error():
    with pytest.raises(DecodeError, match="unknown object kind 'tree'"):
        decode("tree", b"")


# --- links -----------------------------------------------------------------------------------


def test_link_validates_and_compares_by_oid():
    with pytest.raises(InvalidOid):
        Link("A" * 32)
    assert Link(OID_A) == Link(OID_A) and Link(OID_A) != Link(OID_B)
    assert len({Link(OID_A), Link(OID_A), Link(OID_B)}) == 2
    with pytest.raises(FrozenInstanceError):
        Link(OID_A).oid = OID_B  # type: ignore[misc]


def test_find_links_lists_each_link_once_in_order():
    value = {
        "b": [Link(OID_B), (Link(OID_A),)],
        "a": Link(OID_A),
        "escaped": {"$dict": ["$link", OID_B]},
        "text": '{"$link": "' + "c" * 32 + '"}',
    }
    kind, body = body_of(value)
    assert find_links(kind, body) == [OID_A, OID_B]
    assert find_links(kind, memoryview(body)) == [OID_A, OID_B]


def test_find_links_is_empty_for_other_kinds_and_linkless_json():
    assert find_links(*body_of({"a": 1})) == []
    assert find_links("bytes", b'{"$link":"' + OID_A.encode() + b'"}') == []


def test_a_link_inside_a_pickled_value_is_refused():
    with pytest.raises(EncodeError, match="store.Link"):
        encode({"ref": Link(OID_A), "not json": {1, 2}})


# --- ndarray ---------------------------------------------------------------------------------

DTYPES = [
    "?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16",
    "M8[ns]", "M8[D]", "m8[s]", "U5", "S3", ">i4", ">f8", ">c16", ">U3", ">M8[ns]", "<u2",
]  # fmt: skip
SHAPES = [(), (0,), (3, 0), (5,), (2, 3), (2, 3, 4)]


def sample_array(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    n = math.prod(shape)
    base = np.arange(n) % 7
    if dtype[-2:] in ("U5", "U3", "S3"):
        return np.array([f"é{i}" if "U" in dtype else f"b{i}" for i in base], dtype).reshape(shape)
    return base.astype(dtype).reshape(shape)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_arrays_round_trip_with_dtype_and_shape(dtype, shape):
    array = sample_array(dtype, shape)
    kind, out = roundtrip(array)
    assert kind == "ndarray"
    assert type(out) is np.ndarray
    assert out.shape == array.shape
    assert out.dtype == array.dtype.newbyteorder("<")  # stored little-endian
    np.testing.assert_array_equal(out, array)


def test_float_specials_round_trip_bit_for_bit():
    array = np.array([np.nan, -0.0, np.inf, -np.inf, 5e-324], dtype="f8")
    _, out = roundtrip(array)
    assert out.tobytes() == array.tobytes()


def test_byte_order_and_layout_do_not_change_the_digest():
    array = np.arange(24, dtype="<i8").reshape(4, 6)
    strided = np.zeros((8, 12), dtype="<i8")
    strided[::2, ::2] = array
    same = [array.astype(">i8"), np.asfortranarray(array), strided[::2, ::2], array.T.copy().T]
    assert {digest(v) for v in same} == {digest(array)}
    assert digest(array) != digest(array.astype("i4"))
    assert digest(array) != digest(array.reshape(6, 4))


@given(
    hnp.arrays(
        dtype=st.sampled_from(["<f8", ">f8", "<i2", "?", "<c8", "<U2", "|S2", "<M8[s]"]),
        shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5),
    ),
    st.data(),
)
def test_property_layouts_hash_alike_and_round_trip(array, data):
    dim = data.draw(st.integers(0, array.ndim - 1))
    strided = np.repeat(array, 2, axis=dim).take(range(0, 2 * array.shape[dim], 2), axis=dim)
    variants = [np.asfortranarray(array), strided, array.astype(array.dtype.newbyteorder("S"))]
    assert {digest(v) for v in variants} == {digest(array)}
    _, out = roundtrip(array)
    assert out.tobytes() == np.ascontiguousarray(array.astype(out.dtype)).tobytes()
    assert out.shape == array.shape


def test_contiguous_array_is_encoded_without_a_copy():
    array = np.arange(100_000, dtype=np.float64)
    chunks = encode(array).chunks
    assert any(isinstance(c, memoryview) and np.shares_memory(np.asarray(c), array) for c in chunks)


def test_decoded_array_shares_a_writable_body_and_is_read_only_on_bytes():
    array = np.arange(1000, dtype=np.int32).reshape(10, 100)
    kind, body = body_of(array)
    writable = bytearray(body)
    out = decode(kind, writable)
    assert out.flags.writeable and out.flags.aligned
    assert np.shares_memory(out, np.frombuffer(writable, np.uint8))
    assert not decode(kind, body).flags.writeable


def test_misaligned_body_is_copied_to_an_aligned_array():
    array = np.arange(10, dtype=np.float64)
    kind, body = body_of(array)
    shifted = memoryview(bytearray(len(body) + 1))[1:]
    shifted[:] = body
    out = decode(kind, shifted)
    assert out.flags.aligned
    np.testing.assert_array_equal(out, array)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize(
    "make",
    [
        lambda: np.array([1, "a", None], dtype=object),
        lambda: np.zeros(3, dtype=[("x", "i4"), ("y", "f8")]),
        lambda: np.ones(3, dtype=np.longdouble),
        lambda: np.matrix([[1, 2]]),
        lambda: np.ma.masked_array([1, 2], mask=[0, 1]),
        pytest.param(
            lambda: np.array(["x"], dtype=np.dtypes.StringDType()),
            marks=pytest.mark.skipif(
                not hasattr(getattr(np, "dtypes", None), "StringDType"),
                reason="numpy < 2 has no StringDType",
            ),
        ),
    ],
    ids=["object", "structured", "longdouble", "matrix", "masked", "StringDType"],
)
def test_unsupported_arrays_fall_back_to_pickle(make):
    value = make()
    kind, out = roundtrip(value)
    assert kind == "pickle"
    assert type(out) is type(value) and out.dtype == value.dtype
    np.testing.assert_array_equal(out, value)


@pytest.mark.parametrize(
    "header, data",
    [
        (b'{"dtype":"<f8","shape":[2]}', b"\0" * 15),
        (b'{"dtype":"|O8","shape":[1]}', b"\0" * 8),
        (b'{"dtype":"<f8","shape":[-1]}', b""),
        (b'{"dtype":"<f8","shape":"2"}', b"\0" * 16),
        (b'{"dtype":"<V8","shape":[1]}', b"\0" * 8),
        (b"not json", b""),
    ],
)
def test_malformed_array_body_is_a_decode_error(header, data):
    body = header + b" " * (-(len(header) + 1) % 64) + b"\n" + data
    with pytest.raises(DecodeError):
        decode("ndarray", body)
    with pytest.raises(DecodeError):
        decode("ndarray", header)  # no header line at all


# --- bytes -----------------------------------------------------------------------------------


def test_bytes_like_values_round_trip_to_bytes_with_one_digest():
    data = bytes(range(256)) * 3
    for value in (data, bytearray(data), memoryview(data)):
        kind, out = roundtrip(value)
        assert (kind, type(out), out) == ("bytes", bytes, data)
    assert len({digest(data), digest(bytearray(data)), digest(memoryview(data))}) == 1
    assert digest(data) != digest(data.decode("latin-1"))


def test_non_contiguous_memoryview_is_encoded_in_logical_order():
    view = memoryview(np.arange(10, dtype=np.uint8))[::2]
    assert roundtrip(view) == ("bytes", bytes([0, 2, 4, 6, 8]))


# --- pickle ----------------------------------------------------------------------------------


class Holder:
    """A user object holding an array (pickled, with the array out of band)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Holder) and np.array_equal(self.array, other.array)


@pytest.mark.parametrize(
    "make",
    # (a dict of arrays alone is a container now: test_codec_container.py)
    [lambda a: {"w": a, "b": a + 1, "s": {1}}, Holder, lambda a: [a, {1: a}]],
    ids=["dict", "obj", "list"],
)
def test_pickle_keeps_large_buffers_out_of_band_without_copies(make):
    array = np.arange(50_000, dtype=np.float64)
    value = make(array)
    enc = encode(value)
    assert enc.kind == "pickle"
    views = [np.asarray(c) for c in enc.chunks if isinstance(c, memoryview)]
    assert any(np.shares_memory(v, array) for v in views)
    kind, out = roundtrip(value, writable=True)
    if isinstance(value, dict):
        np.testing.assert_array_equal(out["w"], array)
    elif isinstance(value, Holder):
        assert out == value
    else:
        np.testing.assert_array_equal(out[1][1], array)


def test_pickle_decoded_arrays_share_the_body_memory():
    array = np.arange(10_000, dtype=np.int64)
    kind, body = body_of({"x": array, 1: 2})
    writable = bytearray(body)
    out = decode(kind, writable)
    assert np.shares_memory(out["x"], np.frombuffer(writable, np.uint8))
    assert out["x"].flags.writeable


def test_local_functions_pickle_by_value():
    offset = 3
    kind, out = roundtrip(lambda x: x + offset)
    assert kind == "pickle" and out(1) == 4


def test_unencodable_value_raises_encode_error_naming_the_type():
    with pytest.raises(EncodeError, match=r"_thread\.lock") as info:
        encode({"lock": threading.Lock(), 1: 2})
    assert isinstance(info.value, TypeError) and isinstance(info.value, StoreError)


@pytest.mark.parametrize("body", [b"", b'{"buffers":[]}\n', b'{"buffers":[5]}\n' + b"abc"])
def test_malformed_pickle_body_is_a_decode_error(body):
    with pytest.raises(DecodeError):
        decode("pickle", body)


# --- nothing but pickle unpickles ------------------------------------------------------------


def test_decoding_json_ndarray_bytes_never_unpickles(monkeypatch):
    class Unpickled(Exception):
        pass

    def refuse(*args, **kwargs):
        raise Unpickled

    bodies = [
        body_of({"a": (1, 2.5, Link(OID_A))}),
        body_of(np.arange(6.0).reshape(2, 3)),
        body_of(b"raw"),
    ]
    pickled = body_of({1: 2})
    for module in (pickle, cloudpickle):
        for name in ("loads", "load", "Unpickler"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)
    for kind, body in bodies:
        decode(kind, body)
    with pytest.raises(Unpickled):  # the patch is effective
        decode(*pickled)


# --- properties ------------------------------------------------------------------------------

oids = st.text("0123456789abcdef", min_size=32, max_size=32)
keys = st.text(max_size=8) | st.sampled_from(["$tuple", "$link", "$dict", "$float", "$int", "$"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**3000), max_value=2**3000)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | oids.map(Link)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(keys, inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_property_json_values_round_trip_exactly(value):
    kind, out = roundtrip(value)
    assert kind == "json"
    assert_same(out, value)


def reordered(value: Any) -> Any:
    """The same value with every dict's insertion order reversed."""
    if type(value) is dict:
        return {k: reordered(value[k]) for k in reversed(list(value))}
    if type(value) in (list, tuple):
        return type(value)(reordered(v) for v in value)
    return value


@given(json_values)
def test_property_digest_ignores_dict_insertion_order(value):
    assert digest(reordered(value)) == digest(value)


@given(json_values)
def test_property_find_links_finds_exactly_the_links(value):
    expected: dict[str, None] = {}

    def collect(v: Any) -> None:
        if type(v) is Link:
            expected[v.oid] = None
        elif type(v) in (list, tuple):
            for item in v:
                collect(item)
        elif type(v) is dict:
            for item in v.values():
                collect(item)

    collect(value)
    assert sorted(find_links(*body_of(value))) == sorted(expected)
