"""Environment capture: JSON-able, cached, and change detection on real packages and git."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daskperiment import environment
from daskperiment.environment import git as env_git
from daskperiment.environment import packages as env_packages
from daskperiment.environment import watch as env_watch

GIT_IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]


def assert_plain_json(value: Any, where: str = "env") -> None:
    """Only dict (str keys), list, str, int, bool and None: what canonical JSON keeps as is."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), f"{where}: key {key!r}"
            assert_plain_json(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            assert_plain_json(item, f"{where}[{i}]")
    else:
        assert value is None or isinstance(value, (str, int, bool)), f"{where}: {value!r}"


def write_dist(site: Path, name: str, version: str) -> Path:
    """An installed distribution as pip leaves it: ``name-version.dist-info/METADATA``."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: test\n\n"
        "A long description that is not read.\nName: not-this\n"
    )
    return info


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", *GIT_IDENTITY, *args], cwd=repo, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q")
    (path / "experiment.py").write_text("A = 1\n")
    (path / "helper.py").write_text("B = 2\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "first")
    return path


def test_capture_has_every_category_as_plain_json(repo: Path) -> None:
    env = environment.capture(workdir=str(repo))
    assert set(env) == {"platform", "python", "hardware", "packages", "numpy", "pandas", "git"}
    assert_plain_json(env)
    assert json.loads(json.dumps(env, sort_keys=True)) == env
    assert env["python"]["version"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert env["python"]["executable"] == sys.executable
    assert env["hardware"]["cpu_count"] == os.cpu_count()
    import numpy
    import pandas

    assert env["numpy"]["version"] == numpy.__version__
    assert env["pandas"]["version"] == pandas.__version__


def test_packages_are_name_version_location_lines() -> None:
    import numpy

    packages = environment.capture()["packages"]
    assert packages == sorted(packages, key=lambda row: (row.lower(), row))
    site = os.path.dirname(os.path.dirname(numpy.__file__))
    assert f"numpy {numpy.__version__} ({site})" in packages


def test_fake_distribution_upgrade_is_detected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"
    site.mkdir()
    info = write_dist(site, "fakepkg", "1.0")
    monkeypatch.syspath_prepend(str(site))

    before = environment.capture()
    assert f"fakepkg 1.0 ({site})" in before["packages"]
    assert environment.capture() is before  # nothing changed: the cached capture

    # What pip does on upgrade: the old dist-info goes, a new one with the new version comes.
    info.rename(site / "fakepkg-2.0.dist-info")
    (site / "fakepkg-2.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fakepkg\nVersion: 2.0\n"
    )
    after = environment.capture()

    line = before["packages"].index(f"fakepkg 1.0 ({site})") + 1
    changes = environment.diff(before, after)
    assert changes == [
        (
            "Installed Python packages have been changed",
            [f"@@ -{line} +{line} @@", f"-fakepkg 1.0 ({site})", f"+fakepkg 2.0 ({site})"],
        )
    ]


def test_installing_and_removing_a_distribution_is_detected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    before = environment.capture()
    info = write_dist(site, "zzz-newly-installed", "0.1")
    added = environment.capture()
    [(message, lines)] = environment.diff(before, added)
    assert message == "Installed Python packages have been changed"
    assert lines[1:] == [f"+zzz-newly-installed 0.1 ({site})"]

    for child in info.iterdir():
        child.unlink()
    info.rmdir()
    removed = environment.capture()
    [(message, lines)] = environment.diff(added, removed)
    assert message == "Installed Python packages have been changed"
    assert lines[1:] == [f"-zzz-newly-installed 0.1 ({site})"]
    assert removed["packages"] == before["packages"]


def test_package_list_is_cached_until_a_path_directory_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    watcher = env_packages.PackageWatcher()
    monkeypatch.setattr(env_watch, "RACY_NS", 0)  # trust fresh timestamps for this test
    first = watcher.current()
    assert watcher.current() is first
    write_dist(site, "fakepkg", "1.0")
    second = watcher.current()
    assert second is not first
    assert any(row.startswith("fakepkg 1.0 ") for row in second)


def backdate(*paths: Path) -> None:
    """Give files the times of an install made long ago, outside any racy window."""
    for path in paths:
        os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))


def test_unrelated_file_next_to_the_script_does_not_rescan_but_an_upgrade_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The directory a script (and so sys.path[0]) lives in, holding a distribution too.
    script_dir = tmp_path / "project"
    script_dir.mkdir()
    info = write_dist(script_dir, "fakepkg", "1.0")
    backdate(info / "METADATA", info)
    monkeypatch.syspath_prepend(str(script_dir))
    watcher = env_packages.PackageWatcher()
    first = watcher.current()
    assert f"fakepkg 1.0 ({script_dir})" in first
    scans = watcher.scans

    (script_dir / "output.csv").write_text("a,b\n1,2\n")  # what an experiment writes
    (script_dir / "logs").mkdir()
    (script_dir / "output.csv").rename(script_dir / "result.csv")
    for _ in range(3):
        assert watcher.current() is first
    assert watcher.scans == scans

    # An upgrade: the dist-info is renamed and its METADATA rewritten.
    info = info.rename(script_dir / "fakepkg-2.0.dist-info")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 2.0\n")
    upgraded = watcher.current()
    assert watcher.scans == scans + 1
    assert f"fakepkg 2.0 ({script_dir})" in upgraded
    assert f"fakepkg 1.0 ({script_dir})" not in upgraded


def test_dist_info_replaced_under_the_same_name_is_detected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"
    site.mkdir()
    info = write_dist(site, "fakepkg", "1.0")
    backdate(info / "METADATA", info)
    monkeypatch.syspath_prepend(str(site))
    watcher = env_packages.PackageWatcher()
    assert f"fakepkg 1.0 ({site})" in watcher.current()

    # A reinstall removes the directory and writes a new one; here its metadata differs.
    (info / "METADATA").unlink()
    info.rmdir()
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.0.post1\n")
    replaced = watcher.current()
    assert f"fakepkg 1.0.post1 ({site})" in replaced
    assert f"fakepkg 1.0 ({site})" not in replaced


def test_capture_after_writing_an_output_keeps_the_package_list_without_rescanning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    before = environment.capture()
    scans = environment._packages.scans
    (tmp_path / "output.csv").write_text("x\n")
    after = environment.capture()
    assert after["packages"] is before["packages"]
    assert environment._packages.scans == scans


def test_git_clean_dirty_and_new_commit(repo: Path) -> None:
    clean = environment.capture(workdir=str(repo))["git"]
    assert clean == {
        "commit": git(repo, "rev-parse", "HEAD"),
        "branch": git(repo, "symbolic-ref", "--short", "HEAD"),
        "dirty": False,
        "diff_digest": None,
        "changed_files": [],
    }

    (repo / "helper.py").write_text("B = 3\n")  # an unstaged edit of a tracked file
    dirty = environment.capture(workdir=str(repo))["git"]
    assert dirty["dirty"] is True
    assert dirty["commit"] == clean["commit"]
    assert dirty["changed_files"] == ["helper.py"]
    assert len(dirty["diff_digest"]) == 32

    (repo / "helper.py").write_text("B = 4\n")
    other_edit = environment.capture(workdir=str(repo))["git"]
    assert other_edit["diff_digest"] != dirty["diff_digest"]
    (repo / "helper.py").write_text("B = 3\n")
    same_edit_again = environment.capture(workdir=str(repo))["git"]
    assert same_edit_again["diff_digest"] == dirty["diff_digest"]

    (repo / "untracked.txt").write_text("ignored\n")
    git(repo, "commit", "-q", "-am", "second")
    committed = environment.capture(workdir=str(repo))
    assert committed["git"]["dirty"] is False
    assert committed["git"]["commit"] == git(repo, "rev-parse", "HEAD") != clean["commit"]

    old_env = {"git": clean}
    [(message, lines)] = environment.diff(old_env, {"git": committed["git"]})
    assert message == "Git commit has been changed"
    assert lines == [
        "@@ -3 +3 @@",  # keys in sorted order: branch, changed_files, commit, ...
        f"-commit: {clean['commit']}",
        f"+commit: {committed['git']['commit']}",
    ]
    [(message, _)] = environment.diff(old_env, {"git": dirty})
    assert message == "Git working tree has been changed"


def test_git_staged_change_and_detached_head(repo: Path) -> None:
    (repo / "new_module.py").write_text("C = 1\n")
    git(repo, "add", "new_module.py")
    staged = environment.capture(workdir=str(repo))["git"]
    assert staged["dirty"] is True
    assert staged["changed_files"] == ["new_module.py"]

    git(repo, "commit", "-q", "-m", "add module")
    git(repo, "checkout", "-q", "--detach", "HEAD~1")
    detached = environment.capture(workdir=str(repo))["git"]
    assert detached["branch"] is None
    assert detached["commit"] == git(repo, "rev-parse", "HEAD")


def test_git_repository_without_commits(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    assert environment.capture(workdir=str(tmp_path))["git"]["commit"] is None
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    info = environment.capture(workdir=str(tmp_path))["git"]
    assert info["commit"] is None
    assert info["dirty"] is True
    assert len(info["diff_digest"]) == 32


def test_no_git_category_outside_a_work_tree(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    env = environment.capture(workdir=str(plain))
    assert "git" not in env
    assert environment.summary(env)["git_commit"] is None


def test_no_git_category_when_git_is_not_installed(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    assert "git" not in environment.capture(cache=False, workdir=str(repo))


@pytest.mark.parametrize("watch", ["default", "stat"])
def test_git_is_asked_again_only_after_a_change(
    repo: Path, monkeypatch: pytest.MonkeyPatch, watch: str
) -> None:
    monkeypatch.setattr(env_watch, "RACY_NS", 0)  # trust fresh timestamps for this test
    if watch == "stat":  # as on platforms without inotify
        monkeypatch.setattr(env_git, "watch_files", lambda paths, **_: env_watch.StatWatch(paths))
    watcher = env_git.GitWatcher()
    first = watcher.current(str(repo))
    assert watcher.current(str(repo)) is first  # no git command ran: the same answer object
    with open(repo / "helper.py", "a") as f:
        f.write("# grows the file, so its stat changes even within one clock tick\n")
    changed = watcher.current(str(repo))
    assert changed is not first
    assert changed["dirty"] is True


def test_repeated_capture_returns_the_same_object_while_nothing_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(env_watch, "RACY_NS", 0)
    monkeypatch.chdir(tmp_path)
    first = environment.capture()
    assert environment.capture() is first
    assert environment.capture(cache=False) == first


SEED_OLD = "pandas 0.23.4 (/Users/sinhrks/anaconda/lib/python3.6/site-packages)"
SEED_NEW = "pandas 0.24.0 (/Users/sinhrks/anaconda/lib/python3.6/site-packages)"


def test_diff_reproduces_the_seed_package_warning() -> None:
    others = [f"package{i:03d} 1.0 (/site-packages)" for i in range(200)]
    old_packages = others[:141] + [SEED_OLD] + others[141:]
    new_packages = others[:141] + [SEED_NEW] + others[141:]
    changes = environment.diff({"packages": old_packages}, {"packages": new_packages})
    assert changes == [
        (
            "Installed Python packages have been changed",
            ["@@ -142 +142 @@", f"-{SEED_OLD}", f"+{SEED_NEW}"],
        )
    ]


def test_diff_messages_per_category() -> None:
    env = json.loads(json.dumps(environment.capture()))
    assert environment.diff(env, json.loads(json.dumps(env))) == []
    assert environment.diff(None, env) == []

    changed = json.loads(json.dumps(env))
    changed["python"]["version"] = "3.6.8"
    changed["platform"]["release"] = "0.0-other"
    messages = [message for message, _ in environment.diff(changed, env)]
    assert messages == ["Platform has been changed", "Python version has been changed"]
    [(_, python_lines)] = environment.diff({"python": changed["python"]}, {"python": env["python"]})
    assert python_lines[1:] == ["-version: 3.6.8", f"+version: {env['python']['version']}"]

    moved = json.loads(json.dumps(env))
    moved["python"]["executable"] = "/elsewhere/bin/python"
    assert [m for m, _ in environment.diff(moved, env)] == ["Python interpreter has been changed"]


def test_diff_of_git_appearing_and_branch_switch() -> None:
    info = {"commit": "a" * 40, "branch": "main", "dirty": False, "diff_digest": None}
    [(message, lines)] = environment.diff({}, {"git": info})
    assert message == "Git commit has been changed"
    assert "+commit: " + "a" * 40 in lines
    other_branch = {**info, "branch": "feature"}
    [(message, lines)] = environment.diff({"git": info}, {"git": other_branch})
    assert message == "Git branch has been changed"
    assert lines == ["@@ -1 +1 @@", "-branch: main", "+branch: feature"]


def test_render_flattens_nested_data() -> None:
    value = {"b": {"y": [1, "two"], "x": None}, "a": True, "c": []}
    assert environment.render("numpy", value) == [
        "a: true",
        "b.x: null",
        "b.y: 1",
        "b.y: two",
        "c: []",
    ]


def test_summary_of_a_capture(repo: Path) -> None:
    env = environment.capture(workdir=str(repo))
    assert environment.summary(env) == {
        "python": env["python"]["version"],
        "platform": env["platform"]["platform"],
        "hostname": env["hardware"]["hostname"],
        "packages": len(env["packages"]),
        "git_commit": git(repo, "rev-parse", "HEAD"),
        "git_branch": env["git"]["branch"],
        "git_dirty": False,
    }


@pytest.fixture(params=["inotify", "stat"])
def make_watch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    if request.param == "inotify":
        if not sys.platform.startswith("linux"):
            pytest.skip("inotify is Linux only")
        return env_watch.InotifyWatch
    monkeypatch.setattr(env_watch, "RACY_NS", 0)  # edits below change sizes, so stats differ
    return env_watch.StatWatch


def test_file_watch_reports_writes_to_watched_files_only(tmp_path: Path, make_watch) -> None:
    (tmp_path / "sub").mkdir()
    tracked = [tmp_path / "a.py", tmp_path / "sub" / "b.py"]
    for path in tracked:
        path.write_text("x = 1\n")
    watch = make_watch([str(p) for p in tracked])
    try:
        assert watch.changed() is False
        (tmp_path / "output.csv").write_text("not watched\n")
        (tmp_path / "sub" / "__pycache__").mkdir()
        assert watch.changed() is False

        tracked[1].write_text("x = 22\n")
        assert watch.changed() is True
        assert watch.changed() is False  # reported once

        saved = tmp_path / "a.py.tmp"  # how editors save: write aside, rename over
        saved.write_text("x = 333\n")
        saved.rename(tracked[0])
        assert watch.changed() is True

        tracked[0].unlink()
        assert watch.changed() is True
    finally:
        watch.close()


def test_watch_files_prefers_inotify_on_linux_and_caps_stat_watches(tmp_path: Path) -> None:
    path = str(tmp_path / "a.py")
    watch = env_watch.watch_files([path])
    assert isinstance(watch, env_watch.FileWatch)
    if sys.platform.startswith("linux"):
        assert isinstance(watch, env_watch.InotifyWatch)
    watch.close()
    watch.close()  # idempotent
    assert isinstance(env_watch.watch_files([]), env_watch.StatWatch)


def test_untracked_output_in_the_work_tree_does_not_make_it_dirty(repo: Path) -> None:
    first = environment.capture(workdir=str(repo))["git"]
    (repo / "results.csv").write_text("1,2\n")
    (repo / "daskperiment_cache").mkdir()
    assert environment.capture(workdir=str(repo))["git"] == first


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_an_unchanged_package_list_is_answered_without_a_stat_and_every_install_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stat_calls: Any
) -> None:
    site = tmp_path / "site-packages"
    site.mkdir()
    old = write_dist(site, "fakepkg", "1.0")
    backdate(old / "METADATA", old, site)
    monkeypatch.syspath_prepend(str(site))
    watcher = env_packages.PackageWatcher()
    first = watcher.current()
    stats = stat_calls()
    for _ in range(3):
        assert watcher.current() is first
    assert stats == []  # nothing changed: one read of the watch, no stat of any entry
    for n in range(10):  # installs in a tight loop: each is seen by the very next call
        write_dist(site, f"quick{n}", "0.1")
        assert any(row.startswith(f"quick{n} 0.1 ") for row in watcher.current())
    assert stats


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_unchanged_git_state_is_answered_without_a_stat_and_every_commit_is_seen(
    repo: Path, monkeypatch: pytest.MonkeyPatch, stat_calls: Any
) -> None:
    # Fresh files count as settled here, so the answer is trusted at once; every change
    # below must then be seen through the watches alone.
    monkeypatch.setattr(env_watch, "RACY_NS", 0)
    watcher = env_git.GitWatcher()
    first = watcher.current(str(repo))
    stats = stat_calls()
    for _ in range(3):
        assert watcher.current(str(repo)) is first
    assert stats == []
    for n in range(5):  # commits in a tight loop: the ref file changes each time
        (repo / "helper.py").write_text(f"B = {n + 10}\n")
        assert watcher.current(str(repo))["dirty"] is True
        git(repo, "commit", "-q", "-am", f"change {n}")
        info = watcher.current(str(repo))
        assert info["commit"] == git(repo, "rev-parse", "HEAD") and info["dirty"] is False
    git(repo, "checkout", "-q", "-b", "other")
    assert watcher.current(str(repo))["branch"] == "other"
    git(repo, "commit", "-q", "--allow-empty", "-m", "on other")
    assert watcher.current(str(repo))["commit"] == git(repo, "rev-parse", "HEAD")
    git(repo, "pack-refs", "--all")
    git(repo, "commit", "-q", "--allow-empty", "-m", "after packing")
    assert watcher.current(str(repo))["commit"] == git(repo, "rev-parse", "HEAD")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_a_log_appended_to_without_pause_next_to_watched_files_never_stalls_a_capture(
    tmp_path: Path,
) -> None:
    """A process writing a log in a watched directory as fast as it can: every check of the
    watch returns promptly (events for other names are read, not waited out), and a
    whole-directory watch is not even told of the appends."""
    import threading
    import time

    (tmp_path / "a.py").write_text("x = 1\n")
    named = env_watch.watch_files([str(tmp_path / "a.py")])
    whole = env_watch.watch_entries([str(tmp_path)])
    assert named is not None and whole is not None
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nf = open(sys.argv[1], 'a')\nwhile True:\n    f.write('x' * 64)\n"
            "    f.flush()\n",
            str(tmp_path / "train.log"),
        ]
    )
    try:
        time.sleep(0.3)
        results: list[tuple[bool, bool]] = []

        def check() -> None:
            for _ in range(50):
                results.append((named.changed(), whole.changed()))

        worker = threading.Thread(target=check, daemon=True)
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), "a check of the watch never returned"
        # the log's creation may show once; its appends never do for the whole directory
        assert [w for _, w in results[1:]] == [False] * 49
        (tmp_path / "a.py").write_text("x = 2\n")
        assert named.changed() is True
        (tmp_path / "new.pth").write_text("")
        assert whole.changed() is True
    finally:
        writer.kill()
        writer.wait()
        named.close()
        whole.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_a_queue_that_never_empties_counts_as_a_change_instead_of_being_read_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events for other names arriving as fast as they are read (a tool logging each of
    our reads into the watched directory does exactly that) end the check with "changed"."""
    import struct

    (tmp_path / "a.py").write_text("x = 1\n")
    watch = env_watch.watch_files([str(tmp_path / "a.py")])
    assert isinstance(watch, env_watch.InotifyWatch)
    name = b"trace.out".ljust(16, b"\0")
    event = struct.pack("iIII", 1, 0x2, 0, len(name)) + name  # IN_MODIFY of another file
    reads = []

    def endless(fd: int, n: int) -> bytes:
        reads.append(fd)
        if len(reads) > 10_000:
            raise AssertionError("the watch kept reading a queue that never empties")
        return event

    monkeypatch.setattr(env_watch.os, "read", endless)
    assert watch.changed() is True
    assert len(reads) <= 64
    monkeypatch.undo()
    watch.close()
