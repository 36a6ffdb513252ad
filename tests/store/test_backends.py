"""The backend contract (store.testing.BackendContract) on every backend, read and written
around each backend's API, plus what only one backend has: files on disk, temp files, real
ENOSPC/EFBIG/EROFS failures, fsync durability, lock objects and S3 conditional writes."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from daskperiment_store.backends import FsspecBackend, LocalBackend, MemoryBackend
from daskperiment_store.errors import InvalidKey, NotAtomic, ReadOnlyStore, StoreNotFound
from daskperiment_store.testing import BackendContract, count_s3_requests

REPO = Path(__file__).resolve().parents[2]


# -- the contract on each backend ------------------------------------------------------------


class TestLocalBackend(BackendContract):
    @pytest.fixture
    def factory(self, tmp_path):
        return lambda name="main", **options: LocalBackend(tmp_path / name, **options)

    def raw_get(self, backend, key):
        path = Path(backend.root, key)
        return path.read_bytes() if path.is_file() else None

    def raw_put(self, backend, key, data):
        path = Path(backend.root, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class TestLocalBackendWithFsync(TestLocalBackend):
    @pytest.fixture
    def factory(self, tmp_path):
        return lambda name="main", **options: LocalBackend(
            tmp_path / name, durability="fsync", **options
        )


class TestLocalBackendWithoutHardLinks(TestLocalBackend):
    """Where ``os.link`` is unsupported the create-if-absent falls back to the key's lock."""

    @pytest.fixture
    def factory(self, tmp_path):
        def make(name="main", **options):
            backend = LocalBackend(tmp_path / name, **options)
            backend._can_link = False
            return backend

        return make


class TestLocalBackendLinkingNewFiles(TestLocalBackend):
    """Where ``renameat2``'s ``RENAME_NOREPLACE`` is unavailable (NFS, old kernels) a new
    file is hard-linked into place and its temp name unlinked."""

    @pytest.fixture
    def factory(self, tmp_path, monkeypatch):
        from daskperiment_store.backends import _osio

        monkeypatch.setattr(_osio, "_noreplace_works", False)
        return lambda name="main", **options: LocalBackend(tmp_path / name, **options)


class TestMemoryBackend(BackendContract):
    @pytest.fixture
    def factory(self):
        backends: dict[str, MemoryBackend] = {}

        def make(name="main", read_only=False):
            backends.setdefault(name, MemoryBackend())
            return backends[name].view(read_only=read_only)

        return make

    def raw_get(self, backend, key):
        return backend._shared.values.get(key)

    def raw_put(self, backend, key, data):
        with backend._shared.lock:
            backend._shared.set(key, bytes(data))


class FsspecContract(BackendContract):
    def raw_get(self, backend, key):
        try:
            return bytes(backend.fs.cat_file(f"{backend.root}/{key}"))
        except FileNotFoundError:
            return None

    def raw_put(self, backend, key, data):
        path = f"{backend.root}/{key}"
        backend.fs.makedirs(path.rpartition("/")[0], exist_ok=True)
        backend.fs.pipe_file(path, bytes(data))


class TestNamedMemoryBackend(TestMemoryBackend):
    """``memory://name`` is served by MemoryBackend: one in-memory mechanism."""

    @pytest.fixture
    def factory(self):
        tag = f"contract-{uuid.uuid4().hex}"
        return lambda name="main", **options: FsspecBackend(f"memory://{tag}/{name}", **options)


class TestFsspecLocalBackend(FsspecContract):
    """file:// through fsspec: temp + rename and lock objects (the scheme any filesystem with
    an atomic exclusive create uses)."""

    @pytest.fixture
    def factory(self, tmp_path):
        return lambda name="main", **options: FsspecBackend(f"file://{tmp_path}/{name}", **options)


class TestS3Backend(FsspecContract):
    pytestmark = pytest.mark.s3

    @pytest.fixture
    def factory(self, s3_url_factory):
        url = s3_url_factory()
        return lambda name="main", **options: FsspecBackend(f"{url}/{name}", **options)


# -- LocalBackend: layout, temp files and real OS failures ------------------------------------


