"""The reading commands of ``typedq``: ``status``, ``list`` and ``show``.

They never create a database (see :meth:`typedq._cli_common.Env.open`). States are those
people see: a PENDING job whose ``scheduled_at`` is in the future (a delay, a retry's
backoff) shows as ``SCHEDULED``, "waiting until T"; ``processing`` is queuectl's name for
``RUNNING``.

``list`` pages with keyset cursors: each queue is listed with ``Queue.list_jobs(after=...)``
from its own position, and the queues are merged by creation time, so the cursor printed
for the next page is the id of the last job shown of each queue (one id when one queue
is listed).
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import click

from typedq._cli_common import CLIError, common_options, env_of
from typedq._cli_demo import status_table
from typedq._cli_jobs import busy_workers, dead_jobs, storage_diagnostics, storage_lines
from typedq._cli_output import (
    JOB_HEADERS,
    display_state,
    echo_json,
    is_delayed,
    job_detail,
    job_json,
    job_row,
    render_table,
)
from typedq._cli_workers import registry_lines, registry_report
from typedq.backends.base import Queue
from typedq.job import LEVELS, Job, JobStatus
from typedq.manager import JobQueueManager

__all__ = ["STATE_ALIASES", "ListPage", "delayed_counts", "list_cmd", "list_page", "show", "state_option",
           "status"]

#: queuectl's state names -> typedq's.
STATE_ALIASES: Final = {"PROCESSING": "RUNNING"}
_STATES: Final = [s.value for s in JobStatus] + list(STATE_ALIASES)
#: Jobs read from a backend per list_jobs call while walking a queue.
_PAGE: Final = 500


def _normalize_state(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    upper = value.upper()
    return STATE_ALIASES.get(upper, upper)


def state_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``-s/--state``: a state (any case), ``processing`` meaning RUNNING, ``scheduled``
    including delayed PENDING jobs."""
    return click.option(
        "-s", "--state", type=click.Choice(_STATES, case_sensitive=False), callback=_normalize_state,
        help="Only this state (processing = RUNNING; scheduled includes delayed jobs).",
    )(func)


def _walk(
    queue: Queue, state: str | None, job_type: str | None, after: str | None, *, newest: bool, now: float,
    page: int = _PAGE, status: JobStatus | None = None,
) -> Iterator[Job]:
    """A queue's jobs in the state people see (or of the stored ``status``), from ``after``
    on, fetched a page at a time."""
    stored = status
    keep: Callable[[Job], bool] = lambda _job: True  # noqa: E731
    if state == JobStatus.SCHEDULED.value:  # held SCHEDULED jobs and delayed PENDING ones
        keep = lambda job: display_state(job, now) == state  # noqa: E731
    elif state == JobStatus.PENDING.value:
        stored = JobStatus.PENDING
        keep = lambda job: not is_delayed(job, now)  # noqa: E731
    elif state is not None:
        stored = JobStatus(state)
    cursor = after
    while True:
        jobs = queue.list_jobs(status=stored, job_type=job_type, limit=page, after=cursor, newest=newest)
        yield from (job for job in jobs if keep(job))
        if len(jobs) < page:
            return
        cursor = jobs[-1].job_id


@dataclass
class ListPage:
    """One page of ``typedq list``: its jobs and the cursor of the next page (None: last page)."""

    jobs: list[Job]
    cursor: str | None


def list_page(
    manager: JobQueueManager, names: Sequence[str], *, state: str | None = None, job_type: str | None = None,
    limit: int = 50, offset: int = 0, after: Sequence[str] = (), newest: bool = False,
    now: float | None = None,
) -> ListPage:
    """A page of the jobs of queues ``names``, merged by creation time.

    Args:
        after: cursor ids, at most one per queue (each continues its own queue).

    Raises:
        JobNotFoundError: a cursor id names no job.
        CLIError: a cursor's job is on a queue not listed, or two are on one queue.
    """
    now = time.time() if now is None else now
    positions: dict[str, str] = {}
    for job_id in after:
        queue = manager.get_job(job_id).queue
        if queue not in names:
            raise CLIError(f"--after {job_id}: that job is on queue {queue!r}, which is not listed")
        if queue in positions:
            raise CLIError(f"--after: {positions[queue]} and {job_id} are both on queue {queue!r}; give one")
        positions[queue] = job_id
    page = min(_PAGE, limit + offset + 1)

    def tagged(name: str) -> Iterator[tuple[str, Job]]:
        walk = _walk(
            manager.get_queue(name), state, job_type, positions.get(name), newest=newest, now=now, page=page
        )
        return ((name, job) for job in walk)

    merged = heapq.merge(*(tagged(n) for n in names), key=lambda item: item[1].created_at, reverse=newest)
    shown: list[Job] = []
    for index, (name, job) in enumerate(itertools.islice(merged, offset + limit)):
        positions[name] = job.job_id
        if index >= offset:
            shown.append(job)
    more = next(merged, None) is not None
    cursor = ",".join(positions[n] for n in names if n in positions) if more else None
    return ListPage(shown, cursor)


