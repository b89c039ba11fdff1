"""Lease upkeep: heartbeats for running jobs and the reaper for abandoned ones.

* :class:`LeaseKeeper` extends the lease of every job its workers are running, every
  ``heartbeat_s`` seconds, from one thread. A lease it fails to extend because the token
  went stale is reported as *lost*, so the worker knows its result will be refused. A
  renewal (``Queue.renew_lease``) also reports a cancel request for the job, which the
  keeper passes on to its workers (:meth:`~LeaseKeeper.listen`), which also store their
  jobs' progress every heartbeat.
* :class:`Reaper` calls :meth:`~typedq.backends.base.Queue.reclaim_expired` on its
  queues every ``interval_s`` seconds: jobs whose worker died or hung without heartbeats
  go back to PENDING (or DEAD after ``max_lost`` losses). Any number of reapers may run:
  each reclaim is a compare-and-set in the backend, so no leader is needed. With a
  ``result_ttl``, each pass also purges the COMPLETED and CANCELLED jobs that finished
  longer ago than that (``Queue.purge``, in batches of :data:`PURGE_BATCH`, at most
  :data:`PURGE_BATCHES` a queue and pass), so results do not pile up. Each pass also
  sweeps the queue's unique-key entries that no longer hold their key
  (``Queue.sweep_unique_keys``, at most :data:`UNIQUE_SWEEP_BATCHES` batches of
  :data:`UNIQUE_SWEEP_BATCH` entries a queue and pass, going on where the last pass
  stopped), so they do not pile up either; after a whole round over a queue's entries it
  rests ``unique_sweep_rest_s`` (every process's reaper sweeps, so a big table is not
  walked again and again).

Through a storage outage (see ``typedq._outage``): the first call that fails ends the
keeper's heartbeat or the reaper's pass (every other call would wait for the same
timeout), and the outage is logged once. Nobody could renew a lease while the storage was
unreachable, so an expired lease is no sign of a dead worker then: after a failed pass,
the reaper only probes the storage (a read) on its next passes, and once it answers,
rescues nothing for ``outage_grace_s`` more (a lease), time for the heartbeats of the
live workers to renew their leases.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Iterable
from typing import Final, Protocol

from typedq._outage import Outage, is_outage
from typedq._validate import require_number
from typedq.backends.base import Queue
from typedq.errors import ConfigError, JobNotFoundError, QueueClosedError, StaleLeaseError
from typedq.job import JobStatus

__all__ = [
    "PURGE_BATCH",
    "PURGE_BATCHES",
    "RESULT_STATUSES",
    "UNIQUE_SWEEP_BATCH",
    "UNIQUE_SWEEP_BATCHES",
    "UNIQUE_SWEEP_REST_S",
    "LeaseKeeper",
    "LeaseListener",
    "Reaper",
    "check_lease_settings",
]

#: The jobs ``result_ttl`` purges: those that ended without needing anyone (DEAD and
#: FAILED jobs wait for a replay or a purge by hand).
RESULT_STATUSES: Final = (JobStatus.COMPLETED, JobStatus.CANCELLED)
#: Jobs one purge deletes (one transition).
PURGE_BATCH: Final = 1000
#: Purges of one queue in one pass of the reaper, at most.
PURGE_BATCHES: Final = 10
#: Unique-key entries one sweep examines (one transition).
UNIQUE_SWEEP_BATCH: Final = 1000
#: Unique-key sweeps of one queue in one pass of the reaper, at most.
UNIQUE_SWEEP_BATCHES: Final = 10
#: Seconds a reaper waits after a whole round over a queue's unique keys before the next.
UNIQUE_SWEEP_REST_S: Final = 60.0

logger = logging.getLogger("typedq.leases")


class LeaseListener(Protocol):
    """What a :class:`LeaseKeeper` tells a worker (see :meth:`LeaseKeeper.listen`)."""

    def lease_cancelled(self, queue: Queue, job_id: str) -> None:
        """A renewal of ``job_id``'s lease reported that its cancellation was requested."""

    def lease_beat(self) -> None:
        """A heartbeat renewed the leases (the worker stores its job's progress)."""


