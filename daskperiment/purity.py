"""Purity: a step that gives a different output for the same input is reported.

For every step that ran, the ref ``experiments/<id>/purity/<step>/<input-digest>`` names the
record of the last trial in which that step gave a *new* output for that input (the record
holds the step's input and output digests). After a trial computed, each step's output digest
is compared with the one in the record the ref names: a different digest logs the seed's
warning, and once the new trial record is stored the ref is moved to it. Only digests are
compared, never values, so an unchanged step costs one small read. For a step that read
files, the input digest also covers their content digests
(:func:`daskperiment.provenance.inputs.purity_inputs`): new data is a new input, not an
impure step.

The ref names a trial record rather than the output itself because most step outputs are
never stored, and a ref must name an object the store holds. (Refs naming a marker object
``{"type": "daskperiment.purity", "output": <digest>}`` are read as well.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import daskperiment_store as store

from .log import logger
from .provenance import inputs as input_files
from .reads import MALFORMED, read_json
from .record import purity_ref

PURITY_TYPE = "daskperiment.purity"

#: Outputs found in records the purity refs name, by (record oid, step, inputs): records
#: never change, so this is never stale.
_SEEN: dict[tuple[str, str, str], str | None] = {}
_SEEN_MAX = 10_000


def check(st: store.Store, experiment_id: str, steps: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Warn for each step whose output differs from the one remembered for its input.

    Returns the purity refs to point at this trial's record once it is stored (new inputs
    and changed outputs). Steps whose input or output could not be digested, and steps
    whose output was reused rather than computed, are skipped.
    """
    updates = []
    for entry in steps.values():
        inputs, output = input_files.purity_inputs(entry), entry.get("output")
        if not inputs or not output or entry.get("reused"):
            continue
        name = purity_ref(experiment_id, entry["step"], inputs)
        try:
            previous = st.refs.get(name)
            remembered = remembered_output(st, previous, entry["step"], inputs)
        except store.errors.RefNotFound:
            updates.append(name)
            continue
        except (store.errors.StoreError, AttributeError, TypeError) as exc:
            # Derived data: a damaged purity ref (or the record it names) is rebuilt.
            logger.debug("purity ref %s ignored and rebuilt: %s", name, exc)
            updates.append(name)
            continue
        if remembered == output:
            continue
        logger.warning(
            "Experiment step result is changed with the same input: "
            "(step: %s, args: %s, kwargs: %s)",
            entry["step"],
            entry.get("args"),
            entry.get("kwargs"),
        )
        updates.append(name)
    return updates


def remember(st: store.Store, names: Iterable[str], record_oid: str) -> None:
    """Point the purity refs ``names`` at the trial record ``record_oid``."""
    for name in names:
        st.refs.set(name, store.Oid(record_oid))


def remembered_output(st: store.Store, oid: str, step: str, inputs: str) -> str | None:
    """The output digest the object ``oid`` (a trial record or a marker) remembers."""
    key = (oid, step, inputs)
    if key in _SEEN:
        return _SEEN[key]
    try:
        obj: Any = read_json(st, oid)
    except MALFORMED:  # not a record or marker: remembers nothing, and is never decoded
        obj = None
    found = None
    if isinstance(obj, dict) and obj.get("type") == PURITY_TYPE:
        found = obj.get("output")
    elif isinstance(obj, dict):
        for entry in (obj.get("steps") or {}).values():
            if entry.get("step") == step and input_files.purity_inputs(entry) == inputs:
                found = entry.get("output")
                break
    if len(_SEEN) >= _SEEN_MAX:
        _SEEN.clear()
    _SEEN[key] = found
    return found
