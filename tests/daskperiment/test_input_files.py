"""Input files: recorded per step, part of the cache and the diff, queried by lineage.

Real scripts in a temporary project directory, run through ``python -m daskperiment`` in
fresh processes; the stat cache lives in the test's directory.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from daskperiment.provenance import statcache

EXP = "files_pj"

LOADER = """
import os
import subprocess
import numpy as np
import pandas as pd
import daskperiment

ex = daskperiment.Experiment(id="files_pj")
path = ex.parameter("path")

@ex.persist(cache=True)
def load(path):
    with open(path) as f:
        return f.read()

@ex
def count(text):
    return len(text.split())

@ex.result
def total(n):
    with open("written.txt", "w") as f:
        f.write("out")
    with open("written.txt") as f:
        f.read()
    return n

result = total(count(load(path)))
"""


@pytest.fixture
def project(python: Any, workdir: Path) -> Any:
    """Runs ``daskperiment`` commands in the test's directory with its own stat cache."""

    class Project:
        env = {"DASKPERIMENT_STAT_CACHE": str(workdir / "stat-cache.json")}

        def dp(self, *args: str, code: int = 0) -> Any:
            run = python.run_args([sys.executable, "-m", "daskperiment", *args], env=self.env)
            assert run.returncode == code, run.describe()
            return run

        def show(self, trial: int) -> dict:
            return json.loads(self.dp("show", EXP, str(trial), "--format", "json").stdout)

        def files(self, trial: int, step: str) -> dict[str, str]:
            return self.show(trial)["steps"][step].get("files", {})

    return Project()


def _digest(data: bytes) -> str:
    import xxhash

    return xxhash.xxh3_128(data).hexdigest()


def test_data_edit_misses_the_cache_and_diff_names_the_file(
    python: Any, project: Any, workdir: Path
) -> None:
    python.write("exp.py", LOADER, report=False)
    data = workdir / "data.txt"
    data.write_text("a b c\n")
    first = project.dp("run", "exp.py", "path=data.txt", "--seed", "1")
    assert first.stdout == "3\n"
    assert project.files(1, "load") == {str(data): _digest(b"a b c\n")}
    # written.txt was written by the step: not an input.
    assert "files" not in project.show(1)["steps"]["total"]

    unchanged = project.dp("run", "exp.py", "path=data.txt", "--seed", "1")
    assert "Reused cached result of load from trial 1" in unchanged.output
    assert project.files(2, "load") == {str(data): _digest(b"a b c\n")}

    data.write_text("a b c d\n")
    edited = project.dp("run", "exp.py", "path=data.txt", "--seed", "1")
    assert edited.stdout == "4\n"
    assert "Reused cached result" not in edited.output
    # New data, same arguments: a new input for the purity check, not an impure step.
    assert "Experiment step result is changed" not in edited.output
    assert f"input file {data} changed, so the step runs again" in edited.output
    assert project.files(3, "load") == {str(data): _digest(b"a b c d\n")}

    diff = project.dp("diff", EXP, "2", "3", "--color", "never").stdout
    assert f"-  read {data} {_digest(b'a b c' + bytes([10]))}" in diff
    assert f"+  read {data} {_digest(b'a b c d' + bytes([10]))}" in diff
    shown = project.dp("show", EXP, "3").stdout
    assert f"read {data} {_digest(b'a b c d' + bytes([10]))}" in shown

    # The new content is cached again: the next trial reuses trial 3's output.
    again = project.dp("run", "exp.py", "path=data.txt", "--seed", "1")
    assert "Reused cached result of load from trial 3" in again.output


def test_racily_clean_rewrite_is_caught(python: Any, project: Any, workdir: Path) -> None:
    python.write("exp.py", LOADER, report=False)
    data = workdir / "data.txt"
    data.write_text("one two\n")
    project.dp("run", "exp.py", "path=data.txt", "--seed", "1")
    old = _digest(b"one two\n")
    # The same size rewritten within one timestamp tick of hashing: on a filesystem with
    # coarse timestamps every stat field the cache compares stays the same. Simulate that
    # by giving the remembered entry the new stat data, hashed in the file's mtime tick.
    data.write_text("six two\n")
    cache_file = workdir / "stat-cache.json"
    saved = json.loads(cache_file.read_text())
    entry = saved["entries"][str(data)]
    assert entry[2] == old
    st = os.stat(data)
    saved["entries"][str(data)] = [
        [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns],
        st.st_mtime_ns,
        old,
    ]
    cache_file.write_text(json.dumps(saved))

    run = project.dp("run", "exp.py", "path=data.txt", "--seed", "1")
    assert "Reused cached result" not in run.output
    assert project.files(2, "load") == {str(data): _digest(b"six two\n")}


