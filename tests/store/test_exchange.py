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
from daskperiment_store.errors import InvalidKey, RefExists
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


def test_new_files_are_renamed_into_place_without_replacing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """put_if_absent moves its temp file in with RENAME_NOREPLACE: no hard link, no temp name
    to unlink after, and an existing key is left as it was."""
    if _osio._load_renameat2() is False:
        pytest.skip("no renameat2 in this libc")
    backend = LocalBackend(tmp_path / "store")
    refs = RefStore(backend)

    def no_link(*args: object) -> None:
        raise AssertionError("os.link called")

    monkeypatch.setattr(os, "link", no_link)
    assert backend.put_if_absent("objects/ab/cd", b"first")
    refs.create("trials/1", "a" * 32)
    assert not backend.put_if_absent("objects/ab/cd", b"second")
    with pytest.raises(RefExists):
        refs.create("trials/1", "b" * 32)  # a ref: no stat first, the rename says it exists
    assert bytes(backend.get("objects/ab/cd")) == b"first"
    assert refs.get("trials/1") == "a" * 32
    assert list(backend.list_temp()) == []
    assert os.listdir(tmp_path / "store" / "tmp") == []


def test_a_directory_in_the_keys_place_is_never_exchanged(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "store")
    backend.put("a/b", b"1")
    with pytest.raises(InvalidKey, match="prefix"):
        backend.put("a", b"2")
    assert bytes(backend.get("a/b")) == b"1"
    assert list(backend.list_temp()) == []


# -- the temp file kept for the next rewrite (store/backends/_kept.py) -------------------------


def _inode(path: Path) -> int:
    return os.stat(path).st_ino


def test_rewriting_a_ref_allocates_no_inode_after_the_first_time(tmp_path: Path) -> None:
    """The old value's file, left at the temp name by the exchange, is what the next rewrite
    writes into: two inodes take turns, however many times the ref changes."""
    if _osio._load_renameat2() is False:
        pytest.skip("no renameat2 in this libc")
    backend = LocalBackend(tmp_path / "store")
    refs = RefStore(backend)
    refs.create("r", f"{0:032x}")
    ref_file = tmp_path / "store" / "refs" / "r"
    kept_before = None
    for n in range(20):
        old = _inode(ref_file)
        refs.swap("r", f"{n:032x}", f"{n + 1:032x}")
        assert refs.get("r") == f"{n + 1:032x}"
        (kept,) = (tmp_path / "store" / "tmp").glob("*.kept")
        assert _inode(kept) == old  # the old value's inode is kept, not freed...
        if kept_before is not None:
            assert _inode(ref_file) == kept_before  # ...and written into by the next rewrite
        kept_before = _inode(kept)
    assert list(backend.list_temp()) == []  # the kept file is not a leftover while we run
    backend.put("k", b"a much longer value than a ref\n")
    backend.put("k", b"short\n")
    backend.put("k", b"shorter")
    assert bytes(backend.get("k")) == b"shorter"  # nothing left of the longer value


def test_a_hard_linked_copy_of_an_old_value_is_never_written_through(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "store")
    refs = RefStore(backend)
    refs.create("r", "a" * 32)
    refs.swap("r", "a" * 32, "b" * 32)
    backup = tmp_path / "backup-of-r"
    os.link(tmp_path / "store" / "refs" / "r", backup)  # e.g. `cp -al store snapshot`
    refs.swap("r", "b" * 32, "c" * 32)  # the file linked from the backup is now kept...
    refs.swap("r", "c" * 32, "d" * 32)  # ...and must not be reused for this one
    assert backup.read_bytes() == b"b" * 32 + b"\n"
    assert refs.get("r") == "d" * 32


KEEPER = textwrap.dedent(
    """
    import os, sys, time
    from daskperiment_store.backends import LocalBackend
    from daskperiment_store.refs import RefStore
    refs = RefStore(LocalBackend(sys.argv[1], create=False))
    a, b, c = sys.argv[3:6]
    refs.swap("r", a, b)
    refs.swap("r", b, c)
    print("kept", flush=True)
    if sys.argv[2] == "wait":
        time.sleep(600)
    """
)


def _keeper(root: Path, mode: str, oids: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", KEEPER, str(root), mode, *oids],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "kept"
    return proc


def test_a_killed_process_leaves_its_kept_file_as_a_leftover_that_gc_removes(
    tmp_path: Path,
) -> None:
    import signal

    import daskperiment_store as store

    root = tmp_path / "store"
    st = store.open(root)
    oids = [st.put(n) for n in range(3)]
    st.refs.create("r", oids[0])
    proc = _keeper(root, "wait", oids)
    try:
        assert st.fsck().temp_files == []  # kept by a running process: not a leftover
        kept = [p for p in os.listdir(root / "tmp") if p.endswith(".kept")]
        assert len(kept) == 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    report = st.fsck()
    assert report.ok and report.temp_files == kept
    assert st.gc(grace=0).temp_removed == kept
    assert os.listdir(root / "tmp") == [] and st.refs.get("r") == oids[2]


def test_a_process_that_exits_removes_its_kept_file(tmp_path: Path) -> None:
    import daskperiment_store as store

    root = tmp_path / "store"
    st = store.open(root)
    oids = [st.put(n) for n in range(3)]
    st.refs.create("r", oids[0])
    proc = _keeper(root, "exit", oids)
    proc.wait(timeout=60)
    assert proc.returncode == 0
    assert os.listdir(root / "tmp") == [] and st.refs.get("r") == oids[2]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_write_into_its_parents_kept_file(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "store")
    refs = RefStore(backend)
    refs.create("p", "a" * 32)
    refs.create("c", "a" * 32)
    refs.swap("p", "a" * 32, "b" * 32)  # the parent now keeps a file
    pid = os.fork()
    if pid == 0:
        try:
            for n in range(50):
                refs.swap("c", (f"{n:032x}" if n else "a" * 32), f"{n + 1:032x}")
        finally:
            os._exit(0)
    for n in range(50):
        refs.swap("p", (f"{n:032x}" if n else "b" * 32), f"{n + 1:032x}")
    os.waitpid(pid, 0)
    assert refs.get("p") == f"{50:032x}" and refs.get("c") == f"{50:032x}"


def test_a_key_created_between_the_existence_check_and_the_write_is_left_alone(
    tmp_path: Path,
) -> None:
    """Store.put checks that an object is missing, then writes it without looking again; a
    writer that created it in between keeps its file (the link is refused)."""
    from daskperiment_store.errors import KeyNotFound

    mine, theirs = LocalBackend(tmp_path / "s"), LocalBackend(tmp_path / "s")
    with pytest.raises(KeyNotFound):
        mine.stat("objects/ab/cd")
    assert theirs.put_if_absent("objects/ab/cd", b"theirs") is True
    assert mine.put_if_absent("objects/ab/cd", b"mine") is False
    assert bytes(mine.get("objects/ab/cd")) == b"theirs"
    assert list(mine.list_temp()) == []
