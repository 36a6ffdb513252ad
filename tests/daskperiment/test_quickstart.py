"""The seed's quickstart (``shared/seed/quickstart.txt``), cell by cell, asserting what it shows.

The scenario runs once per module in its own directory, cell by cell, like a notebook session:
each test asks for the cells up to the one it checks (``quickstart.upto(name)``), so any test
can run alone and a failing cell is reported by every test that depends on it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

# Each cell of the seed, in order. ``_`` holds what the seed shows as the cell's output.
CELLS: dict[str, str] = {
    "create": """
        import numpy as np
        import daskperiment

        ex = daskperiment.Experiment(id='quickstart_pj')
        _ = repr(ex)
        """,
    "parameters": """
        a = ex.parameter('a')
        b = ex.parameter('b')
        _ = repr(a)
        """,
    "steps": """
        @ex
        def prepare_data(a, b):
            return a + b


        @ex.result
        def calculate_score(s):
            return 10 / s


        d = prepare_data(a, b)
        s = calculate_score(d)
        """,
    "trial1": """
        ex.set_parameters(a=1, b=2)
        _ = s.compute()
        """,
    "trial2": """
        ex.set_parameters(b=3)
        _ = s.compute()
        """,
    "after_trial2": """
        _ = {
            'repr': repr(ex),
            'parameters': ex.get_parameters(),
            'parameters_1': ex.get_parameters(trial_id=1),
            'parameters_2': ex.get_parameters(trial_id=2),
            'history': ex.get_history(),
        }
        """,
    "trial3": """
        ex.set_parameters(a=1, b=-1)
        _ = s.compute()
        """,
    "after_trial3": """
        _ = {'trial_id': ex.trial_id, 'history': ex.get_history()}
        """,
    "persist": """
        @ex.persist
        def prepare_data(a, b):
            return a + b


        d = prepare_data(a, b)
        s = calculate_score(d)
        """,
    "trial4": """
        ex.set_parameters(a=1, b=2)
        _ = s.compute()
        """,
    "trial5": """
        ex.set_parameters(a=3, b=2)
        _ = s.compute()
        """,
    "metric_steps": """
        @ex.result
        def calculate_score(s):
            for i in range(100):
                ex.save_metric('dummy_score', epoch=i, value=100 - np.random.random() * i)

            return 10 / s


        d = prepare_data(a, b)
        s = calculate_score(d)
        """,
    "trial6": """
        ex.set_parameters(a=1, b=2)
        _ = s.compute()
        """,
    "trial7": """
        ex.set_parameters(a=3, b=4)
        _ = s.compute()
        """,
    "code_now": """
        _ = ex.get_code()
        """,
    "random_step": """
        @ex.result
        def calculate_score(s):
            for i in range(100):
                ex.save_metric('dummy_score', epoch=i, value=100 - np.random.random() * i)

            return 10 / s + np.random.random()


        d = prepare_data(a, b)
        s = calculate_score(d)
        """,
    "trial8": """
        _ = s.compute()
        """,
    "trial9": """
        _ = s.compute(seed=1)
        """,
    "trial10": """
        _ = s.compute(seed=1)
        """,
}

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

HISTORY_COLUMNS = [
    "a",
    "b",
    "Result",
    "Result Type",
    "Success",
    "Finished",
    "Process Time",
    "Description",
]
PURITY_WARNING = (
    "Experiment step result is changed with the same input: "
    "(step: calculate_score, args: (7,), kwargs: {})"
)


@dataclass
class Outcome:
    """What one cell did: its shown value, the log records, the exception it raised."""

    value: Any = None
    error: BaseException | None = None
    log: list[tuple[str, str]] = field(default_factory=list)  # (level name, message)

    def messages(self, level: str | None = None) -> list[str]:
        return [m for lv, m in self.log if level is None or lv == level]


class Quickstart:
    """Runs the seed's cells in order, once each, in one directory."""

    def __init__(self, directory: Path, helpers: Any) -> None:
        self.directory = directory
        self.helpers = helpers
        self.cells = helpers.Cells(directory)
        self.outcomes: dict[str, Outcome] = {}

    @property
    def ex(self) -> Any:
        return self.cells.ns["ex"]

    def upto(self, name: str) -> Outcome:
        """Run every cell up to and including ``name`` (those not run yet); its outcome."""
        for cell, source in CELLS.items():
            if cell not in self.outcomes:
                self.outcomes[cell] = self._run(cell, source)
            if cell == name:
                return self.outcomes[cell]
        raise KeyError(name)

    def _run(self, cell: str, source: str) -> Outcome:
        for earlier, outcome in self.outcomes.items():
            # a cell that failed unexpectedly makes everything after it meaningless
            if outcome.error is not None and earlier != "trial3":
                pytest.fail(f"cell {earlier!r} failed earlier: {outcome.error!r}")
        outcome = Outcome()
        cwd = os.getcwd()
        os.chdir(self.directory)
        try:
            with self.helpers.capture_log() as log:
                try:
                    self.cells.run(source)
                    outcome.value = self.cells.ns.pop("_", None)
                except Exception as exc:  # kept for the tests to inspect
                    outcome.error = exc
            outcome.log = [(r.levelname, r.getMessage()) for r in log.records]
        finally:
            os.chdir(cwd)
        return outcome


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory, helpers: Any) -> Iterator[Quickstart]:
    yield Quickstart(tmp_path_factory.mktemp("quickstart"), helpers)


