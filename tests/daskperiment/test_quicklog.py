"""``daskperiment log`` without pandas prints the very text of the DataFrame path.

A varied history (ints, floats tiny and huge, NaN/None, strings long and with tabs, bools,
wide ints, a parameter missing from some trials; failed, running, interrupted, damaged,
archived, tagged trials) is printed through both paths for many option combinations in each
format; any difference fails. The common cases must take the plain path, in a process that
never imports pandas, numpy or dask.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import daskperiment
import daskperiment_store as store
from daskperiment import cli, quicklog, teams

REPO = Path(__file__).resolve().parents[2]
NUMS, MIXED = "nums_pj", "mixed_pj"
LONG = "a description much longer than fifty characters, so the table cuts it short"


def _record_nums(path: Path) -> None:
    ex = daskperiment.Experiment(NUMS, backend=path)
    a, lr, model = ex.parameter("a"), ex.parameter("lr"), ex.parameter("model")
    flag = ex.parameter("flag")

    @ex.result
    def score(a, lr, model, flag):
        if a == 4:
            raise ValueError("a=4 is not allowed\twith a tab")
        return {1: 1e-8, 2: 12345678.9, 3: 0.5}.get(a, a * lr)

    values = [
        (1, 0.1, "svm", True),
        (2, 0.01, "forest", False),
        (3, 1.5, "svm", True),
        (4, 0.1, "svm", False),
        (5, 2.0, "Svm linear", True),
        (6, 0.25, "tree", False),
    ]
    for av, lrv, mv, fv in values:
        ex.set_parameters(a=av, lr=lrv, model=mv, flag=fv)
        try:
            score(a, lr, model, flag).compute()
        except ValueError:
            pass
    extra = ex.parameter("extra")  # a parameter only the last trial has (NaN before)

    @ex.result
    def score_extra(a, lr, extra):
        return a * lr

    ex.set_parameters(a=7, lr=0.125, extra=2**60)
    score_extra(a, lr, extra).compute()
    ex.tag(1, "baseline")
    ex.tag(3, "baseline", "best")
    ex.note(2, "a note")
    ex.archive(2)
    ex._flush_index()


def _record_mixed(path: Path) -> None:
    ex = daskperiment.Experiment(MIXED, backend=path)
    a, name = ex.parameter("a"), ex.parameter("name")

    @ex.result
    def result(a, name):
        return {1: "text result", 2: 7, 3: None, 4: 2.5, 5: True}.get(a, a)

    names = ["x", LONG, "tab\there", "", "y", "z"]
    for i, value in enumerate([1, 2, 3, 4, 5, 2**62]):
        ex.set_parameters(a=value, name=names[i])
        result(a, name).compute()
    ex.tag(1, "baseline")
    ex.tag(5, "baseline", "best")
    ex.archive(4)
    ex._flush_index()
    st = store.open(path)
    prefix = f"experiments/{MIXED}/trials/"
    last = store.open(path).get(st.refs.get(f"{prefix}6"))
    elsewhere = {"host": "elsewhere", "pid": 1}
    here_gone = {"host": socket.gethostname(), "pid": 2**22 - 3}
    for n, process in ((7, elsewhere), (8, here_gone)):
        running = dict(last, trial_id=n, status="running", process=process)
        for key in ("finished", "process_time", "result_value", "result_repr", "result_type"):
            running.pop(key, None)
        st.refs.create(f"{prefix}{n}", st.put(running))
    st.refs.create(f"{prefix}9", st.put(dict(last, trial_id=9)))
    (path / "refs" / f"{prefix}9").write_text("not an oid\n")  # damaged


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quicklog")
    _record_nums(root / "nums")
    _record_mixed(root / "mixed")
    return root


OPTIONS: list[list[str]] = [
    [],
    ["-v"],
    ["-n", "3"],
    ["-n", "2", "-v"],
    ["--all"],
    ["--all", "-v", "-n", "4"],
    ["--tag", "baseline"],
    ["--tag", "best", "-v"],
    ["--where", "a>2"],
    ["--where", "a!=3"],
    ["--where", "lr<=0.1 model=svm"],
    ["--where", "model~S"],
    ["--where", "model>s"],
    ["--where", "flag=true"],
    ["--where", "success=false"],
    ["--where", "svm"],
    ["--where", "nan"],
    ["--where", "none"],
    ["--where", "result=none"],
    ["--where", "result!=none"],
    ["--where", "result>1"],
    ["--where", "result~1"],
    ["--where", "description~allowed"],
    ["--where", "name~t"],
    ["--where", "name=x"],
    ["--where", "name!=x"],
    ["--where", "tags~base"],
    ["--where", "tags=best"],
    ["--where", "extra>0"],
    ["--where", "id>=3", "--sort", "id:desc"],
    ["--where", "finished>2020"],
    ["--where", "a=1.0 a<=3"],
    ["--sort", "lr:desc"],
    ["--sort", "lr", "-n", "3"],
    ["--sort", "model"],
    ["--sort", "result:desc"],
    ["--sort", "name"],
    ["--sort", "success"],
    ["--sort", "finished:desc", "-v"],
    ["--sort", "process time"],
    ["--columns", "a,Result,process time"],
    ["--columns", "name,description", "-n", "5"],
    ["--columns", "status,seed,tags", "-v", "--all"],
    ["--where", "a>100"],
]


def _out(capsys: pytest.CaptureFixture, argv: list[str], path: str) -> tuple[int, str, str]:
    code = cli.main(["--store", path, *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
@pytest.mark.parametrize("experiment", [NUMS, MIXED])
def test_plain_path_prints_what_the_dataframe_path_prints(
    stores: Path, experiment: str, fmt: str, capsys: pytest.CaptureFixture, monkeypatch: Any
) -> None:
    path = str(stores / ("nums" if experiment == NUMS else "mixed"))
    for options in OPTIONS:
        argv = ["log", experiment, "--format", fmt, *options]
        monkeypatch.setenv("DASKPERIMENT_LOG_PATH", "frame")
        expected = _out(capsys, argv, path)
        monkeypatch.delenv("DASKPERIMENT_LOG_PATH")
        got = _out(capsys, argv, path)
        if got != expected:
            diff = difflib.unified_diff(expected[1].splitlines(), got[1].splitlines(), lineterm="")
            pytest.fail(f"daskperiment {' '.join(argv)}: {got[0]} {got[2]}\n" + "\n".join(diff))


def _args(experiment: str, path: Path, *options: str) -> argparse.Namespace:
    args = cli.build_parser().parse_args(["--store", str(path), "log", experiment, *options])
    return args


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["-n", "20"],
        ["-v"],
        ["--where", "a>2 lr<1", "--sort", "lr:desc", "-n", "5"],
        ["--tag", "baseline"],
        ["--where", "svm"],
        ["--columns", "a,result"],
        ["--all", "--format", "csv"],
        ["--format", "json", "-v"],
    ],
)
def test_common_cases_take_the_plain_path(stores: Path, options: list[str]) -> None:
    for experiment, where in ((NUMS, "nums"), (MIXED, "mixed")):
        if experiment == MIXED and "lr:desc" in options:
            continue
        assert quicklog.log_text(_args(experiment, stores / where, *options)) is not None


def test_values_pandas_types_otherwise_fall_back(stores: Path) -> None:
    # a filter on a time column: only the DataFrame path says it the same way
    args = _args(NUMS, stores / "nums", "--where", "finished>2020")
    assert quicklog.log_text(args) is None


def _modules_imported(argv: list[str]) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DASKPERIMENT_LOG_PATH", None)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "daskperiment", *argv],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert done.stdout.strip()
    return {m.group(1) for m in re.finditer(r"\|\s+(\S+)\s*$", done.stderr, re.M)}


@pytest.mark.parametrize(
    "options", [["-n", "20"], ["--where", "a>2 model~s", "--sort", "lr:desc"], ["-v", "--all"]]
)
def test_log_imports_neither_pandas_numpy_nor_dask(stores: Path, options: list[str]) -> None:
    modules = _modules_imported(["--store", str(stores / "nums"), "log", NUMS, *options])
    assert "daskperiment.quicklog" in modules
    assert not modules & {"pandas", "numpy", "dask"}, sorted(modules & {"pandas", "numpy", "dask"})


def test_forced_dataframe_path_does_import_pandas(stores: Path, monkeypatch: Any) -> None:
    # the check above can fail: the same command on the DataFrame path imports them
    monkeypatch.setenv("DASKPERIMENT_LOG_PATH", "frame")
    env_modules = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "daskperiment", "--store",
         str(stores / "nums"), "log", NUMS],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True,
    ).stderr  # fmt: skip
    assert re.search(r"\|\s+pandas\s*$", env_modules, re.M)


def test_only_unusual_cases_fall_back(stores: Path) -> None:
    # an unknown column (the DataFrame path words the error), a time column compared, a wide
    # int beside NaN (pandas' numbers there are its own): everything else is plain
    unusual = [
        ["--where", "name~t"],
        ["--where", "name=x"],
        ["--where", "name!=x"],
        ["--where", "extra>0"],
        ["--where", "finished>2020"],
        ["--sort", "name"],
    ]

    def plain(fmt: str, options: list[str]) -> bool:
        try:
            args = _args(NUMS, stores / "nums", "--format", fmt, *options)
            return quicklog.log_text(args) is not None
        except teams.SearchError:  # said by the plain path, as the DataFrame path says it
            return True

    for fmt in ("table", "csv", "json"):
        assert [o for o in OPTIONS if not plain(fmt, o)] == unusual
