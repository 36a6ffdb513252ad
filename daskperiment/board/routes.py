"""The dashboard's URLs: HTML pages and the JSON endpoints their JavaScript calls.

Every path parameter is validated before use: experiment ids must match the id pattern and
exist in the catalog, trial ids are positive decimal integers. Nothing in a URL ever becomes
a filesystem path (static files are served from a fixed whitelist in ``server.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import pages
from .catalog import Catalog, ExperimentView, parse_trial_id
from .codediff import classify, diff_stat
from .compare import MAX_COMPARE, changed_files, comparison, source_change
from .errors import BadRequest
from .parallel import parse_brushes
from .query import HistoryQuery, QueryError

#: Most trials one request may name (comparison, overlaid curves).
MAX_SELECTED = MAX_COMPARE


@dataclass
class Response:
    """What a route returns; the server adds the security headers."""

    body: bytes
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


Params = dict[str, str]
Handler = Callable[[Catalog, dict[str, str], Params], Response]


def json_response(value: Any, status: int = 200) -> Response:
    body = json.dumps(value, allow_nan=False, separators=(",", ":")).encode()
    return Response(body, "application/json", status, {"Cache-Control": "no-store"})


def html_response(text: str, status: int = 200) -> Response:
    return Response(
        text.encode(), "text/html; charset=utf-8", status, {"Cache-Control": "no-store"}
    )


def _int_param(params: Params, name: str, default: int) -> int:
    text = params.get(name)
    if text is None or text == "":
        return default
    if not re.fullmatch(r"[0-9]{1,9}", text):
        raise BadRequest(f"parameter {name!r} must be a non-negative integer, not {text!r}")
    return int(text)


def _trial_list(params: Params, name: str = "trials") -> list[int]:
    text = params.get(name, "")
    if not text:
        raise BadRequest(f"parameter {name!r} is required: comma-separated trial ids like 1,2,5")
    ids = list(dict.fromkeys(parse_trial_id(part) for part in text.split(",")))
    if len(ids) > MAX_SELECTED:
        raise BadRequest(f"at most {MAX_SELECTED} trials at once, got {len(ids)}; select fewer")
    return ids


def _required(params: Params, name: str) -> str:
    value = params.get(name, "")
    if not value:
        raise BadRequest(f"parameter {name!r} is required")
    return value


# HTML pages --------------------------------------------------------------------------
def page_experiments(catalog: Catalog, path: dict[str, str], params: Params) -> Response:
    return html_response(pages.experiments_page(catalog.experiments(), catalog.label))


def page_history(catalog: Catalog, path: dict[str, str], params: Params) -> Response:
    view = catalog.view(path["exp"])
    return html_response(pages.history_page(view.id, catalog.label))


def page_trial(catalog: Catalog, path: dict[str, str], params: Params) -> Response:
    view = catalog.view(path["exp"])
    trial_id = parse_trial_id(path["trial"])
    record = view.trial(trial_id)
    record.setdefault("id", trial_id)
    has_next = view.has_trial(trial_id + 1)
    text = pages.trial_page(view.id, record, view.code(trial_id), catalog.label, has_next)
    return html_response(text)


def page_diff(catalog: Catalog, path: dict[str, str], params: Params) -> Response:
    view = catalog.view(path["exp"])
    a = parse_trial_id(_required(params, "a"))
    b = parse_trial_id(_required(params, "b"))
    text = view.diff(a, b)
    record_a, record_b = view.trial(a), view.trial(b)
    inputs = {
        "files": changed_files(record_a, record_b),
        "source": source_change(record_a, record_b),
    }
    return html_response(pages.diff_page(view.id, a, b, text, catalog.label, inputs))


def page_compare(catalog: Catalog, path: dict[str, str], params: Params) -> Response:
    view = catalog.view(path["exp"])
    ids = _trial_list(params)
    return html_response(pages.compare_page(view.id, _comparison(view, ids), catalog.label))


# JSON endpoints ----------------------------------------------------------------------
def api_experiments(catalog: Catalog, path: dict[str, str], params: Params) -> Response:
    return json_response({"experiments": catalog.experiments()})


def _history_query(params: Params) -> HistoryQuery:
    order = params.get("order", "asc")
    if order not in ("asc", "desc"):
        raise BadRequest(f"parameter 'order' must be asc or desc, not {order!r}")
    return HistoryQuery(
        page=_int_param(params, "page", 1),
        size=_int_param(params, "size", 50),
        sort=params.get("sort") or "Trial ID",
        descending=order == "desc",
        filter=params.get("q", ""),
        status=params.get("status", "all"),
    )


def _flag(params: Params, name: str) -> bool:
    value = params.get(name, "")
    if value not in ("", "0", "1"):
        raise BadRequest(f"parameter {name!r} must be 0 or 1, not {value!r}")
    return value == "1"


def api_history(catalog: Catalog, path: dict[str, str], params: Params) -> Response:
    view = catalog.view(path["exp"])
    try:
        brushes = parse_brushes(params.get("brush", ""))
        return json_response(view.query(_history_query(params), brushes))
    except QueryError as exc:
        raise BadRequest(str(exc)) from None


def api_matching(catalog: Catalog, path: dict[str, str], params: Params) -> Response:
    """Ids of every trial the filter, status and brushes keep ("select all matching")."""
    view = catalog.view(path["exp"])
    try:
        brushes = parse_brushes(params.get("brush", ""))
        return json_response({"ids": view.matching(_history_query(params), brushes)})
    except QueryError as exc:
        raise BadRequest(str(exc)) from None


def api_parallel(catalog: Catalog, path: dict[str, str], params: Params) -> Response:
    view = catalog.view(path["exp"])
    try:
        return json_response(view.parallel(_history_query(params)))
    except QueryError as exc:
        raise BadRequest(str(exc)) from None


def _comparison(view: ExperimentView, ids: list[int]) -> dict[str, Any]:
    frame = view.snapshot().frame
    missing = [t for t in ids if t not in frame.index]
    if missing:
        view.trial(missing[0])  # TrialNotFound (404) for an unknown id
        frame = view.snapshot().frame  # a trial added since the table was read
    records = {t: view.trial(t) for t in ids}
    return comparison(frame, [t for t in ids if t in frame.index], records)


def api_compare(catalog: Catalog, path: dict[str, str], params: Params) -> Response:
    view = catalog.view(path["exp"])
    return json_response(_comparison(view, _trial_list(params)))


def api_version(catalog: Catalog, path: dict[str, str], params: Params) -> Response:
    return json_response({"version": catalog.view(path["exp"]).snapshot().version})


def api_trial(catalog: Catalog, path: dict[str, str], params: Params) -> Response:
    view = catalog.view(path["exp"])
    return json_response(view.trial(parse_trial_id(path["trial"])))


def api_code(catalog: Catalog, path: dict[str, str], params: Params) -> Response:
    view = catalog.view(path["exp"])
    trial_id = parse_trial_id(path["trial"])
    view.trial(trial_id)
    return json_response({"trial": trial_id, "code": view.code(trial_id)})


def api_metric_keys(catalog: Catalog, path: dict[str, str], params: Params) -> Response:
    view = catalog.view(path["exp"])
    trials = _trial_list(params)
    running = [t for t in trials if view.is_running(t)]
    return json_response({"keys": view.metric_keys(trials), "running": running})


def api_metrics(catalog: Catalog, path: dict[str, str], params: Params) -> Response:
    view = catalog.view(path["exp"])
    key = _required(params, "key")
    trials = _trial_list(params)
    series = {str(t): view.metric_series(key, t) for t in trials}
    running = [t for t in trials if view.is_running(t)]
    return json_response({"key": key, "series": series, "running": running})


def api_result_plot(catalog: Catalog, path: dict[str, str], params: Params) -> Response:
    from .plots import PlotError, result_plot

    view = catalog.view(path["exp"])
    param = _required(params, "param")
    color = params.get("color") or None
    frame = view.snapshot().frame
    for name in (param, color):
        if name is not None and name not in frame.columns:
            raise BadRequest(f"no column {name!r} in the history of {view.id!r}")
    logs = (_flag(params, "xlog"), _flag(params, "ylog"))
    try:
        return json_response(result_plot(frame, param, view.id, color=color, logs=logs))
    except PlotError as exc:
        raise BadRequest(str(exc)) from None


def api_metric_plot(catalog: Catalog, path: dict[str, str], params: Params) -> Response:
    from .plots import metric_plot

    view = catalog.view(path["exp"])
    key = _required(params, "key")
    trials = _trial_list(params)
    series = {t: view.metric_series(key, t) for t in trials}
    logs = (_flag(params, "xlog"), _flag(params, "ylog"))
    return json_response(
        {
            "item": metric_plot(key, series, logs=logs),
            "curves": len(trials),
            "points": sum(len(points["epoch"]) for points in series.values()),
            "running": [t for t in trials if view.is_running(t)],
        }
    )


def api_diff(catalog: Catalog, path: dict[str, str], params: Params) -> Response:
    view = catalog.view(path["exp"])
    a = parse_trial_id(_required(params, "a"))
    b = parse_trial_id(_required(params, "b"))
    lines = classify(view.diff(a, b))
    added, removed = diff_stat(lines)
    return json_response(
        {
            "a": a,
            "b": b,
            "added": added,
            "removed": removed,
            "lines": [{"kind": line.kind, "text": line.text} for line in lines],
        }
    )


_EXP = r"(?P<exp>[^/]+)"
_TRIAL = r"(?P<trial>[^/]+)"

ROUTES: list[tuple[re.Pattern[str], Handler]] = [
    (re.compile(rf"^{pattern}$"), handler)
    for pattern, handler in [
        (r"/", page_experiments),
        (rf"/experiments/{_EXP}/?", page_history),
        (rf"/experiments/{_EXP}/trials/{_TRIAL}", page_trial),
        (rf"/experiments/{_EXP}/diff", page_diff),
        (rf"/experiments/{_EXP}/compare", page_compare),
        (r"/api/experiments", api_experiments),
        (rf"/api/experiments/{_EXP}/history", api_history),
        (rf"/api/experiments/{_EXP}/version", api_version),
        (rf"/api/experiments/{_EXP}/trials/{_TRIAL}", api_trial),
        (rf"/api/experiments/{_EXP}/trials/{_TRIAL}/code", api_code),
        (rf"/api/experiments/{_EXP}/metric-keys", api_metric_keys),
        (rf"/api/experiments/{_EXP}/metrics", api_metrics),
        (rf"/api/experiments/{_EXP}/plots/result", api_result_plot),
        (rf"/api/experiments/{_EXP}/plots/metric", api_metric_plot),
        (rf"/api/experiments/{_EXP}/diff", api_diff),
        (rf"/api/experiments/{_EXP}/compare", api_compare),
        (rf"/api/experiments/{_EXP}/parallel", api_parallel),
        (rf"/api/experiments/{_EXP}/matching", api_matching),
    ]
]


def match(path: str) -> tuple[Handler, dict[str, str]] | None:
    """The handler for ``path`` and its path parameters, or None."""
    for pattern, handler in ROUTES:
        found = pattern.match(path)
        if found:
            return handler, found.groupdict()
    return None
