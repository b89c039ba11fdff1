"""The rescuer's stale-snapshot race, in randomized trials (RELIABILITY.md C2, river#1302).

A reaper selects the leases that lapsed, then gives them back; between the two its
snapshot may go stale: the owner completes, fails, buries or renews the job, or another
reaper rescues it and another worker claims it again. Each rescue must be a
compare-and-set on what the reaper judged (RUNNING, same attempt, same lease deadline),
so it rewrites none of these. The deterministic case per outcome is
``test_c2_the_rescue_is_a_compare_and_set`` (tests/backends/test_sqlite_processes.py)
and the conformance lease tests; here:

* SQLite holds the window open: :class:`PausingQueue` runs the owners' moves after its
  ``_expired`` selected the rows and before the write transaction that rescues them.
  Each trial is a random mix (batch or single claims, live or remote owners, lease
  lengths, clock moves and wall-clock steps back, one move per selected job, sometimes a
  rival reaper and a re-claim, even one whose lease ends exactly at the stale deadline);
  1,000 trials in the fast tier, 100,000 in the slow one. Trial ``n`` of seed ``s`` is
  rebuilt from ``random.Random(f"{s}:{n}")`` alone: every failure names both.
* Every backend (memory, SQLite, Redis): owner threads complete, fail, bury, renew or
  abandon their claims while a reaper thread rescues whatever lapsed, the FakeClock moved
  by the owners (on SQLite the reaper holds its window open for one owner call); the
  ledger of what each call answered must explain every job's end: each attempt ended
  exactly once, by its owner or by one rescue.

On memory (one lock) and Redis (one Lua script) the selection and the rescue are one
step, so only the threaded test applies to them.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.conformance.conftest import redis_test_url

from typedq._identity import new_worker_id
from typedq.backends.base import Claim, Completion, Queue
from typedq.backends.memory import JobQueue
from typedq.backends.sqlite import SQLiteQueue
from typedq.clock import FakeClock
from typedq.errors import StaleLeaseError
from typedq.job import Job, JobStatus

#: The seed of the randomized trials; trial ``n`` uses ``random.Random(f"{SEED}:{n}")``.
SEED = 1302

#: One lapsed lease as ``SQLiteQueue._expired`` selects it:
#: ``(seq, job_id, attempt, lease_until, lease_mono, in_batch)``.
Selected = tuple[int, str, int, float, float | None, bool]

#: Durations are multiples of 1/64 s, so wall-clock sums near 1.8e9 are exact and a lease
#: can be made to end exactly at another's deadline.
TICK = 1 / 64

#: Owners of another host: judged by the wall clock alone.
REMOTE = "c2-remote-worker"
#: An owner of this process: alive, so judged by the monotonic clock as well.
LIVE = new_worker_id("c2-live")
RIVAL = "c2-rival-worker"


class PausingQueue(SQLiteQueue):
    """A SQLiteQueue whose reaper calls ``between(selected)`` after it selected the lapsed
    leases and before it rescues them: the stale-snapshot window, held open."""

    between: Callable[[list[Selected]], None] | None = None
    selected: list[Selected]

    def _expired(
        self, now: float, mono_now: float, limit: int, owner_alive: Callable[[str | None], bool | None]
    ) -> list[Selected]:
        chosen = super()._expired(now, mono_now, limit, owner_alive)
        self.selected = list(chosen)
        if self.between is not None:
            self.between(list(chosen))
        return chosen


# -- SQLite: the window forced ----------------------------------------------------------------


@dataclass
class Expect:
    """One job of a trial: how its owner holds it and the state it must end the trial in."""

    job_id: str
    job_type: str
    token: int
    lease_until: float
    worker: str
    lost: int
    retries: int = 0
    status: JobStatus = JobStatus.RUNNING
    result: str | None = None
    error: str | None = None
    #: When a failed job is due again (``fail``'s ``retry_at``).
    due: float | None = None
    move: str = "none"


@dataclass
class Tally:
    """What the trials exercised, so a run that raced nothing fails."""

    moves: Counter[str] = field(default_factory=Counter)
    rescued: int = 0
    same_deadline: int = 0


class Trials:
    """The three handles of the trials on one file, the running status counts, the tally."""

    def __init__(self, path: Path, clock: FakeClock) -> None:
        self.clock = clock
        self.reaper = PausingQueue(path, name="c2", clock=clock)
        self.rival = PausingQueue(path, name="c2", clock=clock)
        self.owner = SQLiteQueue(path, name="c2", clock=clock)
        self.counts: Counter[JobStatus] = Counter()
        self.tally = Tally()

    def close(self) -> None:
        for q in (self.reaper, self.rival, self.owner):
            q.close()

    def run(self, seed: int, trial: int) -> None:
        """One trial: claim, let leases lapse, race a reaper pass, check, then end every
        job of the trial (so the next starts on an idle queue)."""
        rng = random.Random(f"{seed}:{trial}")
        where = f"seed {seed}, trial {trial}"
        clock = self.clock
        max_lost = rng.randint(1, 3)
        n = rng.randint(1, 4)
        jobs = [
            Job(job_type=f"t{k}", job_id=f"c2-{trial}-{k}", lost_count=rng.choice((0, 0, 1, 2)))
            for k in range(n)
        ]
        self.owner.enqueue_many(jobs)
        lost_before = {j.job_id: j.lost_count for j in jobs}
        held: dict[str, Expect] = {}
        if n > 1 and rng.random() < 0.5:
            worker = rng.choice((REMOTE, LIVE))
            lease = rng.randint(1, 256) * TICK
            for c in self.owner.claim_many(worker, lease_s=lease, limit=n):
                held[c.job.job_id] = Expect(
                    c.job.job_id, c.job.job_type, c.token, c.lease_until, worker, lost_before[c.job.job_id]
                )
        else:
            for _ in range(n):
                worker = rng.choice((REMOTE, LIVE))
                one = self.owner.claim(worker, lease_s=rng.randint(1, 256) * TICK)
                assert one is not None, where
                held[one.job.job_id] = Expect(
                    one.job.job_id,
                    one.job.job_type,
                    one.token,
                    one.lease_until,
                    worker,
                    lost_before[one.job.job_id],
                )
                clock.advance(rng.choice((0, TICK)))
        assert len(held) == n, where
        clock.advance(rng.randint(0, 3 * 256) * TICK)
        step_back = rng.randint(1, 256) * TICK if rng.random() < 0.2 else 0.0
        clock.jump_wall(-step_back)  # a wall clock stepped back: live owners judged by monotonic time
        rival_pass = rng.random() < 0.3
        rival_rescued: list[str] = []

        def race(selected: list[Selected]) -> None:
            """The owners' moves, made inside the reaper's window."""
            for _, job_id, *_ in selected:
                e = held[job_id]
                e.move = rng.choice(("none", "none", "complete", "fail", "bury", "extend"))
                self._move(e, rng)
            if rival_pass:
                rival_rescued.extend(self.rival.reclaim_expired(max_lost=max_lost))
                self._after_rival(held, selected, rng, max_lost)

        self.reaper.between = race
        try:
            got = self.reaper.reclaim_expired(max_lost=max_lost)
        finally:
            self.reaper.between = None
        clock.jump_wall(step_back)
        judged = {s[1]: s for s in self.reaper.selected}
        expected_rescues = []
        for job_id, (_, _, _, _, _, in_batch) in judged.items():
            e = held[job_id]
            if e.move == "none" and not rival_pass:
                expected_rescues.append(job_id)
                self._rescued(e, in_batch, max_lost)
        assert sorted(got) == sorted(expected_rescues), f"{where}: rescued {got}, moves {held}"
        if rival_pass:
            assert sorted(rival_rescued) == sorted(s[1] for s in self.rival.selected), where
        self.tally.rescued += len(got)
        self._check(held, where)
        self._finish(held, where)

    def _move(self, e: Expect, rng: random.Random) -> None:
        """The owner's move on a job the reaper selected."""
        self.tally.moves[e.move] += 1
        owner, now = self.owner, self.clock.now()
        if e.move == "complete":
            e.result = f"done {e.job_id}"
            owner.complete(e.job_id, token=e.token, result=e.result)
            e.status = JobStatus.COMPLETED
        elif e.move == "fail":
            e.error = f"failed {e.job_id}"
            e.due = now + rng.choice((0.0, 5.0))
            owner.fail(e.job_id, token=e.token, error=e.error, retry_at=e.due)
            e.status, e.retries = JobStatus.PENDING, e.retries + 1
        elif e.move == "bury":
            e.error = f"buried {e.job_id}"
            owner.bury(e.job_id, token=e.token, error=e.error)
            e.status = JobStatus.DEAD
        elif e.move == "extend":
            e.lease_until = owner.extend_lease(e.job_id, token=e.token, lease_s=rng.randint(1, 256) * TICK)

    def _after_rival(
        self, held: dict[str, Expect], selected: list[Selected], rng: random.Random, max_lost: int
    ) -> None:
        """The rival reaper rescued what was left; another worker claims some jobs again,
        sometimes with a lease ending exactly at the deadline the stale reaper judged."""
        judged = {s[1]: s[3] for s in selected}
        for _, job_id, _, _, _, in_batch in self.rival.selected:
            held[job_id].move = "rival"
            self.tally.moves["rival"] += 1
            self._rescued(held[job_id], in_batch, max_lost)
        for e in held.values():
            now = self.clock.now()
            if e.status is not JobStatus.PENDING or (e.due or now) > now or rng.random() < 0.3:
                continue
            deadline = judged.get(e.job_id)
            lease = rng.randint(1, 64) * TICK
            if deadline is not None and (e.due or 0.0) <= deadline - lease and rng.random() < 0.5:
                # A wall clock stepped back so far that the new lease ends where the stale one did.
                back = now - (deadline - lease)
                self.clock.jump_wall(-back)
                got = self.rival.claim(RIVAL, lease_s=lease, job_types=[e.job_type])
                self.clock.jump_wall(back)
                assert got is not None
                assert got.lease_until == deadline
                self.tally.same_deadline += 1
            else:
                got = self.rival.claim(RIVAL, lease_s=rng.randint(1, 256) * TICK, job_types=[e.job_type])
                assert got is not None
            assert got.job.job_id == e.job_id
            e.status, e.token, e.lease_until, e.worker = JobStatus.RUNNING, got.token, got.lease_until, RIVAL
            e.move += "+reclaimed"
            self.tally.moves["reclaimed"] += 1

    @staticmethod
    def _rescued(e: Expect, in_batch: bool, max_lost: int) -> None:
        """The state a rescue puts a job in (no cancellation is requested here)."""
        e.lost += 0 if in_batch else 1
        e.status = JobStatus.DEAD if not in_batch and e.lost >= max_lost else JobStatus.PENDING
        e.error = f"worker lost {e.lost}×" if e.status is JobStatus.DEAD else None

    def _check(self, held: dict[str, Expect], where: str) -> None:
        for e in held.values():
            job = self.owner.get_job(e.job_id)
            what = f"{where}: {e} but the job is {job}"
            assert (job.status, job.attempt, job.lost_count, job.retry_count) == (
                e.status,
                e.token,
                e.lost,
                e.retries,
            ), what
            if e.status is JobStatus.COMPLETED:
                assert job.result == e.result, what
            if e.status is JobStatus.DEAD:
                assert job.error == e.error, what
            if e.status is JobStatus.RUNNING:
                assert (job.lease_until, job.worker_id) == (e.lease_until, e.worker), what
        now = Counter(self.counts)
        now.update(e.status for e in held.values())
        counts = self.owner.count_by_status()
        assert {s: c for s, c in counts.items() if c} == {s: c for s, c in now.items() if c}, where

    def _finish(self, held: dict[str, Expect], where: str) -> None:
        """End the trial's jobs: a RUNNING one completed by whoever holds it now (its token
        must still be good), a PENDING one cancelled."""
        running = [e for e in held.values() if e.status is JobStatus.RUNNING]
        if running:
            done = self.owner.complete_many([Completion(e.job_id, e.token, "finished") for e in running])
            assert all(isinstance(d, Job) for d in done), f"{where}: {done}"
        for e in held.values():
            if e.status is JobStatus.PENDING:
                assert self.owner.cancel(e.job_id), where
        self.counts.update(
            JobStatus.COMPLETED
            if e.status is JobStatus.RUNNING
            else JobStatus.CANCELLED
            if e.status is JobStatus.PENDING
            else e.status
            for e in held.values()
        )


