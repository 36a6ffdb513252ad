"""State: nothing to save by hand; a new process sees everything and notices what changed."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import daskperiment
import daskperiment_store as store

RUN_TRIALS = """
import sys

import numpy as np

import daskperiment

ex = daskperiment.Experiment(id='restore_pj')
a = ex.parameter('a')


@ex.persist
def make(a):
    return np.full(4, a, dtype=float)


@ex.result
def total(data):
    for epoch in range(3):
        ex.save_metric('loss', epoch=epoch, value=float(data.sum()) / (epoch + 1))
    return float(data.sum())


result = total(make(a))
for value in sys.argv[1:]:
    ex.set_parameters(a=int(value))
    result.compute(seed=int(value))
report({'trial_id': ex.trial_id})
"""


def test_new_process_sees_trials_metrics_persisted_and_code(python: Any) -> None:
    first = python.run(RUN_TRIALS, "1", "2", name="trials.py").check()
    assert first.result() == {"trial_id": 2}

    ex = daskperiment.Experiment(id="restore_pj")
    assert ex.trial_id == 2
    history = ex.get_history()
    assert list(history.index) == [1, 2]
    assert history["a"].tolist() == [1, 2]
    assert history["Result"].tolist() == [4.0, 8.0]
    assert ex.get_parameters(trial_id=2) == {"a": 2}
    np.testing.assert_array_equal(ex.get_persisted("make", trial_id=2), np.full(4, 2.0))
    assert ex.load_metric("loss", trial_id=2)[2].tolist() == [8.0, 4.0, 8.0 / 3]
    assert ex.get_metric_keys(1) == ["loss"]
    code = ex.get_code(trial_id=1)
    assert "def make(a):" in code and "def total(data):" in code
    assert ex.get_history(verbose=True)["Seed"].tolist() == [1, 2]


def test_trial_ids_continue_in_a_new_process(python: Any) -> None:
    first = python.run(RUN_TRIALS, "1", name="trials.py").check()
    assert "Loaded Experiment(" not in first.output  # nothing to load the first time
    second = python.run(RUN_TRIALS, "5", "6", name="trials.py").check()
    assert second.result() == {"trial_id": 3}
    loaded = [line for line in second.lines if "Loaded Experiment(" in line]
    assert len(loaded) == 1, second.describe()
    assert "[INFO] Loaded Experiment(id: restore_pj, trial_id: 1" in loaded[0]
    ex = daskperiment.Experiment(id="restore_pj")
    assert ex.get_history()["a"].tolist() == [1, 5, 6]


def test_same_id_and_store_give_the_same_instance(workdir: Path) -> None:
    ex = daskperiment.Experiment(id="same_pj")
    assert daskperiment.Experiment(id="same_pj") is ex
    assert daskperiment.Experiment(id="other_pj") is not ex


def test_same_id_in_another_directory_is_another_experiment(workdir: Path) -> None:
    ex = daskperiment.Experiment(id="moved_pj")
    a = ex.parameter("a")

    @ex.result
    def ident(a):
        return a

    ex.set_parameters(a=1)
    ident(a).compute()
    (workdir / "elsewhere").mkdir()
    os.chdir(workdir / "elsewhere")
    other = daskperiment.Experiment(id="moved_pj")
    assert other is not ex
    assert other.trial_id == 0
    assert ex.trial_id == 1
    assert (workdir / "daskperiment_cache" / "moved_pj").is_dir()


def test_path_backend(workdir: Path) -> None:
    target = workdir / "stores" / "mine"
    ex = daskperiment.Experiment(id="path_pj", backend=target)
    assert repr(ex) == f"Experiment(id: path_pj, trial_id: 0, backend: LocalBackend('{target}'))"
    a = ex.parameter("a")

    @ex.result
    def ident(a):
        return a

    ex.set_parameters(a=7)
    assert ident(a).compute() == 7
    assert (target / "config").is_file()
    assert not (workdir / "daskperiment_cache").exists()
    assert isinstance(ex.store, store.Store)
    assert set(ex.store.refs.list("experiments/path_pj/trials/")) == {
        "experiments/path_pj/trials/1"
    }


def test_memory_url_and_store_object_backends() -> None:
    for backend in ("memory://restore-test", store.open(store.MemoryBackend())):
        ex = daskperiment.Experiment(id="memory_pj", backend=backend)
        a = ex.parameter("a")

        @ex.result
        def ident(a):
            return a

        ex.set_parameters(a=3)
        assert ident(a).compute() == 3
        assert ex.trial_id == 1
        assert ex.get_history()["a"].tolist() == [3]
    assert not Path("daskperiment_cache").exists()


def test_two_experiments_share_one_store(workdir: Path) -> None:
    shared = store.open(workdir / "team")
    one = daskperiment.Experiment(id="one", backend=shared)
    two = daskperiment.Experiment(id="two", backend=shared)
    for ex, value in ((one, 1), (two, 2)):
        a = ex.parameter("a")

        @ex.result
        def ident(a):
            return a

        ex.set_parameters(a=value)
        ident(a).compute()
    assert one.get_history()["a"].tolist() == [1]
    assert two.get_history()["a"].tolist() == [2]
    assert one.trial_id == two.trial_id == 1


# --- environment change detection, end to end ------------------------------------------------

ENV_SCRIPT = """
import daskperiment