def delayed_counts(manager: JobQueueManager) -> dict[str, int]:
    """How many PENDING jobs of each queue wait for their ``scheduled_at`` (a cheap count
    on every backend: :meth:`Queue.count_scheduled`); queues with none are left out."""
    counts = {name: queue.count_scheduled() for name, queue in sorted(manager.queues.items())}
    return {name: count for name, count in counts.items() if count}


@click.command()
@common_options
def status(*, backend: str | None, config_path: str | None, as_json: bool) -> None:
    """Job counts per state of every queue (delayed jobs as SCHEDULED), and busy workers."""
    env = env_of(backend, config_path)
    with env.manager() as manager:
        now = time.time()
        delayed = delayed_counts(manager)
        table, counts = status_table(manager, delayed)
        workers = busy_workers(manager)
        dead_letters = len(dead_jobs(manager, None, 10_000))
        dropped = manager.get_dead_letter_queue().count_dropped()
        storage = storage_diagnostics(manager)
        registry = registry_report(manager, now)
        by_level = manager.count_by_priority()
        if as_json:
            echo_json({
                "backend": env.backend, "queues": counts, "delayed": delayed, "ready_by_priority": by_level,
                "dead_letters": dead_letters,
                "dead_letters_dropped": dropped, "workers": workers, "registry": registry,
            } | ({"storage": storage} if storage else {}))
            return
        click.echo(f"backend: {env.backend}")
        for line in storage_lines(storage):
            click.echo(line)
        click.echo()
        click.echo(table)
        waiting = sum(delayed.values())
        if waiting:
            click.echo(f"\nscheduled: {waiting} delayed job(s) waiting for their time (PENDING until then; "
                       "typedq list --state scheduled)")
        if any(any(levels.values()) for levels in by_level.values()):
            names = [level.name for level in LEVELS]
            rows = [[name, *(levels[n] for n in names)] for name, levels in by_level.items()]
            click.echo("\nready by priority level:")
            click.echo(render_table(["QUEUE", *names], rows, right=range(1, 6)))
        kept = f", {dropped} oldest dropped (dlq_max)" if dropped else ""
        click.echo(f"\ndead letters: {dead_letters}{kept} (typedq dlq list)\n")
        for line in registry_lines(registry, now):
            click.echo(line)
        if not workers:
            click.echo("\nworkers: none running a job")
            return
        rows = [
            [w["process"], {True: "yes", False: "NO (lease will expire)", None: "?"}[w["alive"]],
             len(w["running"]), ", ".join(w["queues"])]
            for w in workers
        ]
        click.echo("\n" + render_table(["WORKER PROCESS", "ALIVE", "RUNNING", "QUEUES"], rows, right=[2]))


def _split_ids(values: Sequence[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@click.command(name="list")
@state_option
@click.option("-q", "--queue", help="Only this queue.")
@click.option("--type", "job_type", help="Only this job type.")
@click.option("-n", "--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many jobs first.")
@click.option("--after", multiple=True, metavar="ID[,ID...]",
              help="Continue after these jobs: the cursor the previous page printed.")
@click.option("--newest", is_flag=True, help="Newest first.")
@common_options
def list_cmd(
    *, state: str | None, queue: str | None, job_type: str | None, limit: int, offset: int,
    after: tuple[str, ...], newest: bool, backend: str | None, config_path: str | None, as_json: bool,
) -> None:
    """List jobs, oldest first (--newest: newest first), a page at a time.

    \b
    When more jobs follow, the last line is the command for the next page:
      typedq list --after ID        (one cursor id per queue listed)
    """
    with env_of(backend, config_path).manager([queue]) as manager:
        names = [queue] if queue else sorted(manager.queues)
        now = time.time()
        page = list_page(
            manager, names, state=state, job_type=job_type, limit=limit, offset=offset,
            after=_split_ids(after), newest=newest, now=now,
        )
    if as_json:
        echo_json([job_json(j, now) for j in page.jobs])
    elif page.jobs:
        click.echo(render_table(JOB_HEADERS, [job_row(j, now) for j in page.jobs]))
    else:
        click.echo("no jobs")
    if page.cursor is not None:
        click.echo(f"next page: --after {page.cursor}", err=as_json)


@click.command()
@click.argument("job_id")
@click.option("-q", "--queue", help="The job's queue, if the backend cannot list its queues.")
@common_options
def show(
    *, job_id: str, queue: str | None, backend: str | None, config_path: str | None, as_json: bool
) -> None:
    """Show one job: every field, its progress, result (a shell job's stdout/stderr) or
    error, and the lines its handler logged."""
    with env_of(backend, config_path).manager([queue]) as manager:
        job = manager.get_job(job_id)
        logs = manager.get_logs(job_id)
        now = time.time()
        if as_json:
            echo_json({**job_json(job, now), "logs": [line.to_dict() for line in logs]})
        else:
            click.echo(job_detail(job, now, logs))
