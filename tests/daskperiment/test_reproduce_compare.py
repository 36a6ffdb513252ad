"""How reproduce compares two trial records step by step (daskperiment/provenance/reproduce.py)."""

from __future__ import annotations

from typing import Any

from daskperiment.provenance.reproduce import compare


def record(**steps: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for n, (name, fields) in enumerate(steps.items()):
        base = {"step": name, "started": float(n), "inputs": f"in-{name}", "output": f"out-{name}"}
        out[name] = {**base, **fields}
    return {"status": "success", "steps": out, "digests": {"result": "r"}, "result_repr": "1"}


def test_identical_records() -> None:
    a = record(load={"files": {"/a/data.csv": "d1"}, "libraries": {"numpy": "2.0"}}, fit={})
    assert compare(a, a) == (None, [], 2)


def test_the_first_step_in_run_order_is_named_with_the_file() -> None:
    a = record(load={"files": {"/home/a/p/data.csv": "d1"}}, fit={})
    b = record(load={"files": {"/home/b/p/data.csv": "d2"}, "output": "other"}, fit={})
    b["steps"]["fit"]["inputs"] = "changed"
    first, later, steps = compare(a, b)
    assert steps == 2
    assert (first.step, first.what) == ("load", "input file")
    assert first.details == ("/home/a/p/data.csv: d1 -> d2 (now /home/b/p/data.csv)",)
    assert [d.step for d in later] == ["fit"]


def test_the_same_content_at_another_path_is_identical() -> None:
    a = record(load={"files": {"/home/a/p/data.csv": "d1"}})
    b = record(load={"files": {"/srv/b/p/data.csv": "d1"}})
    assert compare(a, b)[0] is None


def test_library_versions_then_nondeterminism_then_the_result() -> None:
    a = record(fit={"libraries": {"numpy": "2.0", "scipy": "1.0"}})
    b = record(fit={"libraries": {"numpy": "2.1", "scipy": "1.0"}})
    first = compare(a, b)[0]
    assert (first.what, first.details) == ("library version", ("numpy: 2.0 -> 2.1",))
    c = record(fit={"output": "else"})
    assert compare(record(fit={}), c)[0].what == "nondeterministic output with identical inputs"
    d = record(fit={})
    d["digests"] = {"result": "other"}
    assert compare(record(fit={}), d)[0].what == "result"
