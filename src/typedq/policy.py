"""Claim policies: fairness between priority levels, aging, concurrency and rate limits.

A queue claims by strict priority unless given a :class:`ClaimPolicy` (``Queue.
set_claim_policy``). The policy is enforced inside the backend's claim, atomically with
it (the memory queue's lock, the SQLite claim transaction, the Redis claim script), so
it holds across every worker, thread, process and host that claims from the queue:

* ``fairness="weighted"``: among the priority levels that have a ready job, each claim
  serves the level whose *virtual time* is lowest (stride scheduling): a level's virtual
  time advances by ``1 / weight`` each time it is served, and a level that had nothing
  ready catches up to the queue's virtual time before it competes again (no credit piles
  up while it is idle). With every level backlogged, level ``i`` gets
  ``weight_i / sum(weights)`` of the claims, exactly, deterministically; a stream of
  CRITICAL jobs can no longer starve BATCH. Default weights 16/8/4/2/1.
* ``max_wait_s``: per level, the longest a ready job should wait. When the next job of a
  level (its head in claim order) has waited longer (since it became due: its
  ``scheduled_at``, else its ``created_at``), it is served next, before any fairness or
  priority rule; of several overdue heads, the one overdue longest goes first.
* ``max_concurrency`` / ``rate`` for the queue and per job type (``limits=``): a claim
  never makes more than ``max_concurrency`` jobs RUNNING at once, and never more than
  ``rate`` claims in any window of the rate's period (a sliding window: the claim times
  of the last N claims are kept, O(1) per claim). Jobs a limit holds back stay PENDING,
  in order; jobs of other types are claimed past them.

The state the policy needs (virtual times, the recent claim times) is stored with the
queue, so every handle on the store shares it. The policy itself is configuration of each
handle: give every process the same one (the manager does, from its config).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from typedq.errors import ConfigError
from typedq.job import LEVELS, Priority, parse_priority

__all__ = [
    "DEFAULT_WEIGHTS",
    "ClaimPolicy",
    "Limit",
    "Rate",
    "RateWindow",
    "fair_order",
    "pick_level",
    "serve",
]

#: The weighted-fairness weights by default, CRITICAL to BATCH.
DEFAULT_WEIGHTS: Final = (16, 8, 4, 2, 1)
#: The most claims a rate may allow per period (each one's time is kept).
MAX_RATE: Final = 100_000
_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE_RE: Final = re.compile(r"\s*(\d+)\s*/\s*(\d*\.?\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)s?\s*")
_RATE_FORMS: Final = (
    f"'N/s', 'N/m', 'N/h' or 'N/d' (N claims per second, minute, hour or day; 1 <= N <= {MAX_RATE}),"
    " optionally with a count of units ('10/5s'), or a Rate"
)


@dataclass(frozen=True)
class Rate:
    """At most ``limit`` claims in any window of ``period_s`` seconds."""

    limit: int
    period_s: float

    def __post_init__(self) -> None:
        limit: object = self.limit
        period: object = self.period_s
        if type(limit) is not int or not 1 <= limit <= MAX_RATE:
            raise ConfigError("rate", limit, f"a limit from 1 to {MAX_RATE} claims")
        if not isinstance(period, int | float) or not 0 < period < math.inf:
            raise ConfigError("rate", period, "a period of seconds > 0")

    @classmethod
    def parse(cls, value: object, *, field_name: str = "rate") -> Rate:
        """``"100/m"`` → ``Rate(100, 60.0)``; a ``Rate`` is returned as it is.

        Raises:
            ConfigError: naming ``field_name``, for anything else.
        """
        if isinstance(value, Rate):
            return value
        if isinstance(value, str):
            match = _RATE_RE.fullmatch(value)
            if match is not None:
                count, units, unit = match.groups()
                limit = int(count)
                many = float(units) if units not in ("", ".") else 1.0
                if 1 <= limit <= MAX_RATE and many > 0:
                    return cls(limit, many * _UNITS[unit[0]])
        raise ConfigError(field_name, value, _RATE_FORMS)

    def __str__(self) -> str:
        return f"{self.limit}/{self.period_s:g}s"


@dataclass(frozen=True)
class Limit:
    """Limits on the jobs of one type (or of the whole queue).

    Args:
        max_concurrency: the most jobs RUNNING at once across every worker (None: no limit).
        rate: the most claims per period, ``"100/m"`` or a :class:`Rate` (None: no limit).
    """

    max_concurrency: int | None = None
    rate: Rate | None = None

    @classmethod
    def build(cls, value: object, *, where: str) -> Limit:
        """A ``Limit`` from itself or a dict ``{"max_concurrency": 2, "rate": "10/s"}``.

        Raises:
            ConfigError: naming the field under ``where``.
        """
        if isinstance(value, Limit):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(where, value, "a Limit or a dict with max_concurrency and/or rate")
        unknown = set(value) - {"max_concurrency", "rate"}
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}", value, "max_concurrency or rate")
        return cls(
            max_concurrency=_concurrency(value.get("max_concurrency"), f"{where}.max_concurrency"),
            rate=None if value.get("rate") is None else Rate.parse(value["rate"], field_name=f"{where}.rate"),
        )

    @property
    def empty(self) -> bool:
        """Whether this limits nothing."""
        return self.max_concurrency is None and self.rate is None


def _concurrency(value: object, name: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise ConfigError(name, value, "None or an int >= 1 (the most jobs RUNNING at once)")
    return value


def _per_level(value: object, name: str, *, default: tuple[Any, ...], kind: str) -> tuple[Any, ...]:
    """A mapping level -> value as a tuple CRITICAL..BATCH (missing levels: ``default``)."""
    if value is None:
        return default
    if not isinstance(value, Mapping):
        raise ConfigError(name, value, f"a dict of level -> {kind}, levels CRITICAL..BATCH")
    out = list(default)
    for key, item in value.items():
        try:
            level = Priority.level_of(parse_priority(key, field_name=name))
        except ValueError:
            raise ConfigError(name, key, "level names CRITICAL, HIGH, NORMAL, LOW, BATCH (or 1-10)") from None
        out[LEVELS.index(level)] = item
    return tuple(out)


@dataclass(frozen=True)
class ClaimPolicy:
    """How a queue chooses the next job to claim; strict priority without limits by default.

    Args:
        fairness: ``"strict"`` (highest priority first, the default) or ``"weighted"``.
        weights: ``"weighted"``'s weight per level, a dict level name (or a priority
            in the level) -> int >= 1; levels not given keep :data:`DEFAULT_WEIGHTS`.
        max_wait_s: per level, the longest a ready job waits before it is served next
            (seconds > 0); levels not given have no bound.
        max_concurrency: the most jobs of the queue RUNNING at once.
        rate: the most claims of the queue per period (``"100/m"``).
        limits: per job type, a :class:`Limit` or a dict with ``max_concurrency`` and
            ``rate``.

    Raises:
        ConfigError: a value that is not allowed; the message names the field.
    """

    fairness: Literal["strict", "weighted"] = "strict"
    weights: tuple[int, ...] = DEFAULT_WEIGHTS
    max_wait_s: tuple[float | None, ...] = (None,) * 5
    max_concurrency: int | None = None
    rate: Rate | None = None
    limits: Mapping[str, Limit] = field(default_factory=dict)
    #: The levels that have a ``max_wait_s`` bound, with it: what :func:`pick_level` checks.
    bounded: tuple[tuple[int, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.fairness not in ("strict", "weighted"):
            raise ConfigError("fairness", self.fairness, "'strict' or 'weighted'")
        weights: object = self.weights
        if isinstance(weights, Mapping):
            weights = _per_level(weights, "weights", default=DEFAULT_WEIGHTS, kind="weight")
        if (
            not isinstance(weights, tuple)
            or len(weights) != 5
            or not all(type(w) is int and 1 <= w <= 1_000_000 for w in weights)
        ):
            raise ConfigError("weights", self.weights, "an int from 1 to 1000000 per level")
        waits: object = self.max_wait_s
        if isinstance(waits, Mapping):
            waits = _per_level(waits, "max_wait_s", default=(None,) * 5, kind="seconds")
        if not isinstance(waits, tuple) or len(waits) != 5 or not all(
            w is None or (isinstance(w, int | float) and not isinstance(w, bool) and 0 < w < math.inf)
            for w in waits
        ):
            raise ConfigError("max_wait_s", self.max_wait_s, "None or seconds > 0 per level")
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "max_wait_s", tuple(None if w is None else float(w) for w in waits))
        object.__setattr__(
            self, "bounded", tuple((level, w) for level, w in enumerate(self.max_wait_s) if w is not None)
        )
        object.__setattr__(self, "max_concurrency", _concurrency(self.max_concurrency, "max_concurrency"))
        if self.rate is not None:
            object.__setattr__(self, "rate", Rate.parse(self.rate))
        given: object = self.limits
        if not isinstance(given, Mapping):
            raise ConfigError("limits", given, "a dict of job type -> Limit or dict")
        limits = {}
        for job_type, limit in given.items():
            if type(job_type) is not str or not job_type:
                raise ConfigError("limits", job_type, "job type names (non-empty strings)")
            built = Limit.build(limit, where=f"limits.{job_type}")
            if not built.empty:
                limits[job_type] = built
        object.__setattr__(self, "limits", limits)

    @classmethod
    def from_config(cls, value: object) -> ClaimPolicy | None:
        """A policy from a config dict (``{"fairness": "weighted", "limits": {...}}``),
        itself, or None.

        Raises:
            ConfigError: an unknown key or a bad value, naming the field.
        """
        if value is None or isinstance(value, ClaimPolicy):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError("claim_policy", value, "a ClaimPolicy or a dict of its fields")
        known = {"fairness", "weights", "max_wait_s", "max_concurrency", "rate", "limits"}
        unknown = set(value) - known
        if unknown:
            raise ConfigError(f"claim_policy.{sorted(unknown)[0]}", value, f"one of {sorted(known)}")
        return cls(**dict(value))

    @property
    def is_strict(self) -> bool:
        """Whether this is plain strict priority: no fairness, aging or limit."""
        return (
            self.fairness == "strict"
            and all(w is None for w in self.max_wait_s)
            and self.max_concurrency is None
            and self.rate is None
            and not self.limits
        )

    @property
    def holds_back(self) -> bool:
        """Whether a claim may leave ready jobs PENDING: a concurrency limit or a rate, on
        the queue or a job type."""
        return (
            self.max_concurrency is not None
            or self.rate is not None
            or any(not limit.empty for limit in self.limits.values())
        )

    def to_wire(self) -> dict[str, Any]:
        """The policy as plain data (the Redis claim script reads it as JSON)."""
        return {
            "f": 1 if self.fairness == "weighted" else 0,
            "w": list(self.weights),
            "mw": [-1 if w is None else w for w in self.max_wait_s],
            "mc": self.max_concurrency or 0,
            "r": _rate_wire(self.rate),
            "l": {
                t: {"mc": lim.max_concurrency or 0, "r": _rate_wire(lim.rate)}
                for t, lim in sorted(self.limits.items())
            },
        }


def _rate_wire(rate: Rate | None) -> list[float] | int:
    return [rate.limit, rate.period_s] if rate else 0


class RateWindow:
    """The claim times of the last ``limit`` claims of one rate, as a ring (sliding window).

    ``times[count % limit]`` is the time of the claim ``limit`` claims ago: a claim is
    allowed when that slot is empty or older than one period.
    """

    __slots__ = ("count", "times")

    def __init__(self, count: int = 0, times: dict[int, float] | None = None) -> None:
        self.count = count
        self.times = {} if times is None else times

    def allows(self, rate: Rate, now: float) -> bool:
        """Whether one more claim at ``now`` stays within ``rate``."""
        oldest = self.times.get(self.count % rate.limit)
        return oldest is None or oldest <= now - rate.period_s

    def take(self, rate: Rate, now: float) -> int:
        """Record a claim at ``now``; return the slot written."""
        slot = self.count % rate.limit
        self.times[slot] = now
        self.count += 1
        return slot


def pick_level(
    policy: ClaimPolicy,
    heads: list[float | None],
    passes: list[float],
    now: float,
) -> int | None:
    """The level (0 CRITICAL .. 4 BATCH) to claim from, and the fairness state updated.

    Args:
        policy: the queue's policy.
        heads: per level, when its next job became due (``scheduled_at`` or
            ``created_at``), or None when the level has no claimable job.
        passes: the weighted fairness state, five virtual times then the queue's; updated
            in place when a level is served under ``"weighted"``.
        now: the claim's time.
    """
    chosen: int | None = None
    overdue = -math.inf
    for level, bound in policy.bounded:
        since = heads[level]
        if since is not None and now - since - bound > overdue and now - since > bound:
            chosen, overdue = level, now - since - bound
    if policy.fairness == "strict":
        if chosen is None:
            for level in range(5):
                if heads[level] is not None:
                    return level
        return chosen
    vt = passes[5]
    if chosen is None:
        best = math.inf
        for level in range(5):
            if heads[level] is not None:
                start = vt if passes[level] < vt else passes[level]  # max(), without its call
                if start < best:
                    chosen, best = level, start
        if chosen is None:
            return None
    serve(policy, passes, chosen)
    return chosen


def fair_order(passes: list[float]) -> tuple[int, ...]:
    """The levels in the order weighted fairness prefers them now (given the fairness
    state ``passes``, as :func:`pick_level` takes it): by the virtual time each would
    start at, lowest first, ties to the higher priority. :func:`pick_level` chooses
    the first of them that has a claimable job (when no job is overdue)."""
    vt = passes[5]
    starts = [vt if start < vt else start for start in passes[:5]]
    return tuple(sorted(range(5), key=starts.__getitem__))  # stable: ties keep level order


def serve(policy: ClaimPolicy, passes: list[float], level: int) -> None:
    """Advance the fairness state ``passes`` for a claim from ``level``: the level's
    virtual time by ``1 / weight``, from the queue's when it was behind."""
    start = max(passes[level], passes[5])
    passes[level] = start + 1.0 / policy.weights[level]
    passes[5] = start
