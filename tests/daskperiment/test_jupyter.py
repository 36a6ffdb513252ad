"""The quickstart notebook (``examples/quickstart.ipynb``) run in a real Jupyter kernel.

The notebook is the seed's walk-through, one code cell per step. It is executed once, with
nbclient in a real ipykernel started in a fresh directory, exactly as a user would run it;
the tests then read the cells' outputs as the notebook shows them: reprs and values
(``execute_result``), printed text (``stdout``) and the log lines (``stderr``), which must
appear under the cell that caused them, each exactly once.

After the notebook, a few more cells run in the same kernel (re-running a cell that defines a
step, then one more trial). A second, small notebook then opens the same experiment in a new
kernel, as after a kernel restart.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# one notebook run (two kernel starts): ~10 s, longer on a busy machine
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "examples" / "quickstart.ipynb"
KERNEL = "python3"

#: What the seed's ``ex`` cell shows.
EXPERIMENT_REPR = (
    "Experiment(id: quickstart_pj, trial_id: {n}, "
    "backend: LocalBackend('daskperiment_cache/quickstart_pj'))"
)
HISTORY_HEADER = "a b Result Result Type Success Finished Process Time Description"
CODE_NOW = """\
def prepare_data(a, b):
    return a + b

def calculate_score(s):
    for i in range(100):
        ex.save_metric('dummy_score', epoch=i, value=100 - np.random.random() * i)

    return 10 / s"""
CODE_TRIAL_1 = """\
def prepare_data(a, b):
    return a + b

def calculate_score(s):
    return 10 / s"""
PURITY_WARNING = (
    "Experiment step result is changed with the same input: "
    "(step: calculate_score, args: (7,), kwargs: {})"
)
#: Cells run in the notebook's kernel after the notebook itself (id -> source). A cell id of
#: the notebook stands for that cell's own source, run again.
EXTRA_CELLS: dict[str, str] = {
    "rerun-random-step": "random-step",
    "trial11": "s.compute(seed=1)",
    "same-code-record": (
        "ex.get_trial(10)['digests']['code'] == ex.get_trial(11)['digests']['code']"
    ),
    "same-instance": "ex_new is ex",
}
#: The notebook a user runs after restarting the kernel.
RESTORE_CELLS: dict[str, str] = {
    "reload": (
        "import daskperiment\n\nex_new = daskperiment.Experiment(id='quickstart_pj')\nex_new"
    ),
    "history-ids": "ex_new.get_history().index.tolist()",
    "code-1": "print(ex_new.get_code(trial_id=1))",
}

LOG_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[daskperiment\] "
    r"\[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] (.*)"
)
TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}"
#: The seed shows ``00:00:00.014183``; pandas >= 2 writes ``0 days 00:00:00.014183...``.
DURATION = r"(0 days )?\d\d:\d\d:\d\d\.\d+"
FLOAT = r"\d+\.\d{6}"


# ---------------------------------------------------------------------------------------
# Running the notebooks
# ---------------------------------------------------------------------------------------


@dataclass
class Executed:
    """The executed cells (by id) of the quickstart notebook, the extra cells and the
    restore notebook, and the directory the kernels ran in."""

    cells: dict[str, Any]
    extra: dict[str, Any]
    restored: dict[str, Any]
    directory: Path


def _jupyter() -> tuple[Any, Any]:
    """nbformat and nbclient, or a failure saying how to install them (never a skip)."""
    try:
        import ipykernel  # noqa: F401 - the kernel the notebooks run in
        import nbclient
        import nbformat
    except ImportError as exc:
        pytest.fail(
            f"running notebooks needs ipykernel, nbclient and nbformat ({exc}); "
            "install the test extra: pip install -e '.[test]'"
        )
    return nbformat, nbclient


def _kernel_env() -> dict[str, str]:
    """The kernel's environment: this checkout importable first, as in the other tests."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _client(nbclient: Any, notebook: Any, directory: Path) -> Any:
    # allow_errors: a cell that raises is kept with its error output, so every test reports
    # on its own cell instead of the whole module failing at the first error.
    return nbclient.NotebookClient(
        notebook,
        timeout=180,
        kernel_name=KERNEL,
        allow_errors=True,
        resources={"metadata": {"path": str(directory)}},
    )


