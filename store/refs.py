"""Refs: names (``experiments/x/trials/7``) pointing at object ids.

A ref named ``name`` is the backend key ``refs/<name>`` holding the 32-hex oid followed by
``"\\n"`` (33 bytes). Creating a ref (``create``) and moving one from an expected value
(``swap``) are atomic across processes on every backend whose ``atomic_put_if_absent`` /
``atomic_swap`` is true: of N processes creating the same ref exactly one succeeds, and a swap
from a stale value fails with :class:`daskperiment_store.errors.RefConflict` instead of overwriting.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .backends.base import RECENT_VALUES, Backend
from .digest import Oid, is_oid, validate_oid
from .errors import (
    CorruptRef,
    InvalidKey,
    InvalidRefName,
    KeyNotFound,
    RefConflict,
    RefExists,
    RefNotFound,
)

#: Backend key prefix under which refs live.
REFS_PREFIX = "refs/"
#: Longest allowed component, in UTF-8 bytes (what common filesystems accept in a file name).
MAX_COMPONENT_BYTES = 255
_BAD_CHAR = re.compile(r"[\x00-\x1f\x7f\\]")


def validate_ref_name(name: object) -> str:
    """Return ``name`` if it is a valid ref name, else raise :class:`InvalidRefName` saying why.

    A ref name is ``/``-separated like a relative path: not empty, no leading or trailing
    ``/``, no empty, ``.`` or ``..`` components, no backslash or control characters, no
    component ending in ``.lock`` (as in git) and no component longer than 255 bytes.
    """
    if not isinstance(name, str):
        raise InvalidRefName(name, f"ref names are str, not {type(name).__name__}")
    reason = _name_problem(name)
    if reason:
        raise InvalidRefName(name, reason)
    return name


#: Names made only of these characters, in components of at most 200, break no rule below:
#: the common case is answered by one match (a ref is named several times per trial).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_\-]{1,200}(?:/[A-Za-z0-9_\-]{1,200})*\Z")


def _name_problem(name: str) -> str:
    return "" if _PLAIN_NAME.match(name) else _any_name_problem(name)


def _any_name_problem(name: str) -> str:
    if not name:
        return "it is empty"
    if name.startswith("/"):
        return "it is absolute (starts with '/')"
    if name.endswith("/"):
        return "it ends with '/'"
    bad = _BAD_CHAR.search(name)
    if bad:
        ch = bad.group()
        return (
            "it contains a backslash" if ch == "\\" else f"it contains the control character {ch!r}"
        )
    for part in name.split("/"):
        if part == "":
            return "it has an empty component ('//')"
        if part in (".", ".."):
            return f"it has a {part!r} component"
        if part.endswith(".lock"):
            return f"component {part!r} ends with '.lock'"
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            return f"component {part[:20]!r}... is longer than {MAX_COMPONENT_BYTES} bytes"
    return ""


def _validate_prefix(prefix: object) -> str:
    """A name prefix: whole components must be valid; the last one may be partial
    (``"trials/1"`` lists ``trials/1``, ``trials/10``, ...)."""
    if not isinstance(prefix, str):
        raise InvalidRefName(prefix, f"ref prefixes are str, not {type(prefix).__name__}")
    whole, _, partial = prefix.rpartition("/")
    reason = _name_problem(whole) if whole else ""
    if not reason and partial and _BAD_CHAR.search(partial):
        reason = _name_problem(partial)
    if not reason and prefix.startswith("/"):
        reason = _name_problem(prefix)
    if reason:
        raise InvalidRefName(prefix, reason)
    return prefix


def _encode(oid: str) -> bytes:
    data = validate_oid(oid).encode("ascii") + b"\n"
    RECENT_VALUES.add((data,))
    return data


class RefStore:
    """The refs of one store, over its backend (``store.refs``)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def __repr__(self) -> str:
        return f"RefStore({self.backend!r})"

    def _key(self, name: str) -> str:
        return REFS_PREFIX + validate_ref_name(name)

    def _decode(self, name: str, raw: bytes | bytearray | memoryview) -> Oid:
        data = bytes(raw)
        if len(data) != 33 or data[32:] != b"\n" or not is_oid(text := data[:32].decode("latin-1")):
            raise CorruptRef(name, self.backend.url, data)
        return Oid(text)

    def _decode_all(self, raw: dict[str, bytes | bytearray | memoryview]) -> dict[str, Oid]:
        """``{name: oid}`` sorted by name from ``{backend key: value}``; values are remembered
        (:data:`~daskperiment_store.backends.base.RECENT_VALUES`) so a listing of S3 need not read them."""
        n = len(REFS_PREFIX)
        out = {key[n:]: self._decode(key[n:], raw[key]) for key in sorted(raw)}
        RECENT_VALUES.add(v if isinstance(v, bytes) else bytes(v) for v in raw.values())
        return out

    def get(self, name: str) -> Oid:
        """The oid ``name`` points at; :class:`RefNotFound` (a ``KeyError``) if absent."""
        try:
            raw = self.backend.get(self._key(name))
        except KeyNotFound:
            raise RefNotFound(name, self.backend.url) from None
        oid = self._decode(name, raw)
        RECENT_VALUES.add((bytes(raw),))
        return oid

    def _get_or_none(self, name: str) -> str | None:
        try:
            return self.get(name)
        except RefNotFound:
            return None
        except CorruptRef as exc:
            return f"<corrupt: {exc.content[:40]!r}>"

    def has(self, name: str) -> bool:
        """Whether the ref exists."""
        return self.backend.exists(self._key(name))

    def create(self, name: str, oid: str) -> None:
        """Create ``name`` pointing at ``oid``; :class:`RefExists` if it already exists.

        Atomic: of several processes creating the same ref, exactly one succeeds.
        """
        key = self._key(name)
        if not self.backend.put_if_absent(key, _encode(oid)):
            current = self._get_or_none(name)
            raise RefExists(name, current or "(deleted again since)")

    def swap(self, name: str, expected: str | None, new: str | None) -> None:
        """Point ``name`` at ``new`` if it points at ``expected``; atomic compare-and-swap.

        ``expected=None`` means the ref must not exist; ``new=None`` deletes it. A ref that
        holds anything else raises :class:`RefConflict` with ``expected`` and ``actual``.
        """
        key = self._key(name)
        old = None if expected is None else _encode(expected)
        value = None if new is None else _encode(new)
        if not self.backend.swap(key, old, value):
            raise RefConflict(name, expected, self._get_or_none(name))

    def set(self, name: str, oid: str) -> None:
        """Point ``name`` at ``oid`` whatever it held (not a compare-and-swap)."""
        self.backend.put(self._key(name), _encode(oid))

    def delete(self, name: str) -> None:
        """Remove ``name``; :class:`RefNotFound` if absent."""
        try:
            self.backend.delete(self._key(name))
        except KeyNotFound:
            raise RefNotFound(name, self.backend.url) from None

    def names(self, prefix: str = "") -> list[str]:
        """Sorted names of the refs starting with ``prefix``, without reading them."""
        _validate_prefix(prefix)
        try:
            keys = self.backend.list(REFS_PREFIX + prefix)
        except InvalidKey as exc:
            raise InvalidRefName(prefix, exc.reason) from None
        n = len(REFS_PREFIX)
        return sorted(k[n:] for k in keys)

    def list(self, prefix: str = "") -> dict[str, Oid]:
        """``{name: oid}`` for every ref starting with ``prefix`` (a name prefix such as
        ``"experiments/x/trials/"``), sorted by name. A ref deleted while listing is left
        out; a corrupt one raises :class:`CorruptRef` naming it.

        One listing and one bulk read (:meth:`Backend.list_values`): on S3 the values are
        fetched concurrently, and those this process has already seen are known from the
        listing's ETags without being read."""
        _validate_prefix(prefix)
        try:
            raw = self.backend.list_values(REFS_PREFIX + prefix)
        except InvalidKey as exc:
            raise InvalidRefName(prefix, exc.reason) from None
        return self._decode_all(raw)

    def get_many(self, names: Iterable[str]) -> dict[str, Oid]:
        """``{name: oid}`` of those of ``names`` that exist, sorted by name (read concurrently
        on S3); :class:`InvalidRefName` for an invalid name, :class:`CorruptRef` for a
        corrupt ref."""
        keys = [self._key(name) for name in names]
        return self._decode_all(self.backend.get_many(keys))
