"""The pandas codec: frames, series and indexes round-trip exactly without pickle."""

from __future__ import annotations

import datetime
import pickle
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import pandas as hpd

import tests.hypothesis_profiles  # noqa: F401  (loads the "ci" profile)
from daskperiment_store.codec import DecodeError, decode, digest, encode


def body_of(value: Any) -> tuple[str, bytes]:
    enc = encode(value)
    body = b"".join(bytes(chunk) for chunk in enc.chunks)
    assert len(body) == enc.size
    return enc.kind, body


def roundtrip(value: Any, writable: bool = True) -> tuple[str, Any]:
    kind, body = body_of(value)
    return kind, decode(kind, bytearray(body) if writable else body)


def assert_identical(out: Any, value: Any) -> None:
    assert type(out) is type(value)
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(out, value, check_exact=True, check_freq=True)
    elif isinstance(value, pd.Series):
        pd.testing.assert_series_equal(out, value, check_exact=True, check_freq=True)
    else:
        pd.testing.assert_index_equal(out, value, exact=True, check_exact=True)
    if not isinstance(value, pd.Index):
        assert out.attrs == value.attrs


def _with_attrs() -> pd.Series:
    series = pd.Series([1, 2], name="x")
    series.attrs = {"unit": "m", "scale": (1, 2.5)}
    return series


CASES = {
    "frame": lambda: pd.DataFrame(
        {"a": [1, 2, 3], "b": [1.5, np.nan, -0.0], "c": ["x", None, "z"], "d": [True, False, True]}
    ),
    "empty": pd.DataFrame,
    "no rows": lambda: pd.DataFrame(columns=["a", "b"]),
    "no columns": lambda: pd.DataFrame(index=pd.Index([3, 1], name="i")),
    "categorical": lambda: pd.Series(["a", "b", None, "a"], dtype="category", name="c"),
    "ordered categorical": lambda: pd.Series(
        pd.Categorical([3, 1, 2], categories=[3, 2, 1], ordered=True)
    ),
    "tz-aware": lambda: pd.Series(pd.date_range("2020", periods=3, freq="h", tz="Europe/Paris")),
    "tz index with freq": lambda: pd.DataFrame(
        {"v": [1, 2, 3]}, index=pd.date_range("2020", periods=3, freq="D", tz="UTC", name="when")
    ),
    "fixed offset tz": lambda: pd.Series(
        pd.date_range("2020", periods=2, tz=datetime.timezone(datetime.timedelta(hours=2)))
    ),
    "multiindex rows": lambda: pd.DataFrame(
        {"v": range(4)},
        index=pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["x", "y"]),
    ),
    "multiindex columns": lambda: pd.DataFrame(
        np.arange(8.0).reshape(2, 4),
        columns=pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1), ("b", 2)]),
    ),
    "object scalars": lambda: pd.Series(
        ["a", 1, None, 2.5, True, float("nan"), 2**80], dtype=object, name=("t", 1)
    ),
    "nullable": lambda: pd.DataFrame(
        {
            "i": pd.array([1, None, 3], dtype="Int8"),
            "u": pd.array([None, 2, 3], dtype="UInt64"),
            "f": pd.array([1.5, None, 2], dtype="Float32"),
            "b": pd.array([True, None, False], dtype="boolean"),
        }
    ),
    "string NA": lambda: pd.Series(["a", None, "ü"], dtype="string"),
    "string nan": lambda: pd.Series(["a", None], dtype=pd.StringDtype(na_value=np.nan)),
    "index": lambda: pd.Index(["a", "b"], name="n"),
    "object index": lambda: pd.Index(["a", 1], dtype=object),
    "int32 index": lambda: pd.Index([5, 6, 7], dtype=np.int32),
    "range index": lambda: pd.RangeIndex(2, 20, 3, name="r"),
    "datetime index": lambda: pd.date_range("2021", periods=4, freq="W"),
    "timedelta": lambda: pd.Series(pd.to_timedelta([1, 2, None], unit="s")),
    "naive datetime": lambda: pd.Series(pd.to_datetime(["2020-01-01", None])),
    "categorical index": lambda: pd.CategoricalIndex(["a", "b", "a"], name="ci"),
    "multiindex": lambda: pd.MultiIndex.from_arrays([[1, 2], ["x", "y"]], names=["n", None]),
    "duplicate columns": lambda: pd.DataFrame([[1, 2], [3, 4]], columns=["a", "a"]),
    "duplicate index": lambda: pd.DataFrame({"v": [1.0, 2.0, 3.0]}, index=[1, 1, 0]),
    "object str column": lambda: pd.DataFrame(
        {"o": pd.Series(["a", None], dtype=object), "n": pd.Series([None, None], dtype=object)}
    ),
    "attrs": _with_attrs,
    "complex": lambda: pd.Series([1 + 2j, -0.5j]),
    "uint16": lambda: pd.Series(np.arange(3, dtype=np.uint16), index=[5, 6, 7]),
    "named columns": lambda: pd.DataFrame(
        {"x": [1.0]}, index=pd.Index(["r"], name="row"), columns=None
    ).rename_axis(columns="col"),
}


@pytest.mark.parametrize("make", CASES.values(), ids=CASES.keys())
def test_pandas_values_round_trip_without_pickle(make):
    value = make()
    kind, out = roundtrip(value)
    assert kind == "pandas"
    assert_identical(out, value)


