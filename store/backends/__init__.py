"""Backends: where a store's bytes live (local filesystem, memory, any fsspec filesystem)."""

from .base import Backend, Buffers, KeyInfo, validate_key, validate_prefix
from .fsspec import FsspecBackend
from .local import LocalBackend
from .memory import MemoryBackend

__all__ = [
    "Backend",
    "Buffers",
    "FsspecBackend",
    "KeyInfo",
    "LocalBackend",
    "MemoryBackend",
    "validate_key",
    "validate_prefix",
]
