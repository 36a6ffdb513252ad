"""Code snapshots of experiment steps, their diffs and their display.

A step's code is the source of the decorated function as the user wrote it, decorator lines
included (changing ``@ex`` to ``@ex.persist`` is a change of the experiment), dedented so that
a function nested in another or written in a class reads like a top-level one. Sources come
from :func:`inspect.getsource`, which reads files, and also Jupyter/IPython cells: both kernels
register each cell's text in :mod:`linecache` under the cell's file name.

Where no source exists (a function made by ``exec`` of a string, typed into a bare ``python``
prompt, or whose file changed since it was imported) a text describing the compiled function
stands in: its bytecode, constants, names and those of the code nested in it, written the same
way in every process of the same Python version (no addresses, no ``hash()`` order), so its
digest still tells whether the function changed. Such a snapshot has ``exact=False``; the
caller warns the user.

This module knows nothing of the store: it returns text, and the caller decides where it goes.
"""

from __future__ import annotations

import ast
import difflib
import functools
import inspect
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Bytes of bytecode per line of the fallback text, so a small change gives a small diff.
_BYTES_PER_LINE = 32


@dataclass(frozen=True)
class CodeSnapshot:
    """The code of one step.

    ``source`` always ends with one newline and uses ``\\n`` line endings. ``exact`` is False
    when ``source`` is the bytecode description that stands in for missing source.
    """

    name: str
    source: str
    exact: bool


def capture_source(func: Callable[..., Any]) -> CodeSnapshot:
    """Capture the code of ``func`` (a function, method, ``functools.partial`` or callable).

    Wrappers made with :func:`functools.wraps` are looked through (``__wrapped__``), so the
    user's own function is what is captured. Never raises for a callable: when its source
    cannot be found the bytecode description is returned with ``exact=False``.
    """
    target = _unwrap(func)
    name = getattr(target, "__name__", None) or type(target).__name__
    source = _source_of(target, name)
    if source is not None:
        return CodeSnapshot(name, source, True)
    return CodeSnapshot(name, bytecode_text(target, name), False)


def _unwrap(func: Any) -> Any:
    """The object whose source is the user's code: no partials, wrappers or bound methods."""
    for _ in range(100):  # a bound on purpose: __wrapped__ chains can loop
        if isinstance(func, functools.partial):
            func = func.func
        elif isinstance(func, types.MethodType):
            func = func.__func__
        elif hasattr(func, "__wrapped__") and func.__wrapped__ is not func:
            func = func.__wrapped__
        else:
            break
    if not isinstance(func, (types.FunctionType, type)) and callable(func):
        # A callable object: its code is the class that defines ``__call__``.
        for klass in type(func).__mro__:
            if isinstance(vars(klass).get("__call__"), types.FunctionType):
                return klass
    return func


def _source_of(target: Any, name: str) -> str | None:
    """The normalised source of ``target``, or None if there is none to be trusted."""
    try:
        raw = inspect.getsource(target)
    except (OSError, TypeError):
        return None
    source = normalize(raw)
    if name != "<lambda>" and not _defines(source, name):
        # The file changed on disk since it was imported: these lines are not this function.
        return None
    return source


