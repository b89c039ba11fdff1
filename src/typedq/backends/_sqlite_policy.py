"""The SQLite backend's claims under a :class:`~typedq.policy.ClaimPolicy`.

A policy claim is one ``BEGIN IMMEDIATE`` transaction, like the plain claim, and costs it
as little more as it can: few statements, and few pages written beyond the plain
claim's (each page is one more WAL frame in the commit, about 5-7 µs here). So the state
a policy keeps per queue lives in the queue's ``job_counts`` rows (see
``_sqlite_counts``), whose page every claim writes anyway, and only a rate's ring of
claim times has a table of its own:

* the fairness virtual times: status ``fair``, job type ``''``, ``n`` the six times
  packed (the levels' five, then the queue's; schema 13 kept six rows, job types
  ``'0'``-``'5'``, which the next weighted claim packs);
* how many claims each rate has counted: status ``rate``, job type ``''`` for the
  queue's rate, else the job type of a per-type rate;
* ``claim_state`` rows (queue, name, slot, value), name ``rate:`` (the queue's rate) or
  ``rate:<job type>``: the ring of the last N claim times of that rate. The claim
  numbered ``k`` (from 0) writes slot ``k % N``, so the slot the next claim would write
  holds the time of the claim N claims before it: the next claim is allowed when that
  slot is empty or older than one period.

The limits are checked inside the claim statement itself (:func:`_gates`): the queue's
as conditions of the ``UPDATE``, each job type's as a condition on the rows its head
search may take (a type at its limit is passed over, in order). They read the RUNNING
counts and the ring slots in the statement's own snapshot; the claims made earlier in the
same call, not yet counted, are added as parameters. The statement returns each rate's
count with the row, so the ring slots the claims take are known without a read.

Under weighted fairness, the virtual times are read in the statement that looks for
due delayed jobs, which every claim runs first (:data:`DUE_AND_FAIR`); one statement claims
the head of the first level in :func:`~typedq.policy.fair_order` that has a claimable job
(the choice of :func:`~typedq.policy.pick_level`, made without reading each level's
head: the levels' heads are joined by ``UNION ALL`` under ``LIMIT 1``, which stops at
the first row). Aging (``max_wait_s``) needs each level's head and when it became due:
one ``LIMIT 1`` seek of ``jobs_ready`` per level, in one statement (:func:`_heads`), then
the claim of the chosen row by its ``seq``. After the last claim, the ring slots are
written by one upsert and the rest of the state with the claims' counts (one upsert of
``job_counts``, in ``SQLiteQueue._take``). Strict priority without limits never comes
here.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from typedq.backends import _sqlite_counts as counts
from typedq.backends._sqlite_driver import sqlite3
from typedq.backends._sqlite_rows import CLAIM_COLUMNS, JOB_TYPE, PRIORITY, SEQ
from typedq.backends._sqlite_sql import SQL
from typedq.job import MAX_PRIORITY, level_index
from typedq.policy import ClaimPolicy, Rate, fair_order, pick_level, serve

__all__ = ["PolicyPlan", "policy_claim"]

FAIR: Final = counts.FAIR
RATE: Final = counts.RATE
#: The columns of a claimed row (``CLAIM_COLUMNS``); the rates' counts follow them.
_WIDTH: Final = len(CLAIM_COLUMNS.split(", "))
#: The fairness state: one ``job_counts`` row (job type ``''``), the six virtual times
#: packed. Schema 13 kept them as six rows (job types ``'0'``-``'5'``): a claim that
#: finds such rows reads them, writes the packed row and deletes them.
_FAIR_STATE: Final = struct.Struct("<6d")
#: The fairness state's rows (params: the queue).
_FAIR_READ: Final = f"SELECT job_type, n FROM job_counts WHERE queue = ? AND status = '{FAIR}'"
#: Whether a delayed job is due, and the packed fairness state (NULL when there is none
#: yet, or it is still in schema 13's rows): the two reads a weighted claim starts with,
#: in one statement (params: ?1 the queue, ?2 now).
DUE_AND_FAIR: Final = (
    f"SELECT EXISTS ({SQL.any_due}),"
    f" (SELECT n FROM job_counts WHERE queue = ?1 AND status = '{FAIR}' AND job_type = '')"
)
_FAIR_OLD: Final = f"DELETE FROM job_counts WHERE queue = ? AND status = '{FAIR}' AND job_type > ''"
_CLAIM_SET: Final = (
    "UPDATE jobs SET status = 'RUNNING', attempt = attempt + 1, worker_id = ?1, started_at = ?2,"
    " lease_until = ?3, lease_mono = ?4, run_alone = 0, claim_group = NULL"
)


@dataclass(frozen=True, slots=True)
class _Limits:
    """A policy's limits as its claim statements check them (hashable: it keys their
    cache): the queue's concurrency limit and rate (limit, period), and per limited job
    type its concurrency limit and rate."""

    cap: int | None
    rate: tuple[int, float] | None
    types: tuple[tuple[str, int | None, tuple[int, float] | None], ...]

    @property
    def queue_limited(self) -> bool:
        return self.cap is not None or self.rate is not None

    @property
    def type_rated(self) -> bool:
        return any(rate is not None for _, _, rate in self.types)


def _allows(rate: tuple[int, float], key: str, taken: str) -> str:
    """The condition that one more claim stays within ``rate``: fewer than its limit
    taken in this call, and the ring slot the next claim takes empty or older than one
    period. ``key`` is the SQL of the rate's key, ``taken`` of the claims this call made
    under it (params: ?5 the queue, ?6 now)."""
    limit, period = rate
    count = (
        f"ifnull((SELECT n FROM job_counts WHERE queue = ?5 AND status = '{RATE}' AND job_type = {key}), 0)"
    )
    oldest = (
        f"(SELECT value FROM claim_state WHERE queue = ?5 AND name = 'rate:' || {key}"
        f" AND slot = ({count} + {taken}) % {limit})"
    )
    return f"({taken} < {limit} AND ifnull({oldest} <= ?6 - {period!r}, 1))"


class _Gates(NamedTuple):
    """A policy's limits as SQL (see :func:`_gates`)."""

    queue: str
    types: str
    returning: str
    #: The number of the first parameter after them.
    next_param: int


