"""A3 (RELIABILITY.md §4b): kill -9 a producer process during ``enqueue_many(1000)``, 20
times, on SQLite and on Redis.

Each kill falls at a uniformly random moment of the call (its duration is measured
first). After each kill every batch is all there or not at all (so the job count has
risen by 0 or 1000, or more where a batch appeared late, see below), a batch whose call
returned is there, a batch once seen stays, every dependency edge joins two stored jobs
and the edges agree with the blocked counters, and the store is consistent (SQLite:
``PRAGMA integrity_check``; Redis: the PENDING index holds exactly the stored jobs).
Afterwards the queue works: a claim walks a chain that crossed the kills. Victims are
processes from a fork server (:func:`tests.reliability.victims.victim_context`) that
report readiness and the start of each call over a pipe
(:func:`tests.reliability._batch_procs.batch_producer`).

A batch not there right after its kill may still appear, whole, at a later check (seen
on SQLite): when the kill falls after SQLite wrote the transaction's frames (with the
commit mark) to the WAL file and before it updated the shared WAL index, readers go on
without it, and SQLite's WAL recovery (run by the next connection to open the file once
every process that had it open is gone) finds the committed frames and makes the
transaction visible. If another transaction commits first, it overwrites those frames
and the batch is gone for good. Either way the call's outcome was unknown (it never
returned) and the batch is whole; the check allows it for batches whose call never
returned, and counts them. On Redis a script runs whole once the server has read the
command, and a command cut off by the kill is dropped with the connection.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from tests.reliability._batch_procs import BATCH, QUEUE, batch_jobs, batch_producer
from tests.reliability.conftest import MakeServer
from tests.reliability.victims import Victim, victim_context

from typedq.backends import open_queue
from typedq.backends._redis_keys import base_key
from typedq.backends._sqlite_driver import sqlite3

KILLS = 20
#: Victims that run their batch to the end first, to measure one call's duration.
CALIBRATION = 3
#: Victims started at once (each waits for its turn, so none competes for the CPU
#: with the one being killed).
WAVE = 5
#: The Redis store's key prefix.
PREFIX = "a3"


@dataclass(frozen=True)
class Store:
    """The backend under test: its URL and how to read what it holds (:func:`_sqlite_counts`)."""

    url: str
    counts: Callable[[], dict[str, int]]


def _sqlite_counts(db: Path) -> dict[str, int]:
    """Jobs per batch prefix (``batch b7`` → n), edges, dangling edges, blocked counter
    sum, and whether the store is consistent (``integrity ok``)."""
    conn = sqlite3.connect(db)
    try:
        per_batch = dict(
            conn.execute(
                "SELECT substr(job_id, 1, instr(job_id, '-') - 1), count(*) FROM jobs"
                " WHERE queue = ? GROUP BY 1",
                (QUEUE,),
            ).fetchall()
        )
        edges = conn.execute("SELECT count(*) FROM job_deps WHERE queue = ?", (QUEUE,)).fetchone()[0]
        dangling = conn.execute(
            "SELECT count(*) FROM job_deps d WHERE d.queue = ? AND ("
            " NOT EXISTS (SELECT 1 FROM jobs j WHERE j.queue = d.queue AND j.job_id = d.parent)"
            " OR NOT EXISTS (SELECT 1 FROM jobs j WHERE j.queue = d.queue AND j.job_id = d.child))",
            (QUEUE,),
        ).fetchone()[0]
        blocked = conn.execute(
            "SELECT ifnull(sum(blocked_by), 0) FROM jobs WHERE queue = ?", (QUEUE,)
        ).fetchone()[0]
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    return {
        **{f"batch {k}": v for k, v in per_batch.items()},
        "total": sum(per_batch.values()),
        "edges": edges,
        "dangling": dangling,
        "blocked": blocked,
        "integrity ok": int(integrity == "ok"),
    }


#: What ``_redis_counts`` reads, in one script on the server (ARGV[1]: the queue's base
#: key; a private server, not a Cluster): the PENDING index's job ids, the blocked counters'
#: sum, the dependency edges, the edges with a side that is no stored job, the indexed
#: ids without a hash, and the job hashes under the base key.
_READ: Final = r"""
local base = ARGV[1]
local ids = redis.call('ZRANGE', base .. ':st:PENDING', 0, -1)
local indexed = {}
local blocked, missing = 0, 0
for _, id in ipairs(ids) do
  indexed[id] = true
  local k = base .. ':j:' .. id
  if redis.call('EXISTS', k) == 0 then missing = missing + 1 end
  blocked = blocked + (tonumber(redis.call('HGET', k, 'bb')) or 0)
end
local function each(pattern, f)
  local cursor = '0'
  repeat
    local page = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 5000)
    cursor = page[1]
    for _, key in ipairs(page[2]) do f(key) end
  until cursor == '0'
