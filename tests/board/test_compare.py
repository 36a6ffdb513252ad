"""Comparing many trials, parallel coordinates, brushes, plot axes, system metrics: over HTTP."""

from __future__ import annotations

import json
import re
import urllib.parse

from daskperiment.board.compare import changed_files, source_change

API = "/api/experiments/sweep"


def brush(*brushes: dict) -> str:
    return urllib.parse.quote(json.dumps(list(brushes)))


def test_compare_json_keeps_only_the_differing_parameters(sweep_board):
    data = sweep_board.get(f"{API}/compare?trials=1,2,3,4,5").json()
    assert data["ids"] == [1, 2, 3, 4, 5]
    assert data["differing"] == ["lr", "depth"]  # in the history's column order
    assert dict(data["same"]) == {"optimizer": "adam", "batch": "32"}
    assert [row["params"] for row in data["rows"][:2]] == [["0.0001", "2"], ["0.001", "4"]]
    assert data["results"][0] == "Result" and all(r["status"] == "success" for r in data["rows"])
    assert data["annotations"] == []  # no tags or notes recorded: no column for them
    wider = sweep_board.get(f"{API}/compare?trials=1,6").json()
    assert wider["differing"] == ["lr", "optimizer"]  # depth is 2 in both


def test_compare_page_renders_the_table_escaped(sweep_board, board):
    page = sweep_board.get("/experiments/sweep/compare?trials=2,4,5")
    assert page.status == 200
    assert re.findall(r'<th class="param" data-column="(\w+)"', page.text) == [
        "lr",
        "depth",
    ]  # declaration order
    assert 'data-trials="2,4,5"' in page.text
    quick = board.get("/experiments/quickstart_pj/compare?trials=5,6")
    assert "&lt;script&gt;" in quick.text and "<script>alert" not in quick.text


def test_compare_refuses_unknown_trials_and_long_lists(sweep_board):
    assert sweep_board.get(f"{API}/compare?trials=1,99").status == 404
    many = ",".join(str(i) for i in range(1, 102))
    reply = sweep_board.get(f"{API}/compare?trials={many}")
    assert reply.status == 400 and "at most 100 trials" in reply.json()["error"]
    assert sweep_board.get(f"{API}/compare").status == 400


def test_parallel_data_has_number_and_category_axes(sweep_board):
    data = sweep_board.get(f"{API}/parallel").json()
    assert data["ids"] == list(range(1, 9))
    axes = {axis["name"]: axis for axis in data["axes"]}
    assert list(axes) == ["lr", "depth", "optimizer", "batch", "Result"]
    assert axes["lr"]["kind"] == "number" and axes["lr"]["positive"] is True
    assert axes["lr"]["min"] == 0.0001 and axes["lr"]["max"] == 1.0
    assert axes["optimizer"] == {
        "name": "optimizer",
        "kind": "category",
        "categories": ["adam", "sgd"],
        "values": [0, 0, 0, 0, 0, 1, 1, 1],
    }
    assert axes["Result"]["positive"] is False  # log10(lr) < 0: no log axis offered
    filtered = sweep_board.get(f"{API}/parallel?q=optimizer=sgd").json()
    assert filtered["ids"] == [6, 7, 8]


def test_brushes_filter_the_history_and_the_matching_ids(sweep_board):
    number = brush({"axis": "lr", "min": 0.005, "max": 0.5})
    page = sweep_board.get(f"{API}/history?brush={number}").json()
    assert [row["id"] for row in page["rows"]] == [3, 4, 7, 8] and page["matched"] == 4
    both = brush({"axis": "lr", "min": 0.005, "max": 0.5}, {"axis": "optimizer", "values": ["sgd"]})
    assert [r["id"] for r in sweep_board.get(f"{API}/history?brush={both}").json()["rows"]] == [
        7,
        8,
    ]
    ids = sweep_board.get(f"{API}/matching?brush={number}&sort=lr&order=desc").json()["ids"]
    assert ids == [8, 4, 7, 3]
    assert sweep_board.get(f"{API}/matching?q=depth=2").json()["ids"] == [1, 3, 6]


def test_bad_brushes_are_explained(sweep_board):
    for bad, words in [
        ("nojson", "JSON list"),
        (brush({"axis": "lr"}), "'min'"),
        (brush({"axis": "zzz", "min": 0, "max": 1}), "unknown axis 'zzz'"),
        (brush({"axis": "optimizer", "min": 0, "max": 1}), "holds categories"),
    ]:
        reply = sweep_board.get(f"{API}/history?brush={bad}")
        assert reply.status == 400 and words in reply.json()["error"], reply.text