def ok(outcome: Outcome) -> Outcome:
    """The outcome, after asserting the cell raised nothing."""
    if outcome.error is not None:
        raise AssertionError(f"cell raised {outcome.error!r}") from outcome.error
    return outcome


# --- creating the experiment --------------------------------------------------------------


def test_experiment_repr(quickstart: Quickstart) -> None:
    assert ok(quickstart.upto("create")).value == (
        "Experiment(id: quickstart_pj, trial_id: 0, "
        "backend: LocalBackend('daskperiment_cache/quickstart_pj'))"
    )
    assert quickstart.ex.trial_id == 0


def test_parameter_repr(quickstart: Quickstart) -> None:
    assert ok(quickstart.upto("parameters")).value == "Parameter(a: Undefined)"


def test_steps_build_a_dask_delayed_graph(quickstart: Quickstart) -> None:
    from dask.delayed import Delayed

    ok(quickstart.upto("steps"))
    ns = quickstart.cells.ns
    assert isinstance(ns["a"], Delayed)
    assert isinstance(ns["d"], Delayed)
    assert isinstance(ns["s"], Delayed)
    # building the graph runs nothing
    assert quickstart.ex.trial_id == 0


def test_visualize(quickstart: Quickstart, tmp_path: Path) -> None:
    pytest.importorskip("graphviz")
    ok(quickstart.upto("steps"))
    target = tmp_path / "graph.png"
    quickstart.cells.ns["s"].visualize(filename=str(target))
    assert target.stat().st_size > 0


# --- trials -----------------------------------------------------------------------------


def test_first_trial(quickstart: Quickstart) -> None:
    outcome = ok(quickstart.upto("trial1"))
    assert outcome.value == pytest.approx(3.3333333333)
    info = outcome.messages("INFO")
    assert info[0] == "Started Experiment (trial id=1)"
    assert info[-1] == "Finished Experiment (trial id=1)"
    assert outcome.messages("WARNING") == []


def test_second_trial_keeps_unnamed_parameters(quickstart: Quickstart) -> None:
    outcome = ok(quickstart.upto("trial2"))
    assert outcome.value == 2.5
    assert "Started Experiment (trial id=2)" in outcome.messages("INFO")
    assert outcome.messages("INFO")[-1] == "Finished Experiment (trial id=2)"
    state = ok(quickstart.upto("after_trial2")).value
    assert state["repr"] == (
        "Experiment(id: quickstart_pj, trial_id: 2, "
        "backend: LocalBackend('daskperiment_cache/quickstart_pj'))"
    )
    assert state["parameters"] == {"a": 1, "b": 3}


def test_get_parameters(quickstart: Quickstart) -> None:
    state = ok(quickstart.upto("after_trial2")).value
    assert state["parameters_1"] == {"a": 1, "b": 2}
    assert state["parameters_2"] == {"a": 1, "b": 3}
    # still answered later, from the record
    assert quickstart.ex.get_parameters(trial_id=1) == {"a": 1, "b": 2}


