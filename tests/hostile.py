"""What an attacker plants: pickle objects that leave a marker file when unpickled.

A :class:`Marker` pickles to a call of ``pathlib.Path.touch`` on a chosen path, so it needs
nothing of the tests to unpickle (a fresh CLI process or the dashboard would run it just the
same): the marker file existing afterwards is proof that some reader unpickled it.
"""

from __future__ import annotations

import pathlib
from pathlib import Path
from typing import Any

import daskperiment_store as store
from daskperiment_store import Link


def build_three_trials(cache: Path, experiment_id: str) -> None:
    """Three real trials (a persisted step, a metric ``loss``) in ``cache/<experiment_id>``."""
    import daskperiment

    ex = daskperiment.Experiment(id=experiment_id, backend=cache / experiment_id)
    a = ex.parameter("a")

    @ex.persist
    def prepare(a):
        return a + 1

    @ex.result
    def score(x):
        for i in range(3):
            ex.save_metric("loss", epoch=i, value=float(x - i))
        return x * 2

    for value in (1, 2, 3):
        ex.set_parameters(a=value)
        score(prepare(a)).compute()


class Marker:
    """Unpickling this touches ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def plant_pickle(st: store.Store, marker: Path) -> str:
    """A correctly hashed ``pickle`` object in ``st`` that touches ``marker`` when loaded."""
    oid = st.put(Marker(marker))
    assert st.info(oid).kind == "pickle"
    assert not marker.exists()
    return oid


def trial_ref(experiment_id: str, trial_id: int | str) -> str:
    return f"experiments/{experiment_id}/trials/{trial_id}"


def record_of(st: store.Store, experiment_id: str, trial_id: int) -> dict[str, Any]:
    """The stored record of a trial (a plain JSON read: it is ours)."""
    return st.get(st.refs.get(trial_ref(experiment_id, trial_id)), kinds={"json"})


def plant_record(
    st: store.Store, experiment_id: str, trial_id: int, base: dict[str, Any], **links: str
) -> str:
    """A well-formed trial record ``trial_id`` copied from ``base`` whose fields in ``links``
    (``code``, ``environment``, ``parameters``, ``metrics:<key>``) name other objects; its
    ref is set. Returns the record's oid."""
    record = dict(base, trial_id=trial_id)
    for field, oid in links.items():
        if field.startswith("metrics:"):
            record["metrics"] = {**(record.get("metrics") or {}), field[8:]: Link(oid)}
        else:
            record[field] = Link(oid)
    oid = st.put(record)
    st.refs.set(trial_ref(experiment_id, trial_id), oid)
    return oid
