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
#: Beyond this many curves a legend would hide the plot: hovering names the trial instead.
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
    fig.title.text_font_size = "13px"  # type: ignore[union-attr]
    fig.outline_line_color = None
    fig.grid.grid_line_alpha = 0.4
    return fig


class PlotError(ValueError):
    """A plot that cannot be drawn as asked (a log axis with no positive value...)."""


def _numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def result_plot(
    frame: pd.DataFrame,
    param: str,
    experiment_id: str,
    color: str | None = None,
    logs: tuple[bool, bool] = (False, False),
) -> dict[str, Any]:
    """Scatter of the result against parameter ``param`` (one point per finished trial),
    coloured by parameter ``color``; ``logs``: whether the x and y axes are logarithmic."""
    from bokeh.embed import json_item
    from bokeh.models import ColumnDataSource, HoverTool, OpenURL, TapTool

    xlog, ylog = logs
    result = pd.to_numeric(frame.get("Result"), errors="coerce")
    keep = np.isfinite(result.to_numpy(dtype=float, na_value=np.nan))
    numeric = _numeric(frame[param])
    if xlog and not numeric:
        raise PlotError(f"{param!r} holds categories: its axis cannot be logarithmic")
    if xlog:
        keep &= pd.to_numeric(frame[param], errors="coerce").to_numpy(dtype=float) > 0
    if ylog:
        keep &= result.to_numpy(dtype=float, na_value=np.nan) > 0
    hidden = int(np.isfinite(result.to_numpy(dtype=float, na_value=np.nan)).sum() - keep.sum())
    xs = frame[param][keep]
    data: dict[str, Any] = {
        "id": [int(i) for i in xs.index],
        "x": xs.to_numpy(dtype=float) if numeric else [format_cell(v) for v in xs],
        "y": result[keep].to_numpy(dtype=float),
        "label": [format_cell(v) for v in xs],
    }
    options: dict[str, Any] = {"x_axis_label": param, "y_axis_label": "Result"}
    if numeric:
        options["x_axis_type"] = "log" if xlog else "linear"
    else:
        options["x_range"] = sorted(set(data["x"]))
    options["y_axis_type"] = "log" if ylog else "linear"
    fig = _figure(**options)
    title = f"Result by {param}  ({len(data['id'])} trials"
    title += f"; {hidden} not positive, not shown)" if hidden else ")"
    fig.title.text = title
    tooltips = [("trial", "@id"), (param, "@label"), ("result", "@y{0.[000000]}")]
    style: dict[str, Any] = {"color": _PALETTE[0]}
    if color is not None:
        style["color"], legend = _colour(fig, frame[color][keep], color, data)
        tooltips.append((color, "@colour_label"))
        if legend:
            style["legend_field"] = "colour"
    source = ColumnDataSource(data, name="result-points")
    fig.scatter("x", "y", source=source, size=7, alpha=0.75, name="result", **style)
    if "legend_field" in style:
        fig.legend.location = "top_right"
        fig.legend.label_text_font_size = "11px"
    fig.add_tools(
        HoverTool(tooltips=tooltips),
        TapTool(callback=OpenURL(url=f"/experiments/{experiment_id}/trials/@id", same_tab=True)),
    )
    return dict(json_item(fig))


def _colour(fig: Any, values: pd.Series, name: str, data: dict[str, Any]) -> tuple[Any, bool]:
    """Colour the points by ``values``: a colour bar for numbers, a legend for categories.
    Returns the ``color`` argument of the scatter and whether a legend was added."""
    from bokeh.models import ColorBar, LinearColorMapper  # type: ignore[attr-defined]
    from bokeh.palettes import Viridis256
    from bokeh.transform import factor_cmap

    data["colour_label"] = [format_cell(v) for v in values]
    if _numeric(values) and values.notna().any():
        data["colour"] = values.to_numpy(dtype=float)
        low, high = float(values.min()), float(values.max())
        mapper = LinearColorMapper(
            palette=Viridis256, low=low, high=high if high > low else low + 1
        )
        fig.add_layout(ColorBar(color_mapper=mapper, title=name, width=10), "right")
        return {"field": "colour", "transform": mapper}, False
    factors = sorted(set(data["colour_label"]))
    data["colour"] = data["colour_label"]
    palette = [_PALETTE[i % len(_PALETTE)] for i in range(len(factors))]
    return factor_cmap("colour", palette=palette, factors=factors), len(factors) <= 20


def metric_plot(
    key: str, series: dict[int, dict[str, list]], logs: tuple[bool, bool] = (False, False)
) -> dict[str, Any]:
    """One line per trial of metric ``key`` over epochs; sources named ``trial-<id>``.
    ``logs``: whether the epoch and value axes are logarithmic (points <= 0 are not drawn
    on a log axis: Bokeh leaves them out)."""
    from bokeh.embed import json_item
    from bokeh.models import ColumnDataSource, HoverTool

    fig = _figure(
        x_axis_label="epoch",
        y_axis_label=key,
        x_axis_type="log" if logs[0] else "linear",
        y_axis_type="log" if logs[1] else "linear",
    )
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
        legend = {"legend_label": f"trial {trial_id}"} if len(series) <= MAX_CURVES else {}
        fig.line(
            "epoch", "value", source=source, line_width=2, color=color, **legend,
            name=f"curve-{trial_id}",
        )  # fmt: skip
        # markers keep a curve of one point (or a few far apart) visible
        fig.scatter(
            "epoch", "value", source=source, size=4, color=color, **legend,
            name=f"points-{trial_id}",
        )  # fmt: skip
    fig.add_tools(HoverTool(tooltips=[("trial", "@trial"), ("epoch", "@epoch"), (key, "@value")]))
    if series and len(series) <= MAX_CURVES:
        fig.legend.location = "top_right"
        fig.legend.click_policy = "hide"
        fig.legend.label_text_font_size = "11px"
    return dict(json_item(fig))