def _run_trials(tmp_path: Path, clock: FakeClock, trials: int) -> Tally:
    runner = Trials(tmp_path / "c2.db", clock)
    try:
        for trial in range(trials):
            runner.run(SEED, trial)
        listed = Counter(j.status for j in runner.owner.list_jobs(limit=10 * trials + 10))
        assert listed == +runner.counts
        return runner.tally
    finally:
        runner.close()


def _exercised(tally: Tally, trials: int) -> None:
    """Every outcome was raced often enough for the trials to mean something."""
    for move in ("none", "complete", "fail", "bury", "extend", "rival", "reclaimed"):
        assert tally.moves[move] >= trials // 50, tally
    assert tally.rescued >= trials // 10, tally
    assert tally.same_deadline >= trials // 100, tally


def test_c2_stale_snapshot_1000_randomized_trials(tmp_path: Path, clock: FakeClock) -> None:
    """0 completed, failed, buried, renewed or re-claimed jobs rewritten by a stale rescue."""
    _exercised(_run_trials(tmp_path, clock, 1_000), 1_000)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_c2_stale_snapshot_100k_randomized_trials(tmp_path: Path, clock: FakeClock) -> None:
    _exercised(_run_trials(tmp_path, clock, 100_000), 100_000)


# -- every backend: owner threads against a reaper thread ------------------------------------

