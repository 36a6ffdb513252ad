"""Replacing a key's file by exchange rather than rename (store/backends/_osio.py ``exchange``).

ext4 writes a file's data out inside a rename over an existing file; exchanging the two paths
avoids that. What must hold either way: a reader never finds the key missing or half written,
no temp file is left behind, and the store works the same where exchange is unavailable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from daskperiment_store.backends import LocalBackend, _osio
from daskperiment_store.errors import InvalidKey
from daskperiment_store.refs import RefStore

REPO = Path(__file__).resolve().parents[2]

READER = textwrap.dedent(
    """
    import sys
    from daskperiment_store.backends import LocalBackend
    from daskperiment_store.errors import KeyNotFound
    backend = LocalBackend(sys.argv[1], create=False)
    valid = {f"{n:032x}".encode() for n in range(int(sys.argv[2]))}
    reads = bad = 0
    print("ready", flush=True)
    while True:
        try:
            value = bytes(backend.get("refs/r")).strip()
        except KeyNotFound:
            value = b"<missing>"
        reads += 1
        if value == b"stop":
            break
        if value not in valid:
            bad += 1
            print("bad", value, flush=True)
    print("reads", reads, "bad", bad, flush=True)
    """
)


def test_a_reader_never_sees_a_ref_missing_or_torn_while_it_is_rewritten(tmp_path: Path) -> None:
    root = tmp_path / "store"
    backend = LocalBackend(root)
    refs = RefStore(backend)
    swaps = 3000
    refs.create("r", f"{0:032x}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(root), str(swaps + 1)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
        for n in range(swaps):
            refs.swap("r", f"{n:032x}", f"{n + 1:032x}")
        backend.put("refs/r", b"stop\n")
        out, _ = reader.communicate(timeout=120)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert "bad 0" in out, out
    assert int(out.split()[1]) > 10  # the reader really read while the ref changed
    assert list(backend.list_temp()) == []


def test_rewrites_exchange_instead_of_renaming_over_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LocalBackend(tmp_path / "store")
    refs = RefStore(backend)
    refs.create("r", "a" * 32)
    backend.put("config-like", b"1")
    if _osio._load_renameat2() is False:
        pytest.skip("no renameat2 in this libc")
    replaced: list[str] = []
    real = os.replace

    def counting(src: str, dst: str) -> None:
        replaced.append(dst)
        real(src, dst)

    monkeypatch.setattr(os, "replace", counting)
    refs.swap("r", "a" * 32, "b" * 32)
    backend.put("config-like", b"2")
    assert replaced == []
    assert refs.get("r") == "b" * 32 and bytes(backend.get("config-like")) == b"2"
    assert list(backend.list_temp()) == []  # the old values were unlinked
    backend.put("new-key", b"3")  # nothing to exchange with: a plain rename
    assert len(replaced) == 1 and bytes(backend.get("new-key")) == b"3"


def test_without_exchange_the_store_renames_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_osio, "_renameat2", False)
    backend = LocalBackend(tmp_path / "store")
    refs = RefStore(backend)
    refs.create("r", "a" * 32)
    refs.swap("r", "a" * 32, "b" * 32)
    backend.put("k", b"1")
    backend.put("k", b"2")
    assert refs.get("r") == "b" * 32 and bytes(backend.get("k")) == b"2"
    assert list(backend.list_temp()) == []


def test_a_directory_in_the_keys_place_is_never_exchanged(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "store")
    backend.put("a/b", b"1")
    with pytest.raises(InvalidKey, match="prefix"):
        backend.put("a", b"2")
    assert bytes(backend.get("a/b")) == b"1"
    assert list(backend.list_temp()) == []
