"""Retry policy: how long to wait before a failed job runs again.

The specification's rule: after a failure, when ``retry_count < max_retries``, the job's
``retry_count`` is incremented and it runs again after::

    delay = base_delay * 2 ** retry_count          (retry_count already incremented)
    delay += uniform(0, jitter * delay)             (jitter = 0.5: up to half again)

so with ``base_delay=1`` the first retry waits 2-3 s, the second 4-6 s, the third 8-12 s.
Jitter spreads retries of jobs that failed together (no thundering herd); ``max_delay``
caps the total. Otherwise the job is DEAD and goes to the dead-letter queue.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from typedq._validate import require_number

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    Args:
        base_delay: seconds, the delay unit (>= 0).
        factor: growth per retry (>= 1).
        jitter: the random extra, as a fraction of the delay (0 to 1).
        max_delay: the cap on any delay, jitter included (None: no cap).
    """

    base_delay: float = 1.0
    factor: float = 2.0
    jitter: float = 0.5
    max_delay: float | None = None
    _random: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        require_number("base_delay", self.base_delay, minimum=0)
        require_number("factor", self.factor, minimum=1)
        require_number("jitter", self.jitter, minimum=0, maximum=1)
        require_number("max_delay", self.max_delay, minimum=0, allow_none=True)

    def delay(self, retry_count: int) -> float:
        """Return the delay before retry number ``retry_count`` (1 for the first retry)."""
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
        return total if total < math.inf else 365 * 86_400.0

    def should_retry(self, retry_count: int, max_retries: int) -> bool:
        """The specification's test: retries remain while ``retry_count < max_retries``."""
        return retry_count < max_retries