def _literal(text: str) -> str:
    """``text`` as an SQL string literal (a limited job type is written into the statement
    of its policy, one parameter less to bind per claim)."""
    return "'" + text.replace("'", "''") + "'"


def _gates(limits: _Limits | None, ntypes: int | None) -> _Gates:
    """The SQL of a policy's limits in its claim statements: the queue's conditions (for
    the ``UPDATE``'s WHERE), the per-type ones (for the head search's WHERE) and the
    rates' counts to return with the row. Params after ?7.. the ``ntypes`` job types:
    the claims this call made (if the queue has a limit), then per limited type the
    claims of it this call made (see :meth:`PolicyPlan.params`); the limited types'
    names are written in the SQL."""
    at = 7 + (ntypes or 0)
    if limits is None:
        return _Gates("", "", "", at)
    queue_gate, type_gate, returning = "", "", ""
    if limits.queue_limited:
        taken = f"?{at}"
        at += 1
        if limits.cap is not None:
            running = "(SELECT total(n) FROM job_counts WHERE queue = ?5 AND status = 'RUNNING')"
            queue_gate += f" AND {running} + {taken} < {limits.cap}"
        if limits.rate is not None:
            queue_gate += " AND " + _allows(limits.rate, "''", taken)
            returning += (
                f", (SELECT n FROM job_counts WHERE queue = ?5 AND status = '{RATE}' AND job_type = '')"
            )
    for job_type, cap, rate in limits.types:
        name, taken = _literal(job_type), f"?{at}"
        at += 1
        held = []
        if cap is not None:
            running = (
                f"ifnull((SELECT n FROM job_counts WHERE queue = ?5 AND status = 'RUNNING'"
                f" AND job_type = {name}), 0)"
            )
            held.append(f"{running} + {taken} >= {cap}")
        if rate is not None:
            held.append(f"NOT {_allows(rate, name, taken)}")
        type_gate += f" AND NOT (job_type = {name} AND ({' OR '.join(held)}))"
    if limits.type_rated:
        returning += (
            f", (SELECT n FROM job_counts WHERE queue = ?5 AND status = '{RATE}'"
            " AND job_type = jobs.job_type)"
        )
    return _Gates(queue_gate, type_gate, returning, at)