def test_local_keys_are_files_under_the_root(tmp_path):
    backend = LocalBackend(tmp_path / "s")
    backend.put("objects/ab/cdef", b"x")
    assert (tmp_path / "s" / "objects" / "ab" / "cdef").read_bytes() == b"x"
    assert os.listdir(tmp_path / "s" / "tmp") == []  # the temp file was renamed away


def test_local_url_is_the_path_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    backend = LocalBackend("daskperiment_cache/x")
    assert backend.url == "daskperiment_cache/x"
    assert repr(backend) == "LocalBackend('daskperiment_cache/x')"
    assert backend.root == str(tmp_path / "daskperiment_cache" / "x")


def test_local_missing_root_without_create(tmp_path):
    with pytest.raises(StoreNotFound, match="create=True"):
        LocalBackend(tmp_path / "absent", create=False)
    with pytest.raises(StoreNotFound):
        LocalBackend(tmp_path / "absent", read_only=True)
    assert not (tmp_path / "absent").exists()


def test_local_rejects_unknown_durability(tmp_path):
    with pytest.raises(ValueError, match="durability"):
        LocalBackend(tmp_path, durability="sometimes")


def test_local_key_cannot_escape_through_a_symlinked_directory(tmp_path):
    # list() does not follow directory symlinks, so nothing outside the root is reported.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    backend = LocalBackend(tmp_path / "s")
    backend.put("refs/a", b"1")
    os.symlink(outside, tmp_path / "s" / "refs" / "link")
    assert list(backend.list("refs/")) == ["refs/a"]


def test_local_key_and_directory_conflict_is_a_clear_error(tmp_path):
    backend = LocalBackend(tmp_path / "s")
    backend.put("a/b", b"1")
    with pytest.raises(InvalidKey, match="prefix"):
        backend.put("a", b"2")
    with pytest.raises(InvalidKey, match="prefix"):
        backend.put("a/b/c", b"2")
    assert bytes(backend.get("a/b")) == b"1"


def test_local_get_returns_a_writable_buffer(tmp_path):
    backend = LocalBackend(tmp_path / "s")
    for size in (10, 1 << 20):
        data = os.urandom(size)
        backend.put("k", data)
        value = backend.get("k")
        assert bytes(value) == data
        memoryview(value)[0] = 0  # writable: raw arrays decode in place, like np.load


def test_local_delete_prunes_empty_directories(tmp_path):
    backend = LocalBackend(tmp_path / "s")
    backend.put("refs/a/b/c", b"1")
    backend.put("refs/x", b"1")
    backend.delete("refs/a/b/c")
    assert not (tmp_path / "s" / "refs" / "a").exists()
    assert (tmp_path / "s" / "refs" / "x").exists()


def test_local_leftover_temp_files_are_listed_and_deleted(tmp_path):
    backend = LocalBackend(tmp_path / "s")
    backend.put("k", b"v")  # creates tmp/
    (tmp_path / "s" / "tmp" / "123-abc.tmp").write_bytes(b"partial")
    temps = list(backend.list_temp())
    assert [(t.key, t.size) for t in temps] == [("123-abc.tmp", 7)]
    assert abs(temps[0].mtime - time.time()) < 60
    assert list(backend.list()) == ["k"]
    backend.delete_temp("123-abc.tmp")
    assert list(backend.list_temp()) == []


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys, threading
    from daskperiment_store.backends import LocalBackend

    backend = LocalBackend(sys.argv[1])
    chunks = [b"x" * (1 << 20)] * 2000
    writer = threading.Thread(target=backend.put, args=("objects/big", chunks), daemon=True)
    writer.start()
    # os.write releases the GIL, so this sees the temp file grow and kills the process
    # (SIGKILL: no cleanup runs) a few MiB into a 2 GB write.
    tmp = os.path.join(sys.argv[1], "tmp")
    while True:
        if any(e.stat().st_size for e in os.scandir(tmp)) if os.path.isdir(tmp) else False:
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_writer_killed_mid_put_leaves_only_a_temp_file(tmp_path):
    root = tmp_path / "s"
    LocalBackend(root).put("objects/small", b"ok")
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(root)], cwd=REPO, timeout=120)
    assert done.returncode == -signal.SIGKILL
    backend = LocalBackend(root)
    assert sorted(backend.list()) == ["objects/small"]
    assert not backend.exists("objects/big")
    temps = list(backend.list_temp())
    assert len(temps) == 1 and 0 < temps[0].size < 2000 << 20
    backend.delete_temp(temps[0].key)
    assert list(backend.list_temp()) == []