#: A claim's lease; the owners move the FakeClock by about this much between their calls.
SHORT = 1.0
#: A renewed lease: longer than any run moves the clock, so it must never be rescued.
LONG = 1e6
MAX_LOST = 4
OWNERS = 4
#: What an owner does with a claim: finish it, renew it then finish it, finish or renew
#: it after its lease lapsed (racing the reaper), or walk away from it.
PLANS = (
    *("complete", "complete", "fail", "bury", "renew", "renew"),
    *("late", "late", "late-renew", "late-renew", "abandon", "abandon"),
)
#: Jobs per backend, for about a second each.
JOBS = {"memory": 600, "sqlite": 200, "redis": 250}


@dataclass(frozen=True)
class Call:
    """One owner call as it answered: ``ok`` False when it raised StaleLeaseError."""

    job_id: str
    token: int
    op: str
    ok: bool
    detail: str | None = None


@dataclass
class Store:
    """The store of the threaded test: ``open()`` is one more handle on it (on memory the
    queue itself); ``open_reaper()`` is the reaper's, which on SQLite holds its window
    open for one step of the owners (:class:`PausingQueue`)."""

    name: str
    open: Callable[[], Queue]
    open_reaper: Callable[[], Queue]


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    """A memory queue, a SQLite file or a Redis prefix of the test's own; every handle
    is closed at teardown (and the Redis keys deleted)."""
    name: str = request.param
    made: list[Queue] = []

    def keep(q: Queue) -> Queue:
        made.append(q)
        return q

    def close_all() -> None:
        for q in made:
            q.close()
        made.clear()

    try:
        if name == "memory":
            shared = keep(JobQueue("c2", clock=clock))
            yield Store(name, lambda: shared, lambda: shared)
        elif name == "sqlite":
            path = tmp_path / "c2.db"
            yield Store(
                name,
                lambda: keep(SQLiteQueue(path, name="c2", clock=clock)),
                lambda: keep(PausingQueue(path, name="c2", clock=clock)),
            )
        else:
            from typedq.backends.redis import RedisQueue

            with redis_test_url() as url:

                def open_redis() -> Queue:
                    return keep(RedisQueue(url, name="c2", clock=clock))

                try:
                    yield Store(name, open_redis, open_redis)
                finally:
                    close_all()
    finally:
        close_all()