def _where(ntypes: int | None, type_gate: str) -> str:
    """The conditions a claimable row meets; params: ?5 the queue, ?6 now, ?7.. the
    ``ntypes`` job types the claim takes."""
    where = (
        "queue = ?5 AND status = 'PENDING' AND blocked_by = 0 AND delayed = 0"
        " AND (scheduled_at IS NULL OR scheduled_at <= ?6)"
    )
    if ntypes is not None:
        where += f" AND job_type IN ({', '.join(f'?{7 + i}' for i in range(ntypes))})"
    return where + type_gate


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
def order_code(levels: tuple[int, ...]) -> int:
    """The param giving :func:`_claim_first` its order of the five ``levels``: their
    digits, first level first (one parameter to bind, not ten bounds)."""
    code = 0
    for level in levels:
        code = code * 10 + level
    return code


@functools.cache
def _claim_first(limits: _Limits | None, ntypes: int | None, fair: bool) -> str:
    """The claim of the next claimable job the limits allow, in one statement: in claim
    order, or with ``fair`` the head of the first of five levels given in order by their
    digits (:func:`order_code`) that has one. One statement for every order of the
    levels: each order a text of its own would be prepared anew (milliseconds each) and
    crowd the statement cache. Params: ?1-?4 what the claim sets, ?5 the queue, ?6 now,
    ?7.. the job types, then those of :func:`_gates`, then with ``fair`` the levels'
    order (:func:`order_code`)."""
    queue_gate, type_gate, returning, at = _gates(limits, ntypes)
    where = _where(ntypes, type_gate)
    if not fair:
        first = f"SELECT seq FROM ({_head(where, None)})"
    else:
        # UNION ALL under LIMIT 1 stops at the first level that has a row.
        # The level of branch i: digit i of the order's code. SQLite works each bound out
        # once per statement (it depends on no row), and seeks jobs_ready to it.
        levels = (f"(?{at} / {10 ** (4 - i)} % 10)" for i in range(5))
        bounded = (
            f"{where} AND priority BETWEEN {MAX_PRIORITY - 1} - 2 * {level} AND {MAX_PRIORITY} - 2 * {level}"
            for level in levels
        )
        heads = " UNION ALL ".join(f"SELECT seq FROM ({_head(each, None)})" for each in bounded)
        first = f"SELECT seq FROM ({heads}) LIMIT 1"
    return f"{_CLAIM_SET} WHERE seq = ({first}){queue_gate} RETURNING {CLAIM_COLUMNS}{returning}"


@functools.cache
def _heads(limits: _Limits | None, ntypes: int | None) -> str:
    """Each level's next claimable job the limits allow as rows (level, seq, due since),
    in one statement; params those of :func:`_claim_first`."""
    where = _where(ntypes, _gates(limits, ntypes).types)
    return " UNION ALL ".join(f"SELECT {level}, * FROM ({_head(where, level)})" for level in range(5))


@functools.cache
def _claim_seq(limits: _Limits | None, ntypes: int | None) -> str:
    """The claim of the row a choice among the heads made, if the queue's limits allow
    it; params those of :func:`_claim_first`, then its seq."""
    gates = _gates(limits, ntypes)
    return (
        f"{_CLAIM_SET} WHERE seq = ?{gates.next_param}{gates.queue}"
        f" RETURNING {CLAIM_COLUMNS}{gates.returning}"
    )


@functools.cache
def _group(rows: int) -> str:
    """The update giving ``rows`` claimed jobs their claim group (params: the group, then
    their seqs)."""
    return f"UPDATE jobs SET claim_group = ? WHERE seq IN ({', '.join(['?'] * rows)})"


@functools.cache
def _set_ring(rows: int) -> str:
    """The upsert giving ``rows`` (queue, name, slot, value) rows of ``claim_state``
    their value."""
    values = ", ".join(["(?, ?, ?, ?)"] * rows)
    return f"INSERT OR REPLACE INTO claim_state (queue, name, slot, value) VALUES {values}"


