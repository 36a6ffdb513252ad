"""Digests: xxh3-128 over an object's canonical bytes, as 32 lowercase hex characters.

The canonical bytes of an object are ``kind.encode("ascii") + b"\\0" + body`` where ``kind``
is the codec's type tag (``json``, ``ndarray``, ``pandas``, ``bytes``, ``pickle``) and
``body`` the codec's canonical encoding. Hashing is streamed over the body's chunks, so a
large buffer is hashed in place without being copied.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NewType

import xxhash

from .errors import InvalidOid

Oid = NewType("Oid", str)

#: Name of the hash algorithm, as written into a store's config.
ALGORITHM = "xxh3-128"
OID_LENGTH = 32
_OID_RE = re.compile(r"[0-9a-f]{32}")


def is_oid(value: object) -> bool:
    """Whether ``value`` is a well-formed digest string."""
    return isinstance(value, str) and _OID_RE.fullmatch(value) is not None


def validate_oid(value: object) -> Oid:
    """Return ``value`` as an :data:`Oid`, or raise :class:`InvalidOid`."""
    if not is_oid(value):
        raise InvalidOid(value)
    return Oid(value)  # type: ignore[arg-type]


def hash_chunks(kind: str, chunks: Iterable[bytes | bytearray | memoryview]) -> Oid:
    """Digest of an object of type ``kind`` whose body is the concatenation of ``chunks``."""
    h = xxhash.xxh3_128()
    h.update(kind.encode("ascii") + b"\0")
    for chunk in chunks:
        h.update(chunk)
    return Oid(h.hexdigest())
