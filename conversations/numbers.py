"""Whole numbers in what people type and in button tokens, read one way, here.

Only ASCII digits count: `str.isdigit()` is true for "²", "⑦" and "⓪", which `int()` then
refuses with an exception, and `int()` itself takes " 7", "+7", "1_0" and other scripts'
digits. Anything else is simply not a number (None), never an error."""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+", re.ASCII)


def whole(text: str, low: int = 0, high: int | None = None, *, max_digits: int = 12
          ) -> int | None:
    """`text` as a whole number in [low, high], or None: nothing but ASCII digits allowed."""
    if len(text) > max_digits or not _DIGITS.fullmatch(text):
        return None
    number = int(text)
    if number < low or (high is not None and number > high):
        return None
    return number

