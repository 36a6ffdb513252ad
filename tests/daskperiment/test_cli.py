"""The installed ``daskperiment`` command, run in subprocesses against stores made here.

Every failure the user can act on must be one line on stderr with exit status 1 (no
traceback unless ``--debug``); usage errors one line with exit status 2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import daskperiment
import daskperiment_store as store
from daskperiment.cli import COMMANDS, build_parser
from daskperiment.diff import diff_trials

EXE = shutil.which("daskperiment")
pytestmark = pytest.mark.skipif(EXE is None, reason="the daskperiment command is not installed")
EXP = "cli_pj"


def cli(*args: str, cwd: Path, code: int | None = 0, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run the installed command; check its exit status unless ``code`` is None."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    done = subprocess.run(
        [EXE, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env, **kwargs
    )
    if code is not None:
        assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    return done


def one_line_error(done: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """The single stderr line of a failed command, checked for ``words``."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def build(directory: Path, experiment_id: str = EXP, trials: int = 3) -> Any:
    """A directory of stores (like ./daskperiment_cache) with one experiment in it."""
    ex = daskperiment.Experiment(
        experiment_id, backend=directory / "daskperiment_cache" / experiment_id
    )
    a, b = ex.parameter("a"), ex.parameter("b")

    @ex.persist
    def prepare_data(a, b):
        return np.arange(10) * (a + b)

    @ex.result
    def calculate_score(data):
        ex.save_metric("loss", epoch=0, value=float(data[1]))
        return float(data.sum())

    s = calculate_score(prepare_data(a, b))
    for i in range(1, trials + 1):
        ex.set_parameters(a=1, b=1 + i)
        s.compute(seed=i)
    return ex


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A working directory whose ./daskperiment_cache holds experiment cli_pj (3 trials)."""
    directory = tmp_path_factory.mktemp("cli")
    return directory, build(directory)


@pytest.fixture
def fresh(made, tmp_path: Path) -> Path:
    """A private copy of the module's working directory, for commands that write."""
    directory, _ = made
    target = tmp_path / "work"
    shutil.copytree(directory, target)
    return target


# ---------------------------------------------------------------------------------------
# Help and usage
# ---------------------------------------------------------------------------------------


def test_every_command_has_help_with_an_example() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, _, example in COMMANDS:
        if name == "board":
            continue  # its options and help are the dashboard's own
        text = subparsers[name].format_help()
        assert f"example:\n  {example}" in text, name
        assert example.startswith(f"daskperiment {name}")


def test_help_runs_from_the_installed_command(tmp_path: Path) -> None:
    done = cli("diff", "--help", cwd=tmp_path)
    assert "--exit-code" in done.stdout and "example:\n  daskperiment diff" in done.stdout
    assert "usage: daskperiment board" in cli("board", "--help", cwd=tmp_path).stdout


@pytest.mark.parametrize(
    "args, words",
    [
        ([], ["required", "COMMAND"]),
        (["lgo"], ["invalid choice", "'lgo'"]),
        (["log"], ["daskperiment log", "required", "EXP"]),
        (["show", EXP, "x"], ["invalid trial id 'x'"]),
        (["diff", EXP, "1", "2", "--color", "sometimes"], ["--color"]),
        (["log", "bad/id"], ["invalid experiment id"]),
        (["gc", "--grace", "-1"], ["invalid duration"]),
        (["list", "--bogus"], ["unrecognized arguments: --bogus"]),
    ],
)
def test_usage_errors_exit_2_with_one_line(made, args: list[str], words: list[str]) -> None:
    directory, _ = made
    one_line_error(cli(*args, cwd=directory, code=None), 2, *words)


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


def test_list_in_each_format(made) -> None:
    directory, _ = made
    table = cli("list", cwd=directory).stdout.splitlines()
    assert table[0].split() == ["EXPERIMENT", "TRIALS", "LAST", "ACTIVITY", "STORE"]
    assert table[1].split()[:2] == [EXP, "3"]
    rows = json.loads(cli("list", "--format", "json", cwd=directory).stdout)
    assert [(r["experiment"], r["trials"]) for r in rows] == [(EXP, 3)]
    assert rows[0]["store"] == f"daskperiment_cache/{EXP}"
    csv = cli("list", "--format", "csv", cwd=directory).stdout.splitlines()
    assert csv[0] == "experiment,trials,last_activity,store" and csv[1].startswith(f"{EXP},3,")


