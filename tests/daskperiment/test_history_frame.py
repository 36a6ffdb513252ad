"""The history DataFrame built column by column (``history.frame``) is exactly the one the rows
give when they are read one by one, as it was built before: same columns in the same order,
dtypes, values (the Python type of every object cell included) and index, over a varied
history of real trials and of rows of every kind a history holds."""

from __future__ import annotations

import datetime
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import daskperiment
from daskperiment import history, historyframe
from daskperiment.record import FAILED, RUNNING, SUCCESS

# --- the DataFrame as it was built before, one row at a time (the reference) -------------


def rowwise_frame(rows: list[dict[str, Any]], parameter_order: Any = (), verbose: bool = False):
    names: dict[str, None] = {n: None for n in parameter_order}
    for row in rows:
        names.update((n, None) for n in row.get("parameter_order") or () if n not in names)
    extra: dict[str, None] = {}
    for row in rows:
        for n in row["params"]:
            if n not in names:
                extra[n] = None
    params = [n for n in names if any(n in r["params"] for r in rows)] + list(extra)
    data: dict[str, Any] = {}
    for n in params:
        data[n] = rowwise_column([r["params"].get(n, np.nan) for r in rows])
    data["Result"] = rowwise_column(
        [math.nan if r["result"] is None else r["result"] for r in rows]
    )
    data["Result Type"] = pd.Series([r["result_type"] for r in rows], dtype=object)
    data["Success"] = pd.Series([r["status"] == SUCCESS for r in rows], dtype=bool)
    data["Finished"] = pd.to_datetime(
        [None if r["finished"] is None else datetime.datetime.fromtimestamp(r["finished"])
         for r in rows]
    )  # fmt: skip
    seconds = [r["process_time"] if r["process_time"] is not None else np.nan for r in rows]
    data["Process Time"] = pd.to_timedelta(np.array(seconds, dtype=float), unit="s").round("us")
    data["Description"] = pd.Series(
        [r["description"] if r["description"] is not None else np.nan for r in rows],
        dtype=object,
    )
    if verbose:
        data.update(historyframe._verbose_columns(rows))
    index = pd.Index([r["trial_id"] for r in rows], name="Trial ID", dtype="int64")
    for key, col in data.items():
        if isinstance(col, pd.Series):
            col.index = index
        else:
            data[key] = pd.Series(col, index=index)
    return pd.DataFrame(data, index=index)


def rowwise_column(values: list) -> Any:
    if all(type(v) in (int, float) for v in values) and values:
        if any(type(v) is float for v in values) and any(
            type(v) is int and abs(v) > 2**53 for v in values
        ):
            return pd.Series(values, dtype=object)
        return pd.Series(values)
    if all(type(v) is bool for v in values) and values:
        return pd.Series(values, dtype=bool)
    return pd.Series(values, dtype=object)


def assert_same_frame(new: pd.DataFrame, old: pd.DataFrame) -> None:
    """Equal in every way a user can see, down to the type of each object cell (pandas'
    own comparison takes None for NaN and 1 for 1.0 or True)."""
    assert list(new.columns) == list(old.columns)
    assert list(new.dtypes) == list(old.dtypes)
    assert new.index.equals(old.index) and new.index.dtype == old.index.dtype
    assert new.index.name == old.index.name
    pd.testing.assert_frame_equal(new, old, check_exact=True)
    for name in old.columns:
        if old[name].dtype == object:
            assert [(type(v), repr(v)) for v in new[name]] == [
                (type(v), repr(v)) for v in old[name]
            ], name
        else:
            a, b = new[name].to_numpy(), old[name].to_numpy()
            if a.dtype.kind in "mM":  # NaT never equals itself: compare the integers
                a, b = a.view("i8"), b.view("i8")
            assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name


# --- a varied history of real trials ------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[dict[str, Any]]]:
    """An experiment of real trials: int, float, str, bool, None and huge int parameters,
    numeric, string and failing results; and the rows the reader gives of them."""
    path: Path = tmp_path_factory.mktemp("frame") / "store"
    ex = daskperiment.Experiment("frame_pj", backend=path)
    a = ex.parameter("a")
    b = ex.parameter("b")

    @ex.result
    def score(a, b):
        if a == 0:
            raise ZeroDivisionError("a is 0")
        return 10 / a if b != "text" else f"a={a}"

    for a_value, b_value in [(1, 2), (2.5, 2), (4, "text"), (0, None), (2**60, True), (3, 2)]:
        ex.set_parameters(a=a_value, b=b_value)
        try:
            score(a, b).compute(scheduler="sync")
        except ZeroDivisionError:
            pass
    st_ = ex._read_store()
    reader = history.HistoryReader("frame_pj")
    rows = reader.rows(st_, reader.trial_ids(st_))
    assert [r["status"] for r in rows] == [SUCCESS] * 3 + [FAILED] + [SUCCESS] * 2
    return ex, rows


