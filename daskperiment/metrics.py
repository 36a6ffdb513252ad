"""Metrics: points saved during a step, stored as one columnar object per key per trial.

``save_metric`` appends to two Python lists (the cheapest thing per point); when the step
ends each key becomes one ``pandas.Series`` (index: the epochs, values: the metric) written as
one object, so a trial costs one write per metric key, not one per point, and loading a
metric is one read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    import daskperiment_store as store


class MetricBuffer:
    """Points of every metric key saved by one running step, in memory."""

    __slots__ = ("_points", "on_first_point")

    def __init__(self, on_first_point: Callable[[], None] | None = None) -> None:
        self._points: dict[str, tuple[list, list]] = {}
        #: Called once, just before the first point is kept (the running step's live view
        #: starts there, so steps that save no metrics cost the live thread nothing).
        self.on_first_point = on_first_point

    def add(self, key: str, epoch: Any, value: Any) -> None:
        """Append one point (no conversion here: that happens once, when the step ends)."""
        points = self._points.get(key)
        if points is None:
            if not isinstance(key, str):
                raise TypeError(f"metric key must be a str, got {key!r}")
            if self.on_first_point is not None:
                hook, self.on_first_point = self.on_first_point, None
                hook()
            points = self._points[key] = ([], [])
        points[0].append(epoch)
        points[1].append(value)

    @property
    def keys(self) -> list[str]:
        return list(self._points)

    def snapshot(self) -> dict[str, tuple[list, list]]:
        """Copies of the points saved so far, safe to take from another thread while the
        step goes on saving (the live view of a running trial, daskperiment/live.py)."""
        out = {}
        for key, (epochs, values) in list(self._points.items()):
            n = len(values)  # add() appends the epoch first: both lists hold >= n points
            out[key] = (epochs[:n], values[:n])
        return out

    def flush(self, st: store.Store | None, record: dict[str, Any]) -> dict[str, str]:
        """Write one object per key; return ``{key: oid}``.

        With no store reachable from this process the series are left in
        ``record["_deferred_metrics"]`` for the client to write.
        """
        if not self._points:
            return {}
        series = {key: to_series(key, e, v) for key, (e, v) in self._points.items()}
        self._points = {}
        if st is None:
            record["_deferred_metrics"] = series
            from daskperiment_store import codec

            return {key: codec.digest(s) for key, s in series.items()}
        return {key: st.put(s) for key, s in series.items()}


def to_series(key: str, epochs: list, values: list) -> pd.Series:
    """The stored form of one metric: values indexed by epoch."""
    import numpy as np
    import pandas as pd

    index = pd.Index(_array(np, epochs), name="epoch")
    return pd.Series(_array(np, values), index=index, name=key)


def _array(np: Any, items: list) -> Any:
    try:
        return np.asarray(items)
    except (ValueError, TypeError):  # ragged values: keep them as objects
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out


def merge_series(parts: Iterable[pd.Series]) -> pd.Series:
    """One series from the parts of a key saved by several steps of one trial."""
    import pandas as pd

    parts = list(parts)
    return parts[0] if len(parts) == 1 else pd.concat(parts)


def frame(series_by_trial: Mapping[int, pd.Series]) -> pd.DataFrame:
    """A DataFrame whose columns are trial ids (named ``Trial ID``), indexed by epoch."""
    import pandas as pd

    columns = {}
    for trial_id, s in series_by_trial.items():
        if len(series_by_trial) > 1 and not s.index.is_unique:
            # Aligning trials needs one value per epoch: keep the last one saved.
            s = s[~s.index.duplicated(keep="last")]
        columns[trial_id] = s.rename(trial_id)
    if len(columns) == 1:
        ((trial_id, s),) = columns.items()
        df = s.to_frame()
    else:
        df = pd.concat(columns.values(), axis=1)
    df.index.name = None
    df.columns = pd.Index(list(columns), name="Trial ID")
    return df
