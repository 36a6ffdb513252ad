"""Building blocks shared by the codecs (:mod:`daskperiment_store.codec`, :mod:`daskperiment_store.codec_pandas`).

The body types (:class:`Encoded`, :data:`Chunk`), :class:`DecodeError`, the *framing* of
bodies that hold buffers (canonical JSON header padded to 64 bytes, then 64-byte aligned
buffers), the canonical JSON tree with its escapes (including :class:`Link`), and the array
helpers (canonical little-endian dtypes, buffers in C order). The formats are specified in
the docstring of :mod:`daskperiment_store.codec`; this module only holds the code both codecs use, so
neither imports the other.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported when an array is encoded or decoded, not before
    import numpy as np

from .digest import Oid, hash_chunks, validate_oid
from .errors import StoreError

Chunk = bytes | bytearray | memoryview


def is_ndarray(value: Any) -> bool:
    """Whether ``value`` is a numpy array (no ndarray exists unless numpy was imported, so
    this never imports it: ``import daskperiment_store`` stays light)."""
    np = sys.modules.get("numpy")
    return np is not None and type(value) is np.ndarray


def is_pandas(value: Any) -> bool:
    """Whether ``value`` is a pandas object (pandas is never imported to find out)."""
    if "pandas" not in sys.modules:
        return False
    module = type(value).__module__
    return module == "pandas" or module.startswith("pandas.")


#: Buffers inside framed bodies start at multiples of this many bytes (so arrays are aligned).
ALIGN = 64
_MAX_DECIMAL_BITS = 2048  # ints wider than this are written in hex (see module docstring)
_HEX_INT = re.compile(r"-?[0-9a-f]+")


class DecodeError(StoreError, ValueError):
    """A body is not a well-formed encoding of its kind (or the kind is unknown)."""


@dataclass(frozen=True)
class Link:
    """A reference to another object, placed inside a JSON value (like a git tree entry).

    The store follows links to compute reachability (gc, bundles, push/pull). Links compare and
    hash by their oid.
    """

    oid: Oid

    def __post_init__(self) -> None:
        object.__setattr__(self, "oid", validate_oid(self.oid))


@dataclass
class Encoded:
    """An encoded value: its kind and its body as a list of chunks totalling ``size`` bytes.

    Chunks may be views of the original value's memory; write or hash them before the value
    changes.
    """

    kind: str
    chunks: list[Chunk]
    size: int
    #: Objects this one links to that must be stored with it (``container`` elements):
    #: ``(oid, Encoded)`` pairs, written before this object.
    children: list[tuple[Oid, Encoded]] = field(default_factory=list)

    @property
    def oid(self) -> Oid:
        """The digest of this encoding (hashes the chunks; not cached)."""
        return hash_chunks(self.kind, self.chunks)


class _NotJson(Exception):
    """Internal: the value is not plain JSON data."""


# --- framing ---------------------------------------------------------------------------------


def nbytes(chunk: Chunk) -> int:
    """Length in bytes of a chunk (``len`` of a memoryview counts items, not bytes)."""
    return chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)


#: The canonical JSON encoder: keys sorted, no whitespace, no ASCII escaping, no nan.
_ENCODER = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,
)


def _make_dump() -> Callable[[Any], str]:
    """``_ENCODER.encode`` without its per-call set-up: the C encoder it makes on every call,
    made once (it keeps no state between calls: no circular check), if this Python has it
    and it writes what ``_ENCODER`` writes; else ``_ENCODER.encode`` itself."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _ENCODER.encode
    try:
        encoder = make(None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",",
                       True, False, False)  # fmt: skip
        probe = {"b": [1.5, -0.0, 1e16, None, True, 2**70], "a": 'é\n\u2028"', "": {}}
        if "".join(encoder(probe, 0)) != _ENCODER.encode(probe):
            return _ENCODER.encode
    except (TypeError, ValueError):  # another signature in this Python version
        return _ENCODER.encode
    return lambda tree: "".join(encoder(tree, 0))


