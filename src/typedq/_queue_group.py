"""``QueueGroup``: several queues of one store served by one worker, by weight.

A worker given a group claims from its queues in *smooth weighted round robin* (the order
nginx uses for upstreams): with weights ``{"emails": 3, "reports": 1}`` and work in both,
claims go emails, emails, reports, emails, emails, emails, reports, ... — three of every
four, interleaved, never one queue drained first. A queue with nothing ready is skipped
(the next in the order is tried in the same claim) and earns no credit meanwhile beyond
one round, so it cannot take a burst when work arrives. With equal weights this is plain
round robin.

The group routes every call about a job it handed out (complete, fail, bury, release,
cancel, extend_lease, get_job) to the queue the job came from; ``interrupt`` goes to
every queue, and the worker registers with each queue itself (:func:`members`), each
entry with that queue's figures; ``wait_ready`` waits on each queue in turn for a share of
the timeout. It is what :class:`~typedq.worker.Worker` needs of a queue, not a whole
:class:`~typedq.backends.base.Queue`.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

from typedq.backends.base import Claim, Completion, Queue
from typedq.clock import Clock
from typedq.errors import ConfigError, JobNotFoundError, TypedqError
from typedq.job import Job

__all__ = ["QueueGroup", "members"]

#: The most claims remembered for routing; the oldest half is forgotten past it.
_ROUTES_MAX: Final = 8192


class QueueGroup:
    """Queues of one store with a weight each, claimed from in weighted round robin.

    Args:
        queues: queue -> weight (an int >= 1); at least one queue.

    Raises:
        ConfigError: no queue, or a weight that is not an int >= 1.
    """

    def __init__(self, queues: Mapping[Queue, int]) -> None:
        if not queues:
            raise ConfigError("queues", dict(queues), "at least one queue with a weight")
        for queue, weight in queues.items():
            if type(weight) is not int or weight < 1:
                raise ConfigError(f"queues.{queue.name}", weight, "a weight: an int >= 1")
        self._queues = list(queues)
        self._weights = list(queues.values())
        self._total = sum(self._weights)
        self._current = [0] * len(self._queues)
        self._lock = threading.Lock()
        self._routes: dict[str, Queue] = {}

    @property
    def name(self) -> str:
        """The queues' names joined by ``+`` (``"emails+reports"``)."""
        return "+".join(q.name for q in self._queues)

    @property
    def queues(self) -> list[Queue]:
        """The queues, in the order given."""
        return list(self._queues)

    @property
    def clock(self) -> Clock:
        """The first queue's clock."""
        return self._queues[0].clock

    # -- claims ---------------------------------------------------------------------------

    def _order(self) -> list[int]:
        """Queue indexes in the order this claim tries them: most credit after this round first."""
        with self._lock:
            current, weights = self._current, self._weights
            return sorted(range(len(current)), key=lambda i: (-(current[i] + weights[i]), i))

    def _served(self, index: int) -> None:
        with self._lock:
            current = self._current
            for i, weight in enumerate(self._weights):
                current[i] = min(current[i] + weight, self._total)  # no more than a round's credit
            current[index] -= self._total

    def _route(self, claims: list[Claim], queue: Queue) -> None:
        routes = self._routes
        for claim in claims:
            routes[claim.job.job_id] = queue
        if len(routes) > _ROUTES_MAX:
            for job_id in list(routes)[: _ROUTES_MAX // 2]:
                routes.pop(job_id, None)

    def claim(
        self, worker_id: str, *, lease_s: float, job_types: Collection[str] | None = None
    ) -> Claim | None:
        """Claim one job from the queue whose turn it is (the next ones when it has none)."""
        for index in self._order():
            queue = self._queues[index]
            got = queue.claim(worker_id, lease_s=lease_s, job_types=job_types)
            if got is not None:
                self._served(index)
                self._route([got], queue)
                return got
        return None

    def claim_many(
        self, worker_id: str, *, lease_s: float, limit: int, job_types: Collection[str] | None = None
    ) -> list[Claim]:
        """Claim up to ``limit`` jobs from the queue whose turn it is (one queue per call)."""
        for index in self._order():
            queue = self._queues[index]
            got = queue.claim_many(worker_id, lease_s=lease_s, limit=limit, job_types=job_types)
            if got:
                self._served(index)
                self._route(got, queue)
                return got
        return []

    # -- calls about one job: to its queue -------------------------------------------------

    def _of(self, job_id: str) -> Queue:
        queue = self._routes.get(job_id)
        if queue is not None:
            return queue
        for queue in self._queues:
            try:
                queue.get_job(job_id)
            except JobNotFoundError:
                continue
            return queue
        raise JobNotFoundError(job_id, queue=self.name)

    def get_job(self, job_id: str) -> Job:
        """The job, from the queue that holds it."""
        return self._of(job_id).get_job(job_id)

    def complete(self, job_id: str, *, token: int, result: Any = None) -> Job:
        """Complete the job in its queue."""
        return self._of(job_id).complete(job_id, token=token, result=result)

    def complete_many(self, completions: Sequence[Completion]) -> list[Job | TypedqError]:
        """Complete jobs, one ``complete_many`` per queue; outcomes in the order given."""
        by_queue: dict[int, list[int]] = {}
        queues: dict[int, Queue] = {}
        for position, completion in enumerate(completions):
            queue = self._of(completion.job_id)
            by_queue.setdefault(id(queue), []).append(position)
            queues[id(queue)] = queue
        out: list[Job | TypedqError | None] = [None] * len(completions)
        for key, positions in by_queue.items():
            outcomes = queues[key].complete_many([completions[p] for p in positions])
            for position, outcome in zip(positions, outcomes, strict=True):
                out[position] = outcome
        return [o for o in out if o is not None]

    def fail(
        self, job_id: str, *, token: int, error: str, retry_at: float, traceback: str | None = None
    ) -> Job:
        """Fail the job in its queue (see ``Queue.fail``)."""
        queue = self._of(job_id)
        return queue.fail(job_id, token=token, error=error, retry_at=retry_at, traceback=traceback)

    def bury(
        self,
        job_id: str,
        *,
        token: int,
        error: str,
        traceback: str | None = None,
        dead_letter: Queue | None = None,
        dlq_max: int | None = None,
    ) -> Job:
        """Bury the job in its queue (see ``Queue.bury``)."""
        return self._of(job_id).bury(
            job_id, token=token, error=error, traceback=traceback, dead_letter=dead_letter, dlq_max=dlq_max
        )

    def release(self, job_id: str, *, token: int) -> Job:
        """Give the job back to its queue."""
        return self._of(job_id).release(job_id, token=token)

    def extend_lease(self, job_id: str, *, token: int, lease_s: float) -> float:
        """Renew the job's lease in its queue."""
        return self._of(job_id).extend_lease(job_id, token=token, lease_s=lease_s)

    def cancel(self, job_id: str, *, token: int | None = None) -> bool:
        """Cancel the job in its queue."""
        return self._of(job_id).cancel(job_id, token=token)

    # -- every queue -----------------------------------------------------------------------

    def check_dead_letter(self, dead_letter: Queue) -> None:
        """Check ``dead_letter`` against every queue of the group."""
        for queue in self._queues:
            queue.check_dead_letter(dead_letter)

    def wait_ready(self, timeout_s: float, job_types: Collection[str] | None = None) -> bool:
        """Wait on each queue in turn for a share of ``timeout_s``; True once one has work
        (of ``job_types``, when given)."""
        share = timeout_s / len(self._queues)
        return any(queue.wait_ready(share, job_types) for queue in self._queues)

    def interrupt(self) -> None:
        """Wake the waiters of every queue."""
        for queue in self._queues:
            queue.interrupt()


def members(queue: Queue | QueueGroup) -> tuple[Queue, ...]:
    """The queues a worker of ``queue`` registers with: a group's queues, or the queue."""
    return tuple(queue.queues) if isinstance(queue, QueueGroup) else (queue,)
