"""S3 operations for :class:`daskperiment_store.backends.s3.S3Backend`, through s3fs.

Each is atomic by S3's own guarantees: a PUT (or a completed multipart upload) replaces an
object as a whole; ``If-None-Match: *`` lets exactly one writer create a key; ``If-Match:
<etag>`` makes a PUT or DELETE apply only to the version that was read (compare-and-swap).
"""

from __future__ import annotations

import random
import secrets
import time
from typing import Any

from ..errors import LockTimeout

#: Values larger than this go up as a multipart upload in parts of this size.
SINGLE_PUT = 64 * 2**20
#: ``put_if_absent`` of a value up to this size is one conditional PUT, without an existence
#: check first (S3 refuses the PUT if the key exists); larger ones are checked first so that
#: finding the key present uploads nothing.
SMALL_PUT = 64 * 2**10
# Error codes meaning "the value changed between our read and our conditional write".
_CAS_RETRY_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409"}
_PRECONDITION_CODES = {"PreconditionFailed", "412"}


def error_code(exc: BaseException) -> str | None:
    """The S3 error code behind an exception s3fs translated (None if there is none)."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            error = response.get("Error", {})
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return str(error.get("Code") or status)
        seen = seen.__cause__ or seen.__context__
    return None


def is_precondition_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is S3's 412: the condition of a conditional write did not hold."""
    return isinstance(exc, FileExistsError) or error_code(exc) in _PRECONDITION_CODES


def put(fs: Any, path: str, views: list[memoryview], cond: dict[str, str]) -> None:
    """Write ``views`` as the object at ``path`` with conditions ``cond`` (e.g.
    ``{"IfNoneMatch": "*"}``); a 412 comes back as an ``OSError`` (see
    :func:`is_precondition_failure`)."""
    total = sum(v.nbytes for v in views)
    try:
        if total <= SINGLE_PUT:
            bucket, key, _ = fs.split_path(path)
            body = bytes(views[0]) if len(views) == 1 else b"".join(views)
            fs.call_s3("put_object", Bucket=bucket, Key=key, Body=body, **cond)
            return
        # A multipart upload becomes visible only when completed, so this stays atomic;
        # s3fs sends If-None-Match with the completion for mode "xb".
        f = fs.open(path, "xb" if cond else "wb", block_size=SINGLE_PUT)
        try:
            for view in views:
                f.write(view)
            f.close()
        except BaseException:
            try:
                f.discard()  # abort the multipart upload: nothing becomes visible
            finally:
                f.closed = True
            raise
    finally:
        fs.invalidate_cache(path)


def head(fs: Any, path: str) -> dict[str, Any] | None:
    """The object's HEAD response (``ContentLength``, ``LastModified``, ``ETag``), or None
    if there is no such object. One request: s3fs's ``info``/``isfile`` follow a 404 with a
    listing (is it a directory?), which doubles the cost of every check for an absent key."""
    bucket, key, _ = fs.split_path(path)
    try:
        return fs.call_s3("head_object", Bucket=bucket, Key=key)
    except FileNotFoundError:
        return None


def get_with_etag(fs: Any, path: str) -> tuple[bytes | None, str | None]:
    """The object's bytes and ETag from one GET, so they belong to the same version."""
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(path)

    async def fetch() -> tuple[bytes | None, str | None]:
        try:
            resp = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None, None
        try:
            return await resp["Body"].read(), resp["ETag"]
        finally:
            resp["Body"].close()

    return sync(fs.loop, fetch)


def get(fs: Any, path: str) -> bytes:
    """The object's bytes from one GET (``FileNotFoundError`` if absent).

    Not ``fs.cat_file``: without a range it asks s3fs for the size first, and s3fs answers
    that from a cached listing of the parent directory when it has one, so a key created
    after that listing would be reported missing.
    """
    from fsspec.asyn import sync

    return sync(fs.loop, _get, fs, path)


def forget_listings(fs: Any, path: str) -> None:
    """Drop every listing s3fs cached for ``path``, its parents and everything below it.

    A listing must not outlive the call that made it: s3fs answers ``info``/``exists`` and
    size lookups from cached listings, so a kept one hides keys other processes write later.
    """
    fs.invalidate_cache(path)
    below = path.rstrip("/") + "/"
    for cached in [p for p in list(fs.dircache) if p.startswith(below)]:
        fs.dircache.pop(cached, None)