ex = daskperiment.Experiment(id='env_pj')
a = ex.parameter('a')


@ex.result
def ident(a):
    return a


ex.set_parameters(a=1)
ident(a).compute()
"""


def install_fake_distribution(site: Path, version: str) -> None:
    """A minimal installed distribution ``fakepkg`` that importlib.metadata finds on sys.path."""
    for old in site.glob("fakepkg-*.dist-info"):
        shutil.rmtree(old)
    info = site / f"fakepkg-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakepkg\nVersion: {version}\n")


def package_change(output: str, old: str, new: str) -> bool:
    lines = output.splitlines()
    changed = [
        i for i, line in enumerate(lines) if "Installed Python packages have been changed" in line
    ]
    removed = [
        line for line in lines if re.search(rf"\[WARNING\] -fakepkg {re.escape(old)} \(.+\)$", line)
    ]
    added = [
        line
        for line in lines
        if re.search(rf"\[WARNING\] \+fakepkg {re.escape(new)} \(.+\)$", line)
    ]
    return bool(changed and removed and added)


def test_changed_package_version_is_logged_in_the_next_process(python: Any, workdir: Path) -> None:
    site = workdir / "site"
    install_fake_distribution(site, "1.0")
    first = python.run(ENV_SCRIPT, name="env.py", pythonpath=[str(site)]).check()
    same = python.run(ENV_SCRIPT, name="env.py", pythonpath=[str(site)]).check()
    assert "have been changed" not in first.output + same.output, same.describe()

    install_fake_distribution(site, "2.0")
    changed = python.run(ENV_SCRIPT, name="env.py", pythonpath=[str(site)]).check()
    assert package_change(changed.output, "1.0", "2.0"), changed.describe()
    warning = next(line for line in changed.lines if "+fakepkg 2.0" in line)
    assert str(site) in warning

    ex = daskperiment.Experiment(id="env_pj")
    assert re.search(r"fakepkg\W+1\.0", str(ex.get_python_packages(trial_id=1)))
    assert re.search(r"fakepkg\W+2\.0", str(ex.get_python_packages(trial_id=3)))
    assert not re.search(r"fakepkg\W+2\.0", str(ex.get_python_packages(trial_id=2)))

    shutil.rmtree(site / "fakepkg-2.0.dist-info")
    removed = python.run(ENV_SCRIPT, name="env.py", pythonpath=[str(site)]).check()
    assert "Installed Python packages have been changed" in removed.output, removed.describe()
    assert re.search(r"\[WARNING\] -fakepkg 2\.0 \(.+\)$", removed.output, re.M)
    assert "+fakepkg" not in removed.output


def test_environment_is_recorded_per_trial(workdir: Path) -> None:
    ex = daskperiment.Experiment(id="environment_pj")
    a = ex.parameter("a")

    @ex.result
    def ident(a):
        return a

    ex.set_parameters(a=1)
    ident(a).compute()
    ident(a).compute()
    env = ex.get_environment(trial_id=1)
    text = str(env)
    import platform
    import sys

    assert platform.python_version() in text
    assert sys.executable in text
    assert re.search(r"numpy\W+" + re.escape(np.__version__), str(ex.get_python_packages(1)))
    # unchanged environment: stored once
    assert ex.get_trial(1)["digests"]["environment"] == ex.get_trial(2)["digests"]["environment"]


@pytest.mark.parametrize("category", ["platform", "python", "packages"])
def test_environment_categories(workdir: Path, category: str) -> None:
    ex = daskperiment.Experiment(id="categories_pj")
    a = ex.parameter("a")

    @ex.result
    def ident(a):
        return a

    ex.set_parameters(a=1)
    ident(a).compute()
    part = ex.get_environment(trial_id=1, category=category)
    assert part
    assert len(str(part)) < len(str(ex.get_environment(trial_id=1)))


def git(repo: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_git_state_is_recorded_and_a_new_commit_is_logged(python: Any, workdir: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git(workdir, "init", "-q", "--initial-branch=main")
    (workdir / ".gitignore").write_text("daskperiment_cache/\n__pycache__/\n")
    (workdir / "notes.txt").write_text("first\n")
    python.write("env.py", ENV_SCRIPT)
    git(workdir, "add", ".")
    git(workdir, "commit", "-q", "-m", "first")
    first_commit = git(workdir, "rev-parse", "HEAD")
    python.run_args([sys.executable, "env.py"]).check()

    (workdir / "notes.txt").write_text("changed\n")  # dirty working tree
    python.run_args([sys.executable, "env.py"]).check()

    git(workdir, "commit", "-q", "-am", "second")
    second_commit = git(workdir, "rev-parse", "HEAD")
    run = python.run_args([sys.executable, "env.py"]).check()
    assert "[WARNING] Git commit has been changed" in run.output, run.describe()
    assert re.search(rf"\[WARNING\] -.*{first_commit}", run.output), run.describe()
    assert re.search(rf"\[WARNING\] \+.*{second_commit}", run.output), run.describe()

    ex = daskperiment.Experiment(id="env_pj")
    clean = str(ex.get_environment(trial_id=1, category="git"))
    dirty = str(ex.get_environment(trial_id=2, category="git"))
    assert first_commit in clean and "main" in clean
    assert re.search(r"dirty\W+(False|false)", clean), clean
    assert re.search(r"dirty\W+(True|true)", dirty), dirty
    assert second_commit in str(ex.get_environment(trial_id=3, category="git"))


def test_no_git_outside_a_work_tree(workdir: Path) -> None:
    ex = daskperiment.Experiment(id="nogit_pj")
    a = ex.parameter("a")

    @ex.result
    def ident(a):
        return a

    ex.set_parameters(a=1)
    ident(a).compute()
    assert "git" not in ex.get_environment(trial_id=1)
    with pytest.raises(KeyError, match="git"):
        ex.get_environment(trial_id=1, category="git")


S3_TRIALS = """
import sys