def test_log_in_each_format(made) -> None:
    directory, ex = made
    table = cli("log", EXP, cwd=directory).stdout
    assert "Trial ID" in table and "Result" in table and len(table.splitlines()) == 5
    csv = cli("log", EXP, "--format", "csv", "--store", "daskperiment_cache", cwd=directory).stdout
    # Result Type and Process Time only with --verbose (the DataFrame keeps them)
    assert csv.splitlines()[0] == "Trial ID,a,b,Result,Success,Finished,Description"
    assert "Result Type" not in table and "Process Time" not in table
    verbose = cli("log", EXP, "-v", "--format", "csv", cwd=directory).stdout.splitlines()[0]
    assert verbose.startswith("Trial ID,a,b,Result,Result Type,Success,Finished,Process Time,")
    picked = cli("log", EXP, "--columns", "process time,a", "--format", "csv", cwd=directory)
    assert picked.stdout.splitlines()[0] == "Trial ID,Process Time,a"
    rows = json.loads(cli("log", EXP, "--format", "json", "--verbose", cwd=directory).stdout)
    history = ex.get_history()
    assert [r["Trial ID"] for r in rows] == [1, 2, 3]
    assert [r["b"] for r in rows] == list(history["b"])
    assert rows[0]["Result"] == history["Result"][1]
    assert isinstance(rows[0]["Process Time"], float) and rows[0]["Seed"] == 1
    assert rows[0]["Description"] is None and "T" in rows[0]["Finished"]


def test_show_text_and_json(made) -> None:
    directory, ex = made
    text = cli("show", EXP, "2", cwd=directory).stdout
    assert text.startswith(f"trial 2 of {EXP}\nstatus:       success\nparameters:   a=1, b=3\n")
    assert "seed:         2" in text and "steps:" in text and "prepare_data" in text
    record = json.loads(cli("show", EXP, "2", "--format", "json", cwd=directory).stdout)
    assert record["digests"] == ex.get_trial(2)["digests"]
    assert record["record"] == ex.store.refs.get(f"experiments/{EXP}/trials/2")


def test_show_a_failed_trial_says_there_is_no_result_and_where_it_failed(tmp_path: Path) -> None:
    ex = daskperiment.Experiment(EXP, backend=tmp_path / "daskperiment_cache" / EXP)
    a = ex.parameter("a")

    @ex.result
    def inverse(a):
        return 1 / a

    ex.set_parameters(a=0)
    with pytest.raises(ZeroDivisionError):
        inverse(a).compute()
    text = cli("show", EXP, "1", cwd=tmp_path).stdout
    assert "\nresult:       -\n" in text
    assert "description:  ZeroDivisionError(division by zero)" in text
    tail = text.split("traceback:\n", 1)[1].splitlines()
    assert tail[0] == "  Traceback (most recent call last):"
    assert tail[1].startswith('    File "') and tail[1].endswith(", in inverse")
    assert tail[-1] == "  ZeroDivisionError: division by zero"


def test_diff_renders_like_git_and_exit_code(made) -> None:
    directory, ex = made
    done = cli("diff", EXP, "1", "2", cwd=directory)
    assert done.stdout == str(diff_trials(ex.store, EXP, 1, 2))
    assert done.stdout.startswith("diff --git a/parameters b/parameters\n")
    assert "\x1b[" not in done.stdout  # not a terminal: no colour
    colored = cli("diff", EXP, "1", "2", "--color", "always", cwd=directory).stdout
    assert "\x1b[31m-b = 2\x1b[m" in colored and "\x1b[32m+b = 3\x1b[m" in colored
    assert cli("diff", EXP, "1", "2", "--exit-code", cwd=directory, code=1).stdout
    same = cli("diff", EXP, "2", "2", "--exit-code", cwd=directory, code=0)
    assert same.stdout == ""
    params = cli("diff", EXP, "1", "2", "--params", cwd=directory).stdout
    assert params.count("diff --git") == 1
    assert cli("diff", EXP, "1", "2", "--code", "--exit-code", cwd=directory).stdout == ""
    stat = cli("diff", EXP, "1", "2", "--stat", cwd=directory).stdout
    assert " parameters " in stat and "files changed" in stat
    data = json.loads(cli("diff", EXP, "1", "2", "--format", "json", cwd=directory).stdout)
    assert data["parameters"] == {"b": {"a": 2, "b": 3}} and not data["identical"]


