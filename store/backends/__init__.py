"""Backends: where a store's bytes live (local filesystem, memory, S3, any fsspec filesystem)."""

from .base import Backend, Buffers, KeyInfo, validate_key, validate_prefix
from .fsspec import FsspecBackend
from .local import LocalBackend
from .memory import MemoryBackend
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
