"""The git state of the working tree an experiment runs in.

Recorded: the ``commit`` checked out (None before the first commit), the ``branch`` (None when
detached), whether tracked files differ from that commit (``dirty``, staged or not; untracked
files do not count), an xxh3-128 ``diff_digest`` of ``git diff HEAD`` when dirty, and the
``changed_files``. Nothing is recorded outside a git work tree or when git is not installed.

Asking git costs milliseconds per command, too much for every trial, so the answer is kept
and asked again only when something git looks at has changed: ``HEAD``, the ref it points
to, ``packed-refs``, the index, or the ``stat`` of a tracked file (the same signals git's own
index uses to notice edits). Watching a file costs one ``stat`` (about 2 us) per capture; in
work trees with more than :data:`MAX_WATCHED_FILES` tracked files only the index and refs
are watched, so an unstaged edit there shows at the next stage, commit or process. Git runs with ``GIT_OPTIONAL_LOCKS=0`` so that it never rewrites
the index behind the user's back (which would also invalidate this cache every time).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any

import xxhash

from ..log import get_logger

#: Seconds a single git command may take before git information is left out.
TIMEOUT = 5.0
#: Above this many tracked files, edits are noticed through the index and refs only (staging,
#: committing, checking out), since a ``stat`` of each file (~2 us) would cost milliseconds.
MAX_WATCHED_FILES = 2000
#: A modification time this close to when it was read is not trusted to reveal the next one.
RACY_NS = 100_000_000

_ENV_OVERRIDES = {"GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
_DIFF_ARGS = [
    "diff",
    "--binary",
    "--full-index",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-renames",
    "--src-prefix=a/",
    "--dst-prefix=b/",
]
_Stat = tuple[int, int, int] | None


class GitUnavailable(Exception):
    """git is missing, failed, or timed out; the git category is left out."""


def run_git(args: list[str], cwd: str, stdin: bytes | None = None) -> bytes:
    """Output of ``git args`` in ``cwd``; :class:`GitUnavailable` if it fails in any way."""
    env = {**os.environ, **_ENV_OVERRIDES}
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            input=stdin if stdin is not None else b"",
            capture_output=True,
            timeout=TIMEOUT,
            env=env,
        )
    except (OSError, subprocess.SubprocessError) as exc:  # missing binary, timeout
        raise GitUnavailable(f"git {args[0]}: {exc}") from exc
    if proc.returncode != 0:
        raise GitUnavailable(f"git {args[0]}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def _stat(path: str) -> _Stat:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass
class _Repo:
    """A work tree found from some directory, with what is cached about it."""

    toplevel: str
    git_dir: str
    common_dir: str
    index_stat: _Stat = None
    tracked: list[str] | None = None  # absolute paths of watched files; None until listed
    key: tuple[Any, ...] | None = None
    info: dict[str, Any] | None = None


def find_repo(workdir: str) -> _Repo | None:
    """The work tree containing ``workdir``, or None (not a repository, or no usable git)."""
    if shutil.which("git") is None:
        return None
    try:
        out = run_git(
            ["rev-parse", "--path-format=absolute", "--show-toplevel", "--git-dir"]
            + ["--git-common-dir"],
            cwd=workdir,
        )
    except GitUnavailable:
        return None  # not a work tree (or a bare repository, or git older than 2.31)
    lines = out.decode("utf-8", errors="surrogateescape").splitlines()
    if len(lines) != 3 or not lines[0]:
        return None
    return _Repo(toplevel=lines[0], git_dir=lines[1], common_dir=lines[2])


def _state_key(repo: _Repo) -> tuple[Any, ...]:
    """Everything whose change may change what git reports, read without running git."""
    try:
        with open(os.path.join(repo.git_dir, "HEAD"), "rb") as f:
            head = f.read()
    except OSError:
        head = b""
    ref_stat: _Stat = None
    if head.startswith(b"ref: "):
        ref = head[5:].strip().decode("utf-8", errors="surrogateescape")
        ref_stat = _stat(os.path.join(repo.common_dir, ref))
    index_stat = _stat(os.path.join(repo.git_dir, "index"))
    if repo.tracked is None or index_stat != repo.index_stat:
        _refresh_tracked(repo, index_stat)
    files = _stats(repo.tracked or ())
    packed = _stat(os.path.join(repo.common_dir, "packed-refs"))
    return (head, ref_stat, packed, index_stat, files)


def _stats(paths: list[str] | tuple[()]) -> tuple[_Stat, ...]:
    """``_stat`` of each path, inlined: this loop is most of a repeated capture's cost."""
    out: list[_Stat] = []
    append = out.append
    stat = os.stat
    for path in paths:
        try:
            st = stat(path)
        except OSError:
            append(None)
        else:
            append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def _is_racy(key: tuple[Any, ...], taken_ns: int) -> bool:
    """Whether a file in ``key`` changed so recently that another change in the same clock
    tick would leave its stat unchanged (git's "racy clean" problem); then ask git again."""
    _, ref_stat, packed, index_stat, files = key
    stats = (ref_stat, packed, index_stat, *files)
    return any(st is not None and st[0] > taken_ns - RACY_NS for st in stats)


