"""Parameters: named inputs of an experiment whose values are injected when a trial runs.

A :class:`Parameter` is a dask ``Delayed`` whose graph holds a placeholder task. The
placeholder never carries a value: the experiment keeps the values set with
``set_parameters`` and, when a trial starts, replaces each placeholder in *that trial's copy*
of the graph with the trial's value. Graphs therefore hold no mutable parameter state, and
several trials with different parameters can run at once from the same graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from .errors import ParameterUndefined, UnknownParameter


class _Undefined:
    """Marker for a parameter without a value (``repr``: ``Undefined``)."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "Undefined"

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Any = _Undefined()

#: Prefix of every parameter placeholder key in a graph.
KEY_PREFIX = "parameter-"


def _placeholder(name: str) -> Any:
    """Run only when a graph holding a parameter is computed outside a trial."""
    exc = ParameterUndefined([name])
    exc.add_note(
        "The graph was computed outside a trial (for example with dask.compute): parameter "
        "values are injected only by .compute() on an @ex.result output, which runs a trial, "
        "or .compute() on an intermediate step."
    )
    raise exc


class Parameter(Delayed):
    """An experiment input usable in a dask graph; its value is chosen per trial.

    ``repr`` shows the value currently set (``Parameter(a: 1)``) or ``Parameter(a: Undefined)``.
    ``compute()`` returns the current value.
    """

    __slots__ = ("_registry", "_name")

    def __init__(self, registry: ParameterRegistry, name: str) -> None:
        key = f"{KEY_PREFIX}{name}-{registry.token}"
        from dask._task_spec import Task

        graph = HighLevelGraph.from_collections(
            key, {key: Task(key, _placeholder, name)}, dependencies=()
        )
        super().__init__(key, graph)
        object.__setattr__(self, "_registry", registry)
        object.__setattr__(self, "_name", name)

    @property
    def name(self) -> str:
        """The parameter's name, as used in ``set_parameters`` and the history."""
        return self._name

    @property
    def value(self) -> Any:
        """The current value (``UNDEFINED`` when neither set nor defaulted)."""
        return self._registry.current(self._name)

    def compute(self, **kwargs: Any) -> Any:
        """Return the current value; raise :class:`ParameterUndefined` if there is none."""
        value = self.value
        if value is UNDEFINED:
            raise ParameterUndefined([self._name])
        return value

    def __repr__(self) -> str:
        return f"Parameter({self._name}: {self.value!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # A parameter inside a pickled graph travels as a plain Delayed: the value is injected
        # into the graph before it leaves the client, so workers never need the registry.
        return (Delayed, (self.key, self.dask))


class ParameterRegistry:
    """The parameters an experiment declared, their defaults and current values."""

    def __init__(self, token: str) -> None:
        #: Part of every placeholder key: keeps two experiments' parameters apart in a graph.
        self.token = token
        self._params: dict[str, Parameter] = {}
        self._by_key: dict[str, str] = {}
        self._defaults: dict[str, Any] = {}
        self._values: dict[str, Any] = {}

    def declare(self, name: str, default: Any = None) -> Parameter:
        """Return the parameter ``name``, declaring it on first use."""
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(
                f"parameter name must be a Python identifier (used as a keyword in "
                f"set_parameters), got {name!r}"
            )
        if default is not None:
            self._defaults[name] = default
        param = self._params.get(name)
        if param is None:
            param = Parameter(self, name)
            self._params[name] = param
            self._by_key[param.key] = name
        return param

    @property
    def by_key(self) -> dict[str, str]:
        """Graph key of each placeholder -> parameter name."""
        return self._by_key

    @property
    def names(self) -> list[str]:
        """Declared names, in declaration order."""
        return list(self._params)

    def current(self, name: str) -> Any:
        """The value set for ``name``, else its default, else ``UNDEFINED``."""
        if name in self._values:
            return self._values[name]
        return self._defaults.get(name, UNDEFINED)

    def set(self, values: Mapping[str, Any]) -> None:
        """Set values; parameters not named keep theirs. All names are checked first."""
        self.check_names(values)
        self._values.update(values)

    def check_names(self, names: Iterable[str]) -> None:
        """Raise :class:`UnknownParameter` for the first name never declared."""
        for name in names:
            if name not in self._params:
                raise UnknownParameter(name, self._params)

    def name_of_key(self, key: object) -> str | None:
        """The parameter whose placeholder has graph key ``key`` (None if not one of ours)."""
        return self._by_key.get(key)  # type: ignore[arg-type,call-overload]

    def resolve(self, names: Iterable[str], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        """Values of ``names`` for one trial: ``overrides`` first, then current values.

        Raises :class:`ParameterUndefined` naming every parameter left without a value.
        """
        overrides = overrides or {}
        self.check_names(overrides)
        values: dict[str, Any] = {}
        missing = []
        for name in names:
            value = overrides[name] if name in overrides else self.current(name)
            if value is UNDEFINED:
                missing.append(name)
            values[name] = value
        if missing:
            raise ParameterUndefined(missing)
        return values
