"""Small things users hit first: each fixed, each with its test."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import daskperiment

REPO = Path(__file__).resolve().parents[2]


def one_trial(ex: Any) -> Any:
    @ex.result
    def one():
        return 1

    return one().compute()


def test_experiment_on_a_directory_of_stores_finds_its_store(workdir: Path) -> None:
    ex = daskperiment.Experiment("dir_pj")  # daskperiment_cache/dir_pj
    one_trial(ex)
    one_trial(daskperiment.Experiment("other_pj"))
    again = daskperiment.Experiment("dir_pj", backend=workdir / "daskperiment_cache")
    assert again is ex  # the same store: daskperiment_cache/dir_pj
    assert again.trial_id == 1 and list(again.get_history().index) == [1]
    new = daskperiment.Experiment("new_pj", backend="daskperiment_cache")
    one_trial(new)
    assert (workdir / "daskperiment_cache" / "new_pj" / "config").is_file()
    assert not (workdir / "daskperiment_cache" / "config").exists()  # never a store at the root


def test_list_experiments_of_a_directory_of_stores(workdir: Path) -> None:
    one_trial(daskperiment.Experiment("b_pj"))
    one_trial(daskperiment.Experiment("a_pj"))
    found = daskperiment.list_experiments("daskperiment_cache")
    assert [(row["id"], row["trials"]) for row in found] == [("a_pj", 1), ("b_pj", 1)]
    found_path = daskperiment.list_experiments(workdir / "daskperiment_cache")
    assert [row["id"] for row in found_path] == ["a_pj", "b_pj"]
    single = daskperiment.list_experiments(str(workdir / "daskperiment_cache" / "a_pj"))
    assert [row["id"] for row in single] == ["a_pj"]


def test_a_failing_compute_logs_its_failure(dp_log: Any, tmp_path: Path) -> None:
    ex = daskperiment.Experiment("fail_pj", backend=tmp_path / "s")

    @ex.result
    def boom():
        raise RuntimeError("no data")

    with pytest.raises(RuntimeError):
        boom().compute()
    messages = dp_log.messages()
    started = messages.index("Started Experiment (trial id=1)")
    failed = [m for m in messages[started:] if m.startswith("Failed Experiment (trial id=1): ")]
    assert len(failed) == 1 and "no data" in failed[0]
    assert "Finished Experiment (trial id=1)" not in messages


def test_the_cli_docs_script_runs_as_documented(tmp_path: Path) -> None:
    text = (REPO / "docs" / "cli.md").read_text()
    name = re.search(r"The script used here \(`([^`]+)`", text)[1]
    script = text.split("```python\n", 1)[1].split("```", 1)[0]
    example = REPO / "examples" / name
    # the doc's script is either the example itself or not named like one
    assert not example.exists() or example.read_text() == script
    (tmp_path / name).write_text(script)
    command = re.search(r"\$ daskperiment run (\S+) (.*)", text)
    assert command[1] == name
    done = subprocess.run(
        [sys.executable, "-m", "daskperiment", "run", name, *command[2].split()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "3.3333333333333335"


def test_the_runnable_example_runs_with_its_documented_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "daskperiment", "run", str(REPO / "examples" / "my_experiment.py")]
        + ["n=500", "noise=0.5", "--seed", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Finished Experiment (trial id=1)" in done.stderr + done.stdout


def test_parameters_keep_their_declaration_order_everywhere(tmp_path: Path) -> None:
    script = """
import daskperiment
ex = daskperiment.Experiment('order_pj', backend='store')
zeta = ex.parameter('zeta', default=1)
alpha = ex.parameter('alpha', default=2)
mid = ex.parameter('mid', default=3)

@ex.result
def f(alpha, mid, zeta):
    return alpha + mid + zeta

f(alpha, mid, zeta).compute()
"""
    (tmp_path / "order.py").write_text(script)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "order.py"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "daskperiment", *args, "--store", "store"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    header = cli("log", "order_pj", "--format", "csv").splitlines()[0]
    assert header.startswith("Trial ID,zeta,alpha,mid,Result")
    assert "parameters:   zeta=1, alpha=2, mid=3" in cli("show", "order_pj", "1")
    fresh = daskperiment.Experiment("order_pj", backend=tmp_path / "store")
    assert list(fresh.get_history().columns[:3]) == ["zeta", "alpha", "mid"]
