"""The git state of the working tree an experiment runs in.

Recorded: the ``commit`` checked out (None before the first commit), the ``branch`` (None when
detached), whether tracked files differ from that commit (``dirty``, staged or not; untracked
files do not count), an xxh3-128 ``diff_digest`` of ``git diff HEAD`` when dirty, and the
``changed_files``. Nothing is recorded outside a git work tree or when git is not installed.

Asking git costs milliseconds per command, too much for every trial, so the answer is kept
and asked again only when something git looks at has changed: ``HEAD``, the ref it points
to, ``packed-refs`` or the index (a ``stat`` of each), or a tracked file was written (see
:mod:`.watch`: inotify on Linux, whatever the number of files; elsewhere a ``stat`` per file,
and beyond :data:`MAX_WATCHED_FILES` files an unstaged edit shows only at the next stage,
commit or process). On Linux the four files are watched too (:func:`_meta_watch`): while
neither that watch nor the tracked files' reports a change, not even the stats are taken.
Git runs with ``GIT_OPTIONAL_LOCKS=0`` so that it never rewrites the
index behind the user's back (which would also invalidate this cache every time).
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
from .watch import FileWatch, Stat, is_racy, stats, watch_entries, watch_files

#: Seconds a single git command may take before git information is left out.
TIMEOUT = 5.0
#: Where inotify is unavailable and more files than this are tracked, edits are noticed through
#: the index and refs only (staging, committing, checking out), since a ``stat`` of each file
#: (~2 us) on every capture would cost milliseconds.
MAX_WATCHED_FILES = 2000

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


@dataclass
class _Repo:
    """A work tree found from some directory, with what is cached about it."""

    toplevel: str
    git_dir: str
    common_dir: str
    head_stat: Stat = None
    head: bytes = b""
    index_stat: Stat = None
    listed: bool = False  # whether the tracked files were listed (and watched) yet
    watch: FileWatch | None = None
    key: tuple[Any, ...] | None = None
    info: dict[str, Any] | None = None
    #: inotify watch on what the key stats (HEAD, its ref, packed-refs, the index), set while
    #: the key is trusted: no event there and none on the tracked files means no change
    quiet: FileWatch | None = None


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


def _probe(repo: _Repo) -> tuple[tuple[Any, ...], bool]:
    """What may change git's answer, read without running git: the state of ``HEAD``, its
    ref, ``packed-refs`` and the index, and whether a tracked file was written since the
    previous probe."""
    head_stat = _stat(os.path.join(repo.git_dir, "HEAD"))
    if head_stat != repo.head_stat or head_stat is None:  # git replaces HEAD, never edits it
        repo.head_stat, repo.head = head_stat, _read(os.path.join(repo.git_dir, "HEAD"))
    head = repo.head
    ref_stat: Stat = None
    if head.startswith(b"ref: "):
        ref = head[5:].strip().decode("utf-8", errors="surrogateescape")
        ref_stat = _stat(os.path.join(repo.common_dir, ref))
    index_stat = _stat(os.path.join(repo.git_dir, "index"))
    packed = _stat(os.path.join(repo.common_dir, "packed-refs"))
    if not repo.listed or index_stat != repo.index_stat:
        _watch_tracked(repo, index_stat)  # the index changed: so may the set of tracked files
    files_changed = repo.watch.changed() if repo.watch is not None else False
    return (head, head_stat, ref_stat, packed, index_stat), files_changed


def _meta_watch(repo: _Repo) -> tuple[FileWatch | None, bytes]:
    """An inotify watch on the files :func:`_probe` stats, for the ref ``HEAD`` names now;
    and that ``HEAD`` (the watch is only good while the probe reads the same one)."""
    head = _read(os.path.join(repo.git_dir, "HEAD"))
    paths = [
        os.path.join(repo.git_dir, "HEAD"),
        os.path.join(repo.git_dir, "index"),
        os.path.join(repo.common_dir, "packed-refs"),
    ]
    if head.startswith(b"ref: "):
        ref = head[5:].strip().decode("utf-8", errors="surrogateescape")
        paths.append(os.path.join(repo.common_dir, ref))
    return watch_entries(paths), head


def _stat(path: str) -> Stat:
    return stats([path])[0]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _watch_tracked(repo: _Repo, index_stat: Stat) -> None:
    # Recorded before asking git, so a git that hangs is not asked again on every capture.
    repo.index_stat = index_stat
    repo.listed = True
    if repo.watch is not None:
        repo.watch.close()
        repo.watch = None
    out = run_git(["ls-files", "-z"], cwd=repo.toplevel)
    names = [p for p in out.decode("utf-8", errors="surrogateescape").split("\0") if p]
    paths = [os.path.join(repo.toplevel, name) for name in names]
    repo.watch = watch_files(paths, max_stat_files=MAX_WATCHED_FILES)


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
        self._pid = os.getpid()

    def current(self, workdir: str | None = None, cache: bool = True) -> dict[str, Any] | None:
        """Git information for ``workdir`` (default: the current directory), or None.

        While nothing changed the same dict object is returned as the previous time.
        """
        try:
            workdir = os.path.abspath(workdir or os.getcwd())
        except OSError:  # the current directory was deleted
            return None
        with self._lock:
            if os.getpid() != self._pid:  # a forked child: watches belong to the parent
                self._repos.clear()
                self._pid = os.getpid()
            if not cache or workdir not in self._repos:
                self._repos[workdir] = find_repo(workdir)
            repo = self._repos[workdir]
            if repo is None:
                return None
            seen_changed = False
            if cache and repo.quiet is not None and not repo.quiet.changed():
                seen_changed = repo.watch.changed() if repo.watch is not None else False
                if not seen_changed:
                    return repo.info  # two reads of watches instead of four stats
            repo.quiet = None
            try:
                quiet, head = _meta_watch(repo)  # before the probe: later changes show in it
                taken = time.time_ns()
                key, files_changed = _probe(repo)  # before asking git: later edits show next time
                files_changed = files_changed or seen_changed
                if cache and key == repo.key and not files_changed:
                    repo.quiet = quiet if head == repo.head else None
                    return repo.info
                repo.key = None if is_racy(key[1:], taken) else key  # key[1:]: the stats
                repo.info = query(repo)
                if repo.key is not None and head == repo.head:
                    repo.quiet = quiet
            except GitUnavailable as exc:
                # Kept under this key: git is asked again only once something changes.
                repo.info = None
                get_logger().warning(
                    "Git information is left out of the environment: %s", str(exc)[:200]
                )
            return repo.info
