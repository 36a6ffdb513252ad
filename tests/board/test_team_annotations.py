"""The dashboard shows a trial's global id, origin, tags and notes, read-only, and hides
archived trials from the history (the API and the CLI annotate)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

import daskperiment
from daskperiment import sharing


def _experiment(location: Path, offset: int) -> daskperiment.Experiment:
    ex = daskperiment.Experiment("board_team", backend=location)
    a = ex.parameter("a")

    @ex.result
    def total(a):
        return float(np.arange(3).sum() + a)

    r = total(a)
    for i in (1, 2):
        ex.set_parameters(a=offset + i)
        r.compute(seed=i)
    return ex


def test_trial_page_shows_identity_origin_tags_and_notes(tmp_path: Path, serve) -> None:
    cache = tmp_path / "daskperiment_cache"
    mine = _experiment(cache / "board_team", 0)
    theirs = _experiment(tmp_path / "theirs", 10)
    theirs.tag(2, "their-best")
    theirs.note(2, "<b>bold</b> claim")
    sharing.pull_trials(mine.store, "board_team", str(tmp_path / "theirs"))
    mine.archive(1)
    board = serve(str(cache))
    page = html.unescape(board.get("/experiments/board_team/trials/4").text)
    assert theirs.get_trial(2)["global_id"] in page
    assert "their-best" in page and "<b>bold</b> claim" in page
    assert "arrived as trial 2 of" in page
    assert "<b>bold</b>" not in board.get("/experiments/board_team/trials/4").text  # escaped
    rows = board.get("/api/experiments/board_team/history?size=50").json()
    assert [r["id"] for r in rows["rows"]] == [2, 3, 4]  # archived trial 1 hidden
    assert "Tags" in rows["columns"] and "Tags" not in rows["params"]
    # read-only: no route annotates
    assert board.get("/experiments/board_team/trials/4/tag", method="POST").status in (404, 405)
