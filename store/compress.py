"""Compression of object bodies: zstd, or nothing when it would not pay.

Compression ids, as written in object headers (:mod:`daskperiment_store.objfile`):

- ``0`` (:data:`NONE`): the payload is the body itself.
- ``1`` (:data:`ZSTD`): the payload is one zstd frame (content size recorded in the frame
  header) that decompresses to the body.

:func:`compress` stores a body raw when it is tiny (under :data:`MIN_SIZE` bytes) or when
compressing would not save at least :data:`MIN_SAVING` of it. For bodies larger than
:data:`SAMPLED_ABOVE`, that is judged first from :data:`SAMPLES` samples of
:data:`SAMPLE_SIZE` bytes spread over the body (start, middle, end), so incompressible data
such as random floats costs about 200 KB of compression, not a full failed pass. Compression
streams over the body's chunks without joining them. Bodies of at least
:data:`THREADED_ABOVE` bytes use zstd's worker threads. The level is zstd's (1..22, or negative
for faster, lighter compression; 3 by default). Compression settings never change digests:
those are taken over the uncompressed body.

Making a zstd context costs more than compressing a small record with it (about 10 us
against 3-5 us for 1.4 KB), so bodies of up to :data:`SAMPLED_ABOVE` bytes are compressed and
decompressed with one context per level per thread, kept for the thread's life (zstd
contexts are not thread-safe). A forked child starts with none of its parent's: it makes its
own on first use. Larger bodies get a new context per call, so a thread never keeps the
memory of a large compression (what it keeps: ~0.1 MB after records, ~1.1 MB at most).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import zstandard

from .errors import StoreError

Chunk = bytes | bytearray | memoryview

NONE = 0
ZSTD = 1
#: Names of the compression ids, as shown by ``Store.info``.
NAMES = {NONE: "none", ZSTD: "zstd"}

MIN_SIZE = 64
MIN_SAVING = 0.10
SAMPLE_SIZE = 64 * 1024
SAMPLES = 3
SAMPLED_ABOVE = 4 * SAMPLES * SAMPLE_SIZE
THREADED_ABOVE = 4 * 1024 * 1024
#: zstd needs at least a few bytes per 128 KiB block, so no valid frame expands more than
#: 32768 times; a larger claim is refused before any memory is allocated for it.
MAX_EXPANSION = 1 << 16


class DecompressError(StoreError, ValueError):
    """A payload does not decompress to exactly the body size its header states."""


class _Contexts(threading.local):
    """This thread's zstd contexts for small bodies (see the module docstring)."""

    def __init__(self) -> None:
        self.compressors: dict[int, zstandard.ZstdCompressor] = {}
        self.decompressor: zstandard.ZstdDecompressor | None = None


_contexts = _Contexts()


def _forget_contexts() -> None:
    """In a forked child: drop the contexts copied from the parent (made by the thread that
    forked, or by threads the child does not have); the child makes its own."""
    global _contexts
    _contexts = _Contexts()


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere there is no fork
    os.register_at_fork(after_in_child=_forget_contexts)


def _compressor(level: int, size: int) -> zstandard.ZstdCompressor:
    """A single-threaded compressor at ``level`` for a body of ``size`` bytes: this thread's
    own for small bodies, a new one for large ones."""
    if size > SAMPLED_ABOVE:
        return zstandard.ZstdCompressor(level=level)
    contexts = _contexts
    cctx = contexts.compressors.get(level)
    if cctx is None:
        cctx = contexts.compressors[level] = zstandard.ZstdCompressor(level=level)
    return cctx


def _decompressor(size: int) -> zstandard.ZstdDecompressor:
    """A decompressor for a body of ``size`` bytes (this thread's own for small bodies)."""
    if size > SAMPLED_ABOVE:
        return zstandard.ZstdDecompressor()
    contexts = _contexts
    if contexts.decompressor is None:
        contexts.decompressor = zstandard.ZstdDecompressor()
    return contexts.decompressor


def _nbytes(chunk: Chunk) -> int:
    return chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)


def _read_at(chunks: Sequence[Chunk], offset: int, n: int) -> bytes:
    """``n`` bytes starting at ``offset`` of the concatenation of ``chunks``."""
    parts = []
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        if offset >= view.nbytes:
            offset -= view.nbytes
            continue
        part = view[offset : offset + n]
        parts.append(part)
        n -= part.nbytes
        offset = 0
        if n <= 0:
            break
    return b"".join(parts)