def test_history_after_two_trials(quickstart: Quickstart) -> None:
    history = ok(quickstart.upto("after_trial2")).value["history"]
    assert isinstance(history, pd.DataFrame)
    assert list(history.columns) == HISTORY_COLUMNS
    assert list(history.index) == [1, 2]
    assert history.index.name == "Trial ID"
    assert history["a"].tolist() == [1, 1]
    assert history["b"].tolist() == [2, 3]
    assert history["Result"].tolist() == pytest.approx([10 / 3, 2.5])
    assert [str(t) for t in history["Result Type"]] == ["<class 'float'>"] * 2
    assert history["Success"].tolist() == [True, True]
    assert history["Description"].isna().all()
    assert pd.api.types.is_datetime64_any_dtype(history["Finished"])
    assert pd.api.types.is_timedelta64_dtype(history["Process Time"])
    assert (history["Process Time"] > pd.Timedelta(0)).all()
    finished = history["Finished"]
    now = pd.Timestamp.now(tz=finished.dt.tz)
    assert ((now - finished) < pd.Timedelta(minutes=10)).all()
    assert finished.is_monotonic_increasing


def test_failed_trial_is_recorded_and_reraised(quickstart: Quickstart) -> None:
    outcome = quickstart.upto("trial3")
    assert isinstance(outcome.error, ZeroDivisionError)
    assert str(outcome.error) == "division by zero"
    assert "Started Experiment (trial id=3)" in outcome.messages("INFO")
    state = ok(quickstart.upto("after_trial3")).value
    assert state["trial_id"] == 3
    history = state["history"]
    assert list(history.columns) == HISTORY_COLUMNS
    assert list(history.index) == [1, 2, 3]
    failed = history.loc[3]
    assert failed["a"] == 1 and failed["b"] == -1
    assert math.isnan(failed["Result"])
    assert failed["Result Type"] is None
    assert not failed["Success"]
    assert failed["Description"] == "ZeroDivisionError(division by zero)"
    assert isinstance(failed["Finished"], pd.Timestamp)
    assert isinstance(failed["Process Time"], pd.Timedelta)
    assert history.loc[[1, 2], "Description"].isna().all()
    # shown as in the seed
    text = history.to_string()
    assert re.search(r"^3\s+1\s+-1\s+NaN\s+None\s+False\s", text, re.M), text
    assert "ZeroDivisionError(division by zero)" in text


# --- intermediate results ---------------------------------------------------------------


def test_persist_redefinition_logs_the_code_diff(quickstart: Quickstart) -> None:
    outcome = ok(quickstart.upto("persist"))
    assert outcome.messages("WARNING") == [
        "Code context has been changed: prepare_data",
        "@@ -1,3 +1,3 @@",
        "-@ex",
        "+@ex.persist",
        " def prepare_data(a, b):",
        "     return a + b",
    ]


def test_trials_with_persisted_step(quickstart: Quickstart) -> None:
    four = ok(quickstart.upto("trial4"))
    assert four.value == pytest.approx(10 / 3)
    assert four.messages("INFO")[-1] == "Finished Experiment (trial id=4)"
    five = ok(quickstart.upto("trial5"))
    assert five.value == 2.0
    assert five.messages("INFO")[-1] == "Finished Experiment (trial id=5)"
    # the unchanged step gives the same output for the same input: no purity warning
    assert four.messages("WARNING") == five.messages("WARNING") == []


def test_get_persisted(quickstart: Quickstart) -> None:
    ok(quickstart.upto("trial5"))
    ex = quickstart.ex
    assert ex.get_persisted("prepare_data", trial_id=4) == 3
    assert ex.get_persisted("prepare_data", trial_id=5) == 5


def test_get_persisted_of_a_step_that_was_not_persisted(quickstart: Quickstart) -> None:
    ok(quickstart.upto("trial5"))
    with pytest.raises(KeyError, match="calculate_score"):
        quickstart.ex.get_persisted("calculate_score", trial_id=4)
    with pytest.raises(KeyError):
        # trial 1 ran prepare_data before it was persisted
        quickstart.ex.get_persisted("prepare_data", trial_id=1)


# --- metrics ----------------------------------------------------------------------------


def test_metric_trials(quickstart: Quickstart) -> None:
    six = ok(quickstart.upto("trial6"))
    assert six.value == pytest.approx(10 / 3)
    assert six.messages("INFO")[-1] == "Finished Experiment (trial id=6)"
    seven = ok(quickstart.upto("trial7"))
    assert seven.value == pytest.approx(10 / 7)
    assert seven.messages("INFO")[-1] == "Finished Experiment (trial id=7)"


