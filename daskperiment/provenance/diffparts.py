"""The provenance parts of ``daskperiment diff``: changed local files and changed helpers.

``source``: one git-style file diff per file of the source tree that differs
(``diff --git a/helpers.py b/helpers.py``), read only when the tree digests differ and, inside
the trees, only for files whose blob digests differ. ``closure`` (rendered with the ``code``
group): one file per helper whose source differs in the closure of any step, named by its
qualified name (``helpers.transform``). Both are called by :func:`daskperiment.diff.diff_trials`.
"""

from __future__ import annotations

from typing import Any

from daskperiment_store import Link

from ..diffmodel import MISSING, DiffFile, PickledObject


def _oid(value: Any) -> str | None:
    return value.oid if isinstance(value, Link) else None


def _text(reader: Any, oid: str | None) -> list[str] | None:
    if oid is None:
        return None
    value = reader.get(oid)
    if isinstance(value, PickledObject):
        return [f"(pickled object {oid}, not loaded)"]
    if isinstance(value, bytes):
        if b"\0" in value[:8000]:
            return [f"Binary file ({len(value)} bytes)"]
        value = value.decode("utf-8", errors="replace")
    return str(value).splitlines()


def _files_of(reader: Any, oid: str | None) -> dict[str, str]:
    if oid is None:
        return {}
    tree = reader.json(oid)
    files = tree.get("files", {}) if isinstance(tree, dict) else {}
    return {path: link.oid for path, link in files.items() if isinstance(link, Link)}


def source_part(reader: Any, old: dict, new: dict, changes: dict, files: list) -> None:
    """Changed files of the two trials' source trees."""
    oid_a, oid_b = _oid(old.get("source")), _oid(new.get("source"))
    changes["source"] = {}
    if oid_a == oid_b:
        return
    tree_a, tree_b = _files_of(reader, oid_a), _files_of(reader, oid_b)
    for path in sorted(set(tree_a) | set(tree_b)):
        blob_a, blob_b = tree_a.get(path), tree_b.get(path)
        if blob_a == blob_b:
            continue  # same digest: the file is not read
        lines_a, lines_b = _text(reader, blob_a), _text(reader, blob_b)
        changes["source"][path] = (
            MISSING if lines_a is None else "\n".join(lines_a),
            MISSING if lines_b is None else "\n".join(lines_b),
        )
        files.append(DiffFile(path, "source", lines_a, lines_b, blob_a, blob_b))


def _closure_oids(record: dict) -> list[str]:
    steps = (record.get("steps") or {}).values()
    oids = (_oid(e.get("closure")) for e in steps if isinstance(e, dict))
    return sorted({oid for oid in oids if oid is not None})


def _closure_entries(reader: Any, oids: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for oid in oids:
        tree = reader.json(oid)
        for name, link in (tree.get("entries", {}) if isinstance(tree, dict) else {}).items():
            if isinstance(link, Link):
                out.setdefault(name, link.oid)
    return out


def closure_part(reader: Any, old: dict, new: dict, changes: dict, files: list) -> None:
    """Helpers (functions, classes, constants) whose source differs between the trials."""
    changes["closure"] = {}
    oids_a, oids_b = _closure_oids(old), _closure_oids(new)
    if oids_a == oids_b:
        return  # the same closures: nothing is read
    entries_a, entries_b = _closure_entries(reader, oids_a), _closure_entries(reader, oids_b)
    if not entries_a and not entries_b:
        return
    for name in sorted(set(entries_a) | set(entries_b)):
        oid_a, oid_b = entries_a.get(name), entries_b.get(name)
        if oid_a == oid_b or oid_a is None and not entries_a or oid_b is None and not entries_b:
            continue  # unchanged, or a trial recorded without closures
        lines_a, lines_b = _text(reader, oid_a), _text(reader, oid_b)
        changes["closure"][name] = (
            MISSING if lines_a is None else "\n".join(lines_a),
            MISSING if lines_b is None else "\n".join(lines_b),
        )
        files.append(DiffFile(name, "code", lines_a, lines_b, oid_a, oid_b))
