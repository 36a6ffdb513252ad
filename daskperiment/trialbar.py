"""A sweep's progress on a ``distributed.Client``: finished trials out of all, drawn by the
sweep itself as each trial is recorded.

distributed's own bars (``distributed.progress``) follow the futures' keys from a plugin the
scheduler sets up once every key is known to it. A sweep lets each trial's future go as soon as
the trial is recorded, so on a quick sweep the keys could be forgotten before that setup ran:
the bar never finished (nothing drawn, a thread of ours blocked for good) and the scheduler
polled for the missing keys for ever. Counting recorded trials on the sweep's own thread needs
no round trip and ends exactly when the sweep does.

A notebook with ``ipywidgets`` gets a widget; anywhere else, a text bar in the format of
``dask.diagnostics.ProgressBar`` on stdout (in a terminal, or in a notebook's output).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from .log import logger

WIDTH = 40
REDRAW_EVERY = 0.1  # seconds between two drawings, except the first and the last
TICK_EVERY = 0.5  # seconds between two drawings while no trial ends (the clock moves on)


def format_elapsed(seconds: float) -> str:
    """``1.2s``, ``2min  5.0s``, ``1hr  2min  5.0s``: the form of dask's ProgressBar."""
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    if hours:
        return f"{hours}hr {minutes:2d}min {secs:4.1f}s"
    if minutes:
        return f"{minutes}min {secs:4.1f}s"
    return f"{secs:4.1f}s"


class TextBar:
    """``[####    ] | 50% Completed | 2 of 4 trials | 1 failed |  0.3s`` on one line, drawn
    again as trials end and every ``tick`` seconds in between (a thread of its own, stopped
    and joined by :meth:`close`: nothing is drawn after it, in a notebook nothing lands in a
    later cell)."""

    def __init__(self, total: int, out: TextIO | None = None, tick: float = TICK_EVERY) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.out = out if out is not None else sys.stdout
        self.started = time.perf_counter()
        self.broken = False
        self.lock = threading.Lock()
        self._draw()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if tick > 0:
            self._ticker = threading.Thread(
                target=self._tick, args=(tick,), name="daskperiment-sweep-bar", daemon=True
            )
            self._ticker.start()

    def update(self, failed: bool = False) -> None:
        """One more trial recorded (``failed``: it was recorded as failed)."""
        with self.lock:
            self.done += 1
            self.failed += failed
            if self.done >= self.total or time.perf_counter() - self.drawn_at >= REDRAW_EVERY:
                self._shown(self._draw)

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self.lock:
            self._shown(self._end)

    def _tick(self, every: float) -> None:
        while not self._stop.wait(every):
            with self.lock:
                if time.perf_counter() - self.drawn_at >= every:
                    self._shown(self._draw)

    def _shown(self, draw: Callable[[], None]) -> None:
        """Draws, unless drawing failed once (a closed stdout, a kernel gone): from then on
        the bar is silent, and the sweep goes on."""
        if self.broken:
            return
        try:
            draw()
        except Exception as exc:  # noqa: BLE001 - a progress bar is not worth a sweep
            self.broken = True
            logger.debug("progress bar stopped: %s", exc)

    def _end(self) -> None:
        self._draw()
        self.out.write("\n")
        self.out.flush()

    def line(self) -> str:
        fraction = self.done / self.total if self.total else 1.0
        bar = "#" * int(WIDTH * fraction)
        failed = f" | {self.failed} failed" if self.failed else ""
        elapsed = format_elapsed(time.perf_counter() - self.started)
        return (
            f"[{bar:<{WIDTH}}] | {fraction:4.0%} Completed | {self.done} of {self.total} trials"
            f"{failed} | {elapsed:>5}"
        )

    def _draw(self) -> None:
        self.drawn_at = time.perf_counter()
        self._paint()

    def _paint(self) -> None:
        self.out.write("\r" + self.line())
        self.out.flush()


class WidgetBar(TextBar):
    """The same counts as an ``ipywidgets`` progress bar with the text line beside it."""

    def __init__(self, total: int, tick: float = TICK_EVERY) -> None:
        import ipywidgets
        from IPython.display import display

        self.bar = ipywidgets.IntProgress(value=0, min=0, max=max(total, 1), description="Trials")
        self.label = ipywidgets.HTML()
        display(ipywidgets.HBox([self.bar, self.label]))
        super().__init__(total, tick=tick)

    def _end(self) -> None:
        self._draw()
        self.bar.bar_style = "danger" if self.failed else "success"
        # The whole final state, from the sweep's thread: a change already sent by the
        # ticker's thread (whose messages a kernel may not tie to the cell) is not sent again
        # on its own.
        self.bar.send_state()
        self.label.send_state()

    def _paint(self) -> None:
        self.bar.value = self.done
        self.label.value = self.line().split("] | ", 1)[1]


def trial_bar(total: int, widget: bool) -> TextBar | None:
    """A bar for ``total`` trials (a widget if asked for), or None when it cannot be shown:
    a progress bar is never worth failing a sweep."""
    try:
        return WidgetBar(total) if widget else TextBar(total)
    except Exception as exc:  # noqa: BLE001
        logger.debug("no progress bar: %s", exc)
        return None
