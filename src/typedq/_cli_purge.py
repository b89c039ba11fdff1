"""``typedq purge``: delete jobs that ended longer ago than a duration (``Queue.purge``).

The manager's reaper purges COMPLETED and CANCELLED jobs past ``result_ttl`` while workers
run; this command does it by hand, for any of the statuses a job ends in, and is the way
to clear old DEAD and FAILED jobs (``--dead`` includes the dead-letter queue). Without
``--yes`` it only says how many jobs it would delete.
"""

from __future__ import annotations

import click

from typedq._cli_common import CLIError, common_options, env_of
from typedq._cli_output import echo_json
from typedq._timefmt import DURATION_FORMS, iso_local, parse_duration
from typedq.backends.base import Queue
from typedq.job import JobStatus
from typedq.leases import PURGE_BATCH

__all__ = ["purge"]

_FLAGS = (
    ("completed", JobStatus.COMPLETED),
    ("cancelled", JobStatus.CANCELLED),
    ("failed", JobStatus.FAILED),
    ("dead", JobStatus.DEAD),
)


def _matching(queue: Queue, status: JobStatus, older_than: float) -> int:
    """How many jobs of ``queue`` in ``status`` finished before ``older_than`` (a read)."""
    count, after = 0, None
    while True:
        page = queue.list_jobs(status=status, limit=1000, after=after)
        count += sum(1 for job in page if job.finished_at is not None and job.finished_at < older_than)
        if len(page) < 1000:
            return count
        after = page[-1].job_id


def _purge_all(queue: Queue, status: JobStatus, older_than: float) -> int:
    """Purge in batches of :data:`~typedq.leases.PURGE_BATCH` (one transition each)."""
    total = 0
    while True:
        done = queue.purge(statuses=[status], older_than=older_than, limit=PURGE_BATCH)
        total += done
        if done < PURGE_BATCH:
            return total


@click.command()
@click.option("--completed", is_flag=True, help="COMPLETED jobs (their results go with them).")
@click.option("--cancelled", is_flag=True, help="CANCELLED jobs.")
@click.option("--failed", is_flag=True, help="FAILED jobs (their dependency failed).")
@click.option("--dead", is_flag=True, help="DEAD jobs, and dead letters (without --queue).")
@click.option("--older-than", "older_than", required=True, metavar="DURATION",
              help="Only jobs that finished longer ago than this: 90s, 15m, 2h, 1d, 1w; 0 for all.")
@click.option("-q", "--queue", help="Only this queue.")
@click.option("--yes", is_flag=True, help="Really delete (without it nothing changes).")
@common_options
def purge(
    *, completed: bool, cancelled: bool, failed: bool, dead: bool, older_than: str, queue: str | None,
    yes: bool, backend: str | None, config_path: str | None, as_json: bool,
) -> None:
    """Delete jobs that ended longer ago than --older-than, in batches; needs --yes.

    \b
      typedq purge --completed --older-than 1d --yes
      typedq purge --dead --failed --older-than 30d --queue emails --yes
    """
    chosen = {"completed": completed, "cancelled": cancelled, "failed": failed, "dead": dead}
    statuses = [status for name, status in _FLAGS if chosen[name]]
    if not statuses:
        raise CLIError("say what to purge: --completed, --cancelled, --failed and/or --dead")
    try:
        seconds = parse_duration(older_than)
    except ValueError:
        raise CLIError(f"--older-than {older_than!r} is not a duration: {DURATION_FORMS}") from None
    with env_of(backend, config_path).manager([queue]) as manager:
        cutoff = manager.clock.now() - seconds
        targets = [manager.get_queue(queue)] if queue else [manager.queues[n] for n in sorted(manager.queues)]
        if dead and not queue:
            targets.append(manager.get_dead_letter_queue())
        plan = [(q, status) for q in targets for status in statuses]
        if not yes:
            would = sum(_matching(q, status, cutoff) for q, status in plan)
            raise CLIError(
                f"would delete {would} job(s) that finished before {iso_local(cutoff, 'seconds')}; "
                "nothing changed: add --yes to delete them"
            )
        purged: dict[str, dict[str, int]] = {}
        for q, status in plan:
            count = _purge_all(q, status, cutoff)
            if count:
                purged.setdefault(q.name, {})[status.value] = count
    total = sum(n for by_status in purged.values() for n in by_status.values())
    if as_json:
        echo_json({"purged": purged, "total": total, "older_than": cutoff})
        return
    click.echo(f"purged {total} job(s) that finished before {iso_local(cutoff, 'seconds')}")
    for name, by_status in purged.items():
        click.echo(f"  {name}: " + ", ".join(f"{status} {n}" for status, n in by_status.items()))