def test_object_column_items_keep_their_types():
    values = ["a", 1, None, 2.5, True, 2**80]
    _, out = roundtrip(pd.Series(values, dtype=object))
    assert [type(x) for x in out] == [type(x) for x in values]


def test_block_layout_does_not_change_the_digest():
    a = pd.DataFrame({"x": np.arange(3.0), "y": np.arange(3.0) * 2, "z": [1, 2, 3]})
    b = pd.DataFrame({"x": np.arange(3.0)})
    b["y"] = np.arange(3.0) * 2
    b["z"] = [1, 2, 3]
    c = pd.DataFrame(np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]]), columns=["x", "y"])
    c["z"] = [1, 2, 3]
    assert a._mgr.nblocks != b._mgr.nblocks
    assert digest(a) == digest(b) == digest(c)
    assert digest(a) != digest(a[["y", "x", "z"]])  # column order matters
    assert digest(a) != digest(a.astype({"z": "int32"}))  # dtypes matter


def test_hidden_values_under_a_nullable_mask_do_not_change_the_digest():
    mask = np.array([False, True])
    one = pd.Series(pd.arrays.IntegerArray(np.array([1, 5]), mask))
    two = pd.Series(pd.arrays.IntegerArray(np.array([1, 7]), mask))
    assert digest(one) == digest(two)


def test_numeric_columns_are_encoded_without_copies():
    frame = pd.DataFrame({"x": np.arange(10_000.0), "y": np.arange(10_000)})
    views = [np.asarray(c) for c in encode(frame).chunks if isinstance(c, memoryview)]
    assert any(np.shares_memory(v, frame["x"].to_numpy()) for v in views)


def test_decoded_frame_shares_a_writable_body_and_copies_from_a_read_only_one():
    frame = pd.DataFrame({"x": np.arange(1000.0)})
    kind, body = body_of(frame)
    writable = bytearray(body)
    out = decode(kind, writable)
    assert np.shares_memory(out["x"].to_numpy(), np.frombuffer(writable, np.uint8))
    frozen = decode(kind, body)
    frozen.loc[0, "x"] = 5.0  # pandas writes in place: it needs writable arrays
    assert frozen.loc[0, "x"] == 5.0 and frame.loc[0, "x"] == 0.0


UNSUPPORTED = {
    "period": lambda: pd.Series(pd.period_range("2020", periods=2, freq="M")),
    "interval": lambda: pd.Series(pd.interval_range(0, 2)),
    "timestamp name": lambda: pd.Series([1], name=pd.Timestamp("2020")),
    "list in object column": lambda: pd.Series([[1], "a"], dtype=object),
    "sparse": lambda: pd.Series(pd.arrays.SparseArray([0, 1, 0])),
    "no duplicate labels": lambda: pd.DataFrame({"a": [1]}).set_flags(
        allows_duplicate_labels=False
    ),
}


@pytest.mark.parametrize("make", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_values_the_codec_cannot_represent_fall_back_to_pickle(make):
    value = make()
    kind, out = roundtrip(value)
    assert kind == "pickle"
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(out, value)
        assert out.flags.allows_duplicate_labels == value.flags.allows_duplicate_labels
    else:
        pd.testing.assert_series_equal(out, value)


def test_decoding_pandas_never_unpickles(monkeypatch):
    bodies = [body_of(make()) for make in CASES.values()]

    def refuse(*args, **kwargs):
        raise AssertionError("unpickled while decoding a pandas body")

    for module in (pickle, cloudpickle):
        for name in ("loads", "load", "Unpickler"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)
    for kind, body in bodies:
        assert kind == "pandas"
        decode(kind, body)


def frame_body(header: bytes, data: bytes = b"") -> bytes:
    return header + b" " * (-(len(header) + 1) % 64) + b"\n" + data


@pytest.mark.parametrize(
    "body",
    [
        frame_body(b'{"buffers":[],"object":{"type":"Panel"}}'),
        frame_body(b'{"buffers":[],"object":{"type":"Index","index":{"t":"weird"}}}'),
        frame_body(b'{"buffers":[8],"object":{"type":"Index","index":{"t":"index","name":null,'
                   b'"freq":null,"values":{"t":"numpy","dtype":"<f8","buf":3}}}}', b"\0" * 8),
        frame_body(b'{"buffers":[4],"object":{"type":"Index","index":{"t":"index","name":null,'
                   b'"freq":null,"values":{"t":"object","json":0}}}}', b"[{}]"),
        frame_body(b'{"buffers":[],"object":{"type":"Series","name":null,'
                   b'"index":{"t":"range","start":0,"stop":2,"step":1},'
                   b'"values":{"t":"masked","dtype":"Int128"}}}'),
        frame_body(b'{"buffers":[9],"object":{"type":"Index"}}', b"\0" * 8),
    ],
)  # fmt: skip
def test_malformed_pandas_body_is_a_decode_error(body):
    with pytest.raises(DecodeError):
        decode("pandas", body)


@given(
    hpd.data_frames(
        [
            hpd.column("f", dtype=float),
            hpd.column("i", dtype=np.int16),
            hpd.column("s", elements=st.none() | st.text(max_size=5), dtype=object),
            hpd.column("t", dtype="datetime64[ns]"),
        ],
        index=hpd.range_indexes(max_size=8),
    )
)
def test_property_frames_round_trip(frame):
    kind, out = roundtrip(frame)
    assert kind == "pandas"
    assert_identical(out, frame)
    assert digest(out) == digest(frame)
