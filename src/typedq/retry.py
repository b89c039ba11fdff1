"""Retry policies: whether a failed job runs again, and after how long.

The specification's rule stays: after a failure, when ``retry_count < max_retries``, the
job's ``retry_count`` is incremented and it runs again after a delay; otherwise it is DEAD
and goes to the dead-letter queue. A :class:`RetryPolicy` decides the delay, and which
errors are retried at all. Its kinds:

* **exponential with jitter** (the default, the specification's)::

      delay = base_delay * factor ** retry_count        (retry_count already incremented)
      delay += uniform(0, jitter * delay)                (jitter = 0.5: up to half again)

  so with ``base_delay=1`` the first retry waits 2-3 s, the second 4-6 s, the third 8-12 s;
* **fixed**: ``RetryPolicy.fixed(30)``, every retry after 30 s;
* **a schedule**: ``RetryPolicy(delays=[1, 5, 30, 300])``, retry n after ``delays[n-1]``
  seconds (the last one again for later retries);
* **a callable**: ``RetryPolicy(delay_fn=lambda retry, error: ...)`` returning seconds.

Jitter (a random extra of up to ``jitter`` times the delay; 0.5 by default for the
exponential kind, 0 for the others) spreads retries of jobs that failed together (no
thundering herd); ``max_delay`` caps every delay, jitter included.

``retry_on`` (only these exception classes are retried) and ``dont_retry_on`` (these
never are) filter errors; a filtered error sends the job to the dead-letter queue at once.
A class may be given by its dotted name (``"builtins.ValueError"``, or ``"ValueError"``
for a builtin); a policy stored with a job (per-job policies) keeps names only.
``max_retries`` is the default ``max_retries`` of the jobs submitted with the policy
(per job type or per job); the worker always counts against the job's own field.

A handler controls its own job with two exceptions: :class:`~typedq.errors.PermanentError`
(dead at once, whatever retries remain) and :class:`Retry` (``raise Retry(in_s=30)``:
retried after exactly that long, a retry like any other, counted against ``max_retries``).

:class:`FailureRules` holds what a job type sets: its policy and its ``on_failure``
callback, called once per final failure.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from typedq._validate import require_number
from typedq.errors import ConfigError, TypedqError
from typedq.job import MAX_COUNT, Job

__all__ = [
    "RETRY_META",
    "DelayFn",
    "FailureCallback",
    "FailureRules",
    "Retry",
    "RetryPolicy",
]

#: The metadata key of a job's own retry policy (``RetryPolicy.to_data()``).
RETRY_META: Final = "typedq.retry"
#: The longest delay a policy returns when none caps it: a year.
_LONGEST: Final = 365 * 86_400.0

#: ``delay_fn(retry_number, error) -> seconds``: retry_number is 1 for the first retry.
DelayFn = Callable[[int, BaseException | None], float]
#: ``callback(job, error)``: the job as the queue holds it after it died, and the error.
FailureCallback = Callable[[Job, BaseException], object]

ExceptionSpec = type[BaseException] | str


class Retry(TypedqError, RuntimeError):  # the name the API promises: raise Retry(in_s=30)
    """Raised by a handler: run the job again after ``in_s`` seconds.

    A retry like any other (``retry_count`` + 1, counted against ``max_retries``; when
    none remain the job is dead), but its delay is ``in_s``, not the policy's, and
    ``retry_on`` / ``dont_retry_on`` do not apply.

    Args:
        in_s: seconds before the job runs again (>= 0).
        reason: the job's recorded ``error``.

    Raises:
        ConfigError: ``in_s`` is not a number >= 0.
    """

    def __init__(self, in_s: float = 0.0, reason: str | None = None) -> None:
        require_number("in_s", in_s, minimum=0)
        self.in_s = float(in_s)
        self.reason = reason
        super().__init__(reason or f"retry requested in {self.in_s:g} s")


def _class_name(cls: type[BaseException]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _matches(error: BaseException, specs: Sequence[ExceptionSpec]) -> bool:
    names: set[str] | None = None
    for spec in specs:
        if isinstance(spec, type):
            if isinstance(error, spec):
                return True
            continue
        if names is None:
            names = set()
            for cls in type(error).__mro__:
                names.add(_class_name(cls))
                if cls.__module__ == "builtins":
                    names.add(cls.__qualname__)
        if spec in names:
            return True
    return False


def _exceptions(value: object, field_name: str) -> tuple[ExceptionSpec, ...]:
    if isinstance(value, type | str):
        value = (value,)
    if not isinstance(value, Iterable):
        raise ConfigError(field_name, value, "exception classes or their dotted names")
    out: list[ExceptionSpec] = []
    for item in value:
        if (isinstance(item, type) and issubclass(item, BaseException)) or (isinstance(item, str) and item):
            out.append(item)
        else:
            raise ConfigError(field_name, item, "an exception class or its dotted name")
    return tuple(out)


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait before a retry, and which errors to retry.

    Args:
        base_delay: exponential kind: the delay unit in seconds (>= 0).
        factor: exponential kind: the growth per retry (>= 1; 1 is a fixed delay).
        jitter: the random extra, a fraction of the delay (0 to 1; default 0.5 for the
            exponential kind, 0 for a schedule and a callable).
        max_delay: the cap on any delay, jitter included (None: no cap).
        delays: a schedule: retry n waits ``delays[n-1]`` seconds, the last for later ones.
        delay_fn: a callable ``(retry_number, error) -> seconds``.
        max_retries: the default ``max_retries`` of jobs submitted with this policy.
        retry_on: only errors of these classes are retried (empty: all).
        dont_retry_on: errors of these classes are never retried.

    Raises:
        ConfigError: a value out of range, or both ``delays`` and ``delay_fn``.
    """

    base_delay: float = 1.0
    factor: float = 2.0
    jitter: float | None = None
    max_delay: float | None = None
    delays: Sequence[float] | None = None
    delay_fn: DelayFn | None = None
    max_retries: int | None = None
    retry_on: Sequence[ExceptionSpec] = ()
    dont_retry_on: Sequence[ExceptionSpec] = ()
    _random: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        require_number("base_delay", self.base_delay, minimum=0)
        require_number("factor", self.factor, minimum=1)
        require_number("max_delay", self.max_delay, minimum=0, allow_none=True)
        require_number(
            "max_retries", self.max_retries, minimum=0, maximum=MAX_COUNT, integer=True, allow_none=True
        )
        if self.delays is not None and self.delay_fn is not None:
            raise ConfigError("delays", self.delays, "None when delay_fn is given (one kind of policy)")
        if self.delays is not None:
            given: object = self.delays
            if isinstance(given, str) or not isinstance(given, Iterable):
                raise ConfigError("delays", given, "a non-empty list of seconds >= 0")
            delays = tuple(given)
            if not delays:
                raise ConfigError("delays", given, "a non-empty list of seconds >= 0")
            for value in delays:
                require_number("delays", value, minimum=0)
            object.__setattr__(self, "delays", tuple(float(d) for d in delays))
        if self.delay_fn is not None and not callable(self.delay_fn):
            raise ConfigError("delay_fn", self.delay_fn, "a callable (retry_number, error) -> seconds")
        if self.jitter is None:
            object.__setattr__(self, "jitter", 0.5 if self.kind == "exponential" else 0.0)
        require_number("jitter", self.jitter, minimum=0, maximum=1)
        object.__setattr__(self, "retry_on", _exceptions(self.retry_on, "retry_on"))
        object.__setattr__(self, "dont_retry_on", _exceptions(self.dont_retry_on, "dont_retry_on"))

    # -- the kinds ----------------------------------------------------------------------

    @classmethod
    def exponential(
        cls, base_delay: float = 1.0, *, factor: float = 2.0, jitter: float = 0.5,
        max_delay: float | None = None, **common: Any,
    ) -> RetryPolicy:
        """``base_delay * factor ** n`` plus up to ``jitter`` of it (the default kind)."""
        return cls(base_delay=base_delay, factor=factor, jitter=jitter, max_delay=max_delay, **common)

    @classmethod
    def fixed(cls, delay: float, *, jitter: float = 0.0, **common: Any) -> RetryPolicy:
        """Every retry after ``delay`` seconds (plus up to ``jitter`` of it)."""
        return cls(base_delay=delay, factor=1.0, jitter=jitter, **common)

    @classmethod
    def schedule(cls, delays: Sequence[float], *, jitter: float = 0.0, **common: Any) -> RetryPolicy:
        """Retry n after ``delays[n-1]`` seconds; the last delay for later retries."""
        return cls(delays=delays, jitter=jitter, **common)

    @classmethod
    def custom(cls, delay_fn: DelayFn, **common: Any) -> RetryPolicy:
        """Retry n after ``delay_fn(n, error)`` seconds."""
        return cls(delay_fn=delay_fn, **common)

    @property
    def kind(self) -> str:
        """``"exponential"``, ``"fixed"``, ``"schedule"`` or ``"callable"``."""
        if self.delay_fn is not None:
            return "callable"
        if self.delays is not None:
            return "schedule"
        return "fixed" if self.factor == 1 else "exponential"

    # -- decisions ----------------------------------------------------------------------

    def delay(self, retry_count: int, error: BaseException | None = None) -> float:
        """Return the delay before retry number ``retry_count`` (1 for the first retry).

        Raises:
            ConfigError: a ``delay_fn`` returned something other than seconds >= 0.
        """
        if self.delay_fn is not None:
            base = self.delay_fn(retry_count, error)
            require_number("delay_fn()", base, minimum=0)
            base = float(base)
        elif self.delays is not None:
            delays = self.delays
            base = delays[min(max(retry_count, 1), len(delays)) - 1]
        else:
            try:
                base = self.base_delay * self.factor**retry_count
            except OverflowError:
                base = math.inf
        extra = 0.0
        if self.jitter and base < math.inf:
            extra = self._random.uniform(0.0, self.jitter * base)
        total = base + extra
        if self.max_delay is not None:
            return min(total, self.max_delay)
        return total if total < math.inf else _LONGEST

    def should_retry(self, retry_count: int, max_retries: int) -> bool:
        """The specification's test: retries remain while ``retry_count < max_retries``."""
        return retry_count < max_retries

    def retries(self, error: BaseException) -> bool:
        """Whether ``error``'s class may be retried (``retry_on``, ``dont_retry_on``)."""
        if self.dont_retry_on and _matches(error, self.dont_retry_on):
            return False
        return not self.retry_on or _matches(error, self.retry_on)

    # -- stored with a job --------------------------------------------------------------

    def to_data(self) -> dict[str, Any]:
        """The policy as JSON-safe data, stored with a job (per-job policies).

        Raises:
            ConfigError: the policy has a ``delay_fn`` (code cannot be stored with a job:
                set a callable policy per job type instead).
        """
        if self.delay_fn is not None:
            raise ConfigError(
                "retry", self,
                "a policy without delay_fn (a callable policy is set per job type, not per job)",
            )
        data: dict[str, Any] = {
            "base_delay": self.base_delay, "factor": self.factor, "jitter": self.jitter,
            "max_delay": self.max_delay,
        }
        if self.delays is not None:
            data["delays"] = list(self.delays)
        for name in ("retry_on", "dont_retry_on"):
            specs: Sequence[ExceptionSpec] = getattr(self, name)
            if specs:
                data[name] = [s if isinstance(s, str) else _class_name(s) for s in specs]
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> RetryPolicy:
        """The policy :meth:`to_data` stored.

        Raises:
            ConfigError: ``data`` is not such a policy.
        """
        if not isinstance(data, Mapping):
            raise ConfigError("retry", data, "a dict from RetryPolicy.to_data()")
        allowed = {"base_delay", "factor", "jitter", "max_delay", "delays", "retry_on", "dont_retry_on"}
        unknown = set(data) - allowed
        if unknown:
            raise ConfigError("retry", data, f"only the keys {sorted(allowed)}")
        return cls(**data)

    def with_max_retries(self, max_retries: int | None) -> RetryPolicy:
        """A copy with another ``max_retries``."""
        return replace(self, max_retries=max_retries)


@dataclass(frozen=True)
class FailureRules:
    """What a job type sets about failures: its retry policy (None: the worker's) and its
    ``on_failure`` callback (called once per final failure, with the job and the error)."""

    retry_policy: RetryPolicy | None = None
    on_failure: FailureCallback | None = None

    def __post_init__(self) -> None:
        if self.retry_policy is not None and not isinstance(self.retry_policy, RetryPolicy):
            raise ConfigError("retry", self.retry_policy, "a RetryPolicy or None")
        if self.on_failure is not None and not callable(self.on_failure):
            raise ConfigError("on_failure", self.on_failure, "a callable (job, error) or None")
