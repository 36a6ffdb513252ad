"""What the store's operations report: object info, fsck, gc and transfer outcomes.

Plain data classes, importable without the store itself (store.fsck, store.gc, store.sync
and store.bundle fill them in; :class:`daskperiment_store.store.Store` returns them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .digest import Oid


@dataclass(frozen=True)
class ObjectInfo:
    """What an object's header says, and how many bytes it takes on the backend."""

    oid: Oid
    kind: str  # codec type tag: json, ndarray, pandas, bytes, pickle
    size: int  # canonical body size in bytes (uncompressed)
    stored_size: int  # bytes on the backend, header included
    compression: str  # "none" or "zstd"


@dataclass
class FsckReport:
    """Outcome of :meth:`Store.fsck`."""

    objects_checked: int = 0
    refs_checked: int = 0
    corrupt_objects: list[tuple[Oid, str, str]] = field(default_factory=list)  # (oid, key, reason)
    bad_refs: list[tuple[str, str]] = field(default_factory=list)  # (ref, reason)
    missing_links: list[tuple[Oid, Oid]] = field(default_factory=list)  # (from, missing)
    temp_files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is corrupt, dangling or missing (temp files alone are not an error)."""
        return not (self.corrupt_objects or self.bad_refs or self.missing_links)

    def summary(self) -> str:
        """A few human-readable lines, one per problem."""
        lines = [
            f"checked {self.objects_checked} objects and {self.refs_checked} refs: "
            + ("ok" if self.ok else "PROBLEMS FOUND")
        ]
        lines += [f"corrupt object {o} ({k}): {r}" for o, k, r in self.corrupt_objects]
        lines += [f"bad ref {n}: {r}" for n, r in self.bad_refs]
        lines += [f"object {p} links to missing object {m}" for p, m in self.missing_links]
        lines += [f"leftover temp file {t}" for t in self.temp_files]
        return "\n".join(lines)


@dataclass
class GcReport:
    """Outcome of :meth:`Store.gc` (with ``dry_run``: what would have been removed)."""

    dry_run: bool
    objects_removed: list[Oid] = field(default_factory=list)
    temp_removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    objects_kept: int = 0


@dataclass
class TransferReport:
    """Outcome of a push, pull or bundle import."""

    objects_copied: int = 0
    bytes_copied: int = 0
    refs_updated: list[str] = field(default_factory=list)
    refs_unchanged: list[str] = field(default_factory=list)
