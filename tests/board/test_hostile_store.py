"""The dashboard over a store an attacker wrote to: nothing it serves ever unpickles.

The store holds three real trials, a trial ref naming a pickle (trial 4), a well-formed
record whose metric series is a pickle (trial 5) and one whose code and environment trees
are pickles (trial 6). Every pickle touches a marker file when loaded (tests/hostile.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

import daskperiment_store as store
from tests.hostile import build_three_trials, plant_pickle, plant_record, record_of, trial_ref

EXP = "hostile_pj"


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """``(cache directory, marker, pickle oid)``."""
    cache = tmp_path_factory.mktemp("hostile") / "daskperiment_cache"
    build_three_trials(cache, EXP)
    marker = cache.parent / "ran"
    st = store.open(cache / EXP, create=False)
    evil = plant_pickle(st, marker)
    st.refs.set(trial_ref(EXP, 4), evil)
    base = record_of(st, EXP, 3)
    plant_record(st, EXP, 5, base, **{"metrics:loss": evil})
    plant_record(st, EXP, 6, base, code=evil, environment=evil)
    return cache, marker, evil


@pytest.fixture
def hostile_board(planted: tuple[Path, Path, str], serve: Any) -> Any:
    return serve(str(planted[0]))


def test_every_endpoint_reports_instead_of_unpickling(planted, hostile_board) -> None:
    _, marker, evil = planted
    api = f"/api/experiments/{EXP}"
    assert hostile_board.get("/").status == 200
    history = hostile_board.get(f"{api}/history?size=50").json()
    assert history["total"] == 6
    rows = {row["id"]: row["cells"] for row in history["rows"]}
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]
    assert any("malformed record" in cell for cell in rows[4])
    assert "6" in rows[2]
    page = hostile_board.get(f"/experiments/{EXP}/trials/4")
    assert page.status == 500 and "malformed or hostile" in page.text and evil in page.text
    reply = hostile_board.get(f"{api}/trials/4")
    assert reply.status == 500 and "malformed or hostile" in reply.json()["error"]
    assert hostile_board.get(f"{api}/trials/5").status == 200
    metrics = hostile_board.get(f"{api}/metrics?key=loss&trials=5")
    assert metrics.status == 500
    assert "stored as a pickle" in metrics.json()["error"]
    assert hostile_board.get(f"{api}/metrics?key=loss&trials=3").status == 200
    plot = hostile_board.get(f"{api}/plots/metric?key=loss&trials=3,5")
    assert plot.status == 500
    code = hostile_board.get(f"{api}/trials/6/code")
    assert code.status == 500 and "malformed or hostile" in code.json()["error"]
    assert hostile_board.get(f"{api}/trials/6").status == 200  # environment summary left out
    diff = hostile_board.get(f"{api}/diff?a=3&b=6")
    assert diff.status == 500 and "malformed or hostile" in diff.json()["error"]
    assert hostile_board.get(f"{api}/diff?a=3&b=5").status == 200  # by digest, not loaded
    assert not marker.exists()


@pytest.mark.parametrize("text", ["01", "0", "\uff11", "\u0661", "9223372036854775808"])
def test_trial_ids_in_urls_are_canonical(hostile_board, text: str) -> None:
    reply = hostile_board.get(f"/api/experiments/{EXP}/trials/{quote(text)}")
    assert reply.status == 404 and "without leading zeros" in reply.json()["error"]


def test_experiment_ids_in_urls_have_the_one_limit(hostile_board) -> None:
    reply = hostile_board.get("/api/experiments/" + "x" * 201 + "/history")
    assert reply.status == 404 and "1 to 200 ASCII letters" in reply.json()["error"]


@pytest.mark.browser
def test_a_trial_page_with_a_pickled_metric_loads_in_chromium(planted, hostile_board, open_page):
    _, marker, _ = planted
    watched = open_page(hostile_board)
    watched.expected.append("status of 500")  # the refused metric series
    page = watched.page
    page.goto(f"{hostile_board.url}/experiments/{EXP}/trials/5")
    assert page.locator("#status").inner_text() == "success"
    assert "def score(x):" in page.locator("#code").inner_text()
    page.wait_for_load_state("networkidle")
    assert not marker.exists()
