"""When a periodic job runs: cron expressions in a time zone, or a fixed interval.

A :class:`Recurrence` turns a schedule's rule into *slots*, the whole-second epoch times
at which it fires, computed from scratch every time (never from "the last run + the
period"), so every process computes the same slots and a slot names its job.

* ``cron``: five fields (minute hour day-of-month month day-of-week), or six with
  seconds first, or an alias (:data:`ALIASES`), evaluated in ``tz`` by ``cronsim``.
* ``every_s``: whole seconds >= 1; slots are the multiples of it since the UTC epoch
  (``every=timedelta(minutes=5)`` fires at :00, :05, ... UTC), whatever the time zone.

Daylight saving time (five-field expressions whose minute and hour are fixed, as
Debian's cron does it): a time skipped by a spring-forward change fires once, at the
first valid time after it (02:30 in Europe/Berlin on the last Sunday of March fires at
03:00); a time repeated by a fall-back change fires once, at its first occurrence, or
at both with ``dst="both"``. Expressions with a wildcard or step in the minute or hour
field (``*/5 * * * *``) keep firing every so many real minutes across a change, and
six-field expressions are evaluated in real time without those rules.

Imports nothing from typedq but its errors.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from typedq.errors import ConfigError

__all__ = [
    "ALIASES",
    "CATCH_UP",
    "DST",
    "MAX_CATCH_UP",
    "MISSED_AFTER_S",
    "Recurrence",
    "every_seconds",
    "slot_stamp",
]

#: Cron aliases and the five-field expressions they stand for.
ALIASES: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: What a schedule does with slots that passed while no scheduler ran.
CATCH_UP: Final = ("none", "latest", "all")
#: How a fixed local time repeated by a fall-back change fires: once, or at both.
DST: Final = ("once", "both")
#: ``catch_up="all"`` fires at most this many missed slots (the latest ones).
MAX_CATCH_UP: Final = 100
#: ``catch_up="none"``: a slot reached more than this late (seconds) counts as missed.
MISSED_AFTER_S: Final = 60.0
#: Slots scanned forward before a long gap is skipped over.
_SCAN_LIMIT: Final = 100_000
#: The first and last epoch seconds a slot may be (years 1971 to 9998).
_FIRST, _LAST = 31_536_000, 253_370_764_800


def every_seconds(every: object) -> int:
    """An interval (``timedelta`` or seconds) as whole seconds >= 1.

    Raises:
        ConfigError: naming ``every``: not a whole number of seconds >= 1.
    """
    allowed = "a timedelta or a number of seconds: whole seconds >= 1"
    seconds: float
    if isinstance(every, timedelta):
        seconds = every.total_seconds()
    elif isinstance(every, int | float) and not isinstance(every, bool):
        seconds = float(every)
    else:
        raise ConfigError("every", every, allowed)
    if not math.isfinite(seconds) or seconds < 1 or seconds != int(seconds) or seconds > _LAST:
        raise ConfigError("every", every, allowed)
    return int(seconds)


def slot_stamp(slot: float) -> str:
    """A slot as compact UTC text for a job id: ``20260329T010000Z``."""
    return datetime.fromtimestamp(slot, ZoneInfo("UTC")).strftime("%Y%m%dT%H%M%SZ")


def _zone(tz: object) -> ZoneInfo:
    if not isinstance(tz, str) or not tz:
        raise ConfigError("tz", tz, "an IANA time zone name such as 'Europe/Berlin' or 'UTC'")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError("tz", tz, "an IANA time zone name such as 'Europe/Berlin' or 'UTC'") from None


def _expression(cron: object) -> str:
    allowed = (
        "a cron expression of 5 fields (minute hour day month weekday), 6 with seconds "
        f"first, or one of {', '.join(ALIASES)}"
    )
    if not isinstance(cron, str) or not cron.strip():
        raise ConfigError("cron", cron, allowed)
    text = " ".join(cron.split())
    return ALIASES.get(text.lower(), text)


def _ambiguous(dt: datetime) -> bool:
    """Whether local time ``dt`` occurs twice (a fall-back change repeats it)."""
    return dt.replace(fold=1).utcoffset() != dt.replace(fold=0).utcoffset()


class Recurrence:
    """The slots of one schedule rule.

    Args:
        cron: a cron expression (exclusive with ``every_s``).
        every_s: an interval in whole seconds >= 1 (exclusive with ``cron``).
        tz: the IANA time zone the cron expression is read in.
        dst: ``"once"`` or ``"both"``: how a fixed time repeated by a fall-back change fires.

    Raises:
        ConfigError: naming ``cron``, ``every``, ``tz`` or ``dst``: a bad value, both or
            neither of ``cron`` and ``every_s``, or an expression that never fires.
    """

    def __init__(
        self, *, cron: str | None = None, every_s: float | None = None, tz: str = "UTC", dst: str = "once"
    ) -> None:
        if (cron is None) == (every_s is None):
            raise ConfigError("cron", cron, "exactly one of cron= and every= (not both, not neither)")
        if dst not in DST:
            raise ConfigError("dst", dst, "'once' or 'both'")
        self.zone = _zone(tz)
        self.dst = dst
        self.every_s = None if every_s is None else every_seconds(every_s)
        self.cron = None if cron is None else _expression(cron)
        if self.cron is not None:
            try:
                probe = CronSim(self.cron, datetime(2000, 1, 1, tzinfo=self.zone))
                next(probe)
            except (CronSimError, StopIteration, ValueError) as exc:
                why = f" ({exc})" if str(exc) else " (it never fires)"
                raise ConfigError(
                    "cron", cron, "a valid cron expression of 5 or 6 fields, or an alias",
                    message=f"cron={cron!r} is invalid{why}: a cron expression of 5 fields, 6 with "
                    f"seconds first, or one of {', '.join(ALIASES)}",
                ) from None

    def __repr__(self) -> str:
        rule = f"cron={self.cron!r}, tz={self.zone.key!r}" if self.cron else f"every_s={self.every_s}"
        return f"Recurrence({rule})"

    def _slots_after(self, t: float) -> Iterator[float]:
        """Every slot strictly after ``t``, ascending."""
        if self.every_s is not None:
            step = self.every_s
            k = math.floor(t / step) + 1
            while k * step <= _LAST:
                yield float(k * step)
                k += 1
            return
        assert self.cron is not None
        # With dst="both", start up to two hours (the largest change) early: the second
        # occurrence of a repeated time may come after t when its first came before.
        lead = 7200.0 if self.dst == "both" else 0.0
        start = datetime.fromtimestamp(max(t - lead, _FIRST), self.zone)
        extra: list[float] = []  # second occurrences of repeated times (dst="both")
        last = t
        try:
            for dt in CronSim(self.cron, start):
                ts = dt.timestamp()
                while extra and extra[0] <= ts:
                    again = heapq.heappop(extra)
                    if again > last:
                        last = again
                        yield again
                # During a repeated hour cronsim may answer the first occurrence of a
                # time already passed (it reads local times): never go back.
                if ts > last:
                    last = ts
                    yield ts
                if self.dst == "both" and dt.fold == 0 and _ambiguous(dt):
                    heapq.heappush(extra, dt.replace(fold=1).timestamp())
                if ts > _LAST:
                    return
        except (StopIteration, OverflowError, ValueError):
            return
        yield from sorted(x for x in extra if x > last)

    def after(self, t: float) -> float | None:
        """The first slot strictly after ``t`` (None: the rule never fires again)."""
        for slot in self._slots_after(t):
            return slot
        return None

    def due(self, start: float, now: float, keep: int) -> tuple[list[float], int]:
        """The slots from ``start`` to ``now`` (both included): the latest ``keep`` of them,
        ascending, and how many earlier ones were left out.

        A gap of more than 100,000 slots is skipped over (the latest slots are found by
        looking back from ``now``); the count left out is then the 100,000 scanned.
        """
        if now < start:
            return [], 0
        if self.every_s is not None:
            step = self.every_s
            first, last = math.ceil(start / step), math.floor(now / step)
            count = max(0, last - first + 1)
            kept = min(count, keep)
            return [float((last - kept + 1 + i) * step) for i in range(kept)], count - kept
        window: deque[float] = deque(maxlen=keep)
        dropped = 0
        origin = math.ceil(start) - 1.0
        for scanned, slot in enumerate(self._slots_after(origin), start=1):
            if slot > now:
                return list(window), dropped
            if len(window) == keep:
                dropped += 1
            window.append(slot)
            if scanned >= _SCAN_LIMIT:
                break
        else:
            return list(window), dropped
        # A long gap: look back from now over growing spans until `keep` slots are found.
        for days in (1, 7, 31, 366, 3660):
            since = now - days * 86_400
            tail = list(self._bounded(max(origin, since), now))[-keep:]
            if len(tail) >= keep or since <= origin:
                return tail, dropped + len(window)
        return list(window), dropped

    def _bounded(self, t: float, now: float) -> Iterator[float]:
        for count, slot in enumerate(self._slots_after(t)):
            if slot > now or count >= _SCAN_LIMIT:
                return
            yield slot