end
local edges, dangling, hashes = 0, 0, 0
local dependents = base .. ':dependents:'
each(dependents .. '*', function(key)
  local parent = string.sub(key, #dependents + 1)
  for _, child in ipairs(redis.call('SMEMBERS', key)) do
    edges = edges + 1
    if not indexed[parent] or not indexed[child] then dangling = dangling + 1 end
  end
end)
each(base .. ':j:*', function() hashes = hashes + 1 end)
return {ids, blocked, edges, dangling, missing, hashes}
"""


def _redis_counts(client: Any) -> dict[str, int]:
    """What :func:`_sqlite_counts` reads, from the queue's keys (:data:`_READ`): job
    hashes ``B:j:<id>``, dependency sets ``B:dependents:<parent>`` and blocked counters
    (field ``bb``); the store is consistent when the PENDING index holds exactly the
    stored jobs (every job is PENDING here)."""
    try:
        ids, blocked, edges, dangling, missing, hashes = client.eval(_READ, 0, base_key(PREFIX, QUEUE))
    finally:
        client.close()
    per_batch = Counter(job_id.decode().split("-", 1)[0] for job_id in ids)
    return {
        **{f"batch {k}": v for k, v in per_batch.items()},
        "total": len(ids),
        "edges": edges,
        "dangling": dangling,
        "blocked": blocked,
        "integrity ok": int(missing == 0 and hashes == len(ids)),
    }


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis_server_bin)])
def store(request: pytest.FixtureRequest, tmp_path: Path, redis_servers: MakeServer) -> Iterator[Store]:
    """The store: a SQLite file, or a private ``redis-server`` (the checks' script holds
    the server for a moment, which no other test should feel)."""
    if request.param == "sqlite":
        db = tmp_path / "a3.db"
        open_queue(f"sqlite:///{db}", name=QUEUE).close()
        yield Store(f"sqlite:///{db}", lambda: _sqlite_counts(db))
        return
    server = redis_servers()
    yield Store(server.url(prefix=PREFIX), lambda: _redis_counts(server.client()))


def _edges_of(batches: int) -> int:
    """Dependency edges of ``batches`` committed batches, all anchored but the first."""
    jobs = batch_jobs(1, "b0-0000")
    return batches * sum(len(j.depends_on) for j in jobs) - 1 if batches else 0


@pytest.mark.chaos
@pytest.mark.timeout(120)
def test_a3_kill_9_during_enqueue_many_leaves_all_or_nothing(store: Store) -> None:
    context = victim_context()
    rng = random.Random(3)
    victims: list[Victim] = []
    committed: set[int] = set()  # batches seen in the store (once seen, they must stay)
    unacknowledged: set[int] = set()  # killed before enqueue_many returned
    outcomes = {"none": 0, "all": 0, "late": 0}
    try:
        # Measure: fresh victims (each killed one runs its first call too) run a batch to
        # the end; the kills are spread over the median duration.
        calibration = [Victim(context, store.url, batch_producer) for _ in range(CALIBRATION)]
        victims.extend(calibration)
        durations = []
        for batch, victim in enumerate(calibration):
            assert victim.receive()[0] == "ready"
            victim.conn.send((batch, None if batch == 0 else "b0-0000"))
            assert victim.receive() == ("begin", batch)
            began = time.perf_counter()
            assert victim.receive() == ("done", batch)
            durations.append(time.perf_counter() - began)
            committed.add(batch)
            victim.conn.send(None)
            victim.proc.join(30)
            assert victim.proc.exitcode == 0
        duration = statistics.median(durations)

        batch = CALIBRATION
        for wave_start in range(0, KILLS, WAVE):
            wave = [Victim(context, store.url, batch_producer) for _ in range(min(WAVE, KILLS - wave_start))]
            victims.extend(wave)
            for victim in wave:
                assert victim.receive()[0] == "ready"
            for victim in wave:
                victim.conn.send((batch, "b0-0000"))
                assert victim.receive() == ("begin", batch)
                time.sleep(rng.uniform(0.0, duration))  # the kill's moment, not a synchronisation
                victim.kill()
                acknowledged = victim.acknowledged(batch)
                if not acknowledged:
                    unacknowledged.add(batch)

                counts = store.counts()
                present = {
                    int(key.removeprefix("batch b")): n
                    for key, n in counts.items()
                    if key.startswith("batch b")
                }
                partial = {b: n for b, n in present.items() if n != BATCH}
                assert not partial, f"kill {batch}: a partial batch (batch: jobs) {partial}"
                assert committed <= present.keys(), f"kill {batch}: batches gone {committed - present.keys()}"
                appeared = present.keys() - committed
                if acknowledged:
                    assert batch in appeared, f"kill {batch}: enqueue_many returned, jobs missing"
                # Only a batch whose call never returned may appear late (see the module).
                late = appeared - {batch}
                assert late <= unacknowledged, f"kill {batch}: batches from nowhere {late}"
                committed |= appeared
                outcomes["all" if batch in appeared else "none"] += 1
                outcomes["late"] += len(late)
                assert counts["dangling"] == 0, f"kill {batch}: orphan dependency edges"
                assert counts["edges"] == counts["blocked"] == _edges_of(len(committed)), counts
                assert counts["integrity ok"] == 1, f"kill {batch}: the store is inconsistent"
                batch += 1
    finally:
        for victim in victims:
            victim.end()
    assert outcomes["all"] + outcomes["none"] == KILLS
    # The queue is usable after the kills: a claim walks a chain that crossed them.
    queue = open_queue(store.url, name=QUEUE)
    try:
        assert queue.size == BATCH * len(committed)
        heads = BATCH // 10 * len(committed)  # every 10th job of a batch starts a chain
        anchored = len(committed) - 1  # and waits for b0-0000 when not in batch 0
        assert queue.ready_count() == heads - anchored
        claim = queue.claim("after-a3", lease_s=60)
        assert claim is not None
        assert claim.job.job_id == "b0-0000"
        queue.complete("b0-0000", token=claim.token)
        # b0-0000 done: b0-0001 and the anchored heads are released.
        assert queue.ready_count() == heads
    finally:
        queue.close()
