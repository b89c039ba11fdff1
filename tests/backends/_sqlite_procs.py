"""Code the SQLite backend tests run in other processes (not a test module).

Run as ``python -m tests.backends._sqlite_procs COMMAND ARGS`` from the repository root:

* ``produce DB``: enqueue jobs forever, printing each id (flushed) right after its
  ``enqueue()`` returned; the test kills it with SIGKILL (F9).
* ``owner``: print a worker id of this process (``new_worker_id()``), then block until
  stdin closes; the test kills it to make the owner die (C6).

:func:`finishing_victim` is a ``multiprocessing`` target for F2 (from a fork server, see
:mod:`tests.reliability.victims`) and :func:`job_producer` one for A4.
"""

from __future__ import annotations

import os
import sys
from multiprocessing.connection import Connection

from typedq._identity import new_worker_id
from typedq.backends.sqlite import SQLiteQueue
from typedq.job import MAX_TRACEBACK, Job


def produce(db: str) -> None:
    queue = SQLiteQueue(db, name="f9")
    pid = os.getpid()
    i = 0
    try:
        while True:
            job_id = f"p{pid}-{i}"
            queue.enqueue(Job(job_type="t", job_id=job_id, payload={"i": i}))
            sys.stdout.write(job_id + "\n")
            sys.stdout.flush()
            i += 1
    finally:
        queue.close()


def owner() -> None:
    sys.stdout.write(new_worker_id("owner") + "\n")
    sys.stdout.flush()
    sys.stdin.read()


#: Characters of filler in each F2 result, so that ``complete()`` writes about 10 KB.
F2_FILLER = 10_000
#: 2100-01-01 UTC: F2's retries are due long after the test, so no victim claims them again.
F2_RETRY_BASE = 4_102_444_800.0


def f2_result(job_id: str) -> dict[str, object]:
    """The result F2's victim stores for ``job_id`` (about 10 KB once encoded)."""
    return {"job": job_id, "filler": "r" * F2_FILLER, "items": list(range(100))}


def f2_failure(job_id: str) -> tuple[str, float, str]:
    """``(error, retry_at, traceback)`` of F2's victim failing ``job_id`` (ids end in a number)."""
    number = int(job_id.rsplit("-", 1)[1])
    error = f"RuntimeError: attempt of {job_id} failed " + "e" * 1000
    traceback = f"Traceback of {job_id}\n" + "t" * (MAX_TRACEBACK - 100)
    return error, F2_RETRY_BASE + number, traceback


def finishing_victim(db: str, mode: str, conn: Connection) -> None:
    """F2's victim: claim jobs and ``complete`` (or ``fail``) each, until killed.

    Sends ``("ready", pid, worker_id)`` and waits for any message; then, per job,
    ``("claimed", job_id, token)`` right after the claim committed and ``("done",
    job_id, token)`` right after ``complete(result=f2_result(job_id))`` (``mode``
    "complete") or ``fail(*f2_failure(job_id))`` (``mode`` "fail") returned. When no job
    is left it sends ``("idle", pid, worker_id)`` and waits. The test kills it with SIGKILL.
    """
    queue = SQLiteQueue(db, name="f2")
    worker = new_worker_id(f"f2-{mode}")
    try:
        conn.send(("ready", os.getpid(), worker))
        conn.recv()
        while (claim := queue.claim(worker, lease_s=3600.0)) is not None:
            job_id, token = claim.job.job_id, claim.token
            conn.send(("claimed", job_id, token))
            if mode == "complete":
                queue.complete(job_id, token=token, result=f2_result(job_id))
            else:
                error, retry_at, traceback = f2_failure(job_id)
                queue.fail(job_id, token=token, error=error, retry_at=retry_at, traceback=traceback)
            conn.send(("done", job_id, token))
        conn.send(("idle", os.getpid(), worker))
        conn.recv()
    finally:
        queue.close()
        conn.close()


def job_producer(db: str, queue_name: str, job_type: str, conn: Connection) -> None:
    """A4's producer: report ``("ready", pid)``, wait for any message, then enqueue forever.

    Job ``n`` is ``a4-<pid>-<n>`` of ``job_type`` with payload ``{"s": 0.002 * (n % 50)}``
    (a handler sleeping that long keeps some jobs in flight). Each id is sent as
    ``("enqueued", job_id)`` right after its ``enqueue()`` returned. The test kills it.
    """
    queue = SQLiteQueue(db, name=queue_name)
    pid = os.getpid()
    try:
        conn.send(("ready", pid))
        conn.recv()
        n = 0
        while True:
            job_id = f"a4-{pid}-{n}"
            queue.enqueue(Job(job_type=job_type, job_id=job_id, payload={"s": 0.002 * (n % 50)}))
            conn.send(("enqueued", job_id))
            n += 1
    finally:
        queue.close()
        conn.close()


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "produce":
        produce(*args)
    elif command == "owner":
        owner()
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