def every_kind(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` and rows of running, interrupted, damaged and malformed trials after them,
    and of one with a parameter of its own and another missing."""
    running = dict(rows[0], trial_id=7, status=RUNNING, finished=None, result=None)
    running["description"] = "Running"
    interrupted = dict(rows[1], trial_id=8, interrupted=True, status=FAILED)
    damaged = history.damaged_row(9, "its record: CorruptObject: bytes changed")
    malformed = history.malformed_row(10, "0" * 32, ValueError("not a trial record"))
    own = dict(rows[2], trial_id=11, params={"a": 5, "c": [1, 2]}, parameter_order=["a", "c"])
    return [*rows, running, interrupted, damaged, malformed, own]


@pytest.mark.parametrize("verbose", [False, True])
def test_frame_equals_the_rowwise_frame_over_real_trials(real: Any, verbose: bool) -> None:
    rows = every_kind(real[1])
    new = history.frame(rows, ["a", "b"], verbose)
    assert_same_frame(new, rowwise_frame(rows, ["a", "b"], verbose))
    assert list(new.columns)[:3] == ["a", "b", "c"]


@pytest.mark.parametrize("verbose", [False, True])
def test_get_history_is_the_rowwise_frame_of_its_rows(real: Any, verbose: bool) -> None:
    ex, rows = real
    got = ex.get_history(verbose=verbose)
    if verbose:  # added after the table is built (teams.py)
        got = got.drop(columns=["Global ID", "Origin"])
    assert_same_frame(got, rowwise_frame(rows, ["a", "b"], verbose))
    assert got["a"].dtype == object  # 2**60 beside 2.5: kept exact
    assert got.loc[3, "Result"] == "a=4" and math.isnan(got.loc[4, "Result"])  # failed


def test_an_empty_history_is_the_same_empty_frame() -> None:
    assert_same_frame(history.frame([]), rowwise_frame([]))
    assert_same_frame(history.frame([], ["a"], verbose=True), rowwise_frame([], ["a"], True))


def test_the_comparison_sees_what_pandas_alone_would_not() -> None:
    """The check can fail: a None where the reference has NaN, 1 where it has 1.0."""
    old = rowwise_frame([history.damaged_row(1, "x")])
    old["Description"] = pd.Series([np.nan], index=old.index, dtype=object)
    none = old.copy()
    none["Description"] = pd.Series([None], index=old.index, dtype=object)
    with pytest.raises(AssertionError):
        assert_same_frame(none, old)
    as_float = old.copy()
    as_float["Result Type"] = pd.Series([1.0], index=old.index, dtype=object)
    as_int = old.copy()
    as_int["Result Type"] = pd.Series([1], index=old.index, dtype=object)
    with pytest.raises(AssertionError):
        assert_same_frame(as_int, as_float)


# --- any mix of rows ---------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "lr", "c"])
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.integers(min_value=-5, max_value=5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)


@st.composite
def rows_strategy(draw: Any) -> list[dict[str, Any]]:
    rows = []
    for trial_id in sorted(draw(st.sets(st.integers(1, 10_000), max_size=12))):
        kind = draw(st.sampled_from(["success", "failed", "running", "interrupted", "damaged"]))
        if kind == "damaged":
            rows.append(history.damaged_row(trial_id, draw(st.text(max_size=8))))
            continue
        params = draw(st.dictionaries(NAMES, VALUES, max_size=4))
        order = draw(st.one_of(st.none(), st.just(list(params)), st.lists(NAMES, max_size=3)))
        row = {
            "trial_id": trial_id,
            "global_id": None,
            "record": "1" * 32,
            "status": FAILED if kind == "interrupted" else kind,
            "interrupted": kind == "interrupted",
            "params": params,
            "result": draw(VALUES),
            "result_type": draw(st.one_of(st.none(), st.just("<class 'float'>"))),
            "finished": draw(st.one_of(st.none(), st.floats(0, 4e9))),
            "process_time": draw(st.one_of(st.none(), st.floats(0, 1e5))),
            "description": draw(st.one_of(st.none(), st.text(max_size=6))),
            "seed": draw(st.one_of(st.none(), st.integers(0, 2**32 - 1))),
            "digests": {"parameters": None, "code": "2" * 32, "environment": None, "result": None},
            "reused": draw(st.lists(st.sampled_from(["prepare", "train"]), max_size=2)),
        }
        if order is not None:
            row["parameter_order"] = order
        rows.append(row)
    return rows


@settings(max_examples=150, deadline=None)
@given(
    rows=rows_strategy(), declared=st.lists(NAMES, max_size=3, unique=True), verbose=st.booleans()
)
def test_frame_equals_the_rowwise_frame_for_any_rows(
    rows: list, declared: list, verbose: bool
) -> None:
    assert_same_frame(
        history.frame(rows, declared, verbose), rowwise_frame(rows, declared, verbose)
    )


# --- what opening and reading the history import ------------------------------------------

LAZY = (
    "daskperiment.trial",
    "daskperiment.steps",
    "daskperiment.cache",
    "daskperiment.environment",
    "daskperiment.bundles",
    "daskperiment.sharing",
    "importlib.metadata",
)


def test_reading_the_history_imports_no_trial_machinery(real: Any) -> None:
    """A fresh process that opens an experiment and reads its history imports neither the
    trial and step machinery nor environment capture (nor importlib.metadata); decorating a
    step then imports what running it needs."""
    ex, _ = real
    code = (
        "import sys, daskperiment\n"
        f"ex = daskperiment.Experiment('frame_pj', backend={str(ex._target)!r})\n"
        "assert len(ex.get_history()) == 6\n"
        f"print(sorted(m for m in {LAZY!r} if m in sys.modules))\n"
        "@ex.result\n"
        "def f(a):\n"
        "    return a\n"
        "print('daskperiment.steps' in sys.modules, 'daskperiment.native' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "True True"]
