"""The short reprs shown for steps' arguments and results (daskperiment/display.py SafeRepr):
the builtin repr is taken where reprlib would shorten nothing, and gives the same text."""

from __future__ import annotations

import reprlib
from typing import Any

import hypothesis
import hypothesis.strategies as hs

from daskperiment.display import SafeRepr, short_repr

scalars = (
    hs.integers()
    | hs.integers(min_value=-(10**25), max_value=10**25)
    | hs.floats(allow_nan=True, allow_infinity=True)
    | hs.booleans()
    | hs.none()
    | hs.text(max_size=120)
)
values = scalars | hs.lists(scalars, max_size=10) | hs.lists(scalars, max_size=10).map(tuple)
values |= hs.dictionaries(hs.text(max_size=3), scalars, max_size=3)


def configured(maxlevel: int = 6) -> SafeRepr:
    r = SafeRepr()
    r.maxstring = 80
    r.maxother = 80
    r.maxlist = r.maxtuple = r.maxdict = 8
    r.maxlevel = maxlevel
    return r


def by_reprlib(r: SafeRepr, value: Any) -> str:
    """What reprlib's own dispatch gives (the quick path left out)."""
    return reprlib.Repr.repr(r, value)


@hypothesis.given(values)
def test_the_quick_path_gives_reprlibs_text(value: Any) -> None:
    r = configured()
    assert r.repr(value) == by_reprlib(r, value)
    short = SafeRepr()
    short.maxstring = short.maxother = 200
    assert short.repr(value) == by_reprlib(short, value)


def test_the_quick_path_is_taken_for_plain_arguments_and_left_for_the_rest() -> None:
    r = configured()
    assert r._plain((1, 2.5, None, True, "a")) == "(1, 2.5, None, True, 'a')"
    assert r._plain((7,)) == "(7,)" and r._plain([]) == "[]" and r._plain({}) == "{}"
    assert r._plain(tuple(range(9))) is None  # longer than maxtuple: reprlib adds '...'
    assert r._plain({"b": 1, "a": 2}) is None  # reprlib sorts keys
    assert r._plain(("x" * 81,)) is None
    assert r._plain((10**30,)) is None
    assert r.repr(tuple(range(9))) == "(0, 1, 2, 3, 4, 5, 6, 7, ...)"
    assert configured(maxlevel=1).repr((1, (2,))) == by_reprlib(configured(maxlevel=1), (1, (2,)))
    assert short_repr(3.5) == "3.5"
