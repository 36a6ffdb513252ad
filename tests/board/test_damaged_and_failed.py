"""The dashboard over HTTP on a store with a failed trial and a damaged one.

A failed trial's page and metrics show the points it saved before failing; a damaged trial
shows as damaged (with fsck's advice) while every other trial, the history and the metrics
still answer; an unknown trial id names the ids that exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import daskperiment
from daskperiment_store.store import object_key

EXP = "robust_board"


@pytest.fixture
def robust_store(tmp_path: Path) -> Path:
    """Trial 1 succeeds, trial 2 diverges after saving two loss points, trial 3 succeeds;
    then trial 3's record object is deleted (a damaged trial)."""
    path = tmp_path / "store"
    ex = daskperiment.Experiment(EXP, backend=path)
    limit = ex.parameter("limit")

    @ex.result
    def train(limit):
        for epoch in range(3):
            ex.save_metric("loss", epoch=epoch, value=10.0**epoch)
            if 10.0**epoch > limit:
                raise FloatingPointError("loss diverged")
        return 1.0

    for value in (1000, 5, 1000):
        ex.set_parameters(limit=value)
        try:
            train(limit).compute()
        except FloatingPointError:
            pass
    oid = (path / "refs" / "experiments" / EXP / "trials" / "3").read_text().strip()
    (path / object_key(oid)).unlink()
    return path


def test_failed_trial_metrics_and_damaged_trial_page(serve: Any, robust_store: Path) -> None:
    board = serve(str(robust_store))
    api = f"/api/experiments/{EXP}"

    failed = board.get(f"{api}/trials/2").json()
    assert failed["status"] == "failed" and "loss" in failed["metrics"]
    keys = board.get(f"{api}/metric-keys?trials=1,2,3").json()
    assert keys["keys"] == ["loss"]
    series = board.get(f"{api}/metrics?key=loss&trials=2,3").json()["series"]
    assert series["2"] == {"epoch": [0, 1], "value": [1.0, 10.0]}
    assert series["3"] == {"epoch": [], "value": []}
    page = board.get(f"/experiments/{EXP}/trials/2")
    assert page.status == 200 and "loss diverged" in page.text

    damaged = board.get(f"{api}/trials/3")
    assert damaged.status == 200
    assert damaged.json()["status"] == "damaged"
    assert "ObjectNotFound" in damaged.json()["description"]
    page = board.get(f"/experiments/{EXP}/trials/3")
    assert page.status == 200
    assert "damaged" in page.text and "daskperiment fsck" in page.text

    history = board.get(f"{api}/history").json()
    assert history["total"] == 3
    assert [row["status"] for row in history["rows"]] == ["success", "failed", "failed"]
    failed_only = board.get(f"{api}/history?status=failed").json()
    assert [row["id"] for row in failed_only["rows"]] == [2, 3]
    assert board.get(f"/experiments/{EXP}/trials/1").status == 200


def test_unknown_trial_names_the_existing_ids(serve: Any, robust_store: Path) -> None:
    board = serve(str(robust_store))
    reply = board.get(f"/api/experiments/{EXP}/trials/9")
    assert reply.status == 404
    assert "trial ids run from 1 to 3" in reply.text
    assert "no trial has run yet" not in reply.text
