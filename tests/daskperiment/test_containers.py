"""Step outputs that are containers of frames and arrays: stored structurally, shown by
``cat``, exported to files other tools read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import daskperiment
from daskperiment.export import ExportError

REPO = Path(__file__).resolve().parents[2]
#: A directory holding pyarrow, for machines where it is not installed (pyarrow changes
#: pandas' defaults, so a shared test environment may keep it out of site-packages).
PYARROW = os.environ.get("DASKPERIMENT_TEST_PYARROW_PATH", "")


#: ``python -m daskperiment`` as if pyarrow were not installed
WITHOUT_PYARROW = (
    "import runpy, sys; sys.modules['pyarrow'] = None; "
    "runpy.run_module('daskperiment', run_name='__main__', alter_sys=True)"
)


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, hide_pyarrow: bool = False
) -> Any:
    environ = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    command = ["-c", WITHOUT_PYARROW] if hide_pyarrow else ["-m", "daskperiment"]
    return subprocess.run(
        [sys.executable, *command, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
    )


def frames(changed: int | None = None) -> dict[str, pd.DataFrame]:
    out = {}
    for i in range(4):
        values = np.arange(1000.0) + i + (0.5 if i == changed else 0)
        out[f"f{i}"] = pd.DataFrame({"v": values, "k": np.arange(1000) % 7})
    return out


def experiment(tmp_path: Path) -> tuple[Any, Any]:
    ex = daskperiment.Experiment("containers", backend=tmp_path / "store")
    changed = ex.parameter("changed", default=-1)

    @ex.persist
    def make(changed):
        return {"frames": frames(changed), "meta": ("run", np.float64(0.5)), "arr": np.ones(3)}

    @ex.result
    def total(data):
        return float(sum(f["v"].sum() for f in data["frames"].values()))

    return ex, total(make(changed))


def test_a_dict_of_frames_is_stored_structurally_and_deduplicated(tmp_path: Path) -> None:
    ex, r = experiment(tmp_path)
    r.compute()
    st = ex.store
    oid = ex.get_trial(1)["steps"]["make"]["persisted"]
    assert st.info(oid).kind == "container"
    objects_before = sum(1 for _ in st.backend.list("objects/"))
    ex.set_parameters(changed=2)
    r.compute()
    oid2 = ex.get_trial(2)["steps"]["make"]["persisted"]
    new = sum(1 for _ in st.backend.list("objects/")) - objects_before
    # the changed frame, the container, and the trial's own record objects; not 4 frames
    assert set(st.links(oid)) ^ set(st.links(oid2)) != set()
    assert len(set(st.links(oid2)) - set(st.links(oid))) == 1
    assert new <= 6, new
    got = ex.get_persisted("make", 2)
    pd.testing.assert_frame_equal(got["frames"]["f2"], frames(2)["f2"])
    assert got["meta"] == ("run", np.float64(0.5)) and type(got["meta"][1]) is np.float64


def test_cat_shows_a_container_and_its_elements(tmp_path: Path) -> None:
    ex, r = experiment(tmp_path)
    r.compute()
    oid = ex.get_trial(1)["steps"]["make"]["persisted"]
    shown = run_cli("cat", oid, "--store", str(tmp_path / "store"), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    element = doc["frames"]["f0"]["$link"]
    assert doc["meta"]["$tuple"][0] == "run"
    table = run_cli("cat", element, "--store", str(tmp_path / "store"), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "999.0" in table.stdout  # the frame, printed as a table


def test_export_by_extension(tmp_path: Path) -> None:
    ex, r = experiment(tmp_path)
    r.compute()
    oid = ex.get_trial(1)["steps"]["make"]["persisted"]
    links = ex.store.get(oid)  # noqa: F841 - loadable without unpickling
    element = json.loads(
        run_cli("cat", oid, "--store", str(tmp_path / "store"), cwd=tmp_path).stdout
    )["arr"]["$link"]
    out = run_cli(
        "cat",
        element,
        "--to",
        str(tmp_path / "arr.npy"),
        "--store",
        str(tmp_path / "store"),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "arr.npy"), np.ones(3))
    frame_oid = json.loads(
        run_cli("cat", oid, "--store", str(tmp_path / "store"), cwd=tmp_path).stdout
    )["frames"]["f1"]
    out = run_cli(
        "cat",
        frame_oid["$link"],
        "--to",
        "f1.csv",
        "--store",
        str(tmp_path / "store"),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    back = pd.read_csv(tmp_path / "f1.csv", index_col=0)
    pd.testing.assert_frame_equal(back, frames()["f1"])
    again = run_cli(
        "cat",
        frame_oid["$link"],
        "--to",
        "f1.csv",
        "--store",
        str(tmp_path / "store"),
        cwd=tmp_path,
    )
    assert again.returncode != 0 and "exists" in again.stderr
    assert "Traceback" not in again.stderr


def test_get_persisted_to_a_file_and_its_errors(tmp_path: Path) -> None:
    ex = daskperiment.Experiment("export_pj", backend=tmp_path / "store")

    @ex.persist
    def frame():
        return pd.DataFrame({"a": [1, 2, 3]})

    @ex.persist
    def both(f):
        return {"f": f, "x": np.arange(3)}

    @ex.result
    def out(d):
        return 1

    out(both(frame())).compute()
    value = ex.get_persisted("frame", 1, to=tmp_path / "frame.csv")
    assert list(value["a"]) == [1, 2, 3]
    assert (tmp_path / "frame.csv").read_text().splitlines()[0] == ",a"
    ex.get_persisted("frame", 1, to=tmp_path / "frame.npy")
    assert np.load(tmp_path / "frame.npy").tolist() == [[1], [2], [3]]
    with pytest.raises(ExportError, match="not one table"):
        ex.get_persisted("both", 1, to=tmp_path / "both.csv")
    with pytest.raises(ExportError, match="end the file name with one of"):
        ex.get_persisted("frame", 1, to=tmp_path / "frame.xlsx")
    assert not (tmp_path / "both.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_parquet_export_with_and_without_pyarrow(tmp_path: Path) -> None:
    ex, r = experiment(tmp_path)
    r.compute()
    oid = ex.get_trial(1)["steps"]["make"]["persisted"]
    frame_oid = json.loads(
        run_cli("cat", oid, "--store", str(tmp_path / "store"), cwd=tmp_path).stdout
    )["frames"]["f3"]
    args = ("cat", frame_oid["$link"], "--to", "f3.parquet", "--store", str(tmp_path / "store"))
    # Without pyarrow (hidden from the command where it is installed): what to install.
    missing = run_cli(*args, cwd=tmp_path, hide_pyarrow=True)
    assert missing.returncode != 0 and "pip install 'daskperiment[parquet]'" in missing.stderr
    assert not (tmp_path / "f3.parquet").exists()
    try:
        import pyarrow  # noqa: F401

        have = True
    except ImportError:
        have = False
    if not have and not (PYARROW and (Path(PYARROW) / "pyarrow").is_dir()):
        pytest.skip("pyarrow is not available (set DASKPERIMENT_TEST_PYARROW_PATH)")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), PYARROW]))}
    done = run_cli(*args, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    check = subprocess.run(
        [sys.executable, "-c", "import pandas as pd; print(pd.read_parquet('f3.parquet').v.sum())"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert check.stdout.strip() == str(float(frames()["f3"]["v"].sum())), check.stderr
