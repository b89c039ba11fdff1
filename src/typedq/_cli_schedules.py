"""``typedq schedules``: list, pause, resume and remove the periodic jobs of a backend.

Schedules are declared in application code (``manager.schedule``, ``@manager.periodic``)
and stored on their queue; these commands read and change what is stored, for every
queue of the backend. Times are shown in local time (``--json`` keeps the epoch numbers
and adds the local ISO strings beside them).
"""

from __future__ import annotations

import time
from typing import Any

import click

from typedq._cli_common import CLIError, common_options, env_of
from typedq._cli_output import echo_json, render_table
from typedq._timefmt import iso_local, relative
from typedq.backends.base import ScheduleEntry

__all__ = ["schedules"]


def _rule(entry: ScheduleEntry) -> str:
    if entry.cron is not None:
        return f"{entry.cron} ({entry.tz})"
    return f"every {entry.every_s:g} s"


def _entry_json(queue: str, entry: ScheduleEntry) -> dict[str, Any]:
    return {"queue": queue, **entry.to_dict()} | {
        "next_run_iso": iso_local(entry.next_run_at, "seconds"),
        "last_run_iso": iso_local(entry.last_run_at, "seconds"),
    }


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    return f"{iso_local(ts, 'seconds')} ({relative(ts, now)})"


@click.group(name="schedules")
def schedules() -> None:
    """Periodic jobs stored on the backend: list, pause, resume, remove."""


@schedules.command(name="list")
@common_options
def schedules_list(*, backend: str | None, config_path: str | None, as_json: bool) -> None:
    """Every schedule of every queue, with its next run in local time."""
    with env_of(backend, config_path).manager() as manager:
        found = manager.schedules()
    now = time.time()
    if as_json:
        echo_json([_entry_json(queue, entry) for queue, entry in found])
        return
    if not found:
        click.echo("no schedules")
        return
    rows = [
        [
            queue, entry.name, entry.job_type, _rule(entry),
            "paused" if entry.paused else _when(entry.next_run_at, now),
            _when(entry.last_run_at, now), entry.catch_up,
        ]
        for queue, entry in found
    ]
    headers = ["QUEUE", "NAME", "JOB TYPE", "RULE", "NEXT RUN", "LAST RUN", "CATCH-UP"]
    click.echo(render_table(headers, rows))


def _change(
    action: str, name: str, queue: str | None, *, backend: str | None, config_path: str | None, as_json: bool
) -> None:
    with env_of(backend, config_path).manager([queue]) as manager:
        if action == "pause":
            entry = manager.pause_schedule(name, queue=queue)
        else:
            entry = manager.resume_schedule(name, queue=queue)
        where = queue or next(q for q, e in manager.schedules() if e.name == name)
    if as_json:
        echo_json(_entry_json(where, entry))
        return
    if entry.paused:
        click.echo(f"{name} ({where}): paused")
    else:
        click.echo(f"{name} ({where}): next run {_when(entry.next_run_at, time.time())}")


@schedules.command(name="pause")
@click.argument("name")
@click.option("-q", "--queue", help="The schedule's queue, when several hold one of that name.")
@common_options
def schedules_pause(
    *, name: str, queue: str | None, backend: str | None, config_path: str | None, as_json: bool
) -> None:
    """Stop firing a schedule (it stays stored; `resume` starts it again)."""
    _change("pause", name, queue, backend=backend, config_path=config_path, as_json=as_json)


@schedules.command(name="resume")
@click.argument("name")
@click.option("-q", "--queue", help="The schedule's queue, when several hold one of that name.")
@common_options
def schedules_resume(
    *, name: str, queue: str | None, backend: str | None, config_path: str | None, as_json: bool
) -> None:
    """Fire a paused schedule again from its next slot (the paused slots are skipped)."""
    _change("resume", name, queue, backend=backend, config_path=config_path, as_json=as_json)


@schedules.command(name="remove")
@click.argument("name")
@click.option("-q", "--queue", help="The schedule's queue, when several hold one of that name.")
@click.option("--yes", is_flag=True, help="Really remove it (without it nothing changes).")
@common_options
def schedules_remove(
    *, name: str, queue: str | None, yes: bool, backend: str | None, config_path: str | None, as_json: bool
) -> None:
    """Delete a schedule (the jobs it made stay). An application that still declares it
    stores it again when it starts."""
    with env_of(backend, config_path).manager([queue]) as manager:
        target = next(
            (q for q, e in manager.schedules() if e.name == name and queue in (None, q)), None
        )
        if target is None:
            manager.remove_schedule(name, queue=queue)  # raises the error naming it
        if not yes:
            raise CLIError(f"would remove schedule {name} of queue {target}; add --yes to do it")
        manager.remove_schedule(name, queue=queue)
    if as_json:
        echo_json({"removed": name, "queue": target})
    else:
        click.echo(f"removed schedule {name} of queue {target}")