FSIZE_WRITER = textwrap.dedent(
    """
    import errno, sys
    from daskperiment_store.backends import LocalBackend
    backend = LocalBackend(sys.argv[1])
    try:
        backend.{method}("objects/big", [b"x" * 40_000, b"y" * 40_000])
    except OSError as exc:
        print("ERRNO", exc.errno, exc)
    """
)


@pytest.mark.parametrize("method", ["put", "put_if_absent"])
def test_failing_write_efbig_leaves_no_partial_object(tmp_path, run_with_file_size_limit, method):
    root = tmp_path / "s"
    LocalBackend(root).put("objects/small", b"ok")
    code = FSIZE_WRITER.replace("{method}", method).replace("sys.argv[1]", repr(str(root)))
    done = run_with_file_size_limit(code, limit=50_000)
    assert done.returncode == 0, done.stderr
    assert f"ERRNO {errno.EFBIG}" in done.stdout
    assert "objects/big" in done.stdout and "nothing was written" in done.stdout
    backend = LocalBackend(root)
    assert sorted(backend.list()) == ["objects/small"]
    assert list(backend.list_temp()) == []


def test_failing_write_enospc_leaves_no_partial_object(tiny_tmpfs):
    backend = LocalBackend(tiny_tmpfs.path / "s")
    backend.put("objects/small", b"ok")
    with pytest.raises(OSError) as info:
        backend.put("objects/big", [b"x" * (600 << 10), b"y" * (600 << 10)])
    assert info.value.errno == errno.ENOSPC
    assert "objects/big" in str(info.value)
    assert sorted(backend.list()) == ["objects/small"]
    assert list(backend.list_temp()) == []
    backend.put("objects/after", b"fits")  # the space was given back
    assert bytes(backend.get("objects/after")) == b"fits"


def test_read_only_filesystem_is_read_only_store(tiny_tmpfs):
    backend = LocalBackend(tiny_tmpfs.path / "s")
    backend.put("refs/a", b"1")
    tiny_tmpfs.remount(read_only=True)
    try:
        for write in (
            lambda: backend.put("refs/b", b"2"),
            lambda: backend.put_if_absent("refs/b", b"2"),
            lambda: backend.delete("refs/a"),
        ):
            with pytest.raises(ReadOnlyStore, match="read-only"):
                write()
        assert bytes(backend.get("refs/a")) == b"1"
        reader = LocalBackend(tiny_tmpfs.path / "s", read_only=True)
        assert list(reader.list()) == ["refs/a"]
    finally:
        tiny_tmpfs.remount(read_only=False)


# -- fsspec: honest capabilities ----------------------------------------------------------------


def test_fsspec_refuses_conditional_writes_where_exclusive_create_is_not_known_atomic(tmp_path):
    from fsspec.implementations.dirfs import DirFileSystem
    from fsspec.implementations.local import LocalFileSystem

    (tmp_path / "s").mkdir()
    fs = DirFileSystem(str(tmp_path), fs=LocalFileSystem())
    backend = FsspecBackend(fs, "s")
    assert backend.atomic_put_if_absent is False and backend.atomic_swap is False
    backend.put("k", b"plain puts still work")
    with pytest.raises(NotAtomic, match="trust_exclusive_create"):
        backend.put_if_absent("k2", b"x")
    with pytest.raises(NotAtomic):
        backend.swap("k", b"plain puts still work", b"y")
    trusted = FsspecBackend(fs, "s", trust_exclusive_create=True)
    assert trusted.atomic_swap and trusted.put_if_absent("k2", b"x")


def test_fsspec_memory_and_file_capabilities(tmp_path):
    assert FsspecBackend("memory://caps").atomic_swap is True
    assert FsspecBackend(f"file://{tmp_path}/s").atomic_put_if_absent is True


