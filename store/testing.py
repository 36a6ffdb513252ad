"""The backend contract as a pytest test class, shipped with the package.

A backend's test module subclasses :class:`BackendContract`, provides a ``factory`` fixture
(``factory(name="main", **options) -> Backend``; the same name must reach the same data, so
``factory(read_only=True)`` reopens the default backend read-only) and implements
:meth:`~BackendContract.raw_get` and :meth:`~BackendContract.raw_put`, which read and write the
backend's storage *without* going through the backend. Each test then checks the backend
against what is really stored, not only against itself::

    class TestMyBackend(BackendContract):
        @pytest.fixture
        def factory(self, tmp_path):
            return lambda name="main", **options: MyBackend(tmp_path / name, **options)

        def raw_get(self, backend, key): ...
        def raw_put(self, backend, key, data): ...

Importing this module needs pytest (a test dependency); the store itself never imports it.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from .backends.base import Backend
from .errors import InvalidKey, KeyNotFound, ReadOnlyStore

BAD_KEYS = [
    "",
    "/abs",
    "a/",
    "a//b",
    "..",
    "a/../b",
    "./a",
    "a/.",
    "a\\b",
    "a\x00b",
    "a\nb",
    "tmp/x",
    "locks/x",
]


@contextmanager
def count_s3_requests(backend: Any) -> Iterator[collections.Counter[str]]:
    """Count the requests an S3 :class:`~daskperiment_store.backends.fsspec.FsspecBackend` sends inside the
    block, by operation name (``"GetObject"``, ``"HeadObject"``, ``"ListObjectsV2"``, ...)."""
    counts: collections.Counter[str] = collections.Counter()

    def count(model: Any, **_: Any) -> None:
        counts[model.name] += 1

    events = backend.fs.s3.meta.events
    events.register("before-call.s3", count)
    try:
        yield counts
    finally:
        events.unregister("before-call.s3", count)


class _Unreadable:
    """A chunk that is not a buffer: the write fails after its first chunk was accepted."""


class BackendContract:
    """Behaviour every :class:`daskperiment_store.backends.base.Backend` must have."""

    def raw_get(self, backend: Backend, key: str) -> bytes | None:
        """The bytes stored under ``key``, read around the backend (None if absent)."""
        raise NotImplementedError

    def raw_put(self, backend: Backend, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` around the backend."""
        raise NotImplementedError

    @pytest.fixture
    def factory(self) -> Callable[..., Backend]:
        raise NotImplementedError("subclasses provide a 'factory' fixture")

    @pytest.fixture
    def backend(self, factory: Callable[..., Backend]) -> Backend:
        return factory()

    # basic reads and writes --------------------------------------------------------------

    def test_is_a_backend_with_a_url(self, backend: Backend) -> None:
        assert isinstance(backend, Backend)
        assert isinstance(backend.url, str) and backend.url
        assert backend.url in repr(backend)
        assert backend.read_only is False

    @pytest.mark.parametrize(
        "data",
        [
            b"hello",
            b"",
            bytearray(b"\x00\xff" * 100),
            memoryview(b"abcdef")[1:4],
            [b"ab", bytearray(b"cd"), memoryview(b"ef")],
            [],
        ],
        ids=["bytes", "empty", "bytearray", "memoryview-slice", "chunks", "no-chunks"],
    )
    def test_put_writes_the_bytes(self, backend: Backend, data: Any) -> None:
        expected = b"".join(bytes(c) for c in data) if isinstance(data, list) else bytes(data)
        backend.put("objects/ab/cd", data)
        assert self.raw_get(backend, "objects/ab/cd") == expected
        assert bytes(backend.get("objects/ab/cd")) == expected

    def test_multidimensional_buffers_are_written_flat(self, backend: Backend) -> None:
        np = pytest.importorskip("numpy")
        array = np.arange(12, dtype="<i4").reshape(3, 4)
        backend.put("a", [memoryview(array), b"!"])
        assert self.raw_get(backend, "a") == array.tobytes() + b"!"

    def test_get_reads_what_is_stored(self, backend: Backend) -> None:
        self.raw_put(backend, "refs/x/y", b"value\n")
        assert bytes(backend.get("refs/x/y")) == b"value\n"
        assert backend.exists("refs/x/y")

    def test_large_value_round_trips(self, backend: Backend) -> None:
        import os

        chunks = [os.urandom(1 << 20) for _ in range(3)]
        backend.put("big", chunks)
        assert bytes(backend.get("big")) == b"".join(chunks)
        assert self.raw_get(backend, "big") == b"".join(chunks)

    def test_put_replaces(self, backend: Backend) -> None:
        backend.put("k", b"old value")
        backend.put("k", b"new")
        assert self.raw_get(backend, "k") == b"new"

    def test_missing_key_is_key_not_found_and_a_key_error(self, backend: Backend) -> None:
        for read in (backend.get, lambda k: backend.head(k, 4), backend.stat):
            with pytest.raises(KeyNotFound) as info:
                read("no/such/key")
            assert isinstance(info.value, KeyError)
            assert info.value.key == "no/such/key"
            assert "no/such/key" in str(info.value)
        assert backend.exists("no/such/key") is False

    def test_a_prefix_directory_is_not_a_key(self, backend: Backend) -> None:
        backend.put("dir/key", b"x")
        assert backend.exists("dir") is False
        with pytest.raises(KeyNotFound):
            backend.get("dir")

    def test_head(self, backend: Backend) -> None:
        backend.put("k", b"0123456789")
        assert backend.head("k", 4) == b"0123"
        assert backend.head("k", 100) == b"0123456789"
        assert backend.head("k", 0) == b""

    def test_stat(self, backend: Backend) -> None:
        before = time.time()
        backend.put("k", b"12345")
        info = backend.stat("k")
        assert (info.key, info.size) == ("k", 5)
        # Remote clocks may round to the second and differ a little from ours.
        assert before - 5 <= info.mtime <= time.time() + 5

    def test_get_many_leaves_out_missing_keys(self, backend: Backend) -> None:
        backend.put("a/1", b"one")
        backend.put("a/2", b"two")
        got = backend.get_many(["a/1", "a/2", "a/3"])
        assert {k: bytes(v) for k, v in got.items()} == {"a/1": b"one", "a/2": b"two"}
        assert backend.get_many([]) == {}

    # bulk reads: get_many and list_values ---------------------------------------------------

    #: Keys with glob characters too: bulk reads must take every key literally.
    BULK_KEYS = [*(f"refs/t/{i}" for i in range(30)), "refs/t/a*b", "refs/t/c[1]", "refs/t/q?"]

    def _put_bulk(self, backend: Backend) -> dict[str, bytes]:
        values = {key: f"{i:032x}\n".encode() for i, key in enumerate(self.BULK_KEYS)}
        values["refs/t/empty"] = b""
        values["refs/u/1"] = b"elsewhere"
        values["config"] = b"{}"
        for key, value in values.items():
            backend.put(key, value)
        return values

    def test_get_many_equals_reading_key_by_key(self, backend: Backend) -> None:
        values = self._put_bulk(backend)
        keys = [*values, "refs/t/missing", "refs/missing/x", "refs/t"]  # "refs/t": a prefix
        got = backend.get_many(keys)
        assert {k: bytes(v) for k, v in got.items()} == values
        assert {k: bytes(v) for k, v in Backend.get_many(backend, keys).items()} == values
        with pytest.raises(InvalidKey):
            backend.get_many(["refs/ok", "refs//bad"])

    @pytest.mark.parametrize("prefix", ["", "refs/", "refs/t/", "refs/t/1", "refs/t/a*", "zz/"])
    def test_list_values_equals_listing_then_reading(self, backend: Backend, prefix: str) -> None:
        values = self._put_bulk(backend)
        got = {k: bytes(v) for k, v in backend.list_values(prefix).items()}
        expected = {k: v for k, v in values.items() if k.startswith(prefix)}
        assert got == expected
        assert got == {k: bytes(backend.get(k)) for k in backend.list(prefix)}
        assert got == {k: self.raw_get(backend, k) for k in expected}

    def test_list_values_reads_values_changed_around_it(self, backend: Backend) -> None:
        # A backend that knows values it has seen (S3, by ETag) must still notice changes.
        from .backends.base import RECENT_VALUES

        values = self._put_bulk(backend)
        RECENT_VALUES.add(values.values())
        assert {k: bytes(v) for k, v in backend.list_values("refs/").items()} == {
            k: v for k, v in values.items() if k.startswith("refs/")
        }
        self.raw_put(backend, "refs/t/0", values["refs/t/1"])  # another value seen before
        self.raw_put(backend, "refs/t/1", b"never seen\n")
        self.raw_put(backend, "refs/t/2", values["refs/t/2"][:-1])  # same digits, one byte less
        got = {k: bytes(v) for k, v in backend.list_values("refs/t/").items()}
        assert got["refs/t/0"] == values["refs/t/1"]
        assert got["refs/t/1"] == b"never seen\n"
        assert got["refs/t/2"] == values["refs/t/2"][:-1]
        assert got["refs/t/3"] == values["refs/t/3"]

    def test_list_values_leaves_out_keys_deleted_after_listing(self, backend: Backend) -> None:
        import secrets

        keys = [f"refs/d/{i}" for i in range(12)]
        values = {k: secrets.token_bytes(16) for k in keys}  # never seen: each must be read
        for key, value in values.items():
            backend.put(key, value)
        deleted = keys[::3]
        read = backend.get_many

        def delete_then_read(wanted: Any) -> Any:
            # runs between the listing and the reading: the keys are gone by the time they
            # are read, as when another process deletes them at that moment
            wanted = list(wanted)
            for key in deleted:
                backend.delete(key)
            return read(wanted)

        backend.get_many = delete_then_read  # type: ignore[method-assign,assignment]
        try:
            got = backend.list_values("refs/d/")
        finally:
            del backend.get_many
        assert {k: bytes(v) for k, v in got.items()} == {
            k: v for k, v in values.items() if k not in deleted
        }

    # delete ------------------------------------------------------------------------------

    def test_delete(self, backend: Backend) -> None:
        backend.put("a/b", b"x")
        backend.delete("a/b")
        assert self.raw_get(backend, "a/b") is None
        assert not backend.exists("a/b")
        with pytest.raises(KeyNotFound):
            backend.delete("a/b")
        backend.delete("a/b", missing_ok=True)

    def test_a_key_can_take_the_name_of_a_deleted_keys_directory(self, backend: Backend) -> None:
        backend.put("refs/a/b", b"1")
        backend.delete("refs/a/b")
        backend.put("refs/a", b"2")
        assert bytes(backend.get("refs/a")) == b"2"

    # conditional writes ------------------------------------------------------------------

    def test_put_if_absent(self, backend: Backend) -> None:
        assert backend.put_if_absent("objects/x", b"first") is True
        assert backend.put_if_absent("objects/x", b"second") is False
        assert self.raw_get(backend, "objects/x") == b"first"

    def test_put_new_creates_or_reports_an_existing_key(self, backend: Backend) -> None:
        assert backend.put_new("objects/n", [b"fir", b"st"]) is True
        assert backend.put_new("objects/n", b"second") is False
        assert self.raw_get(backend, "objects/n") == b"first"
        self.raw_put(backend, "refs/there", b"already")
        assert backend.put_new("refs/there", b"x") is False
        assert self.raw_get(backend, "refs/there") == b"already"

    def test_put_if_absent_sees_values_written_around_it(self, backend: Backend) -> None:
        self.raw_put(backend, "objects/y", b"there")
        assert backend.put_if_absent("objects/y", [b"x", b"y"]) is False
        assert self.raw_get(backend, "objects/y") == b"there"

    def test_swap_from_absent(self, backend: Backend) -> None:
        assert backend.swap("r", None, b"1") is True
        assert self.raw_get(backend, "r") == b"1"
        assert backend.swap("r", None, b"2") is False
        assert self.raw_get(backend, "r") == b"1"

    def test_swap_from_expected_value(self, backend: Backend) -> None:
        self.raw_put(backend, "r", b"1")
        assert backend.swap("r", b"1", b"2") is True
        assert self.raw_get(backend, "r") == b"2"

    def test_stale_swap_changes_nothing(self, backend: Backend) -> None:
        self.raw_put(backend, "r", b"2")
        assert backend.swap("r", b"1", b"3") is False
        assert backend.swap("missing", b"1", b"3") is False
        assert self.raw_get(backend, "r") == b"2"
        assert self.raw_get(backend, "missing") is None

    def test_swap_to_none_deletes(self, backend: Backend) -> None:
        self.raw_put(backend, "r", b"1")
        assert backend.swap("r", b"2", None) is False
        assert self.raw_get(backend, "r") == b"1"
        assert backend.swap("r", b"1", None) is True
        assert self.raw_get(backend, "r") is None
        assert backend.swap("r", None, None) is True  # absent, as expected: nothing to do

    def test_threads_racing_put_if_absent_have_one_winner(self, backend: Backend) -> None:
        results: list[bool] = []
        barrier = threading.Barrier(8)

        def race(i: int) -> None:
            barrier.wait()
            results.append(backend.put_if_absent("race", b"%d" % i))

        threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count(True) == 1
        assert self.raw_get(backend, "race") in {b"%d" % i for i in range(8)}

    def test_threads_swapping_a_counter_lose_no_update(self, backend: Backend) -> None:
        backend.put("counter", b"0")

        def increment(times: int) -> None:
            for _ in range(times):
                while True:
                    current = bytes(backend.get("counter"))
                    if backend.swap("counter", current, b"%d" % (int(current) + 1)):
                        break

        threads = [threading.Thread(target=increment, args=(10,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert self.raw_get(backend, "counter") == b"40"

    # listing -----------------------------------------------------------------------------

    def test_list_by_prefix(self, backend: Backend) -> None:
        keys = ["a/b/c", "a/b/d", "a/bc", "ab", "b", "config"]
        for key in keys:
            self.raw_put(backend, key, key.encode())
        assert sorted(backend.list()) == sorted(keys)
        assert sorted(backend.list("a/")) == ["a/b/c", "a/b/d", "a/bc"]
        assert sorted(backend.list("a/b")) == ["a/b/c", "a/b/d", "a/bc"]
        assert sorted(backend.list("a/b/")) == ["a/b/c", "a/b/d"]
        assert sorted(backend.list("a")) == ["a/b/c", "a/b/d", "a/bc", "ab"]
        assert sorted(backend.list("config")) == ["config"]
        assert list(backend.list("config/")) == []
        assert list(backend.list("zz/")) == []

    def test_list_shows_no_internal_files(self, backend: Backend) -> None:
        backend.put("k1", b"1")
        backend.put_if_absent("k2", b"2")
        backend.swap("k3", None, b"3")
        backend.swap("k3", b"3", b"4")
        assert sorted(backend.list()) == ["k1", "k2", "k3"]
        assert list(backend.list("tmp/")) == []
        assert list(backend.list("locks/")) == []
        assert list(backend.list_temp()) == []

    def test_list_of_many_keys(self, backend: Backend) -> None:
        for i in range(150):
            backend.put(f"refs/t/{i}", b"x")
        assert sorted(backend.list("refs/t/"), key=lambda k: int(k.rpartition("/")[2])) == [
            f"refs/t/{i}" for i in range(150)
        ]

    # validation --------------------------------------------------------------------------

    @pytest.mark.parametrize("key", BAD_KEYS)
    def test_invalid_keys_are_refused_before_any_io(self, backend: Backend, key: str) -> None:
        calls = [
            lambda: backend.get(key),
            lambda: backend.head(key, 1),
            lambda: backend.exists(key),
            lambda: backend.stat(key),
            lambda: backend.put(key, b"x"),
            lambda: backend.put_if_absent(key, b"x"),
            lambda: backend.swap(key, None, b"x"),
            lambda: backend.delete(key),
        ]
        for call in calls:
            with pytest.raises(InvalidKey) as info:
                call()
            assert isinstance(info.value, ValueError)
            assert info.value.reason in str(info.value)
        assert list(backend.list()) == []

    @pytest.mark.parametrize("prefix", ["/a", "a//", "../", "a/../", "a\\"])
    def test_invalid_prefixes_are_refused(self, backend: Backend, prefix: str) -> None:
        with pytest.raises(InvalidKey):
            list(backend.list(prefix))

    def test_str_values_are_refused(self, backend: Backend) -> None:
        with pytest.raises(TypeError):
            backend.put("k", "text")  # type: ignore[arg-type]
        assert self.raw_get(backend, "k") is None

    # read-only and failures ----------------------------------------------------------------

    def test_read_only_refuses_every_write(self, factory: Callable[..., Backend]) -> None:
        writer = factory()
        writer.put("k", b"v")
        reader = factory(read_only=True)
        assert reader.read_only is True
        assert bytes(reader.get("k")) == b"v"
        assert list(reader.list()) == ["k"]
        writes = [
            lambda: reader.put("k", b"w"),
            lambda: reader.put("new", b"w"),
            lambda: reader.put_if_absent("new", b"w"),
            lambda: reader.swap("k", b"v", b"w"),
            lambda: reader.delete("k"),
            lambda: reader.touch("k"),
            lambda: reader.delete_temp("x.tmp"),
        ]
        for write in writes:
            with pytest.raises(ReadOnlyStore) as info:
                write()
            assert isinstance(info.value, PermissionError)
            assert "read-only" in str(info.value)
        assert self.raw_get(writer, "k") == b"v"
        assert self.raw_get(writer, "new") is None

    @pytest.mark.parametrize("method", ["put", "put_if_absent", "swap"])
    def test_a_write_with_unreadable_data_leaves_nothing(
        self, backend: Backend, method: str
    ) -> None:
        data: Any = [b"first chunk", _Unreadable()]
        with pytest.raises(TypeError):
            if method == "swap":
                backend.swap("k", None, data)
            else:
                getattr(backend, method)("k", data)
        assert self.raw_get(backend, "k") is None
        assert not backend.exists("k")
        assert list(backend.list_temp()) == []

    def test_delete_temp(self, backend: Backend) -> None:
        backend.delete_temp("no-such-temp-file.tmp")  # missing is fine
        with pytest.raises(InvalidKey):
            backend.delete_temp("../config")

    def test_touch(self, backend: Backend) -> None:
        backend.put("k", b"v")
        backend.touch("k")
        assert self.raw_get(backend, "k") == b"v"
        assert time.time() - backend.stat("k").mtime < 60
        with pytest.raises(KeyNotFound):
            backend.touch("missing")