def test_diff_colours_on_a_terminal_only(made) -> None:
    import pty

    directory, _ = made
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    done = subprocess.run(
        [EXE, "diff", EXP, "1", "2", "--params"],
        cwd=directory,
        stdout=terminal,
        stderr=subprocess.PIPE,
        env=env,
        timeout=120,
    )
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the terminal's other end is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert done.returncode == 0, done.stderr
    shown = b"".join(chunks).decode()
    assert "\x1b[31m-b = 2\x1b[m" in shown and "\x1b[36m@@ -1,2 +1,2 @@\x1b[m" in shown


def test_code_of_a_trial(made) -> None:
    directory, ex = made
    assert cli("code", EXP, "1", cwd=directory).stdout == ex.get_code(trial_id=1)
    assert cli("code", EXP, cwd=directory).stdout.startswith("def prepare_data(a, b):\n")


def test_cat_prints_objects_and_refuses_pickles(made) -> None:
    directory, ex = made
    record = ex.get_trial(1)
    raw = cli("cat", ex.store.refs.get(f"experiments/{EXP}/trials/1"), cwd=directory).stdout
    assert json.loads(raw)["code"] == {"$link": record["digests"]["code"]}
    assert json.loads(raw)["params"] == {"a": 1, "b": 2}
    array = cli("cat", record["steps"]["prepare_data"]["persisted"], cwd=directory).stdout
    assert array.strip() == repr(np.arange(10) * 3)
    tree = ex.store.get(record["digests"]["code"])
    source = cli("cat", tree["steps"][0][1].oid, cwd=directory).stdout
    assert source.startswith("@ex.persist\ndef prepare_data(a, b):\n")
    info = cli("cat", record["digests"]["code"], "--info", cwd=directory).stdout
    assert "kind:         json" in info
    pickled = ex.store.put({1, 2, 3})  # a set: only pickle can hold it
    refused = cli("cat", pickled, cwd=directory, code=None)
    one_line_error(refused, 1, "is a pickle", "--unpickle-runs-code")
    assert refused.stdout == ""
    shown = cli("cat", pickled, "--unpickle-runs-code", cwd=directory).stdout
    assert shown.strip() == "{1, 2, 3}"


# ---------------------------------------------------------------------------------------
# Expected failures
# ---------------------------------------------------------------------------------------


def test_unknown_experiment_and_trial_are_one_line(made) -> None:
    directory, _ = made
    one_line_error(cli("log", "nope", cwd=directory, code=None), 1, "no experiment 'nope'", EXP)
    one_line_error(cli("show", EXP, "9", cwd=directory, code=None), 1, "trial 9 not found")
    one_line_error(cli("diff", EXP, "1", "9", cwd=directory, code=None), 1, "trial 9")
    one_line_error(cli("log", EXP, "--store", "s3x://nowhere/at-all", cwd=directory, code=None), 1)
    one_line_error(
        cli("cat", "0" * 32, cwd=directory, code=None), 1, f"object {'0' * 32} not found"
    )


def test_corrupt_object_is_one_line_and_debug_shows_the_traceback(fresh: Path) -> None:
    st = store.open(fresh / "daskperiment_cache" / EXP, create=False)
    oid = st.get(st.refs.get(f"experiments/{EXP}/trials/1"))["digests"]["code"]
    path = fresh / "daskperiment_cache" / EXP / "objects" / oid[:2] / oid[2:]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    one_line_error(cli("cat", oid, cwd=fresh, code=None), 1, f"object {oid}", "corrupt")
    debug = cli("cat", oid, "--debug", cwd=fresh, code=1)
    assert "Traceback" in debug.stderr and "CorruptObject" in debug.stderr
    fsck = cli("fsck", cwd=fresh, code=1)
    assert "PROBLEMS FOUND" in fsck.stdout and oid in fsck.stdout


# ---------------------------------------------------------------------------------------
# Sharing, maintenance, scripts
# ---------------------------------------------------------------------------------------


