"""Backends: where a store's bytes live (local filesystem, memory, S3, any fsspec filesystem).

The fsspec and S3 backends load on first use (PEP 562): opening a local store never needs
them. Loading one loads both, as ``s3`` registers :class:`S3Backend` for ``s3://`` URLs.
"""

from typing import TYPE_CHECKING, Any

from .base import Backend, Buffers, KeyInfo, validate_key, validate_prefix
from .local import LocalBackend
from .memory import MemoryBackend

if TYPE_CHECKING:
    from .fsspec import FsspecBackend
    from .s3 import S3Backend

__all__ = [
    "Backend",
    "Buffers",
    "FsspecBackend",
    "KeyInfo",
    "LocalBackend",
    "MemoryBackend",
    "S3Backend",
    "validate_key",
    "validate_prefix",
]


def __getattr__(name: str) -> Any:
    if name not in ("FsspecBackend", "S3Backend"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .fsspec import FsspecBackend
    from .s3 import S3Backend

    globals().update(FsspecBackend=FsspecBackend, S3Backend=S3Backend)
    return globals()[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
