"""The SQLite backend's claims under a :class:`~typedq.policy.ClaimPolicy`.

A policy claim is one ``BEGIN IMMEDIATE`` transaction, like the plain claim. One read
gets what the policy needs to know: the RUNNING jobs per type from ``job_counts`` (a few
rows, see ``_sqlite_counts``, never a count of the jobs), the fairness virtual times and
each rate's recent claim times (table ``claim_state``, schema 8). Then it finds each
level's next claimable job (one ``LIMIT 1`` seek of ``jobs_ready`` per level, in one
statement), lets :func:`~typedq.policy.pick_level` choose, and claims that row by its
``seq``; the state it changed is written by one ``executemany`` in the same transaction.
Strict priority without limits never comes here.

``claim_state`` rows (queue, name, slot, value): ``fair`` slots 0-4 the levels' virtual
times and 5 the queue's; ``rate:`` (the queue's rate) and ``rate:<job type>`` slot -1 the
number of claims so far and slots 0..N-1 the ring of the last N claim times.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final

from typedq.backends import _sqlite_counts as counts
from typedq.backends._sqlite_driver import sqlite3
from typedq.backends._sqlite_rows import CLAIM_COLUMNS
from typedq.job import MAX_PRIORITY
from typedq.policy import ClaimPolicy, Rate, pick_level

__all__ = ["policy_claim"]

_CLAIM_SEQ: Final = (
    "UPDATE jobs SET status = 'RUNNING', attempt = attempt + 1, worker_id = ?, started_at = ?,"
    f" lease_until = ?, lease_mono = ?, run_alone = 0 WHERE seq = ? RETURNING {CLAIM_COLUMNS}"
)
_STATE_ONE: Final = "SELECT value FROM claim_state WHERE queue = ? AND name = ? AND slot = ?"
_STATE_PUT: Final = "INSERT OR REPLACE INTO claim_state (queue, name, slot, value) VALUES (?, ?, ?, ?)"

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


def _window_part(index: int) -> str:
    """The rows of :func:`_state` for the ``index``-th rate window: (2, index, the number
    of claims so far, the time in the slot the next claim takes); its params ?{2 + 2i}
    (its name) and ?{3 + 2i} (its limit)."""
    name, limit = f"?{2 + 2 * index}", f"?{3 + 2 * index}"
    return (
        f"SELECT 2, {index}, c.n, r.value FROM (SELECT ifnull((SELECT value FROM claim_state"
        f" WHERE queue = ?1 AND name = {name} AND slot = -1), 0) AS n) AS c LEFT JOIN claim_state AS r"
        f" ON r.queue = ?1 AND r.name = {name} AND r.slot = CAST(c.n AS INTEGER) % {limit}"
    )


@functools.cache
def _state(running: bool, fair: bool, windows: int) -> str:
    """Everything a policy claim reads before it chooses, in one statement, as rows (kind,
    key, value, value): kind 0 the RUNNING jobs per type (``job_counts``), 1 the fairness
    virtual times by slot, 2 each rate window (see :func:`_window_part`). Params: the
    queue, then each window's name and limit."""
    parts = []
    if running:
        parts.append(f"SELECT 0, job_type, n, NULL FROM ({counts.RUNNING_BY_TYPE})")
    if fair:
        parts.append("SELECT 1, slot, value, NULL FROM claim_state WHERE queue = ?1 AND name = 'fair'")
    parts.extend(_window_part(index) for index in range(windows))
    return " UNION ALL ".join(parts)


class _Window:
    """A rate's ring of claim times in ``claim_state`` (see
    :class:`~typedq.policy.RateWindow`): read by :func:`_state`, its changes written
    with the claim's other state (``writes``, keyed by (name, slot))."""

    def __init__(self, key: str, rate: Rate) -> None:
        self.name, self.rate = f"rate:{key}", rate
        self.count = 0
        self.oldest: float | None = None

    def allows(self, now: float) -> bool:
        return self.oldest is None or self.oldest <= now - self.rate.period_s

    def take(
        self, conn: sqlite3.Connection, queue: str, now: float, writes: dict[tuple[str, int], float]
    ) -> None:
        name, limit = self.name, self.rate.limit
        writes[name, self.count % limit] = now
        self.count += 1
        writes[name, -1] = self.count
        if self.count >= limit:  # the slot the next claim takes: written here, or stored
            slot = self.count % limit
            if (name, slot) in writes:
                self.oldest = writes[name, slot]
            else:
                row = conn.execute(_STATE_ONE, (queue, name, slot)).fetchone()
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
    lease_mono). Returns the claimed rows (``CLAIM_COLUMNS``).

    One read (:func:`_state`) before the first choice and one ``executemany`` of the
    ``claim_state`` rows changed after the last: the statements a policy adds to a
    claim are its choice's seeks of ``jobs_ready``."""
    limits = policy.limits
    by_type: dict[str, int] = {t: 0 for t, lim in limits.items() if lim.max_concurrency is not None}
    windows = {"": _Window("", policy.rate)} if policy.rate else {}
    for job_type, lim in limits.items():
        if lim.rate is not None:
            windows[job_type] = _Window(job_type, lim.rate)
    weighted = policy.fairness == "weighted"
    counted = bool(by_type) or policy.max_concurrency is not None
    fair = [0.0] * 6 if weighted else []
    running = 0
    if counted or weighted or windows:
        ordered = list(windows.values())
        params: list[Any] = [queue]
        for window in ordered:
            params += (window.name, window.rate.limit)
        for kind, key, value, more in conn.execute(_state(counted, weighted, len(ordered)), params):
            if kind == 0:
                running += value
                if key in by_type:
                    by_type[key] = value
            elif kind == 1:
                fair[int(key)] = float(value)
            else:
                ordered[key].count, ordered[key].oldest = int(value), more
    was = list(fair)
    writes: dict[tuple[str, int], float] = {}
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
            windows[""].take(conn, queue, now, writes)
        if job_type in windows:
            windows[job_type].take(conn, queue, now, writes)
    for slot, value in enumerate(fair):
        if value != was[slot]:
            writes["fair", slot] = value
    if writes:
        conn.executemany(_STATE_PUT, [(queue, name, slot, value) for (name, slot), value in writes.items()])
    return out
