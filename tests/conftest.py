"""Fixtures shared by every test package.

Backends: ``backend_factory`` (parametrized over local, memory, fsspec-memory and S3) makes
fresh backends by name. S3: ``s3_server`` starts a real moto server on 127.0.0.1 once per
session (tests/s3server.py) and points every AWS client of this process and its children at
it through environment variables, so ``daskperiment_store.open("s3://...")`` needs no options; ``s3_url``,
``s3_url_factory``, ``s3_store_factory``, ``s3_storage_options`` and ``s3_fs`` build on it.
Any test using them is marked ``s3`` automatically. Failing filesystems: ``tiny_tmpfs``
(a real 1 MiB tmpfs, for ENOSPC and read-only remounts; skipped where mounting is not
allowed) and ``run_with_file_size_limit`` (a subprocess under RLIMIT_FSIZE, whose writes past
the limit fail with EFBIG: a real OS failure that needs no privileges).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # tests/s3server.py, tests/hypothesis_profiles.py
# Every subprocess a test starts (workers, crash victims, spawned dask processes) imports this
# checkout's packages, `daskperiment_store` included (the repository's symlink to store/), and
# never an installed copy of another checkout.
_repo = str(TESTS.parent)
if _repo not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_repo, os.environ.get("PYTHONPATH")]))

from s3server import S3Server  # noqa: E402

S3_KEY = "testing"
S3_SECRET = "testing"
S3_REGION = "us-east-1"
S3_FIXTURES = {"s3_server", "s3_url", "s3_url_factory", "s3_store_factory", "s3_fs"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if S3_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.s3)


# -- local paths ---------------------------------------------------------------------------------


@pytest.fixture
def tmp_store_path(tmp_path: Path) -> Path:
    """Where a test's local store goes (not created: ``daskperiment_store.open`` creates it)."""
    return tmp_path / "store"


# -- S3 ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the session; yields its endpoint URL.

    Sets fake credentials and ``AWS_ENDPOINT_URL`` in ``os.environ`` (inherited by
    subprocesses), and hides any real AWS configuration, so nothing can reach real AWS.
    """
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    pytest.importorskip("s3fs", reason="s3fs is not installed")
    server = S3Server()
    url = server.start()
    nowhere = str(tmp_path_factory.mktemp("aws") / "absent")  # no config, no credentials file
    env = {
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": S3_REGION,
        "AWS_ENDPOINT_URL": url,
        "AWS_ENDPOINT_URL_S3": url,
        "AWS_CONFIG_FILE": nowhere,
        "AWS_SHARED_CREDENTIALS_FILE": nowhere,
    }
    saved = {name: os.environ.get(name) for name in [*env, "AWS_PROFILE", "AWS_SESSION_TOKEN"]}
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.update(env)
    try:
        yield url
    finally:
        # Experiments on S3 stores made by this process would flush their history index at
        # exit, after the server is gone: flush them while it still runs.
        session = sys.modules.get("daskperiment.session")
        if session is not None:
            session._flush_all()
            session._EXIT_FLUSH.clear()
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def s3_storage_options(s3_server: str) -> dict[str, Any]:
    """fsspec/s3fs options reaching the test server (explicit, for code that passes them)."""
    return {
        "key": S3_KEY,
        "secret": S3_SECRET,
        "client_kwargs": {"endpoint_url": s3_server, "region_name": S3_REGION},
    }


def _new_bucket(endpoint_url: str) -> str:
    import boto3

    name = f"test-{uuid.uuid4().hex[:20]}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=S3_REGION,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
    )
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_url_factory(s3_server: str) -> Callable[[], str]:
    """Call it for a fresh ``s3://<new bucket>/store`` URL (several stores in one test)."""
    return lambda: f"s3://{_new_bucket(s3_server)}/store"


@pytest.fixture
def s3_url(s3_url_factory: Callable[[], str]) -> str:
    """A fresh ``s3://<bucket>/store`` URL in a bucket of its own."""
    return s3_url_factory()


