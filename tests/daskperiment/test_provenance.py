"""Provenance through the command line: source trees, code closures, checkout, reproduce.

Real scripts in the test's directory, run by fresh interpreters (``daskperiment run``,
``daskperiment reproduce``), as a user would.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

import daskperiment

HELPERS = """
SCALE = 2


def transform(x):
    return x * SCALE


def unrelated(x):
    return x - 1
"""

SCRIPT = """
import daskperiment
import numpy as np

import helpers

ex = daskperiment.Experiment(id="prov_pj")
a = ex.parameter("a")


@ex.persist(cache=True)
def load(a):
    return a + 1


@ex.persist(cache=True)
def train(x):
    return float(np.float64(helpers.transform(x)))


@ex.persist(cache=True)
def other(x):
    return helpers.unrelated(x)


@ex.result
def score(y, z):
    return y * 10 + z


d = load(a)
s = score(train(d), other(d))
"""


def dp(python: Any, *args: str) -> Any:
    return python.run_args([sys.executable, "-m", "daskperiment", *args])


def oid(link: Any) -> str:
    return getattr(link, "oid", link)


def setup_project(python: Any) -> None:
    python.write("helpers.py", HELPERS, report=False)
    python.write("exp.py", SCRIPT, report=False)


def reused(run: Any) -> list[str]:
    return sorted(
        line.split("Reused cached result of ")[1].split()[0]
        for line in run.lines
        if "Reused cached result of " in line
    )


def test_helper_edit_misses_the_cache_of_exactly_its_callers(python: Any) -> None:
    setup_project(python)
    dp(python, "run", "exp.py", "a=1", "--seed", "1").check()
    again = dp(python, "run", "exp.py", "a=1", "--seed", "1").check()
    assert reused(again) == ["load", "other", "train"]
    helpers = python.directory / "helpers.py"
    helpers.write_text(helpers.read_text().replace("return x * SCALE", "return x * SCALE + 1"))
    edited = dp(python, "run", "exp.py", "a=1", "--seed", "1").check()
    assert reused(edited) == ["load", "other"]  # train calls transform: it runs again
    diff = dp(python, "diff", "prov_pj", "2", "3").check()
    assert "diff --git a/helpers.py b/helpers.py" in diff.stdout
    assert "diff --git a/helpers.transform b/helpers.transform" in diff.stdout
    assert "+    return x * SCALE + 1" in diff.stdout
    assert "helpers.unrelated" not in diff.stdout
    # A module-level constant the helper reads is part of the closure too.
    helpers.write_text(helpers.read_text().replace("SCALE = 2", "SCALE = 5"))
    constant = dp(python, "run", "exp.py", "a=1", "--seed", "1").check()
    assert reused(constant) == ["load", "other"]
    diff = dp(python, "diff", "prov_pj", "3", "4", "--code").check()
    assert "diff --git a/helpers.SCALE b/helpers.SCALE" in diff.stdout
    assert "+SCALE = 5" in diff.stdout


def test_steps_record_their_closure_and_libraries(python: Any) -> None:
    setup_project(python)
    dp(python, "run", "exp.py", "a=1", "--seed", "1").check()
    ex = daskperiment.Experiment(id="prov_pj")
    steps = ex.get_trial(1)["steps"]
    assert set(steps["train"]["libraries"]) == {"numpy"}
    assert steps["load"]["libraries"] == {}
    closure = ex.load(oid(steps["train"]["closure"]))
    assert sorted(closure["entries"]) == ["helpers.SCALE", "helpers.transform"]
    source = ex.load(oid(ex.get_trial(1)["source"]))
    assert source["main"] == "exp.py" and sorted(source["files"]) == ["exp.py", "helpers.py"]


def test_checkout_is_byte_for_byte_and_refuses_a_non_empty_directory(python: Any) -> None:
    setup_project(python)
    # A local module that is not UTF-8 and has CRLF line endings: kept exactly.
    raw = b"# -*- coding: latin-1 -*-\r\nNAME = '\xe9t\xe9'\r\n"
    (python.directory / "latin.py").write_bytes(raw)
    script = python.directory / "exp.py"
    script.write_text("import latin\n" + script.read_text())
    dp(python, "run", "exp.py", "a=1").check()
    out = python.directory / "out"
    run = dp(python, "checkout", "prov_pj", "1", str(out)).check()
    assert "3 files" in run.stdout
    assert sorted(p.name for p in out.iterdir()) == ["exp.py", "helpers.py", "latin.py"]
    for name in ("exp.py", "helpers.py", "latin.py"):
        assert (out / name).read_bytes() == (python.directory / name).read_bytes()
    refused = dp(python, "checkout", "prov_pj", "1", str(out))
    assert refused.returncode == 1
    assert "not empty" in refused.stderr and "--force" in refused.stderr
    (out / "helpers.py").write_text("changed")
    (out / "mine.txt").write_text("kept")
    dp(python, "checkout", "prov_pj", "1", str(out), "--force").check()
    assert (out / "helpers.py").read_bytes() == (python.directory / "helpers.py").read_bytes()
    assert (out / "mine.txt").read_text() == "kept"
    missing = dp(python, "checkout", "prov_pj", "7", str(python.directory / "x"))
    assert missing.returncode == 1 and "trial" in missing.stderr


def test_reproduce_is_identical_even_after_the_working_copy_changed(python: Any) -> None:
    setup_project(python)
    dp(python, "run", "exp.py", "a=3", "--seed", "7").check()
    # The working copy moves on (and is even broken): the store alone is used.
    (python.directory / "helpers.py").write_text("raise ImportError('edited away')\n")
    (python.directory / "exp.py").unlink()
    run = dp(python, "reproduce", "prov_pj", "1")
    assert run.returncode == 0, run.describe()
    assert run.stdout.strip().splitlines() == [
        "Trial 2 reproduces trial 1 of prov_pj: 4 steps and the result are identical"
    ]
    ex = daskperiment.Experiment(id="prov_pj")
    record = ex.get_trial(2)
    assert record["reproduces"] == 1 and record["seed"] == 7
    assert record["params"] == {"a": 3}
    assert not any(step.get("reused") for step in record["steps"].values())


def test_reproduce_names_the_step_that_reads_the_clock(python: Any) -> None:
    python.write(
        "clock.py",
        """
        import time

        import daskperiment

        ex = daskperiment.Experiment(id="clock_pj")
        a = ex.parameter("a")


        @ex
        def prepare(a):
            return a * 2


        @ex
        def stamp(x):
            return x + time.time()


        @ex.result
        def score(y):
            return round(y) * 0


        s = score(stamp(prepare(a)))
        """,
        report=False,
    )
    dp(python, "run", "clock.py", "a=1").check()
    run = dp(python, "reproduce", "clock_pj", "1")
    assert run.returncode == 1, run.describe()
    lines = run.stdout.splitlines()
    assert lines[0] == "Trial 2 does NOT reproduce trial 1 of clock_pj"
    assert (
        lines[1] == "first divergence at step stamp: nondeterministic output with identical inputs"
    )
    assert "prepare" not in run.stdout


def test_reproduce_from_a_bundle_imported_into_an_empty_directory(
    python: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    setup_project(python)
    dp(python, "run", "exp.py", "a=2", "--seed", "3").check()
    bundle = python.directory / "trial.dpb"
    dp(python, "export", "prov_pj", "1", "-o", str(bundle)).check()
    elsewhere = tmp_path_factory.mktemp("colleague")
    other = type(python)(elsewhere)
    dp(other, "import", str(bundle)).check()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["daskperiment_cache"]
    run = dp(other, "reproduce", "prov_pj", "1")
    assert run.returncode == 0, run.describe()
    assert "reproduces trial 1 of prov_pj" in run.stdout


def test_reproduce_reports_a_changed_input_through_the_step(python: Any) -> None:
    python.write(
        "reads.py",
        """
        import daskperiment

        ex = daskperiment.Experiment(id="reads_pj")
        path = ex.parameter("path")


        @ex
        def read(path):
            with open(path) as f:
                return f.read()


        @ex.result
        def size(text):
            return len(text)


        s = size(read(path))
        """,
        report=False,
    )
    (python.directory / "data.txt").write_text("abc")
    dp(python, "run", "reads.py", "path='data.txt'").check()
    (python.directory / "data.txt").write_text("abcdef")
    run = dp(python, "reproduce", "reads_pj", "1")
    assert run.returncode == 1, run.describe()
    # Relative paths resolve against the current directory, as in the original run.
    assert "first divergence at step read:" in run.stdout


def test_reproduce_errors_are_one_line(python: Any) -> None:
    setup_project(python)
    dp(python, "run", "exp.py", "a=1").check()
    unknown = dp(python, "reproduce", "prov_pj", "9")
    assert unknown.returncode == 1 and "trial" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1


def test_ex_checkout_and_reproduce_from_python(python: Any, workdir: Path) -> None:
    setup_project(python)
    dp(python, "run", "exp.py", "a=1", "--seed", "1").check()
    ex = daskperiment.Experiment(id="prov_pj")
    done = ex.checkout(1, workdir / "co")
    assert done.main == "exp.py" and done.files == ("exp.py", "helpers.py")
    with pytest.raises(daskperiment.errors.DaskperimentError, match="not empty"):
        ex.checkout(1, workdir / "co")
    report = ex.reproduce(1)
    assert report and report.identical and report.reproduction == 2
    assert report.to_dict()["divergence"] is None


NOTEBOOK_CELLS = [
    "import daskperiment\nex = daskperiment.Experiment(id='nb_pj')\na = ex.parameter('a')",
    "def helper(x):\n    return x + 100",
    "@ex.result\ndef score(a):\n    return helper(a)",
    "ex.set_parameters(a=1)\nscore(a).compute(seed=1)",
    "def helper(x):\n    return x + 200",
    "score(a).compute(seed=1)",
]


def test_notebook_cells_are_the_source_and_helpers_are_followed(workdir: Path) -> None:
    """A real Jupyter kernel: the cells run so far are the trial's source tree."""
    try:
        import nbclient
        import nbformat
    except ImportError as exc:
        pytest.fail(f"needs nbclient and nbformat ({exc}): pip install -e '.[test]'")

    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in NOTEBOOK_CELLS]
    )
    client = nbclient.NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    repo = str(Path(__file__).resolve().parents[2])  # this checkout importable first
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    client.execute(env=env)
    ex = daskperiment.Experiment(id="nb_pj")
    out = ex.checkout(2, workdir / "co")
    assert out.kind == "notebook" and out.files == ("notebook.py",)
    text = (workdir / "co" / "notebook.py").read_text()
    for cell in NOTEBOOK_CELLS[:-1]:
        assert cell in text
    assert "# In[5]:\ndef helper(x):\n    return x + 200" in text
    diff = str(ex.diff(1, 2))
    assert "diff --git a/__main__.helper b/__main__.helper" in diff
    assert "+    return x + 200" in diff
    assert "diff --git a/notebook.py b/notebook.py" in diff
    with pytest.raises(daskperiment.errors.DaskperimentError, match="not run from a script"):
        ex.reproduce(2)


