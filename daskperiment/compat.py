"""Names daskperiment 0.5 code uses that this version spells differently (docs/migrating.md).

Only spellings are kept here: behaviour is the same as under the current name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def metric_key_alias(method: F) -> F:
    """Accept ``metric_key=`` (0.5's name) for a method's ``key`` argument."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if "metric_key" in kwargs:
            if args or "key" in kwargs:
                raise TypeError(
                    f"{method.__name__}() got the metric's key twice: give key= (or its "
                    "0.5 name metric_key=), not both"
                )
            kwargs["key"] = kwargs.pop("metric_key")
        return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
