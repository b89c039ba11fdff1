"""The SQLite backend's claims under a :class:`~typedq.policy.ClaimPolicy`.

A policy claim is one ``BEGIN IMMEDIATE`` transaction, like the plain claim, and writes
as few pages beyond the plain claim's as it can: each page is one more WAL frame in the
commit (about 5-7 µs each, measured here). So the state a policy keeps per queue lives
in the queue's ``job_counts`` rows (see ``_sqlite_counts``), whose page every claim
writes anyway, and only a rate's ring of claim times has a table of its own:

* the fairness virtual times: status ``fair``, job type the slot (``0``-``4`` the
  levels', ``5`` the queue's), ``n`` the time;
* how many claims each rate has counted: status ``rate``, job type ``''`` for the
  queue's rate, else the job type of a per-type rate;
* ``claim_state`` rows (queue, name, slot, value), name ``rate:`` (the queue's rate) or
  ``rate:<job type>``: the ring of the last N claim times of that rate. The claim
  numbered ``k`` (from 0) writes slot ``k % N``, so the slot the next claim would write
  holds the time of the claim N claims before it.

One read gets what the policy needs to know (:func:`_state`, one row): the RUNNING jobs,
the virtual times, each rate's count and the time in the slot its next claim takes.
Then one statement claims (:func:`_claim_first`): under weighted fairness the head of the
first level in :func:`~typedq.policy.fair_order` that has a claimable job (the choice of
:func:`~typedq.policy.pick_level`, made without reading each level's head: the levels'
heads are joined by ``UNION ALL`` under ``LIMIT 1``, which stops at the first row), else
the next job in claim order. Aging (``max_wait_s``) needs each level's head and when it
became due: one ``LIMIT 1`` seek of ``jobs_ready`` per level, in one statement
(:func:`_heads`), then the claim of the chosen row by its ``seq``. The state the claims
changed is written after the last one: one upsert of ``job_counts`` rows and one of
``claim_state`` rows, in the same transaction. Strict priority without limits never
comes here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final

from typedq.backends import _sqlite_counts as counts
from typedq.backends._sqlite_driver import sqlite3
from typedq.backends._sqlite_rows import CLAIM_COLUMNS, PRIORITY
from typedq.job import MAX_PRIORITY, level_index
from typedq.policy import ClaimPolicy, Rate, fair_order, pick_level, serve

__all__ = ["FAIR", "RATE", "policy_claim"]

#: The ``job_counts`` pseudo-statuses of the fairness virtual times and of the claims
#: each rate counted.
FAIR, RATE = counts.STATE_STATUSES

_CLAIM_SEQ: Final = (
    "UPDATE jobs SET status = 'RUNNING', attempt = attempt + 1, worker_id = ?, started_at = ?,"
    f" lease_until = ?, lease_mono = ?, run_alone = 0 WHERE seq = ? RETURNING {CLAIM_COLUMNS}"
)
_RING_ONE: Final = "SELECT value FROM claim_state WHERE queue = ? AND name = ? AND slot = ?"


@functools.cache
def _set_ring(rows: int) -> str:
    """The upsert giving ``rows`` (queue, name, slot, value) rows of ``claim_state``
    their value."""
    values = ", ".join(["(?, ?, ?, ?)"] * rows)
    return f"INSERT OR REPLACE INTO claim_state (queue, name, slot, value) VALUES {values}"


def _where(types: int | None, blocked: int, first: int) -> str:
    """The conditions a claimable row meets; params: ?{first} the queue, ?{first + 1}
    now, then ``types`` job types the claim takes and ``blocked`` job types left out."""
    where = (
        f"queue = ?{first} AND status = 'PENDING' AND blocked_by = 0 AND delayed = 0"
        f" AND (scheduled_at IS NULL OR scheduled_at <= ?{first + 1})"
    )
    at = first + 2
    if types is not None:
        where += f" AND job_type IN ({', '.join(f'?{at + i}' for i in range(types))})"
        at += types
    if blocked:
        where += f" AND job_type NOT IN ({', '.join(f'?{at + i}' for i in range(blocked))})"
    return where


def _head(where: str, level: int | None) -> str:
    """The seq (and when due) of the next row meeting ``where`` in claim order, of one
    priority ``level`` when given."""
    if level is not None:
        high = MAX_PRIORITY - 2 * level
        where += f" AND priority BETWEEN {high - 1} AND {high}"
    return (
        f"SELECT seq, ifnull(scheduled_at, created_at) AS due FROM jobs INDEXED BY jobs_ready WHERE {where}"
        " ORDER BY priority DESC, scheduled_at, created_at, seq LIMIT 1"
    )


@functools.cache
def _claim_first(types: int | None, blocked: int, levels: tuple[int, ...] | None) -> str:
    """The claim of the next claimable job, in one statement: in claim order (``levels``
    None), or the head of the first of ``levels`` that has one. Params: ?1-?4 what the
    claim sets, then those of :func:`_where` from ?5."""
    where = _where(types, blocked, 5)
    if levels is None:
        first = f"SELECT seq FROM ({_head(where, None)})"
    else:
        # UNION ALL under LIMIT 1 stops at the first level that has a row.
        heads = " UNION ALL ".join(f"SELECT seq FROM ({_head(where, level)})" for level in levels)
        first = f"SELECT seq FROM ({heads}) LIMIT 1"
    return (
        "UPDATE jobs SET status = 'RUNNING', attempt = attempt + 1, worker_id = ?1, started_at = ?2,"
        f" lease_until = ?3, lease_mono = ?4, run_alone = 0 WHERE seq = ({first}) RETURNING {CLAIM_COLUMNS}"
    )


@functools.cache
def _heads(types: int | None, blocked: int) -> str:
    """Each level's next claimable job as rows (level, seq, due since), in one statement;
    params: those of :func:`_where` from ?1."""
    where = _where(types, blocked, 1)
    return " UNION ALL ".join(f"SELECT {level}, * FROM ({_head(where, level)})" for level in range(5))


@functools.cache
def _state(capped: int, running: bool, fair: bool, windows: int) -> str:
    """Everything a policy claim reads before it chooses, as one row, in one statement:
    the RUNNING jobs of the queue (``running``) and of each of ``capped`` job types, the
    six virtual times (``fair``), then per rate window its count and the time in the
    ring slot its next claim takes. An aggregate without GROUP BY is one row even when
    it finds none, so every part is one row and the parts are joined.

    Params: ?1 the queue, then the ``capped`` job types, then per window its job type,
    ring name and limit."""
    parts: list[str] = []
    number = 1

    def param() -> str:
        nonlocal number
        number += 1
        return f"?{number}"

    if running or capped:
        columns = ["total(n)"] + [f"total(n) FILTER (WHERE job_type = {param()})" for _ in range(capped)]
        parts.append(f"SELECT {', '.join(columns)} FROM job_counts WHERE queue = ?1 AND status = 'RUNNING'")
    if fair:
        columns = [f"max(n) FILTER (WHERE job_type = '{slot}')" for slot in range(6)]
        parts.append(f"SELECT {', '.join(columns)} FROM job_counts WHERE queue = ?1 AND status = '{FAIR}'")
    for _ in range(windows):
        key, name, limit = param(), param(), param()
        parts.append(
            f"SELECT c.n, r.value FROM (SELECT max(n) AS n FROM job_counts WHERE queue = ?1"
            f" AND status = '{RATE}' AND job_type = {key}) AS c LEFT JOIN claim_state AS r"
            f" ON r.queue = ?1 AND r.name = {name} AND r.slot = CAST(c.n AS INTEGER) % {limit}"
        )
    return "SELECT * FROM " + ", ".join(f"({part})" for part in parts)


class _Window:
    """A rate's count of claims and its ring of claim times (see the module docstring);
    its changes are written with the claim's other state."""

    __slots__ = ("count", "key", "name", "oldest", "rate", "taken")

    def __init__(self, key: str, rate: Rate) -> None:
        self.key, self.name, self.rate = key, f"rate:{key}", rate
        self.count = 0
        self.oldest: float | None = None
        self.taken = False

    def allows(self, now: float) -> bool:
        return self.oldest is None or self.oldest <= now - self.rate.period_s

    def take(
        self, conn: sqlite3.Connection, queue: str, now: float, ring: dict[tuple[str, int], float]
    ) -> None:
        name, limit = self.name, self.rate.limit
        ring[name, self.count % limit] = now
        self.count += 1
        self.taken = True
        if self.count >= limit:  # the slot the next claim takes: written here, or stored
            slot = self.count % limit
            if (name, slot) in ring:
                self.oldest = ring[name, slot]
            else:
                row = conn.execute(_RING_ONE, (queue, name, slot)).fetchone()
                self.oldest = None if row is None else row[0]


