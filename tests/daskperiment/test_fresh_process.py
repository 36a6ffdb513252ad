"""What a fresh process loads to open an experiment and read its history, and that every name
loaded on first use instead still works there (each check runs in its own interpreter)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import daskperiment

REPO = Path(__file__).resolve().parents[2]

#: Modules opening and reading never need: each loads when first used.
NOT_ON_OPENING = (
    "daskperiment_store.reports",
    "daskperiment_store.backends.fsspec",
    "daskperiment_store.backends.s3",
    "daskperiment.trialsession",
    "daskperiment.purity",
    "daskperiment.provenance.lineage",
    "daskperiment.provenance.inputs",
    "getpass",
    "pyarrow.pandas_compat",
)


def run(code: str) -> str:
    """stdout of ``code`` in a fresh interpreter on this checkout (fails on any error)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding three trials of ``fresh_pj`` (the history index written at exit)."""
    path = tmp_path_factory.mktemp("fresh") / "store"
    run(
        f"""
        import daskperiment
        ex = daskperiment.Experiment("fresh_pj", backend={str(path)!r})
        a = ex.parameter("a")

        @ex.result
        def score(a):
            return 10 / a

        for value in (1, 2, 4):
            ex.set_parameters(a=value)
            score(a).compute(scheduler="sync")
        """
    )
    return path


def test_opening_and_reading_the_history_load_none_of_them(recorded: Path) -> None:
    out = run(
        f"""
        import sys, daskperiment
        ex = daskperiment.Experiment("fresh_pj", backend={str(recorded)!r})
        h = ex.get_history()
        print(list(h["Result"]), h.columns.dtype)
        print(sorted(m for m in {NOT_ON_OPENING!r} if m in sys.modules))
        """
    )
    assert out.splitlines() == ["[10.0, 5.0, 2.5] str", "[]"]


def test_the_history_table_is_the_same_when_pandas_builds_its_labels(recorded: Path) -> None:
    # the labels built from Arrow buffers against pandas' own (after the other table)
    out = run(
        f"""
        import pandas as pd, daskperiment
        from daskperiment import historyframe
        ex = daskperiment.Experiment("fresh_pj", backend={str(recorded)!r})
        ours = ex.get_history()
        historyframe._labels = lambda names: None
        theirs = ex.get_history()
        pd.testing.assert_frame_equal(ours, theirs, check_column_type=True, check_exact=True)
        pd.testing.assert_index_equal(ours.columns, theirs.columns, exact=True)
        print(type(ours.columns.array).__name__, list(ours.columns) == list(theirs.columns))
        """
    )
    assert out == "ArrowStringArray True"


def test_a_trial_after_opening_loads_what_it_needs(recorded: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(recorded, tmp_path / "copy")
    out = run(
        f"""
        import sys, daskperiment
        ex = daskperiment.Experiment("fresh_pj", backend={str(copy)!r})
        a = ex.parameter("a")

        @ex.result
        def score(a):
            return 10 / a

        ex.set_parameters(a=8)
        print(score(a).compute(scheduler="sync"), ex.trial_id)
        print(all(m in sys.modules for m in ("daskperiment.trialsession", "daskperiment.purity")))
        print(list(ex.get_history()["Result"]))
        """
    )
    assert out.splitlines() == ["1.25 4", "True", "[10.0, 5.0, 2.5, 1.25]"]


def test_tags_lineage_and_track_work_in_a_fresh_process(recorded: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(recorded, tmp_path / "copy")
    out = run(
        f"""
        import daskperiment
        from daskperiment.errors import NotInTrial
        ex = daskperiment.Experiment("fresh_pj", backend={str(copy)!r})
        ex.tag(2, "best")
        print(list(ex.get_history()["Tags"]))
        print(ex.trials_using("0" * 32))
        try:
            ex.track("data.csv")
        except NotInTrial as exc:
            print(exc)
        """
    )
    lines = out.splitlines()
    assert lines[:2] == ["['', 'best', '']", "[]"]
    with pytest.raises(daskperiment.errors.NotInTrial) as info:
        daskperiment.Experiment("fresh_pj", backend=copy).track("data.csv")
    assert lines[2] == str(info.value)


def test_the_stores_names_loaded_on_first_use_work(tmp_path: Path) -> None:
    out = run(
        f"""
        import sys
        import daskperiment_store as store
        from daskperiment_store import backends
        print(store.is_store("memory://fresh-nothing"))
        s = store.open("memory://fresh-names")  # a URL: through FsspecBackend, loaded now
        print(type(s.backend).__name__, "daskperiment_store.backends.fsspec" in sys.modules)
        print(backends.S3Backend.__mro__[1].__name__, "FsspecBackend" in dir(backends))
        local = store.open({str(tmp_path / "s")!r})
        oid = local.put({{"a": 1}})
        info = local.info(oid)
        print(type(info) is store.ObjectInfo, info.kind)
        print(type(local.fsck()) is store.FsckReport, type(local.gc(grace=0)) is store.GcReport)
        print(store.TransferReport.__name__, "ObjectInfo" in dir(store))
        """
    )
    assert out.splitlines() == [
        "False",
        "MemoryBackend True",
        "FsspecBackend True",
        "True json",
        "True True",
        "TransferReport True",
    ]


def test_unknown_names_of_the_packages_are_attribute_errors() -> None:
    out = run(
        """
        import daskperiment_store as store
        from daskperiment_store import backends
        for module, name in ((store, "FsspecBackends"), (backends, "GcsBackend")):
            try:
                getattr(module, name)
            except AttributeError as exc:
                print(exc)
        """
    )
    assert out.splitlines() == [
        "module 'daskperiment_store' has no attribute 'FsspecBackends'",
        "module 'daskperiment_store.backends' has no attribute 'GcsBackend'",
    ]