import daskperiment

ex = daskperiment.Experiment(id='s3_pj', backend=sys.argv[1])
history = ex.get_history()
report({
    'trial_id': ex.trial_id,
    'a': history['a'].tolist(),
    'persisted': ex.get_persisted('make', trial_id=2).tolist(),
    'loss': ex.load_metric('loss', trial_id=2)[2].tolist(),
})
"""


def test_s3_store_is_shared_with_another_process(python: Any, s3_url: str) -> None:
    """Steps in worker processes write to the S3 store; another process reads it all back."""
    ex = daskperiment.Experiment(id="s3_pj", backend=s3_url)
    a = ex.parameter("a")

    @ex.persist
    def make(a):
        return np.full(3, a, dtype=float)

    @ex.result
    def total(data):
        ex.save_metric("loss", epoch=0, value=float(data.sum()))
        return float(data.sum())

    result = total(make(a))
    for value in (1, 2):
        ex.set_parameters(a=value)
        assert result.compute(scheduler="processes" if value == 2 else "sync") == 3.0 * value
    assert not Path("daskperiment_cache").exists()

    state = python.run(S3_TRIALS, s3_url, name="s3_reader.py").check().result()
    assert state == {"trial_id": 2, "a": [1, 2], "persisted": [2.0, 2.0, 2.0], "loss": [6.0]}
