"""One instance per process of a background helper (live flusher, system sampler).

A fork inherits the parent's instance but not its threads, so an instance made in another
process is replaced on first use here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    """``get()`` makes (once per process, thread-safely) and returns the instance."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._value: T | None = None
        self._pid = -1

    def get(self) -> T:
        value = self._value
        if value is None or self._pid != os.getpid():
            with self._lock:
                if self._value is None or self._pid != os.getpid():
                    self._value, self._pid = self._factory(), os.getpid()
                value = self._value
        return value

    def current(self) -> T | None:
        """This process's instance if one was made, else None (nothing is made)."""
        return self._value if self._pid == os.getpid() else None
