"""Errors raised by the store.

Every error derives from :class:`StoreError`; where a built-in exception fits, it is mixed in
(``ObjectNotFound`` is also a ``KeyError``), so callers can catch either. Errors carry their
data as attributes so that callers never parse messages.
"""

from __future__ import annotations

from collections.abc import Iterable


class StoreError(Exception):
    """Root of every error the store raises."""


class NotFound(StoreError, KeyError):
    """Something addressed by name or digest does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return str(self.args[0]) if self.args else ""


class KeyNotFound(NotFound):
    """A backend key does not exist."""

    def __init__(self, key: str, where: str = "") -> None:
        self.key = key
        super().__init__(f"no such key {key!r}" + (f" in {where}" if where else ""))


class ObjectNotFound(NotFound):
    """No object with this digest is stored."""

    def __init__(self, oid: str, where: str = "") -> None:
        self.oid = oid
        super().__init__(f"object {oid} not found" + (f" in {where}" if where else ""))


class RefNotFound(NotFound):
    """No ref with this name exists."""

    def __init__(self, ref: str, where: str = "") -> None:
        self.ref = ref
        super().__init__(f"ref {ref!r} not found" + (f" in {where}" if where else ""))


class InvalidOid(StoreError, ValueError):
    """A string that is not 32 lowercase hexadecimal characters was used as a digest."""

    def __init__(self, oid: object) -> None:
        self.oid = oid
        super().__init__(
            f"invalid object id {oid!r}: expected 32 lowercase hexadecimal characters (xxh3-128)"
        )


class InvalidRefName(StoreError, ValueError):
    """A ref name is empty, absolute, has empty or '.'/'..' parts, or control characters."""

    def __init__(self, ref: object, reason: str) -> None:
        self.ref = ref
        self.reason = reason
        super().__init__(f"invalid ref name {ref!r}: {reason}")


class InvalidKey(StoreError, ValueError):
    """A backend key would escape the store root or is otherwise malformed."""

    def __init__(self, key: object, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"invalid key {key!r}: {reason}")


class RefExists(StoreError):
    """A ref that must not exist yet already exists."""

    def __init__(self, ref: str, current: str) -> None:
        self.ref = ref
        self.current = current
        super().__init__(f"ref {ref!r} already exists (points at {current})")


class RefConflict(StoreError):
    """A compare-and-swap found a different value than the caller expected."""

    def __init__(self, ref: str, expected: str | None, actual: str | None) -> None:
        self.ref = ref
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"ref {ref!r} changed under us: expected {expected or '(absent)'}, "
            f"found {actual or '(absent)'}; re-read the ref and retry"
        )


class RefConflicts(RefConflict):
    """Several refs to be written (import, push, pull) already point elsewhere.

    Raised before any ref is changed, so nothing was written to the refs. ``conflicts`` maps
    each ref name to ``(incoming oid, existing oid)``.
    """

    def __init__(self, conflicts: dict[str, tuple[str, str]], where: str = "") -> None:
        self.conflicts = dict(conflicts)
        first = next(iter(self.conflicts))
        self.ref, self.expected, self.actual = (
            first,
            self.conflicts[first][0],
            self.conflicts[first][1],
        )
        lines = [
            f"  {name}: incoming {new}, existing {old}"
            for name, (new, old) in sorted(self.conflicts.items())
        ]
        StoreError.__init__(
            self,
            f"{len(self.conflicts)} ref(s) already point elsewhere"
            + (f" in {where}" if where else "")
            + "; nothing was changed (import under another name or resolve by hand):\n"
            + "\n".join(lines),
        )


class CorruptRef(StoreError, ValueError):
    """A ref's stored content is not an oid followed by a newline."""

    def __init__(self, ref: str, where: str, content: bytes) -> None:
        self.ref = ref
        self.content = content
        shown = content[:60] + (b"..." if len(content) > 60 else b"")
        super().__init__(
            f"ref {ref!r} in {where} is corrupt: expected 32 lowercase hex digits and a "
            f"newline, found {shown!r}; fix it with refs.set() or remove it with refs.delete()"
        )


