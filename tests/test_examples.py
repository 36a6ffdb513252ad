"""Every ``examples/*.py`` runs as a user would run it, in a fresh directory, and says what it should."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.py"))

#: Lines (regular expressions, matched against whole lines) an example's output must contain,
#: in this order. Examples not listed must still exit 0 and print something.
EXPECTED: dict[str, list[str]] = {
    "quickstart.py": [
        re.escape(
            "Experiment(id: quickstart_pj, trial_id: 0, "
            "backend: LocalBackend('daskperiment_cache/quickstart_pj'))"
        ),
        re.escape("Parameter(a: Undefined)"),
        r".*\[INFO\] Started Experiment \(trial id=1\)",
        r"result: 3\.333333\d*",
        r"result: 2\.5",
        re.escape("parameters of trial 1: {'a': 1, 'b': 2}"),
        re.escape("parameters of trial 2: {'a': 1, 'b': 3}"),
        re.escape("ZeroDivisionError: division by zero"),
        r".*\[WARNING\] Code context has been changed: prepare_data",
        r".*\[WARNING\] -@ex",
        r".*\[WARNING\] \+@ex\.persist",
        r"prepare_data in trial 4: 3",
        r"prepare_data in trial 5: 5",
        r"Trial ID\s+6\s+7",
        r"0\s+100\.0+\s+100\.0+",
        re.escape("def prepare_data(a, b):"),
        re.escape("def calculate_score(s):"),
        r".*\[INFO\] Random seed is not provided, initialized with generated seed: \d+",
        re.escape(
            "[WARNING] Experiment step result is changed with the same input: "
            "(step: calculate_score, args: (7,), kwargs: {})"
        ).join([".*", ""]),
        r".*\[INFO\] Random seed is initialized with given seed: 1",
        r".*\[INFO\] Finished Experiment \(trial id=10\)",
        r"\s*a\s+b\s+Result\s+Result Type\s+Success\s+Finished\s+\\",
        r"3\s+1\s+-1\s+NaN\s+None\s+False\s+.*",
        r"10\s+3\s+4\s+\S+\s+<class 'float'>\s+True\s+.*",
    ],
    "my_experiment.py": [
        r".*\[INFO\] Random seed is not provided, initialized with generated seed: \d+",
        r".*\[INFO\] Finished Experiment \(trial id=1\)",
        r"\s+n\s+noise\s+epochs\s+Result\s+Result Type\s+Success\s+Finished\s+Process Time\s+Description",
        r"1\s+200\s+0\.1\s+50\s+\S+\s+<class 'float'>\s+True\s+.*NaN",
        r"Trial ID\s+1",
        r"49\s+\d\.\d+",
    ],
    "local_cluster.py": [
        r".*\[INFO\] Random seed is initialized with given seed: 1",
        r"result: 3\.333333\d*",
        r"result: 2\.5",
        r"result: 2\.0",
        r"prepare_data: 5",
        r"steps ran in another process: True",
        r"Trial ID\s+2\s+3",
        r"0\s+100\.0+\s+100\.0+",
        r"3\s+3\s+2\s+2\.0+\s+True\s+1",
    ],
}


def run_example(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run an example as a terminal shows it: stdout and stderr in one stream, unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run(
        [sys.executable, str(path)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=240,
    )


def assert_in_order(lines: list[str], patterns: list[str], output: str) -> None:
    """Each pattern fully matches some line after the line the previous pattern matched."""
    position = 0
    for pattern in patterns:
        for index in range(position, len(lines)):
            if re.fullmatch(pattern, lines[index]):
                position = index + 1
                break
        else:
            raise AssertionError(f"no line matching {pattern!r} after line {position}:\n{output}")


def test_every_listed_example_exists() -> None:
    names = {path.name for path in EXAMPLES}
    assert set(EXPECTED) <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path: Path, tmp_path: Path) -> None:
    proc = run_example(path, tmp_path)
    output = proc.stdout
    assert proc.returncode == 0, f"exit code {proc.returncode}\n{output}"
    assert output.strip(), "the example printed nothing"
    assert "Traceback" not in output, output
    assert_in_order(output.splitlines(), EXPECTED.get(path.name, []), output)
