"""The ``container`` kind: dicts, lists and tuples of arrays, frames and scalars, stored as a
tree of links to one object per element.

A ``dict`` (``str`` keys), ``list`` or ``tuple``, nested to any depth, that is not plain JSON
only because some leaves are ``numpy.ndarray``, pandas objects, ``bytes`` or numpy scalars is
stored as:

- one object per such leaf, of its own kind (``ndarray``, ``pandas``, ``bytes``; a numpy scalar
  as a 0-d ``ndarray``), so equal leaves in any container, trial or process are stored once;
- one ``container`` object: the structure, in the canonical JSON of the ``json`` kind (see
  :mod:`daskperiment_store.codec`) with each such leaf replaced by ``{"$link": oid}`` and each
  numpy scalar by ``{"$tuple": ["$npscalar", {"$link": oid}]}``. Plain JSON leaves stay inline.

Decoding never unpickles: the elements are read with the kinds ``ndarray``, ``pandas`` and
``bytes`` only. A value holding a :class:`Link` of its own, a dict with a non-``str`` key or a
leaf of any other type is not a container (it goes to ``pickle``, as before). The elements are
written before the container, so a reader never finds a container whose elements are missing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from .digest import Oid, hash_chunks
from .framing import (
    Chunk,
    DecodeError,
    Encoded,
    Link,
    _canonical_json,
    _NotJson,
    is_ndarray,
    is_pandas,
    json_hook,
    to_tree,
)

KIND = "container"
#: Kinds a container's elements may have (checked when loading them).
ELEMENT_KINDS = frozenset({"ndarray", "pandas", "bytes"})
_SCALAR_TAG = "$npscalar"


class _NotContainer(Exception):
    pass


def encode(value: Any, encode_leaf: Callable[[Any], Encoded | None]) -> Encoded | None:
    """The ``container`` encoding of ``value`` with its elements' encodings in
    ``Encoded.children`` (``(oid, Encoded)`` pairs), or None if ``value`` is not a container."""
    children: dict[Oid, Encoded] = {}
    try:
        tree = _structure(value, children, encode_leaf, 0)
        body = _canonical_json(to_tree(tree))
    except (_NotContainer, _NotJson, RecursionError, UnicodeEncodeError):
        return None
    if not children:
        return None  # plain JSON after all: the json kind's business
    enc = Encoded(KIND, [body], len(body))
    enc.children = list(children.items())
    return enc


def _structure(
    value: Any,
    children: dict[Oid, Encoded],
    encode_leaf: Callable[[Any], Encoded | None],
    depth: int,
) -> Any:
    if depth > 200:
        raise _NotContainer
    cls = type(value)
    if cls is dict:
        if any(type(k) is not str for k in value):
            raise _NotContainer
        return {k: _structure(v, children, encode_leaf, depth + 1) for k, v in value.items()}
    if cls is list or cls is tuple:
        return cls(_structure(v, children, encode_leaf, depth + 1) for v in value)
    if cls is Link:
        raise _NotContainer  # a caller's own link would read back as an element
    if cls in (str, int, float, bool) or value is None:
        return value
    np = sys.modules.get("numpy")  # no numpy value exists unless numpy was imported
    if np is not None and isinstance(value, np.generic):
        array = np.asarray(value)
        if type(array) is not np.ndarray or array.shape != ():
            raise _NotContainer
        return (_SCALAR_TAG, _leaf(array, children, encode_leaf))
    if is_ndarray(value) or cls in (bytes, bytearray, memoryview) or is_pandas(value):
        return _leaf(value, children, encode_leaf)
    raise _NotContainer


def _leaf(value: Any, children: dict[Oid, Encoded], encode_leaf: Callable) -> Link:
    enc = encode_leaf(value)
    if enc is None or enc.kind not in ELEMENT_KINDS:
        raise _NotContainer
    oid = hash_chunks(enc.kind, enc.chunks)
    children.setdefault(oid, enc)
    return Link(oid)


def decode(body: Chunk, load: Callable[[Oid], Any]) -> Any:
    """The value of a container body; ``load(oid)`` reads one element (an ELEMENT_KINDS
    object)."""
    try:
        tree = json.loads(str(body, "utf-8"), object_hook=json_hook)
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"container body is malformed: {exc}") from None
    return _resolve(tree, load)


def _resolve(tree: Any, load: Callable[[Oid], Any]) -> Any:
    cls = type(tree)
    if cls is Link:
        return load(tree.oid)
    if cls is dict:
        return {k: _resolve(v, load) for k, v in tree.items()}
    if cls is tuple:
        if len(tree) == 2 and tree[0] == _SCALAR_TAG and type(tree[1]) is Link:
            return load(tree[1].oid)[()]
        return tuple(_resolve(v, load) for v in tree)
    if cls is list:
        return [_resolve(v, load) for v in tree]
    return tree
