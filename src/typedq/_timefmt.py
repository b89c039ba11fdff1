"""Epoch times as people read them: local ISO 8601 times and "in 2.0 s"; durations as
people write them ("90s", "15m", "1d").

typedq stores and computes with UTC epoch floats; logs and the command line show these
strings instead (``--json`` keeps the numbers and adds the strings beside them).
Imports nothing from typedq, so every layer may use it.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Final

__all__ = ["DURATION_FORMS", "iso_local", "parse_duration", "relative", "when"]

_UNITS: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_DURATION_RE: Final = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)\s*", re.IGNORECASE)
#: What :func:`parse_duration` reads, for messages.
DURATION_FORMS: Final = "a number of seconds, or with a unit: 90s, 15m, 2h, 1d, 1w (or 1h30m)"


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``"90"``, ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"``, ``"1w"``,
    or parts added up (``"1h30m"``).

    Raises:
        ValueError: anything else (the message says what is allowed).
    """
    total, at, parts = 0.0, 0, 0
    while at < len(text):
        found = _DURATION_RE.match(text, at)
        if found is None or found.end() == at:
            raise ValueError(f"{text!r} is not a duration: {DURATION_FORMS}")
        total += float(found.group(1)) * _UNITS[found.group(2).lower()]
        at, parts = found.end(), parts + 1
    if parts == 0 or not math.isfinite(total):
        raise ValueError(f"{text!r} is not a duration: {DURATION_FORMS}")
    return total


def iso_local(ts: float | None, timespec: str = "milliseconds") -> str | None:
    """``ts`` as a local ISO 8601 time with its UTC offset, to the millisecond
    (``2026-12-05T14:32:19.903+01:00``; ``timespec="seconds"`` drops the fraction);
    None stays None, as does a time that is not finite.
    """
    if ts is None or not math.isfinite(ts):
        return None
    try:
        return datetime.fromtimestamp(ts).astimezone().isoformat(timespec=timespec)
    except (OverflowError, OSError, ValueError):
        return None  # beyond what the platform's calendar can show


def relative(ts: float, now: float) -> str:
    """How far ``ts`` is from ``now``: ``in 2.0 s``, ``3.5 s ago``, ``in 4.0 min``, ``now``."""
    delta = ts - now
    size = abs(delta)
    if size < 0.05:
        return "now"
    if size < 120:
        text = f"{size:.1f} s"
    elif size < 7200:
        text = f"{size / 60:.1f} min"
    elif size < 172_800:
        text = f"{size / 3600:.1f} h"
    else:
        text = f"{size / 86_400:.1f} days"
    return f"in {text}" if delta > 0 else f"{text} ago"


def when(ts: float, now: float) -> str:
    """``ts`` for a log line: the local ISO time and how far it is, e.g.
    ``2026-12-05T14:32:19.903+01:00 (in 2.0 s)``."""
    return f"{iso_local(ts) or ts} ({relative(ts, now)})"
