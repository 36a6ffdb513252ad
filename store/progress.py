"""Progress of long store walks (fsck, gc): counts reported to a callback, and a terminal bar.

A walk calls ``progress(phase, done, total)`` as it goes: ``phase`` names the pass
(``"objects"``, ``"refs"``, ``"mark"``, ``"sweep"``), ``done`` how many items it has handled,
``total`` an estimate of how many there are (None while unknown). Objects are listed shard
directory by shard directory (``objects/ab/...``, 256 of them), so after the first shards the
total is estimated from how many objects the shards seen so far held: no second listing.

:class:`TerminalBar` draws one line on a stream (stderr), redrawn at most ten times a second,
and is only used when that stream is a terminal or when the caller asks for it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO

#: ``progress(phase, done, total)``; total is an estimate or None.
Progress = Callable[[str, int, "int | None"], None]

SHARDS = 256


def counted(
    keys: Iterable[str], phase: str, progress: Progress | None, every: int = 1000
) -> Iterator[str]:
    """``keys`` unchanged, reporting progress every ``every`` keys and at the end.

    Keys of sharded objects (``objects/ab/cdef...``) arrive one shard directory after
    another; the shards seen so far give the estimate of the total.
    """
    if progress is None:
        yield from keys
        return
    done = 0
    shards: set[str] = set()
    progress(phase, 0, None)
    for key in keys:
        done += 1
        if key.startswith("objects/"):
            shards.add(key[8:10])
        if done % every == 0:
            progress(phase, done, _estimate(done, len(shards)))
        yield key
    progress(phase, done, done)


def _estimate(done: int, shards: int) -> int | None:
    if shards < 2:
        return None
    # the last shard seen is still being listed: count only the finished ones
    return max(done, round(done * SHARDS / (shards - 0.5)))


class TerminalBar:
    """A one-line progress bar: ``fsck objects  42% [########          ] 420,000/~1,000,000``."""

    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 0.1) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._last = 0.0
        self._phase: str | None = None
        self._started = time.monotonic()

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if phase == self._phase and not finished and now - self._last < self.interval:
            return
        if phase != self._phase:
            if self._phase is not None:
                self.stream.write("\n")
            self._phase, self._started = phase, now
        self._last = now
        elapsed = now - self._started
        rate = f"  ({done / elapsed:,.0f}/s)" if elapsed > 0.5 else ""
        if total:
            share = min(done / total, 1.0)
            bar = "#" * round(share * 20)
            shown = f"{share:4.0%} [{bar:<20}] {done:,}/{'' if finished else '~'}{total:,}"
        else:
            shown = f"{done:,}"
        self.stream.write(f"\r{self.label} {phase:<7} {shown}{rate}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        """End the line (call once the walk is over)."""
        if self._phase is not None:
            self.stream.write("\n")
            self.stream.flush()
            self._phase = None
