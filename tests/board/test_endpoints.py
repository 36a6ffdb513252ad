"""The dashboard's HTML pages and JSON endpoints over a real store, through real HTTP."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import pytest

EXP = "/api/experiments/quickstart_pj"


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime: any write changes it."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            st = path.stat()
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


# experiments ---------------------------------------------------------------------------
def test_experiments_page_lists_every_store_of_the_directory(board):
    reply = board.get("/")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/html")
    assert 'href="/experiments/quickstart_pj"' in reply.text
    assert 'href="/experiments/other-exp"' in reply.text


def test_experiments_json(board):
    found = {e["id"]: e for e in board.get("/api/experiments").json()["experiments"]}
    assert set(found) == {"quickstart_pj", "other-exp"}
    assert found["quickstart_pj"]["trials"] == 6 and found["other-exp"]["trials"] == 2
    assert found["quickstart_pj"]["last_activity"]


def test_a_single_store_shows_only_its_experiments(serve, cache_dir):
    single = serve(str(cache_dir / "other-exp"))
    ids = [e["id"] for e in single.get("/api/experiments").json()["experiments"]]
    assert ids == ["other-exp"]
    assert single.get("/experiments/quickstart_pj").status == 404


def test_pages_send_security_headers(board):
    headers = board.get("/").headers
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe-eval" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"


# history -------------------------------------------------------------------------------
def test_history_json_has_parameters_results_and_status(board):
    page = board.get(f"{EXP}/history").json()
    assert page["columns"][:5] == ["Trial ID", "a", "b", "note", "Result"]
    assert {"Success", "Finished", "Process Time", "Description"} <= set(page["columns"])
    assert page["params"] == ["a", "b", "note"] and page["total"] == 6
    rows = {row["id"]: row for row in page["rows"]}
    assert list(rows) == [1, 2, 3, 4, 5, 6]
    assert rows[1]["cells"][:5] == ["1", "1", "2", "", "3.33333"]
    assert rows[4]["cells"][:5] == ["4", "1", "2", "-", "3.33333"]
    assert rows[3]["status"] == "failed" and rows[1]["status"] == "success"
    described = dict(zip(page["columns"], rows[3]["cells"], strict=True))["Description"]
    assert "ZeroDivisionError" in described


def test_history_is_paged_sorted_and_filtered_on_the_server(board):
    page = board.get(f"{EXP}/history?size=2&page=2&sort=Result&order=desc").json()
    assert (page["page"], page["pages"], page["matched"]) == (2, 3, 6)
    assert [r["id"] for r in page["rows"]] == [2, 6]  # 10/3 (1, 4), 10/4 (2, 6), 10/7, NaN
    filtered = board.get(f"{EXP}/history?q=a%3D1+b%3E2").json()
    assert [r["id"] for r in filtered["rows"]] == [2] and filtered["total"] == 6
    failed = board.get(f"{EXP}/history?status=failed").json()
    assert [r["id"] for r in failed["rows"]] == [3]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("size=0", "page size must be between 1 and 500"),
        ("size=abc", "'size' must be a non-negative integer"),
        ("order=up", "'order' must be asc or desc"),
        ("q=lr%3E1", "unknown column 'lr'"),
        ("sort=nope", "unknown column 'nope'"),
        ("status=maybe", "status must be"),
    ],
)
def test_bad_history_queries_are_400_with_a_message(board, query, message):
    reply = board.get(f"{EXP}/history?{query}")
    assert reply.status == 400 and reply.headers["Content-Type"] == "application/json"
    assert message in reply.json()["error"]


def test_history_page_is_a_shell_loaded_by_script(board):
    reply = board.get("/experiments/quickstart_pj")
    assert reply.status == 200
    assert 'data-experiment="quickstart_pj"' in reply.text
    assert 'data-bokeh="/static/bokeh.min.js"' in reply.text  # loaded by board.js when needed
    assert "<script>" not in reply.text  # no inline script anywhere


# trials --------------------------------------------------------------------------------
def test_trial_json_of_a_failed_trial_has_the_traceback(board):
    record = board.get(f"{EXP}/trials/3").json()
    assert record["status"] == "failed" and record["params"] == {"a": 1, "b": -1}
    assert "ZeroDivisionError: division by zero" in record["traceback"]


def test_trial_page_shows_parameters_steps_code_and_environment(board):
    text = board.get("/experiments/quickstart_pj/trials/4").text
    assert re.search(r"<th>a</th><td><code>1</code>", text)
    assert "prepare_data" in text and "calculate_score" in text
    assert "def calculate_score(s):" in text
    assert 'ex.save_metric("dummy_score", epoch=i, value=100 - i * s)' in html.unescape(text)
    assert 'id="environment"' in text and "python" in text.lower()
    assert re.search(r'class="oid">[0-9a-f]{32}<', text)  # step digests


def test_trial_page_of_a_failure_shows_the_error(board):
    text = board.get("/experiments/quickstart_pj/trials/3").text
    assert 'id="error"' in text and "ZeroDivisionError" in text
    assert "status-failed" in text


def test_markup_in_values_is_escaped(board, script_value):
    text = board.get("/experiments/quickstart_pj/trials/6").text
    assert script_value not in text
    assert f"<code>{repr(script_value)}</code>" in html.unescape(text)
    row = board.get(f"{EXP}/history?q=id%3D6").json()["rows"][0]
    assert script_value in row["cells"]  # JSON carries the text; the page sets textContent


def test_trial_code_json(board):
    reply = board.get(f"{EXP}/trials/1/code").json()
    assert reply["code"].startswith("def prepare_data(a, b):")


@pytest.mark.parametrize("trial", ["99", "0", "abc", "-1", "1.0", "..", "%2e%2e%2fconfig", "01"])
def test_unknown_or_malformed_trial_ids_are_404(board, trial):
    assert board.get(f"/experiments/quickstart_pj/trials/{trial}").status == 404
    reply = board.get(f"{EXP}/trials/{trial}")
    assert reply.status == 404 and "error" in reply.json()


@pytest.mark.parametrize("experiment", ["nope", "..", "%2e%2e", "quickstart_pj%00", "a%2fb"])
def test_unknown_or_malformed_experiments_are_404(board, experiment):
    assert board.get(f"/experiments/{experiment}").status == 404
    assert board.get(f"/api/experiments/{experiment}/history").status == 404


# diff ----------------------------------------------------------------------------------
def test_diff_page_colours_added_and_removed_lines(board):
    text = board.get("/experiments/quickstart_pj/diff?a=2&b=4").text
    added = re.findall(r'<tr class="add">.*?<td class="text">(.*?)</td></tr>', text)
    removed = re.findall(r'<tr class="del">.*?<td class="text">(.*?)</td></tr>', text)
    assert any("save_metric" in line for line in added)
    assert added and removed


def test_diff_json(board):
    diff = board.get(f"{EXP}/diff?a=1&b=2").json()
    kinds = {line["kind"] for line in diff["lines"]}
    assert diff["added"] >= 1 and diff["removed"] >= 1 and {"add", "del"} <= kinds


def test_diff_of_identical_trials_says_so(board):
    text = board.get("/experiments/quickstart_pj/diff?a=4&b=4").text
    assert "identical" in text


def test_diff_needs_two_valid_trials(board):
    assert board.get("/experiments/quickstart_pj/diff?a=1").status == 400
    assert board.get("/experiments/quickstart_pj/diff?a=1&b=77").status == 404


# metrics and plots ---------------------------------------------------------------------
def test_metric_keys_and_points(board):
    assert board.get(f"{EXP}/metric-keys?trials=4,5").json() == {
        "keys": ["dummy_score"],
        "running": [],
    }
    assert board.get(f"{EXP}/metric-keys?trials=1").json()["keys"] == []
    data = board.get(f"{EXP}/metrics?key=dummy_score&trials=4,5,1").json()
    assert data["series"]["4"]["epoch"] == list(range(10))
    assert data["series"]["4"]["value"][:2] == [100, 97]  # 100 - i * 3
    assert data["series"]["1"] == {"epoch": [], "value": []}


def test_metric_plot_has_one_curve_per_trial(board):
    reply = board.get(f"{EXP}/plots/metric?key=dummy_score&trials=4,5")
    item = reply.json()["item"]
    names = re.findall(r'"name":"(curve-\d+)"', reply.text)
    assert sorted(set(names)) == ["curve-4", "curve-5"] and item["root_id"]


def test_result_plot(board):
    reply = board.get(f"{EXP}/plots/result?param=b")
    assert reply.status == 200 and reply.json()["root_id"]
    assert board.get(f"{EXP}/plots/result?param=zzz").status == 400


def test_too_many_or_bad_trial_lists_are_rejected(board):
    many = ",".join(str(i) for i in range(1, 102))
    assert "at most 100 trials" in board.get(f"{EXP}/metrics?key=x&trials={many}").json()["error"]
    assert board.get(f"{EXP}/metrics?key=x&trials=1,abc").status == 404
    assert board.get(f"{EXP}/metrics?key=x").status == 400


# static files and safety ---------------------------------------------------------------
def test_static_files_come_from_a_whitelist(board):
    bokeh = board.get("/static/bokeh.min.js")
    assert bokeh.status == 200 and bokeh.headers["Content-Type"].startswith("text/javascript")
    assert len(bokeh.body) > 100_000
    assert board.get("/static/board.js").status == 200
    assert board.get("/static/board.css").headers["Content-Type"].startswith("text/css")
    for path in ["/static/../server.py", "/static/..%2fserver.py", "/static/server.py",
                 "/static/%2e%2e/%2e%2e/config", "/static/bokeh.js", "/static/"]:  # fmt: skip
        assert board.get(path).status == 404, path


def test_only_get_and_head_are_allowed(board):
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        reply = board.get(f"{EXP}/history", method=method)
        assert reply.status == 405 and "read-only" in reply.text
    head = board.get("/", method="HEAD")
    assert head.status == 200 and head.body == b""


def test_requests_for_another_host_name_are_refused(board):
    reply = board.get("/api/experiments", headers={"Host": "evil.example:5000"})
    assert reply.status == 400 and "Host" in reply.json()["error"]
    assert board.get("/", headers={"Host": "localhost:5000"}).status == 200


def test_unknown_pages_are_404_html_with_the_path_escaped(board):
    reply = board.get("/nothing/%3Cb%3Ehere")
    assert reply.status == 404 and "&lt;b&gt;here" in reply.text and "<b>here" not in reply.text


def test_the_dashboard_never_writes_to_the_store(cache_dir, serve):
    before = tree_state(cache_dir)
    running = serve(str(cache_dir))
    for path in ["/", "/experiments/quickstart_pj", f"{EXP}/history?sort=Result",
                 "/experiments/quickstart_pj/trials/3", "/experiments/quickstart_pj/diff?a=1&b=5",
                 f"{EXP}/plots/metric?key=dummy_score&trials=4,5", f"{EXP}/plots/result?param=a",
                 "/api/experiments/other-exp/history"]:  # fmt: skip
        assert running.get(path).status == 200, path
    assert tree_state(cache_dir) == before


def test_trial_pages_link_to_neighbours_that_exist(board):
    first = board.get("/experiments/quickstart_pj/trials/1").text
    assert 'href="/experiments/quickstart_pj/trials/2"' in first and "trials/0" not in first
    last = board.get("/experiments/quickstart_pj/trials/6").text
    assert 'href="/experiments/quickstart_pj/trials/5"' in last and "trials/7" not in last
    assert 'href="/experiments/quickstart_pj/diff?a=5&amp;b=6"' in last


def test_trial_page_lists_steps_in_the_order_of_the_code(board):
    text = board.get("/experiments/quickstart_pj/trials/4").text
    steps = text[text.index('id="steps"') :]
    assert steps.index("<td>prepare_data</td>") < steps.index("<td>calculate_score</td>")
    rows = {m[0]: m[1] for m in re.findall(r"<tr><td>(\w+)</td>(.*?)</tr>", steps, re.S)}
    assert len(re.findall(r"[0-9a-f]{32}", rows["prepare_data"])) == 3  # persisted: its oid
    assert len(re.findall(r"[0-9a-f]{32}", rows["calculate_score"])) == 2
    assert '<span class="muted">no</span>' in rows["calculate_score"]