def test_stat_cache_reads_a_file_once_and_trusts_only_entries_hashed_after_the_tick(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    old_time = 1_700_000_000_000_000_000
    os.utime(path, ns=(old_time, old_time))
    cache = statcache.StatCache(tmp_path / "cache.json")
    digest = cache.digest(str(path))
    assert digest == _digest(b"x" * 1000)
    assert (cache.digest(str(path)), cache.hashed) == (digest, 1)
    cache.save()
    reloaded = statcache.StatCache(tmp_path / "cache.json")
    assert (reloaded.digest(str(path)), reloaded.hashed) == (digest, 0)

    # An entry whose hashing began in the file's mtime tick is re-checked every time.
    racy = statcache.StatCache(None)
    st = os.stat(path)
    sig = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
    racy._entries[str(path)] = [sig, st.st_mtime_ns + 1, "0" * 32]
    racy._loaded = True
    assert racy.digest(str(path)) == digest
    assert racy.hashed == 1
    # A same-size rewrite with a new mtime is hashed again.
    path.write_bytes(b"y" * 1000)
    assert reloaded.digest(str(path)) == _digest(b"y" * 1000)


READERS = """
import os
import pathlib
import subprocess
import numpy as np
import pandas as pd
import daskperiment

ex = daskperiment.Experiment(id="files_pj")
scheduler = ex.parameter("scheduler")

@ex
def with_numpy():
    return float(np.load("arr.npy").sum() + np.loadtxt("values.txt").sum())

@ex
def with_pandas():
    return int(pd.read_csv("table.csv")["a"].sum())

@ex
def with_os():
    fd = os.open("raw.bin", os.O_RDONLY)
    os.close(fd)
    out = os.open("made.bin", os.O_WRONLY | os.O_CREAT)
    os.close(out)
    return pathlib.Path("path.txt").read_bytes().decode()

@ex
def with_subprocess():
    # cat reads the file in another process: only ex.track declares it.
    text = subprocess.run(["cat", "seen_by_cat.txt"], capture_output=True, text=True).stdout
    ex.track("tracked_dir")
    return text

@ex.result
def combine(a, b, c, d):
    return [a, b, c, d]

result = combine(with_numpy(), with_pandas(), with_os(), with_subprocess())
"""


def _write_reader_inputs(workdir: Path) -> None:
    import numpy as np

    np.save(workdir / "arr.npy", np.arange(4))
    (workdir / "values.txt").write_text("1\n2\n")
    (workdir / "table.csv").write_text("a,b\n1,2\n3,4\n")
    (workdir / "raw.bin").write_bytes(b"\x00\x01")
    (workdir / "path.txt").write_text("p")
    (workdir / "seen_by_cat.txt").write_text("cat")
    tree = workdir / "tracked_dir"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("A")
    (tree / "sub" / "b.txt").write_text("B")


RUN_WITH = {
    "distributed": """
if __name__ == "__main__":
    import distributed
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        result.compute(scheduler=client, seed=1)
""",
}


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes", "distributed"])
def test_readers_seen_by_the_hook_and_declared_ones(
    python: Any, project: Any, workdir: Path, scheduler: str
) -> None:
    _write_reader_inputs(workdir)
    run = f"\nif __name__ == '__main__':\n    result.compute(scheduler={scheduler!r}, seed=1)\n"
    script = READERS + RUN_WITH.get(scheduler, run)
    python.write("readers.py", script, report=False)
    python.run_args([sys.executable, "readers.py"], env=project.env).check()
    steps = project.show(1)["steps"]
    w = str(workdir)
    assert steps["with_numpy"]["files"] == {
        f"{w}/arr.npy": _digest((workdir / "arr.npy").read_bytes()),
        f"{w}/values.txt": _digest(b"1\n2\n"),
    }
    assert steps["with_pandas"]["files"] == {f"{w}/table.csv": _digest(b"a,b\n1,2\n3,4\n")}
    # made.bin was opened for writing: not an input.
    assert steps["with_os"]["files"] == {
        f"{w}/path.txt": _digest(b"p"),
        f"{w}/raw.bin": _digest(b"\x00\x01"),
    }
    tracked = steps["with_subprocess"]["files"]
    assert list(tracked) == [f"{w}/tracked_dir"]  # cat's read is invisible, as documented
    assert "files" not in steps["combine"]

    # The directory's digest is that of its tree: it changes with any file below it.
    import daskperiment_store as store
    from daskperiment_store import codec

    st = store.open(workdir / "daskperiment_cache" / EXP, create=False)
    tree = st.get(tracked[f"{w}/tracked_dir"])
    assert tree["files"] == {"a.txt": _digest(b"A"), "sub/b.txt": _digest(b"B")}
    (workdir / "tracked_dir" / "sub" / "b.txt").write_text("C")
    python.run_args([sys.executable, "readers.py"], env=project.env).check()
    changed = project.files(2, "with_subprocess")[f"{w}/tracked_dir"]
    assert changed != tracked[f"{w}/tracked_dir"]
    assert changed == codec.digest(
        {"files": {"a.txt": _digest(b"A"), "sub/b.txt": _digest(b"C")}, "type": tree["type"]}
    )


def test_bad_inputs_are_recorded_not_fatal(python: Any, project: Any, workdir: Path) -> None:
    os.symlink("loop_b", workdir / "loop_a")
    os.symlink("loop_a", workdir / "loop_b")
    odd = os.fsencode(str(workdir)) + b"/caf\xe9.txt"
    with open(odd, "wb") as f:
        f.write(b"latin-1 name")
    outside = workdir.parent / f"{workdir.name}-outside.txt"  # not under the project
    outside.write_text("elsewhere")
    tree = workdir / "big"
    tree.mkdir()
    for i in range(50):
        (tree / f"f{i}.txt").write_text(str(i))
    os.symlink(".", tree / "self")  # a directory symlink loop inside a tracked directory
    python.write(
        "bad.py",
        """
        import os
        import daskperiment

        ex = daskperiment.Experiment(id="files_pj")

        @ex.result
        def step():
            try:
                open("loop_a").read()
            except OSError:
                pass
            with open(os.fsencode(os.getcwd()) + b"/caf\\xe9.txt", "rb") as f:
                f.read()
            with open(os.path.join("..", os.path.basename(os.getcwd()) + "-outside.txt")) as f:
                f.read()
            with open("gone.txt", "w") as f:
                f.write("temporary")
            ex.track("big")
            ex.track("missing_dir")
            return 1

        step().compute(seed=1)
        """,
        report=False,
    )
    run = python.run_args([sys.executable, "bad.py"], env=project.env).check()
    files = project.files(1, "step")
    w = str(workdir)
    assert files[f"{w}/loop_a"] == "unreadable: Too many levels of symbolic links"
    assert files[f"{w}/missing_dir"] == "unreadable: No such file or directory"
    assert files[f"{w}/caf\\xe9.txt"] == _digest(b"latin-1 name")
    assert len(files[f"{w}/big"]) == 32
    assert files[str(outside)] == _digest(b"elsewhere")
    assert f"{w}/gone.txt" not in files  # written by the step
    assert f"Input file {w}/loop_a could not be hashed" in run.output
    assert project.show(1)["status"] == "success"


def test_track_outside_a_step_says_where_it_works(python: Any) -> None:
    run = python.run(
        """
        import daskperiment
        ex = daskperiment.Experiment(id="files_pj")
        try:
            ex.track("data.txt")
        except daskperiment.DaskperimentError as exc:
            report(str(exc))
        """
    ).check()
    assert run.result().startswith("ex.track is only available inside a step")


def test_track_in_an_intermediate_computed_outside_a_trial_just_returns_the_path(
    workdir: Path,
) -> None:
    import daskperiment

    ex = daskperiment.Experiment(id="files_pj")

    @ex
    def load(path):
        return open(ex.track(path)).read()

    (workdir / "d.txt").write_text("text")
    assert load("d.txt").compute() == "text"


def test_lineage_lists_the_trials_that_read_a_file_or_used_a_digest(
    python: Any, project: Any, workdir: Path
) -> None:
    python.write("exp.py", LOADER, report=False)
    (workdir / "data.txt").write_text("a\n")
    (workdir / "other.txt").write_text("b c\n")
    project.dp("run", "exp.py", "path=data.txt", "--seed", "1")
    project.dp("run", "exp.py", "path=other.txt", "--seed", "1")
    (workdir / "data.txt").write_text("a a\n")
    project.dp("run", "exp.py", "path=data.txt", "--seed", "1")
    data = str(workdir / "data.txt")

    rows = json.loads(project.dp("log", EXP, "--uses", "data.txt", "--format", "json").stdout)
    assert [(r["trial"], r["step"], r["path"]) for r in rows] == [
        (1, "load", data),
        (3, "load", data),
    ]
    text = project.dp("log", EXP, "--uses", _digest(b"a\n")).stdout
    assert text == f"trial 1  load  read {data}  {_digest(b'a' + bytes([10]))}\n"
    # A directory lists every file read below it.
    everything = project.dp("log", EXP, "--uses", ".").stdout.splitlines()
    assert len(everything) == 3
    # An object: the persisted output of load in trial 2, consumed by count.
    persisted = project.show(2)["steps"]["load"]["persisted"]
    uses = project.dp("log", EXP, "--uses", persisted[:12], "--format", "json").stdout
    assert [(r["trial"], r["step"], r["role"]) for r in json.loads(uses)] == [
        (2, "load", "persisted"),
        (2, "count", "consumed"),
    ]
    assert project.dp("log", EXP, "--uses", "nothing.txt").stdout == "no trial used nothing.txt\n"

    api = python.run(
        f"""
        import daskperiment
        ex = daskperiment.Experiment(id={EXP!r})
        report([[u.trial, u.role] for u in ex.trials_using("other.txt")])
        """,
        env=project.env,
    ).check()
    assert api.result() == [[2, "read"]]


def test_a_long_directory_hash_reports_progress(tmp_path: Path, dp_log: Any, monkeypatch) -> None:
    from daskperiment.provenance import inputs

    for i in range(3):
        (tmp_path / f"d{i}").mkdir()
        (tmp_path / f"d{i}" / "f.txt").write_text(str(i))
    monkeypatch.setattr(inputs, "PROGRESS_EVERY", 0.0)
    tree = inputs.tree_of(statcache.StatCache(None), str(tmp_path))
    assert sorted(tree["files"]) == ["d0/f.txt", "d1/f.txt", "d2/f.txt"]
    progress = [m for m in dp_log.messages("INFO") if m.startswith(f"Hashing {tmp_path}:")]
    assert progress and "files so far" in progress[-1]


def test_a_step_keyed_where_it_runs_checks_its_files_there(
    workdir: Path, dp_log: Any, monkeypatch: Any
) -> None:
    import daskperiment

    monkeypatch.setenv("DASKPERIMENT_STAT_CACHE", str(workdir / "stat-cache.json"))
    ex = daskperiment.Experiment(id="files_pj")
    name = ex.parameter("name")

    @ex
    def locate(name):  # not cached: load's key is decided on the worker, from its input
        return str(workdir / name)

    @ex.persist(cache=True)
    def load(path):
        with open(path) as f:
            return f.read()

    @ex.result
    def size(text):
        return len(text)

    result = size(load(locate(name)))
    (workdir / "data.txt").write_text("abc")
    ex.set_parameters(name="data.txt")
    assert result.compute(scheduler="sync") == 3
    assert result.compute(scheduler="sync") == 3
    assert "Reused cached result of load from trial 1" in dp_log.messages("INFO")
    (workdir / "data.txt").write_text("abcd")
    dp_log.clear()
    assert result.compute(scheduler="sync") == 4
    assert any("input file" in m and "changed" in m for m in dp_log.messages("INFO"))
    assert ex.get_trial(3)["steps"]["load"]["reused"] is False
