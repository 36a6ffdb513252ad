"""What a user installs: the wheel's contents, its import names, and that neither an installed
wheel nor an editable install can be shadowed by a user's own ``store.py`` or ``store/``.

The store is developed in ``store/`` and installed as ``daskperiment_store``
(``[tool.setuptools] package-dir`` in pyproject.toml). Building needs setuptools >= 70.1 (the
``test`` extra installs it); builds run offline (``--no-build-isolation``) from a copy of the
checkout, so nothing is written into the checkout itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
INSTALLED = {"daskperiment": "daskperiment", "daskperiment_store": "store"}
IGNORED = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "*.pyc"
)

# A user's script: an experiment with one trial, run next to their own store.py and store/.
USER_SCRIPT = """
import sys
import daskperiment, daskperiment_store

ex = daskperiment.Experiment(id="shadow_pj", backend="trials")
a = ex.parameter("a")

@ex
def prepare(a):
    return a + 1

@ex.result
def score(x):
    return x * 10

ex.set_parameters(a=1)
print("result=" + str(score(prepare(a)).compute()))
print("trials=" + str(len(ex.get_history())))
user_store = __import__("store")  # the user's own package, untouched by daskperiment
print("user store=" + user_store.WHOSE)
print("daskperiment=" + daskperiment.__file__)
print("daskperiment_store=" + daskperiment_store.__file__)
"""


def package_dirs() -> dict[str, Path]:
    """Every package of the checkout by installed name, e.g. daskperiment_store.backends."""
    found = {}
    for name, folder in INSTALLED.items():
        for init in sorted((REPO / folder).rglob("__init__.py")):
            relative = init.parent.relative_to(REPO / folder).parts
            found[".".join((name, *relative))] = init.parent
    return found


def checkout_copy(dest: Path) -> Path:
    """The checkout as a user would get it, plus the clutter a working copy accumulates."""
    shutil.copytree(REPO, dest, ignore=IGNORED, symlinks=True)
    # What running the examples and tests leaves behind: none of it may reach the wheel.
    objects = dest / "daskperiment_cache" / "quickstart_pj" / "objects" / "ab"
    objects.mkdir(parents=True)
    (objects / "cdef").write_bytes(b"object")
    (dest / "daskperiment_cache" / "quickstart_pj" / "config").write_text("{}")
    (dest / "daskperiment_scratch").mkdir()
    (dest / "daskperiment_scratch" / "__init__.py").write_text("")
    return dest


def build_wheel(src: Path, out: Path) -> Path:
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(src)])  # fmt: skip
    (wheel,) = out.glob("daskperiment-*.whl")
    return wheel


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done


def user_dir(tmp: Path) -> Path:
    """A user's project folder holding a store.py and a store/ package of their own."""
    work = tmp / "project"
    (work / "store").mkdir(parents=True)
    (work / "store.py").write_text("WHOSE = 'module'\n")
    (work / "store" / "__init__.py").write_text("WHOSE = 'user'\n")
    (work / "script.py").write_text(USER_SCRIPT)
    return work


def run_user_script(python: str, work: Path, pythonpath: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = run([python, "script.py"], cwd=work, env=env)
    lines = [line.split("=", 1) for line in done.stdout.splitlines() if "=" in line]
    return {key: value for key, value in lines}


def require_modern_setuptools() -> None:
    import setuptools

    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    if (major, minor) < (70, 1):
        pytest.fail(
            f"building needs setuptools >= 70.1, found {setuptools.__version__}: "
            "install the test extra (pip install -e '.[test]')"
        )


def test_the_package_list_names_every_package_of_the_checkout():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert listed == set(package_dirs())
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"daskperiment_store": "store"}


def test_the_checkout_imports_the_store_under_its_installed_name_only():
    # As pytest and the subprocess tests see the checkout: the repository root on the path.
    code = (
        "import sys, daskperiment, daskperiment_store\n"
        "print(daskperiment_store.__file__)\n"
        "print(sorted(m for m in sys.modules if m == 'store' or m.startswith('store.')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = run([sys.executable, "-c", code], cwd=REPO / "tests", env=env)
    where, imported = done.stdout.splitlines()
    assert Path(where).resolve() == (REPO / "store" / "__init__.py").resolve()
    assert imported == "[]"


@pytest.mark.slow
def test_the_wheel_holds_the_two_packages_and_nothing_else(tmp_path):
    require_modern_setuptools()
    wheel = build_wheel(checkout_copy(tmp_path / "src"), tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == [
        "daskperiment",
        "daskperiment_store",
    ]
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"daskperiment", "daskperiment_store"}
    assert not [n for n in names if "daskperiment_cache" in n or "/tests/" in n]
    # every module of the checkout is in the wheel under its installed name
    for package, folder in package_dirs().items():
        for module in folder.glob("*.py"):
            assert f"{package.replace('.', '/')}/{module.name}" in names
    assert "daskperiment/board/templates/base.html" in names


@pytest.mark.slow
def test_an_installed_wheel_is_not_shadowed_by_a_users_store(tmp_path):
    require_modern_setuptools()
    wheel = build_wheel(checkout_copy(tmp_path / "src"), tmp_path / "dist")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what pip install puts in site-packages
    seen = run_user_script(sys.executable, user_dir(tmp_path), str(site))
    assert seen["result"] == "20" and seen["trials"] == "1"
    assert seen["user store"] == "user"
    assert Path(seen["daskperiment"]).is_relative_to(site)
    assert Path(seen["daskperiment_store"]) == site / "daskperiment_store" / "__init__.py"


@pytest.mark.slow
def test_an_editable_install_is_not_shadowed_by_a_users_store(tmp_path):
    require_modern_setuptools()
    src = checkout_copy(tmp_path / "src")
    (src / "daskperiment_store").unlink()  # only the installed mapping may find the store
    # What `pip install -e` does: the backend's PEP 660 hook builds an editable wheel (here with
    # this interpreter's setuptools), then pip installs it, into a venv of its own.
    hook = "import sys, setuptools.build_meta as b; b.build_editable(sys.argv[1])"
    run([sys.executable, "-c", hook, str(tmp_path / "editable")], cwd=src)
    (wheel,) = (tmp_path / "editable").glob("daskperiment-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
    python = str(venv / "bin" / "python")
    run([python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)])
    seen = run_user_script(python, user_dir(tmp_path), None)
    assert seen["result"] == "20" and seen["trials"] == "1"
    assert seen["user store"] == "user"
    assert Path(seen["daskperiment"]) == src / "daskperiment" / "__init__.py"
    assert Path(seen["daskperiment_store"]) == src / "store" / "__init__.py"