def _start_failed(exc: Exception) -> None:
    pytest.fail(
        f"could not start the Jupyter kernel {KERNEL!r} ({type(exc).__name__}: {exc}); "
        "it comes with ipykernel: pip install -e '.[test]'"
    )


def _run_quickstart(nbformat: Any, nbclient: Any, directory: Path) -> tuple[dict, dict]:
    """Execute the quickstart notebook, then EXTRA_CELLS, in one kernel."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    cells = {cell.id: cell for cell in notebook.cells if cell.cell_type == "code"}
    extra = {
        name: nbformat.v4.new_code_cell(cells[source].source if source in cells else source)
        for name, source in EXTRA_CELLS.items()
    }
    client = _client(nbclient, notebook, directory)
    with contextlib.ExitStack() as kernel:
        try:
            kernel.enter_context(client.setup_kernel(env=_kernel_env()))
        except Exception as exc:  # whatever way the kernel fails to start
            _start_failed(exc)
        # nbclient writes each executed cell back into the notebook at its index
        notebook.cells.extend(extra.values())
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)
    return cells, extra


def _run_restore(nbformat: Any, nbclient: Any, directory: Path) -> dict:
    """Execute RESTORE_CELLS in a new kernel in the same directory."""
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in RESTORE_CELLS.values()]
    )
    try:
        _client(nbclient, notebook, directory).execute(env=_kernel_env())
    except Exception as exc:  # cells may raise (allow_errors): only the kernel can fail here
        _start_failed(exc)
    return dict(zip(RESTORE_CELLS, notebook.cells, strict=True))


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Executed]:
    nbformat, nbclient = _jupyter()
    directory = tmp_path_factory.mktemp("notebook")
    cells, extra = _run_quickstart(nbformat, nbclient, directory)
    restored = _run_restore(nbformat, nbclient, directory)
    yield Executed(cells, extra, restored, directory)


# ---------------------------------------------------------------------------------------
# Reading outputs
# ---------------------------------------------------------------------------------------


def stream(cell: Any, name: str) -> str:
    """Everything the cell wrote to ``stdout`` or ``stderr``."""
    return "".join(
        out.text for out in cell.outputs if out.output_type == "stream" and out.name == name
    )


def shown(cell: Any) -> str:
    """The ``text/plain`` of the cell's value (what Jupyter shows as ``Out[n]``)."""
    results = [out for out in cell.outputs if out.output_type == "execute_result"]
    assert len(results) == 1, f"expected one value shown, got outputs {describe(cell)}"
    return results[0].data["text/plain"]


def error(cell: Any) -> Any | None:
    found = [out for out in cell.outputs if out.output_type == "error"]
    return found[0] if found else None


def describe(cell: Any) -> str:
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(f"[{out.name}] {out.text!r}")
        elif out.output_type == "error":
            parts.append(f"[error] {out.ename}: {out.evalue}")
        else:
            parts.append(f"[{out.output_type}] {sorted(out.get('data', {}))}")
    return f"cell {cell.source!r}:\n  " + "\n  ".join(parts or ["(no output)"])


def log(cell: Any) -> list[tuple[str, str]]:
    """The log lines the cell shows on stderr as (level, message); asserts that stderr holds
    nothing but daskperiment log lines, each on a line of its own."""
    records = []
    for line in stream(cell, "stderr").splitlines():
        found = LOG_LINE.fullmatch(line)
        assert found, f"not a daskperiment log line: {line!r}\n{describe(cell)}"
        records.append((found.group(1), found.group(2)))
    return records


def assert_log(cell: Any, expected: list[tuple[str, str]]) -> None:
    """The cell's log is exactly ``expected``: (level, regular expression) per line."""
    got = log(cell)
    ok = len(got) == len(expected) and all(
        level == want_level and re.fullmatch(pattern, message)
        for (level, message), (want_level, pattern) in zip(got, expected, strict=False)
    )
    assert ok, (
        "log lines differ\nexpected:\n"
        + "\n".join(f"  [{lv}] {readable(p)}" for lv, p in expected)
        + "\ngot:\n"
        + "\n".join(f"  [{lv}] {m}" for lv, m in got)
    )


def readable(pattern: str) -> str:
    """A pattern without re.escape's backslashes, to read like the log line it matches."""
    return re.sub(r"\\(\W)", r"\1", pattern)


