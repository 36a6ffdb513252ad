"""daskperiment 0.5 code runs unedited (docs/migrating.md).

The scripts below are written for these tests in the style of 0.5's documentation: a script
ending with a bare call of the result step, ``metric_key=`` keywords, ``--help`` through
``run_from_command_line()``, and a notebook-like process that keeps an ``Experiment`` while
another process records trials.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

import daskperiment

#: A 0.5-style command-line script: the last line is a bare call, nothing is bound to it.
SCRIPT_05 = """
import daskperiment

ex = daskperiment.Experiment(id='compat_pj')
a = ex.parameter('a')
b = ex.parameter('b', default=3)


@ex
def prepare_data(a, b):
    return a + b


@ex.result
def calculate_score(s):
    ex.save_metric(metric_key='score', epoch=0, value=10 / s)
    return 10 / s


d = prepare_data(a, b)
calculate_score(d)
"""


def test_daskperiment_run_finds_a_result_built_by_a_bare_call(python: Any) -> None:
    python.write("my_experiment.py", SCRIPT_05, report=False)
    run = python.run_args([sys.executable, "-m", "daskperiment", "run", "my_experiment.py", "a=2"])
    run.check()
    assert "Finished Experiment (trial id=1)" in run.output
    ex = daskperiment.Experiment(id="compat_pj")
    assert ex.get_history().loc[1, "Result"] == 2.0
    assert ex.load_metric(metric_key="score", trial_id=1)[1].tolist() == [2.0]


def test_a_script_without_any_result_still_says_so(python: Any) -> None:
    python.write("empty.py", "import daskperiment\n", report=False)
    run = python.run_args([sys.executable, "-m", "daskperiment", "run", "empty.py"])
    assert run.returncode != 0
    assert "builds no result" in run.output


def test_help_in_script_mode_lists_parameters_and_defaults(python: Any) -> None:
    script = SCRIPT_05.replace(
        "calculate_score(d)\n", "calculate_score(d)\nex.run_from_command_line()\n"
    )
    python.write("cli_script.py", script, report=False)
    run = python.run_args([sys.executable, "cli_script.py", "--help"])
    run.check()
    assert "usage: cli_script.py [name=value ...] [--seed N]" in run.output
    assert "  a=Undefined" in run.output
    assert "  b=3" in run.output
    assert "Traceback" not in run.output
    assert "Started Experiment" not in run.output  # --help runs no trial
    ok = python.run_args([sys.executable, "cli_script.py", "a=7"])
    ok.check()
    assert "Finished Experiment (trial id=1)" in ok.output


def test_metric_key_alias_and_its_errors(tmp_path: Any) -> None:
    ex = daskperiment.Experiment("alias_pj", backend=tmp_path / "alias")

    @ex.result
    def run():
        ex.save_metric(metric_key="m", epoch=1, value=0.5)
        ex.save_metric("m", epoch=2, value=0.25)
        return 1

    run().compute()
    frame = ex.load_metric(metric_key="m", trial_id=[1])
    assert frame[1].tolist() == [0.5, 0.25]
    with pytest.raises(TypeError, match="key twice"):
        ex.load_metric("m", metric_key="m", trial_id=1)


def test_a_long_lived_process_sees_trials_of_other_processes(python: Any, tmp_path: Any) -> None:
    store_dir = tmp_path / "shared_store"
    ex = daskperiment.Experiment("shared_pj", backend=store_dir)
    assert ex.trial_id == 0
    other = f"""
import daskperiment
ex = daskperiment.Experiment('shared_pj', backend={str(store_dir)!r})
@ex.result
def one():
    return 1
r = one()
r.compute(); r.compute()
"""
    python.run(other).check()
    again = daskperiment.Experiment("shared_pj", backend=store_dir)
    assert again is ex  # the same instance, which now sees the two trials
    assert ex.trial_id == 2
    assert "trial_id: 2" in repr(ex)
