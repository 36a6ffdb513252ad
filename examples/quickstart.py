"""The quickstart scenario from start to end: trials, failures, persisted results, metrics,
code tracking, purity checks and seeds, then the history of every trial.

Run it from any directory::

    python examples/quickstart.py

Trials are recorded in ``daskperiment_cache/quickstart_pj`` under the current directory.
Running the script again adds trials to the same experiment; delete that directory to start
over.
"""

import numpy as np
import pandas as pd

import daskperiment

# show every column (wrapped at 80 characters) even when the output is not a terminal
pd.set_option("display.max_columns", None)


def section(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


section("Experiment and parameters")
ex = daskperiment.Experiment(id="quickstart_pj")
print(ex)

a = ex.parameter("a")
b = ex.parameter("b")
print(a)


@ex
def prepare_data(a, b):
    return a + b


@ex.result
def calculate_score(s):
    return 10 / s


d = prepare_data(a, b)
s = calculate_score(d)

section("Trials")
ex.set_parameters(a=1, b=2)
print("result:", s.compute())

# parameters not named keep their previous values
ex.set_parameters(b=3)
print("result:", s.compute())

print("parameters of trial 1:", ex.get_parameters(trial_id=1))
print("parameters of trial 2:", ex.get_parameters(trial_id=2))

section("A failing trial is recorded too")
ex.set_parameters(a=1, b=-1)
try:
    s.compute()
except ZeroDivisionError as exc:
    print(f"ZeroDivisionError: {exc}")
print(ex.get_history())

section("Persisted intermediate results")


# redefining a step logs what changed in its code
@ex.persist
def prepare_data(a, b):
    return a + b


d = prepare_data(a, b)
s = calculate_score(d)

ex.set_parameters(a=1, b=2)
s.compute()
first = ex.trial_id
ex.set_parameters(a=3, b=2)
s.compute()
print(f"prepare_data in trial {first}:", ex.get_persisted("prepare_data", trial_id=first))
print(f"prepare_data in trial {ex.trial_id}:", ex.get_persisted("prepare_data", ex.trial_id))

section("Metrics")


@ex.result
def calculate_score(s):
    for i in range(100):
        ex.save_metric("dummy_score", epoch=i, value=100 - np.random.random() * i)

    return 10 / s


d = prepare_data(a, b)
s = calculate_score(d)

ex.set_parameters(a=1, b=2)
s.compute()
ex.set_parameters(a=3, b=4)
s.compute()
print(ex.load_metric("dummy_score", trial_id=[ex.trial_id - 1, ex.trial_id]).head())

section("Code of the current steps")
print(ex.get_code())

section("Purity checks and seeds")


@ex.result
def calculate_score(s):
    for i in range(100):
        ex.save_metric("dummy_score", epoch=i, value=100 - np.random.random() * i)

    return 10 / s + np.random.random()


d = prepare_data(a, b)
s = calculate_score(d)

# the same input gives a different output than before: a purity warning
s.compute()
# a seed makes the step reproducible; the first seeded trial still differs from the last one
s.compute(seed=1)
# the same seed again: the same result, no warning
print("result:", s.compute(seed=1))

section("History")
# an Experiment with the same id finds every trial recorded so far
ex_new = daskperiment.Experiment(id="quickstart_pj")
print(ex_new.get_history())
