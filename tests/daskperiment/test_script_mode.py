"""Script mode: ``daskperiment run script.py a=1 b=2 --seed 1``, and nothing implicit otherwise."""

from __future__ import annotations

import shutil
import sys
from typing import Any

import pytest

import daskperiment

EXPERIMENT = """
import daskperiment

ex = daskperiment.Experiment(id='script_pj')
a = ex.parameter('a')
b = ex.parameter('b')


@ex
def prepare_data(a, b):
    return a + b


@ex.result
def calculate_score(s):
    return 10 / s


d = prepare_data(a, b)
s = calculate_score(d)
"""

#: The one explicit call a script makes to run a trial from its own command line.
OPT_IN = "ex.run_from_command_line()"


def cli() -> list[str]:
    found = shutil.which("daskperiment")
    if found is None:
        pytest.fail("the daskperiment console script is not installed (pip install -e .)")
    return [found]


def history() -> Any:
    return daskperiment.Experiment(id="script_pj").get_history(verbose=True)


@pytest.mark.parametrize("command", ["console-script", "python-m"])
def test_run_one_trial_of_the_result(python: Any, command: str) -> None:
    python.write("my_experiment.py", EXPERIMENT, report=False)
    prefix = cli() if command == "console-script" else [sys.executable, "-m", "daskperiment"]
    run = python.run_args([*prefix, "run", "my_experiment.py", "a=1", "b=2", "--seed", "1"])
    run.check()
    assert "Finished Experiment (trial id=1)" in run.output
    assert "Random seed is initialized with given seed: 1" in run.output
    table = history()
    assert list(table.index) == [1]
    assert table.loc[1, "a"] == 1 and table.loc[1, "b"] == 2
    assert table.loc[1, "Result"] == pytest.approx(10 / 3)
    assert table.loc[1, "Seed"] == 1


def test_parameters_are_python_literals_else_strings(python: Any) -> None:
    python.write(
        "literals.py",
        """
        import daskperiment

        ex = daskperiment.Experiment(id='literals_pj')
        names = ['i', 'f', 's', 'l', 't', 'n', 'flag', 'quoted', 'spaced']
        values = [ex.parameter(name) for name in names]


        @ex.result
        def collect(*values):
            return repr(values)


        result = collect(*values)
        """,
        report=False,
    )
    args = [
        "i=1",
        "f=2.5",
        "s=hello",
        "l=[1, 2]",
        "t=(1, 'x')",
        "n=None",
        "flag=True",
        "quoted='7'",
        "spaced=a b=c",
    ]
    python.run_args([*cli(), "run", "literals.py", *args]).check()
    params = daskperiment.Experiment(id="literals_pj").get_parameters(trial_id=1)
    assert params == {
        "i": 1,
        "f": 2.5,
        "s": "hello",
        "l": [1, 2],
        "t": (1, "x"),
        "n": None,
        "flag": True,
        "quoted": "7",
        "spaced": "a b=c",
    }


def test_script_that_computes_itself_runs_once_with_python(python: Any) -> None:
    python.run(
        EXPERIMENT + "\nex.set_parameters(a=1, b=2)\nreport(s.compute())\n",
        name="computes.py",
    ).check()
    table = history()
    assert list(table.index) == [1]


def test_nothing_computes_implicitly(python: Any) -> None:
    """Building a result in a script run with parameter-like arguments computes nothing."""
    run = python.run(
        EXPERIMENT + "\nex.set_parameters(a=1, b=2)\n", "a=1", "b=2", name="builds.py"
    ).check()
    assert "Started Experiment" not in run.output
    assert daskperiment.Experiment(id="script_pj").trial_id == 0


def test_explicit_opt_in_runs_from_the_script_command_line(python: Any) -> None:
    python.write("opt_in.py", EXPERIMENT + f"\n{OPT_IN}\n", report=False)
    run = python.run_args([sys.executable, "opt_in.py", "a=1", "b=2", "--seed", "1"]).check()
    assert "Finished Experiment (trial id=1)" in run.output
    table = history()
    assert list(table.index) == [1]
    assert (table.loc[1, "a"], table.loc[1, "b"], table.loc[1, "Seed"]) == (1, 2, 1)


def test_opt_in_script_under_daskperiment_run_runs_once(python: Any) -> None:
    python.write("opt_in.py", EXPERIMENT + f"\n{OPT_IN}\n", report=False)
    python.run_args([*cli(), "run", "opt_in.py", "a=3", "b=2"]).check()
    table = history()
    assert list(table.index) == [1]
    assert table.loc[1, "Result"] == pytest.approx(2.0)


def test_failing_trial_exits_non_zero_and_is_recorded(python: Any) -> None:
    python.write("my_experiment.py", EXPERIMENT, report=False)
    run = python.run_args([*cli(), "run", "my_experiment.py", "a=1", "b=-1"])
    assert run.returncode != 0
    assert "ZeroDivisionError" in run.stderr
    table = history()
    assert table["Success"].tolist() == [False]
    assert table.loc[1, "Description"] == "ZeroDivisionError(division by zero)"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["a=1"], "'b'"),  # b has no value
        (["a=1", "b=2", "c=3"], "'c'"),  # c is not declared
        (["a=1", "b"], "b"),  # not name=value
    ],
)
def test_bad_parameters_exit_with_a_clear_message(python: Any, args: list[str], says: str) -> None:
    python.write("my_experiment.py", EXPERIMENT, report=False)
    run = python.run_args([*cli(), "run", "my_experiment.py", *args])
    assert run.returncode != 0
    assert says in run.stderr
    assert "Traceback" not in run.stderr
    assert daskperiment.Experiment(id="script_pj").trial_id == 0


def test_script_without_a_result_exits_with_a_clear_message(python: Any) -> None:
    python.write("no_result.py", "import daskperiment\nex = daskperiment.Experiment(id='x')\n")
    run = python.run_args([*cli(), "run", "no_result.py"])
    assert run.returncode != 0
    assert "@ex.result" in run.stderr
    assert "Traceback" not in run.stderr