def test_memory_urls_are_named_memory_backends_shared_in_the_process():
    name = f"shared-{uuid.uuid4().hex}"
    first = FsspecBackend(f"memory://{name}")
    assert isinstance(first, MemoryBackend) and first.url == f"memory://{name}"
    first.put("k", b"v")
    assert MemoryBackend.named(name).get("k") == b"v"
    reader = FsspecBackend(f"memory://{name}", read_only=True)
    with pytest.raises(ReadOnlyStore):
        reader.put("k", b"w")
    assert MemoryBackend.named(f"other-{name}").exists("k") is False
    import pickle

    again = pickle.loads(pickle.dumps(reader))  # by name: the same store in this process
    assert again.get("k") == b"v" and again.read_only


@pytest.mark.s3
def test_s3_urls_and_filesystems_make_s3_backends(s3_url, s3_fs):
    from daskperiment_store.backends import S3Backend

    assert type(FsspecBackend(s3_url)) is S3Backend
    assert type(FsspecBackend(s3_fs, s3_url.removeprefix("s3://"))) is S3Backend
    import daskperiment_store as store

    assert type(store.open(s3_url).backend) is S3Backend


@pytest.mark.s3
def test_s3_large_value_goes_up_as_one_multipart_upload(s3_url, s3_fs, monkeypatch):
    import daskperiment_store.backends._s3 as s3ops

    monkeypatch.setattr(s3ops, "SINGLE_PUT", 5 << 20)  # S3's smallest part size
    backend = FsspecBackend(s3_url)
    data = [os.urandom(3 << 20) for _ in range(4)]  # 12 MiB: three parts
    backend.put("objects/big", data)
    assert s3_fs.cat_file(f"{backend.root}/objects/big") == b"".join(data)
    assert backend.put_if_absent("objects/big", data) is False
    bucket = backend.root.split("/")[0]
    assert s3_fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", []) == []


@pytest.mark.s3
def test_s3_conditional_writes_are_checked_and_used(s3_url, s3_fs):
    backend = FsspecBackend(s3_url)
    assert backend.atomic_put_if_absent is True and backend.atomic_swap is True
    assert list(backend.list()) == []  # the probe object is gone
    backend.put("refs/r", b"1")
    etag = s3_fs.info(f"{backend.root}/refs/r")["ETag"]
    assert backend.swap("refs/r", b"1", b"2")
    assert s3_fs.info(f"{backend.root}/refs/r", refresh=True)["ETag"] != etag


@pytest.fixture(scope="module")
def s3_without_conditions(s3_server):
    """A second moto server that drops If-None-Match/If-Match, like S3-compatible servers
    without conditional writes; yields an s3:// URL in a fresh bucket on it."""
    from s3server import S3Server

    from tests.conftest import _new_bucket

    server = S3Server(ignore_conditions=True)
    url = server.start()
    try:
        yield url, f"s3://{_new_bucket(url)}/store"
    finally:
        server.stop()


