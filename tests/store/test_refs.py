"""Refs on every backend: names, create/get/swap/set/delete/list, and every error path."""

from __future__ import annotations

import threading

import hypothesis
import pytest

from daskperiment_store.backends.base import RECENT_VALUES
from daskperiment_store.digest import Oid
from daskperiment_store.errors import (
    InvalidOid,
    InvalidRefName,
    ReadOnlyStore,
    RefConflict,
    RefExists,
    RefNotFound,
)
from daskperiment_store.refs import CorruptRef, RefStore, validate_ref_name
from daskperiment_store.testing import count_s3_requests

A = Oid("a" * 32)
B = Oid("b" * 32)
C = Oid("c" * 32)


@pytest.fixture
def backend(backend_factory):
    return backend_factory()


@pytest.fixture
def refs(backend):
    return RefStore(backend)


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["main", "experiments/x/trials/12", "purity/step/" + "0" * 32, "a.b/c-d_e", "ünïcode/名前"],
)
def test_valid_names(name):
    assert validate_ref_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("/abs", "absolute"),
        ("a/", "ends with '/'"),
        ("a//b", "empty component"),
        ("..", "'..' component"),
        ("a/../b", "'..' component"),
        (".", "'.' component"),
        ("a/./b", "'.' component"),
        ("a\x00b", "control character"),
        ("a\tb", "control character"),
        ("a\x7fb", "control character"),
        ("a\\b", "backslash"),
        ("x.lock", "'.lock'"),
        ("a/b.lock/c", "'.lock'"),
        ("a/" + "x" * 256, "longer than 255 bytes"),
        (7, "str"),
    ],
)
def test_invalid_names_say_why(refs, name, reason):
    with pytest.raises(InvalidRefName) as info:
        validate_ref_name(name)
    assert reason in info.value.reason
    assert info.value.ref == name
    assert isinstance(info.value, ValueError)
    for use in (
        lambda: refs.get(name),
        lambda: refs.has(name),
        lambda: refs.create(name, A),
        lambda: refs.swap(name, None, A),
        lambda: refs.set(name, A),
        lambda: refs.delete(name),
    ):
        with pytest.raises(InvalidRefName, match="invalid ref name"):
            use()
    assert refs.list() == {}


# -- reading and writing -------------------------------------------------------------------------


def test_a_ref_is_its_oid_and_a_newline_under_refs(refs, backend):
    refs.create("experiments/x/trials/1", A)
    assert bytes(backend.get("refs/experiments/x/trials/1")) == A.encode() + b"\n"
    backend.put("refs/written/around", B.encode() + b"\n")
    assert refs.get("written/around") == B


def test_create_get_has(refs):
    assert not refs.has("t/1")
    refs.create("t/1", A)
    assert refs.has("t/1")
    assert refs.get("t/1") == A


def test_create_on_an_existing_ref_is_ref_exists(refs):
    refs.create("t/1", A)
    with pytest.raises(RefExists) as info:
        refs.create("t/1", B)
    assert (info.value.ref, info.value.current) == ("t/1", A)
    assert A in str(info.value)
    assert refs.get("t/1") == A


def test_missing_ref_is_ref_not_found_and_a_key_error(refs):
    for use in (lambda: refs.get("nope"), lambda: refs.delete("nope")):
        with pytest.raises(RefNotFound) as info:
            use()
        assert isinstance(info.value, KeyError)
        assert info.value.ref == "nope"
        assert "'nope' not found" in str(info.value)


def test_swap(refs):
    refs.swap("r", None, A)  # create
    refs.swap("r", A, B)  # move
    assert refs.get("r") == B
    refs.swap("r", B, None)  # delete
    assert not refs.has("r")


def test_stale_swap_is_ref_conflict_showing_expected_and_actual(refs):
    refs.set("r", B)
    with pytest.raises(RefConflict) as info:
        refs.swap("r", A, C)
    err = info.value
    assert (err.ref, err.expected, err.actual) == ("r", A, B)
    assert f"expected {A}" in str(err) and f"found {B}" in str(err)
    assert refs.get("r") == B


def test_swap_expecting_absence_or_presence_wrongly(refs):
    refs.set("r", A)
    with pytest.raises(RefConflict, match=r"expected \(absent\), found a{32}"):
        refs.swap("r", None, B)
    with pytest.raises(RefConflict, match=r"found \(absent\)") as info:
        refs.swap("missing", A, B)
    assert info.value.actual is None
    assert not refs.has("missing")


def test_set_overwrites_and_delete_removes(refs):
    refs.set("r", A)
    refs.set("r", B)
    assert refs.get("r") == B
    refs.delete("r")
    assert not refs.has("r")


