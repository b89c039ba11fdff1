"""Processes the Redis chaos tests start with the ``spawn`` method (importable by the child).

:func:`redis_producer` enqueues a fixed set of ``work`` jobs on a Redis queue, paced, half
of the batches job by job and half with ``enqueue_many``, then reports how many it
enqueued. The test starts several at once and kills worker processes meanwhile.
"""

from __future__ import annotations

import os
import random
import time
from multiprocessing.connection import Connection

from typedq.backends.redis import RedisQueue
from typedq.job import Job

__all__ = ["producer_ids", "redis_producer"]


def producer_ids(tag: str, count: int) -> list[str]:
    """The ids :func:`redis_producer` enqueues for ``tag`` and ``count``."""
    return [f"{tag}-{i:05d}" for i in range(count)]


def redis_producer(url: str, tag: str, count: int, pacing: tuple[int, float], conn: Connection) -> None:
    """Report ``("ready", pid)``, wait for any message, enqueue ``count`` jobs in batches of
    ``pacing[0]`` with ``pacing[1]`` seconds between batches, then report ``("done", count)``.

    Job ``i`` sleeps 0-15 ms in the handler (``{"s": ...}``), so some are always in flight.
    """
    queue = RedisQueue(url, name="default")
    rng = random.Random(tag)
    ids = producer_ids(tag, count)
    batch, pace_s = pacing
    try:
        conn.send(("ready", os.getpid()))
        conn.recv()
        for number, lo in enumerate(range(0, count, batch)):
            jobs = [
                Job.create("work", {"s": rng.uniform(0.0, 0.015)}, job_id=i) for i in ids[lo : lo + batch]
            ]
            if number % 2:
                queue.enqueue_many(jobs)
            else:
                for job in jobs:
                    queue.enqueue(job)
            time.sleep(pace_s)
        conn.send(("done", count))
    finally:
        queue.close()
        conn.close()
