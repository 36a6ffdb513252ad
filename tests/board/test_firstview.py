"""The history page's first answer, made without the DataFrame, is the DataFrame's answer.

The varied histories of ``tests/daskperiment/test_quicklog.py`` (ints, floats tiny and huge,
NaN, strings, bools, wide ints, a parameter only some trials have; failed, running,
interrupted, damaged, archived, tagged trials) are served by a fresh view (the plain first
view) and by a view whose table is already built (the DataFrame path): the JSON must match.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import daskperiment
import daskperiment_store as store
from daskperiment.board import firstview
from daskperiment.board.catalog import ExperimentView
from daskperiment.board.query import HistoryQuery
from tests.daskperiment.test_quicklog import MIXED, NUMS, _record_mixed, _record_nums


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("firstview")
    _record_nums(root / "nums")
    _record_mixed(root / "mixed")
    ex = daskperiment.Experiment("many_pj", backend=root / "many")
    a = ex.parameter("a")

    @ex.result
    def third(a):
        return a / 3

    for value in range(1, 301):  # two index chunks and a bit
        ex.set_parameters(a=value)
        third(a).compute()
    ex.archive(5)
    ex._flush_index()
    return root


def _view(path: Path, experiment: str) -> ExperimentView:
    st = store.open(path, create=False, read_only=True)
    return ExperimentView(daskperiment.Experiment(experiment, backend=st), st)


CASES = [(NUMS, "nums"), (MIXED, "mixed"), ("many_pj", "many")]
QUERIES = [HistoryQuery(), HistoryQuery(size=3), HistoryQuery(page=2, size=4), HistoryQuery(page=9)]


@pytest.mark.parametrize(("experiment", "where"), CASES)
def test_first_view_is_the_dataframe_answer(stores: Path, experiment: str, where: str) -> None:
    for query in QUERIES + ([HistoryQuery(page=6, size=50)] if where == "many" else []):
        fresh = _view(stores / where, experiment)
        plain = fresh.query(query)
        assert fresh._snapshot is None  # answered without the DataFrame
        built = _view(stores / where, experiment)
        built.snapshot()
        expected = built.query(query)
        assert json.dumps(plain, sort_keys=True) == json.dumps(expected, sort_keys=True), query


def test_other_queries_take_the_dataframe(stores: Path) -> None:
    view = _view(stores / "many", "many_pj")
    page: Any = view.query(HistoryQuery(sort="a", descending=True))
    assert view._snapshot is not None and page["rows"][0]["id"] == 300
    assert not firstview.is_first_view(HistoryQuery(filter="a>3"), ())
    assert not firstview.is_first_view(HistoryQuery(status="failed"), ())
    assert not firstview.is_first_view(HistoryQuery(size=501), ())


def test_first_view_counts_archived_trials_out(stores: Path) -> None:
    page: Any = _view(stores / "many", "many_pj").query(HistoryQuery(size=10))
    assert page["total"] == 299 and page["pages"] == 30
    assert [r["id"] for r in page["rows"]] == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11]


def test_index_columns_are_parsed_alone_even_with_look_alike_keys(tmp_path: Path) -> None:
    # parameter values holding the keys of later columns ("seed":[...]), and text with
    # quotes and brackets: each column parsed alone equals the whole chunk decoded
    from daskperiment import history
    from daskperiment.reads import read_json

    ex = daskperiment.Experiment("keys_pj", backend=tmp_path / "s")
    cfg = ex.parameter("cfg")

    @ex.result
    def run(cfg):
        return {"seed": [1], "trial_id": [2]} if cfg.get("dict") else 1.5

    for value in (
        {"seed": [1, 2], "trial_id": [3], "result": [4]},
        {"dict": True, "text": '"seed":[5], ,"trial_id":[6]'},
        {"params": [7]},
    ):
        ex.set_parameters(cfg=value)
        run(cfg).compute()
    ex._flush_index()
    st = ex.store
    root = read_json(st, st.refs.get("experiments/keys_pj/index"))
    wanted = list(firstview._TYPED)
    for link in history.chunk_links(root).values():
        whole = read_json(st, link.oid)["columns"]
        assert firstview.chunk_columns(st, link.oid, wanted) == {f: whole[f] for f in wanted}