@dataclass(frozen=True, slots=True)
class PolicyPlan:
    """What a claim under ``policy`` checks and writes, worked out once when the policy
    is set (:meth:`build`), not on every claim."""

    policy: ClaimPolicy
    #: Weighted fairness; aging (a level has a ``max_wait_s``).
    fair: bool
    aging: bool
    #: The limits (None: none).
    limits: _Limits | None
    #: The rates by key (``""`` the queue's, else a job type): (limit, period).
    rates: dict[str, tuple[int, float]]
    #: The params of :func:`_gates` before a call's first claim (nothing taken yet).
    untaken: tuple[int, ...] = ()
    #: Each rated job type's ring in ``claim_state``.
    ring_names: dict[str, str] = field(default_factory=dict)
    #: The claim statements by (kind, number of job types): read per claim, so kept here
    #: rather than looked up in a cache keyed by the limits (hashed on every call).
    statements: dict[tuple[str, int | None], str] = field(default_factory=dict, compare=False)

    def sql(self, kind: str, ntypes: int | None) -> str:
        """The statement of ``kind`` (``"first"``, ``"fair"``, ``"heads"`` or ``"seq"``)
        for a claim of ``ntypes`` job types (None: any)."""
        found = self.statements.get((kind, ntypes))
        if found is None:
            limits = self.limits
            if kind == "heads":
                found = _heads(limits, ntypes)
            elif kind == "seq":
                found = _claim_seq(limits, ntypes)
            else:
                found = _claim_first(limits, ntypes, kind == "fair")
            self.statements[kind, ntypes] = found
        return found

    @classmethod
    def build(cls, policy: ClaimPolicy) -> PolicyPlan:
        def rate_of(rate: Rate | None) -> tuple[int, float] | None:
            return None if rate is None else (rate.limit, float(rate.period_s))

        types = tuple(
            (job_type, lim.max_concurrency, rate_of(lim.rate))
            for job_type, lim in sorted(policy.limits.items())
        )
        limits = _Limits(policy.max_concurrency, rate_of(policy.rate), types)
        rates = {job_type: rate for job_type, _, rate in types if rate is not None}
        if limits.rate is not None:
            rates[""] = limits.rate
        limited = limits.queue_limited or bool(types)
        return cls(
            policy=policy,
            fair=policy.fairness == "weighted",
            aging=bool(policy.bounded),
            limits=limits if limited else None,
            rates=rates,
            untaken=((0,) if limits.queue_limited else ()) + (0,) * len(types) if limited else (),
            ring_names={job_type: f"rate:{job_type}" for job_type in rates},
        )

    def params(self, taken: dict[str, int], count: int) -> tuple[Any, ...]:
        """The params of :func:`_gates`: the claims this call made (``count``), then per
        limited type the claims of it this call made (``taken``)."""
        limits = self.limits
        if limits is None or not count:
            return self.untaken
        out: list[Any] = [count] if limits.queue_limited else []
        for job_type, _, _ in limits.types:
            out.append(taken.get(job_type, 0))
        return tuple(out)


def _claim_by_heads(
    conn: sqlite3.Connection,
    plan: PolicyPlan,
    ntypes: int | None,
    params: tuple[Any, ...],
    *,
    fair: list[float],
    now: float,
) -> Sequence[Any] | None:
    """Aging: read each level's head the limits allow, let :func:`pick_level` choose,
    and claim that row if the queue's limits allow it (``fair`` served only then)."""
    seqs: list[int | None] = [None] * 5
    since: list[float | None] = [None] * 5
    for level, seq, due in conn.execute(plan.sql("heads", ntypes), params):
        seqs[level], since[level] = seq, due
    before = list(fair)
    chosen = pick_level(plan.policy, since, fair, now)
    if chosen is None:
        return None
    claim = plan.sql("seq", ntypes)
    row: Sequence[Any] | None = conn.execute(claim, (*params, seqs[chosen])).fetchone()
    if row is None:  # the queue's limits allow no claim: no level was served
        fair[:] = before
    return row


def _take_slots(
    plan: PolicyPlan,
    row: Sequence[Any],
    made: int,
    taken: dict[str, int],
    ring: dict[tuple[str, int], float],
    *,
    now: float,
) -> None:
    """Note in ``ring`` the slots the claim of ``row`` takes in its rates' rings: each
    rate's count before this call follows the row (the queue's first), plus the claims
    this call made under it before (``made`` in all, ``taken`` per type)."""
    rates, at = plan.rates, _WIDTH
    rate = rates.get("")
    if rate is not None:
        ring["rate:", ((row[at] or 0) + made) % rate[0]] = now
        at += 1
    job_type = row[JOB_TYPE]
    rate = rates.get(job_type)
    if rate is not None:
        ring[plan.ring_names[job_type], ((row[at] or 0) + taken.get(job_type, 0)) % rate[0]] = now