class Race:
    """Both sides' progress under one lock, the reaper's passes and the owners' steps, so
    each side can wait for the other and never both at once."""

    def __init__(self, owners: int) -> None:
        self._cond = threading.Condition()
        self._owners = owners
        self.passes = 0
        self._steps = 0
        self._waiting = 0  # owners waiting for passes
        self._stopped = False

    def _bump(self, passes: int = 0, steps: int = 0) -> None:
        with self._cond:
            self.passes += passes
            self._steps += steps
            self._cond.notify_all()

    def passed(self) -> None:
        self._bump(passes=1)

    def stepped(self) -> None:
        self._bump(steps=1)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def wait_passes(self, more: int) -> None:
        """An owner waits until the reaper made ``more`` passes (or the race stopped)."""
        with self._cond:
            target = self.passes + more
            self._waiting += 1
            self._cond.notify_all()
            try:
                assert self._cond.wait_for(lambda: self.passes >= target or self._stopped, timeout=30)
            finally:
                self._waiting -= 1

    def wait_step(self) -> None:
        """The reaper waits for one owner step, unless every owner waits for it."""
        with self._cond:
            target = self._steps + 1
            assert self._cond.wait_for(
                lambda: self._steps >= target or self._waiting == self._owners or self._stopped, timeout=30
            )


