"""The scheduler: fires the stored schedules of queues, each slot exactly once.

Every process that runs workers may run a :class:`Scheduler` (the manager starts one
with its workers). For each queue that holds schedules, one of them is *leader*: the
holder of the queue's lock :data:`LEADER_LOCK` (``Queue.lock``), which it renews every
third of ``lock_s``; the others look at the lock on each pass and take it once it is
free or expired (a leader killed with ``kill -9`` is replaced within ``lock_s``).

Exactly once per slot, twice over:

1. the leader records each firing with ``Queue.advance_schedule``, a compare-and-set on
   the schedule's ``next_run_at`` *fenced by its lock token*: a leader that was paused
   past its lock's deadline is refused, atomically, even if it does not know yet;
2. each slot's job has a deterministic id, ``<schedule name>@<slot as UTC>``
   (``nightly@20260329T010000Z``), so a second enqueue of a slot (a leader that died
   between the enqueue and the advance, a stale leader) is refused with
   ``DuplicateJobError`` and counted as a duplicate, not run.

The job is enqueued before the advance: a crash in between leaves the slot to the next
leader, whose enqueue is refused as a duplicate. (The id guard lasts while the slot's
job is in the queue; a job deleted meanwhile could be enqueued again only in that
window.)

Overlap: unless the schedule's ``overlap`` option is True, each slot's job holds the
unique key :func:`overlap_key` (``Queue`` unique keys: held while the job is PENDING or
RUNNING, retries included), so a slot that comes while the previous run has not ended is
refused by the enqueue and skipped: logged, counted in ``SchedulerStats.overlapping``,
never queued behind the run. The schedule is not deferred: the next run is the first
slot after the long one ended. A schedule whose metadata asks for a unique key of its
own keeps that one.

Missed slots (no scheduler ran, or the leader died) follow the schedule's ``catch_up``:
``"latest"`` (the default) fires the latest missed slot once, ``"all"`` fires every
missed slot, at most :data:`~typedq._cron.MAX_CATCH_UP` (the latest ones), ``"none"``
fires none: a slot reached more than :data:`~typedq._cron.MISSED_AFTER_S` late counts as
missed. Slots left out are logged as a warning with their count.

Time: slots and lock deadlines follow the queues' clock; :meth:`Scheduler.run_once` is one
pass (tests drive it with a FakeClock); the thread started by :meth:`Scheduler.start`
sleeps until the next slot is due, at most ``min(1 s, lock_s / 4)``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from typedq._cron import MAX_CATCH_UP, MISSED_AFTER_S, Recurrence, slot_stamp
from typedq._validate import require_number
from typedq.backends._unique import UNIQUE_META
from typedq.backends.base import Lock, Queue, ScheduleEntry
from typedq.clock import Clock
from typedq.errors import DuplicateJobError, QueueClosedError
from typedq.job import Job

__all__ = [
    "LEADER_LOCK",
    "SCHEDULE_KEY",
    "SLOT_KEY",
    "Scheduler",
    "SchedulerStats",
    "overlap_key",
    "recurrence_of",
    "slot_job_id",
]

logger = logging.getLogger("typedq.scheduler")

#: The lock of a queue whose holder fires its schedules.
LEADER_LOCK: Final = "typedq.scheduler"
#: Where a fired job's metadata names its schedule and its slot (epoch seconds).
SCHEDULE_KEY: Final = "typedq.schedule"
SLOT_KEY: Final = "typedq.slot"
#: The longest sleep between passes (seconds).
MAX_SLEEP_S: Final = 1.0
_MIN_SLEEP_S: Final = 0.001


def overlap_key(name: str) -> str:
    """The unique key the jobs of schedule ``name`` hold unless it allows ``overlap``."""
    return f"typedq.schedule:{name}"


def slot_job_id(name: str, slot: float) -> str:
    """The id of the job a schedule makes for a slot: ``name@YYYYmmddTHHMMSSZ``."""
    return f"{name}@{slot_stamp(slot)}"


def recurrence_of(entry: ScheduleEntry) -> Recurrence:
    """The slot rule of a stored schedule."""
    return Recurrence(cron=entry.cron, every_s=entry.every_s, tz=entry.tz, dst=entry.dst)


@dataclass
class SchedulerStats:
    """What a scheduler did: slots fired, enqueues refused as duplicates, slots skipped
    because the schedule's previous run had not ended (``overlap`` False), slots missed
    (left out by ``catch_up``), and leaderships taken and lost."""

    fired: int = 0
    duplicates: int = 0
    overlapping: int = 0
    missed: int = 0
    elected: int = 0
    lost: int = 0


@dataclass
class _Leadership:
    lock: Lock
    token: int
    renewed_at: float


class Scheduler:
    """Fires the schedules of some queues; see the module docstring.

    Args:
        queues: returns the queues to look at (called on every pass).
        clock: the clock slots and lock deadlines are read from.
        lock_s: the leader lock's time to live (seconds > 0); a dead leader is replaced
            within it, and it is renewed every third of it.
        on_fired: called with each job enqueued for a slot (after the enqueue).
        owner: the owner name of this scheduler's locks (default: host, pid, random).

    Raises:
        ConfigError: ``lock_s`` is not a number > 0.
    """

    def __init__(
        self,
        queues: Callable[[], Iterable[Queue]],
        *,
        clock: Clock,
        lock_s: float = 15.0,
        on_fired: Callable[[Queue, Job], None] | None = None,
        owner: str | None = None,
    ) -> None:
        require_number("scheduler_lock_s", lock_s, minimum=0, strict=True)
        self._queues = queues
        self._clock = clock
        self.lock_s = float(lock_s)
        self._on_fired = on_fired
        self._owner = owner
        self._leads: dict[int, tuple[Queue, _Leadership]] = {}
        self._rules: dict[tuple[str | None, float | None, str, str], Recurrence] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._pass_lock = threading.Lock()
        self.stats = SchedulerStats()

    # -- leadership ---------------------------------------------------------------------

    def leads(self, queue: Queue) -> bool:
        """Whether this scheduler holds ``queue``'s leader lock (as of its last pass)."""
        return id(queue) in self._leads

    def _leadership(self, queue: Queue, now: float) -> _Leadership | None:
        """This scheduler's leadership of ``queue``: renewed when due, taken when free."""
        held = self._leads.get(id(queue))
        if held is not None:
            lead = held[1]
            if now - lead.renewed_at < self.lock_s / 3:
                return lead
            if lead.lock.renew(lead.token):
                lead.renewed_at = now
                return lead
            del self._leads[id(queue)]
            self.stats.lost += 1
            logger.warning(
                "scheduler lost the leadership of queue %r (lock token %d)", queue.name, lead.token
            )
        lock = queue.lock(LEADER_LOCK, self.lock_s)
        if lock.holder() is not None:
            return None
        token = lock.acquire(self._owner)
        if token is None:
            return None
        lead = _Leadership(lock, token, now)
        self._leads[id(queue)] = (queue, lead)
        self.stats.elected += 1
        logger.info("scheduler leads queue %r (lock token %d)", queue.name, token)
        return lead

    def resign(self, queue: Queue) -> None:
        """Give up the leadership of ``queue`` if this scheduler holds it (the queue is
        closing): another scheduler takes over at once, not after the lock's time to live."""
        with self._pass_lock:
            self._resign(queue)

    def _resign(self, queue: Queue) -> None:
        held = self._leads.pop(id(queue), None)
        if held is not None:
            try:
                held[1].lock.release(held[1].token)
            except Exception:
                logger.exception("releasing the scheduler lock of queue %r failed", queue.name)

    # -- passes -------------------------------------------------------------------------

    def run_once(self) -> float | None:
        """One pass: lead what can be led, fire every due slot. Returns the earliest
        ``next_run_at`` of the schedules this scheduler leads (None: none)."""
        with self._pass_lock:
            seen: set[int] = set()
            earliest: float | None = None
            for queue in list(self._queues()):
                seen.add(id(queue))
                try:
                    due = self._pass(queue)
                except QueueClosedError:
                    continue  # closed since the pass began (JobQueueManager.close_queue)
                except Exception:
                    logger.exception("scheduler pass over queue %r failed; will retry", queue.name)
                    continue
                if due is not None and (earliest is None or due < earliest):
                    earliest = due
            for key in [k for k in self._leads if k not in seen]:
                self._resign(self._leads[key][0])
            return earliest

    def _pass(self, queue: Queue) -> float | None:
        entries = queue.list_schedules()
        if not entries:
            self._resign(queue)
            return None
        lead = self._leadership(queue, self._clock.now())
        if lead is None:
            return None
        earliest: float | None = None
        for entry in entries:
            if entry.paused or entry.next_run_at is None:
                continue
            due_at: float | None = entry.next_run_at
            if entry.next_run_at <= self._clock.now():
                due_at = self._fire(queue, entry, lead)
                if id(queue) not in self._leads:
                    return None  # the leadership was lost while firing
            if due_at is not None and (earliest is None or due_at < earliest):
                earliest = due_at
        return earliest

    def _rule(self, entry: ScheduleEntry) -> Recurrence:
        key = (entry.cron, entry.every_s, entry.tz, entry.dst)
        rule = self._rules.get(key)
        if rule is None:
            rule = self._rules[key] = recurrence_of(entry)
        return rule

    def _fire(self, queue: Queue, entry: ScheduleEntry, lead: _Leadership) -> float | None:
        """Fire the due slots of one schedule; return its next run time (None: never)."""
        assert entry.next_run_at is not None
        now = self._clock.now()
        rule = self._rule(entry)
        keep = MAX_CATCH_UP if entry.catch_up == "all" else 1
        slots, dropped = rule.due(entry.next_run_at, now, keep)
        fire = slots
        if entry.catch_up == "none":
            fire = [s for s in slots[-1:] if now - s <= MISSED_AFTER_S]
        missed = dropped + len(slots) - len(fire)
        for slot in fire:
            job = self._job(queue, entry, slot)
            try:
                queue.enqueue(job)
            except DuplicateJobError as exc:
                if exc.unique_key == overlap_key(entry.name):
                    self.stats.overlapping += 1
                    logger.info(
                        "schedule %r: slot %s skipped, its previous run %s has not ended (overlap=False)",
                        entry.name, slot_stamp(slot), exc.existing_id,
                    )
                    continue
                self.stats.duplicates += 1
                logger.info(
                    "schedule %r: slot %s was already enqueued (%s)", entry.name, slot_stamp(slot), job.job_id
                )
                continue
            self.stats.fired += 1
            if self._on_fired is not None:
                self._on_fired(queue, job)
        if missed:
            self.stats.missed += missed
            logger.warning(
                "schedule %r of queue %r: %d missed slot(s) not run (catch_up=%r)",
                entry.name, queue.name, missed, entry.catch_up,
            )
        last_due = slots[-1] if slots else now
        next_at = rule.after(last_due)
        last_run = fire[-1] if fire else entry.last_run_at
        advanced = queue.advance_schedule(
            entry.name,
            expected=entry.next_run_at,
            next_run_at=next_at,
            last_run_at=last_run,
            fence=(LEADER_LOCK, lead.token),
        )
        if not advanced and not lead.lock.is_held(lead.token):
            self._leads.pop(id(queue), None)
            self.stats.lost += 1
            logger.warning(
                "scheduler lost the leadership of queue %r while firing %r (lock token %d)",
                queue.name, entry.name, lead.token,
            )
        return next_at

    def _job(self, queue: Queue, entry: ScheduleEntry, slot: float) -> Job:
        options = entry.options
        metadata = {**options.get("metadata", {}), SCHEDULE_KEY: entry.name, SLOT_KEY: slot}
        if not options.get("overlap", False) and UNIQUE_META not in metadata:
            metadata[UNIQUE_META] = {"key": overlap_key(entry.name)}
        return Job.create(
            entry.job_type,
            dict(entry.payload),
            priority=options.get("priority", 5),
            max_retries=options.get("max_retries", 3),
            timeout_seconds=options.get("timeout_seconds"),
            metadata=metadata,
            job_id=slot_job_id(entry.name, slot),
            queue=queue.name,
            now=self._clock.now(),
        )

    # -- the thread ---------------------------------------------------------------------

    def _sleep_s(self, earliest: float | None) -> float:
        longest = min(MAX_SLEEP_S, self.lock_s / 4)
        if earliest is None:
            return longest
        return max(_MIN_SLEEP_S, min(longest, earliest - self._clock.now()))

    def _run(self) -> None:
        while not self._stop.is_set():
            earliest = self.run_once()
            self._stop.wait(self._sleep_s(earliest))

    def start(self) -> None:
        """Start the scheduler thread (idempotent)."""
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="typedq-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the thread, and give up every leadership (another scheduler takes over at
        once instead of after the lock's time to live)."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._pass_lock:
            for queue, _ in list(self._leads.values()):
                self._resign(queue)

    @property
    def running(self) -> bool:
        """Whether the scheduler thread is running."""
        return self._thread is not None and self._thread.is_alive()
