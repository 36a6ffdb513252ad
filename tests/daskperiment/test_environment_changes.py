"""Environment changes: one WARNING line for a big change, nothing for a moved environment.

Real processes, each with a directory of fake installed distributions on its path: a change
between processes is what users see after ``pip install``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import daskperiment
from daskperiment import environment
from daskperiment.environment import changes

SCRIPT = """
import logging, daskperiment
logging.getLogger('daskperiment').setLevel(logging.{level})
ex = daskperiment.Experiment(id='envchange_pj', backend={store!r})
a = ex.parameter('a', default=1)

@ex.result
def ident(a):
    return a

ident(a).compute()
"""


def install(site: Path, versions: dict[str, str]) -> None:
    for old in site.glob("*.dist-info"):
        for child in old.iterdir():
            child.unlink()
        old.rmdir()
    for name, version in versions.items():
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def run(python: Any, site: Path, store: Path, level: str = "INFO") -> Any:
    source = SCRIPT.format(level=level, store=str(store))
    return python.run(source, name="env_script.py", pythonpath=[str(site)]).check()


def warnings(output: str) -> list[str]:
    return re.findall(r"\[WARNING\] (.*)$", output, re.M)


def test_many_package_changes_give_one_warning_line(python: Any, workdir: Path) -> None:
    site, store = workdir / "site", workdir / "store"
    install(site, {"fkone": "1.0", "fktwo": "1.0", "fkthree": "2.0", "fkgone": "0.1"})
    first = run(python, site, store)
    assert warnings(first.output) == []
    install(site, {"fkone": "1.1", "fktwo": "2.0", "fkthree": "1.0", "fknew": "0.1"})
    second = run(python, site, store)
    assert warnings(second.output) == [
        "environment changed since trial 1: 2 packages upgraded, 1 downgraded, 1 added, "
        "1 removed; see daskperiment diff --env"
    ], second.describe()
    detail = run(python, site, store, level="DEBUG")  # nothing changed since trial 2
    assert warnings(detail.output) == []
    ex = daskperiment.Experiment("envchange_pj", backend=store)
    text = str(ex.diff(1, 2))
    assert "+fknew 0.1" in text and "-fkgone 0.1" in text and "+fkone 1.1" in text


def test_detail_is_logged_at_debug(python: Any, workdir: Path) -> None:
    site, store = workdir / "site", workdir / "store"
    install(site, {"fkone": "1.0", "fktwo": "1.0"})
    run(python, site, store)
    install(site, {"fkone": "2.0", "fktwo": "2.0"})
    out = run(python, site, store, level="DEBUG").output
    assert len(warnings(out)) == 1
    assert re.search(rf"\[DEBUG\] -fkone 1\.0 \({re.escape(str(site))}\)$", out, re.M)
    assert re.search(rf"\[DEBUG\] \+fkone 2\.0 \({re.escape(str(site))}\)$", out, re.M)


def test_one_package_change_keeps_the_seed_wording(python: Any, workdir: Path) -> None:
    site, store = workdir / "site", workdir / "store"
    install(site, {"fkone": "1.0", "fktwo": "1.0"})
    run(python, site, store)
    install(site, {"fkone": "1.0", "fktwo": "1.1"})
    got = warnings(run(python, site, store).output)
    assert got[0] == "Installed Python packages have been changed"
    assert re.match(r"@@ -\d+ \+\d+ @@$", got[1])
    assert got[2:] == [f"-fktwo 1.0 ({site})", f"+fktwo 1.1 ({site})"]


def test_the_same_packages_through_a_symlink_are_no_change(python: Any, workdir: Path) -> None:
    site, store = workdir / "site", workdir / "store"
    install(site, {"fkone": "1.0", "fktwo": "1.0"})
    run(python, site, store)
    link = workdir / "venv-link"
    os.symlink(site, link)
    moved = run(python, link, store)
    assert warnings(moved.output) == [], moved.describe()
    ex = daskperiment.Experiment("envchange_pj", backend=store)
    assert ex.get_python_packages(2) != ex.get_python_packages(1)  # recorded as it is
    assert "packages" not in ex.diff(1, 2).environment


def test_package_identity_and_counts() -> None:
    old = ["numpy 1.0 (/a)", "pandas 2.0 (/a)", "Foo_Bar 1.0 (/a)"]
    new = ["numpy 1.0 (/b)", "pandas 2.1 (/b)", "foo-bar 1.0 (/b)", "x 1 (/b)"]
    assert changes.same_packages_as(old, new) == [
        "numpy 1.0 (/a)",
        "pandas 2.1 (/b)",
        "Foo_Bar 1.0 (/a)",
        "x 1 (/b)",
    ]
    assert changes.package_counts(old, new) == {"upgraded": 1, "added": 1}
    assert environment.diff({"packages": old}, {"packages": [*old[:1], *new[:1]]}) != []
    assert (
        environment.diff({"packages": old}, {"packages": [s.replace("/a", "/z") for s in old]})
        == []
    )


def test_a_distribution_listed_twice_is_no_change() -> None:
    """An editable install seen from site-packages and from the checkout on sys.path."""
    from daskperiment.environment.changes import package_counts, same_packages_as

    old = ["daskperiment 0.6.0 (/venv/site-packages)", "daskperiment 0.6.0 (/work/checkout)"]
    new = ["daskperiment 0.6.0 (/venv/site-packages)", "daskperiment 0.6.0 (/work/checkout)"]
    assert same_packages_as(old, new) == old
    moved = ["daskperiment 0.6.0 (/elsewhere)", "daskperiment 0.6.0 (/work/checkout)"]
    assert same_packages_as(old, moved) == old  # a path alone never makes a change
    assert not package_counts(old, moved)
    upgraded = ["daskperiment 0.7.0 (/venv/site-packages)", "daskperiment 0.6.0 (/work/checkout)"]
    assert same_packages_as(old, upgraded) != old