def _refresh_tracked(repo: _Repo, index_stat: _Stat) -> None:
    # Recorded even when git fails, so a git that hangs is not asked again on every capture.
    repo.index_stat = index_stat
    repo.tracked = []
    out = run_git(["ls-files", "-z"], cwd=repo.toplevel)
    names = [p for p in out.decode("utf-8", errors="surrogateescape").split("\0") if p]
    if len(names) <= MAX_WATCHED_FILES:
        repo.tracked = [os.path.join(repo.toplevel, name) for name in names]


def query(repo: _Repo) -> dict[str, Any]:
    """Ask git for the state of ``repo`` (a few milliseconds)."""
    out = run_git(
        ["status", "--porcelain=v2", "-z", "--branch", "--untracked-files=no", "--no-renames"],
        cwd=repo.toplevel,
    )
    commit: str | None = None
    branch: str | None = None
    changed: list[str] = []
    for entry in out.decode("utf-8", errors="surrogateescape").split("\0"):
        if entry.startswith("# branch.oid "):
            oid = entry[len("# branch.oid ") :]
            commit = None if oid == "(initial)" else oid
        elif entry.startswith("# branch.head "):
            head = entry[len("# branch.head ") :]
            branch = None if head == "(detached)" else head
        elif entry.startswith("1 "):
            changed.append(entry.split(" ", 8)[8])
        elif entry.startswith("u "):
            changed.append(entry.split(" ", 10)[10])
    digest = _diff_digest(repo, commit) if changed else None
    return {
        "commit": commit,
        "branch": branch,
        "dirty": bool(changed),
        "diff_digest": digest,
        "changed_files": sorted(changed),
    }


def _diff_digest(repo: _Repo, commit: str | None) -> str:
    base = commit
    if base is None:  # no commit yet: compare with the empty tree of this repository's hash
        base = run_git(["hash-object", "-t", "tree", "--stdin"], cwd=repo.toplevel).decode()
        base = base.strip()
    diff = run_git([*_DIFF_ARGS, base, "--"], cwd=repo.toplevel)
    return xxhash.xxh3_128_hexdigest(diff)


class GitWatcher:
    """Git information per working directory, asked of git only when it may have changed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._repos: dict[str, _Repo | None] = {}

    def current(self, workdir: str | None = None, cache: bool = True) -> dict[str, Any] | None:
        """Git information for ``workdir`` (default: the current directory), or None.

        While nothing changed the same dict object is returned as the previous time.
        """
        workdir = os.path.abspath(workdir or os.getcwd())
        with self._lock:
            if not cache or workdir not in self._repos:
                self._repos[workdir] = find_repo(workdir)
            repo = self._repos[workdir]
            if repo is None:
                return None
            try:
                taken = time.time_ns()
                key = _state_key(repo)  # before asking git: a later edit shows next time
                if cache and key == repo.key:
                    return repo.info
                repo.key = None if _is_racy(key, taken) else key
                repo.info = query(repo)
            except GitUnavailable as exc:
                # Kept under this key: git is asked again only once something changes.
                repo.info = None
                get_logger().warning(
                    "Git information is left out of the environment: %s", str(exc)[:200]
                )
            return repo.info