def check_lease_settings(lease_s: float, heartbeat_s: float) -> None:
    """Refuse lease settings under which a healthy job could lose its lease.

    Raises:
        ConfigError: ``heartbeat_s`` is not > 0, or ``lease_s`` is not more than twice
            ``heartbeat_s`` (one missed heartbeat must not expire the lease).
    """
    require_number("heartbeat_s", heartbeat_s, minimum=0, strict=True)
    require_number("lease_s", lease_s, minimum=0, strict=True)
    if lease_s <= 2 * heartbeat_s:
        raise ConfigError(
            "lease_s", lease_s, f"a number of seconds > 2 × heartbeat_s (> {2 * heartbeat_s:g})"
        )


class LeaseKeeper:
    """Extends the leases of running jobs from one background thread.

    Args:
        lease_s: the lease length each heartbeat renews.
        heartbeat_s: seconds between heartbeats.
    """

    def __init__(self, *, lease_s: float = 30.0, heartbeat_s: float = 10.0) -> None:
        check_lease_settings(lease_s, heartbeat_s)
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        self._leases: dict[tuple[int, str], tuple[Queue, str, int]] = {}
        self._lost: set[tuple[int, str]] = set()
        # Job control: leases whose renewal reported a cancel request, and the listeners
        # (one per worker, not per job: nothing is registered on the hot path).
        self._cancel_seen: set[tuple[int, str]] = set()
        #: The same set, read-only for workers: empty (false) while no cancel is pending,
        #: so a worker checks it on its hot path without a call.
        self.cancels_seen: Collection[tuple[int, str]] = self._cancel_seen
        self._listeners: dict[int, LeaseListener] = {}
        # Worker-registry renewals (worker id -> the call that renews its entry).
        self._entries: dict[str, Callable[[], None]] = {}
        # Held while an entry is renewed: drop_entry waits for a renewal in flight, so a
        # worker that unregisters after dropping its entry is never re-registered by it.
        self._entry_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.heartbeats = 0
        self.outage = Outage(logger, "the lease keeper")

    def add(self, queue: Queue, job_id: str, token: int) -> None:
        """Keep the lease of ``job_id`` (held with ``token``) alive until discarded."""
        self._leases[(id(queue), job_id)] = (queue, job_id, token)

    def listen(self, listener: LeaseListener) -> None:
        """Tell ``listener`` of every cancel request a renewal reports, and of every
        heartbeat, until :meth:`unlisten` (a worker listens while it runs)."""
        self._listeners[id(listener)] = listener

    def unlisten(self, listener: LeaseListener) -> None:
        """Stop telling ``listener``."""
        self._listeners.pop(id(listener), None)

    def cancel_seen(self, queue: Queue, job_id: str) -> bool:
        """Whether a renewal of ``job_id``'s lease reported a cancel request."""
        seen = self._cancel_seen
        return bool(seen) and (id(queue), job_id) in seen

    def _cancel_reported(self, key: tuple[int, str], queue: Queue, job_id: str) -> None:
        """A renewal reported a cancel request: tell the listeners, once."""
        if key in self._cancel_seen:
            return
        self._cancel_seen.add(key)
        for listener in list(self._listeners.values()):
            try:
                listener.lease_cancelled(queue, job_id)
            except Exception:
                logger.exception("cancel listener failed for job %s", job_id)

    def discard(self, queue: Queue, job_id: str) -> bool:
        """Stop renewing ``job_id``; return True if its lease was lost meanwhile."""
        key = (id(queue), job_id)
        self._leases.pop(key, None)
        if self._cancel_seen:
            self._cancel_seen.discard(key)
        if self._lost and key in self._lost:
            self._lost.discard(key)
            return True
        return False

    def is_lost(self, queue: Queue, job_id: str) -> bool:
        """Whether a heartbeat found that the lease of ``job_id`` is no longer ours.

        A long handler may poll this (cooperatively) and stop early: its result would be
        refused anyway.
        """
        return (id(queue), job_id) in self._lost

    def keep_entry(self, worker_id: str, renew: Callable[[], None]) -> None:
        """Call ``renew`` every heartbeat (a worker's registry entry) until dropped."""
        self._entries[worker_id] = renew

    def drop_entry(self, worker_id: str) -> None:
        """Stop renewing ``worker_id``'s registry entry (waits for a renewal in flight)."""
        with self._entry_lock:
            self._entries.pop(worker_id, None)

    def forget_all(self, queue: Queue, job_ids: Iterable[str]) -> None:
        """Stop renewing these jobs (their worker was abandoned); their leases will expire."""
        for job_id in job_ids:
            self._leases.pop((id(queue), job_id), None)

    def start(self) -> None:
        """Start the heartbeat thread (idempotent)."""
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="typedq-lease-keeper", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the heartbeat thread and wait for it."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def beat(self) -> None:
        """Extend every registered lease once (the thread calls this every heartbeat).

        A storage outage ends the beat at its first failed call; the next beat tries again.
        """
        try:
            self._beat()
        finally:
            self.heartbeats += 1

    def _beat(self) -> None:
        outage = self.outage
        for key, (queue, job_id, token) in list(self._leases.items()):
            try:
                renew = getattr(queue, "renew_lease", None)
                if renew is None:  # a backend written before Queue.renew_lease
                    queue.extend_lease(job_id, token=token, lease_s=self.lease_s)
                elif renew(job_id, token=token, lease_s=self.lease_s).cancel_requested:
                    self._cancel_reported(key, queue, job_id)
            except (StaleLeaseError, JobNotFoundError) as exc:
                if self._leases.pop(key, None) is not None:
                    self._lost.add(key)
                    logger.warning("lease of job %s lost: %s", job_id, exc)
            except Exception as exc:
                if is_outage(exc):
                    outage.failed(exc, f"renew the lease of job {job_id}")
                    return
                logger.exception("heartbeat for job %s failed; will retry", job_id)
            else:
                if outage.active:
                    outage.ok()
        for listener in list(self._listeners.values()):
            try:
                listener.lease_beat()
            except Exception:
                logger.exception("heartbeat listener failed")
        for worker_id in list(self._entries):
            try:
                with self._entry_lock:
                    renew = self._entries.get(worker_id)
                    if renew is None:
                        continue
                    renew()
            except Exception as exc:
                if is_outage(exc):
                    outage.failed(exc, f"renew the registry entry of worker {worker_id}")
                    return
                logger.exception("registry heartbeat of worker %s failed; will retry", worker_id)
            else:
                if outage.active:
                    outage.ok()

    def _run(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.beat()


class Reaper:
    """Gives back jobs whose lease expired, from one background thread.

    Args:
        queues: returns the queues to sweep (called on every pass).
        interval_s: seconds between passes.
        max_lost: losses after which a job goes DEAD.
        on_reclaimed: called with the queue and the reclaimed ids after each pass
            that reclaimed something (for events and counters).
        dead_letter: where a job that goes DEAD has its dead letter put, in the
            transition that reclaims it (``Queue.reclaim_expired``), or None.
        dlq_max: the most dead letters ``dead_letter`` keeps (None: no limit).
        result_ttl: seconds a COMPLETED or CANCELLED job is kept after it finished; each
            pass purges older ones (None: kept forever).
        outage_grace_s: after a pass failed because the storage failed, no pass rescues
            anything until this many seconds after the storage answers again (the lease
            length: the live workers renew their leases meanwhile).
        unique_sweep_rest_s: seconds between the end of a whole round of the unique-key
            sweep over a queue and the start of the next (0: every pass).
    """

    def __init__(
        self,
        queues: Callable[[], Iterable[Queue]],
        *,
        interval_s: float = 5.0,
        max_lost: int = 3,
        on_reclaimed: Callable[[Queue, list[str]], None] | None = None,
        outage_grace_s: float = 0.0,
        dead_letter: Queue | None = None,
        dlq_max: int | None = None,
        result_ttl: float | None = None,
        unique_sweep_rest_s: float = UNIQUE_SWEEP_REST_S,
    ) -> None:
        require_number("reaper_s", interval_s, minimum=0, strict=True)
        require_number("unique_sweep_rest_s", unique_sweep_rest_s, minimum=0)
        require_number("max_lost", max_lost, minimum=1, integer=True)
        require_number("outage_grace_s", outage_grace_s, minimum=0)
        require_number("dlq_max", dlq_max, minimum=1, integer=True, allow_none=True)
        require_number("result_ttl", result_ttl, minimum=0, strict=True, allow_none=True)
        self.dead_letter = dead_letter
        self.dlq_max = dlq_max
        self.result_ttl = result_ttl
        self.purged_total = 0
        self.unique_swept_total = 0
        self.unique_sweep_rest_s = unique_sweep_rest_s
        # Queue name -> where its unique-key sweep goes on next pass; or, after a whole
        # round, the monotonic time before which it rests.
        self._unique_cursors: dict[str, str] = {}
        self._unique_rests: dict[str, float] = {}
        self._queues = queues
        self.interval_s = interval_s
        self.max_lost = max_lost
        self.outage_grace_s = outage_grace_s
        self._on_reclaimed = on_reclaimed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held_until = 0.0
        self.reclaimed_total = 0
        self.outage = Outage(logger, "the reaper")

    def sweep(self) -> int:
        """Run one pass over every queue; return how many jobs were reclaimed.

        After a storage failure, a pass only probes the storage until it answers, and
        rescues nothing until ``outage_grace_s`` after that.
        """
        queues = list(self._queues())
        if self.outage.active:
            if queues and self._failing(queues[0], queues[0].ready_count):
                return 0
            self.outage.ok()
            self._held_until = time.monotonic() + self.outage_grace_s
        if time.monotonic() < self._held_until:
            return 0
        total = 0
        self._forget_gone(queues)
        for queue in queues:
            try:
                ids = queue.reclaim_expired(
                    max_lost=self.max_lost, dead_letter=self.dead_letter, dlq_max=self.dlq_max
                )
            except QueueClosedError:
                continue  # closed since the pass began (JobQueueManager.close_queue)
            except Exception as exc:
                if is_outage(exc):
                    self.outage.failed(exc, f"reclaim expired leases of queue {queue.name!r}")
                    break
                logger.exception("reclaiming expired leases of queue %r failed", queue.name)
                continue
            if ids:
                total += len(ids)
                logger.warning(
                    "reclaimed %d job(s) with expired leases from queue %r: %s",
                    len(ids), queue.name, ", ".join(ids[:10]),
                )
                if self._on_reclaimed is not None:
                    try:
                        self._on_reclaimed(queue, ids)
                    except Exception:
                        logger.exception("on_reclaimed callback failed")
            if self.result_ttl is not None:
                self.purge(queue, self.result_ttl)
            self.sweep_unique(queue)
        self.reclaimed_total += total
        return total

    def _forget_gone(self, queues: list[Queue]) -> None:
        """Drop the unique-key sweep's place in queues no longer swept (closed ones)."""
        names = {q.name for q in queues}
        for table in (self._unique_cursors, self._unique_rests):
            for name in [n for n in table if n not in names]:
                del table[name]

    def _failing(self, queue: Queue, probe: Callable[[], object]) -> bool:
        """Call ``probe``; return True (and count the failure) when the storage fails."""
        try:
            probe()
        except Exception as exc:
            if is_outage(exc):
                self.outage.failed(exc, f"reach queue {queue.name!r}")
            else:
                logger.exception("probing queue %r failed", queue.name)
            return True
        return False

    def purge(self, queue: Queue, result_ttl: float) -> int:
        """Purge ``queue``'s COMPLETED and CANCELLED jobs older than ``result_ttl``
        seconds, in bounded batches; return how many went."""
        purged = 0
        try:
            for _ in range(PURGE_BATCHES):
                older_than = queue.clock.now() - result_ttl
                done = queue.purge(statuses=RESULT_STATUSES, older_than=older_than, limit=PURGE_BATCH)
                purged += done
                if done < PURGE_BATCH:
                    break
        except Exception:
            logger.exception("purging old results of queue %r failed", queue.name)
        if purged:
            logger.info(
                "purged %d finished job(s) older than %gs from queue %r", purged, result_ttl, queue.name
            )
            self.purged_total += purged
        return purged

    def sweep_unique(self, queue: Queue) -> int:
        """Remove ``queue``'s unique-key entries that hold their key no longer, in bounded
        batches from where the last pass stopped (resting after a whole round); return
        how many went."""
        name = queue.name
        if time.monotonic() < self._unique_rests.get(name, -math.inf):
            return 0
        cursor = self._unique_cursors.pop(name, "")
        removed = 0
        try:
            for _ in range(UNIQUE_SWEEP_BATCHES):
                done, cursor = queue.sweep_unique_keys(cursor=cursor, limit=UNIQUE_SWEEP_BATCH)
                removed += done
                if not cursor:
                    break
        except Exception:
            logger.exception("sweeping the unique keys of queue %r failed", name)
            cursor = ""
        if cursor:
            self._unique_cursors[name] = cursor
        else:
            self._unique_rests[name] = time.monotonic() + self.unique_sweep_rest_s
        if removed:
            logger.debug("swept %d released unique key(s) of queue %r", removed, name)
            self.unique_swept_total += removed
        return removed

    def start(self) -> None:
        """Start the sweeping thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="typedq-reaper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the sweeping thread and wait for it."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sweep()
