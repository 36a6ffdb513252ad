"""Showing values that Python itself refuses to show: huge ints and lone surrogates.

- An ``int`` wider than Python's int-to-str digit limit (4,300 digits by default,
  ``sys.set_int_max_str_digits``) makes ``str()``/``repr()`` raise ``ValueError``. Such a value
  is stored exactly (the store writes wide ints in hexadecimal) and *shown* as an
  approximation naming its size: ``int ≈ 1.000000e+100000 (100001 digits)``.
- A ``str`` holding a lone surrogate (``"\\ud800"``) cannot be UTF-8: it is stored exactly (as
  a pickle object) and shown by its ``repr`` (``'\\ud800'``), which escapes the surrogate.

Records, history rows and every line the CLI prints stay plain, printable JSON data.
"""

from __future__ import annotations

import builtins
import math
import reprlib
from typing import Any


def is_wide_int(value: Any) -> bool:
    """Whether ``value`` is an int that ``str()`` refuses (wider than the digit limit)."""
    if type(value) is not int or value.bit_length() < 14_000:  # < 4,215 digits: always fine
        return False
    try:
        str(value)
    except ValueError:
        return True
    return False


def int_text(value: int) -> str:
    """``repr(value)``, or for an int too wide for that, its approximation and size."""
    try:
        return repr(value)
    except ValueError:
        magnitude = math.log10(abs(value))
        exponent = math.floor(magnitude)
        mantissa = 10 ** (magnitude - exponent)
        sign = "-" if value < 0 else ""
        return f"int ≈ {sign}{mantissa:.6f}e+{exponent} ({exponent + 1} digits)"


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (False for a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class SafeRepr(reprlib.Repr):
    """``reprlib.Repr`` that never raises: wide ints are approximated, and an object whose
    own ``__repr__`` fails is shown by its type.

    Scalars (``int``, ``float``, ``bool``, ``None``, short ``str``) and short tuples and lists
    of them, as steps' arguments mostly are, are answered with the builtin ``repr`` when it is
    short enough that ``reprlib`` would shorten nothing: the very same text, without
    ``reprlib``'s per-element dispatch (a step's arguments are shown for every call).
    """

    def repr(self, x: Any) -> str:
        quick = self._plain(x) if self.maxlevel > 1 else None
        return quick if quick is not None else super().repr(x)

    def _plain(self, x: Any) -> str | None:
        kind = type(x)
        if kind is tuple or kind is list:
            if len(x) > (self.maxtuple if kind is tuple else self.maxlist):
                return None
            parts = []
            for item in x:
                text = self._scalar(item)
                if text is None:
                    return None
                parts.append(text)
            body = ", ".join(parts)
            if kind is list:
                return f"[{body}]"
            return f"({body},)" if len(parts) == 1 else f"({body})"
        if kind is dict:
            return "{}" if not x else None
        return self._scalar(x)

    def _scalar(self, x: Any) -> str | None:
        kind = type(x)
        if kind is str:
            if len(x) > self.maxstring:
                return None
            text = builtins.repr(x)
            return text if len(text) <= self.maxstring else None
        if kind is int:
            text = builtins.repr(x) if -(10**18) < x < 10**18 else ""
            return text if text and len(text) <= self.maxlong else None
        if kind is float or kind is bool or x is None:
            text = builtins.repr(x)
            return text if len(text) <= self.maxother else None
        return None

    def repr_int(self, x: int, level: int) -> str:
        s = int_text(x)
        if len(s) > self.maxlong:
            i = max(0, (self.maxlong - 3) // 2)
            j = max(0, self.maxlong - 3 - i)
            s = s[:i] + "..." + s[len(s) - j :]
        return s

    def repr_instance(self, x: Any, level: int) -> str:
        try:
            return super().repr_instance(x, level)
        except Exception:  # noqa: BLE001 - a broken __repr__ must not fail a trial
            return f"<{type(x).__name__} object>"


def short_repr(value: Any, limit: int = 200) -> str:
    """A ``repr`` of at most about ``limit`` characters that never raises."""
    r = SafeRepr()
    r.maxstring = r.maxother = limit
    try:
        return r.repr(value)
    except Exception:  # noqa: BLE001 - e.g. a container whose __len__ fails
        return f"<{type(value).__name__} object>"
