"""The daskperiment logger: seed format by default, ordinary logging configuration wins."""

from __future__ import annotations

import importlib
import logging
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from daskperiment import log

REPO = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[daskperiment\] \[(\w+)\] (.*)$")


def run(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (no pytest handlers on the root logger)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )


def parsed(stream: str) -> list[tuple[str, str]]:
    lines = stream.splitlines()
    matches = [LINE.match(line) for line in lines]
    assert all(matches), f"lines not in the seed's format: {lines}"
    return [(m.group(1), m.group(2)) for m in matches if m]


def test_default_output_is_the_seed_format_on_stderr() -> None:
    proc = run(
        """
        import daskperiment.log as l
        l.get_logger().info("Started Experiment (trial id=%d)", 1)
        l.log_diff(l.get_logger(), "Code context has been changed: f", ["-@ex", "+@ex.persist"])
        """
    )
    assert proc.stdout == ""
    assert parsed(proc.stderr) == [
        ("INFO", "Started Experiment (trial id=1)"),
        ("WARNING", "Code context has been changed: f"),
        ("WARNING", "-@ex"),
        ("WARNING", "+@ex.persist"),
    ]


def test_reimport_and_reload_print_each_record_once() -> None:
    proc = run(
        """
        import importlib, logging
        import daskperiment.log as l
        importlib.reload(l)
        import daskperiment.log
        importlib.reload(l)
        assert l.get_logger() is l.get_logger() is logging.getLogger("daskperiment")
        l.get_logger().warning("once")
        print(len(logging.getLogger("daskperiment").handlers))
        """
    )
    assert proc.stdout.strip() == "1"
    assert parsed(proc.stderr) == [("WARNING", "once")]


def test_set_level_silences_info() -> None:
    proc = run(
        """
        import logging
        import daskperiment.log as l
        logging.getLogger("daskperiment").setLevel(logging.WARNING)
        l.get_logger().info("hidden")
        l.get_logger().warning("shown")
        """
    )
    assert parsed(proc.stderr) == [("WARNING", "shown")]


def test_level_chosen_before_import_survives_import_and_reload() -> None:
    proc = run(
        """
        import importlib, logging
        logging.getLogger("daskperiment").setLevel(logging.ERROR)
        import daskperiment.log as l
        importlib.reload(l)
        l.get_logger().warning("hidden")
        l.get_logger().error("shown")
        """
    )
    assert parsed(proc.stderr) == [("ERROR", "shown")]


def test_root_configuration_redirects_without_duplicates() -> None:
    proc = run(
        """
        import logging, sys
        import daskperiment.log as l
        logging.basicConfig(stream=sys.stdout, format="%(name)s|%(levelname)s|%(message)s")
        l.get_logger().info("to stdout")
        logging.getLogger("daskperiment.cli").warning("child")
        """
    )
    assert proc.stderr == ""
    assert proc.stdout.splitlines() == [
        "daskperiment|INFO|to stdout",
        "daskperiment.cli|WARNING|child",
    ]


def test_own_handler_on_the_logger_replaces_default_output() -> None:
    proc = run(
        """
        import logging, sys
        import daskperiment.log as l
        h = logging.StreamHandler(sys.stdout)
        h.setFormatter(logging.Formatter("mine: %(message)s"))
        logging.getLogger("daskperiment").addHandler(h)
        l.get_logger().info("redirected")
        logging.getLogger("daskperiment").removeHandler(h)
        l.get_logger().info("back to default")
        logging.getLogger("daskperiment.board").addHandler(h)
        logging.getLogger("daskperiment.board").info("child handled")
        """
    )
    assert proc.stdout.splitlines() == ["mine: redirected", "mine: child handled"]
    assert parsed(proc.stderr) == [("INFO", "back to default")]


def test_removed_default_handler_is_not_put_back() -> None:
    proc = run(
        """
        import importlib, logging
        import daskperiment.log as l
        lg = logging.getLogger("daskperiment")
        for h in list(lg.handlers):
            lg.removeHandler(h)
        importlib.reload(l)
        l.get_logger().warning("nowhere but lastResort")
        print(len(lg.handlers))
        """
    )
    assert proc.stdout.strip() == "0"
    # Python's own last resort still shows warnings, in its bare format.
    assert proc.stderr.strip() == "nowhere but lastResort"


def test_reload_in_process_keeps_one_default_handler() -> None:
    logger = logging.getLogger("daskperiment")
    before = list(logger.handlers)
    reloaded = importlib.reload(log)
    assert reloaded.get_logger() is logger
    assert logger.handlers == before
    assert [h.get_name() for h in logger.handlers].count(log.HANDLER_NAME) == 1


def test_records_reach_caplog_with_diff_lines_verbatim(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="daskperiment"):
        log.log_diff(log.get_logger(), "Code context has been changed: f", ["-x = 100%s", " y"])
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("daskperiment", "WARNING", "Code context has been changed: f"),
        ("daskperiment", "WARNING", "-x = 100%s"),
        ("daskperiment", "WARNING", " y"),
    ]


def test_default_handler_stays_quiet_when_root_has_handlers(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # pytest's capture handler sits on the root logger, so the default handler must defer.
    log.get_logger().warning("captured, not printed")
    assert "captured, not printed" in caplog.text
    assert "captured, not printed" not in capsys.readouterr().err
