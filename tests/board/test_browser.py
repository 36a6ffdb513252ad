"""End to end in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

Each test fails on any JavaScript error, any Content-Security-Policy violation and any
request leaving the dashboard (the board must work offline). Screenshots go to
``test-artifacts/board/`` (and to ``docs/img/`` with ``DASKPERIMENT_DOCS_SCREENSHOTS=1``).
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.browser


@pytest.fixture
def watched(open_page: Any, board: Any) -> Any:
    return open_page(board)


@pytest.fixture
def page(watched: Any) -> Any:
    return watched.page


def open_history(page: Any, board: Any, experiment: str = "quickstart_pj") -> None:
    page.goto(f"{board.url}/experiments/{experiment}")
    page.wait_for_selector("#history[data-loaded='true']")


def row_ids(page: Any) -> list[int]:
    return [
        int(x)
        for x in page.locator("#history tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.trial)"
        )
    ]


def test_history_shows_every_trial(page, board, shot):
    open_history(page, board)
    assert row_ids(page) == [1, 2, 3, 4, 5, 6]
    first = page.locator("#history tbody tr[data-trial='1'] td").all_inner_texts()
    assert first[1:6] == ["1", "1", "2", "", "3.33333"]
    assert "status-failed" in page.locator("#history tbody tr[data-trial='3']").get_attribute(
        "class"
    )
    assert page.locator("#trial-count").inner_text() == "6 trials"
    page.wait_for_selector(
        "#result-plot .bk-Figure, #result-plot div[data-root-id]", state="attached"
    )
    shot(page, "board-history.png")


def test_history_sorts_and_filters_on_the_server(watched, board):
    page = watched.page
    watched.expected.append("status of 400")  # the bad filter below is answered with 400
    open_history(page, board)
    page.locator("#history th[data-column='Result']").click()
    page.wait_for_selector("#history th.sorted[data-column='Result']")
    page.locator("#history th[data-column='Result']").click()  # descending
    page.wait_for_selector("#history th.sorted[data-column='Result']:has-text('\u25bc')")
    assert row_ids(page) == [1, 4, 2, 6, 5, 3]  # 10/3, 10/3, 10/4, 10/4, 10/7, failed
    page.fill("#filter", "a=1 b>=2")
    page.wait_for_selector("#page-info:has-text('3 of 6 trials')")
    assert sorted(row_ids(page)) == [1, 2, 4]
    page.fill("#filter", "nosuchcolumn>1")
    page.wait_for_selector("#query-error:not([hidden])")
    assert "unknown column 'nosuchcolumn'" in page.locator("#query-error").inner_text()


def test_open_a_trial_and_see_its_code(page, board, shot):
    open_history(page, board)
    page.locator("#history tbody tr[data-trial='4'] a").click()
    page.wait_for_url("**/experiments/quickstart_pj/trials/4")
    code = page.locator("#code").inner_text()
    assert "def calculate_score(s):" in code and "save_metric" in code
    assert page.locator("#status").inner_text() == "success"
    page.wait_for_selector("#trial-metrics .plot[data-curves='1']")
    shot(page, "board-trial.png")


def test_select_two_trials_and_see_the_coloured_diff(page, board, shot):
    open_history(page, board)
    assert page.locator("#compare").is_disabled()
    page.locator("tr[data-trial='2'] input[type=checkbox]").check()
    page.locator("tr[data-trial='4'] input[type=checkbox]").check()
    page.locator("#compare").click()
    page.wait_for_url("**/experiments/quickstart_pj/diff?a=2&b=4")
    added = page.locator("#diff tr.add td.text")
    removed = page.locator("#diff tr.del td.text")
    assert added.count() > 0 and removed.count() > 0
    assert any("save_metric" in text for text in added.all_inner_texts())
    green = added.first.evaluate("e => getComputedStyle(e).backgroundColor")
    red = removed.first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert green == "rgb(230, 255, 236)" and red == "rgb(255, 235, 233)"
    # the two trials' curves overlaid below the diff (trial 2 saved no metric: one curve)
    page.wait_for_selector("#compare-metrics .plot[data-key='dummy_score'][data-curves='2']")
    shot(page, "board-diff.png")


def test_metric_plot_has_one_curve_per_selected_trial(page, board, shot):
    open_history(page, board)
    for trial in ("4", "5"):
        page.locator(f"tr[data-trial='{trial}'] input[type=checkbox]").check()
    page.wait_for_selector("#metric-plot[data-curves='2']")
    assert page.locator("#metric-key").input_value() == "dummy_score"
    rendered = page.evaluate(
        """() => Bokeh.documents.flatMap(d => d.roots())
              .flatMap(r => r.renderers || [])
              .filter(r => r.name && r.name.startsWith('curve-') && r.document)
              .map(r => r.name)"""
    )
    assert sorted(set(rendered)) >= ["curve-4", "curve-5"]
    shot(page, "board-metrics.png")
    page.locator("tr[data-trial='5'] input[type=checkbox]").uncheck()
    page.wait_for_selector("#metric-plot[data-curves='1']")


def test_script_values_render_as_text(watched, board):
    page = watched.page
    open_history(page, board)
    cell = page.locator("#history tbody tr[data-trial='6'] td").nth(4)  # pick, id, a, b, note
    assert cell.inner_text() == "<script>alert('x')</script>"
    assert page.locator("#history tbody script").count() == 0
    page.goto(f"{board.url}/experiments/quickstart_pj/trials/6")
    assert "<script>alert('x')</script>" in page.locator("#params").inner_text()
    assert page.locator("main script").count() == 0
    # the watched fixture fails the test if an alert() dialog ever opened


def test_experiments_page_links_to_histories(page, board, shot):
    page.goto(board.url + "/")
    links = page.locator("#experiments a").all_inner_texts()
    assert links == ["other-exp", "quickstart_pj"]
    shot(page, "board-experiments.png")
    page.locator("#experiments a", has_text="other-exp").click()
    page.wait_for_selector("#history[data-loaded='true']")
    assert row_ids(page) == [1, 2]


def test_pages_of_a_longer_history(open_page, many_board):
    page = open_page(many_board).page
    open_history(page, many_board, "many")
    assert page.locator("#page-info").inner_text() == "page 1 of 3 · 120 of 120 trials"
    assert row_ids(page) == list(range(1, 51))
    page.locator("#next").click()
    page.wait_for_selector("#page-info:has-text('page 2 of 3')")
    assert row_ids(page) == list(range(51, 101))
    page.locator("#history th[data-column='Result']").click()  # sorting goes back to page 1
    page.wait_for_selector("#page-info:has-text('page 1 of 3')")
    results = [float(t) for t in page.locator("#history tbody td:nth-child(4)").all_inner_texts()]
    assert results == sorted(results) and len(results) == 50
    page.fill("#filter", "x>100")
    page.wait_for_selector("#page-info:has-text('20 of 120 trials')")
    page.select_option("#size", "25")
    page.wait_for_selector("#page-info:has-text('page 1 of 1')")