_dump = _make_dump()


def _canonical_json(tree: Any) -> bytes:
    return _dump(tree).encode("utf-8")


def frame(kind: str, header: dict[str, Any], buffers: list[Chunk]) -> Encoded:
    """Frame a canonical JSON ``header`` and ``buffers`` into a body (see the module doc)."""
    head = _canonical_json(header)
    pad = -(len(head) + 1) % ALIGN
    chunks: list[Chunk] = [head + b" " * pad + b"\n"]
    size = len(chunks[0])
    for i, buf in enumerate(buffers):
        n = nbytes(buf)
        if i and size % ALIGN:
            gap = -size % ALIGN
            chunks.append(bytes(gap))
            size += gap
        if n:
            chunks.append(buf)
            size += n
    return Encoded(kind, chunks, size)


def unframe(body: Chunk) -> tuple[dict[str, Any], int]:
    """Parse a framed header; return it and the offset where its buffers start."""
    view = memoryview(body).cast("B")
    scan = 4096  # headers are short; look further only for unusual ones (many columns)
    while (end := bytes(view[:scan]).find(b"\n")) < 0:
        if scan >= view.nbytes:
            raise DecodeError("framed body has no header line")
        scan *= 16
    try:
        header = json.loads(str(view[:end], "utf-8"), object_hook=json_hook)
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"framed body header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise DecodeError("framed body header is not a JSON object")
    return header, end + 1


def split_buffers(body: Chunk, start: int, lengths: list[int]) -> list[memoryview]:
    """Slice the buffers of the given ``lengths`` out of a framed body, checking its size."""
    view = memoryview(body).cast("B")
    out = []
    offset = start
    for i, n in enumerate(lengths):
        if type(n) is not int or n < 0:
            raise DecodeError(f"bad buffer length {n!r}")
        if i:
            offset += -offset % ALIGN
        out.append(view[offset : offset + n])
        offset += n
    if offset != view.nbytes:
        raise DecodeError(f"body is {view.nbytes} bytes but its header describes {offset}")
    return out


# --- json ------------------------------------------------------------------------------------


def _tree_dict(value: dict) -> dict:
    out = None  # a copy, made only when an item needs an escape
    for key, item in value.items():
        if type(key) is not str:
            raise _NotJson
        cls = type(item)
        if cls is str or item is None or cls is bool:
            continue
        tree = to_tree(item)
        if tree is not item:
            if out is None:
                out = dict(value)
            out[key] = tree
    result = value if out is None else out
    if len(result) == 1:
        ((key, item),) = result.items()
        if key.startswith("$"):
            return {"$dict": [key, item]}
    return result


def _tree_list(value: list) -> list:
    out = None  # a copy, made only when an item needs an escape
    for i, item in enumerate(value):
        if type(item) is str:
            continue
        tree = to_tree(item)
        if tree is not item:
            if out is None:
                out = list(value)
            out[i] = tree
    return value if out is None else out


def _tree_int(value: int) -> int | dict[str, str]:
    if value.bit_length() > _MAX_DECIMAL_BITS:
        return {"$int": format(value, "x")}
    return value


def _tree_float(value: float) -> float | dict[str, str]:
    if math.isfinite(value):
        return value
    return {"$float": "nan" if value != value else ("inf" if value > 0 else "-inf")}


def to_tree(value: Any) -> Any:
    """Translate plain data into the JSON tree that is dumped canonically (escapes applied).

    Parts that need no escape are returned as they are, not copied (a value without any
    escape is its own tree), so the tree may share lists and dicts with ``value``: dump it
    before ``value`` changes. Raises an internal ``_NotJson`` for anything that is not plain
    data (exact types only: a subclass of ``dict`` or ``str`` is not plain data).
    """
    cls = type(value)
    if cls is str or cls is bool or value is None:
        return value
    if cls is dict:
        return _tree_dict(value)
    if cls is int:
        return _tree_int(value)
    if cls is float:
        return _tree_float(value)
    if cls is list:
        return _tree_list(value)
    if cls is tuple:
        return {"$tuple": [to_tree(x) for x in value]}
    if cls is Link:
        return {"$link": value.oid}
    raise _NotJson


