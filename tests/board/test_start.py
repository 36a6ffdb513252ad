"""Starting the dashboard: the command line, a script (blocking), Jupyter (background)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
URL = re.compile(r"http://127\.0\.0\.1:\d+/")


@pytest.fixture
def fetch(board_fetch):
    return board_fetch


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def interruptible() -> None:
    """Run in the child before it starts: Ctrl+C (SIGINT) handled as a terminal would.

    A process started in the background without job control (``cmd &`` in a script) ignores
    SIGINT, and so does every child it starts: Python then installs no KeyboardInterrupt
    handler and the SIGINT these tests send would be lost (the dashboard kept serving)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_url(proc: subprocess.Popen, timeout: float = 60) -> str:
    """Read the child's output until it prints the dashboard's URL."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        found = URL.search(line)
        if found:
            return found.group(0)
    proc.kill()
    raise AssertionError("no URL printed:\n" + "".join(seen) + (proc.stdout.read() or ""))


def test_command_serves_until_interrupted(cache_dir: Path, fetch):
    proc = subprocess.Popen(
        [sys.executable, "-m", "daskperiment", "board", "--store", str(cache_dir), "--port", "0"],
        env=child_env(),
        preexec_fn=interruptible,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = wait_for_url(proc)
        ids = [e["id"] for e in fetch(url + "api/experiments").json()["experiments"]]
        assert ids == ["other-exp", "quickstart_pj"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


def test_default_store_is_the_cache_directory_of_the_working_directory(cache_dir: Path, fetch):
    proc = subprocess.Popen(
        [sys.executable, "-m", "daskperiment.board", "--port", "0"],
        cwd=cache_dir.parent,
        env=child_env(),
        preexec_fn=interruptible,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = wait_for_url(proc)
        assert fetch(url + "experiments/quickstart_pj").status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


def run_board(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daskperiment", "board", *args],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_shows_the_options_and_an_example():
    done = run_board("--help")
    assert done.returncode == 0
    for text in ("--store", "--host", "--port", "daskperiment board --store"):
        assert text in done.stdout


def test_a_missing_store_is_one_clear_line(tmp_path: Path):
    done = run_board("--store", str(tmp_path / "nowhere"), "--port", "0")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"daskperiment board: no store at {str(tmp_path / 'nowhere')!r}: no such directory; "
        "pass --store PATH|URL (a store, or a directory of stores such as ./daskperiment_cache)"
    ]


def test_a_url_without_a_store_is_one_clear_line():
    done = run_board("--store", "memory://no-store-here", "--port", "0")
    assert done.returncode == 1
    assert done.stderr.startswith(
        "daskperiment board: cannot read the store at memory://no-store-here"
    )
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_port_in_use_is_one_clear_line(cache_dir: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_board("--store", str(cache_dir), "--port", str(port))
    assert done.returncode == 1
    assert f"port {port} is in use; pass --port N" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_host_that_cannot_be_bound_is_one_clear_line(cache_dir: Path):
    done = run_board("--store", str(cache_dir), "--host", "999.1.1.1", "--port", "0")
    assert done.returncode == 1
    assert done.stderr.startswith("daskperiment board: cannot listen on 999.1.1.1:0: ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_start_dashboard_in_a_script_blocks_until_interrupted(
    cache_dir: Path, fetch, tmp_path: Path
):
    script = tmp_path / "show.py"
    script.write_text(
        "import pathlib, daskperiment\n"
        f"ex = daskperiment.Experiment(id='other-exp', backend=pathlib.Path({str(cache_dir / 'other-exp')!r}))\n"
        "result = ex.start_dashboard(port=0)\n"
        "print('returned', result, flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env=child_env(),
        preexec_fn=interruptible,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = wait_for_url(proc)
    assert fetch(url).status == 200
    time.sleep(0.5)
    assert proc.poll() is None  # still serving: start() blocks in a script
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "returned None" in out


def test_start_in_the_background_returns_a_handle(cache_dir: Path, fetch):
    from daskperiment.board import start

    dashboard = start(str(cache_dir), port=0, block=False)
    try:
        assert URL.match(dashboard.url)
        assert fetch(dashboard.url + "experiments/other-exp").status == 200
        assert dashboard.url in dashboard._repr_html_()
    finally:
        dashboard.stop()
    with pytest.raises(OSError):
        fetch(dashboard.url)


def test_start_with_an_experiment_reads_its_store_read_only(cache_dir: Path, fetch):
    import daskperiment

    ex = daskperiment.Experiment(id="other-exp", backend=cache_dir / "other-exp")
    dashboard = ex.start_dashboard(port=0, block=False)
    try:
        page = fetch(dashboard.url + "api/experiments/other-exp/history").json()
        assert page["total"] == 2
        view = dashboard.server.catalog.view("other-exp")
        assert view.store.read_only and view.store is not ex.store
    finally:
        dashboard.stop()


def test_binds_to_loopback_by_default():
    import inspect

    from daskperiment.board import make_server, serve, start
    from daskperiment.board.cli import main

    for function in (make_server, serve, start):
        assert inspect.signature(function).parameters["host"].default == "127.0.0.1"
    assert (
        "default 127.0.0.1"
        in subprocess.run(
            [sys.executable, "-c", "from daskperiment.board import main; main(['--help'])"],
            env=child_env(),
            capture_output=True,
            text=True,
        ).stdout
    )
    assert main.__module__ == "daskperiment.board.cli"


def test_start_dashboard_in_a_jupyter_kernel_returns_at_once(cache_dir: Path, fetch):
    """A real IPython kernel: the cell calling start() finishes and the server keeps serving."""
    manager_module = pytest.importorskip("jupyter_client.manager")
    pytest.importorskip("ipykernel")
    manager, client = manager_module.start_new_kernel(kernel_name="python3", env=child_env())
    try:
        code = (
            "import pathlib, daskperiment\n"
            f"ex = daskperiment.Experiment(id='other-exp', backend=pathlib.Path({str(cache_dir / 'other-exp')!r}))\n"
            "board = ex.start_dashboard(port=0)\n"
            "print('URL', board.url)\n"
        )
        outputs: list[dict] = []
        reply = client.execute_interactive(code, timeout=60, output_hook=outputs.append)
        assert reply["content"]["status"] == "ok"
        text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
        url = URL.search(text.split("URL", 1)[1]).group(0)
        # served while the kernel idles, and only the experiment's own store is shown
        ids = [e["id"] for e in fetch(url + "api/experiments").json()["experiments"]]
        assert ids == ["other-exp"]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_start_with_an_experiment_without_trials_says_what_to_do(tmp_path: Path):
    import daskperiment
    from daskperiment.board import start
    from daskperiment.board.errors import BoardError

    ex = daskperiment.Experiment(id="empty-exp", backend=tmp_path / "empty-exp")
    with pytest.raises(BoardError, match="has no trials yet; run one"):
        start(ex, port=0, block=False)
    assert not (tmp_path / "empty-exp").exists()  # nothing was created


def test_a_store_url_is_served(serve):
    import numpy as np

    import daskperiment

    ex = daskperiment.Experiment(id="in-memory", backend="memory://board-url-test")
    x = ex.parameter("x")

    @ex.result
    def square(x):
        return float(np.square(x))

    for value in (1, 2, 3):
        ex.set_parameters(x=value)
        square(x).compute()
    by_url = serve("memory://board-url-test")
    page = by_url.get("/api/experiments/in-memory/history?sort=Result&order=desc").json()
    assert [row["id"] for row in page["rows"]] == [3, 2, 1]
    by_experiment = serve(ex)
    assert by_experiment.get("/api/experiments/in-memory/trials/2").json()["params"] == {"x": 2}


def test_without_bokeh_the_command_says_which_extra_to_install(cache_dir: Path):
    code = (
        "import sys\n"
        "sys.modules['bokeh'] = None  # as if the board extra were not installed\n"
        "from daskperiment.board import main\n"
        f"sys.exit(main(['--store', {str(cache_dir)!r}, '--port', '0']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "pip install 'daskperiment[board]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_importing_daskperiment_does_not_import_the_board_or_bokeh():
    code = (
        "import sys, daskperiment\n"
        "print(sorted(m for m in sys.modules if m.startswith(('bokeh', 'daskperiment.board'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stderr