@pytest.fixture
def s3_store_factory(s3_url_factory: Callable[[], str]) -> Iterator[Callable[..., Any]]:
    """Call it for a fresh ``daskperiment_store.Store`` on S3 (each in a bucket of its own)."""
    import daskperiment_store as store

    opened: list[Any] = []

    def make(**options: Any) -> Any:
        st = store.open(s3_url_factory(), **options)
        opened.append(st)
        return st

    yield make
    for st in opened:
        st.close()


@pytest.fixture
def s3_fs(s3_storage_options: dict[str, Any]) -> Any:
    """An s3fs filesystem on the test server (for reading and writing around a backend)."""
    import s3fs

    return s3fs.S3FileSystem(**s3_storage_options)


# -- backends ------------------------------------------------------------------------------------

BACKEND_KINDS = ["local", "memory", "fsspec-memory", pytest.param("s3", marks=pytest.mark.s3)]


class BackendFactory:
    """``factory(name="main", **options)`` -> a backend; the same name reaches the same data
    (so ``factory(read_only=True)`` reopens the default one read-only)."""

    def __init__(self, kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.kind = kind
        self._request = request
        self._tmp_path = tmp_path
        self._memory: dict[str, Any] = {}
        self._tag = uuid.uuid4().hex[:12]
        self._bucket: str | None = None

    def location(self, name: str = "main") -> str:
        """Where backend ``name`` lives, as a path or URL ``daskperiment_store.open`` accepts."""
        if self.kind == "local":
            return str(self._tmp_path / f"backend-{name}")
        if self.kind == "fsspec-memory":
            return f"memory://test-{self._tag}/{name}"
        if self.kind == "s3":
            if self._bucket is None:
                self._bucket = _new_bucket(self._request.getfixturevalue("s3_server"))
            return f"s3://{self._bucket}/{name}"
        raise ValueError(f"{self.kind} backends have no location")

    def __call__(self, name: str = "main", **options: Any) -> Any:
        from daskperiment_store.backends import FsspecBackend, LocalBackend, MemoryBackend

        if self.kind == "local":
            return LocalBackend(self.location(name), **options)
        if self.kind == "memory":
            if name not in self._memory:
                self._memory[name] = MemoryBackend()
            return self._memory[name].view(read_only=options.get("read_only", False))
        return FsspecBackend(self.location(name), **options)

    def cleanup(self) -> None:
        if self.kind == "fsspec-memory":
            from fsspec.implementations.memory import MemoryFileSystem

            prefix = f"/test-{self._tag}/"
            for path in [p for p in MemoryFileSystem.store if p.startswith(prefix)]:
                MemoryFileSystem.store.pop(path, None)
            MemoryFileSystem.pseudo_dirs[:] = [
                d for d in MemoryFileSystem.pseudo_dirs if not d.startswith(prefix)
            ]


@pytest.fixture(params=BACKEND_KINDS)
def backend_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendFactory]:
    """Fresh backends of each kind: local, memory, fsspec-memory and S3 (marked ``s3``)."""
    factory = BackendFactory(request.param, request, tmp_path)
    yield factory
    factory.cleanup()


# -- failing filesystems -------------------------------------------------------------------------


@dataclass
class TinyTmpfs:
    """A mounted tmpfs of ``size`` bytes at ``path``."""

    path: Path
    size: int

    def remount(self, read_only: bool) -> None:
        """Remount read-only (writes then fail with EROFS) or read-write again."""
        option = "remount,ro" if read_only else "remount,rw"
        subprocess.run(["mount", "-o", option, str(self.path)], check=True, capture_output=True)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[TinyTmpfs]:
    """A real 1 MiB tmpfs (writes past it fail with ENOSPC); skipped if mounting is refused."""
    path = tmp_path / "tiny"
    path.mkdir()
    size = 1 << 20
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield TinyTmpfs(path, size)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        # Ignoring SIGXFSZ turns "write past the limit" into an EFBIG error the code sees.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.fixture
def run_with_file_size_limit() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run(code, limit)`` runs ``python -c code`` with files capped at ``limit`` bytes
    (RLIMIT_FSIZE): a write past it fails with ``OSError(EFBIG)``."""

    def run(code: str, limit: int, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_limit_file_size(limit),
            cwd=str(TESTS.parent),
        )

    return run
