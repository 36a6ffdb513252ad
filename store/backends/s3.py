"""S3 (s3fs) stores: an :class:`FsspecBackend` whose every write is made atomic by S3 itself.

========================  ====================================================================
operation                  how
========================  ====================================================================
``put``                    one PUT (or one multipart upload, visible only when completed)
``put_if_absent``          PUT with ``If-None-Match: *``: S3 lets exactly one writer create a key
``swap``                   read value + ETag, then PUT with ``If-Match: <etag>`` (or
                           ``If-None-Match``, or DELETE with ``If-Match``); on 412/409 re-read
                           and compare again
``exists``, ``stat``       one HEAD
``get``                    one GET (never answered from a cached listing)
``get_many``               concurrent GETs on s3fs's event loop (as many at once as aiobotocore's
                           ``max_pool_connections`` allows: 10 unless ``config_kwargs`` raise it)
``list_values``            one listing gives every key's ETag; only values
                           :data:`~daskperiment_store.backends.base.RECENT_VALUES` does not know are read
========================  ====================================================================

Before the first conditional write the backend checks, once, that the server honours
``If-None-Match`` and ``If-Match`` (a server that ignored them would let two writers both
"win"); if it does not, ``put_if_absent`` and ``swap`` raise :class:`daskperiment_store.errors.NotAtomic`.
A network failure after S3 applied a conditional PUT can make the client's retry see 412, so a
create may then report "already existed" although it was this process's write: the race then
has no reported winner, never two.

**Freshness.** Other processes write the store, so no listing outlives the call that needed
it: s3fs's listing cache is off for URLs this backend opens, and the listings a call makes are
dropped when it returns (s3fs would otherwise answer size lookups, and so reads, from them
and report keys created later as missing).

S3 acknowledges a PUT only once it is stored durably, so ``durability`` changes nothing. An
S3 multipart upload cut off by a killed process never becomes visible, but S3 keeps (and
bills) its parts until it is aborted: configure an AbortIncompleteMultipartUpload lifecycle
rule on the bucket. There are no temp files and no directories.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import KeyNotFound, NotAtomic
from . import _s3
from .base import RECENT_VALUES, Buffers, KeyInfo, as_views
from .fsspec import SCHEMES, FsspecBackend


class S3Backend(FsspecBackend):
    """Keys as objects under ``root`` in an S3 bucket (see the module docstring).

    Made by ``FsspecBackend("s3://bucket/prefix", ...)`` or ``daskperiment_store.open("s3://...")``, with
    the same arguments as :class:`FsspecBackend`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._conditional_ok: bool | None = None  # probed on first use
        super().__init__(*args, **kwargs)

    @staticmethod
    def _options(options: dict[str, Any]) -> dict[str, Any]:
        # Other processes write the store: a cached listing would hide their keys.
        return {"use_listings_cache": False, **options}

    def _open_root(self, create: bool) -> None:
        pass  # S3 has no directories to create

    def _atomic(self) -> bool:
        if self._conditional_ok is None:  # probed once, on first need
            self._conditional_ok = _s3.conditional_writes_work(self.fs, self._prefix + "locks")
        return self._conditional_ok

    def _not_atomic_why(self) -> str:
        return "the S3 server ignores conditional writes (If-None-Match / If-Match)"

    # reads -------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        try:
            return _s3.get(self.fs, self._path(key))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyNotFound(key, self._url) from None

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes | bytearray | memoryview]:
        """Several values at once, missing keys left out; the GETs run concurrently."""
        by_path = {self._path(k): k for k in keys}
        if not by_path:
            return {}
        paths = list(by_path)
        out: dict[str, bytes | bytearray | memoryview] = {}
        for path, value in zip(paths, _s3.get_many(self.fs, paths), strict=True):
            if isinstance(value, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
                continue  # deleted since it was listed: left out, as get would say KeyNotFound
            if isinstance(value, BaseException):
                raise value
            out[by_path[path]] = value
        return out

    def list_values(self, prefix: str = "") -> dict[str, bytes | bytearray | memoryview]:
        """``{key: value}`` under ``prefix``: one listing (a request per 1,000 keys) gives
        every key's ETag; values :data:`~daskperiment_store.backends.base.RECENT_VALUES` knows by that
        digest are not read again, the others are fetched concurrently."""
        unknown: list[str] = []
        out: dict[str, bytes | bytearray | memoryview] = {}
        for key, info in self._listing(prefix).items():
            value = _s3.known_value(info, RECENT_VALUES)
            if value is None:
                unknown.append(key)
            else:
                out[key] = value
        out.update(self.get_many(unknown))
        return out

    def exists(self, key: str) -> bool:
        return _s3.head(self.fs, self._path(key)) is not None

    def stat(self, key: str) -> KeyInfo:
        resp = _s3.head(self.fs, self._path(key))
        if resp is None:
            raise KeyNotFound(key, self._url)
        return KeyInfo(key, int(resp["ContentLength"]), resp["LastModified"].timestamp())

    def _find(self, base: str, start: str) -> dict[str, dict[str, Any]]:
        try:
            kwargs = {"prefix": start} if start else {}
            return self.fs.find(base, detail=True, **kwargs)
        finally:  # the listing must not outlive this call
            _s3.forget_listings(self.fs, base)

    # writes ------------------------------------------------------------------------------

    def put(self, key: str, data: Buffers) -> None:
        """Write ``key``, replacing any old value: one PUT or one completed multipart upload."""
        path = self._path(key)
        self._check_writable()
        with self._writing(key):
            _s3.put(self.fs, path, as_views(data), {})

    def put_if_absent(self, key: str, data: Buffers) -> bool:
        """Write ``key`` unless it exists (``If-None-Match: *``); return whether this call
        created it. A small value costs one PUT; a larger one an existence check first."""
        path = self._path(key)
        self._check_writable()
        self._require_atomic("create a key if absent")
        views = as_views(data)
        if sum(v.nbytes for v in views) > _s3.SMALL_PUT and self.exists(key):
            return False  # found present: nothing uploaded
        with self._writing(key):
            try:
                _s3.put(self.fs, path, views, {"IfNoneMatch": "*"})
            except OSError as exc:
                if _s3.is_precondition_failure(exc):
                    return False
                raise
            return True

    def swap(self, key: str, expected: bytes | None, new: bytes | None) -> bool:
        """Compare-and-swap ``key`` by conditional writes (see the module docstring)."""
        path = self._path(key)
        self._check_writable()
        self._require_atomic("compare-and-swap")
        with self._writing(key):
            body = None if new is None else b"".join(as_views(new))
            return _s3.swap(self.fs, path, expected, body, self.lock_timeout, key)

    def touch(self, key: str) -> None:
        """Renew ``key``'s LastModified by a server-side copy onto itself."""
        path = self._path(key)
        self._check_writable()
        if not self.exists(key):
            raise KeyNotFound(key, self._url)
        with self._writing(key):
            _s3.touch(self.fs, path)

    @contextmanager
    def lock(self, key: str, timeout: float | None = None) -> Iterator[None]:
        """S3 compare-and-swap uses conditional writes, not locks."""
        raise NotAtomic("S3 compare-and-swap uses conditional writes, not locks")
        yield  # pragma: no cover - makes this a generator

    def list_temp(self) -> Iterator[KeyInfo]:
        """Nothing: S3 writes are single requests and leave no temp files."""
        return iter(())


SCHEMES.update(s3=S3Backend, s3a=S3Backend)
