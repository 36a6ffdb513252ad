"""An experiment whose store directory is removed while it runs does not recreate it.

At exit, the experiment flushes its history index; a store that is gone is skipped quietly
(a debug message), instead of the write recreating a store without its config.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import logging, shutil, sys
import daskperiment
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
logging.getLogger("daskperiment").setLevel(logging.DEBUG)
ex = daskperiment.Experiment(id="gone")
a = ex.parameter("a")

@ex.result
def score(a):
    return a * 2

for value in range(int(sys.argv[1])):
    ex.set_parameters(a=value)
    print("result", score(a).compute(), flush=True)
if sys.argv[2] == "remove":
    shutil.rmtree("daskperiment_cache/gone")
print("trials", len(ex.get_history()) if sys.argv[2] == "keep" else "-", flush=True)
"""


def _run(cwd: Path, trials: int, action: str) -> subprocess.CompletedProcess[str]:
    script = cwd / "experiment.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), str(trials), action],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_a_removed_store_is_not_recreated_at_exit_and_a_new_one_works(tmp_path: Path) -> None:
    gone = _run(tmp_path, 2, "remove")
    assert gone.returncode == 0, gone.stderr
    assert "result 2" in gone.stdout
    store_dir = tmp_path / "daskperiment_cache" / "gone"
    assert not store_dir.exists()
    assert "Traceback" not in gone.stderr and "WARNING" not in gone.stderr
    assert "DEBUG history index not updated" in gone.stderr and "is gone" in gone.stderr

    again = _run(tmp_path, 3, "keep")
    assert again.returncode == 0, again.stderr
    assert "trials 3" in again.stdout  # a fresh store: trials 1..3, nothing of the old one
    assert (store_dir / "config").is_file()
