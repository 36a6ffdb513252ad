"""The ``pandas`` codec: Series, DataFrame and Index without pickle, built from column buffers.

Body: a framed header ``{"buffers": [n0, n1, ...], "object": SPEC}`` (framing as in
:mod:`daskperiment_store.codec`) followed by the buffers. Every column is encoded on its own, whatever the
frame's internal block layout, so equal frames hash the same whether or not they are
consolidated. ``SPEC`` is one of::

    {"type": "DataFrame", "index": INDEX, "columns": INDEX, "data": [ARRAY, ...], "attrs": T}
    {"type": "Series", "index": INDEX, "name": T, "values": ARRAY, "attrs": T}
    {"type": "Index", "index": INDEX}

where ``T`` is a value in the json codec's tree form (names may be any plain JSON data,
tuples included) and ``"attrs"`` is present only when non-empty. ``INDEX`` is::

    {"t": "range", "start": int, "stop": int, "step": int, "name": T}
    {"t": "multi", "levels": [INDEX, ...], "codes": [BUF, ...], "names": [T, ...]}
    {"t": "index", "values": ARRAY, "name": T, "freq": str|null}

(the ``index`` form covers ``Index``, ``DatetimeIndex``, ``TimedeltaIndex`` and
``CategoricalIndex``; the class follows from the values' dtype). ``ARRAY`` is::

    {"t": "numpy", "dtype": D, "buf": k}          bool/int/uint/float/complex/datetime64/
                                                  timedelta64 items, as in the ndarray codec
    {"t": "object", "json": k}                    object dtype holding only str, None, bool,
                                                  int and float; buffer k is the canonical
                                                  json body of the list of items
    {"t": "string", "na": "nan"|"NA", "json": k}  pandas StringDtype; buffer k is the json list
                                                  of str/null. The storage (python, pyarrow)
                                                  is not recorded, so the digest is the same on
                                                  machines with and without pyarrow; strings
                                                  decode to the reader's default storage.
    {"t": "category", "ordered": bool, "categories": INDEX, "codes": BUF}
    {"t": "datetimetz", "unit": "ns"|..., "tz": str, "buf": k}   int64 UTC instants
    {"t": "masked", "dtype": "Int64"|"boolean"|..., "data": BUF, "mask": BUF}
                                                  nullable arrays; data is zero under the mask

``BUF`` is ``{"dtype": D, "buf": k}``. Anything else (period, interval, sparse and arrow
dtypes, other index classes, names that are not plain data, objects of other types in object
columns, frames that disallow duplicate labels, time zones that do not read back as the same
dtype) makes :func:`encode` return None, and the value goes to ``pickle``. A ``MultiIndex`` is
stored with its levels and codes as they are, so two equal MultiIndexes with different levels
(unused levels, say) hash differently. Decoding uses only JSON, ``numpy.frombuffer`` and
pandas constructors: it never unpickles. Numeric columns share the body's memory when the body
is writable; from a read-only body they are copied, because pandas writes into its arrays in
place (``df.loc[i, c] = x``) and would fail on read-only ones.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from .framing import (
    Chunk,
    DecodeError,
    Encoded,
    _NotJson,
    array_buffer,
    array_from_buffer,
    canonical_dtype,
    frame,
    json_hook,
    nbytes,
    parse_dtype,
    split_buffers,
    to_tree,
    unframe,
)

_SCALARS = (str, bool, int, float, type(None))
_MASKED = {
    pd.arrays.IntegerArray: (
        "Int8",
        "Int16",
        "Int32",
        "Int64",
        "UInt8",
        "UInt16",
        "UInt32",
        "UInt64",
    ),
    pd.arrays.FloatingArray: ("Float32", "Float64"),
    pd.arrays.BooleanArray: ("boolean",),
}
_MASKED_BY_NAME = {name: cls for cls, names in _MASKED.items() for name in names}
_INDEX_CLASSES = (pd.Index, pd.DatetimeIndex, pd.TimedeltaIndex, pd.CategoricalIndex)


class _Unsupported(Exception):
    """Internal: this pandas value needs pickle."""


def _json_bytes(tree: Any) -> bytes:
    return json.dumps(
        tree, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


class _Writer:
    """Collects the buffers of one pandas body while its header spec is built."""

    def __init__(self) -> None:
        self.buffers: list[Chunk] = []

    def add(self, buf: Chunk) -> int:
        self.buffers.append(buf)
        return len(self.buffers) - 1

    def tree(self, value: Any) -> Any:
        try:
            return to_tree(value)
        except (_NotJson, RecursionError):
            raise _Unsupported from None

    def buf(self, array: np.ndarray) -> dict[str, Any]:
        dtype = canonical_dtype(array.dtype)
        if dtype is None:
            raise _Unsupported
        return {"dtype": dtype.str, "buf": self.add(array_buffer(array, dtype))}

    def json_buf(self, items: list[Any]) -> int:
        try:
            return self.add(_json_bytes([to_tree(x) for x in items]))
        except (_NotJson, UnicodeEncodeError):
            raise _Unsupported from None

    # -- arrays --------------------------------------------------------------------------

    def array(self, values: Any) -> dict[str, Any]:
        """Spec of the values of a Series or Index (given as the Series/Index itself)."""
        dtype = values.dtype
        if isinstance(dtype, np.dtype):
            if dtype.kind == "O":
                items = values.to_numpy(copy=False).tolist()
                if not all(type(x) in _SCALARS for x in items):
                    raise _Unsupported
                return {"t": "object", "json": self.json_buf(items)}
            return {"t": "numpy", **self.buf(values.to_numpy(copy=False))}
        arr = values.array
        if isinstance(dtype, pd.StringDtype):
            items = arr.to_numpy(dtype=object, na_value=None).tolist()
            na = "nan" if dtype.na_value is not pd.NA else "NA"
            return {"t": "string", "na": na, "json": self.json_buf(items)}
        if isinstance(dtype, pd.CategoricalDtype):
            return {
                "t": "category",
                "ordered": bool(dtype.ordered),
                "categories": self.index(dtype.categories),
                "codes": self.buf(np.asarray(arr.codes)),
            }
        if isinstance(dtype, pd.DatetimeTZDtype):
            tz = str(dtype.tz)
            if pd.DatetimeTZDtype(dtype.unit, tz) != dtype:
                raise _Unsupported
            return {"t": "datetimetz", "unit": dtype.unit, "tz": tz, **self.buf(arr.asi8)}
        if type(arr) in _MASKED and dtype.name in _MASKED[type(arr)]:
            return self.masked(arr)
        raise _Unsupported

    def masked(self, arr: Any) -> dict[str, Any]:
        data, mask = arr._data, arr._mask
        if mask.any():  # hidden values under the mask are arbitrary; zero them to be canonical
            data = np.where(mask, np.zeros((), data.dtype), data)
        return {
            "t": "masked",
            "dtype": arr.dtype.name,
            "data": self.buf(data),
            "mask": self.buf(mask),
        }

    # -- indexes -------------------------------------------------------------------------

    def index(self, index: pd.Index) -> dict[str, Any]:
        if type(index) is pd.RangeIndex:
            return {
                "t": "range",
                "start": index.start,
                "stop": index.stop,
                "step": index.step,
                "name": self.tree(index.name),
            }
        if type(index) is pd.MultiIndex:
            return {
                "t": "multi",
                "levels": [self.index(level.rename(None)) for level in index.levels],
                "codes": [self.buf(np.asarray(c)) for c in index.codes],
                "names": [self.tree(n) for n in index.names],
            }
        if type(index) not in _INDEX_CLASSES:
            raise _Unsupported
        freq = getattr(index, "freqstr", None)
        return {
            "t": "index",
            "values": self.array(index),
            "name": self.tree(index.name),
            "freq": freq,
        }

    # -- objects -------------------------------------------------------------------------

    def obj(self, value: Any) -> dict[str, Any]:
        cls = type(value)
        if cls is pd.DataFrame or cls is pd.Series:
            if not value.flags.allows_duplicate_labels:
                raise _Unsupported
            spec = self.frame(value) if cls is pd.DataFrame else self.series(value)
            if value.attrs:
                spec["attrs"] = self.tree(value.attrs)
            return spec
        if isinstance(value, pd.Index) and (
            cls in _INDEX_CLASSES or cls in (pd.RangeIndex, pd.MultiIndex)
        ):
            return {"type": "Index", "index": self.index(value)}
        raise _Unsupported

    def frame(self, df: pd.DataFrame) -> dict[str, Any]:
        return {
            "type": "DataFrame",
            "index": self.index(df.index),
            "columns": self.index(df.columns),
            "data": [self.array(df.iloc[:, i]) for i in range(df.shape[1])],
        }

    def series(self, series: pd.Series) -> dict[str, Any]:
        return {
            "type": "Series",
            "index": self.index(series.index),
            "name": self.tree(series.name),
            "values": self.array(series),
        }


def encode(value: Any) -> Encoded | None:
    """Encode a pandas Series/DataFrame/Index, or return None if it needs pickle."""
    writer = _Writer()
    try:
        spec = writer.obj(value)
    except _Unsupported:
        return None

    header = {"buffers": [nbytes(b) for b in writer.buffers], "object": spec}
    return frame("pandas", header, writer.buffers)


# --- decoding --------------------------------------------------------------------------------


def _get(spec: Any, key: str, cls: type | tuple[type, ...]) -> Any:
    if not isinstance(spec, dict) or not isinstance(spec.get(key), cls):
        raise DecodeError(f"pandas body: expected {key!r} in {str(spec)[:200]}")
    return spec[key]


class _Reader:
    """Rebuilds pandas objects from a header spec and the body's buffers."""

    def __init__(self, buffers: list[memoryview]) -> None:
        self.buffers = buffers

    def raw(self, k: Any) -> memoryview:
        if type(k) is not int or not 0 <= k < len(self.buffers):
            raise DecodeError(f"pandas body: no buffer {k!r}")
        return self.buffers[k]

    def buf(self, spec: Any) -> np.ndarray:
        dtype = parse_dtype(_get(spec, "dtype", str))
        raw = self.raw(spec.get("buf"))
        if raw.nbytes % dtype.itemsize:
            raise DecodeError(f"pandas body: buffer of {raw.nbytes} bytes for {dtype.str} items")
        array = array_from_buffer(raw, dtype, [raw.nbytes // dtype.itemsize])
        # pandas writes into its blocks in place (df.loc[...] = x), so it needs writable
        # arrays: share a writable body's memory, copy out of a read-only one.
        return array.copy() if not array.flags.writeable else array

    def json_list(self, k: Any) -> list[Any]:
        items = json.loads(str(self.raw(k), "utf-8"), object_hook=json_hook)
        if type(items) is not list or not all(type(x) in _SCALARS for x in items):
            raise DecodeError("pandas body: a json column is not a list of scalars")
        return items

    def array(self, spec: Any) -> Any:
        """A numpy array or pandas extension array with exactly the stored dtype."""
        t = _get(spec, "t", str)
        if t == "numpy":
            return self.buf(spec)
        if t == "object":
            items = self.json_list(spec.get("json"))
            out = np.empty(len(items), dtype=object)
            out[:] = items
            return pd.array(out, dtype=object, copy=False)
        if t == "string":
            na = np.nan if _get(spec, "na", str) == "nan" else pd.NA
            return pd.array(self.json_list(spec.get("json")), dtype=pd.StringDtype(na_value=na))
        if t == "category":
            dtype = pd.CategoricalDtype(
                self.index(spec.get("categories")), ordered=_get(spec, "ordered", bool)
            )
            return pd.Categorical.from_codes(self.buf(spec.get("codes")), dtype=dtype)
        if t == "datetimetz":
            unit, tz = _get(spec, "unit", str), _get(spec, "tz", str)
            utc = self.buf(spec).view(f"M8[{unit}]")
            return pd.array(utc).tz_localize("UTC").tz_convert(tz)
        if t == "masked":
            cls = _MASKED_BY_NAME.get(_get(spec, "dtype", str))
            if cls is None:
                raise DecodeError(f"pandas body: unknown nullable dtype {spec['dtype']!r}")
            return cls(self.buf(spec.get("data")), self.buf(spec.get("mask")))
        raise DecodeError(f"pandas body: unknown array type {t!r}")

    def index(self, spec: Any) -> pd.Index:
        t = _get(spec, "t", str)
        if t == "range":
            args = [_get(spec, k, int) for k in ("start", "stop", "step")]
            return pd.RangeIndex(*args, name=spec.get("name"))
        if t == "multi":
            levels = [self.index(s) for s in _get(spec, "levels", list)]
            codes = [self.buf(s) for s in _get(spec, "codes", list)]
            return pd.MultiIndex(levels=levels, codes=codes, names=_get(spec, "names", list))
        if t == "index":
            values = self.array(spec.get("values"))
            index = pd.Index(values, dtype=values.dtype, name=spec.get("name"), copy=False)
            if spec.get("freq") is not None:
                index = type(index)(index, freq=spec["freq"])
            return index
        raise DecodeError(f"pandas body: unknown index type {t!r}")

    def obj(self, spec: Any) -> Any:
        kind = _get(spec, "type", str)
        if kind == "Index":
            return self.index(spec.get("index"))
        index = self.index(spec.get("index"))
        if kind == "Series":
            values = self.array(spec.get("values"))
            out = pd.Series(
                values, index=index, name=spec.get("name"), dtype=values.dtype, copy=False
            )
        elif kind == "DataFrame":
            # Series with the frame's own index (so nothing is realigned) keep their dtype;
            # bare object arrays would be re-inferred as strings by the DataFrame constructor.
            columns = {
                i: pd.Series(values, index=index, dtype=values.dtype, copy=False)
                for i, values in enumerate(map(self.array, _get(spec, "data", list)))
            }
            out = pd.DataFrame(columns, index=index, copy=False)
            out.columns = self.index(spec.get("columns"))
        else:
            raise DecodeError(f"pandas body: unknown object type {kind!r}")
        if "attrs" in spec:
            out.attrs = _get(spec, "attrs", dict)
        return out


def decode(body: Chunk) -> Any:
    """Rebuild the pandas object of a ``pandas`` body (never unpickles)."""
    header, start = unframe(body)
    buffers = split_buffers(body, start, _get(header, "buffers", list))
    try:
        return _Reader(buffers).obj(header.get("object"))
    except DecodeError:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise DecodeError(f"pandas body does not rebuild: {exc}") from None
