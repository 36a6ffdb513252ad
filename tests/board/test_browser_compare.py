"""Comparing many trials in a real headless Chromium: selection, comparison page, parallel
coordinates with brushing, log axes, state kept across a reload, system metrics plotted.

Like test_browser.py, each test fails on any JavaScript error, CSP violation or request
leaving the dashboard (the ``open_page`` fixture).
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest

pytestmark = pytest.mark.browser


@pytest.fixture
def page(open_page: Any, sweep_board: Any) -> Any:
    return open_page(sweep_board).page


def open_history(page: Any, board: Any, query: str = "") -> None:
    page.goto(f"{board.url}/experiments/sweep{query}")
    page.wait_for_selector("#history[data-loaded='true']")


def row_ids(page: Any) -> list[int]:
    return [int(x) for x in page.locator("#history tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.trial)")]  # fmt: skip


def url_params(page: Any) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(page.url).query))


def log_scales(page: Any, target: str) -> list[str]:
    """The x and y scale types of the Bokeh figure drawn in ``target``."""
    return page.evaluate(
        """(target) => {
            const id = document.querySelector(target).dataset.root;
            const doc = Bokeh.documents.find(d => d.get_model_by_id(id));
            const fig = doc.get_model_by_id(id);
            return [fig.x_scale.type, fig.y_scale.type];
        }""",
        target,
    )


def test_select_five_trials_and_compare_them(page, sweep_board, shot):
    open_history(page, sweep_board)
    for trial in (1, 2, 3, 4, 5):
        page.locator(f"tr[data-trial='{trial}'] input[type=checkbox]").check()
    assert page.locator("#compare").is_disabled()  # the two-trial diff wants exactly two
    page.locator("#compare-selected").click()
    page.wait_for_url("**/experiments/sweep/compare?trials=1,2,3,4,5")
    headers = page.locator("#compare-table th.param").all_inner_texts()
    # declaration order (lr, depth); optimizer and batch are the same in all five
    assert headers == ["lr", "depth"]
    assert "optimizer=adam" in page.locator("#same-params").inner_text()
    assert row_ids_of(page, "#compare-table") == [1, 2, 3, 4, 5]
    page.wait_for_selector("#compare-metrics .plot[data-key='loss'][data-curves='5']")
    curves = page.evaluate(
        """() => Bokeh.documents.flatMap(d => d.roots()).flatMap(r => r.renderers || [])
              .filter(r => r.name && r.name.startsWith('curve-')).map(r => r.name)"""
    )
    assert sorted(set(curves)) == [f"curve-{i}" for i in range(1, 6)]
    shot(page, "board-compare.png")


def row_ids_of(page: Any, table: str) -> list[int]:
    return [int(x) for x in page.locator(f"{table} tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.trial)")]  # fmt: skip


def axis_x(page: Any, name: str) -> float:
    """The page x coordinate of parallel axis ``name``."""
    head = page.locator(f"#parallel-axes .axis-head[data-axis='{name}']").bounding_box()
    return head["x"] + head["width"] / 2


def test_brushing_an_axis_filters_the_table(page, sweep_board, shot):
    open_history(page, sweep_board)
    page.wait_for_selector("#parallel[data-lines='8']")
    canvas = page.locator("#parallel").bounding_box()
    x = axis_x(page, "optimizer")
    # optimizer has two categories: adam at the bottom, sgd at the top; keep the top half
    page.mouse.move(x, canvas["y"] + 4)
    page.mouse.down()
    page.mouse.move(x, canvas["y"] + canvas["height"] / 2, steps=4)
    page.mouse.up()
    page.wait_for_selector("#page-info:has-text('3 of 8 trials')")
    assert row_ids(page) == [6, 7, 8]
    assert page.locator("#parallel").get_attribute("data-kept") == "3"
    assert json.loads(url_params(page)["brush"]) == [{"axis": "optimizer", "values": ["sgd"]}]
    shot(page, "board-parallel.png")
    canvas, x = page.locator("#parallel").bounding_box(), axis_x(page, "optimizer")
    page.mouse.click(x, canvas["y"] + canvas["height"] / 2)  # a click drops the range
    page.wait_for_selector("#page-info:has-text('8 of 8 trials')")
    assert "brush" not in url_params(page)


def test_log_axes_toggle_in_every_plot(page, sweep_board):
    open_history(page, sweep_board)
    page.wait_for_selector("#result-plot .bk-Figure", state="attached")
    page.select_option("#result-param", "lr")
    page.wait_for_selector("#result-plot[data-xlog='0'] .bk-Figure", state="attached")
    assert log_scales(page, "#result-plot") == ["LinearScale", "LinearScale"]
    page.locator("#result-xlog").check()
    page.wait_for_selector("#result-plot[data-xlog='1'] .bk-Figure", state="attached")
    assert log_scales(page, "#result-plot") == ["LogScale", "LinearScale"]
    page.locator("#result-xlog").uncheck()
    page.wait_for_selector("#result-plot[data-xlog='0'] .bk-Figure", state="attached")
    assert log_scales(page, "#result-plot")[0] == "LinearScale"
    # the parallel axis of lr (all positive) can be logarithmic; the result's cannot
    assert page.locator("#parallel-axes .axis-head[data-axis='Result'] .axis-log").count() == 0
    page.locator("#parallel-axes .axis-head[data-axis='lr'] .axis-log").check()
    assert url_params(page)["plog"] == "lr"
    # the metric plots of a trial
    page.goto(f"{sweep_board.url}/experiments/sweep/trials/2")
    page.wait_for_selector(
        "#trial-metrics .plot[data-key='loss'][data-ylog='0'] .bk-Figure", state="attached"
    )
    page.locator("#grid-ylog").check()
    page.wait_for_selector(
        "#trial-metrics .plot[data-key='loss'][data-ylog='1'] .bk-Figure", state="attached"
    )
    assert log_scales(page, "#trial-metrics .plot[data-key='loss']") == ["LinearScale", "LogScale"]


def test_reload_keeps_filter_sort_selection_and_axes(page, sweep_board):
    open_history(page, sweep_board)
    page.fill("#filter", "depth>=4")
    page.wait_for_selector("#page-info:has-text('5 of 8 trials')")
    page.locator("#history th[data-column='lr']").click()
    page.locator("#history th[data-column='lr']").click()  # descending
    page.wait_for_selector("#history th.sorted[data-column='lr']:has-text('\u25bc')")
    page.locator("tr[data-trial='4'] input[type=checkbox]").check()
    page.locator("tr[data-trial='7'] input[type=checkbox]").check()
    page.wait_for_selector("#metric-plot[data-curves='2']")
    page.select_option("#result-param", "lr")
    page.select_option("#result-color", "optimizer")
    page.locator("#result-ylog").check()
    page.locator("#metric-ylog").check()
    page.wait_for_selector("#metric-plot[data-ylog='1'][data-curves='2']")
    expected = [5, 8, 4, 7, 2]  # depth >= 4, by lr descending
    assert row_ids(page) == expected

    page.reload()
    page.wait_for_selector("#history[data-loaded='true']")
    assert page.locator("#filter").input_value() == "depth>=4"
    assert row_ids(page) == expected
    assert "\u25bc" in page.locator("#history th.sorted[data-column='lr']").inner_text()
    checked = page.locator("#history tbody input:checked").evaluate_all(
        "boxes => boxes.map(b => b.closest('tr').dataset.trial)"
    )
    assert checked == ["4", "7"]
    assert page.locator("#selection").inner_text() == "selected: 4, 7"
    assert page.locator("#result-param").input_value() == "lr"
    assert page.locator("#result-color").input_value() == "optimizer"
    assert page.locator("#result-ylog").is_checked() and page.locator("#metric-ylog").is_checked()
    page.wait_for_selector("#metric-plot[data-ylog='1'][data-curves='2']")
    page.wait_for_selector("#result-plot[data-ylog='1'] .bk-Figure", state="attached")
    assert log_scales(page, "#result-plot") == ["LinearScale", "LogScale"]


def test_plots_asked_for_at_once_end_as_the_last_choice(page, sweep_board):
    # Several plots loading together (the result plot re-asked for at each click, metric
    # curves of a selection) each embed a Bokeh document: embedding two at once failed now
    # and then ("n is not iterable" in the result plot), and an older answer arriving last
    # could be drawn over the newer one.
    open_history(page, sweep_board, "?sel=4,7&key=loss")
    page.wait_for_selector("#result-plot .bk-Figure", state="attached")
    for _ in range(3):
        page.evaluate(
            """() => {
                const boxes = ["result-ylog", "metric-ylog", "result-xlog", "metric-xlog"];
                for (let i = 0; i < 9; i++) {  // an odd number of clicks on each: all end on
                    for (const id of boxes) {
                        const box = document.getElementById(id);
                        box.checked = !box.checked;
                        box.dispatchEvent(new Event("change"));
                    }
                }
            }"""
        )
        on = page.locator("#result-ylog").is_checked()
        flag = "1" if on else "0"
        page.wait_for_selector(
            f"#result-plot[data-ylog='{flag}'][data-xlog='{flag}'] .bk-Figure", state="attached"
        )
        page.wait_for_selector(f"#metric-plot[data-ylog='{flag}'][data-curves='2'] .bk-Figure")
        page.wait_for_timeout(300)  # any answer still on its way would land by now
        assert page.locator("#result-plot .error-line, #metric-plot .error-line").count() == 0
        scale = "LogScale" if on else "LinearScale"
        assert log_scales(page, "#result-plot") == [scale, scale]
        assert log_scales(page, "#metric-plot")[1] == scale


def test_select_all_matching_then_compare(page, sweep_board):
    open_history(page, sweep_board, "?q=optimizer%3Dsgd")
    page.wait_for_selector("#page-info:has-text('3 of 8 trials')")
    page.locator("#select-matching").click()
    page.wait_for_selector("#selection:has-text('selected: 6, 7, 8')")
    page.locator("#compare-selected").click()
    page.wait_for_url("**/compare?trials=6,7,8")
    page.wait_for_selector("#compare-metrics .plot[data-key='loss'][data-curves='3']")


def test_diff_page_overlays_the_two_curves(page, sweep_board):
    page.goto(f"{sweep_board.url}/experiments/sweep/diff?a=2&b=7")
    page.wait_for_selector("#compare-metrics .plot[data-key='loss'][data-curves='2']")
    assert page.locator("#inputs").count() == 0  # nothing recorded about input files


def test_system_metrics_of_a_busy_step_are_plotted(page, sweep_board, shot):
    page.goto(f"{sweep_board.url}/experiments/busy/trials/1")
    for key in ("sys/cpu", "sys/mem"):
        plot = page.locator(f"#trial-metrics .plot[data-key='{key}'][data-curves='1']")
        plot.wait_for()
        assert int(plot.get_attribute("data-points")) >= 2
    shot(page, "board-sysmetrics.png")
