"""daskperiment's errors: one root, the fitting built-in mixed in, data as attributes."""

from __future__ import annotations

import pytest

from daskperiment import errors


def test_missing_things_are_key_errors_with_readable_messages() -> None:
    with pytest.raises(KeyError) as caught:
        raise errors.TrialNotFound(9, "quickstart_pj", last=3)
    err = caught.value
    assert isinstance(err, errors.DaskperimentError)
    assert (err.trial_id, err.experiment_id, err.last) == (9, "quickstart_pj", 3)
    # KeyError would quote the message; these errors print it as a sentence.
    assert str(err) == (
        "trial 9 not found in experiment 'quickstart_pj'; trial ids run from 1 to 3"
    )
    assert "call .compute()" in str(errors.TrialNotFound(1, "x", last=0))


@pytest.mark.parametrize(
    ("error", "builtin", "attrs", "words"),
    [
        (errors.UnknownParameter("c", ["a", "b"]), KeyError, {"name": "c"}, ["'c'", "'a', 'b'"]),
        (errors.ParameterUndefined(["b"]), ValueError, {"names": ["b"]}, ["'b'", "set_param"]),
        (errors.StepNotFound("f", ["g"], 2), KeyError, {"step": "f"}, ["trial 2", "'g'"]),
        (errors.PersistedNotFound("f", 4), KeyError, {"trial_id": 4}, ["'f'", "@ex.persist"]),
        (errors.MetricNotFound("loss", 6), KeyError, {"key": "loss"}, ["trial 6", "(none)"]),
        (errors.ExperimentNotFound("pj", "memory://x"), KeyError, {}, ["'pj'", "memory://x"]),
        (errors.NotInTrial("ex.current_trial_id"), RuntimeError, {}, ["ex.current_trial_id"]),
        (errors.InvalidExperimentId("a b"), ValueError, {"experiment_id": "a b"}, ["'a b'"]),
        (errors.RecordError(5, "disk full"), errors.DaskperimentError, {}, ["disk full"]),
        (errors.ConflictError("step name", "'f' twice", "rename one"), Exception, {}, ["rename"]),
    ],
)
def test_errors_carry_data_and_say_what_to_do(
    error: errors.DaskperimentError, builtin: type, attrs: dict, words: list[str]
) -> None:
    assert isinstance(error, errors.DaskperimentError)
    assert isinstance(error, builtin)
    for name, value in attrs.items():
        assert getattr(error, name) == value
    for word in words:
        assert word in str(error)


def test_invalid_experiment_id_message_starts_as_the_spec_says() -> None:
    assert str(errors.InvalidExperimentId("x/y")).startswith("Experiment ID must be")