@pytest.mark.parametrize("bad", ["A" * 32, "a" * 31, "g" * 32, "", 12, b"a" * 32])
def test_malformed_oids_are_refused(refs, bad):
    for use in (
        lambda: refs.create("r", bad),
        lambda: refs.set("r", bad),
        lambda: refs.swap("r", None, bad),
    ):
        with pytest.raises(InvalidOid):
            use()
    assert not refs.has("r")
    with pytest.raises(InvalidOid):
        refs.create("r", None)


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", A.encode(), A.encode() + b"\n\n", A.upper().encode() + b"\n", b"\xff" * 33],
)
def test_corrupt_ref_content_names_the_ref(refs, backend, content):
    backend.put("refs/experiments/x/trials/3", content)
    with pytest.raises(CorruptRef) as info:
        refs.get("experiments/x/trials/3")
    assert info.value.ref == "experiments/x/trials/3"
    assert "'experiments/x/trials/3'" in str(info.value)
    with pytest.raises(CorruptRef, match="trials/3"):
        refs.list("experiments/")
    assert refs.names("experiments/") == ["experiments/x/trials/3"]
    with pytest.raises(RefConflict, match="corrupt"):
        refs.swap("experiments/x/trials/3", A, B)  # shows what is there instead


# -- listing -------------------------------------------------------------------------------------


def test_list_by_name_prefix(refs):
    names = {
        "experiments/x/trials/1": A,
        "experiments/x/trials/2": B,
        "experiments/x/trials/10": C,
        "experiments/x/purity/s/" + "0" * 32: A,
        "experiments/xy/trials/1": B,
        "other": C,
    }
    for name, oid in names.items():
        refs.create(name, oid)
    assert refs.list() == dict(sorted(names.items()))
    assert refs.list("experiments/x/trials/") == {
        "experiments/x/trials/1": A,
        "experiments/x/trials/10": C,
        "experiments/x/trials/2": B,
    }
    assert list(refs.list("experiments/x/trials/1")) == [
        "experiments/x/trials/1",
        "experiments/x/trials/10",
    ]
    assert list(refs.list("experiments/x")) == sorted(
        k for k in names if k.startswith("experiments/x")
    )
    assert refs.list("nothing/") == {}
    assert refs.names("experiments/x/trials/") == [
        "experiments/x/trials/1",
        "experiments/x/trials/10",
        "experiments/x/trials/2",
    ]


def test_list_of_many_refs(refs):
    for i in range(300):
        refs.set(f"experiments/x/trials/{i}", f"{i:032x}")
    listed = refs.list("experiments/x/trials/")
    assert len(listed) == 300
    assert listed["experiments/x/trials/299"] == f"{299:032x}"


@pytest.mark.parametrize("prefix", ["/x", "a//", "../", "a/../b", "a\\"])
def test_invalid_list_prefixes_are_refused(refs, prefix):
    with pytest.raises(InvalidRefName):
        refs.list(prefix)


def test_objects_and_config_are_not_refs(refs, backend):
    backend.put("config", b"{}")
    backend.put("objects/aa/" + "b" * 30, b"x")
    refs.set("r", A)
    assert refs.list() == {"r": A}


# -- read-only -----------------------------------------------------------------------------------


def test_read_only_refs_refuse_writes(backend_factory):
    RefStore(backend_factory()).set("r", A)
    refs = RefStore(backend_factory(read_only=True))
    assert refs.get("r") == A
    for write in (
        lambda: refs.create("new", A),
        lambda: refs.swap("r", A, B),
        lambda: refs.set("r", B),
        lambda: refs.delete("r"),
    ):
        with pytest.raises(ReadOnlyStore):
            write()
    assert refs.list() == {"r": A}


# -- bulk reads: list and get_many ---------------------------------------------------------------


def _oid(i):
    return Oid(f"{i:032x}")


def test_list_equals_reading_each_ref(refs, backend):
    for i in range(40):
        refs.set(f"experiments/x/trials/{i}", _oid(i))
    refs.set("experiments/x/trials/a*b[1]", A)  # glob characters are plain characters in names
    backend.put("refs/written/around", B.encode() + b"\n")
    for prefix in ("", "experiments/x/trials/", "experiments/x/trials/1", "written/"):
        RECENT_VALUES.clear()  # read every value (on S3: concurrently)
        cold = refs.list(prefix)
        warm = refs.list(prefix)  # on S3: values known from the listing's ETags
        sequential = {name: refs.get(name) for name in refs.names(prefix)}
        assert cold == warm == sequential
        assert list(cold) == sorted(cold)
    assert refs.list("experiments/x/trials/a*")["experiments/x/trials/a*b[1]"] == A


