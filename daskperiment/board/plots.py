"""Bokeh figures of the dashboard, built on the server and sent as ``json_item`` documents.

The page embeds them with the BokehJS the dashboard serves itself (no CDN). Curves carry the
name ``trial-<id>`` on their data source so the page can append live metric points to them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .query import format_cell

_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
#: Overlaying more curves than this makes a plot unreadable; the page asks for fewer.
MAX_CURVES = 20


def _figure(**kwargs: Any) -> Any:
    from bokeh.plotting import figure

    fig = figure(
        height=320,
        sizing_mode="stretch_width",
        tools="pan,wheel_zoom,box_zoom,reset,save",
        toolbar_location="above",
        **kwargs,
    )
    fig.title.text_font_size = "13px"
    fig.outline_line_color = None
    fig.grid.grid_line_alpha = 0.4
    return fig


def result_plot(frame: pd.DataFrame, param: str, experiment_id: str) -> dict[str, Any]:
    """Scatter of the result against parameter ``param`` (one point per finished trial)."""
    from bokeh.embed import json_item
    from bokeh.models import ColumnDataSource, HoverTool, OpenURL, TapTool

    result = pd.to_numeric(frame.get("Result"), errors="coerce")
    keep = np.isfinite(result.to_numpy(dtype=float, na_value=np.nan))
    xs = frame[param][keep]
    numeric = pd.api.types.is_numeric_dtype(xs) and not pd.api.types.is_bool_dtype(xs)
    data = {
        "id": [int(i) for i in xs.index],
        "x": xs.to_numpy(dtype=float) if numeric else [format_cell(v) for v in xs],
        "y": result[keep].to_numpy(dtype=float),
    }
    data["label"] = [format_cell(v) for v in xs]
    source = ColumnDataSource(data, name="result-points")
    if numeric:
        fig = _figure(x_axis_label=param, y_axis_label="Result")
    else:
        fig = _figure(x_range=sorted(set(data["x"])), x_axis_label=param, y_axis_label="Result")
    fig.title.text = f"Result by {param}  ({len(data['id'])} trials)"
    fig.scatter("x", "y", source=source, size=7, alpha=0.7, color=_PALETTE[0], name="result")
    fig.add_tools(
        HoverTool(tooltips=[("trial", "@id"), (param, "@label"), ("result", "@y{0.[000000]}")]),
        TapTool(callback=OpenURL(url=f"/experiments/{experiment_id}/trials/@id", same_tab=True)),
    )
    return json_item(fig)


def metric_plot(key: str, series: dict[int, dict[str, list]]) -> dict[str, Any]:
    """One line per trial of metric ``key`` over epochs; sources named ``trial-<id>``."""
    from bokeh.embed import json_item
    from bokeh.models import ColumnDataSource, HoverTool

    fig = _figure(x_axis_label="epoch", y_axis_label=key)
    fig.title.text = key
    for index, (trial_id, points) in enumerate(series.items()):
        source = ColumnDataSource(
            {
                "epoch": points["epoch"],
                "value": points["value"],
                "trial": [trial_id] * len(points["epoch"]),
            },
            name=f"trial-{trial_id}",
        )
        color = _PALETTE[index % len(_PALETTE)]
        label = f"trial {trial_id}"
        fig.line(
            "epoch", "value", source=source, line_width=2, color=color, legend_label=label,
            name=f"curve-{trial_id}",
        )  # fmt: skip
        # markers keep a curve of one point (or a few far apart) visible
        fig.scatter(
            "epoch", "value", source=source, size=4, color=color, legend_label=label,
            name=f"points-{trial_id}",
        )  # fmt: skip
    fig.add_tools(HoverTool(tooltips=[("trial", "@trial"), ("epoch", "@epoch"), (key, "@value")]))
    if series:
        fig.legend.location = "top_right"
        fig.legend.click_policy = "hide"
        fig.legend.label_text_font_size = "11px"
    return json_item(fig)
