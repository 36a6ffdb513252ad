"""The sweep's own bar on a Client: what it draws, in dask ProgressBar's form."""

from __future__ import annotations

import io
import sys
import time
from typing import Any

from daskperiment.trialbar import TextBar, format_elapsed, trial_bar


def test_the_bar_counts_trials_and_failures_and_ends_its_line() -> None:
    out = io.StringIO()
    bar = TextBar(4, out, tick=0)
    for failed in (False, True, False, False):
        bar.update(failed=failed)
    bar.close()
    drawings = out.getvalue().split("\r")[1:]
    assert drawings[0].startswith(f"[{' ' * 40}] |   0% Completed | 0 of 4 trials | ")
    last = drawings[-1]
    assert last.startswith(f"[{'#' * 40}] | 100% Completed | 4 of 4 trials | 1 failed | ")
    assert last.endswith("s\n") and last.count("\n") == 1
    # Quick updates are drawn at most every 0.1 s, but the full bar always is
    assert 3 <= len(drawings) <= 6


def test_elapsed_time_reads_as_dask_writes_it() -> None:
    assert format_elapsed(1.25) == " 1.2s"
    assert format_elapsed(125.0) == "2min  5.0s"
    assert format_elapsed(3725.0) == "1hr  2min  5.0s"


class Broken(io.StringIO):
    def __init__(self, fail_after: int) -> None:
        super().__init__()
        self.left = fail_after

    def write(self, text: str) -> int:
        self.left -= 1
        if self.left < 0:
            raise OSError("stdout is closed")
        return super().write(text)


def test_a_bar_that_cannot_be_shown_is_no_error(monkeypatch: Any) -> None:
    monkeypatch.setattr(sys, "stdout", Broken(fail_after=0))
    assert trial_bar(3, widget=False) is None


def test_a_bar_whose_output_breaks_mid_sweep_goes_quiet() -> None:
    out = Broken(fail_after=1)
    bar = TextBar(3, out, tick=0)
    bar.update()
    bar.update(failed=True)
    bar.update()
    bar.close()
    assert bar.broken and bar.done == 3 and bar.failed == 1
    assert out.getvalue().startswith("\r[")


def test_the_clock_moves_while_no_trial_ends_and_stops_at_close() -> None:
    out = io.StringIO()
    bar = TextBar(2, out, tick=0.02)
    time.sleep(0.25)  # long enough for the clock to read 0.2s or more
    deadline = time.monotonic() + 30
    while out.getvalue().count("\r") < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    bar.update()
    bar.update()
    bar.close()
    drawings = out.getvalue().split("\r")[1:]
    waiting = [d for d in drawings if "0 of 2 trials" in d]
    assert len(waiting) >= 4  # the first drawing, then the clock's
    seconds = [float(d.rsplit("|", 1)[1].strip().rstrip("s")) for d in waiting]
    assert seconds == sorted(seconds) and seconds[-1] > seconds[0]
    assert drawings[-1].endswith("\n") and "2 of 2 trials" in drawings[-1]
    assert not bar._ticker or not bar._ticker.is_alive()
    ended = out.getvalue()
    time.sleep(0.1)
    assert out.getvalue() == ended  # nothing drawn after close
