"""Values Python itself refuses to print: ints wider than the int-to-str digit limit (4,300
digits) and strings holding a lone surrogate, as parameters and results; and ints above
2**53 next to a failed trial. They are recorded exactly and shown, never a traceback."""

from __future__ import annotations

import json
import sys
from typing import Any

SCRIPT = """
import daskperiment

ex = daskperiment.Experiment("wide_pj")
p = ex.parameter("p")

@ex.result
def f(p):
    if p == "big result":
        return 10**100000
    if p == "fail":
        raise ValueError("no")
    if p == "exact":
        return 2**60 + 1
    return p

for value in ["big result", 10**5000, "\\ud800", "exact", "fail", 3]:
    ex.set_parameters(p=value)
    try:
        f(p).compute()
    except ValueError as exc:
        print("raised", exc)

history = ex.get_history()
record = ex.get_trial(1)
report({
    "success": history["Success"].tolist(),
    "result_exact": ex.load(record["result"]) == 10**100000,
    "param_exact": ex.get_parameters(2)["p"] == 10**5000,
    "surrogate_exact": ex.get_parameters(3, unpickle=True)["p"] == "\\ud800",
    "surrogate_result": ex.load(ex.get_trial(3)["result"]) == "\\ud800",
    "exact_int": history.loc[4, "Result"] == 2**60 + 1,
    "shown": [str(v) for v in history["Result"].tolist()],
    "printed": len(repr(history)) > 0,
})
"""


def test_wide_ints_and_surrogates_are_recorded_and_shown(python: Any) -> None:
    run = python.run(SCRIPT).check()
    assert run.stdout.count("raised") == 1  # only the trial that raised on purpose
    out = run.result()
    assert out["success"] == [True, True, True, True, False, True]
    assert out["result_exact"] and out["param_exact"]
    assert out["surrogate_exact"] and out["surrogate_result"]
    assert out["exact_int"]  # not rounded to a float by the failed trial's NaN
    assert out["shown"][0] == "int ≈ 1.000000e+100000 (100001 digits)"
    assert out["shown"][3] == str(2**60 + 1)

    def cli(*args: str) -> Any:
        done = python.run_args([sys.executable, "-m", "daskperiment", *args]).check()
        assert "Traceback" not in done.output
        return done

    table = cli("log", "wide_pj").stdout
    assert "int ≈ 1.000000e+5000 (5001 digits)" in table
    assert str(2**60 + 1) in table
    rows = json.loads(cli("log", "wide_pj", "--format", "json").stdout)
    assert rows[1]["p"] == "int ≈ 1.000000e+5000 (5001 digits)"
    assert rows[2]["p"] == "'\\ud800'"
    assert rows[3]["Result"] == 2**60 + 1
    cli("log", "wide_pj", "--format", "csv")
    shown = cli("show", "wide_pj", "1").stdout
    assert "result:       int ≈ 1.000000e+100000 (100001 digits)" in shown
    for trial_id in ("1", "2", "3"):
        record = json.loads(cli("show", "wide_pj", trial_id, "--format", "json").stdout)
        assert record["status"] == "success"
    cli("diff", "wide_pj", "1", "2")
