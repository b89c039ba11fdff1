"""Code the shared-store tests run in other processes (not a test module).

Run as ``python -m tests.conformance._procs COMMAND URL NAME [ARGS]`` from the repository
root; the queue is ``open_queue(URL, name=NAME)`` on the system clock:

* ``enqueue URL NAME JOB_ID``: enqueue one job (payload ``{"from": pid}``) and exit.
* ``drain URL NAME``: print ``ready``, wait for a line on stdin, then claim and complete
  jobs (result ``{"pid": pid}``) until none is ready, printing each id right after its
  completion was accepted; exit 0.
"""

from __future__ import annotations

import os
import sys

from typedq.backends import open_queue
from typedq.job import Job


def enqueue(url: str, name: str, job_id: str) -> None:
    queue = open_queue(url, name=name)
    try:
        queue.enqueue(Job(job_type="t", job_id=job_id, payload={"from": os.getpid()}))
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


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "enqueue":
        enqueue(*args)
    elif command == "drain":
        drain(*args)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
