"""The LocalCluster example of docs/distributed.md runs as a user would run it, and says what
the page says it prints."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import daskperiment_store as store

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "distributed.md"
MARKER = "<!-- example: local-cluster -->"


def example_source() -> str:
    """The first ```python block after the marker."""
    text = DOC.read_text()
    assert MARKER in text, f"{DOC} lost its example marker {MARKER!r}"
    after = text.split(MARKER, 1)[1]
    found = re.search(r"```python\n(.*?)\n```", after, re.S)
    assert found, "no python block after the marker"
    return found.group(1) + "\n"


def test_the_local_cluster_example_runs(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    script = tmp_path / "sweep_example.py"
    script.write_text(example_source())
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=240,
    )
    out = proc.stdout
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out

    assert re.search(r"^dashboard: http://\S+/status$", out, re.M), out
    table = [line.split() for line in out.splitlines() if re.match(r"^[1-6]\s+\d", line)]
    assert [(row[1], row[2]) for row in table] == [
        ("0.1", "2"),
        ("0.1", "4"),
        ("0.5", "2"),
        ("0.5", "4"),
        ("2.0", "2"),
        ("2.0", "4"),
    ], out
    assert [row[4] for row in table] == ["True"] * 4 + ["False"] * 2, out
    assert [" ".join(row[5:]) for row in table[4:]] == [
        "ValueError(learning rate 2.0 is too large)"
    ] * 2
    best = re.search(r"^best trial: (\d) (\{.*\})$", out, re.M)
    assert best, out
    params = ast.literal_eval(best.group(2))
    assert params["lr"] == 0.5 and params["depth"] in (2, 4)
    assert f"its data: (1000, {params['depth']})" in out
    assert re.search(r"^Trial ID\s+1\s+2$", out, re.M), out
    assert "reproduced: True" in out
    assert "Finished Experiment (trial id=7)" in out

    st = store.open(tmp_path / "sweep_store", create=False)
    assert len(st.refs.names("experiments/sweep_pj/trials/")) == 7
    assert st.fsck().ok