def _read_fair(conn: sqlite3.Connection, queue: str) -> tuple[list[float], bool]:
    """The queue's fairness state (zeros when it has none), and whether it was found in
    schema 13's rows (deleted here: the caller writes the packed row)."""
    packed: bytes | None = None
    fair = [0.0] * 6
    unpacked = False
    for job_type, value in conn.execute(_FAIR_READ, (queue,)):
        if job_type:
            fair[int(job_type)] = float(value)
            unpacked = True
        else:
            packed = value
    if unpacked:
        conn.execute(_FAIR_OLD, (queue,))
    if packed is not None:
        return list(_FAIR_STATE.unpack(packed)), unpacked
    return fair, unpacked


def policy_claim(
    conn: sqlite3.Connection,
    *,
    plan: PolicyPlan,
    queue: str,
    now: float,
    head: tuple[Any, ...],
    types: tuple[str, ...] | None,
    limit: int,
    group: int | None = None,
    fair_state: bytes | None = None,
) -> tuple[list[Sequence[Any]], list[counts.StateRow]]:
    """Claim up to ``limit`` rows as ``plan``'s policy chooses, inside the caller's write
    transaction; ``head`` is what the claim sets (worker_id, started_at, lease_until,
    lease_mono), and ``group`` the claim group of a batch claim (set when it takes more
    than one job: the rows are claimed one by one, then grouped). ``fair_state``: the
    packed fairness state when the caller read it (:data:`DUE_AND_FAIR`). Returns the claimed
    rows (``CLAIM_COLUMNS``) and the ``job_counts`` rows of the policy state they
    changed (virtual times to set, rate counts to add), which the caller writes with
    the claims' counts, in the same transaction.

    Under fairness, a read of the virtual times first unless the caller passed them;
    then one statement per claim (with aging two: the level heads, then the claim);
    after the last, the ring slots the claims took, in one upsert."""
    policy = plan.policy
    ntypes = None if types is None else len(types)
    row: Sequence[Any] | None
    fair: list[float] = []
    unpacked = False
    if plan.fair:
        if fair_state is None:
            fair, unpacked = _read_fair(conn, queue)
        else:
            fair = list(_FAIR_STATE.unpack(fair_state))
    was = list(fair)
    where = (*head, queue, now, *types) if types else (*head, queue, now)
    aging, weighted, rates = plan.aging, plan.fair, plan.rates
    sql = plan.sql("fair" if weighted else "first", ntypes)
    taken: dict[str, int] = {}
    ring: dict[tuple[str, int], float] = {}
    out: list[Sequence[Any]] = []
    made = 0
    while made < limit:
        params = where + plan.params(taken, made)
        if aging:
            row = _claim_by_heads(conn, plan, ntypes, params, fair=fair, now=now)
        elif weighted:
            row = conn.execute(sql, (*params, order_code(fair_order(fair)))).fetchone()
            if row is not None:
                serve(policy, fair, level_index(row[PRIORITY]))
        else:
            row = conn.execute(sql, params).fetchone()
        if row is None:
            break
        if rates:
            _take_slots(plan, row, made, taken, ring, now=now)
            row = row[:_WIDTH]
        out.append(row)
        job_type = row[JOB_TYPE]
        taken[job_type] = taken.get(job_type, 0) + 1
        made += 1
    if group is not None and made > 1:
        conn.execute(_group(made), (group, *(row[SEQ] for row in out)))
    if ring:
        values: list[Any] = []
        for (name, slot), value in ring.items():
            values += (queue, name, slot, value)
        conn.execute(_set_ring(len(ring)), values)
    state: list[counts.StateRow] = []
    if fair != was or unpacked:
        # A bytearray: sqlite3 binds it directly (bytes go through its adapters first).
        state.append((queue, "", FAIR, bytearray(_FAIR_STATE.pack(*fair))))
    for key in rates:
        claims = made if key == "" else taken.get(key, 0)
        if claims:
            state.append((queue, key, RATE, claims))
    return out, state
