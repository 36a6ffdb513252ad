"""``ex.checkout(trial, dir)`` / ``daskperiment checkout EXP TRIAL DIR``: a trial's source tree
written back to files, byte for byte.

Every file of the trial's source tree (:mod:`.sourcetree`) is written under ``dir`` at its
path relative to the tree's root, each through a temporary file and ``os.replace`` (a reader
never sees half a file). A non-empty ``dir`` is refused unless ``force=True``; then files of
the tree overwrite files of the same name and nothing else in ``dir`` is touched.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import daskperiment_store as store
from daskperiment_store import Link

from ..errors import DaskperimentError
from ..reads import read_json, read_trial


class CheckoutError(DaskperimentError, ValueError):
    """A trial's source tree cannot be written where it was asked to go."""


class NoSourceTree(DaskperimentError, KeyError):
    """The trial was recorded without a source tree."""

    def __init__(self, experiment_id: str, trial_id: int) -> None:
        self.experiment_id, self.trial_id = experiment_id, trial_id
        super().__init__(
            f"trial {trial_id} of experiment {experiment_id!r} has no source tree: it was "
            "recorded by an older version or with DASKPERIMENT_PROVENANCE=0; only trials "
            "recorded with provenance can be checked out or reproduced"
        )

    def __str__(self) -> str:
        return str(self.args[0])


#: Kinds a source blob may have (bytes; text stored as JSON): never a pickle.
BLOB_KINDS = frozenset({"bytes", "json"})


@dataclass(frozen=True)
class Checkout:
    """What :func:`checkout` wrote: the directory, the files (relative paths), the main file."""

    directory: str
    files: tuple[str, ...]
    main: str | None
    kind: str
    tree: str

    def __str__(self) -> str:
        return f"Checked out {len(self.files)} files of source tree {self.tree[:7]} into {self.directory}"


def read_record(st: store.Store, experiment_id: str, trial_id: int) -> dict[str, Any]:
    """The record of ``trial_id`` (TrialNotFound naming the known range if absent)."""
    from ..diff import _record_oid

    return read_trial(st, _record_oid(st, experiment_id, trial_id), trial_id, experiment_id)


def source_tree(st: store.Store, experiment_id: str, trial_id: int) -> tuple[str, dict]:
    """``(tree oid, tree)`` of the trial's source tree; NoSourceTree if it has none."""
    record = read_record(st, experiment_id, trial_id)
    link = record.get("source")
    if not isinstance(link, Link):
        raise NoSourceTree(experiment_id, trial_id)
    return link.oid, read_json(st, link.oid)


def _safe_path(directory: Path, rel: str) -> Path:
    parts = PurePosixPath(rel.replace(os.sep, "/")).parts
    if not parts or rel.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise CheckoutError(f"source tree holds an unsafe path {rel!r}; refusing to write it")
    return directory.joinpath(*parts)


def write_file(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; checked-out files read like normal ones
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def checkout(
    st: store.Store | None,
    experiment_id: str,
    trial_id: int,
    directory: str | os.PathLike[str],
    force: bool = False,
) -> Checkout:
    """Write trial ``trial_id``'s source tree into ``directory`` (see the module docstring)."""
    from ..errors import TrialNotFound

    if st is None:
        raise TrialNotFound(trial_id, experiment_id, 0)
    oid, tree = source_tree(st, experiment_id, trial_id)
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise CheckoutError(f"{target} exists and is not a directory; give a directory to fill")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise CheckoutError(
            f"{target} is not empty; check out into a new or empty directory, or pass "
            "--force (force=True) to overwrite the tree's files in it"
        )
    files = {rel: link for rel, link in tree.get("files", {}).items() if isinstance(link, Link)}
    paths = {rel: _safe_path(target, rel) for rel in files}  # all checked before any write
    target.mkdir(parents=True, exist_ok=True)
    for rel, link in sorted(files.items()):
        content = st.get(link.oid, kinds=BLOB_KINDS)
        if isinstance(content, str):
            content = content.encode("utf-8")
        write_file(paths[rel], bytes(content))
    return Checkout(str(target), tuple(sorted(files)), tree.get("main"), tree.get("kind", ""), oid)