def _defines(source: str, name: str) -> bool:
    """Whether ``source`` parses as a definition of ``name`` (decorators allowed)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return any(isinstance(node, defs) and node.name == name for node in tree.body)


def normalize(source: str) -> str:
    """``\\n`` line endings, the first line's indentation removed, exactly one final newline.

    Unlike :func:`textwrap.dedent`, the indentation is taken from the first line only, so a
    multi-line string literal flush with the margin does not stop a nested function from
    being dedented.
    """
    lines = source.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    first = lines[0]
    prefix = first[: len(first) - len(first.lstrip())]
    out = []
    for line in lines:
        if line.startswith(prefix):
            out.append(line[len(prefix) :])
        elif not line.strip():
            out.append("")
        else:
            out.append(line)
    return "\n".join(out).rstrip("\n") + "\n"


def bytecode_text(target: Any, name: str) -> str:
    """A deterministic text describing the compiled form of ``target``.

    The same function gives the same text in every process of the same Python version:
    constants are written in a fixed form (sets sorted, no object addresses), and neither
    file names nor line numbers take part, so moving a function does not change it.
    """
    lines = [f"# source of {name} is not available; its compiled form stands in for it"]
    code = getattr(target, "__code__", None)
    if not isinstance(code, types.CodeType):
        kind = type(target)
        lines.append(f"# {kind.__module__}.{kind.__qualname__} object {name}")
        return "\n".join(lines) + "\n"
    _describe_code(code, lines, 0)
    defaults = getattr(target, "__defaults__", None) or ()
    if defaults:
        lines.append("defaults: " + ", ".join(_stable_repr(d) for d in defaults))
    kwdefaults = getattr(target, "__kwdefaults__", None) or {}
    for key in sorted(kwdefaults):
        lines.append(f"default {key}: {_stable_repr(kwdefaults[key])}")
    return "\n".join(lines) + "\n"


def _describe_code(code: types.CodeType, out: list[str], depth: int) -> None:
    pad = "    " * depth
    out.append(f"{pad}code {code.co_name}")
    out.append(
        f"{pad}  args {code.co_argcount} posonly {code.co_posonlyargcount} "
        f"kwonly {code.co_kwonlyargcount} flags {code.co_flags}"
    )
    for field in ("co_varnames", "co_cellvars", "co_freevars", "co_names"):
        values = getattr(code, field)
        if values:
            out.append(f"{pad}  {field[3:]}: {' '.join(values)}")
    raw = code.co_code  # the un-specialised bytecode: identical in every process
    for start in range(0, len(raw), _BYTES_PER_LINE):
        out.append(f"{pad}  bytecode: {raw[start : start + _BYTES_PER_LINE].hex()}")
    exceptions = getattr(code, "co_exceptiontable", b"")
    if exceptions:
        out.append(f"{pad}  exceptions: {exceptions.hex()}")
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _describe_code(const, out, depth + 1)
        else:
            out.append(f"{pad}  const: {_stable_repr(const)}")


def _stable_repr(value: object) -> str:
    """``repr`` for values whose repr is the same in every process, a type tag otherwise."""
    if value is None or value is Ellipsis or isinstance(value, (bool, int, float, complex)):
        return repr(value)
    if isinstance(value, (str, bytes)):
        return repr(value)
    if isinstance(value, tuple):
        inner = ", ".join(_stable_repr(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, frozenset):  # iteration order depends on PYTHONHASHSEED
        return "frozenset({" + ", ".join(sorted(_stable_repr(v) for v in value)) + "})"
    if isinstance(value, types.CodeType):
        return f"<code {value.co_name}>"
    kind = type(value)
    return f"<{kind.__module__}.{kind.__qualname__}>"


def strip_decorators(source: str) -> str:
    """``source`` without the decorator lines of its top-level definitions.

    Returns ``source`` unchanged when it does not parse (a lambda cut from a longer line).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    drop: set[int] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.decorator_list:
                first = min(d.lineno for d in node.decorator_list)
                drop.update(range(first - 1, node.lineno - 1))  # linenos are 1-based
    lines = source.splitlines(keepends=True)
    return "".join(line for i, line in enumerate(lines) if i not in drop)


def code_diff(old: str, new: str, name: str = "") -> list[str]:
    """Unified-diff lines (3 lines of context) from ``old`` to ``new`` source of step ``name``.

    Only hunks are returned, starting with their ``@@ -a,b +c,d @@`` header; the ``---``/``+++``
    file lines are left out, as the warning shows them. Equal sources give ``[]``.
    """
    lines = difflib.unified_diff(
        old.splitlines(),
        new.splitlines(),
        fromfile=f"a/{name}",
        tofile=f"b/{name}",
        n=3,
        lineterm="",
    )
    return _drop_file_header(lines)


def _drop_file_header(lines: Iterable[str]) -> list[str]:
    out = list(lines)
    return out[2:] if out[:1] and out[0].startswith("---") else out


def format_code(snapshots: Mapping[str, str], *, decorators: bool = True) -> str:
    """The sources of ``snapshots`` (step name -> source) in their order, a blank line apart.

    ``snapshots`` is expected in definition order (dicts keep insertion order). With
    ``decorators=False`` the decorator lines are left out, the way the seed's ``get_code``
    listing shows the steps. The text ends with a newline; ``""`` when there are no steps.
    """
    sources = [normalize(source) for source in snapshots.values()]
    if not decorators:
        sources = [strip_decorators(source) for source in sources]
    return "\n".join(sources)
