"""Which step runs now: the context variable a step sets while its function runs.

Kept apart from :mod:`daskperiment.steps` so that what steps call into (input-file
tracking, live metrics) can ask "am I inside a step?" without importing steps back.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .steps import StepContext

#: The running step's :class:`~daskperiment.steps.StepContext`, None outside a step.
CURRENT_STEP: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar(
    "daskperiment_step", default=None
)