def test_list_sees_refs_changed_around_it_after_reading_them(refs, backend):
    for i in range(5):
        refs.set(f"t/{i}", _oid(i))
    assert refs.list("t/")["t/0"] == _oid(0)
    backend.put("refs/t/0", _oid(99).encode() + b"\n")  # never seen by this process
    backend.put("refs/t/1", _oid(2).encode() + b"\n")  # another ref's value
    backend.delete("refs/t/4")
    assert refs.list("t/") == {"t/0": _oid(99), "t/1": _oid(2), "t/2": _oid(2), "t/3": _oid(3)}


def test_list_reports_a_ref_corrupted_after_it_was_read(refs, backend):
    for i in range(5):
        refs.set(f"t/{i}", _oid(i))
    refs.list("t/")
    backend.put("refs/t/3", b"z" * 32 + b"\n")  # right size, not an oid
    with pytest.raises(CorruptRef) as info:
        refs.list("t/")
    assert info.value.ref == "t/3"
    assert info.value.content == b"z" * 32 + b"\n"


def test_list_tolerates_refs_deleted_while_listing(refs, backend):
    values = {f"t/{i:02}": _oid(i) for i in range(30)}
    for name, oid in values.items():
        refs.set(name, oid)
    errors = []

    def delete_all():
        try:
            for name in values:
                refs.delete(name)
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)

    deleter = threading.Thread(target=delete_all)
    deleter.start()
    listings = []
    while deleter.is_alive() or not listings:
        RECENT_VALUES.clear()  # make every listing read the values it lists
        listings.append(refs.list("t/"))
    deleter.join()
    assert errors == []
    for listed in listings:
        assert listed.items() <= values.items()
    assert refs.list("t/") == {}


def test_get_many_reads_existing_refs(refs, backend):
    refs.set("t/1", A)
    refs.set("t/2", B)
    assert refs.get_many(["t/2", "t/1", "t/missing"]) == {"t/1": A, "t/2": B}
    assert list(refs.get_many(["t/2", "t/1"])) == ["t/1", "t/2"]
    assert refs.get_many([]) == {}
    with pytest.raises(InvalidRefName):
        refs.get_many(["t/1", "bad//name"])
    backend.put("refs/t/2", b"garbage")
    with pytest.raises(CorruptRef, match="'t/2'"):
        refs.get_many(["t/1", "t/2"])


@pytest.mark.s3
def test_s3_list_reads_only_values_it_has_not_seen(s3_url):
    """Listing refs on S3: one LIST, then a GET per value this process has not seen."""
    from daskperiment_store.backends import FsspecBackend

    backend = FsspecBackend(s3_url)
    refs = RefStore(backend)
    for i in range(20):
        backend.put(f"refs/t/{i}", _oid(i).encode() + b"\n")  # around the RefStore: unseen
    RECENT_VALUES.clear()
    with count_s3_requests(backend) as requests:
        assert refs.list("t/") == {f"t/{i}": _oid(i) for i in sorted(range(20), key=str)}
    assert requests == {"ListObjectsV2": 1, "GetObject": 20}
    with count_s3_requests(backend) as requests:
        refs.list("t/")
    assert requests == {"ListObjectsV2": 1}
    backend.put("refs/t/5", _oid(500).encode() + b"\n")
    with count_s3_requests(backend) as requests:
        assert refs.list("t/")["t/5"] == _oid(500)
    assert requests == {"ListObjectsV2": 1, "GetObject": 1}


@pytest.mark.s3
def test_s3_list_recognises_values_read_from_another_store(s3_url, tmp_path):
    """What makes a second push cheap: the source's refs, read locally, are recognised in the
    destination's listing without reading them there."""
    from daskperiment_store.backends import FsspecBackend, LocalBackend

    s3 = FsspecBackend(s3_url)
    local = RefStore(LocalBackend(tmp_path / "local"))
    for i in range(10):
        s3.put(f"refs/t/{i}", _oid(i).encode() + b"\n")
        local.backend.put(f"refs/t/{i}", _oid(i).encode() + b"\n")
    RECENT_VALUES.clear()
    expected = local.list("t/")
    with count_s3_requests(s3) as requests:
        assert RefStore(s3).list("t/") == expected
    assert requests == {"ListObjectsV2": 1}


@hypothesis.given(
    hypothesis.strategies.lists(
        hypothesis.strategies.sampled_from(list("aZ09_-./\\\x00\x7f é") + [".lock", ".."]),
        max_size=30,
    ).map("".join)
    | hypothesis.strategies.sampled_from(["a" * 200, "a" * 201, "é" * 128, "x/" + "b" * 256])
)
def test_the_quick_name_check_agrees_with_the_full_one(name: str) -> None:
    """Plain names are accepted by one regex match; every name gets the same answer as the
    rule-by-rule check would give it."""
    from daskperiment_store import refs as refs_module
    from daskperiment_store.backends import base

    assert refs_module._name_problem(name) == refs_module._any_name_problem(name)
    assert base._key_problem(name) == base._any_key_problem(name)
