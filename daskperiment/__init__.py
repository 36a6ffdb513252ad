"""daskperiment: reproducible experiments on Dask, recorded in a content-addressed store.

>>> import daskperiment
>>> ex = daskperiment.Experiment(id="my_experiment")
>>> a = ex.parameter("a")
>>> @ex.result
... def score(a):
...     return 10 / a
>>> s = score(a)
>>> ex.set_parameters(a=2)
>>> s.compute()  # runs and records trial 1
5.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import DaskperimentError
from .log import logger

if TYPE_CHECKING:
    from .bundles import import_bundle
    from .experiment import Experiment, list_experiments
    from .parameter import Parameter

__version__ = "0.6.0"

#: Imported on first use (PEP 562), so the command line reads a store without importing dask.
_LAZY = {
    "Experiment": "experiment",
    "list_experiments": "experiment",
    "Parameter": "parameter",
    "import_bundle": "bundles",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'daskperiment' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "DaskperimentError",
    "Experiment",
    "Parameter",
    "__version__",
    "import_bundle",
    "list_experiments",
    "logger",
]
