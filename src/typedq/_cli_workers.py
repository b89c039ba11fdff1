"""CLI commands about workers and re-running jobs: ``typedq workers``, ``typedq worker
stop`` and ``typedq retry``, and the worker lines of ``typedq status``.

Workers are read from the worker registry of each queue (``Queue.workers``), so they
are seen whatever process or host runs them, idle ones included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

import click

from typedq._cli_common import CLIError, common_options, env_of
from typedq._cli_output import echo_json, render_table
from typedq._identity import HOST
from typedq._timefmt import iso_local, relative
from typedq.backends.base import WorkerInfo
from typedq.job import JobStatus
from typedq.manager import JobQueueManager

__all__ = ["registry_report", "retry", "stop_workers_cmd", "workers_cmd"]


def _entry_json(info: WorkerInfo, now: float) -> dict[str, Any]:
    return info.to_dict() | {
        "alive": info.alive(now),
        "started_at_iso": iso_local(info.started_at),
        "last_seen_iso": iso_local(info.last_seen),
    }


def registry_report(manager: JobQueueManager, now: float) -> dict[str, Any]:
    """The registry's view for ``typedq status``: the workers, and how many PENDING jobs
    wait for a job type that no live worker of their queue handles."""
    entries = manager.registered_workers()
    unhandled: dict[str, dict[str, int]] = {}
    for name, queue in manager.queues.items():
        handled = {t for w in entries if w.queue == name and w.alive(now) for t in w.job_types}
        waiting = {t: n for t, n in queue.count_by_type(JobStatus.PENDING).items() if t not in handled}
        if waiting:
            unhandled[name] = waiting
    return {"workers": [_entry_json(w, now) for w in entries], "unhandled": unhandled}


def registry_lines(report: dict[str, Any], now: float) -> list[str]:
    """Human lines for :func:`registry_report` (``typedq status``)."""
    lines = []
    live = [w for w in report["workers"] if w["alive"]]
    lines.append(f"workers: {len(live)} live, {len(report['workers']) - len(live)} dead (typedq workers)")
    for queue, waiting in sorted(report["unhandled"].items()):
        types = ", ".join(f"{t} ({n})" for t, n in sorted(waiting.items()))
        lines.append(f"waiting for a job type no live worker of {queue!r} handles: {types}")
    return lines


@click.command(name="workers")
@click.option("--live", is_flag=True, help="Only workers that heartbeated recently.")
@common_options
def workers_cmd(*, live: bool, backend: str | None, config_path: str | None, as_json: bool) -> None:
    """The registered workers of every queue (any process or host, idle ones too)."""
    with env_of(backend, config_path).manager() as manager:
        now = time.time()
        entries = [w for w in manager.registered_workers() if w.alive(now) or not live]
    if as_json:
        echo_json([_entry_json(w, now) for w in entries])
        return
    if not entries:
        click.echo("no workers registered")
        return
    rows = [
        [
            w.worker_id, w.queue, f"{w.host}:{w.pid}", "alive" if w.alive(now) else "DEAD",
            relative(w.last_seen, now), w.jobs_done, w.jobs_failed, ", ".join(w.current) or "-",
            ", ".join(w.job_types),
        ]
        for w in entries
    ]
    headers = ["WORKER", "QUEUE", "HOST:PID", "STATE", "LAST SEEN", "DONE", "FAILED", "RUNNING", "JOB TYPES"]
    click.echo(render_table(headers, rows, right=[5, 6]))


@click.command(name="stop")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the stopped workers have left the registry.")
@click.option("--timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="How long to wait, in seconds.")
@common_options
def stop_workers_cmd(
    *, wait: bool, timeout: float, backend: str | None, config_path: str | None, as_json: bool
) -> None:
    """Stop the live workers of this backend on this host gracefully (SIGTERM).

    Running jobs finish within the workers' grace period; the rest go back to the queue.
    Workers of other hosts are listed, not signalled.
    """
    env = env_of(backend, config_path)
    with env.manager() as manager:
        now = time.time()
        live = [w for w in manager.registered_workers() if w.alive(now)]
        here = [w for w in live if w.host == HOST]
        elsewhere = sorted({f"{w.host}:{w.stop_pid}" for w in live if w.host != HOST})
        signalled: list[int] = []
        for pid in sorted({w.stop_pid for w in here}):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                signalled.append(pid)
        ids = {w.worker_id for w in here}
        deadline = time.monotonic() + timeout
        left = ids
        while wait and left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = ids & {w.worker_id for w in manager.registered_workers()}
    outcome = {"signalled": signalled, "workers": sorted(ids), "still_registered": sorted(left),
               "other_hosts": elsewhere}
    if as_json:
        echo_json(outcome)
    else:
        if not signalled:
            click.echo("no live workers of this backend on this host")
        else:
            click.echo(f"sent SIGTERM to {len(signalled)} process(es) ({len(ids)} worker(s)): "
                       + " ".join(map(str, signalled)))
        if wait and left:
            click.echo(f"still registered after {timeout:g} s: {', '.join(sorted(left))}")
        for where in elsewhere:
            click.echo(f"not signalled (another host): {where}")
    if wait and left:
        raise click.exceptions.Exit(1)


@click.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--with-dependents/--without-dependents", default=True, show_default=True,
              help="Also run again the jobs that failed because these did.")
@common_options
def retry(
    *, job_ids: tuple[str, ...], with_dependents: bool, backend: str | None, config_path: str | None,
    as_json: bool,
) -> None:
    """Run jobs that ended FAILED, DEAD or CANCELLED again (fresh: no retries counted)."""
    outcome: dict[str, list[str]] = {}
    with env_of(backend, config_path).manager() as manager:
        for job_id in job_ids:
            status = manager.get_job(job_id).status  # unknown ids: exit 2 before any change
            if status not in (JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED):
                raise CLIError(
                    f"job {job_id} is {status.value}: only FAILED, DEAD or CANCELLED jobs run again"
                )
        for job_id in job_ids:
            outcome[job_id] = manager.retry(job_id, with_dependents=with_dependents)
    if as_json:
        echo_json(outcome)
        return
    for job_id, ids in outcome.items():
        more = f", with {len(ids) - 1} dependent(s) that failed because of it" if len(ids) > 1 else ""
        click.echo(f"{job_id}: PENDING again{more}")
