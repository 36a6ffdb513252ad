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

from .bundles import import_bundle
from .errors import DaskperimentError
from .experiment import Experiment, list_experiments
from .log import logger
from .parameter import Parameter

__version__ = "0.6.0"

__all__ = [
    "DaskperimentError",
    "Experiment",
    "Parameter",
    "__version__",
    "import_bundle",
    "list_experiments",
    "logger",
]
