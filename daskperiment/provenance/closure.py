"""A step's code closure: the local functions, classes and constants its code uses.

Starting from the step's function, every name its code refers to (``co_names`` and the free
variables of its code and of every code object nested in it: lambdas, comprehensions,
generator expressions) is resolved through the function's globals; a module found there is
searched for the same names as attributes (``helpers.transform``). What resolves to *local*
code (see :mod:`.libraries`) joins the closure and is walked in turn:

- functions, through ``__wrapped__`` chains, their default arguments and closure cells;
- classes, with every function defined in them (methods, static and class methods,
  properties) and their local base classes;
- instances of local classes, by their class;
- plain constants of local modules (numbers, strings, tuples of them), by their ``repr``.

Names are used as a *set*, not the bytecode, so the closure is the same on Python 3.11 to
3.13 (3.12 inlined comprehensions and changed the attribute opcodes). Each entry is the
normalised source text (:func:`daskperiment.code.capture_source`), so moving a function in its
file changes nothing. What resolves to installed code is not walked: its top-level module
names the libraries the step uses.

What escapes: names built at run time (``getattr(mod, "f" + "n")``, ``globals()[...]``,
``eval``, ``importlib.import_module`` with a computed name, registries filled elsewhere).
Declare such code by naming it in the step: a module-level tuple ``USES = (helper_a,
helper_b)`` that the step mentions (even as a bare ``USES`` statement) puts both helpers in
its closure -- see docs/provenance.md.

A step's closure is computed once per process and revalidated on each trial by checking that
every global and module attribute it looked up still holds the same object (a few
microseconds); a redefined helper (a notebook cell run again, a reloaded module) is found.
"""

from __future__ import annotations

import functools
import os
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from daskperiment_store import codec

from .. import code as _code
from ..log import logger
from . import libraries as _libs

CLOSURE_TYPE = "daskperiment.closure"
_MISSING = object()
_CONSTANTS = (int, float, complex, str, bytes, bool, type(None))
#: Bound on entries, against pathological graphs of objects.
_MAX_ENTRIES = 2000


@dataclass
class Closure:
    """The closure of one step: entries (qualified name -> source text) and libraries."""

    entries: dict[str, str] = field(default_factory=dict)
    modules: set[str] = field(default_factory=set)
    #: (namespace, name, object seen): what must stay the same for this closure to hold.
    lookups: list[tuple[dict, str, Any]] = field(default_factory=list)
    libraries: dict[str, str] = field(default_factory=dict)

    def still_valid(self) -> bool:
        return all(ns.get(name, _MISSING) is seen for ns, name, seen in self.lookups)

    def tree(self) -> dict[str, Any]:
        """The closure as a tree object (helper name -> source text digest), without links."""
        return {name: codec.digest(text) for name, text in sorted(self.entries.items())}

    @functools.cached_property
    def key(self) -> str:
        """What the step's cache key adds: digest of the closure sources and libraries."""
        return codec.digest(["daskperiment.deps/1", self.tree(), self.libraries])


def _module_label(module: str | None) -> str:
    """The script is ``__main__`` whether run by ``python`` or by ``daskperiment run``."""
    return "__main__" if module in (None, "__daskperiment__") else module


def _is_constant(value: Any) -> bool:
    if isinstance(value, _CONSTANTS):
        return True
    return type(value) is tuple and len(value) < 100 and all(_is_constant(v) for v in value)


def _code_names(code: types.CodeType, out: set[str]) -> set[str]:
    out.update(code.co_names)
    out.update(code.co_freevars)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_names(const, out)
    return out


