"""A git-like content-addressed object store (independent of dask and daskperiment).

>>> import daskperiment_store as store
>>> s = store.open("my_store")            # a local directory; "memory://x", "s3://bucket/p"
>>> oid = s.put({"lr": 0.1, "layers": [64, 32]})
>>> s.get(oid)
{'layers': [64, 32], 'lr': 0.1}
>>> s.refs.create("runs/1", oid)

See ``docs/store-format.md`` for the on-disk format.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import errors
from .backends import Backend, LocalBackend, MemoryBackend
from .codec import Encoded, Link, decode, encode
from .codec import digest as digest
from .config import CONFIG_KEY, load_config
from .digest import ALGORITHM, Oid, is_oid, validate_oid
from .errors import (
    BundleError,
    CorruptObject,
    CorruptRef,
    EncodeError,
    InvalidKey,
    InvalidOid,
    InvalidRefName,
    KeyNotFound,
    LockTimeout,
    NotAtomic,
    NotFound,
    ObjectNotFound,
    ObjectTooLarge,
    ReadOnlyStore,
    RefConflict,
    RefExists,
    RefNotFound,
    StoreError,
    StoreGone,
    StoreNotFound,
    UnexpectedKind,
    UnsupportedFormat,
)
from .store import Store

if TYPE_CHECKING:
    from .backends import FsspecBackend
    from .reports import FsckReport, GcReport, ObjectInfo, TransferReport

__all__ = [
    "is_store",
    "ALGORITHM",
    "Backend",
    "BundleError",
    "CorruptObject",
    "CorruptRef",
    "EncodeError",
    "Encoded",
    "FsckReport",
    "FsspecBackend",
    "GcReport",
    "InvalidKey",
    "InvalidOid",
    "InvalidRefName",
    "KeyNotFound",
    "Link",
    "LocalBackend",
    "LockTimeout",
    "MemoryBackend",
    "NotAtomic",
    "NotFound",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectTooLarge",
    "Oid",
    "ReadOnlyStore",
    "RefConflict",
    "RefExists",
    "RefNotFound",
    "Store",
    "StoreError",
    "StoreGone",
    "StoreNotFound",
    "UnexpectedKind",
    "TransferReport",
    "UnsupportedFormat",
    "decode",
    "digest",
    "encode",
    "errors",
    "is_oid",
    "open",
    "validate_oid",
]

#: Loaded on first use (PEP 562): opening a local store needs neither the fsspec / S3
#: backends nor the report classes of fsck, gc and transfers.
_LAZY = {
    "FsspecBackend": "backends",
    "FsckReport": "reports",
    "GcReport": "reports",
    "ObjectInfo": "reports",
    "TransferReport": "reports",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


#: Accepted values of ``open(..., durability=)``.
DURABILITIES = ("atomic", "fsync")


def open(  # noqa: A001 - the natural name, like io.open; used as store.open
    target: str | os.PathLike[str] | Backend | Store,
    create: bool = True,
    read_only: bool = False,
    durability: str = "atomic",
    compression_level: int = 3,
    compression_threads: int = 0,
    max_object_size: int | None = None,
) -> Store:
    """Open the store at ``target``, creating it if it does not exist and ``create`` is true.

    ``target``: a local path (the fast path), a URL handled by fsspec (``memory://name``,
    ``s3://bucket/prefix``; ``file://`` means a local path), a :class:`Backend` (used as is;
    its own durability applies), or a :class:`Store` (returned as is).
    ``durability``: ``"atomic"`` (every write is temp file + rename: a crash never leaves a
    partial object or ref, but the last writes may be lost with the machine) or ``"fsync"``
    (also flush file and directory to disk before a write returns).
    ``compression_level``: zstd level for new objects (does not change any digest);
    ``compression_threads``: zstd worker threads for large objects (0: chosen automatically).
    ``max_object_size``: the largest object body (bytes, uncompressed) this Store reads or
    accepts from a bundle or another store, checked against the object's header before
    anything is decompressed (:class:`ObjectTooLarge`); None means the environment variable
    ``DASKPERIMENT_STORE_MAX_OBJECT_SIZE``, else 4 GiB.

    Raises :class:`StoreNotFound` if there is no store and ``create`` is false (or
    ``read_only``), :class:`UnsupportedFormat` if the location holds something else or a
    store in a newer format.
    """
    if isinstance(target, Store):
        return target
    if durability not in DURABILITIES:
        raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
    if type(compression_level) is not int or not -(1 << 17) <= compression_level <= 22:
        raise ValueError(
            f"compression_level must be an int from -131072 to 22, not {compression_level!r}"
        )
    backend = _backend_for(target, read_only=read_only, durability=durability, create=create)
    config = load_config(backend, create=create)
    return Store(
        backend,
        config,
        compression_level=compression_level,
        compression_threads=compression_threads,
        max_object_size=max_object_size,
    )


def is_store(target: str | os.PathLike[str] | Backend | Store) -> bool:
    """Whether a store exists at ``target`` (anything :func:`open` takes): its ``config``
    object is there. Never creates anything; a local path is one ``stat``, a URL or a
    backend one ``exists`` call."""
    if isinstance(target, Store):
        return True
    if isinstance(target, Backend):
        return target.exists(CONFIG_KEY)
    text = os.fspath(target)
    if "://" in text and not text.startswith("file://"):
        from .backends import FsspecBackend

        return FsspecBackend(text, read_only=True, create=False).exists(CONFIG_KEY)
    return (Path(text.removeprefix("file://")).expanduser() / CONFIG_KEY).is_file()


def _backend_for(target: Any, *, read_only: bool, durability: str, create: bool) -> Backend:
    """The backend a target names (see :func:`open`)."""
    if isinstance(target, Backend):
        if read_only and not target.read_only:
            raise ValueError(
                f"{target!r} is writable; to open it read-only, make the backend read-only "
                "(e.g. LocalBackend(path, read_only=True))"
            )
        return target
    if isinstance(target, str) and "://" in target and not target.startswith("file://"):
        from .backends import FsspecBackend

        return FsspecBackend(target, read_only=read_only, durability=durability, create=create)
    if isinstance(target, str) and target.startswith("file://"):
        target = target.removeprefix("file://")
    if not isinstance(target, str | os.PathLike):
        raise TypeError(
            f"cannot open a store from {type(target).__name__}: pass a path, a URL, "
            "a Backend or a Store"
        )
    path = Path(target).expanduser()
    if path.exists() and not path.is_dir():
        raise UnsupportedFormat(str(path), "it is a file, not a store directory")
    return LocalBackend(path, read_only=read_only, durability=durability, create=create)
