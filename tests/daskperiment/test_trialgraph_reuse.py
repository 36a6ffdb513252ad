"""A result computed again reuses its TrialGraph (daskperiment/trialgraph.py trial_graph)."""

from __future__ import annotations

import daskperiment
from daskperiment import trialgraph


def make(name: str):
    ex = daskperiment.Experiment(name, backend=f"memory://{name}")
    a = ex.parameter("a")
    b = ex.parameter("b")

    @ex
    def prepare(a, b):
        return a + b

    @ex.result
    def score(s):
        return 10 * s

    return ex, score(prepare(a, b)), prepare, score


def test_the_same_result_reuses_its_graph_and_records_each_trials_values() -> None:
    ex, result, _, _ = make("reuse_tg")
    first = trialgraph.trial_graph(result, ex._parameters.by_key)
    assert trialgraph.trial_graph(result, ex._parameters.by_key) is first
    for a in range(3):
        ex.set_parameters(a=a, b=2)
        assert result.compute(scheduler="sync") == 10 * (a + 2)
    h = ex.get_history()
    assert list(h["a"]) == [0, 1, 2] and list(h["Result"]) == [20, 30, 40]


def test_a_new_parameter_or_another_result_gets_its_own_graph() -> None:
    ex, result, prepare, score = make("new_tg")
    first = trialgraph.trial_graph(result, ex._parameters.by_key)
    c = ex.parameter("c")  # the registry grew: the cached graph is not trusted
    again = trialgraph.trial_graph(result, ex._parameters.by_key)
    assert again is not first and again.parameters == first.parameters
    other = score(prepare(c, 1))
    graph = trialgraph.trial_graph(other, ex._parameters.by_key)
    assert graph is not again and set(graph.parameters) == {"c"}
    ex.set_parameters(a=1, b=1, c=5)
    assert other.compute(scheduler="sync") == 60 and result.compute(scheduler="sync") == 20
    h = ex.get_history()
    assert list(h["Result"]) == [60, 20]