def get_many(fs: Any, paths: list[str]) -> list[Any]:
    """Fetch ``paths`` concurrently on s3fs's event loop, one GET each; each result is the
    bytes or the exception (``FileNotFoundError`` for a missing key).

    ``fs.cat(paths)`` would expand glob characters (``*``, ``?``, ``[``), which ref names may
    contain, and s3fs's ``_cat_file`` may ask for the size first (a HEAD); so each path is
    one ``get_object``, retried like s3fs's own reads. At most fsspec's ``batch_size`` run
    at once (the ``nofiles_gather_batch_size`` setting; aiobotocore's
    ``max_pool_connections``, 10 unless configured, bounds the connections).
    """
    from fsspec.asyn import _run_coros_in_chunks, sync

    coros = [_get(fs, path) for path in paths]
    return sync(
        fs.loop,
        _run_coros_in_chunks,
        coros,
        batch_size=fs.batch_size,
        nofiles=True,
        return_exceptions=True,
    )


async def _get(fs: Any, path: str) -> bytes:
    bucket, key, _ = fs.split_path(path)

    async def call_and_read() -> bytes:
        resp = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        try:
            return await resp["Body"].read()
        finally:
            resp["Body"].close()

    try:
        from s3fs.core import _error_wrapper
    except ImportError:  # an s3fs without it: the GET is retried, a broken body read is not
        return await call_and_read()
    return await _error_wrapper(call_and_read, retries=fs.retries)


def known_value(info: dict[str, Any], recent: Any) -> bytes | None:
    """The value of a listed key if its ETag shows it is one ``recent`` remembers.

    The ETag of an object written by one plain PUT is the MD5 of its value; multipart uploads
    (``"<md5>-<parts>"``) and SSE-KMS / SSE-C encrypted objects have other ETags, which match
    nothing, so their values are read.
    """
    etag = info.get("ETag") or info.get("etag")
    size = info.get("size")
    if not isinstance(etag, str) or not isinstance(size, int):
        return None
    digest = etag.strip('"')
    if len(digest) != 32:
        return None
    return recent.find_md5(digest.lower(), size)


def swap(
    fs: Any, path: str, expected: bytes | None, new: bytes | None, timeout: float, key: str
) -> bool:
    """Compare-and-swap by conditional writes: read value and ETag; if the value is
    ``expected``, write ``new`` with ``If-Match`` on that ETag (``If-None-Match: *`` if it
    was absent; DELETE with ``If-Match`` if ``new`` is None). On 412/409/404 the object
    changed in between: read again, since only a value other than ``expected`` is stale."""
    bucket, skey, _ = fs.split_path(path)
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        current, etag = get_with_etag(fs, path)
        if current != expected:
            return False
        try:
            if new is None:
                if etag is not None:
                    fs.call_s3("delete_object", Bucket=bucket, Key=skey, IfMatch=etag)
            else:
                cond = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
                fs.call_s3("put_object", Bucket=bucket, Key=skey, Body=new, **cond)
            return True
        except OSError as exc:
            if not (isinstance(exc, FileExistsError) or error_code(exc) in _CAS_RETRY_CODES):
                raise
        finally:
            fs.invalidate_cache(path)
        attempt += 1
        if time.monotonic() > deadline:
            raise LockTimeout(key, timeout)
        time.sleep(random.random() * min(0.002 * attempt, 0.05))  # jitter: no lockstep


def conditional_writes_work(fs: Any, probe_dir: str) -> bool:
    """Whether the server refuses a second ``If-None-Match: *`` create and a PUT whose
    ``If-Match`` names a wrong ETag; checked on a probe object that is removed after. A
    server that ignores these headers would let two writers both "win"."""
    bucket, key, _ = fs.split_path(f"{probe_dir}/probe-{secrets.token_hex(8)}")
    call = fs.call_s3
    call("put_object", Bucket=bucket, Key=key, Body=b"1", IfNoneMatch="*")
    try:
        return _refused(call, Bucket=bucket, Key=key, Body=b"2", IfNoneMatch="*") and _refused(
            call, Bucket=bucket, Key=key, Body=b"3", IfMatch='"0"'
        )
    finally:
        call("delete_object", Bucket=bucket, Key=key)


def _refused(call: Any, **kwargs: Any) -> bool:
    try:
        call("put_object", **kwargs)
    except OSError as exc:
        if is_precondition_failure(exc):
            return True
        raise
    return False


def touch(fs: Any, path: str) -> None:
    """Renew the object's LastModified by a server-side copy onto itself."""
    bucket, key, _ = fs.split_path(path)
    fs.call_s3(
        "copy_object",
        Bucket=bucket,
        Key=key,
        CopySource={"Bucket": bucket, "Key": key},
        MetadataDirective="REPLACE",
    )
