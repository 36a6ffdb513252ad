"""Purity checks by digest, stable across processes; seeds drawn, recorded and reproducible."""

from __future__ import annotations

import random
import re
from typing import Any

import numpy as np
import pytest

import daskperiment

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()

HASH_SCRIPT = f"""
import random

import numpy as np

import daskperiment

WORDS = {WORDS!r}
ex = daskperiment.Experiment(id='hash_pj')
prefix = ex.parameter('prefix')


@ex
def index_words(prefix):
    # insertion order follows set iteration order, which depends on PYTHONHASHSEED
    return {{prefix + word: len(word) for word in set(WORDS)}}


@ex.result
def total(index):
    # the trial's seed applies in every process: the same draws here and there
    return sum(index.values()) + random.random() + float(np.random.random())


ex.set_parameters(prefix='w-')
value = total(index_words(prefix)).compute(seed=3)
trial = ex.get_trial(ex.trial_id)
report({{
    'order': list(set(WORDS)),
    'value': value,
    'steps': {{name: [step['inputs'], step['output']] for name, step in trial['steps'].items()}},
    'digests': {{k: v for k, v in trial['digests'].items() if k != 'environment'}},
}})
"""

PURITY_PREFIX = "Experiment step result is changed with the same input"


def test_digests_do_not_depend_on_pythonhashseed(python: Any) -> None:
    first = python.run(HASH_SCRIPT, name="hashes.py", env={"PYTHONHASHSEED": "1"}).check()
    second = python.run(HASH_SCRIPT, name="hashes.py", env={"PYTHONHASHSEED": "2"}).check()
    one, two = first.result(), second.result()
    # the test means something only if the two processes really iterate differently
    assert one["order"] != two["order"]
    assert one["value"] == two["value"]  # the same seed gives the same draws in each process
    assert one["steps"] == two["steps"]
    assert one["digests"] == two["digests"]
    assert PURITY_PREFIX not in first.output + second.output, second.describe()


def make_random(ex: Any) -> Any:
    n = ex.parameter("n")

    @ex
    def draw(n):
        return [random.random() for _ in range(n)]

    @ex.result
    def combine(values, n):
        return float(sum(values) + np.random.random(n).sum())

    return combine(draw(n), n)


def test_same_seed_same_result(dp_log: Any) -> None:
    ex = daskperiment.Experiment(id="seed_pj")
    result = make_random(ex)
    ex.set_parameters(n=5)
    first = result.compute(seed=42)
    second = result.compute(seed=42)
    other = result.compute(seed=43)
    assert first == second
    assert other != first
    assert "Random seed is initialized with given seed: 42" in dp_log.messages("INFO")
    verbose = ex.get_history(verbose=True)
    assert verbose["Seed"].tolist() == [42, 42, 43]
    assert ex.get_trial(3)["seed"] == 43


def test_generated_seed_is_recorded_and_reproduces_the_trial(dp_log: Any) -> None:
    ex = daskperiment.Experiment(id="generated_seed_pj")
    result = make_random(ex)
    ex.set_parameters(n=5)
    unseeded = result.compute()
    logged = [m for m in dp_log.messages("INFO") if m.startswith("Random seed is not provided")]
    assert len(logged) == 1
    seed = int(re.fullmatch(r".*initialized with generated seed: (\d+)", logged[0]).group(1))
    assert ex.get_history(verbose=True).loc[1, "Seed"] == seed
    assert result.compute(seed=seed) == unseeded
    # two unseeded trials draw different seeds
    result.compute()
    seeds = ex.get_history(verbose=True)["Seed"].tolist()
    assert seeds[2] != seeds[0]


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "1"])
def test_invalid_seed_is_refused_before_a_trial_starts(bad: Any) -> None:
    ex = daskperiment.Experiment(id="bad_seed_pj")
    result = make_random(ex)
    ex.set_parameters(n=2)
    with pytest.raises(ValueError, match="seed"):
        result.compute(seed=bad)
    assert ex.trial_id == 0
    assert result.compute(seed=1) == result.compute(seed=1)
    assert ex.trial_id == 2


def test_pure_steps_with_new_inputs_do_not_warn(dp_log: Any) -> None:
    ex = daskperiment.Experiment(id="pure_pj")
    a = ex.parameter("a")

    @ex.result
    def square(a):
        return np.arange(a) ** 2

    for value in (3, 4, 3, 4):
        ex.set_parameters(a=value)
        square(a).compute()
    assert dp_log.messages("WARNING") == []


def test_impure_step_warning_shows_args_and_kwargs(dp_log: Any) -> None:
    ex = daskperiment.Experiment(id="impure_pj")
    a = ex.parameter("a")
    b = ex.parameter("b")
    calls = []

    @ex.result
    def counted(a, scale=1):
        calls.append(a)
        return a * scale + len(calls)

    ex.set_parameters(a=2, b=10)
    result = counted(a, scale=b)
    result.compute(seed=1)
    assert dp_log.messages("WARNING") == []
    result.compute(seed=1)
    assert dp_log.messages("WARNING") == [
        "Experiment step result is changed with the same input: "
        "(step: counted, args: (2,), kwargs: {'scale': 10})"
    ]
    # the warning compares with the last output seen for this input
    dp_log.clear()
    ex.set_parameters(a=3)
    result.compute(seed=1)
    assert dp_log.messages("WARNING") == []
