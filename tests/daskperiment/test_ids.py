"""The one rule for experiment and trial ids (daskperiment.ids)."""

from __future__ import annotations

import pytest

from daskperiment import ids
from daskperiment.errors import InvalidExperimentId, InvalidTrialId


@pytest.mark.parametrize("text", ["1", "7", "42", str(2**63 - 1)])
def test_canonical_trial_ids(text: str) -> None:
    assert ids.parse_trial_id(text) == int(text) == ids.trial_id_of(text)


@pytest.mark.parametrize(
    "text", ["", "0", "01", "-1", "+1", " 1", "1 ", "1\n", "\uff11", "\u0661", "1.0", str(2**63)]
)
def test_other_trial_ids_are_refused(text: str) -> None:
    assert ids.parse_trial_id(text) is None
    with pytest.raises(InvalidTrialId, match="without leading zeros, below 2\\*\\*63"):
        ids.trial_id_of(text)


@pytest.mark.parametrize("value", [0, -3, 2**63, True, 1.0, "1"])
def test_validate_trial_id_refuses_non_ids(value: object) -> None:
    with pytest.raises(InvalidTrialId):
        ids.validate_trial_id(value)


def test_experiment_ids() -> None:
    assert ids.validate_experiment_id("a_B-9" * 40) == "a_B-9" * 40  # 200 characters
    for bad in ["", "a" * 201, "a/b", "a b", "é", "a\n", "\uff41", None, 3]:
        with pytest.raises(InvalidExperimentId, match="1 to 200 ASCII letters"):
            ids.validate_experiment_id(bad)
