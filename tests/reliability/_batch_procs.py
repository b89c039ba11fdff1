"""A3's producer process (not a test module): ``enqueue_many`` of 1,000 jobs with
dependencies, on any backend, killed mid-call by the test (``test_batch_kills``)."""

from __future__ import annotations

import os
from multiprocessing.connection import Connection

from typedq.backends import open_queue
from typedq.job import Job

#: Jobs per ``enqueue_many`` call of :func:`batch_producer`.
BATCH = 1000
#: The queue A3 fills.
QUEUE = "a3"


def batch_jobs(batch: int, anchor: str | None) -> list[Job]:
    """The jobs of A3's batch ``batch``: ``b<batch>-0000`` … ``b<batch>-0999``.

    Jobs form chains of 10 inside the batch (each depends on the one before), so the
    batch writes dependency edges; the first job depends on ``anchor`` (a job of an
    earlier, committed batch) when given.
    """
    jobs = []
    for i in range(BATCH):
        if i % 10:
            depends_on = [f"b{batch}-{i - 1:04d}"]
        else:
            depends_on = [anchor] if anchor is not None and i == 0 else []
        jobs.append(Job(job_type="t", job_id=f"b{batch}-{i:04d}", payload={"i": i}, depends_on=depends_on))
    return jobs


def batch_producer(url: str, conn: Connection) -> None:
    """A3's victim: open queue ``a3`` of the backend at ``url``, report ``("ready",
    pid)``, then run each batch asked for over ``conn``.

    A request is ``(batch, anchor)``; the jobs are built first, then ``("begin", batch)``
    is sent right before ``enqueue_many`` and ``("done", batch)`` right after it
    returned. ``None`` ends the process. The test kills it with SIGKILL mid-call.
    """
    queue = open_queue(url, name=QUEUE)
    try:
        conn.send(("ready", os.getpid()))
        while (request := conn.recv()) is not None:
            batch, anchor = request
            jobs = batch_jobs(batch, anchor)
            conn.send(("begin", batch))
            queue.enqueue_many(jobs)
            conn.send(("done", batch))
    finally:
        queue.close()
        conn.close()