@pytest.mark.s3
def test_s3_server_ignoring_conditions_makes_conditional_writes_refuse(s3_without_conditions):
    endpoint, url = s3_without_conditions
    backend = FsspecBackend(url, client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    assert backend.atomic_put_if_absent is False and backend.atomic_swap is False
    with pytest.raises(NotAtomic, match="conditional writes"):
        backend.put_if_absent("refs/x", b"1")
    with pytest.raises(NotAtomic):
        backend.swap("refs/x", None, b"1")
    assert not backend.exists("refs/x")
    backend.put("refs/x", b"plain puts still work")
    assert backend.get("refs/x") == b"plain puts still work"


# -- RecentValues: small values remembered by content digest -----------------------------------


def test_recent_values_are_found_by_md5_and_size():
    import hashlib

    from daskperiment_store.backends.base import RecentValues

    recent = RecentValues(max_size=8)
    recent.add([b"abc", b"abc", b"0123456789"])  # the last is too long to remember
    assert len(recent) == 1
    md5 = hashlib.md5(b"abc").hexdigest()
    assert recent.find_md5(md5, 3) == b"abc"
    assert recent.find_md5(md5, 4) is None  # a listed size that differs is another value
    assert recent.find_md5(hashlib.md5(b"0123456789").hexdigest(), 10) is None
    assert recent.find_md5("0" * 32, 3) is None
    recent.clear()
    assert recent.find_md5(md5, 3) is None


def test_recent_values_forget_the_oldest_half_when_full():
    import hashlib

    from daskperiment_store.backends.base import RecentValues

    recent = RecentValues(max_count=10)
    values = [b"%d" % i for i in range(11)]
    recent.add(values[:4])
    assert recent.find_md5(hashlib.md5(b"0").hexdigest(), 1) == b"0"  # hashed before the purge
    recent.add(values[4:])
    assert len(recent) == 6
    found = [v for v in values if recent.find_md5(hashlib.md5(v).hexdigest(), len(v))]
    assert found == values[5:]


@pytest.mark.s3
def test_s3_get_many_is_one_get_per_key(s3_url):
    backend = FsspecBackend(s3_url)
    keys = [f"refs/t/{i}" for i in range(30)]
    for key in keys:
        backend.put(key, key.encode())
    backend.fs.invalidate_cache()  # nothing known about sizes: s3fs's cat_file would HEAD first
    with count_s3_requests(backend) as requests:
        got = backend.get_many([*keys, "refs/t/missing"])
    assert {k: bytes(v) for k, v in got.items()} == {k: k.encode() for k in keys}
    assert requests == {"GetObject": 31}


@pytest.mark.s3
def test_s3_existence_checks_are_one_request(s3_url):
    backend = FsspecBackend(s3_url)
    backend.put("objects/ab/cd", b"value")
    for check in (
        lambda: backend.exists("objects/ab/missing"),
        lambda: backend.exists("objects/ab"),  # a "directory": not a key, and not listed
        lambda: backend.exists("objects/ab/cd"),
        lambda: backend.stat("objects/ab/cd"),
    ):
        with count_s3_requests(backend) as requests:
            check()
        assert requests == {"HeadObject": 1}
    assert backend.stat("objects/ab/cd").size == 5


@pytest.mark.s3
def test_s3_put_if_absent_of_a_small_value_is_one_conditional_put(s3_url, monkeypatch):
    import daskperiment_store.backends._s3 as s3ops

    monkeypatch.setattr(s3ops, "SMALL_PUT", 10)
    backend = FsspecBackend(s3_url)
    assert backend.atomic_put_if_absent  # the one-off probe of conditional writes, done
    with count_s3_requests(backend) as requests:
        assert backend.put_if_absent("refs/r", b"0123456789") is True
        assert backend.put_if_absent("refs/r", b"other") is False  # S3 refused it: 412
    assert requests == {"PutObject": 2}
    with count_s3_requests(backend) as requests:
        assert backend.put_if_absent("refs/r", b"larger than SMALL_PUT") is False
    assert requests == {"HeadObject": 1}  # present: nothing uploaded
    assert bytes(backend.get("refs/r")) == b"0123456789"


# -- memory listing by folder ---------------------------------------------------------------


def test_memory_listing_by_folder_matches_a_scan_of_every_key():
    """The memory backend lists from its keys grouped by folder: the same keys as looking at
    every key, for prefixes ending anywhere, after puts, swaps and deletes."""
    import random

    rng = random.Random(7)
    backend = MemoryBackend()
    parts = ["refs", "objects", "ab", "cd", "experiments", "x", "trials", "1", "12", "a.b"]
    live: set[str] = set()
    for step in range(3000):
        key = "/".join(rng.choice(parts) for _ in range(rng.randint(1, 4)))
        action = rng.random()
        if action < 0.6:
            backend.put(key, b"v")
            live.add(key)
        elif action < 0.7:
            backend.swap(key, b"v" if key in live else None, None)
            live.discard(key)
        else:
            backend.delete(key, missing_ok=True)
            live.discard(key)
        if step % 50 == 0:
            for prefix in ["", "refs", "refs/", "refs/x", "refs/experiments/", "ab/cd/1", key]:
                assert sorted(backend.list(prefix)) == sorted(
                    k for k in live if k.startswith(prefix)
                ), prefix
