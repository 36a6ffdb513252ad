"""Backends: where a store's bytes live (local filesystem, memory, any fsspec filesystem)."""

from .base import Backend, Buffers, KeyInfo

__all__ = ["Backend", "Buffers", "KeyInfo"]