def _play(
    q: Queue,
    clock: FakeClock,
    claim: Claim,
    *,
    plan: str,
    calls: list[Call],
    rng: random.Random,
    race: Race,
) -> None:
    """One owner's plan for one claim, each call written to ``calls`` as it answered."""
    job_id, token = claim.job.job_id, claim.token
    result = f"{job_id}@{token}"

    def call(op: str, fn: Callable[[], object], detail: str | None = None) -> bool:
        try:
            fn()
        except StaleLeaseError:
            calls.append(Call(job_id, token, op, False, detail))
            return False
        finally:
            race.stepped()
        calls.append(Call(job_id, token, op, True, detail))
        return True

    def renew_then_complete() -> None:
        if call("extend", lambda: q.extend_lease(job_id, token=token, lease_s=LONG)):
            clock.advance(rng.uniform(0, 2 * SHORT))
            complete()  # a renewed attempt is fresh: no reaper may take it (checked later)
            calls.append(Call(job_id, token, "renewed", True))

    def complete() -> bool:
        return call("complete", lambda: q.complete(job_id, token=token, result=result), result)

    if plan == "complete":
        complete()
    elif plan == "fail":
        call("fail", lambda: q.fail(job_id, token=token, error="failed", retry_at=clock.now()))
    elif plan == "bury":
        error = f"buried@{token}"
        call("bury", lambda: q.bury(job_id, token=token, error=error), error)
    elif plan == "renew":
        renew_then_complete()
    elif plan in ("late", "late-renew"):
        clock.advance(SHORT * rng.uniform(1, 2))
        # Now, or once the reaper may have taken the job (2 passes: one begun after the move).
        race.wait_passes(rng.choice((0, 0, 1, 2)))
        if plan == "late":
            complete()
        else:
            renew_then_complete()


