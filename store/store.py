"""The object store: immutable objects addressed by digest, and refs naming them.

INTERFACE CONTRACT (bodies being implemented). Every other layer uses only this API.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .backends.base import Backend
from .digest import Oid


@dataclass(frozen=True)
class ObjectInfo:
    oid: Oid
    kind: str          # codec type tag: json, ndarray, pandas, bytes, pickle
    size: int          # canonical body size in bytes (uncompressed)
    stored_size: int   # bytes on the backend, header included
    compression: str   # "none" or "zstd"


@dataclass
class FsckReport:
    objects_checked: int = 0
    refs_checked: int = 0
    corrupt_objects: list[tuple[Oid, str, str]] = field(default_factory=list)  # (oid, key, reason)
    bad_refs: list[tuple[str, str]] = field(default_factory=list)              # (ref, reason)
    missing_links: list[tuple[Oid, Oid]] = field(default_factory=list)         # (from, missing)
    temp_files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is corrupt, dangling or missing (temp files alone are not an error)."""
        ...


@dataclass
class GcReport:
    dry_run: bool
    objects_removed: list[Oid] = field(default_factory=list)
    temp_removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    objects_kept: int = 0


@dataclass
class TransferReport:
    objects_copied: int = 0
    bytes_copied: int = 0
    refs_updated: list[str] = field(default_factory=list)
    refs_unchanged: list[str] = field(default_factory=list)


class Store:
    """A content-addressed object store over a :class:`Backend`.

    Objects: ``put(value) -> oid``, ``get(oid)``, ``has``, ``info``, ``iter_oids``,
    ``links``/``walk`` (objects may link to others through :class:`store.Link` inside JSON
    values). Refs: ``store.refs`` (a :class:`store.refs.RefStore`). Maintenance: ``fsck``,
    ``gc``, ``export_bundle``/``import_bundle``, ``push``/``pull``.
    """

    backend: Backend
    config: dict

    # objects -------------------------------------------------------------------------
    def put(self, value: Any) -> Oid: ...
    def put_bytes(self, data: bytes) -> Oid: ...           # same as put(bytes(data))
    def get(self, oid: str) -> Any: ...                    # verifies; CorruptObject / ObjectNotFound
    def get_raw(self, oid: str) -> tuple[str, memoryview]: ...  # (kind, canonical body), verified
    def has(self, oid: str) -> bool: ...
    def info(self, oid: str) -> ObjectInfo: ...
    def iter_oids(self) -> Iterator[Oid]: ...
    def links(self, oid: str) -> list[Oid]: ...            # direct links of one object
    def walk(self, oids: Iterable[str]) -> Iterator[Oid]: ...  # closure over links, each once

    # maintenance ---------------------------------------------------------------------
    def fsck(self) -> FsckReport: ...
    def gc(self, grace: float = 3600.0, dry_run: bool = False) -> GcReport: ...
    def export_bundle(self, path, refs: Iterable[str]) -> int: ...
    def import_bundle(self, path, ref_prefix_map=None) -> TransferReport: ...
    def push(self, other: Store, refs: Iterable[str] | str = "") -> TransferReport: ...
    def pull(self, other: Store, refs: Iterable[str] | str = "") -> TransferReport: ...
