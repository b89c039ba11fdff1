"""Code the shared-store tests run in other processes (not a test module).

Run as ``python -m tests.conformance._procs COMMAND URL NAME [ARGS]`` from the repository
root; the queue is ``open_queue(URL, name=NAME)`` on the system clock:

* ``enqueue URL NAME JOB_ID``: enqueue one job (payload ``{"from": pid}``) and exit.
* ``delayed URL NAME JOB_ID DELAY_S``: enqueue one job due ``DELAY_S`` seconds from now.
* ``drain URL NAME``: print ``ready``, wait for a line on stdin, then claim and complete
  jobs (result ``{"pid": pid}``) until none is ready, printing each id right after its
  completion was accepted; exit 0.
* ``unique URL NAME KEY N THREADS``: print ``ready``, wait for a line on stdin, then
  enqueue N jobs of unique key KEY from THREADS threads together; print a line per
  submit: ``added ID`` or ``held ID`` (the holder named by the refusal); exit 0.
"""

from __future__ import annotations

import os
import sys
import threading

from typedq.backends import open_queue
from typedq.backends._unique import UNIQUE_META
from typedq.backends.base import Queue
from typedq.errors import DuplicateJobError
from typedq.job import Job


def enqueue(url: str, name: str, job_id: str) -> None:
    queue = open_queue(url, name=name)
    try:
        queue.enqueue(Job(job_type="t", job_id=job_id, payload={"from": os.getpid()}))
    finally:
        queue.close()


def delayed(url: str, name: str, job_id: str, delay_s: str) -> None:
    queue = open_queue(url, name=name)
    try:
        queue.enqueue(Job.create("t", {"from": os.getpid()}, job_id=job_id, delay_s=float(delay_s)))
    finally:
        queue.close()


def drain(url: str, name: str) -> None:
    queue = open_queue(url, name=name)
    pid = os.getpid()
    try:
        print("ready", flush=True)
        sys.stdin.readline()
        while (claim := queue.claim(f"child-{pid}", lease_s=60)) is not None:
            queue.complete(claim.job.job_id, token=claim.token, result={"pid": pid})
            print(claim.job.job_id, flush=True)
    finally:
        queue.close()


def race_unique(
    queue: Queue, key: str, n: int, threads: int, start: threading.Barrier | None = None
) -> list[str]:
    """``n`` enqueues of ``key`` from ``threads`` threads at once (together with others
    waiting on ``start``): a line per submit, ``added ID`` or ``held ID``."""
    lines: list[str] = []
    barrier = start or threading.Barrier(threads)

    def submit(share: int) -> None:
        barrier.wait()
        for _ in range(share):
            job = Job(job_type="t", metadata={UNIQUE_META: {"key": key}}, created_at=queue.clock.now())
            try:
                lines.append(f"added {queue.enqueue(job)}")
            except DuplicateJobError as exc:
                lines.append(f"held {exc.existing_id}")

    shares = [n // threads + (i < n % threads) for i in range(threads)]
    running = [threading.Thread(target=submit, args=(share,)) for share in shares]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join(60)
    return lines


def unique(url: str, name: str, key: str, n: str, threads: str) -> None:
    queue = open_queue(url, name=name)
    try:
        print("ready", flush=True)
        sys.stdin.readline()
        print("\n".join(race_unique(queue, key, int(n), int(threads))), flush=True)
    finally:
        queue.close()


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "enqueue":
        enqueue(*args)
    elif command == "drain":
        drain(*args)
    elif command == "delayed":
        delayed(*args)
    elif command == "unique":
        unique(*args)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