def info(message: str) -> tuple[str, str]:
    return ("INFO", re.escape(message))


def warning(message: str) -> tuple[str, str]:
    return ("WARNING", re.escape(message))


GENERATED_SEED = ("INFO", r"Random seed is not provided, initialized with generated seed: \d+")
GIVEN_SEED_1 = info("Random seed is initialized with given seed: 1")


def trial_log(n: int, seed: tuple[str, str] = GENERATED_SEED, *middle: tuple[str, str]) -> list:
    return [
        info(f"Started Experiment (trial id={n})"),
        seed,
        *middle,
        info(f"Finished Experiment (trial id={n})"),
    ]


def table(text: str) -> tuple[str, dict[int, str]]:
    """The header and the rows (by trial id) of a DataFrame as printed, pandas wrapping its
    columns into blocks as in the seed. The header's words are joined with one space (a
    column name may hold a space, and pandas may put only one space between columns); a
    row's parts are joined with one space."""
    header: list[str] = []
    rows: dict[int, str] = {}
    for block in text.split("\n\n"):
        lines = block.splitlines()
        header += lines[0].strip(" \\").split()
        for line in lines[1:]:
            found = re.match(r"(\d+)\s+(.*?)[\s\\]*$", line)
            if found:  # not the index name's line ("Trial ID")
                key = int(found.group(1))
                rows[key] = f"{rows[key]} {found.group(2)}" if key in rows else found.group(2)
    return " ".join(header), rows


# ---------------------------------------------------------------------------------------
# The seed, cell by cell
# ---------------------------------------------------------------------------------------


def test_every_cell_runs_and_only_the_failing_trial_raises(executed: Executed) -> None:
    failed = {name: error(cell) for name, cell in executed.cells.items() if error(cell)}
    assert list(failed) == ["trial3"], {n: f"{e.ename}: {e.evalue}" for n, e in failed.items()}
    assert not [name for name, cell in executed.extra.items() if error(cell)]
    assert not [name for name, cell in executed.restored.items() if error(cell)]


def test_reprs(executed: Executed) -> None:
    cells = executed.cells
    assert shown(cells["create"]) == EXPERIMENT_REPR.format(n=0)
    assert shown(cells["parameters"]) == "Parameter(a: Undefined)"
    assert re.fullmatch(r"Delayed\('calculate_score-[0-9a-f]+'\)", shown(cells["steps"]))


def test_cells_without_a_trial_log_nothing(executed: Executed) -> None:
    quiet = [
        "create",
        "parameters",
        "steps",
        "visualize",
        "parameters-1",
        "parameters-2",
        "history-2",
        "history-3",
        "persisted-4",
        "persisted-5",
        "load-metric-6",
        "load-metric-6-7",
        "code-now",
        "code-1",
        "restore",
    ]
    noisy = {name: stream(executed.cells[name], "stderr") for name in quiet}
    assert {name: text for name, text in noisy.items() if text} == {}