class _PolicyClaim:
    """One policy claim's state, read in one statement and written in two (see
    :func:`policy_claim`)."""

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
        # Aging needs each level's head and when it became due; weighted fairness alone
        # only the levels' order (see claim).
        self.aging = any(w is not None for w in policy.max_wait_s)
        self.running = 0
        self.ring: dict[tuple[str, int], float] = {}
        self._read()
        self.was = list(self.fair)

    def _read(self) -> None:
        counted = bool(self.by_type) or self.policy.max_concurrency is not None
        fair, windows = self.fair, self.windows
        if not (counted or fair or windows):
            return
        capped = list(self.by_type)
        params: list[Any] = [self.queue, *capped]
        for window in windows.values():
            params += (window.key, window.name, window.rate.limit)
        row = self.conn.execute(_state(len(capped), counted, bool(fair), len(windows)), params).fetchone()
        at = 0
        if counted:
            self.running = int(row[0])
            for at, job_type in enumerate(capped, 1):
                self.by_type[job_type] = int(row[at])
            at += 1
        if fair:
            for slot in range(6):
                value = row[at + slot]
                if value is not None:
                    fair[slot] = float(value)
            at += 6
        for window in windows.values():
            count, window.oldest = row[at], row[at + 1]
            window.count = 0 if count is None else int(count)
            at += 2

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
        """Claim the next row the policy chooses (None: nothing claimable) and count it.

        Weighted fairness without aging claims, in one statement, the head of the first
        level in :func:`~typedq.policy.fair_order` that has one: the level
        :func:`~typedq.policy.pick_level` would choose, without reading the heads."""
        conn, queue, now, policy = self.conn, self.queue, self.now, self.policy
        where = (queue, now, *self.of_types, *blocked)
        claimed: Sequence[Any] | None
        if self.fair and not self.aging:
            order = fair_order(self.fair)
            claimed = conn.execute(_claim_first(self.ntypes, len(blocked), order), (*head, *where)).fetchone()
            if claimed is not None:
                serve(policy, self.fair, level_index(claimed[PRIORITY]))
        elif self.aging:
            seqs: list[int | None] = [None] * 5
            since: list[float | None] = [None] * 5
            for level, seq, due in conn.execute(_heads(self.ntypes, len(blocked)), where):
                seqs[level], since[level] = seq, due
            chosen = pick_level(policy, since, self.fair, now)
            claimed = None if chosen is None else conn.execute(_CLAIM_SEQ, (*head, seqs[chosen])).fetchone()
        else:
            claimed = conn.execute(_claim_first(self.ntypes, len(blocked), None), (*head, *where)).fetchone()
        if claimed is None:
            return None
        self.running += 1
        job_type = claimed[1]
        if job_type in self.by_type:
            self.by_type[job_type] += 1
        for key in ("", job_type):
            if key in self.windows:
                self.windows[key].take(conn, queue, now, self.ring)
        return claimed

    def write(self) -> list[tuple[str, str, str, float]]:
        """Store the ring slots the claims wrote (one upsert), and return the
        ``job_counts`` rows of the state they changed, for the caller to write with the
        claims' counts (``_sqlite_counts.add_rows``: one statement for both)."""
        queue = self.queue
        state: list[tuple[str, str, str, float]] = []
        for slot, value in enumerate(self.fair):
            if value != self.was[slot]:
                state.append((queue, str(slot), FAIR, value))
        for window in self.windows.values():
            if window.taken:
                state.append((queue, window.key, RATE, window.count))
        if self.ring:
            rows: list[Any] = []
            for (name, slot), value in self.ring.items():
                rows += (queue, name, slot, value)
            self.conn.execute(_set_ring(len(self.ring)), rows)
        return state


def policy_claim(
    conn: sqlite3.Connection,
    *,
    policy: ClaimPolicy,
    queue: str,
    now: float,
    head: tuple[Any, ...],
    types: tuple[str, ...] | None,
    limit: int,
) -> tuple[list[Sequence[Any]], list[tuple[str, str, str, float]]]:
    """Claim up to ``limit`` rows as ``policy`` chooses, inside the caller's write
    transaction; ``head`` is what the claim sets (worker_id, started_at, lease_until,
    lease_mono). Returns the claimed rows (``CLAIM_COLUMNS``) and the ``job_counts``
    rows of the policy state they changed, which the caller writes with the claims'
    counts, in the same transaction.

    One read of the state (:func:`_state`) before the first choice, one statement per
    claim (with aging, two: the level heads, then the claim), and the ring slots written
    after the last (:meth:`_PolicyClaim.write`)."""
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
    return out, state.write()
