"""Provenance in the trial record: what :class:`daskperiment.trial.TrialRun` adds.

Per trial: ``"source"`` (a link to the source tree, :mod:`.sourcetree`) and, for a trial run by ``daskperiment reproduce``, ``"reproduces"`` (the
original trial id). Per step: ``"closure"`` (a link to the closure tree: helper name -> link
to its source text, :mod:`.closure`) and ``"libraries"`` (``{distribution: version}``).

``DASKPERIMENT_PROVENANCE=0`` turns all of it off (the benchmark's baseline).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import daskperiment_store as store
from daskperiment_store import Link, Oid

from ..steps import StepSpec
from . import closure as _closure
from . import sourcetree

CLOSURE_TYPE = "daskperiment.closure"
#: Environment variable naming the trial a reproduction re-runs: ``<experiment>:<trial>``.
REPRODUCES_ENV = "DASKPERIMENT_REPRODUCES"

_closure_oids: dict[int, tuple[_closure.Closure, str]] = {}
_written: dict[int, tuple[store.Store, set[str]]] = {}


def _closure_oid(st: store.Store, c: _closure.Closure) -> str:
    cached = _closure_oids.get(id(c))
    held = _written.get(id(st))
    if held is None or held[0] is not st:  # a new store object, perhaps at an old id()
        held = _written[id(st)] = (st, set())
    written = held[1]
    if cached is not None and cached[0] is c and cached[1] in written:
        return cached[1]
    entries = {name: Link(st.put(text)) for name, text in sorted(c.entries.items())}
    oid = st.put({"type": CLOSURE_TYPE, "entries": entries})
    _closure_oids[id(c)] = (c, oid)
    written.add(oid)
    return oid


def apply(
    base: dict[str, Any], st: store.Store, experiment_id: str, specs: Iterable[StepSpec]
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Add the trial's provenance to ``base``; return per-step fields and cache-key parts."""
    if _closure.disabled():
        return {}, {}
    source = sourcetree.capture(st)
    if source is not None:
        base["source"] = Link(Oid(source))
    marker = os.environ.get(REPRODUCES_ENV, "")
    exp, _, trial_id = marker.rpartition(":")
    if exp == experiment_id and trial_id.isdigit():
        base["reproduces"] = int(trial_id)
    steps: dict[str, dict[str, Any]] = {}
    deps: dict[str, str] = {}
    for spec in specs:
        c = _closure.of(spec.func)
        steps[spec.name] = {"closure": Link(Oid(_closure_oid(st, c))), "libraries": c.libraries}
        deps[spec.name] = c.key
    return steps, deps


def dependency_key(spec: StepSpec, trial: Any) -> str | None:
    """The closure-and-libraries part of ``spec``'s cache key in ``trial``.

    Taken from the trial context (computed on the client, so every worker uses the same),
    else computed in this process; None when provenance is off.
    """
    deps = getattr(trial, "deps", None)
    if deps and spec.name in deps:
        return deps[spec.name]
    if _closure.disabled():
        return None
    return _closure.of(spec.func).key