class _Walker:
    def __init__(self) -> None:
        self.closure = Closure()
        self.seen: set[int] = set()
        self.looked: set[tuple[int, str]] = set()

    def function(self, func: Any, root: bool = False) -> None:
        for _ in range(100):  # __wrapped__ chains may loop
            if id(func) in self.seen:
                return
            self.seen.add(id(func))
            if isinstance(func, (staticmethod, classmethod)):
                func = func.__func__
                continue
            if isinstance(func, property):
                for part in (func.fget, func.fset, func.fdel):
                    if part is not None:
                        self.function(part)
                return
            if not isinstance(func, types.FunctionType):
                self.value(func, set(), None)
                return
            if not root and not _libs.is_local_function(func):
                self.closure.modules.add(func.__module__ or "")
                return
            if not root:
                self._add(func)
            self._code(func.__code__, func.__globals__)
            for value in (func.__defaults__ or ()) + tuple((func.__kwdefaults__ or {}).values()):
                self.value(value, set(), None)
            for cell in func.__closure__ or ():
                try:
                    self.value(cell.cell_contents, set(), None)
                except ValueError:  # an empty cell
                    pass
            wrapped = getattr(func, "__wrapped__", None)
            if wrapped is None:
                return
            func, root = wrapped, False

    def _look(self, namespace: dict, name: str, value: Any) -> None:
        key = (id(namespace), name)
        if key not in self.looked:
            self.looked.add(key)
            self.closure.lookups.append((namespace, name, value))

    def _add(self, obj: Any, text: str | None = None) -> None:
        if len(self.closure.entries) >= _MAX_ENTRIES:
            return
        name = f"{_module_label(obj.__module__)}.{obj.__qualname__}"
        if text is None:
            text = _code.capture_source(obj).source
        self.closure.entries[name] = text

    def _code(self, code: types.CodeType, namespace: dict) -> None:
        names = _code_names(code, set())
        for name in sorted(names):
            value = namespace.get(name, _MISSING)
            self._look(namespace, name, value)
            if value is _MISSING:
                continue
            if _is_constant(value):
                self._constant(str(namespace.get("__name__", "__main__")), name, value)
            else:
                self.value(value, names, namespace)

    def value(self, value: Any, names: set[str], namespace: dict | None) -> None:
        if isinstance(value, types.ModuleType):
            self.module(value, names)
        elif isinstance(value, (types.FunctionType, staticmethod, classmethod, property)):
            self.function(value)
        elif isinstance(value, type):
            self.klass(value)
        elif isinstance(value, types.MethodType):
            self.function(value.__func__)
        elif _is_constant(value):
            return  # constants are taken by the module that holds them
        elif type(value) in (tuple, list, frozenset, set):
            for item in list(value)[:_MAX_ENTRIES]:
                self.value(item, names, namespace)
        elif callable(value) or hasattr(type(value), "__module__"):
            kind = type(value)
            if _libs.is_local_name(kind.__module__):
                self.klass(kind)
            elif kind.__module__ not in ("builtins", None):
                self.closure.modules.add(kind.__module__)

    def module(self, module: types.ModuleType, names: set[str]) -> None:
        if not _libs.is_local_module(module):
            self.closure.modules.add(module.__name__)
            return
        namespace = vars(module)
        for name in sorted(names):
            value = namespace.get(name, _MISSING)
            self._look(namespace, name, value)
            if value is _MISSING:
                continue
            if _is_constant(value):
                self._constant(module.__name__, name, value)
            else:
                self.value(value, names, namespace)

    def _constant(self, module: str, name: str, value: Any) -> None:
        key = f"{_module_label(module)}.{name}"
        if key not in self.closure.entries and len(self.closure.entries) < _MAX_ENTRIES:
            self.closure.entries[key] = f"{name} = {_code._stable_repr(value)}\n"

    def klass(self, cls: type) -> None:
        if id(cls) in self.seen:
            return
        self.seen.add(id(cls))
        if not _libs.is_local_name(cls.__module__):
            if cls.__module__ != "builtins":
                self.closure.modules.add(cls.__module__)
            return
        self._add(cls)
        for member in vars(cls).values():
            if isinstance(member, (types.FunctionType, staticmethod, classmethod, property)):
                self.function(member)
        for base in cls.__bases__:
            self.klass(base)


def compute(func: Callable[..., Any]) -> Closure:
    """The closure of the step function ``func`` (see the module docstring)."""
    walker = _Walker()
    target = _unwrap_root(func)
    if isinstance(target, types.FunctionType):
        walker.function(target, root=True)
    else:
        walker.value(target, set(), None)
    closure = walker.closure
    closure.libraries = _libs.libraries({m for m in closure.modules if m})
    return closure


def _unwrap_root(func: Any) -> Any:
    while isinstance(func, types.MethodType):
        func = func.__func__
    return func


_CACHE: dict[int, tuple[Any, Closure]] = {}


def of(func: Callable[..., Any]) -> Closure:
    """The closure of ``func``, from this process's cache while its lookups still hold."""
    cached = _CACHE.get(id(func))
    if cached is not None and cached[0] is func and cached[1].still_valid():
        return cached[1]
    try:
        closure = compute(func)
    except Exception as exc:  # noqa: BLE001 - odd objects must not fail the trial
        closure = _unavailable(func, exc)
    _CACHE[id(func)] = (func, closure)
    return closure


def _unavailable(func: Any, exc: Exception) -> Closure:
    """A closure that could not be computed: a fixed entry saying why (so the key is stable
    and never equals a real closure's), and a warning."""
    name = getattr(func, "__qualname__", None) or repr(type(func))
    logger.warning(
        "The code closure of %s cannot be followed (%s: %s); its helpers are not tracked",
        name,
        type(exc).__name__,
        exc,
    )
    return Closure(entries={"<unavailable>": f"{type(exc).__name__}\n"})


def disabled() -> bool:
    """Whether provenance capture is turned off (``DASKPERIMENT_PROVENANCE=0``)."""
    return os.environ.get("DASKPERIMENT_PROVENANCE", "1") == "0"