def test_result_plot_axes_and_colour(sweep_board):
    linear = sweep_board.get(f"{API}/plots/result?param=lr").text
    assert "LogScale" not in linear
    logged = sweep_board.get(f"{API}/plots/result?param=lr&xlog=1&color=optimizer")
    assert (
        logged.status == 200
        and "LogScale" in logged.text
        and "CategoricalColorMapper" in logged.text
    )
    by_number = sweep_board.get(f"{API}/plots/result?param=lr&color=depth").text
    assert "LinearColorMapper" in by_number and "ColorBar" in by_number
    hidden = sweep_board.get(f"{API}/plots/result?param=lr&ylog=1").text
    assert "(3 trials; 5 not positive, not shown)" in hidden  # only 3 results are > 0
    bad = sweep_board.get(f"{API}/plots/result?param=optimizer&xlog=1")
    assert bad.status == 400 and "cannot be logarithmic" in bad.json()["error"]
    assert sweep_board.get(f"{API}/plots/result?param=lr&xlog=yes").status == 400
    assert sweep_board.get(f"{API}/plots/result?param=lr&color=zzz").status == 400


def test_metric_plot_log_axes(sweep_board):
    item = sweep_board.get(f"{API}/plots/metric?key=loss&trials=1,2&ylog=1").json()["item"]
    assert "LogScale" in json.dumps(item) and item["root_id"]
    assert "LogScale" not in json.dumps(
        sweep_board.get(f"{API}/plots/metric?key=loss&trials=1,2").json()["item"]
    )


def test_a_busy_step_has_system_metrics(sweep_board):
    keys = sweep_board.get("/api/experiments/busy/metric-keys?trials=1").json()["keys"]
    assert {"sys/cpu", "sys/mem"} <= set(keys)
    series = sweep_board.get("/api/experiments/busy/metrics?key=sys/cpu&trials=1").json()
    points = series["series"]["1"]
    assert len(points["value"]) >= 2 and max(points["value"]) > 5


def test_the_diff_page_overlays_curves_and_lists_no_inputs_when_none_recorded(sweep_board):
    page = sweep_board.get("/experiments/sweep/diff?a=1&b=2").text
    assert 'data-trials="1,2"' in page and 'id="compare-metrics"' in page
    assert 'id="inputs"' not in page  # records without files or source trees


def test_changed_input_files_and_sources_from_records():
    a = {
        "source": "Link(oid='" + "a" * 32 + "')",
        "steps": {"load": {"files": {"/d/x.csv": "1" * 32, "/d/y.csv": "2" * 32}}},
    }
    b = {
        "source": {"oid": "b" * 32},
        "steps": {"load": {"files": {"/d/x.csv": "1" * 32, "/d/y.csv": "3" * 32, "/d/z": "4"}}},
    }
    assert changed_files(a, b) == [
        {"step": "load", "path": "/d/y.csv", "a": "2" * 32, "b": "3" * 32},
        {"step": "load", "path": "/d/z", "a": "", "b": "4"},
    ]
    assert source_change(a, b) == ("a" * 32, "b" * 32)
    assert source_change(a, a) is None and changed_files({}, {}) == []


def test_tags_and_notes_are_shown_when_records_have_them():
    import pandas as pd

    from daskperiment.board.compare import comparison

    frame = pd.DataFrame(
        {"lr": [0.1, 0.2], "Result": [1.0, 2.0], "Success": [True, True]},
        index=pd.Index([1, 2], name="Trial ID"),
    )
    records = {1: {"tags": ["baseline", "gpu"]}, 2: {"notes": "<b>rerun</b>"}}
    table = comparison(frame, [1, 2], records)
    assert table["annotations"] == ["tags", "notes"]
    assert [row["annotations"] for row in table["rows"]] == [
        ["baseline, gpu", ""],
        ["", "<b>rerun</b>"],  # text: the template escapes it
    ]
    assert comparison(frame, [1, 2], {})["annotations"] == []


def test_many_curves_have_no_legend(many_board, sweep_board):
    ids = ",".join(str(i) for i in range(1, 26))
    item = many_board.get(f"/api/experiments/many/plots/metric?key=x&trials={ids}").json()
    assert item["curves"] == 25 and '"Legend"' not in json.dumps(item["item"])
    few = sweep_board.get(f"{API}/plots/metric?key=loss&trials=1,2").json()["item"]
    assert '"Legend"' in json.dumps(few)


def test_the_diff_page_lists_changed_inputs_escaped():
    from daskperiment.board.pages import diff_page

    inputs = {
        "files": [{"step": "load", "path": "/d/<script>.csv", "a": "1" * 32, "b": ""}],
        "source": ("a" * 32, "b" * 32),
    }
    page = diff_page("exp", 1, 2, "", "store", inputs)
    assert 'id="inputs"' in page and 'id="changed-files"' in page
    assert "/d/&lt;script&gt;.csv" in page and "<script>.csv" not in page
    assert "a" * 32 in page and "b" * 32 in page and "not read" in page
    assert 'id="inputs"' not in diff_page("exp", 1, 2, "", "store", {"files": [], "source": None})