def test_load_metric_of_one_trial(quickstart: Quickstart) -> None:
    ok(quickstart.upto("trial7"))
    score = quickstart.ex.load_metric("dummy_score", trial_id=6)
    assert isinstance(score, pd.DataFrame)
    assert list(score.columns) == [6]
    assert score.columns.name == "Trial ID"
    assert list(score.index) == list(range(100))
    values = score[6].to_numpy()
    assert values[0] == 100.0
    assert (values <= 100.0).all()
    assert (values >= 100.0 - np.arange(100)).all()
    assert (values[1:] < 100.0).any()
    head = score.head()
    assert head.shape == (5, 1)
    assert head.to_string().splitlines()[0].split() == ["Trial", "ID", "6"]


def test_load_metric_of_several_trials(quickstart: Quickstart) -> None:
    ok(quickstart.upto("trial7"))
    ex = quickstart.ex
    both = ex.load_metric("dummy_score", trial_id=[6, 7])
    assert list(both.columns) == [6, 7]
    assert both.columns.name == "Trial ID"
    assert both.shape == (100, 2)
    assert both.iloc[0].tolist() == [100.0, 100.0]
    np.testing.assert_array_equal(both[6].to_numpy(), ex.load_metric("dummy_score", 6)[6])
    # unseeded trials draw their own seeds: the random metric differs
    assert not np.array_equal(both[6].to_numpy(), both[7].to_numpy())
    assert ex.get_metric_keys(6) == ["dummy_score"]
    assert ex.get_metric_keys(1) == []


# --- code context -----------------------------------------------------------------------


def test_get_code_now_and_of_the_first_trial(quickstart: Quickstart) -> None:
    code_now = ok(quickstart.upto("code_now")).value
    assert code_now.rstrip("\n") == CODE_NOW
    assert quickstart.ex.get_code(trial_id=1).rstrip("\n") == CODE_TRIAL_1
    assert quickstart.ex.get_code(trial_id=7).rstrip("\n") == CODE_NOW


# --- purity and randomness --------------------------------------------------------------


def test_changed_result_with_the_same_input_warns(quickstart: Quickstart) -> None:
    eight = ok(quickstart.upto("trial8"))
    info = eight.messages("INFO")
    assert any(
        re.fullmatch(r"Random seed is not provided, initialized with generated seed: \d+", m)
        for m in info
    ), info
    assert PURITY_WARNING in eight.messages("WARNING")
    assert info[-1] == "Finished Experiment (trial id=8)"


def test_seeded_trial_differs_from_the_unseeded_one(quickstart: Quickstart) -> None:
    nine = ok(quickstart.upto("trial9"))
    assert "Random seed is initialized with given seed: 1" in nine.messages("INFO")
    assert PURITY_WARNING in nine.messages("WARNING")
    assert nine.messages("INFO")[-1] == "Finished Experiment (trial id=9)"


def test_same_seed_same_result_no_warning(quickstart: Quickstart) -> None:
    nine = ok(quickstart.upto("trial9"))
    ten = ok(quickstart.upto("trial10"))
    assert "Random seed is initialized with given seed: 1" in ten.messages("INFO")
    assert ten.messages("WARNING") == []
    assert ten.messages("INFO")[-1] == "Finished Experiment (trial id=10)"
    assert ten.value == nine.value
    assert ten.value != ok(quickstart.upto("trial8")).value
    history = quickstart.ex.get_history()
    assert history.loc[9, "Result"] == history.loc[10, "Result"] == ten.value
    verbose = quickstart.ex.get_history(verbose=True)
    assert verbose.loc[9, "Seed"] == verbose.loc[10, "Seed"] == 1
    assert verbose.loc[8, "Seed"] != 1


def test_every_trial_is_in_the_history(quickstart: Quickstart) -> None:
    ok(quickstart.upto("trial10"))
    history = quickstart.ex.get_history()
    assert list(history.index) == list(range(1, 11))
    assert list(history.columns) == HISTORY_COLUMNS
    assert history["Success"].tolist() == [True, True, False] + [True] * 7
    assert quickstart.ex.trial_id == 10


# --- state in a new process -------------------------------------------------------------

RESTORE_SCRIPT = """
import daskperiment

ex_new = daskperiment.Experiment(id='quickstart_pj')
history = ex_new.get_history()
report({
    'trial_id': ex_new.trial_id,
    'repr': repr(ex_new),
    'index': history.index.tolist(),
    'columns': history.columns.tolist(),
    'results': history['Result'].tolist(),
    'success': history['Success'].tolist(),
    'description': history['Description'].tolist(),
    'metric_6': ex_new.load_metric('dummy_score', trial_id=6)[6].tolist(),
    'persisted_4': ex_new.get_persisted('prepare_data', trial_id=4),
    'persisted_5': ex_new.get_persisted('prepare_data', trial_id=5),
    'code_1': ex_new.get_code(trial_id=1),
    'code_7': ex_new.get_code(trial_id=7),
    'parameters_2': ex_new.get_parameters(trial_id=2),
})
"""


