"""Server-side paging, sorting and filtering of the history table (daskperiment.board.query)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from daskperiment.board.query import (
    HistoryQuery,
    QueryError,
    format_cell,
    parameter_columns,
    run_query,
    text_cells,
)


@pytest.fixture
def history() -> pd.DataFrame:
    """A history shaped like ``Experiment.get_history()``: parameters, then the fixed columns."""
    n = 10
    ids = pd.Index(range(1, n + 1), name="Trial ID")
    a = [i % 4 for i in range(1, n + 1)]
    b = [2, 3, -3, 2, 3, 2, 0, 1, 2, 3]
    result = [10 / (x + y) if x + y else np.nan for x, y in zip(a, b, strict=True)]
    return pd.DataFrame(
        {
            "a": a,
            "b": b,
            "model": [
                "svm",
                "adam",
                "svm",
                "<script>",
                "adamw",
                "svm",
                "svm",
                "sgd",
                "adam",
                "svm",
            ],
            "Result": result,
            "Result Type": ["<class 'float'>" if r == r else None for r in result],
            "Success": [r == r for r in result],
            "Finished": pd.date_range("2026-01-02 03:04:05", periods=n, freq="min"),
            "Process Time": pd.to_timedelta(np.linspace(0.01, 0.1, n), unit="s"),
            "Description": [
                np.nan if r == r else "ZeroDivisionError(division by zero)" for r in result
            ],
        },
        index=ids,
    )


def query(frame: pd.DataFrame, **kwargs) -> dict:
    return run_query(frame, lambda: text_cells(frame), HistoryQuery(**kwargs))


def ids(page: dict) -> list[int]:
    return [row["id"] for row in page["rows"]]


def test_pages_split_the_table_and_report_totals(history):
    page = query(history, page=2, size=3)
    assert ids(page) == [4, 5, 6]
    assert (page["total"], page["matched"], page["pages"], page["page"]) == (10, 10, 4, 2)
    assert page["columns"][0] == "Trial ID" and page["columns"][1:] == list(history.columns)
    assert page["params"] == ["a", "b", "model"]


def test_a_page_past_the_end_shows_the_last_page(history):
    page = query(history, page=99, size=4)
    assert page["page"] == 3 and ids(page) == [9, 10]


def test_sort_by_result_descending_puts_missing_results_last(history):
    page = query(history, sort="Result", descending=True, size=10)
    results = [history.loc[i, "Result"] for i in ids(page)]
    finite = [r for r in results if r == r]
    assert finite == sorted(finite, reverse=True)
    assert np.isnan(results[-1]) and ids(page)[-1] == 3


def test_sort_by_trial_id_descending(history):
    assert ids(query(history, sort="Trial ID", descending=True, size=3)) == [10, 9, 8]


def test_sort_by_unknown_column_is_an_error_naming_it(history):
    with pytest.raises(QueryError, match="'nope'"):
        query(history, sort="nope")


def test_a_column_of_mixed_types_still_sorts(history):
    mixed = history.assign(model=[1, "a", 2.5, None, "b", 3, "c", 0, "d", 4])
    page = query(mixed, sort="model", size=10)
    assert len(page["rows"]) == 10 and ids(page)[-1] == 4  # the missing value sorts last


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("a>1", [2, 3, 6, 7, 10]),
        ("a>=2 b=3", [2, 10]),
        ("b!=2", [2, 3, 5, 7, 8, 10]),
        ("model=svm", [1, 3, 6, 7, 10]),
        ("model~ADA", [2, 5, 9]),
        ("success=false", [3]),
        ("result<=2.5", [2, 5, 6, 10]),
        ("id<=2", [1, 2]),
        ("adamw", [5]),
        ("description=none", [1, 2, 4, 5, 6, 7, 8, 9, 10]),
        ("'Result Type'~float b=0", [7]),
    ],
)
def test_filters(history, expression, expected):
    page = query(history, filter=expression, size=50)
    assert ids(page) == expected
    assert page["matched"] == len(expected) and page["total"] == 10


def test_filter_on_unknown_column_lists_the_columns(history):
    with pytest.raises(
        QueryError, match=r"unknown column 'lr'.*columns are: Trial ID, a, b, model"
    ):
        query(history, filter="lr>0.1")


def test_filter_with_unbalanced_quote_is_an_error(history):
    with pytest.raises(QueryError, match="cannot read filter"):
        query(history, filter="model='svm")


@pytest.mark.parametrize(
    ("status", "expected"), [("failed", [3]), ("success", [1, 2, 4, 5, 6, 7, 8, 9, 10])]
)
def test_status_filter(history, status, expected):
    assert ids(query(history, status=status)) == expected


def test_running_trials_are_those_without_a_success_value(history):
    running = history.astype({"Success": object})
    running.loc[10, "Success"] = None
    page = query(running, status="running")
    assert ids(page) == [10] and page["rows"][0]["status"] == "running"


def test_unknown_status_and_bad_page_sizes_are_errors(history):
    with pytest.raises(QueryError, match="status must be"):
        query(history, status="weird")
    with pytest.raises(QueryError, match="page size must be between 1 and 500"):
        query(history, size=0)
    with pytest.raises(QueryError, match="page must be 1 or more"):
        query(history, page=0)


def test_cells_are_short_display_text(history):
    row = query(history, size=1)["rows"][0]
    assert row["cells"] == [
        "1",
        "1",
        "2",
        "svm",
        "3.33333",
        "<class 'float'>",
        "True",
        "2026-01-02 03:04:05",
        "0.01 s",
        "",
    ]
    assert row["status"] == "success"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (float("nan"), ""),
        (pd.NaT, ""),
        (np.float64(1 / 3), "0.333333"),
        (np.int64(7), "7"),
        (np.True_, "True"),
        (pd.Timedelta(seconds=3725), "1:02:05"),
        ("x" * 300, "x" * 199 + "\u2026"),
        ("<script>alert(1)</script>", "<script>alert(1)</script>"),  # escaping is the page's job
    ],
)
def test_format_cell(value, text):
    assert format_cell(value) == text


def test_verbose_columns_are_not_parameters(history):
    verbose = history.assign(Seed=1, **{"Parameters Digest": "ab" * 16})
    assert parameter_columns(verbose) == ["a", "b", "model"]


def test_a_running_trial_shows_running_not_false_in_success(history):
    running = history.assign(Status=["success"] * 9 + ["running"])
    running.loc[10, "Success"] = False  # what the verbose history says of a running trial
    row = query(running, filter="id=10")["rows"][0]
    cells = dict(zip(query(running)["columns"], row["cells"], strict=True))
    assert row["status"] == "running" and cells["Success"] == "running"
    assert "Status" not in cells  # used for the row's status, not shown as a column
