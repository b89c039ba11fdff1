"""B2's and B3's draining process (not a test module): :func:`drain_worker`, a
``multiprocessing`` target on any shared backend."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from typedq._identity import new_worker_id
from typedq.backends import open_queue
from typedq.backends.sqlite import SQLiteQueue


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.messages.append(record.getMessage())


def drain_worker(url: str, out: str, threads: int, stop: str | None = None, name: str = "b2") -> None:
    """B2/B3/F8: ``threads`` threads claim and complete the jobs of queue ``name`` of the
    backend at ``url`` until nothing is left, or with ``stop`` until that file exists
    (waiting in ``wait_ready`` meanwhile); write a report.

    The report (JSON at ``out``): ids claimed, errors raised, WARNING+ log messages
    and, on SQLite, the number of busy retries.
    """
    collect = _Collect()
    logging.getLogger().addHandler(collect)
    queue = open_queue(url, name=name)
    stop_file = None if stop is None else Path(stop)
    claimed: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        worker = new_worker_id(f"b2-{index}")
        idle = 0
        try:
            while (idle < 3) if stop_file is None else not stop_file.exists():
                if index % 2:
                    claims = queue.claim_many(worker, lease_s=60.0, limit=10)
                else:
                    one = queue.claim(worker, lease_s=60.0)
                    claims = [] if one is None else [one]
                if not claims:
                    idle += 1
                    queue.wait_ready(0.02)
                    continue
                idle = 0
                for claim in claims:
                    queue.complete(claim.job.job_id, token=claim.token, result=index)
                with lock:
                    claimed.extend(claim.job.job_id for claim in claims)
        except BaseException as exc:  # reported to the test
            errors.append(f"{type(exc).__name__}: {exc}")

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    report = {
        "claimed": claimed,
        "errors": errors,
        "warnings": collect.messages,
        "busy_retries": queue.diagnostics()["busy_retries"] if isinstance(queue, SQLiteQueue) else None,
    }
    queue.close()
    logging.getLogger().removeHandler(collect)  # run in a thread, the process goes on
    Path(out).write_text(json.dumps(report))
