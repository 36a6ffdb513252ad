"""Refs on every backend: names, create/get/swap/set/delete/list, and every error path."""

from __future__ import annotations

import pytest

from store.digest import Oid
from store.errors import (
    InvalidOid,
    InvalidRefName,
    ReadOnlyStore,
    RefConflict,
    RefExists,
    RefNotFound,
)
from store.refs import CorruptRef, RefStore, validate_ref_name

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
