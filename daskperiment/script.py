"""Script mode: run one trial of a script's result with parameters from the command line.

``daskperiment run my_experiment.py a=1 b=2 --seed 1`` executes the script with
``__name__ == "__daskperiment__"`` (so its own ``if __name__ == "__main__":`` block does not
run as well), finds the result it built (the ``@ex.result`` delayed object created last),
sets the parameters and computes one trial.

Nothing computes implicitly. A script that wants ``python my_experiment.py a=1 b=2`` to run a
trial says so with one explicit call at its end::

    ex.run_from_command_line()

which runs a trial of the result built last only when the script is the program being run
(``__name__ == "__main__"``): importing the script, or running it with ``daskperiment run``
(which runs the trial itself), never runs a second one.
"""

from __future__ import annotations

import ast
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import DaskperimentError
from .provenance.sourcetree import note_script
from .steps import LAST_RESULT, ResultDelayed, next_serial

#: ``__name__`` a script sees when run by ``daskperiment run``.
RUN_NAME = "__daskperiment__"


class ScriptError(DaskperimentError, ValueError):
    """A script or its command line cannot be turned into a trial."""


def parse_value(text: str) -> Any:
    """A command-line value: a Python literal (``1``, ``0.5``, ``[1, 2]``, ``'x'``), else text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``."""
    values = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ScriptError(
                f"parameter {item!r} is not of the form name=value (for example a=1 or name='text')"
            )
        values[name] = parse_value(text)
    return values


def parse_argv(argv: Sequence[str]) -> tuple[dict[str, Any], int | None]:
    """Parameters and seed from ``name=value`` items and an optional ``--seed N``."""
    items, seed = [], None
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--seed" or arg.startswith("--seed="):
            text = arg.partition("=")[2] if "=" in arg else (args.pop(0) if args else "")
            try:
                seed = int(text)
            except ValueError:
                raise ScriptError(f"--seed needs an integer, got {text!r}") from None
        else:
            items.append(arg)
    return parse_assignments(items), seed


def find_result(
    namespace: dict[str, Any], path: str = "the script", since: int | None = None
) -> ResultDelayed:
    """The result a script built: the ``@ex.result`` delayed object created last, bound to a
    name or (``since``: serial of the first object the script could build) built by a bare
    top-level call such as ``calculate_score(d)``, as daskperiment 0.5 scripts end."""
    found = [v for v in namespace.values() if isinstance(v, ResultDelayed)]
    unbound = LAST_RESULT[0]
    if since is not None and isinstance(unbound, ResultDelayed) and unbound._serial >= since:
        found.append(unbound)
    if not found:
        raise ScriptError(
            f"{path} builds no result: call the function decorated with @ex.result at the "
            "top level of the script (for example s = calculate_score(d))"
        )
    return max(found, key=lambda r: r._serial)


def run_trial(result: ResultDelayed, parameters: dict[str, Any], seed: int | None) -> Any:
    """Set ``parameters`` and compute one trial of ``result``."""
    ex = result._experiment
    ex.set_parameters(**parameters)
    return result.compute(seed=seed)


def run_script(path: str | Path, argv: Sequence[str] = ()) -> Any:
    """Execute the script at ``path``, then one trial of its result; return the result."""
    parameters, seed = parse_argv(argv)
    path = str(path)
    if not Path(path).is_file():
        raise ScriptError(f"no script at {path!r}")
    script_dir = str(Path(path).resolve().parent)
    note_script(path)  # the trial's source tree starts from this script
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = [path, *argv]
    sys.path.insert(0, script_dir)  # as `python script.py` would, for the script's imports
    since = next_serial()
    try:
        namespace = runpy.run_path(path, run_name=RUN_NAME)
    finally:
        sys.argv = old_argv
        sys.path[:] = old_path
    return run_trial(find_result(namespace, path, since), parameters, seed)


def run_from_command_line(
    ex: Any, result: ResultDelayed | None, argv: Sequence[str] | None, caller: str
) -> Any:
    """What ``ex.run_from_command_line()`` does; see that method."""
    if caller != "__main__":
        # Imported, or run by `daskperiment run` (which computes the trial itself).
        return None
    if result is None:
        result = ex._last_result
    if not isinstance(result, ResultDelayed):
        raise ScriptError(
            "ex.run_from_command_line() found no result: call the function decorated with "
            "@ex.result first (for example s = calculate_score(d)), or pass the result"
        )
    argv = sys.argv[1:] if argv is None else argv
    if "--help" in argv or "-h" in argv:
        print(usage(result))
        raise SystemExit(0)
    parameters, seed = parse_argv(argv)
    return run_trial(result, parameters, seed)


def usage(result: ResultDelayed) -> str:
    """``--help`` of a script run by ``python script.py``: its parameters and defaults."""
    ex = result._experiment
    registry = ex._parameters
    lines = [
        f"usage: {Path(sys.argv[0]).name} [name=value ...] [--seed N]",
        "",
        f"Runs one trial of experiment {ex.id!r} (values are Python literals, else text).",
        "",
        "parameters (current value; Undefined: must be given):",
    ]
    for name in registry.names:
        lines.append(f"  {name}={registry.current(name)!r}")
    if not registry.names:
        lines.append("  (none)")
    lines += ["", "  --seed N    seed of random and numpy's global generator in every step"]
    return "\n".join(lines)
