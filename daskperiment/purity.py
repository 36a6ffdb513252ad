"""Purity: a step that gives a different output for the same input is reported.

For every step that ran, the ref ``experiments/<id>/purity/<step>/<input-digest>`` names a
tiny object ``{"type": "daskperiment.purity", "output": <output digest>}``: the last output
seen for that input. (The ref names that object rather than the output itself because most
outputs are never stored, and a ref must name an object the store holds.) A different output
logs the seed's warning and moves the ref. Only digests are compared, never values; the
expected object's digest is computed, not read, so an unchanged step costs one ref read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import store
from store import codec

from .log import logger

PURITY_TYPE = "daskperiment.purity"


def purity_ref(experiment_id: str, step: str, inputs: str) -> str:
    """Name of the ref remembering the output of ``step`` for input digest ``inputs``."""
    return f"experiments/{experiment_id}/purity/{step}/{inputs}"


def check(st: store.Store, experiment_id: str, steps: Mapping[str, Mapping[str, Any]]) -> None:
    """Compare each step's output with the one remembered for its input; warn and update.

    Steps whose input or output could not be digested, and steps whose output was reused
    rather than computed, are skipped.
    """
    for entry in steps.values():
        inputs, output = entry.get("inputs"), entry.get("output")
        if not inputs or not output or entry.get("reused"):
            continue
        name = purity_ref(experiment_id, entry["step"], inputs)
        marker = {"type": PURITY_TYPE, "output": output}
        expected = codec.digest(marker)
        try:
            previous = st.refs.get(name)
        except store.errors.RefNotFound:
            previous = None
        if previous == expected:
            continue
        if previous is not None:
            logger.warning(
                "Experiment step result is changed with the same input: "
                "(step: %s, args: %s, kwargs: %s)",
                entry["step"],
                entry.get("args"),
                entry.get("kwargs"),
            )
        st.refs.set(name, st.put(marker))