def test_export_import_push_pull(made, fresh: Path, tmp_path: Path) -> None:
    _, ex = made
    bundle = tmp_path / "t.dpb"
    out = cli("export", EXP, "1", "3", "-o", str(bundle), cwd=fresh).stdout
    assert out.startswith(f"exported 2 trials of {EXP} to {bundle}")
    # into a working directory whose cli_pj has a trial 1 of its own: renumbered, never lost
    other = tmp_path / "other"
    build(other, trials=1)
    mine = cli("show", EXP, "1", "--format", "json", cwd=other).stdout
    imported = cli("import", str(bundle), cwd=other).stdout
    assert "imported 2 trials" in imported and "renumbered 1->2" in imported
    assert cli("show", EXP, "1", "--format", "json", cwd=other).stdout == mine
    shown = cli("show", EXP, "2", cwd=other).stdout
    assert "origin:" in shown and "trial 1" in shown
    again = cli("import", str(bundle), cwd=other).stdout
    assert "imported 0 trials" in again and "0 objects" in again
    done = cli("import", str(bundle), "--as", "theirs", "--format", "json", cwd=other)
    assert json.loads(done.stdout)["trials_added"] == [1, 3]
    again = cli("import", str(bundle), "--as", "theirs", cwd=other).stdout
    assert "imported 0 trials" in again and "2 trials already there" in again
    assert cli("log", "theirs", "--format", "json", cwd=other).stdout.count('"Trial ID"') == 2
    # push to a directory of stores, twice; pull back into another
    team = tmp_path / "team"
    first = cli("push", EXP, str(team), cwd=fresh).stdout
    assert first.startswith(f"pushed 3 trials of {EXP} to {team / EXP}")
    second = cli("push", EXP, str(team), "--format", "json", cwd=fresh).stdout
    assert json.loads(second)["objects_copied"] == 0
    pulled = cli("pull", EXP, str(team), "--store", str(tmp_path / "mine"), cwd=fresh).stdout
    assert "pulled 3 trials" in pulled
    mine = store.open(tmp_path / "mine" / EXP, create=False)
    assert mine.refs.get(f"experiments/{EXP}/trials/2") == ex.store.refs.get(
        f"experiments/{EXP}/trials/2"
    )


def test_hostile_bundles_are_one_line(fresh: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "t.dpb"
    cli("export", EXP, "-o", str(bundle), cwd=fresh)
    data = bundle.read_bytes()
    (tmp_path / "short.dpb").write_bytes(data[:100])
    one_line_error(
        cli("import", str(tmp_path / "short.dpb"), cwd=tmp_path, code=None), 1, "truncated"
    )
    traversal = b"../../../../../../../tmp/x1"  # as long as the ref name it replaces
    assert len(traversal) == len(f"experiments/{EXP}/trials/1")
    evil = data.replace(f"experiments/{EXP}/trials/1".encode(), traversal)
    (tmp_path / "evil.dpb").write_bytes(evil)
    one_line_error(
        cli("import", str(tmp_path / "evil.dpb"), cwd=tmp_path, code=None), 1, "unsafe ref name"
    )
    one_line_error(
        cli("import", str(tmp_path / "missing.dpb"), cwd=tmp_path, code=None), 1, "missing.dpb"
    )
    assert not (tmp_path / "daskperiment_cache").exists()


def test_fsck_and_gc(fresh: Path) -> None:
    assert f"daskperiment_cache/{EXP}: checked" in cli("fsck", cwd=fresh).stdout
    dry = cli("gc", "--dry-run", cwd=fresh).stdout
    assert dry.startswith(f"daskperiment_cache/{EXP}: would remove 0 objects")
    assert "removed" in cli("gc", EXP, "--grace", "0", cwd=fresh).stdout
    assert "ok" in cli("fsck", EXP, cwd=fresh).stdout


def test_run_a_script_and_python_dash_m(tmp_path: Path) -> None:
    (tmp_path / "exp.py").write_text(
        "import daskperiment\n"
        "ex = daskperiment.Experiment(id='script_pj')\n"
        "a = ex.parameter('a')\n"
        "@ex.result\n"
        "def double(a):\n"
        "    return a * 2\n"
        "s = double(a)\n"
    )
    assert cli("run", "exp.py", "a=21", "--seed", "1", cwd=tmp_path).stdout == "42\n"
    done = subprocess.run(
        [sys.executable, "-m", "daskperiment", "log", "script_pj", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["Result"] == 42


def test_output_into_a_closed_pipe_is_quiet(made) -> None:
    directory, _ = made
    done = subprocess.run(
        f"'{EXE}' show {EXP} 1 | head -c 10",
        shell=True,
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout == "trial 1 of"
    assert "Traceback" not in done.stderr


def test_push_to_s3_and_list_it(made, s3_url: str, tmp_path: Path) -> None:
    directory, _ = made
    pushed = cli("push", EXP, s3_url, cwd=directory).stdout
    assert pushed.startswith(f"pushed 3 trials of {EXP} to {s3_url}")
    rows = json.loads(cli("list", "--store", s3_url, "--format", "json", cwd=directory).stdout)
    assert [(r["experiment"], r["trials"]) for r in rows] == [(EXP, 3)]
    pulled = cli("pull", EXP, s3_url, "--store", str(tmp_path / "back"), cwd=directory).stdout
    assert pulled.startswith("pulled 3 trials")