def test_new_process_sees_every_trial(quickstart: Quickstart) -> None:
    ok(quickstart.upto("trial10"))
    run = (
        quickstart.helpers.Python(quickstart.directory)
        .run(RESTORE_SCRIPT, name="restore.py")
        .check()
    )
    state = run.result()
    ex = quickstart.ex
    history = ex.get_history()
    assert state["trial_id"] == 10
    assert state["repr"] == (
        "Experiment(id: quickstart_pj, trial_id: 10, "
        "backend: LocalBackend('daskperiment_cache/quickstart_pj'))"
    )
    assert state["index"] == list(range(1, 11))
    assert state["columns"] == HISTORY_COLUMNS
    assert state["success"] == history["Success"].tolist()
    assert state["results"][:2] == pytest.approx([10 / 3, 2.5])
    assert state["results"][9] == history.loc[10, "Result"]
    assert state["description"][2] == "ZeroDivisionError(division by zero)"
    assert state["metric_6"] == ex.load_metric("dummy_score", trial_id=6)[6].tolist()
    assert (state["persisted_4"], state["persisted_5"]) == (3, 5)
    assert state["code_1"].rstrip("\n") == CODE_TRIAL_1
    assert state["code_7"].rstrip("\n") == CODE_NOW
    assert state["parameters_2"] == {"a": 1, "b": 3}
    loaded = [line for line in run.lines if "Loaded Experiment(" in line]
    assert len(loaded) == 1, run.describe()
    assert "[INFO] Loaded Experiment(id: quickstart_pj, trial_id: 10" in loaded[0]


# --- the default log output, as a user sees it --------------------------------------------

LOG_SCRIPT = """
import daskperiment

ex = daskperiment.Experiment(id='log_pj')
a = ex.parameter('a')


@ex.result
def double(a):
    return 2 * a


ex.set_parameters(a=1)
double(a).compute(seed=1)
"""

LOG_LINE = r"(\d{4}-\d\d-\d\d[ T])?\d\d:\d\d:\d\d[.,\d]* \[daskperiment\] \[{level}\] {message}"


def log_line(level: str, message: str) -> str:
    return LOG_LINE.replace("{level}", level).replace("{message}", re.escape(message))


def test_default_log_format(python: Any) -> None:
    run = python.run(LOG_SCRIPT).check()
    for message in (
        "Started Experiment (trial id=1)",
        "Random seed is initialized with given seed: 1",
        "Finished Experiment (trial id=1)",
    ):
        matching = [line for line in run.lines if re.fullmatch(log_line("INFO", message), line)]
        # exactly once: importing and creating an experiment never duplicates handlers
        assert len(matching) == 1, f"{message!r} printed {len(matching)} times:\n{run.output}"


# --- source capture where there is no file --------------------------------------------------


def test_steps_defined_in_notebook_cells(workdir: Path, helpers: Any) -> None:
    notebook = helpers.Cells(workdir, notebook=True)
    notebook.run(
        """
        import daskperiment
        ex = daskperiment.Experiment(id='notebook_pj')
        x = ex.parameter('x')
        """
    )
    notebook.run(
        """
        @ex.result
        def square(x):
            return x * x
        """
    )
    ex = notebook.ns["ex"]
    ex.set_parameters(x=3)
    assert notebook.ns["square"](notebook.ns["x"]).compute() == 9
    assert ex.get_code(trial_id=1).rstrip("\n") == "def square(x):\n    return x * x"


def test_steps_without_source_warn_and_still_run(workdir: Path, helpers: Any) -> None:
    ns: dict[str, Any] = {}
    exec(
        "import daskperiment\nex = daskperiment.Experiment(id='exec_pj')\nx = ex.parameter('x')", ns
    )
    with helpers.capture_log() as log:
        exec("@ex.result\ndef square(x):\n    return x * x\n", ns)
        ns["ex"].set_parameters(x=4)
        assert ns["square"](ns["x"]).compute() == 16
    warnings = log.messages("WARNING")
    assert any("square" in m for m in warnings), log.messages()
    assert ns["ex"].get_history()["Success"].tolist() == [True]
