"""Hypothesis settings profiles shared by the property tests.

Importing this module registers the profiles and loads the one named by the
``HYPOTHESIS_PROFILE`` environment variable, ``ci`` by default: derandomized (the same examples
on every run, so a CI failure reproduces), no deadline (a shared machine's timing noise is not a
failure) and a modest example count to keep the suite fast. ``dev`` explores more, randomly.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