class CorruptObject(StoreError):
    """A stored object's bytes do not hash to its name, or its header is damaged."""

    def __init__(self, oid: str, path: str, reason: str, actual: str | None = None) -> None:
        self.oid = oid
        self.path = path
        self.reason = reason
        self.actual = actual
        super().__init__(
            f"object {oid} at {path} is corrupt: {reason}"
            + (f" (content hashes to {actual})" if actual else "")
            + "; run fsck, delete the damaged file, then restore it from another copy "
            "(pull or bundle import copy objects the store lacks) or gc it"
        )


class UnexpectedKind(StoreError, ValueError):
    """An object read for one purpose has another kind: the store is malformed or hostile.

    Raised by ``Store.get(oid, kinds=...)`` from the object's header, before anything is
    decoded, so a ``pickle`` object where plain data belongs never runs.
    """

    def __init__(self, oid: str, kind: str, expected: Iterable[str], where: str = "") -> None:
        self.oid = oid
        self.kind = kind
        self.expected = tuple(sorted(expected))
        super().__init__(
            f"object {oid}"
            + (f" in {where}" if where else "")
            + f" is malformed or hostile: it is a {kind!r} object where only "
            + " or ".join(repr(k) for k in self.expected)
            + " belongs; it was not loaded (nothing ran). Ask whoever wrote it, or remove the "
            "ref that names it"
        )


class ObjectTooLarge(StoreError):
    """An object's header declares a body larger than the store's object size limit.

    Checked before anything is decompressed, so a hostile or damaged header cannot make a
    reader allocate more than the limit.
    """

    def __init__(self, oid: str, path: str, size: int, limit: int) -> None:
        self.oid = oid
        self.path = path
        self.size = size
        self.limit = limit
        super().__init__(
            f"object {oid} at {path} declares a {size}-byte body, over the object size limit "
            f"of {limit} bytes; if you trust it, raise the limit with "
            f"store.open(..., max_object_size=N) or the environment variable "
            f"DASKPERIMENT_STORE_MAX_OBJECT_SIZE=N (bytes)"
        )


class ReadOnlyStore(StoreError, PermissionError):
    """A write was attempted on a store opened read-only or on a read-only filesystem."""

    def __init__(self, where: str, detail: str = "") -> None:
        self.where = where
        super().__init__(f"store {where} is read-only" + (f": {detail}" if detail else ""))


class StoreNotFound(StoreError, FileNotFoundError):
    """``open(..., create=False)`` on a location that holds no store."""

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(f"no store at {where}; pass create=True to make one there")


class StoreGone(StoreNotFound):
    """A write to a store whose root was removed while it was open (e.g. ``rm -rf``).

    Writes never recreate a deleted store: that would leave a store without its ``config``,
    which no later open could read.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        FileNotFoundError.__init__(
            self,
            f"the store at {where} is gone (its directory was removed while it was open); "
            "nothing was written. Open it again with store.open() to create a new store there",
        )


class UnsupportedFormat(StoreError):
    """The store's config names a format version or hash algorithm this version cannot read."""

    def __init__(self, where: str, detail: str) -> None:
        self.where = where
        super().__init__(f"cannot open store {where}: {detail}")


class NotAtomic(StoreError):
    """The filesystem cannot perform this operation atomically, so the store refuses it."""


class LockTimeout(StoreError, TimeoutError):
    """A lock could not be taken in time."""

    def __init__(self, key: str, seconds: float) -> None:
        self.key = key
        self.seconds = seconds
        super().__init__(f"could not lock {key!r} within {seconds:g} s")


class BundleError(StoreError, ValueError):
    """A bundle file is malformed, truncated, hostile or does not verify."""


class EncodeError(StoreError, TypeError):
    """A value cannot be encoded by any codec."""
