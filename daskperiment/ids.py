"""The one rule for experiment ids and trial ids, used by the API, the CLI, the dashboard,
import and pull alike.

- An **experiment id** is 1 to :data:`MAX_EXPERIMENT_ID_LENGTH` ASCII letters, digits, ``_``
  and ``-``. It becomes a directory name and part of ref names, so the limit keeps every
  path the store builds from it below the 255-byte file name limit of common filesystems.
- A **trial id** is a canonical positive integer below :data:`TRIAL_ID_LIMIT` (2**63): ASCII
  digits only, no sign, no leading zero. ``01``, ``0``, full-width or Arabic-Indic digits and
  ids of 2**63 or more are refused, so one trial has exactly one ref name.
"""

from __future__ import annotations

import re

from .errors import InvalidExperimentId, InvalidTrialId

#: It becomes a directory name and part of ref names (the error states the same limit).
MAX_EXPERIMENT_ID_LENGTH = InvalidExperimentId.MAX_LENGTH
TRIAL_ID_LIMIT = 2**63
_EXPERIMENT_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_EXPERIMENT_ID_LENGTH}}}")
_TRIAL_ID = re.compile(r"[1-9][0-9]{0,18}")
_RANGE = "positive integers written in ASCII digits without leading zeros, below 2**63"
#: The rules in words, for error messages.
EXPERIMENT_ID_RULE = (
    f"experiment ids are 1 to {MAX_EXPERIMENT_ID_LENGTH} ASCII letters, digits, '_' and '-'"
)
TRIAL_ID_RULE = f"trial ids are {_RANGE}"


def is_experiment_id(text: object) -> bool:
    """Whether ``text`` is a valid experiment id."""
    return isinstance(text, str) and _EXPERIMENT_ID.fullmatch(text) is not None


def validate_experiment_id(experiment_id: object) -> str:
    """``experiment_id`` itself, or :class:`InvalidExperimentId` saying what an id may be."""
    if not is_experiment_id(experiment_id):
        raise InvalidExperimentId(experiment_id)
    return experiment_id  # type: ignore[return-value]


def parse_trial_id(text: str) -> int | None:
    """The trial id ``text`` names canonically (``"12"`` -> 12), else None (``"012"``)."""
    if not _TRIAL_ID.fullmatch(text):
        return None
    value = int(text)
    return value if value < TRIAL_ID_LIMIT else None


def trial_id_of(text: str) -> int:
    """The trial id ``text`` names, or :class:`InvalidTrialId` saying what a trial id is."""
    value = parse_trial_id(text)
    if value is None:
        raise InvalidTrialId(text, f"{TRIAL_ID_RULE}, like 1, 2, 3")
    return value


def validate_trial_id(trial_id: object) -> int:
    """An ``int`` trial id in range (bool refused), or :class:`InvalidTrialId`."""
    if isinstance(trial_id, bool) or not isinstance(trial_id, int):
        raise InvalidTrialId(trial_id, f"trial ids are whole numbers: {TRIAL_ID_RULE}")
    if not 1 <= trial_id < TRIAL_ID_LIMIT:
        raise InvalidTrialId(trial_id, TRIAL_ID_RULE)
    return trial_id
