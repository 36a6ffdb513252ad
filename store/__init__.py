"""A git-like content-addressed object store (independent of dask and daskperiment)."""

from . import errors
from .digest import ALGORITHM, Oid, is_oid, validate_oid

__all__ = ["ALGORITHM", "Oid", "errors", "is_oid", "validate_oid"]
