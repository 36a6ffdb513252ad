"""Rich reprs: checked structurally with an HTML parser, then rendered in a real Jupyter kernel.

Plain ``repr()`` stays what it was; notebooks get HTML with the dashboard's diff colours.
"""

from __future__ import annotations

import os
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import daskperiment
from daskperiment.html import DIFF_STYLES, Text

REPO = Path(__file__).resolve().parents[2]


class Tree(HTMLParser):
    """Tags with their attributes and the text inside each (a structural view)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.rows: list[tuple[dict[str, str], str]] = []
        self.text: list[str] = []
        self._row: dict[str, str] | None = None
        self._row_text: list[str] = []
        self.stack: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.tags.append((tag, attributes))
        self.stack.append(tag)
        if tag == "tr":
            self._row, self._row_text = attributes, []

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if tag == "tr" and self._row is not None:
            self.rows.append((self._row, "".join(self._row_text)))
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._row is not None:
            self._row_text.append(data)


def experiment(tmp_path: Path) -> tuple[Any, Any]:
    ex = daskperiment.Experiment("html_pj", backend=tmp_path / "store")
    a = ex.parameter("a")
    b = ex.parameter("b", default=2)

    @ex
    def prepare(a, b):
        return f"{a}{b}"

    @ex.result
    def score(s):
        ex.save_metric("loss", epoch=0, value=1.0 / len(s))
        return 10 / len(s)

    ex.set_parameters(a=1)
    r = score(prepare(a, b))
    r.compute(seed=1)
    ex.set_parameters(a="<b>3</b>")  # escaped, never markup

    @ex.result
    def score(s):  # noqa: F811 - a changed step, as in a notebook
        return 100 / len(str(s))

    score(prepare(a, b)).compute(seed=2)
    return ex, r


def test_experiment_html(tmp_path: Path) -> None:
    ex, _ = experiment(tmp_path)
    plain = repr(ex)
    assert plain.startswith("Experiment(id: html_pj, trial_id: 2, backend: LocalBackend(")
    tree = Tree(ex._repr_html_())
    assert not tree.stack  # every tag closed
    assert ("div", {}) != tree.tags[0] and "daskperiment-experiment" in tree.tags[0][1]["class"]
    text = "".join(tree.text)
    assert "Experiment html_pj" in text and "2 trials" in text
    assert "<b>3</b>" in text  # the value as text: escaped in the HTML
    assert not any(tag == "b" for tag, _ in tree.tags)


def test_trial_html_and_plain_dict(tmp_path: Path) -> None:
    ex, _ = experiment(tmp_path)
    info = ex.get_trial(1)
    assert isinstance(info, dict) and repr(info).startswith("{")
    tree = Tree(info._repr_html_())
    text = "".join(tree.text)
    assert "Trial 1 of html_pj" in text and "success" in text
    rows = [t for _, t in tree.rows]
    assert "a1" in rows and "b2" in rows  # parameter table rows: name, value
    assert any(r.startswith("prepare") for r in rows) and "loss" in rows


def test_diff_html_is_coloured_like_the_dashboard(tmp_path: Path) -> None:
    ex, _ = experiment(tmp_path)
    diff = ex.diff(1, 2)
    assert repr(diff).startswith("TrialDiff(experiment: html_pj, a: 1, b: 2, changed: ")
    tree = Tree(diff._repr_html_())
    by_kind: dict[str, list[str]] = {}
    for attrs, text in tree.rows:
        if "class" in attrs:
            by_kind.setdefault(attrs["class"], []).append(text)
            assert attrs["style"] == DIFF_STYLES[attrs["class"]]
    assert any("return 100 / len(str(s))" in t for t in by_kind["add"])
    assert any("return 10 / len(s)" in t for t in by_kind["del"])
    assert by_kind["hunk"] and by_kind["file"]
    param_rows = [t for attrs, t in tree.rows if "class" not in attrs]
    assert "a1<b>3</b>" in param_rows  # parameter, trial 1, trial 2
    identical = ex.diff(1, 1)._repr_html_()
    assert "identical" in identical


def test_stat_and_render_are_text_in_notebooks(tmp_path: Path) -> None:
    ex, _ = experiment(tmp_path)
    stat = ex.diff(1, 2).stat()
    assert isinstance(stat, str) and isinstance(stat, Text)
    assert Tree(stat._repr_html_()).tags[0][0] == "pre"
    assert "file" in stat and "changed" in stat


NOTEBOOK_CELLS = [
    """
import daskperiment
ex = daskperiment.Experiment('nb_html', backend='store')
a = ex.parameter('a', default=1)

@ex.result
def f(a):
    return a * 2

r = f(a)
r.compute(seed=1)
ex.set_parameters(a=5)
r.compute(seed=1)
""",
    "ex",
    "ex.get_trial(2)",
    "ex.diff(1, 2)",
    "ex.diff(1, 2).stat()",
    "ex.sweep(r, grid={'a': [7, 8]}, progress=False)",
]


@pytest.mark.slow
def test_rendered_in_a_real_jupyter_kernel(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(c.strip()) for c in NOTEBOOK_CELLS]
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    client = nbclient.NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=env)
    results = []
    for cell in notebook.cells[1:]:
        (out,) = [o for o in cell.outputs if o.output_type == "execute_result"]
        results.append(out.data)
    experiment_out, trial_out, diff_out, stat_out, sweep_out = results
    assert experiment_out["text/plain"].startswith("Experiment(id: nb_html, trial_id: 2")
    assert "daskperiment-experiment" in experiment_out["text/html"]
    assert "Trial 2 of nb_html" in trial_out["text/html"]
    assert trial_out["text/plain"].startswith("{")
    assert 'class="add"' in diff_out["text/html"] and 'class="del"' in diff_out["text/html"]
    assert diff_out["text/plain"].startswith("TrialDiff(experiment: nb_html, a: 1, b: 2")
    assert stat_out["text/html"].startswith("<pre")
    assert "\\n" not in stat_out["text/plain"]  # shown as text, not an escaped string
    assert "<table" in sweep_out["text/html"]