def _drain(queue: Queue, clock: FakeClock, rescues: Counter[str]) -> list[Call]:
    """End what the threads left (a lease abandoned as the run ended): rescue and complete
    until nothing is left to take; return the calls, as an owner's."""
    calls: list[Call] = []
    while True:
        clock.advance(2 * SHORT)
        rescued = queue.reclaim_expired(max_lost=MAX_LOST)
        rescues.update(rescued)
        claim = queue.claim("drain", lease_s=SHORT)
        if claim is None and not rescued:
            return calls
        if claim is not None:
            job_id, token = claim.job.job_id, claim.token
            result = f"{job_id}@{token}"
            queue.complete(job_id, token=token, result=result)
            calls += [Call(job_id, token, "claim", True), Call(job_id, token, "complete", True, result)]


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("switch_threads_often")
def test_c2_owners_race_a_reaper_thread(store: Store, clock: FakeClock) -> None:
    """Every attempt ends once: by its owner's complete, fail or bury, or by one rescue.

    So no completed, failed or buried job is rewritten by a rescue, no renewed attempt
    is taken, ``lost_count`` grows only with rescues, and the counts agree with the jobs.
    """
    name, open_handle = store.name, store.open
    total = JOBS[name]
    queue = open_handle()
    ids = queue.enqueue_many([Job(job_type="t", job_id=f"r-{i}") for i in range(total)])
    done = threading.Event()
    give_up = time.monotonic() + 60
    ledgers: list[list[Call]] = [[] for _ in range(OWNERS)]
    rescues: Counter[str] = Counter()
    race = Race(OWNERS)
    passes_at_claim = [0]  # the reaper's pass count when a claim last took something
    errors: list[BaseException] = []

    def finish() -> None:
        done.set()
        race.stop()

    def owner(index: int) -> None:
        rng = random.Random(f"{SEED}:{name}:owner:{index}")
        q, calls, worker = open_handle(), ledgers[index], f"owner-{index}"
        while not done.is_set():
            assert time.monotonic() < give_up, "the owners made no progress for 60 s"
            limit = rng.choice((1, 1, 2, 3))
            if limit == 1:
                one = q.claim(worker, lease_s=SHORT)
                claims = [] if one is None else [one]
            else:
                claims = q.claim_many(worker, lease_s=SHORT, limit=limit)
            race.stepped()
            if not claims:
                counts = q.count_by_status()
                ended = counts[JobStatus.COMPLETED] + counts[JobStatus.DEAD]
                # Done when every job ended, or when nothing was claimed during 20 reaper
                # passes (what is left is drained below, and the checks tell why).
                if ended == total or race.passes - passes_at_claim[0] > 20:
                    finish()
                clock.advance(SHORT / 4)
                continue
            passes_at_claim[0] = race.passes
            op = "claim" if len(claims) == 1 else "claim-batch"
            for c in claims:
                calls.append(Call(c.job.job_id, c.token, op, True))
            for c in claims:
                _play(q, clock, c, plan=rng.choice(PLANS), calls=calls, rng=rng, race=race)

    def reaper() -> None:
        q = store.open_reaper()
        if isinstance(q, PausingQueue):
            q.between = lambda _: race.wait_step()
        while not done.is_set():
            rescues.update(q.reclaim_expired(max_lost=MAX_LOST))
            race.passed()

    def guarded(target: Callable[..., None], *args: Any) -> Callable[[], None]:
        def body() -> None:
            try:
                target(*args)
            except BaseException as exc:  # reported by the test, not lost in the thread
                errors.append(exc)
                finish()

        return body

    threads = [threading.Thread(target=guarded(owner, i)) for i in range(OWNERS)]
    threads.append(threading.Thread(target=guarded(reaper)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not [t for t in threads if t.is_alive()], "threads still running after 90 s"
    assert errors == []
    ledgers.append(_drain(queue, clock, rescues))

    calls: dict[str, list[Call]] = {job_id: [] for job_id in ids}
    for ledger in ledgers:
        for call in ledger:
            calls[call.job_id].append(call)
    statuses: Counter[JobStatus] = Counter()
    for job_id in ids:
        job, mine = queue.get_job(job_id), calls[job_id]
        what = f"{job_id}: {job} after {mine}, rescued {rescues[job_id]}×"
        statuses[job.status] += 1
        ended = {op: [c for c in mine if c.op == op and c.ok] for op in ("complete", "fail", "bury")}
        tokens = sorted(c.token for c in mine if c.op.startswith("claim"))
        assert tokens == list(range(1, job.attempt + 1)), what
        # Each attempt ended exactly once: a rescue of a finished attempt counts twice.
        assert job.attempt == sum(map(len, ended.values())) + rescues[job_id], what
        assert job.retry_count == len(ended["fail"]), what
        renewed = {c.token for c in mine if c.op == "renewed"}
        assert renewed <= {c.token for c in ended["complete"]}, what
        if any(c.op == "claim-batch" for c in mine):
            assert job.lost_count <= rescues[job_id], what
        else:
            assert job.lost_count == rescues[job_id], what
        if job.status is JobStatus.COMPLETED:
            [completed] = ended["complete"]
            assert (job.result, job.attempt, ended["bury"]) == (completed.detail, completed.token, []), what
        else:
            assert job.status is JobStatus.DEAD, what
            assert ended["complete"] == [], what
            if ended["bury"]:
                [buried] = ended["bury"]
                assert (job.error, job.attempt) == (buried.detail, buried.token), what
            else:
                assert (job.error, job.lost_count) == (f"worker lost {MAX_LOST}×", MAX_LOST), what
    assert {s: c for s, c in queue.count_by_status().items() if c} == dict(statuses)
    every = [c for ledger in ledgers for c in ledger]
    # The run raced something: owners lost leases, the reaper rescued, renewals held.
    assert any(not c.ok for c in every), "no owner call was refused"
    assert sum(rescues.values()) >= total // 10, rescues
    assert sum(c.op == "renewed" for c in every) >= total // 20


def test_c2_a_renewal_to_the_judged_wall_deadline_is_not_rescued(tmp_path: Path, clock: FakeClock) -> None:
    """Trial 13776 of the 100k run, reduced: a live owner's lease lapsed by the monotonic
    clock (the wall clock was stepped back), the reaper selects it, and the owner renews
    it in the window with a lease that ends at the same wall-clock deadline."""
    path = tmp_path / "c2.db"
    reaper = PausingQueue(path, name="c2", clock=clock)
    owner = SQLiteQueue(path, name="c2", clock=clock)
    try:
        owner.enqueue(Job(job_type="t", job_id="renewed"))
        claim = owner.claim(LIVE, lease_s=10.0)
        assert claim is not None
        clock.advance(11.0)  # both clocks past the lease
        clock.jump_wall(-5.0)  # the wall clock stepped back: lapsed by the monotonic clock only
        renewed: list[float] = []

        def renew(selected: list[Selected]) -> None:
            assert [s[1] for s in selected] == ["renewed"]
            renewed.append(owner.extend_lease("renewed", token=claim.token, lease_s=4.0))

        reaper.between = renew
        assert reaper.reclaim_expired() == []
        assert renewed == [claim.lease_until]  # the same wall deadline, a fresh monotonic one
        job = owner.get_job("renewed")
        assert (job.status, job.attempt, job.lease_until) == (JobStatus.RUNNING, claim.token, renewed[0])
    finally:
        reaper.close()
        owner.close()