def _escape(key: str, value: Any) -> Any:
    if key == "$tuple" and type(value) is list:
        return tuple(value)
    if key == "$float" and value in ("nan", "inf", "-inf"):
        return float(value)
    if key == "$link" and type(value) is str:
        return Link(Oid(value))
    if key == "$int" and type(value) is str and _HEX_INT.fullmatch(value):
        return int(value, 16)
    if key == "$dict" and type(value) is list and len(value) == 2 and type(value[0]) is str:
        return {value[0]: value[1]}
    raise DecodeError(
        f"unknown or malformed escape {{{key!r}: ...}} in a json object; "
        "it may have been written by a newer version"
    )


def json_hook(obj: dict[str, Any]) -> Any:
    """``object_hook`` for ``json.loads`` that undoes the escapes (applied bottom-up)."""
    if len(obj) == 1:
        ((key, value),) = obj.items()
        if key.startswith("$"):
            return _escape(key, value)
    return obj


# --- arrays ------------------------------------------------------------------------------------

_ARRAY_KINDS = frozenset("biufcmMUS")
_DTYPE_STR = re.compile(r"[<|][biufcmMUS]\d{1,9}(\[\d*[a-zA-Z]+\])?")


def canonical_dtype(dtype: np.dtype) -> np.dtype | None:
    """The little-endian dtype an array of ``dtype`` is stored as, or None if unsupported."""
    if (
        dtype.kind not in _ARRAY_KINDS
        or dtype.fields is not None
        or dtype.subdtype is not None
        or dtype.metadata
        or dtype.itemsize == 0
        or (dtype.kind == "f" and dtype.itemsize > 8)
        or (dtype.kind == "c" and dtype.itemsize > 16)
    ):
        return None
    return dtype.newbyteorder("<")


def array_buffer(array: np.ndarray, dtype: np.dtype) -> memoryview:
    """The C-order little-endian bytes of ``array`` as a flat byte view; copies only when the
    array is not already C-contiguous little-endian."""
    import numpy as np

    contiguous = array.astype(dtype, order="C", copy=False)
    return contiguous.reshape(-1).view(np.uint8).data


def parse_dtype(text: object) -> np.dtype:
    """The dtype written as ``text`` in a header, refusing anything but supported kinds."""
    if type(text) is not str or not _DTYPE_STR.fullmatch(text):
        raise DecodeError(f"unsupported array dtype {text!r}")
    import numpy as np

    try:
        dtype = np.dtype(text)
    except TypeError as exc:
        raise DecodeError(f"unsupported array dtype {text!r}: {exc}") from None
    if canonical_dtype(dtype) is None:
        raise DecodeError(f"unsupported array dtype {text!r}")
    return dtype


def check_shape(shape: object) -> list[int]:
    """``shape`` from a header, if it is a list of non-negative ints."""
    if type(shape) is not list or not all(type(n) is int and n >= 0 for n in shape):
        raise DecodeError(f"bad array shape {shape!r}")
    return shape


def array_from_buffer(buf: memoryview, dtype: np.dtype, shape: list[int]) -> np.ndarray:
    """Wrap ``buf`` as an array (no copy unless misaligned), checking its size."""
    count = math.prod(shape)
    if count * dtype.itemsize != buf.nbytes:
        raise DecodeError(
            f"array of shape {shape} and dtype {dtype.str} needs {count * dtype.itemsize} "
            f"bytes, body holds {buf.nbytes}"
        )
    import numpy as np

    array = np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)
    if not array.flags.aligned:
        array = array.copy()
    return array
