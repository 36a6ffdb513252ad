"""The trial seed: drawn or given once per trial, applied in every step wherever it runs.

Rule: each step, on whatever worker runs it, seeds Python's :mod:`random` and numpy's global
generator with the trial seed immediately before the step's function is called. Seeding per
step (rather than once per process) is what makes a trial reproducible under every scheduler:
a step's random draws depend only on the trial seed and on the step's own code, never on which
other steps happened to run earlier in the same worker.
"""

from __future__ import annotations

import random
import secrets
import sys

#: numpy's legacy global generator accepts seeds in [0, 2**32).
MAX_SEED = 2**32 - 1
#: Generated seeds stay below 2**31 so they also fit a signed 32-bit int in other tools.
_GENERATED_BOUND = 2**31


def draw_seed() -> int:
    """A fresh seed from the operating system's entropy source."""
    return secrets.randbelow(_GENERATED_BOUND)


def validate_seed(seed: object) -> int:
    """Return ``seed`` as an ``int`` or raise ``ValueError`` saying what a seed may be."""
    if isinstance(seed, bool) or not isinstance(seed, int | _numpy_integer()):
        raise ValueError(
            f"seed must be an integer between 0 and {MAX_SEED}, got {seed!r} "
            f"({type(seed).__name__})"
        )
    value = int(seed)  # type: ignore[arg-type,call-overload]
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"seed must be an integer between 0 and {MAX_SEED}, got {value}")
    return value


def apply_seed(seed: int) -> None:
    """Seed Python's ``random`` and, when numpy is imported or importable, its global RNG."""
    random.seed(seed)
    np = sys.modules.get("numpy")
    if np is None:
        try:
            import numpy as np
        except ImportError:  # numpy is a dependency, but a step may run in a bare worker
            return
    np.random.seed(seed)  # type: ignore[union-attr]


def _numpy_integer() -> type:
    np = sys.modules.get("numpy")
    return np.integer if np is not None else int