def _sample_says_compressible(chunks: Sequence[Chunk], size: int, level: int) -> bool:
    cctx = _compressor(level, size)  # size > SAMPLED_ABOVE: a new one
    step = (size - SAMPLE_SIZE) // (SAMPLES - 1)
    raw = packed = 0
    for i in range(SAMPLES):
        sample = _read_at(chunks, i * step, SAMPLE_SIZE)
        raw += len(sample)
        packed += len(cctx.compress(sample))
    return packed <= raw * (1 - MIN_SAVING)


def _zstd_threads(size: int, threads: int) -> int:
    """zstd's ``threads`` argument: 0 means no worker threads, -1 one per logical CPU."""
    if size < THREADED_ABOVE or threads == 1:
        return 0
    if threads <= 0:
        return -1 if (os.cpu_count() or 1) > 1 else 0
    return threads


def compress(
    chunks: Sequence[Chunk], size: int, level: int = 3, threads: int = 0
) -> tuple[int, list[Chunk]]:
    """Compress a body given as ``chunks`` totalling ``size`` bytes.

    Returns ``(compression_id, payload_chunks)``; with id :data:`NONE` the payload chunks are
    the input chunks. ``threads``: 0 (default) or negative uses every CPU for large bodies,
    1 never uses worker threads, ``n`` uses up to ``n``.
    """
    if size < MIN_SIZE:
        return NONE, list(chunks)
    if size > SAMPLED_ABOVE and not _sample_says_compressible(chunks, size, level):
        return NONE, list(chunks)
    workers = _zstd_threads(size, threads)
    if workers:
        cctx = zstandard.ZstdCompressor(level=level, threads=workers)
    else:
        cctx = _compressor(level, size)
    out: list[Chunk]
    if len(chunks) == 1 and not workers:
        out = [cctx.compress(chunks[0])]  # one call; the frame records the content size
    else:
        stream = cctx.compressobj(size=size)
        out = [stream.compress(chunk) for chunk in chunks]
        out.append(stream.flush())
        out = [part for part in out if part]
    if sum(len(part) for part in out) > size * (1 - MIN_SAVING):
        return NONE, list(chunks)
    return ZSTD, out


def decompress(compression_id: int, payload: Chunk, size: int) -> memoryview:
    """The body of ``size`` bytes held in ``payload``; :class:`DecompressError` if the
    payload does not hold exactly that many bytes.

    A zstd payload is decompressed into a fresh writable buffer aligned to 64 bytes, so
    arrays in the body need no copy; a raw payload is returned as a view of itself.
    """
    if compression_id == NONE:
        view = memoryview(payload).cast("B")
        if view.nbytes != size:
            raise DecompressError(f"raw payload is {view.nbytes} bytes, header says {size}")
        return view
    if compression_id != ZSTD:
        raise DecompressError(f"unknown compression id {compression_id}")
    try:
        return _unzstd(payload, size)
    except zstandard.ZstdError as exc:
        raise DecompressError(f"zstd payload does not decompress: {exc}") from None


#: Payloads at least this large decompress into a numpy buffer (no zero-fill, aligned).
_NUMPY_BUFFER = 1 << 20


def _aligned_buffer(size: int) -> memoryview:
    """A writable buffer of ``size`` bytes starting at a multiple of 64 in memory.

    ``np.empty``, unlike ``bytearray(size)``, does not zero-fill (a whole extra pass over
    the memory) and lets the kernel back large buffers with huge pages.
    """
    if size < _NUMPY_BUFFER:
        # small (records, index chunks): a bytearray, so reading them never imports numpy
        import ctypes

        small = bytearray(size + 64)
        start = -ctypes.addressof(ctypes.c_char.from_buffer(small)) % 64
        return memoryview(small)[start : start + size]
    import numpy as np

    raw = np.empty(size + 64, dtype=np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + size].data


def _unzstd(payload: Chunk, size: int) -> memoryview:
    if size > max(_nbytes(payload), 1) * MAX_EXPANSION:
        raise DecompressError(f"{_nbytes(payload)} bytes cannot decompress to {size}")
    declared = zstandard.frame_content_size(payload)
    if declared not in (size, -1):  # -1: the frame does not record its size
        raise DecompressError(f"zstd frame holds {declared} bytes, header says {size}")
    out = _aligned_buffer(size)
    # read to the end below, before anything else can use this thread's decompressor
    reader = _decompressor(size).stream_reader(payload, read_across_frames=False)
    filled = 0
    while filled < size:
        n = reader.readinto(out[filled:])
        if n == 0:
            raise DecompressError(f"zstd payload holds only {filled} bytes, header says {size}")
        filled += n
    if reader.read(1):
        raise DecompressError(f"zstd payload holds more than the {size} bytes its header says")
    return out