def test_visualize_shows_the_graph_and_writes_a_png(executed: Executed) -> None:
    images = [
        out for out in executed.cells["visualize"].outputs if "image/png" in out.get("data", {})
    ]
    assert len(images) == 1, describe(executed.cells["visualize"])
    assert base64.b64decode(images[0].data["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")
    # dask's default file name, in the notebook's directory
    assert (executed.directory / "mydask.png").read_bytes().startswith(b"\x89PNG")


def test_first_trials_log_and_return_their_result(executed: Executed) -> None:
    cells = executed.cells
    assert_log(cells["trial1"], trial_log(1))
    assert shown(cells["trial1"]) == repr(10 / 3)
    assert_log(cells["trial2"], trial_log(2))
    assert shown(cells["trial2"]) == "2.5"


def test_get_parameters(executed: Executed) -> None:
    assert shown(executed.cells["parameters-1"]) == "{'a': 1, 'b': 2}"
    assert shown(executed.cells["parameters-2"]) == "{'a': 1, 'b': 3}"


def test_history_after_two_trials(executed: Executed) -> None:
    header, rows = table(shown(executed.cells["history-2"]))
    assert header == HISTORY_HEADER
    assert list(rows) == [1, 2]
    assert re.fullmatch(
        rf"1\s+2\s+3\.333333\s+<class 'float'>\s+True\s+{TIMESTAMP} {DURATION}\s+NaN", rows[1]
    ), rows[1]
    assert re.fullmatch(
        rf"1\s+3\s+2\.500000\s+<class 'float'>\s+True\s+{TIMESTAMP} {DURATION}\s+NaN", rows[2]
    ), rows[2]


def test_failed_trial_raises_in_the_cell_and_is_in_the_history(executed: Executed) -> None:
    cell = executed.cells["trial3"]
    failure = error(cell)
    assert (failure.ename, failure.evalue) == ("ZeroDivisionError", "division by zero")
    last = re.sub(r"\x1b\[[0-9;]*m", "", failure.traceback[-1])  # without the colours
    assert last == "ZeroDivisionError: division by zero"
    # the trial started, then failed: a "Failed" line (as sweeps log it), no "Finished" line
    failed = warning("Failed Experiment (trial id=3): ZeroDivisionError(division by zero)")
    assert_log(cell, [info("Started Experiment (trial id=3)"), GENERATED_SEED, failed])
    header, rows = table(shown(executed.cells["history-3"]))
    assert header == HISTORY_HEADER
    assert list(rows) == [1, 2, 3]
    assert re.fullmatch(
        rf"1\s+-1\s+NaN\s+None\s+False\s+{TIMESTAMP} {DURATION}\s+"
        r"ZeroDivisionError\(division by zero\)",
        rows[3],
    ), rows[3]
    assert rows[1].endswith("NaN") and rows[2].endswith("NaN")


def test_redefining_a_step_in_a_cell_logs_the_code_diff(executed: Executed) -> None:
    assert_log(
        executed.cells["persist"],
        [
            warning("Code context has been changed: prepare_data"),
            warning("@@ -1,3 +1,3 @@"),
            warning("-@ex"),
            warning("+@ex.persist"),
            warning(" def prepare_data(a, b):"),
            warning("     return a + b"),
        ],
    )
    assert "execute_result" not in [out.output_type for out in executed.cells["persist"].outputs]


def test_trials_with_the_persisted_step(executed: Executed) -> None:
    cells = executed.cells
    assert_log(cells["trial4"], trial_log(4))
    assert shown(cells["trial4"]) == repr(10 / 3)
    assert_log(cells["trial5"], trial_log(5))
    assert shown(cells["trial5"]) == "2.0"
    assert shown(cells["persisted-4"]) == "3"
    assert shown(cells["persisted-5"]) == "5"


def test_the_metric_step_redefinition_logs_its_new_lines(executed: Executed) -> None:
    got = log(executed.cells["metric-step"])
    assert got[0] == ("WARNING", "Code context has been changed: calculate_score")
    assert {level for level, _ in got} == {"WARNING"}
    added = [message for _, message in got if message.startswith("+")]
    assert added == [
        "+    for i in range(100):",
        "+        ex.save_metric('dummy_score', epoch=i, value=100 - np.random.random() * i)",
        "+",
    ]


def test_metric_trials_and_load_metric(executed: Executed) -> None:
    cells = executed.cells
    assert_log(cells["trial6"], trial_log(6))
    assert shown(cells["trial6"]) == repr(10 / 3)
    assert_log(cells["trial7"], trial_log(7))
    assert shown(cells["trial7"]) == repr(10 / 7)

    one = shown(cells["load-metric-6"]).splitlines()
    assert one[0].split() == ["Trial", "ID", "6"]
    assert len(one) == 6  # head(): five epochs
    assert re.fullmatch(r"0\s+100\.000000", one[1])
    for epoch, line in enumerate(one[1:]):
        assert re.fullmatch(rf"{epoch}\s+{FLOAT}", line), line

    both = shown(cells["load-metric-6-7"]).splitlines()
    assert both[0].split() == ["Trial", "ID", "6", "7"]
    assert len(both) == 6
    assert re.fullmatch(r"0\s+100\.000000\s+100\.000000", both[1])
    for epoch, line in enumerate(both[1:]):
        assert re.fullmatch(rf"{epoch}\s+{FLOAT}\s+{FLOAT}", line), line
    # trial 6's column is the same series in both
    assert [line.split()[1] for line in both[1:]] == [line.split()[1] for line in one[1:]]
    # two unseeded trials drew different random metrics
    assert [line.split()[1] for line in both[2:]] != [line.split()[2] for line in both[2:]]


def test_get_code_shows_the_cell_defined_steps(executed: Executed) -> None:
    assert stream(executed.cells["code-now"], "stdout").rstrip("\n") == CODE_NOW
    assert stream(executed.cells["code-1"], "stdout").rstrip("\n") == CODE_TRIAL_1


def test_purity_warnings_sequence(executed: Executed) -> None:
    cells = executed.cells
    got = log(cells["random-step"])
    assert got[0] == ("WARNING", "Code context has been changed: calculate_score")
    assert [m for _, m in got if m[:1] in "+-" and not m.startswith(("+++", "---"))] == [
        "-    return 10 / s",
        "+    return 10 / s + np.random.random()",
    ]
    # no seed: the step's output changed for the same input
    assert_log(cells["trial8"], trial_log(8, GENERATED_SEED, warning(PURITY_WARNING)))
    # seed 1: still different from the unseeded output
    assert_log(cells["trial9"], trial_log(9, GIVEN_SEED_1, warning(PURITY_WARNING)))
    # seed 1 again: same output, no warning
    assert_log(cells["trial10"], trial_log(10, GIVEN_SEED_1))
    assert shown(cells["trial9"]) == shown(cells["trial10"]) != shown(cells["trial8"])


def test_history_of_every_trial(executed: Executed) -> None:
    header, rows = table(shown(executed.cells["restore"]))
    assert header == HISTORY_HEADER
    assert list(rows) == list(range(1, 11))
    success = [re.search(rf"(True|False)\s+{TIMESTAMP}", rows[n]).group(1) for n in rows]
    assert success == ["True", "True", "False"] + ["True"] * 7


# ---------------------------------------------------------------------------------------
# Beyond the seed: re-running cells, restarting the kernel
# ---------------------------------------------------------------------------------------


def test_rerunning_a_defining_cell_with_unchanged_code_logs_nothing(executed: Executed) -> None:
    cell = executed.extra["rerun-random-step"]
    assert stream(cell, "stderr") == "", describe(cell)
    # the next trial sees the same code: neither a code change nor a purity warning
    assert_log(executed.extra["trial11"], trial_log(11, GIVEN_SEED_1))
    assert shown(executed.extra["trial11"]) == shown(executed.cells["trial10"])
    assert shown(executed.extra["same-code-record"]) == "True"


def test_same_id_in_the_same_kernel_is_the_same_experiment(executed: Executed) -> None:
    assert shown(executed.extra["same-instance"]) == "True"


def test_a_new_kernel_loads_the_experiment(executed: Executed) -> None:
    reload = executed.restored["reload"]
    assert_log(
        reload,
        [
            info(
                "Loaded Experiment(id: quickstart_pj, trial_id: 11) "
                "from path=daskperiment_cache/quickstart_pj"
            )
        ],
    )
    assert shown(reload) == EXPERIMENT_REPR.format(n=11)
    assert shown(executed.restored["history-ids"]) == repr(list(range(1, 12)))
    # the steps' code, captured from the first kernel's cells, read back from the store
    assert stream(executed.restored["code-1"], "stdout").rstrip("\n") == CODE_TRIAL_1


def test_visualize_outside_jupyter_names_the_steps_and_parameters(cells: Any) -> None:
    ns = cells.run(
        """
        import daskperiment

        ex = daskperiment.Experiment(id='graph_pj')
        a = ex.parameter('a')
        b = ex.parameter('b')

        @ex
        def prepare_data(a, b):
            return a + b

        @ex.result
        def calculate_score(s):
            return 10 / s

        s = calculate_score(prepare_data(a, b))
        s.visualize(filename='graph.png')
        s.visualize(filename='graph.svg')
        """
    )
    assert Path("graph.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    labels = re.findall(r"<text[^>]*>([^<]*)</text>", Path("graph.svg").read_text())
    assert sorted(labels) == [
        "calculate_score",
        "parameter&#45;a",
        "parameter&#45;b",
        "prepare_data",
    ]
    assert ns["ex"].trial_id == 0  # drawing the graph runs no trial
