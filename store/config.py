"""The store's ``config`` file: what format a store is in, written once when it is created.

``config`` is the first key of every store. It is created with ``put_if_absent``, so
processes opening a new store at the same time agree on one config, and it is never
rewritten. Reading it tells a reader whether it can understand the store at all: a newer
format version or an unknown hash algorithm is refused with :class:`UnsupportedFormat`
instead of being misread.
"""

from __future__ import annotations

import json
from typing import Any

from .backends.base import Backend
from .digest import ALGORITHM
from .errors import KeyNotFound, StoreNotFound, UnsupportedFormat

CONFIG_KEY = "config"
FORMAT_NAME = "daskperiment-store"
#: The newest format version this code reads and the one it writes.
FORMAT_VERSION = 1
#: Hash algorithms and compressions this code understands.
HASHES = frozenset({ALGORITHM})
COMPRESSIONS = frozenset({"zstd"})
#: A config larger than this is not one of ours (protects against reading a huge foreign file).
MAX_CONFIG_SIZE = 64 * 1024


def default_config() -> dict[str, Any]:
    """The config written into a new store."""
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "hash": ALGORITHM,
        "compression": "zstd",
    }


def encode_config(config: dict[str, Any]) -> bytes:
    """Canonical JSON (sorted keys, no spaces, ASCII) followed by one newline."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.encode("ascii") + b"\n"


def parse_config(data: bytes | bytearray | memoryview, where: str) -> dict[str, Any]:
    """Decode and validate a config; raise :class:`UnsupportedFormat` if it cannot be read."""
    if len(data) > MAX_CONFIG_SIZE:
        raise UnsupportedFormat(where, f"'config' is {len(data)} bytes, not a store config")
    try:
        config = json.loads(bytes(data))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsupportedFormat(
            where, f"'config' is not JSON ({exc}); this location does not hold a store"
        ) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise UnsupportedFormat(
            where, f"'config' does not describe a {FORMAT_NAME} (format={_field(config)!r})"
        )
    _check_version(config.get("version"), where)
    if config.get("hash") not in HASHES:
        raise UnsupportedFormat(
            where,
            f"objects are addressed by hash {config.get('hash')!r}, which this version "
            f"does not implement (known: {', '.join(sorted(HASHES))}); upgrade daskperiment",
        )
    if config.get("compression") not in COMPRESSIONS:
        raise UnsupportedFormat(
            where,
            f"unknown compression {config.get('compression')!r} "
            f"(known: {', '.join(sorted(COMPRESSIONS))}); upgrade daskperiment",
        )
    return config


def _field(config: object) -> object:
    return config.get("format") if isinstance(config, dict) else type(config).__name__


def _check_version(version: object, where: str) -> None:
    if type(version) is not int or version < 1:
        raise UnsupportedFormat(where, f"'config' has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise UnsupportedFormat(
            where,
            f"it is in store format version {version}, newer than this version of "
            f"daskperiment reads (up to {FORMAT_VERSION}); upgrade daskperiment to open it",
        )


def load_config(backend: Backend, *, create: bool) -> dict[str, Any]:
    """Read the config of the store on ``backend``, creating it first if asked.

    Raises :class:`StoreNotFound` when there is no config and ``create`` is false (or the
    backend is read-only), and :class:`UnsupportedFormat` when the location holds something
    that is not a store this version can read.
    """
    where = backend.url
    try:
        return parse_config(backend.get(CONFIG_KEY), where)
    except KeyNotFound:
        pass
    if not create or backend.read_only:
        raise StoreNotFound(where)
    _refuse_foreign_content(backend)
    # Racing openers both try; exactly one creates it, and the other reads the winner's.
    if backend.put_if_absent(CONFIG_KEY, encode_config(default_config())):
        prepare = getattr(backend, "prepare", None)
        if prepare is not None:  # optional: backends with directories make shards up front
            prepare(f"objects/{i:02x}/" for i in range(256))
    return parse_config(backend.get(CONFIG_KEY), where)


def _refuse_foreign_content(backend: Backend) -> None:
    """Refuse to turn a location that already holds other files into a store.

    ``config`` is always the first key a store writes, so keys without it are not ours. A
    racing opener may have created the store since we looked: then its keys are fine.
    """
    for key in backend.list(""):
        if key == CONFIG_KEY or backend.exists(CONFIG_KEY):
            return
        raise UnsupportedFormat(
            backend.url,
            f"it already holds files (such as {key!r}) but no store 'config'; "
            "open an empty directory or an existing store",
        )
