"""The SQLite backend's claims under a :class:`~typedq.policy.ClaimPolicy`, and counts by level.

A policy claim is one ``BEGIN IMMEDIATE`` transaction, like the plain claim: it counts the
RUNNING jobs the limits name (over the ``jobs_leased`` index: only RUNNING rows), reads the
recent claim times and the fairness virtual times (table ``claim_state``, schema 8), finds
each level's next claimable job (one ``LIMIT 1`` seek of ``jobs_ready`` per level), lets
:func:`~typedq.policy.pick_level` choose, and claims that row by its ``seq``; the state
it changed is written in the same transaction. Strict priority without limits never comes
here.

``claim_state`` rows (queue, name, slot, value): ``fair`` slots 0-4 the levels' virtual
times and 5 the queue's; ``rate:`` (the queue's rate) and ``rate:<job type>`` slot -1 the
number of claims so far and slots 0..N-1 the ring of the last N claim times.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final

from typedq.backends._sqlite_driver import sqlite3
from typedq.backends._sqlite_rows import CLAIM_COLUMNS
from typedq.job import MAX_PRIORITY
from typedq.policy import ClaimPolicy, Rate, pick_level

__all__ = ["BY_LEVEL", "policy_claim"]

_CLAIM_SEQ: Final = (
    "UPDATE jobs SET status = 'RUNNING', attempt = attempt + 1, worker_id = ?, started_at = ?,"
    f" lease_until = ?, lease_mono = ?, run_alone = 0 WHERE seq = ? RETURNING {CLAIM_COLUMNS}"
)
_RUNNING_ALL: Final = (
    "SELECT count(*) FROM jobs INDEXED BY jobs_leased WHERE queue = ? AND status = 'RUNNING'"
    " AND lease_until IS NOT NULL"
)
_STATE_GET: Final = "SELECT slot, value FROM claim_state WHERE queue = ? AND name = ?"
_STATE_ONE: Final = "SELECT value FROM claim_state WHERE queue = ? AND name = ? AND slot = ?"
_STATE_PUT: Final = "INSERT OR REPLACE INTO claim_state (queue, name, slot, value) VALUES (?, ?, ?, ?)"
#: Ready jobs per level (0 CRITICAL .. 4 BATCH); params: queue, now.
BY_LEVEL: Final = (
    f"SELECT ({MAX_PRIORITY} - priority) / 2 AS level, count(*) FROM ("
    " SELECT priority FROM jobs INDEXED BY jobs_ready WHERE queue = ?1 AND status = 'PENDING'"
    " AND blocked_by = 0 AND delayed = 0 AND (scheduled_at IS NULL OR scheduled_at <= ?2)"
    " UNION ALL SELECT priority FROM jobs WHERE queue = ?1 AND status = 'PENDING' AND delayed = 1"
    " AND blocked_by = 0 AND scheduled_at <= ?2) GROUP BY level"
)


_RUNNING_BY_TYPE: Final = (
    "SELECT job_type, count(*) FROM jobs INDEXED BY jobs_leased WHERE queue = ? AND status = 'RUNNING'"
    " AND lease_until IS NOT NULL GROUP BY job_type"
)


@functools.cache
def _head(types: int | None, blocked: int) -> str:
    """The next claimable job; params: queue, now, ``types`` job types, ``blocked`` job
    types left out."""
    where = [
        "queue = ? AND status = 'PENDING' AND blocked_by = 0 AND delayed = 0",
        "(scheduled_at IS NULL OR scheduled_at <= ?)",
    ]
    if types is not None:
        where.append(f"job_type IN ({', '.join(['?'] * types)})")
    if blocked:
        where.append(f"job_type NOT IN ({', '.join(['?'] * blocked)})")
    return (
        "SELECT seq, ifnull(scheduled_at, created_at) FROM jobs INDEXED BY jobs_ready WHERE "
        + " AND ".join(where)
        + " ORDER BY priority DESC, scheduled_at, created_at, seq LIMIT 1"
    )


@functools.cache
def _heads(types: int | None, blocked: int) -> str:
    """Each level's next claimable job as rows (level, seq, due since), in one statement;
    params: queue, now, ``types`` job types, ``blocked`` job types left out."""
    where = (
        "queue = ?1 AND status = 'PENDING' AND blocked_by = 0 AND delayed = 0"
        " AND (scheduled_at IS NULL OR scheduled_at <= ?2)"
    )
    if types is not None:
        where += f" AND job_type IN ({', '.join(f'?{3 + i}' for i in range(types))})"
    if blocked:
        first = 3 + (types or 0)
        where += f" AND job_type NOT IN ({', '.join(f'?{first + i}' for i in range(blocked))})"
    parts = []
    for level in range(5):
        high = MAX_PRIORITY - 2 * level
        parts.append(
            f"SELECT {level}, seq, ifnull(scheduled_at, created_at) FROM (SELECT seq, scheduled_at,"
            f" created_at FROM jobs INDEXED BY jobs_ready WHERE {where} AND priority BETWEEN {high - 1}"
            f" AND {high} ORDER BY priority DESC, scheduled_at, created_at, seq LIMIT 1)"
        )
    return " UNION ALL ".join(parts)


#: A rate window's claim count and the time in the slot the next claim takes; params:
#: queue, name, the rate's limit.
_WINDOW: Final = (
    "SELECT c.n, r.value FROM (SELECT ifnull((SELECT value FROM claim_state WHERE queue = ?1"
    " AND name = ?2 AND slot = -1), 0) AS n) AS c LEFT JOIN claim_state AS r ON r.queue = ?1"
    " AND r.name = ?2 AND r.slot = CAST(c.n AS INTEGER) % ?3"
)


class _Window:
    """A rate's ring of claim times in ``claim_state``, read and written in the claim's
    transaction (see :class:`~typedq.policy.RateWindow`)."""

    def __init__(self, conn: sqlite3.Connection, queue: str, key: str, rate: Rate) -> None:
        self.conn, self.queue, self.name, self.rate = conn, queue, f"rate:{key}", rate
        count, self.oldest = conn.execute(_WINDOW, (queue, self.name, rate.limit)).fetchone()
        self.count = int(count)

    def allows(self, now: float) -> bool:
        return self.oldest is None or self.oldest <= now - self.rate.period_s

    def take(self, now: float) -> None:
        conn, queue, name = self.conn, self.queue, self.name
        slot = self.count % self.rate.limit
        conn.executemany(_STATE_PUT, ((queue, name, slot, now), (queue, name, -1, self.count + 1)))
        self.count += 1
        if self.count >= self.rate.limit:
            row = conn.execute(_STATE_ONE, (queue, name, self.count % self.rate.limit)).fetchone()
            self.oldest = None if row is None else row[0]


def _choose(
    conn: sqlite3.Connection,
    policy: ClaimPolicy,
    *,
    where: tuple[str, float],
    types: tuple[str, ...] | None,
    blocked: tuple[str, ...],
    fair: list[float],
) -> int | None:
    """The seq of the row to claim next, or None; ``where`` is (queue, now)."""
    of_types = () if types is None else types
    ntypes = None if types is None else len(types)
    if not policy.by_level:
        row = conn.execute(_head(ntypes, len(blocked)), (*where, *of_types, *blocked)).fetchone()
        return None if row is None else int(row[0])
    seqs: list[int | None] = [None] * 5
    heads: list[float | None] = [None] * 5
    for level, seq, since in conn.execute(_heads(ntypes, len(blocked)), (*where, *of_types, *blocked)):
        seqs[level], heads[level] = seq, since
    chosen = pick_level(policy, heads, fair, where[1])
    return None if chosen is None else seqs[chosen]


def policy_claim(
    conn: sqlite3.Connection,
    *,
    policy: ClaimPolicy,
    queue: str,
    now: float,
    head: tuple[Any, ...],
    types: tuple[str, ...] | None,
    limit: int,
) -> list[Sequence[Any]]:
    """Claim up to ``limit`` rows as ``policy`` chooses, inside the caller's write
    transaction; ``head`` is what the claim sets (worker_id, started_at, lease_until,
    lease_mono). Returns the claimed rows (``CLAIM_COLUMNS``)."""
    limits = policy.limits
    counted = [t for t, lim in limits.items() if lim.max_concurrency is not None]
    by_type: dict[str, int] = dict.fromkeys(counted, 0)
    running = 0
    if counted:  # one read of the RUNNING rows serves both counts
        for job_type, count in conn.execute(_RUNNING_BY_TYPE, (queue,)):
            running += count
            if job_type in by_type:
                by_type[job_type] = count
    elif policy.max_concurrency:
        running = conn.execute(_RUNNING_ALL, (queue,)).fetchone()[0]
    windows = {"": _Window(conn, queue, "", policy.rate)} if policy.rate else {}
    for job_type, lim in limits.items():
        if lim.rate is not None:
            windows[job_type] = _Window(conn, queue, job_type, lim.rate)
    fair: list[float] = []
    if policy.fairness == "weighted":
        fair = [0.0] * 6
        for slot, value in conn.execute(_STATE_GET, (queue, "fair")).fetchall():
            fair[int(slot)] = float(value)
    was = list(fair)
    out: list[Sequence[Any]] = []
    while len(out) < limit:
        if policy.max_concurrency is not None and running >= policy.max_concurrency:
            break
        if "" in windows and not windows[""].allows(now):
            break
        blocked = tuple(
            job_type
            for job_type, lim in limits.items()
            if (lim.max_concurrency is not None and by_type[job_type] >= lim.max_concurrency)
            or (job_type in windows and not windows[job_type].allows(now))
        )
        seq = _choose(conn, policy, where=(queue, now), types=types, blocked=blocked, fair=fair)
        if seq is None:
            break
        claimed = conn.execute(_CLAIM_SEQ, (*head, seq)).fetchone()
        out.append(claimed)
        running += 1
        job_type = claimed[1]
        if job_type in by_type:
            by_type[job_type] += 1
        if "" in windows:
            windows[""].take(now)
        if job_type in windows:
            windows[job_type].take(now)
    if fair != was:
        changed = [(queue, "fair", slot, value) for slot, value in enumerate(fair) if value != was[slot]]
        conn.executemany(_STATE_PUT, changed)
    return out
