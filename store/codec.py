"""Codecs: turn values into canonical bytes (a *body*) and back, choosing the encoding by type.

Every object is stored as a *kind* (a short ASCII type tag) and a *body*. The object's digest is
``xxh3_128(kind + b"\\0" + body)`` (:func:`daskperiment_store.digest.hash_chunks`), so two values get the
same digest exactly when their kinds and bodies are equal. :func:`encode` picks the first codec
that fits the value's exact type (subclasses of ``dict``, ``str``, ``float``, ``np.ndarray``,
... are not the built-ins they extend and go to ``pickle``):

``ndarray``  ``numpy.ndarray`` (exact type) of a bool, integer, float (up to 64 bits), complex (up
    to 128 bits), ``datetime64``, ``timedelta64``, fixed-width ``str`` (``U``) or ``bytes``
    (``S``) dtype. Object, structured, ``StringDType``, ``longdouble`` arrays and arrays of
    zero-width items go to ``pickle``.
``bytes``    ``bytes``, ``bytearray``, ``memoryview``; decodes to ``bytes``.
``pandas``   ``pandas.Series``, ``DataFrame`` and ``Index`` (see :mod:`daskperiment_store.codec_pandas` for
    what is covered); one that cannot be represented exactly goes to ``pickle``.
``json``     plain data, by the rules below.
``pickle``   anything else, through cloudpickle.

**json.** Accepted: ``dict`` with ``str`` keys, ``list``, ``tuple``, ``str``, ``int`` (any size),
``float`` (including nan and infinities), ``bool``, ``None``, :class:`Link`, nested to any depth
Python's recursion limit allows (exact types only; a cyclic value goes to ``pickle``). The body
is ``json.dumps`` of the value translated as follows, with keys sorted by code point, separators
``,`` and ``:`` with no whitespace, no ASCII escaping, encoded as UTF-8 (a string holding a lone
surrogate cannot be UTF-8 and goes to ``pickle``):

- ``str``, ``bool``, ``None``, ``list`` are written as JSON strings, ``true``/``false``,
  ``null`` and arrays, so ``True`` and ``1`` stay distinct.
- ``int``: decimal, unless its ``bit_length()`` exceeds 2048: then ``{"$int": "<hex>"}``
  (lowercase hexadecimal, ``-`` prefix when negative), so no integer ever meets Python's limit
  on decimal conversion.
- ``float``: Python's shortest round-tripping ``repr`` (``1.0``, ``-0.0``, ``1e+16``), so a
  float never reads back as an int; nan, inf and -inf are ``{"$float": "nan"}``,
  ``{"$float": "inf"}`` and ``{"$float": "-inf"}`` (every nan is the same nan).
- ``tuple``: ``{"$tuple": [items]}``.
- :class:`Link`: ``{"$link": "<32 hex oid>"}``.
- ``dict``: a JSON object, except that a dict with exactly one key which starts with ``$``
  (and so could be taken for one of the escapes above) is written ``{"$dict": [key, value]}``.

A JSON object with exactly one key starting with ``$`` is therefore always an escape; reading
an escape this version does not know is an error. Every other object is a plain dict.

**ndarray.** Body: a *framed* header ``{"dtype": D, "shape": [...]}`` followed by the array's
items in C order. ``D`` is ``numpy.dtype.str`` of the dtype made little-endian (``<f8``,
``|b1``, ``<U5``, ``<M8[ns]``), so native and byte-swapped, C-, Fortran-ordered and strided
arrays with equal items hash the same. A C-contiguous little-endian array is hashed and written
straight from its own memory, without a copy (mutating it before the write completes would
store different bytes than were hashed). Decoding wraps the body with ``numpy.frombuffer``: the
array shares the body's memory and is writable exactly when the body is (``bytearray`` or a
writable ``memoryview``); if the body's memory is not aligned for the dtype, the array is
copied.

**Framing** (``ndarray``, ``pandas``, ``pickle``): canonical JSON header, padded with spaces so
that the ``\\n`` that ends it is the last byte of a 64-byte block; then each buffer, starting at
the next offset that is a multiple of 64 (zero bytes fill the gaps; nothing follows the last
buffer).

**bytes.** Body: the bytes themselves.

**pickle.** Body: framed header ``{"buffers": [n0, n1, ...]}``; buffer 0 is a cloudpickle
protocol-5 stream, the others its out-of-band buffers (so the memory of large arrays inside a
pickled value is hashed and written without copies). **Decoding a pickle object runs code**
chosen by whoever wrote it: only read pickle objects from stores you trust. Decoding ``json``,
``ndarray``, ``pandas`` and ``bytes`` objects never unpickles and never runs code. Pickle
digests are stable for a value pickled the same way, but not canonical: equal dicts built in a
different order, or sets of strings under different ``PYTHONHASHSEED`` values, can pickle (and
hash) differently. A :class:`Link` inside a value that needs pickle is refused
(:class:`daskperiment_store.errors.EncodeError`): links are only followed inside ``json`` objects, and a
link the store cannot see would not keep its target alive.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from typing import TYPE_CHECKING, Any

from .digest import Oid, hash_chunks

if TYPE_CHECKING:  # numpy and cloudpickle are imported when a value needs them
    import numpy as np
from .errors import EncodeError

# Re-exported: store.codec is where users of the codecs look for these names.
from .framing import (  # noqa: F401
    ALIGN,
    Chunk,
    DecodeError,
    Encoded,
    Link,
    _canonical_json,
    _NotJson,
    array_buffer,
    array_from_buffer,
    canonical_dtype,
    check_shape,
    frame,
    is_ndarray,
    is_pandas,
    json_hook,
    nbytes,
    parse_dtype,
    split_buffers,
    to_tree,
    unframe,
)

#: Every kind this version reads and writes.
KINDS = ("json", "ndarray", "pandas", "bytes", "container", "pickle")
#: Kinds whose objects can hold links to other objects (see :func:`find_links`).
LINK_KINDS = frozenset({"json", "container"})


def _encode_json(value: Any) -> Encoded | None:
    try:
        body = _canonical_json(to_tree(value))
    except (_NotJson, RecursionError, UnicodeEncodeError):
        return None
    return Encoded("json", [body], len(body))


def canonical_json(value: Any) -> bytes:
    """The canonical JSON text of plain data ``value``: the body :func:`encode` gives it as a
    ``json`` object, and also, byte for byte, the text it takes inside a larger JSON value.

    So the body of a large value can be assembled from the texts of its parts (keys sorted,
    ``,`` and ``:`` between them), for instance to extend a long list without encoding it
    again; store such a body with :meth:`daskperiment_store.Store.put_encoded`. Raises
    :class:`EncodeError` for a value that is not plain JSON data.
    """
    try:
        return _canonical_json(to_tree(value))
    except (_NotJson, RecursionError, UnicodeEncodeError) as exc:
        raise EncodeError(
            f"a value of type {_type_name(value)} is not plain JSON data ({type(exc).__name__})"
        ) from None


#: How every escape key starts in a body: a quote and ``$``, or ``$`` written as ``\u0024``.
_ESCAPE = '"$'
_ESCAPE_CODE = "\\u0024"


def _decode_json(body: Chunk) -> Any:
    try:
        text = str(body, "utf-8")
        if _ESCAPE not in text and _ESCAPE_CODE not in text:
            # No key can start with "$": nothing to undo, and the hook would cost one Python
            # call per JSON object (a history index chunk has thousands).
            return json.loads(text)
        return json.loads(text, object_hook=json_hook)
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"json body is malformed: {exc}") from None


def find_links(kind: str, body: Chunk) -> list[Oid]:
    """Oids of the :class:`Link` values inside a ``json`` or ``container`` body, each once, in order of
    appearance in the body; ``[]`` for every other kind."""
    data = bytes(body)
    # A key may spell any of its characters as a \uXXXX escape ("\u0024link"): a body with
    # no literal "$link" and no escape at all holds no link; any other is decoded.
    if kind not in LINK_KINDS or (b'"$link"' not in data and b"\\u" not in data):
        return []
    found: dict[Oid, None] = {}

    def hook(obj: dict[str, Any]) -> Any:
        value = json_hook(obj)
        if type(value) is Link:
            found[value.oid] = None
        return value

    try:
        json.loads(str(body, "utf-8"), object_hook=hook)
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"json body is malformed: {exc}") from None
    return list(found)


# --- ndarray ---------------------------------------------------------------------------------


def _encode_ndarray(array: np.ndarray) -> Encoded | None:
    dtype = canonical_dtype(array.dtype)
    if dtype is None:
        return None
    header = {"dtype": dtype.str, "shape": list(array.shape)}
    return frame("ndarray", header, [array_buffer(array, dtype)])


def _decode_ndarray(body: Chunk) -> np.ndarray:
    header, start = unframe(body)
    dtype = parse_dtype(header.get("dtype"))
    shape = check_shape(header.get("shape"))
    (buf,) = split_buffers(body, start, [math.prod(shape) * dtype.itemsize])
    return array_from_buffer(buf, dtype, shape)


# --- bytes -----------------------------------------------------------------------------------


def _encode_bytes(value: bytes | bytearray | memoryview) -> Encoded:
    view = memoryview(value)
    view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
    return Encoded("bytes", [view], view.nbytes)


# --- pickle ----------------------------------------------------------------------------------


class _LinkInPickle(Exception):
    pass


_PICKLER: list[type] = []


def _pickler() -> type:
    """cloudpickle's Pickler refusing links, made on first use (cloudpickle is only imported
    when something is pickled)."""
    if not _PICKLER:
        import cloudpickle

        class _Pickler(cloudpickle.Pickler):
            def reducer_override(self, obj: Any) -> Any:
                if type(obj) is Link:
                    raise _LinkInPickle
                return super().reducer_override(obj)

        _PICKLER.append(_Pickler)
    return _PICKLER[0]


def _encode_pickle(value: Any) -> Encoded:
    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    try:
        _pickler()(stream, protocol=5, buffer_callback=buffers.append).dump(value)
    except _LinkInPickle:
        raise EncodeError(
            f"a {_type_name(value)} holding a store.Link cannot be stored: links are only "
            "tracked inside plain JSON data (dict/list/tuple/str/int/float/bool/None); "
            "put the other parts as separate objects and link to them from a plain dict"
        ) from None
    except Exception as exc:  # cloudpickle raises many types (PicklingError, TypeError, ...)
        raise EncodeError(f"cannot encode a value of type {_type_name(value)}: {exc}") from exc
    raws: list[Chunk] = [stream.getbuffer()]
    raws += [buf.raw() for buf in buffers]
    return frame("pickle", {"buffers": [nbytes(r) for r in raws]}, raws)


def _decode_pickle(body: Chunk) -> Any:
    header, start = unframe(body)
    lengths = header.get("buffers")
    if type(lengths) is not list or not lengths:
        raise DecodeError("pickle body header has no buffer list")
    stream, *buffers = split_buffers(body, start, lengths)
    return pickle.loads(stream, buffers=buffers)


def _type_name(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


# --- dispatch --------------------------------------------------------------------------------


def encode(value: Any) -> Encoded:
    """Encode ``value`` with the first codec that fits it (see the module docstring).

    Raises :class:`daskperiment_store.errors.EncodeError` naming the type when nothing can encode it.
    """
    cls = type(value)
    enc: Encoded | None = None
    if is_ndarray(value):
        enc = _encode_ndarray(value)
    elif cls is bytes or cls is bytearray or cls is memoryview:
        enc = _encode_bytes(value)
    elif is_pandas(value):
        from . import codec_pandas

        enc = codec_pandas.encode(value)
    else:
        enc = _encode_json(value)
        if enc is None and (cls is dict or cls is list or cls is tuple):
            from . import codec_container

            enc = codec_container.encode(value, _encode_leaf)
    return enc if enc is not None else _encode_pickle(value)


def _encode_leaf(value: Any) -> Encoded | None:
    """An element of a container: its own encoding, or None (the container is pickled)."""
    cls = type(value)
    if is_ndarray(value):
        return _encode_ndarray(value)
    if cls is bytes or cls is bytearray or cls is memoryview:
        return _encode_bytes(value)
    from . import codec_pandas

    return codec_pandas.encode(value)


def decode(kind: str, body: Chunk) -> Any:
    """Decode a body of the given kind. Only ``pickle`` bodies can run code while decoding.

    Raises :class:`DecodeError` for an unknown kind or a malformed body.
    """
    if kind == "json":
        return _decode_json(body)
    if kind == "ndarray":
        return _decode_ndarray(body)
    if kind == "bytes":
        return bytes(body)
    if kind == "pandas":
        from . import codec_pandas

        return codec_pandas.decode(body)
    if kind == "pickle":
        return _decode_pickle(body)
    if kind == "container":
        raise DecodeError(
            "a container object links to its elements: read it with Store.get, not decode"
        )
    raise DecodeError(f"unknown object kind {kind!r}; it may have been written by a newer version")


def digest(value: Any) -> Oid:
    """The oid ``value`` would be stored under, without storing it."""
    enc = encode(value)
    return hash_chunks(enc.kind, enc.chunks)
