"""System metrics: what the machine did while a trial's steps ran, as ordinary metrics.

Each process running steps of a trial (the client with the ``sync`` and ``threads``
schedulers, every worker process otherwise) keeps one background thread that, every
:data:`INTERVAL` seconds, samples its own process with `psutil <https://psutil.readthedocs.io>`_
and appends one point per key to the metric buffer of every step running there:

========================  ===================================================================
``sys/cpu``               CPU used by the process since the previous sample, in percent of
                          one core (a process busy on two cores shows 200)
``sys/mem``               resident memory of the process, MiB
``sys/gpu``               mean utilisation of the GPUs, percent (only where ``pynvml`` is
                          importable and finds a GPU)
``sys/gpu_mem``           memory used on the GPUs, MiB (same condition)
========================  ===================================================================

The epoch of a point is the number of seconds since the trial started, so the points of
several steps (and of several workers) line up on one time axis, and two trials compare
like any metric. The points go through the step's metric buffer, so they are stored, merged
and watched live exactly like the user's own metrics (``daskperiment/metrics.py``,
``daskperiment/live.py``).

Cost: registering a step is one set insertion under a lock; a step shorter than the interval
gets no point at all; one sample is a few ``psutil`` calls (tens of microseconds)
per second. ``psutil`` is an optional extra (``pip install 'daskperiment[sys]'``): without it
nothing is sampled. ``Experiment(..., system_metrics=False)`` turns sampling off for one
experiment.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

from .log import logger
from .perprocess import PerProcess

if TYPE_CHECKING:
    from .metrics import MetricBuffer

#: Seconds between two samples.
INTERVAL = 1.0
#: Prefix of the metric keys written here.
PREFIX = "sys/"
_MIB = 1024 * 1024


def available() -> bool:
    """Whether system metrics can be sampled in this process (``psutil`` importable)."""
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


def trial_clock(enabled: bool) -> float | None:
    """The wall-clock start of a trial for its steps' samples, or None: not sampled."""
    return time.time() if enabled and available() else None


class _Watch:
    __slots__ = ("buffer", "clock", "since")

    def __init__(self, buffer: MetricBuffer, clock: float) -> None:
        self.buffer = buffer
        self.clock = clock
        self.since = time.monotonic()


class _Sampler:
    """One thread per process, sampling for every step registered with it."""

    def __init__(self) -> None:
        import psutil

        self.pid = os.getpid()
        self.process = psutil.Process()
        self.process.cpu_percent(None)  # the baseline of the first sample
        self.gpu = _gpu_probe()
        # Held while points are appended: a step that ends waits for a sample in flight, so
        # its buffer is never appended to while it is turned into series.
        self.lock = threading.Lock()
        self.watches: set[_Watch] = set()
        self.thread = threading.Thread(target=self._loop, name="daskperiment-sys", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(INTERVAL)
            try:
                self._sample()
            except Exception as exc:  # noqa: BLE001 - sampling must never break a step
                logger.debug("system metrics not sampled: %s", exc)

    def _sample(self) -> None:
        cpu = self.process.cpu_percent(None)  # also keeps the baseline fresh between steps
        if not self.watches:
            return
        values = {"sys/cpu": cpu, "sys/mem": self.process.memory_info().rss / _MIB}
        if self.gpu is not None:
            values.update(self.gpu())
        now, age = time.time(), time.monotonic() - INTERVAL / 2
        with self.lock:
            # a step younger than half an interval gets no point: short steps stay free
            for w in [w for w in self.watches if w.since <= age]:
                epoch = round(now - w.clock, 3)
                for key, value in values.items():
                    w.buffer.add(key, epoch, float(value))


_SAMPLER: PerProcess[_Sampler] = PerProcess(lambda: _Sampler())


def start(clock: float | None, buffer: MetricBuffer) -> _Watch | None:
    """Sample into ``buffer`` while a step runs (None when the trial is not sampled)."""
    if clock is None:
        return None
    try:
        sampler = _SAMPLER.get()
    except Exception as exc:  # noqa: BLE001 - no psutil in this worker, or no /proc
        logger.debug("system metrics off in process %d: %s", os.getpid(), exc)
        return None
    w = _Watch(buffer, clock)
    with sampler.lock:
        sampler.watches.add(w)
    return w


def stop(w: _Watch | None) -> None:
    """The step's function returned (or raised): no more points into its buffer."""
    sampler = _SAMPLER.current()
    if w is None or sampler is None:
        return
    with sampler.lock:
        sampler.watches.discard(w)


def _gpu_probe() -> Any:
    """A function sampling the GPUs, or None where no GPU library finds one."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # noqa: BLE001 - no library, no driver or no device: no GPU metrics
        return None
    if not handles:
        return None

    def sample() -> dict[str, float]:
        util = [pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles]
        used = [pynvml.nvmlDeviceGetMemoryInfo(h).used for h in handles]
        return {"sys/gpu": sum(util) / len(util), "sys/gpu_mem": sum(used) / _MIB}

    return sample