def test_a_new_library_version_misses_only_the_steps_that_use_it(python: Any) -> None:
    """A real (tiny) installed distribution, upgraded between two runs."""
    site = python.directory / "env" / "site-packages"
    (site / "fakelib").mkdir(parents=True)
    (site / "fakelib" / "__init__.py").write_text("def double(x):\n    return 2 * x\n")
    dist = site / "fakelib-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakelib\nVersion: 1.0\n")
    python.write(
        "lib.py",
        """
        import daskperiment
        import fakelib

        ex = daskperiment.Experiment(id="lib_pj")
        a = ex.parameter("a")


        @ex.persist(cache=True)
        def load(a):
            return a + 1


        @ex.persist(cache=True)
        def train(x):
            return fakelib.double(x)


        @ex.result
        def score(y):
            return y


        s = score(train(load(a)))
        """,
        report=False,
    )
    run = ["run", "lib.py", "a=1", "--seed", "1"]
    paths = [str(site)]
    first = python.run_args([sys.executable, "-m", "daskperiment", *run], pythonpath=paths).check()
    assert reused(first) == []
    same = python.run_args([sys.executable, "-m", "daskperiment", *run], pythonpath=paths).check()
    assert reused(same) == ["load", "train"]
    dist.rename(site / "fakelib-2.0.dist-info")
    metadata = site / "fakelib-2.0.dist-info" / "METADATA"
    metadata.write_text(metadata.read_text().replace("1.0", "2.0"))
    upgraded = python.run_args(
        [sys.executable, "-m", "daskperiment", *run], pythonpath=paths
    ).check()
    assert reused(upgraded) == ["load"]
    steps = daskperiment.Experiment(id="lib_pj").get_trial(3)["steps"]
    assert steps["train"]["libraries"] == {"fakelib": "2.0"}
    assert steps["load"]["libraries"] == {}


def test_a_trial_run_by_python_reproduces_through_daskperiment_run(python: Any) -> None:
    python.write(
        "direct.py",
        """
        import daskperiment

        ex = daskperiment.Experiment(id="direct_pj")
        a = ex.parameter("a")
        OFFSET = 3


        def local_helper(x):
            return x + OFFSET


        @ex.result
        def score(a):
            return local_helper(a)


        s = score(a)
        ex.run_from_command_line()
        """,
        report=False,
    )
    python.run_args([sys.executable, "direct.py", "a=4"]).check()
    record = daskperiment.Experiment(id="direct_pj").get_trial(1)
    closure = daskperiment.Experiment(id="direct_pj").load(oid(record["steps"]["score"]["closure"]))
    assert sorted(closure["entries"]) == ["__main__.OFFSET", "__main__.local_helper"]
    run = dp(python, "reproduce", "direct_pj", "1")
    assert run.returncode == 0, run.describe()
