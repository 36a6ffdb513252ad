"""History index objects kept encoded, so a flush encodes only the rows it adds.

An index chunk is the canonical JSON of ``{"columns": {field: [that field of each row, in
trial order]}}`` (:func:`daskperiment.history.chunk_of`), and the index root that of
``{"chunks": {"<k>": Link}, "type": ..., "version": 1}``. Canonical JSON is compositional
(:func:`daskperiment_store.codec.canonical_json`): the text of a value inside a larger one is
the value's own text, and keys are sorted. So this module keeps, for a chunk this process
wrote, the text of each column, and a flush that adds rows after the chunk's last one encodes
those rows only and appends their texts; for the root, the text of each link, so a flush
encodes the links it changes. The bodies are byte for byte what ``store.put(value)`` writes
for the same value: the same objects under the same oids, read by the same code
(tests/daskperiment/test_indexchunk.py compares them). Joining, hashing and compressing the
assembled body still grows with the chunk (at most 256 rows), at C speed.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from daskperiment_store import Encoded, Link
from daskperiment_store.codec import canonical_json

Row = dict[str, Any]


@functools.lru_cache(maxsize=64)
def _key_text(name: str) -> bytes:
    """The text of a column name as an object key (the same few names every flush)."""
    return canonical_json(name)


def _column_texts(fields: tuple[str, ...], rows: list[Row]) -> tuple[bytes, ...]:
    """Per field, the items of its JSON list for ``rows`` (the text between the brackets)."""
    return tuple(canonical_json([row.get(f) for row in rows])[1:-1] for f in fields)


class EncodedChunk:
    """The rows of one index chunk by trial id, and the text of each of its columns.

    Instances never change: :meth:`with_rows` makes a new one.
    """

    __slots__ = ("fields", "rows", "_columns", "_last")

    def __init__(self, fields: tuple[str, ...], rows: dict[int, Row], columns: tuple[bytes, ...]):
        self.fields = fields
        self.rows = rows
        self._columns = columns
        self._last = max(rows) if rows else None

    @classmethod
    def of(cls, fields: tuple[str, ...], rows: Mapping[int, Row]) -> EncodedChunk:
        """Every row encoded; :class:`daskperiment_store.errors.EncodeError` if a row holds
        something that is not plain JSON data."""
        ordered = [rows[n] for n in sorted(rows)]
        return cls(fields, dict(rows), _column_texts(fields, ordered))

    def with_rows(self, new_rows: Mapping[int, Row]) -> EncodedChunk:
        """This chunk with ``new_rows`` added (replacing rows of the same trial ids).

        Rows that all come after the last one are the usual case, and only they are encoded;
        any other addition encodes the whole chunk again.
        """
        if not new_rows:
            return self
        merged = {**self.rows, **new_rows}
        if self._last is not None and min(new_rows) <= self._last:
            return EncodedChunk.of(self.fields, merged)
        added = _column_texts(self.fields, [new_rows[n] for n in sorted(new_rows)])
        if self._last is None:
            return EncodedChunk(self.fields, merged, added)
        columns = tuple(old + b"," + new for old, new in zip(self._columns, added, strict=True))
        return EncodedChunk(self.fields, merged, columns)

    def encoded(self) -> Encoded:
        """The chunk object's body: ``{"columns": {...}}`` in canonical JSON."""
        named = sorted(zip(self.fields, self._columns, strict=True))
        parts = [_key_text(f) + b":[" + text + b"]" for f, text in named]
        body = b'{"columns":{' + b",".join(parts) + b"}}"
        return Encoded("json", [body], len(body))


class EncodedRoot:
    """The chunk links of an index root, and the text of each (``"<k>":{"$link":...}``).

    Instances never change: :meth:`with_links` makes a new one.
    """

    __slots__ = ("links", "_texts")

    def __init__(self, links: dict[str, Link], texts: dict[str, bytes]):
        self.links = links
        self._texts = texts

    @classmethod
    def of(cls, links: Mapping[str, Link]) -> EncodedRoot:
        """Every link encoded."""
        return cls({}, {}).with_links(links)

    def with_links(self, changed: Mapping[str, Link]) -> EncodedRoot:
        """This root with the ``changed`` chunk links set (added or replaced)."""
        texts = dict(self._texts)
        for key, link in changed.items():
            texts[key] = canonical_json(key) + b":" + canonical_json(link)
        return EncodedRoot({**self.links, **changed}, texts)

    def encoded(self, type_name: str, version: int) -> Encoded:
        """The root object's body: ``{"chunks": ..., "type": type_name, "version": version}``."""
        chunks = b",".join(self._texts[key] for key in sorted(self._texts))
        body = (
            b'{"chunks":{'
            + chunks
            + b'},"type":'
            + canonical_json(type_name)
            + b',"version":'
            + canonical_json(version)
            + b"}"
        )
        return Encoded("json", [body], len(body))
