"""``typedq demo``: a few hundred jobs of several types through real workers, in seconds.

It registers four job types on four queues, submits 300 jobs (resizes, reports that wait
for 60 resizes each, emails, flaky jobs that succeed on their retry, and one payment that
always fails and ends in the dead-letter queue after its retries), runs worker threads,
shows live progress, then prints the final counts and the dead-letter entry.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import click

from typedq._cli_common import EXIT_FAILED, EXIT_OK, CLIError
from typedq._cli_output import STATUS_ORDER, fmt_time, render_table, wait_with_progress
from typedq.backends import SCHEMES, backend_for
from typedq.job import JobStatus
from typedq.manager import JobQueueManager

__all__ = ["DEMO_BACKEND", "run_demo", "status_table"]

DEMO_BACKEND: Final = "sqlite:///./typedq-demo.db"
_TERMINAL: Final = ("COMPLETED", "FAILED", "DEAD", "CANCELLED")
_RESIZES: Final = 240
_REPORTS: Final = 4
_EMAILS: Final = 40
_FLAKY: Final = 15
_DOOMED_ID: Final = "payment-0042"


def status_table(
    manager: JobQueueManager, delayed: Mapping[str, int] | None = None
) -> tuple[str, dict[str, dict[str, int]]]:
    """The per-queue status counts as a table (with a TOTAL row) and as data.

    ``delayed`` (queue -> how many PENDING jobs wait for their time) moves those jobs
    from the table's PENDING column to SCHEDULED; the data keeps the stored statuses.
    """
    counts = {
        name: {s.value: n for s, n in queue.count_by_status().items()}
        for name, queue in sorted(manager.queues.items())
    }
    rows: list[list[object]] = []
    totals = dict.fromkeys(STATUS_ORDER, 0)
    for name, stored in counts.items():
        by_status = dict(stored)
        moved = (delayed or {}).get(name, 0)
        by_status["PENDING"] = by_status.get("PENDING", 0) - moved
        by_status["SCHEDULED"] = by_status.get("SCHEDULED", 0) + moved
        rows.append([name, *(by_status.get(s, 0) for s in STATUS_ORDER), sum(by_status.values())])
        for s in STATUS_ORDER:
            totals[s] += by_status.get(s, 0)
    rows.append(["TOTAL", *(totals[s] for s in STATUS_ORDER), sum(totals.values())])
    right = range(1, len(STATUS_ORDER) + 2)
    return render_table(["QUEUE", *STATUS_ORDER, "TOTAL"], rows, right=right), counts


def _reset_database(backend: str, *, explicit: bool) -> None:
    local = backend_for(backend).local_path
    if local is None:
        return
    path = local(backend)
    if explicit and path.exists():
        raise CLIError(f"the demo needs a fresh database and {path} exists; remove it or pick another path")
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _register(manager: JobQueueManager) -> None:
    rng = random.Random(7)
    rng_lock = threading.Lock()
    failed_once: set[int] = set()

    def pause(low_ms: float, high_ms: float) -> None:
        with rng_lock:
            seconds = rng.uniform(low_ms, high_ms) / 1000
        time.sleep(seconds)

    def resize(p: dict[str, Any]) -> dict[str, Any]:
        pause(10, 40)
        return {"image": p["image"], "width": p["width"], "height": p["width"] * 3 // 4}

    def report(p: dict[str, Any]) -> dict[str, Any]:
        heights = [int(dict(manager.get_job(i).result or {})["height"]) for i in p["images"]]
        return {"images": len(heights), "total_height": sum(heights)}

    def email(p: dict[str, Any]) -> str:
        pause(5, 20)
        return f"sent {p['template']} to {p['to']}"

    def flaky(p: dict[str, Any]) -> str:
        pause(5, 10)
        if p["n"] not in failed_once:
            failed_once.add(p["n"])
            raise ConnectionError(f"upstream timed out (flaky #{p['n']}, succeeds on retry)")
        return "ok"

    def charge(p: dict[str, Any]) -> None:
        raise RuntimeError(f"card declined for order {p['order']} (this demo job always fails)")

    manager.register_handler("resize", resize, queue="images")
    manager.register_handler("report", report, queue="images")
    manager.register_handler("email", email, queue="emails")
    manager.register_handler("flaky", flaky, queue="emails")
    manager.register_handler("charge", charge, queue="payments")


def _submit(manager: JobQueueManager) -> list[str]:
    ids: list[str] = []
    resizes = [
        manager.submit("resize", {"image": f"img-{i:03d}.png", "width": 320 + i}, priority=1 + i % 10)
        for i in range(_RESIZES)
    ]
    ids += resizes
    per_report = _RESIZES // _REPORTS
    for r in range(_REPORTS):
        batch = resizes[r * per_report : (r + 1) * per_report]
        ids.append(manager.submit("report", {"images": batch}, depends_on=batch, priority=10))
    ids += [
        manager.submit("email", {"to": f"user{i}@example.com", "template": "welcome"}) for i in range(_EMAILS)
    ]
    ids += [manager.submit("flaky", {"n": i}) for i in range(_FLAKY)]
    ids.append(manager.submit("charge", {"order": 42}, job_id=_DOOMED_ID, max_retries=3))
    return ids


def run_demo(backend: str | None, *, workers: int = 4, timeout: float = 60.0) -> int:
    """Run the demo on ``backend`` (default: a fresh ``./typedq-demo.db``); return the exit code."""
    explicit = backend is not None
    if backend is None:
        backend = DEMO_BACKEND if "sqlite" in SCHEMES else "memory://"
    _reset_database(backend, explicit=explicit)
    manager = JobQueueManager({
        "backend": backend, "max_workers": workers, "poll_interval": 0.02,
        "base_delay": 0.05, "max_delay": 0.5, "max_retries": 3,
        "queues": {"images": {}, "emails": {}, "payments": {}},
    })
    try:
        held = sum(queue.size for queue in manager.queues.values())
        if held:
            raise CLIError(
                f"the demo needs empty queues and {backend} holds {held} jobs in its queues "
                "images, emails, payments and default; pick another database or key prefix"
            )
        _register(manager)
        started = time.monotonic()
        ids = _submit(manager)
        click.echo(f"typedq demo on {backend}")
        click.echo(
            f"submitted {len(ids)} jobs: {_RESIZES} image resizes, {_REPORTS} reports (each waits for "
            f"{_RESIZES // _REPORTS} resizes), {_EMAILS} emails, {_FLAKY} flaky jobs (fail once, then "
            "succeed), 1 payment that always fails"
        )
        threads = manager.start_workers()
        click.echo(f"started {len(threads)} worker threads on queues {', '.join(sorted(manager.queues))}")

        def poll() -> tuple[int, int, str]:
            totals = dict.fromkeys(STATUS_ORDER, 0)
            for queue in manager.queues.values():
                for status, n in queue.count_by_status().items():
                    totals[status.value] += n
            done = sum(totals[s] for s in _TERMINAL)
            detail = f"running {totals['RUNNING']} · pending {totals['PENDING']} · dead {totals['DEAD']}"
            return done, len(ids), detail

        finished = wait_with_progress(poll, label="jobs", timeout=timeout, interval=0.05)
        elapsed = time.monotonic() - started
        manager.stop_workers(timeout=5.0)
        table, counts = status_table(manager)
        stats = manager.get_stats()
        click.echo(f"\n{'finished' if finished else 'gave up'} after {elapsed:.1f}s\n")
        click.echo(table)
        click.echo(
            f"\nsubmitted {len(ids)} · completed {stats['total_completed']} · failed attempts "
            f"{stats['total_failed']} · retried {stats['total_retried']} · dead {stats['total_dead']}"
        )
        dead = [j for q in manager.queues.values() for j in q.list_jobs(status=JobStatus.DEAD)]
        click.echo(f"\ndead-letter queue ({len(dead)}):")
        if dead:
            rows = [
                [j.job_id, j.job_type, j.queue, f"{j.retry_count}/{j.max_retries}", fmt_time(j.finished_at),
                 j.error]
                for j in dead
            ]
            click.echo(render_table(["ID", "TYPE", "QUEUE", "TRIES", "DIED", "ERROR"], rows, max_width=90))
        if backend_for(backend).shared:
            click.echo(f"\nexplore it:  export TYPEDQ_BACKEND={backend}")
            click.echo(f"  typedq list --queue payments     typedq show {_DOOMED_ID} --queue payments")
            click.echo(f"  typedq dlq replay {_DOOMED_ID} --queue payments")
        completed = sum(c.get("COMPLETED", 0) for c in counts.values())
        ok = finished and completed == len(ids) - 1 and [j.job_id for j in dead] == [_DOOMED_ID]
        return EXIT_OK if ok else EXIT_FAILED
    finally:
        manager.close(graceful=True, timeout=5.0)
