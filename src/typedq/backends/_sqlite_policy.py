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
from collections.abc import Iterable, Sequence
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
def _claim_head(types: int | None, blocked: int) -> str:
    """The claim of the next claimable job in claim order, in one statement (a policy
    that does not choose by level); params: what the claim sets, then queue, now,
    ``types`` job types, ``blocked`` job types left out."""
    where = [
        "queue = ? AND status = 'PENDING' AND blocked_by = 0 AND delayed = 0",
        "(scheduled_at IS NULL OR scheduled_at <= ?)",
    ]
    if types is not None:
        where.append(f"job_type IN ({', '.join(['?'] * types)})")
    if blocked:
        where.append(f"job_type NOT IN ({', '.join(['?'] * blocked)})")
    head = (
        "SELECT seq FROM jobs INDEXED BY jobs_ready WHERE "
        + " AND ".join(where)
        + " ORDER BY priority DESC, scheduled_at, created_at, seq LIMIT 1"
    )
    assert _CLAIM_SEQ.count("WHERE seq = ?") == 1
    return _CLAIM_SEQ.replace("WHERE seq = ?", f"WHERE seq = ({head})")


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


@functools.cache
def _fair_and_heads(types: int | None) -> str:
    """The fairness virtual times as rows (0, slot, value, NULL) and each level's next
    claimable job as rows (1, level, seq, due since), in one statement: the whole read of
    a weighted claim without limits. Params: those of :func:`_heads` with no blocked types."""
    return (
        "SELECT 0, slot, value, NULL FROM claim_state WHERE queue = ?1 AND name = 'fair'"
        f" UNION ALL SELECT 1, * FROM ({_heads(types, 0)})"
    )


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


def _pick(
    policy: ClaimPolicy, rows: Iterable[Sequence[Any]], fair: list[float], now: float
) -> int | None:
    """The seq of the row to claim next among each level's head ``rows`` (level, seq, due
    since), as :func:`~typedq.policy.pick_level` chooses (``fair`` updated), or None."""
    seqs: list[int | None] = [None] * 5
    heads: list[float | None] = [None] * 5
    for level, seq, since in rows:
        seqs[level], heads[level] = seq, since
    chosen = pick_level(policy, heads, fair, now)
    return None if chosen is None else seqs[chosen]


class _PolicyClaim:
    """One policy claim's state, read in one statement and written in one ``executemany``
    (see :func:`policy_claim`)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        policy: ClaimPolicy,
        queue: str,
        now: float,
        types: tuple[str, ...] | None,
    ) -> None:
        self.conn, self.policy, self.queue, self.now = conn, policy, queue, now
        self.of_types = () if types is None else types
        self.ntypes = None if types is None else len(types)
        limits = policy.limits
        self.by_type = {t: 0 for t, lim in limits.items() if lim.max_concurrency is not None}
        self.windows = {"": _Window("", policy.rate)} if policy.rate else {}
        for job_type, lim in limits.items():
            if lim.rate is not None:
                self.windows[job_type] = _Window(job_type, lim.rate)
        self.fair = [0.0] * 6 if policy.fairness == "weighted" else []
        self.running = 0
        # The first choice's level heads, when read with the state (weighted, no limits).
        self.first: list[Sequence[Any]] | None = None
        self.writes: dict[tuple[str, int], float] = {}
        self._read()
        self.was = list(self.fair)

    def _read(self) -> None:
        conn, queue, fair, windows = self.conn, self.queue, self.fair, self.windows
        counted = bool(self.by_type) or self.policy.max_concurrency is not None
        if fair and not (counted or windows):
            self.first = first = []
            for kind, key, value, since in conn.execute(
                _fair_and_heads(self.ntypes), (queue, self.now, *self.of_types)
            ):
                if kind == 0:
                    fair[int(key)] = float(value)
                else:
                    first.append((key, value, since))
            return
        if not (counted or fair or windows):
            return
        ordered = list(windows.values())
        params: list[Any] = [queue]
        for window in ordered:
            params += (window.name, window.rate.limit)
        for kind, key, value, more in conn.execute(_state(counted, bool(fair), len(ordered)), params):
            if kind == 0:
                self.running += value
                if key in self.by_type:
                    self.by_type[key] = value
            elif kind == 1:
                fair[int(key)] = float(value)
            else:
                ordered[key].count, ordered[key].oldest = int(value), more

    def blocked(self) -> tuple[str, ...] | None:
        """The job types the limits leave out now, or None when the queue's own limits
        allow no claim."""
        policy, now, windows = self.policy, self.now, self.windows
        if policy.max_concurrency is not None and self.running >= policy.max_concurrency:
            return None
        if "" in windows and not windows[""].allows(now):
            return None
        return tuple(
            job_type
            for job_type, lim in policy.limits.items()
            if (lim.max_concurrency is not None and self.by_type[job_type] >= lim.max_concurrency)
            or (job_type in windows and not windows[job_type].allows(now))
        )

    def claim(self, head: tuple[Any, ...], blocked: tuple[str, ...]) -> Sequence[Any] | None:
        """Claim the next row the policy chooses (None: nothing claimable) and count it."""
        conn, queue, now = self.conn, self.queue, self.now
        where = (queue, now, *self.of_types, *blocked)
        if self.policy.by_level:
            first = self.first
            if first is None:
                first = conn.execute(_heads(self.ntypes, len(blocked)), where).fetchall()
            self.first = None
            seq = _pick(self.policy, first, self.fair, now)
            claimed = None if seq is None else conn.execute(_CLAIM_SEQ, (*head, seq)).fetchone()
        else:
            claimed = conn.execute(_claim_head(self.ntypes, len(blocked)), (*head, *where)).fetchone()
        if claimed is None:
            return None
        self.running += 1
        job_type = claimed[1]
        if job_type in self.by_type:
            self.by_type[job_type] += 1
        for key in ("", job_type):
            if key in self.windows:
                self.windows[key].take(conn, queue, now, self.writes)
        return claimed  # type: ignore[no-any-return]  # one row

    def write(self) -> None:
        """Store the state the claims changed, in one ``executemany``."""
        writes = self.writes
        for slot, value in enumerate(self.fair):
            if value != self.was[slot]:
                writes["fair", slot] = value
        if writes:
            rows = [(self.queue, name, slot, value) for (name, slot), value in writes.items()]
            self.conn.executemany(_STATE_PUT, rows)


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

    One read of the state (:func:`_state`; for a weighted claim without limits, with the
    level heads: :func:`_fair_and_heads`) before the first choice, one statement per
    choice (the level heads; without levels, the claim of the head itself), and one
    ``executemany`` of the ``claim_state`` rows changed after the last."""
    state = _PolicyClaim(conn, policy, queue, now, types)
    out: list[Sequence[Any]] = []
    while len(out) < limit:
        blocked = state.blocked()
        if blocked is None:
            break
        claimed = state.claim(head, blocked)
        if claimed is None:
            break
        out.append(claimed)
    state.write()
    return out
