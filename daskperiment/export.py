"""Writing stored values to files other tools read: ``.npy``, ``.parquet``, ``.csv``.

``daskperiment cat OID --to FILE`` and ``ex.get_persisted(step, to=FILE)`` pick the format by
the file's extension:

``.npy``      a numpy array (a Series or DataFrame as ``to_numpy()``), written with
              ``allow_pickle=False``: object arrays are refused;
``.parquet``  a DataFrame (a Series as a one-column frame); needs pyarrow
              (``pip install daskperiment[parquet]``);
``.csv``      a DataFrame or Series (with its index), or a 1-d/2-d array.

A container (dict/list/tuple of arrays and frames) is not one table: its elements are
exported one by one (``daskperiment cat OID`` lists their digests). The file is written to a
temporary name and moved into place, and an existing file is never overwritten.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from daskperiment_store.framing import is_pandas

from .errors import DaskperimentError

FORMATS = (".npy", ".parquet", ".csv")


class ExportError(DaskperimentError, ValueError):
    """A value cannot be written to the file asked for."""


def export(value: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``value`` to ``path`` in the format its extension names; returns the path."""
    target = Path(path)
    suffix = target.suffix.lower()
    writers: dict[str, Callable[[Any, Path], None]] = {
        ".npy": _write_npy,
        ".parquet": _write_parquet,
        ".csv": _write_csv,
    }
    if suffix not in writers:
        raise ExportError(
            f"cannot tell the format of {str(target)!r}: end the file name with one of "
            f"{', '.join(FORMATS)}"
        )
    if type(value) in (dict, list, tuple):
        raise ExportError(
            f"the value is a {type(value).__name__} of {len(value)} elements, not one table: "
            "export its elements one by one (daskperiment cat OID lists their digests)"
        )
    if target.exists():
        raise ExportError(f"{str(target)!r} exists: remove it or choose another name")
    if not target.parent.is_dir():
        raise ExportError(f"no directory {str(target.parent)!r} to write {target.name} into")
    _atomic(target, lambda tmp: writers[suffix](value, tmp))
    return target


def written(value: Any, path: str | os.PathLike[str]) -> Any:
    """``value``, after writing it to ``path`` (see :func:`export`)."""
    export(value, path)
    return value


def _atomic(target: Path, write: Callable[[Path], None]) -> None:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if target.exists():  # created meanwhile: still never overwritten
            raise ExportError(f"{str(target)!r} exists: remove it or choose another name")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_npy(value: Any, tmp: Path) -> None:
    array = value.to_numpy() if is_pandas(value) else value
    if isinstance(array, np.generic):
        array = np.asarray(array)
    if not isinstance(array, np.ndarray):
        raise ExportError(f"a {type(value).__name__} is not an array: .npy takes arrays")
    if array.dtype.hasobject:
        raise ExportError(
            "the array holds Python objects, which .npy stores only as a pickle: "
            "export it as .csv or .parquet instead"
        )
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _frame(value: Any, fmt: str) -> Any:
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return value
    if isinstance(value, pd.Series):
        return value.to_frame()
    if isinstance(value, np.ndarray) and value.ndim in (1, 2) and fmt == ".csv":
        return pd.DataFrame(value)
    raise ExportError(f"a {type(value).__name__} is not a table: {fmt} takes a DataFrame or Series")


def _write_parquet(value: Any, tmp: Path) -> None:
    frame = _frame(value, ".parquet")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ExportError(
            ".parquet needs pyarrow: pip install 'daskperiment[parquet]' (or export as .csv)"
        ) from None
    frame.to_parquet(tmp, engine="pyarrow")


def _write_csv(value: Any, tmp: Path) -> None:
    _frame(value, ".csv").to_csv(tmp)
