"""The ``typedq`` command line: enqueue, run workers, inspect and manage jobs.

Every command talks to the backend named by ``--backend URL`` (or ``TYPEDQ_BACKEND``;
default ``sqlite:///./typedq.db``) through ``JobQueueManager`` and the ``Queue`` protocol
only. People get tables, scripts ``--json``; errors are one line on stderr with a
meaningful exit code (see :mod:`typedq._cli_common`), never a traceback (set
``TYPEDQ_DEBUG=1`` to see one).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import click

from typedq._cli_common import (
    CONFIG_KEYS,
    DURATION,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    CLIError,
    check_settings,
    common_options,
    config_key,
    env_of,
    exit_code_for,
    parse_value,
    save_settings,
)
from typedq._cli_demo import run_demo
from typedq._cli_inspect import list_cmd, show, status
from typedq._cli_jobs import build_job, dead_jobs, delete_dead, enqueue_stdin, read_stdin_jobs
from typedq._cli_ops import api_cmd, metrics_cmd
from typedq._cli_output import (
    JOB_HEADERS,
    echo_json,
    job_json,
    job_row,
    progress_text,
    render_table,
    wait_with_progress,
)
from typedq._cli_purge import purge
from typedq._cli_schedules import schedules
from typedq._cli_workers import retry, stop_workers_cmd, workers_cmd
from typedq._config import DEFAULT_CONFIG
from typedq._submit import ON_CONFLICT, check_on_conflict
from typedq.backends import backend_for
from typedq.errors import ConfigError, DuplicateJobError, InvalidTransitionError, TypedqError
from typedq.job import TERMINAL_STATUSES, JobStatus, Priority, parse_priority
from typedq.manager import JobQueueManager
from typedq.process import (
    StopRequest,
    check_shared_backend,
    load_app,
    run_worker_processes,
    serve,
    stop_signals,
)
from typedq.shell import SHELL_JOB_TYPE, register_shell_jobs

__all__ = ["cli"]

_STOP_HINT = "Ctrl-C stops (twice: at once)"


class _Group(click.Group):
    """Turns typedq errors into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except TypedqError as exc:
            if os.environ.get("TYPEDQ_DEBUG"):
                raise
            raise CLIError(str(exc), exit_code_for(exc)) from None
        except Exception as exc:
            if os.environ.get("TYPEDQ_DEBUG"):
                raise
            raise CLIError(
                f"unexpected {type(exc).__name__}: {exc} (set TYPEDQ_DEBUG=1 to see the traceback)",
                EXIT_FAILED,
            ) from None


_common = common_options
_env = env_of


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--backend", metavar="URL", help="Backend URL; env TYPEDQ_BACKEND; default sqlite:///./typedq.db.")
@click.option("--config", "config_path", metavar="PATH", help="Settings file; env TYPEDQ_CONFIG.")
@click.option("-v", "--verbose", is_flag=True, help="Show the library's log warnings.")
@click.version_option(package_name="typedq", prog_name="typedq")
@click.pass_context
def cli(ctx: click.Context, backend: str | None, config_path: str | None, verbose: bool) -> None:
    """typedq: a typed job queue. Enqueue jobs, run workers, inspect and manage them.

    \b
    Exit codes: 0 ok · 1 failed (a job failed, the backend failed)
                2 bad usage or input · 124 wait timed out
                128+N a worker stopped at once by signal N
    """
    # Commands other than `worker` print their own outcome; the library's log lines
    # (the SQLite version warning, the demo's retries) would only be noise there.
    if not verbose and ctx.invoked_subcommand != "worker":
        log = logging.getLogger("typedq")
        level = log.level
        log.setLevel(logging.CRITICAL if ctx.invoked_subcommand == "demo" else logging.ERROR)
        ctx.call_on_close(lambda: log.setLevel(level))


class _PriorityType(click.ParamType[int]):
    """A priority on the command line: 1-10 or a level name in any case."""

    name = "priority"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        text = value.strip() if isinstance(value, str) else value
        try:
            return parse_priority(int(text) if isinstance(text, str) and text.isdigit() else text)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


PRIORITY = _PriorityType()


# -- enqueue ---------------------------------------------------------------------------------


def _states_list(value: str | None) -> list[str] | None:
    """``--unique-states``: comma-separated states, any case (checked, with the allowed ones named,
    where the job is built)."""
    return None if value is None else [part.strip().upper() for part in value.split(",")]


@cli.command()
@click.argument("job", required=False)
@click.option("--type", "job_type", help="Job type of a non-shell job (with --payload).")
@click.option("--payload", metavar="JSON", help="Payload of a --type job, a JSON object.")
@click.option("-q", "--queue", help="Queue (default: default).")
@click.option("--id", "job_id", help="Job id (default: a new UUID).")
@click.option("-p", "--priority", type=PRIORITY, help="1-10 or a level: critical high normal low batch.")
@click.option("--max-retries", type=click.IntRange(min=0), help="Retries before the DLQ.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds (kills a command).")
@click.option("--delay", type=click.FloatRange(min=0), help="Run no earlier than this many seconds from now.")
@click.option("--depends-on", multiple=True, metavar="ID", help="A job that must complete first.")
@click.option("--unique-key", metavar="KEY", help="Add nothing while a job of the queue holds this key.")
@click.option("--unique-for", type=DURATION, help="Release the key after this long anyway: 90s, 15m, 2h, 1d.")
@click.option("--unique-states", metavar="STATES", callback=lambda _ctx, _param, value: _states_list(value),
              help="The states in which a job holds its key, comma-separated (default: PENDING,RUNNING).")
@click.option("--on-conflict", type=click.Choice(ON_CONFLICT),
              help="When the key is held: return (print the holder, exit 0; default) or raise (exit 2).")
@click.option("--shell/--no-shell", default=None, help="Run the command through /bin/sh (pipes, globs).")
@click.option("--wait", is_flag=True, help="Wait for the job to end; exit 0 only if it COMPLETED.")
@click.option("--wait-timeout", type=click.FloatRange(min=0), help="Seconds --wait waits (no limit).")
@_common
def enqueue(
    *, job: str | None, wait: bool, wait_timeout: float | None, backend: str | None,
    config_path: str | None, as_json: bool, **options: Any,
) -> None:
    """Enqueue a job: a shell command, a JSON job, or --type with --payload; - reads stdin.

    \b
      typedq enqueue 'echo hello'
      typedq enqueue '{"id": "job1", "command": "sleep 2", "max_retries": 2}'
      typedq enqueue --type resize --payload '{"url": "u", "width": 3}' --queue images
      typedq enqueue - < jobs.jsonl     (a JSON job, or JSON lines: all or none are added)
      typedq enqueue --unique-key report:12 --unique-for 1h 'make report'
      typedq enqueue --unique-key nightly --unique-states PENDING,RUNNING,COMPLETED 'backup'
    A shell job completes when its command exits 0 (stdout/stderr are kept with the result);
    any other exit code is a failed attempt, retried with backoff, then dead-lettered.
    """
    texts: list[str | None] = [job]
    if job == "-":
        texts = [*read_stdin_jobs(sys.stdin.read())]
    if len(texts) > 1:
        with _env(backend, config_path).manager(create=True) as manager:
            job_ids, queue = enqueue_stdin(manager, [str(t) for t in texts], options)
            if wait:
                _wait_for(manager, job_ids, wait_timeout, as_json)
            elif as_json:
                echo_json({"job_ids": job_ids, "queue": queue, "count": len(job_ids)})
            else:
                shown = ", ".join(job_ids[:10]) + (", ..." if len(job_ids) > 10 else "")
                click.echo(f"enqueued {len(job_ids)} jobs on queue {queue!r}: {shown}")
        return
    job_type, payload, fields = build_job(texts[0], options)
    on_conflict = check_on_conflict(fields.pop("on_conflict", "return"))
    with _env(backend, config_path).manager([fields["queue"]], create=True) as manager:
        try:
            job_id, created = manager.submit(job_type, payload, on_conflict="raise", **fields), True
        except DuplicateJobError as exc:
            # A held key: the holder is the answer, unless the caller asked for an error.
            if exc.unique_key is None or exc.existing_id is None or on_conflict == "raise":
                raise
            job_id, created = exc.existing_id, False
        stored = manager.get_job(job_id)
        if not wait:
            if as_json:
                reply: dict[str, Any] = {"job_id": job_id, "queue": stored.queue, "type": stored.job_type,
                                         "status": stored.status.value}
                echo_json({**reply, "created": created} if "unique_key" in fields else reply)
            elif created:
                click.echo(f"enqueued {job_id} ({job_type}) on queue {stored.queue!r}")
            else:
                click.echo(
                    f"not enqueued: unique key {fields['unique_key']!r} is held by {job_id} "
                    f"({stored.job_type}, {stored.status.value}) on queue {stored.queue!r}"
                )
            return
        _wait_for(manager, [job_id], wait_timeout, as_json)


# -- waiting, inspecting ---------------------------------------------------------------------


def _wait_for(manager: JobQueueManager, job_ids: Sequence[str], timeout: float | None, as_json: bool) -> None:
    jobs = {job_id: manager.get_job(job_id) for job_id in job_ids}

    def poll() -> tuple[int, int, str]:
        for job_id, old in jobs.items():
            if old.status not in TERMINAL_STATUSES:
                jobs[job_id] = manager.get_queue(old.queue).get_job(job_id)
        if len(jobs) == 1:
            # One job: the bar follows the job's own progress (ctx.progress), in percent.
            (job,) = jobs.values()
            if job.status in TERMINAL_STATUSES:
                return 100, 100, job.status.value.lower()
            fraction = None if job.progress is None else job.progress.fraction
            return min(99, int((fraction or 0.0) * 100)), 100, progress_text(job)
        states = [j.status.value for j in jobs.values()]
        busy = {s: states.count(s) for s in ("PENDING", "RUNNING") if s in states}
        return sum(j.status in TERMINAL_STATUSES for j in jobs.values()), len(jobs), " ".join(
            f"{n} {s.lower()}" for s, n in busy.items()
        )

    finished = wait_with_progress(poll, label="waiting", timeout=timeout, quiet=as_json)
    now = time.time()
    if as_json:
        echo_json([job_json(j, now) for j in jobs.values()])
    else:
        click.echo(render_table(JOB_HEADERS, [job_row(j, now) for j in jobs.values()]))
        if len(jobs) == 1:
            result = next(iter(jobs.values())).result
            if isinstance(result, dict) and result.get("stdout"):
                click.echo(str(result["stdout"]).rstrip("\n"))
    if not finished:
        raise CLIError(f"timed out after {timeout:g}s; the jobs are still queued or running", EXIT_TIMEOUT)
    failed = [j.job_id for j in jobs.values() if j.status is not JobStatus.COMPLETED]
    if failed:
        raise CLIError(f"{len(failed)} job(s) did not complete: {', '.join(failed[:10])}", EXIT_FAILED)


@cli.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--timeout", type=click.FloatRange(min=0), help="Seconds to wait (default: no limit).")
@_common
def wait(
    *, job_ids: tuple[str, ...], timeout: float | None, backend: str | None, config_path: str | None,
    as_json: bool,
) -> None:
    """Wait until jobs end, with a progress bar; exit 0 only if all COMPLETED (124: timeout)."""
    with _env(backend, config_path).manager() as manager:
        _wait_for(manager, job_ids, timeout, as_json)


cli.add_command(status)
cli.add_command(list_cmd)
cli.add_command(show)
cli.add_command(workers_cmd)
cli.add_command(retry)
cli.add_command(schedules)
cli.add_command(purge)
cli.add_command(metrics_cmd)
cli.add_command(api_cmd)


@cli.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.option("-q", "--queue", help="The job's queue, if the backend cannot list its queues.")
@_common
def cancel(
    *, job_ids: tuple[str, ...], queue: str | None, backend: str | None, config_path: str | None,
    as_json: bool,
) -> None:
    """Cancel jobs: a pending job now; a running one is asked to stop (exit 1 if one had ended)."""
    outcome: dict[str, str] = {}
    with _env(backend, config_path).manager([queue]) as manager:
        for job_id in job_ids:
            manager.get_job(job_id)  # an unknown id is bad input (exit 2) before anything changes
        for job_id in job_ids:
            if manager.cancel(job_id):
                outcome[job_id] = "cancelled"
                continue
            job = manager.get_job(job_id)
            if job.status is not JobStatus.RUNNING:
                outcome[job_id] = f"already {job.status.value}"
            elif job.job_type == SHELL_JOB_TYPE:
                outcome[job_id] = "cancel requested"
            else:
                # Cooperative first: the handler sees ctx.cancelled within one heartbeat.
                grace = manager.config["cancel_grace_s"]
                forced = (
                    "it may run to its end" if grace is None
                    else f"after {grace:g}s its worker records it CANCELLED and refuses its result"
                )
                outcome[job_id] = (
                    "still RUNNING: cancel requested; its handler sees ctx.cancelled within one "
                    f"heartbeat and should stop; {forced}"
                )
    if as_json:
        echo_json(outcome)
    else:
        for job_id, what in outcome.items():
            click.echo(f"{job_id}: {what}")
    if any(w.startswith("already") for w in outcome.values()):
        raise click.exceptions.Exit(EXIT_FAILED)


@cli.command()
@click.argument("job_id")
@click.argument("priority", type=PRIORITY)
@click.option("-q", "--queue", help="The job's queue, if the backend cannot list its queues.")
@_common
def priority(
    *, job_id: str, priority: int, queue: str | None, backend: str | None, config_path: str | None,
    as_json: bool,
) -> None:
    """Change a job's priority: 1-10 or a level (critical, high, normal, low, batch)."""
    with _env(backend, config_path).manager([queue]) as manager:
        manager.get_job(job_id)  # an unknown id is bad input (exit 2)
        manager.set_priority(job_id, priority, queue=queue)
        job = manager.get_job(job_id)
    level = Priority.level_of(job.priority).name
    if as_json:
        echo_json({"job_id": job_id, "priority": job.priority, "level": level, "status": job.status.value})
    else:
        click.echo(f"{job_id}: priority {job.priority} ({level}), {job.status.value}")


# -- dead letters ----------------------------------------------------------------------------


@cli.group()
def dlq() -> None:
    """The dead-letter queue: jobs that used up their retries (state DEAD)."""


@dlq.command(name="list")
@click.option("-q", "--queue", help="Only this queue.")
@click.option("-n", "--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@_common
def dlq_list(
    *, queue: str | None, limit: int, backend: str | None, config_path: str | None, as_json: bool
) -> None:
    """List dead jobs with their last error."""
    with _env(backend, config_path).manager([queue]) as manager:
        jobs = dead_jobs(manager, queue, limit)
        if as_json:
            now = time.time()
            echo_json([job_json(j, now) for j in jobs])
        elif jobs:
            rows = [[j.job_id, j.queue, j.job_type, f"{j.retry_count}/{j.max_retries}", j.lost_count, j.error]
                    for j in jobs]
            click.echo(render_table(["ID", "QUEUE", "TYPE", "TRIES", "LOST", "ERROR"], rows, max_width=80))
        else:
            click.echo("the dead-letter queue is empty")


@dlq.command(name="replay")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead job (of --queue).")
@click.option("-q", "--queue", help="Only this queue (with --all), or the jobs' queue.")
@click.option("--with-dependents/--without-dependents", default=True, show_default=True,
              help="Also run again the jobs that failed because these died.")
@_common
def dlq_replay(
    *, job_ids: tuple[str, ...], replay_all: bool, queue: str | None, with_dependents: bool,
    backend: str | None, config_path: str | None, as_json: bool,
) -> None:
    """Run dead jobs again: PENDING, retries reset to 0 (and the jobs that failed with them)."""
    if bool(job_ids) == replay_all:
        raise CLIError("give the JOB_IDs to replay, or --all")
    with _env(backend, config_path).manager([queue]) as manager:
        if replay_all:
            targets = [j.job_id for j in dead_jobs(manager, queue, 10_000)]
        else:
            for job_id in job_ids:
                job = manager.get_job(job_id)
                if job.status is not JobStatus.DEAD:
                    raise CLIError(f"job {job_id} is {job.status.value}, not DEAD: only dead jobs replay")
            targets = list(job_ids)
        replayed: list[str] = []
        dependents: list[str] = []
        for job_id in targets:
            try:
                reopened = manager.retry(job_id, with_dependents=with_dependents)
            except (KeyError, InvalidTransitionError):
                continue  # replayed by someone else meanwhile
            replayed.append(job_id)
            dependents += reopened[1:]
    if as_json:
        echo_json({"replayed": replayed, "dependents": dependents})
    else:
        click.echo(f"replayed {len(replayed)} job(s)" + (f": {', '.join(replayed[:20])}" if replayed else ""))
        if dependents:
            click.echo(f"and {len(dependents)} dependent job(s) that had failed with them, PENDING again")


#: queuectl's name for replay: the same command.
dlq.add_command(click.Command(
    "retry", callback=dlq_replay.callback, params=dlq_replay.params,
    help="Same as replay (queuectl's name): run dead jobs again, PENDING, retries reset to 0.",
))


@dlq.command(name="purge")
@click.option("-q", "--queue", help="Only this queue.")
@click.option("--yes", is_flag=True, help="Really delete (without it nothing changes).")
@_common
def dlq_purge(
    *, queue: str | None, yes: bool, backend: str | None, config_path: str | None, as_json: bool
) -> None:
    """Delete every dead job (of --queue); needs --yes."""
    with _env(backend, config_path).manager([queue]) as manager:
        dead = dead_jobs(manager, queue, 10_000)
        if not yes:
            raise CLIError(f"would delete {len(dead)} dead job(s); nothing changed: add --yes to delete them")
        deleted = [job.job_id for job in dead if delete_dead(manager, job)]
    if as_json:
        echo_json({"deleted": deleted})
    else:
        click.echo(f"deleted {len(deleted)} dead job(s)")


# -- config ----------------------------------------------------------------------------------


@cli.group()
def config() -> None:
    """Persisted settings (typedq.json next to the database): max-retries, backoff-base, ..."""


@config.command(name="get")
@click.argument("key", required=False)
@_common
def config_get(*, key: str | None, backend: str | None, config_path: str | None, as_json: bool) -> None:
    """Show one setting, or all of them with where each comes from."""
    env = _env(backend, config_path)
    settings = env.settings()
    names = [key] if key else sorted(CONFIG_KEYS)
    values = {}
    for name in names:
        real = config_key(name)
        values[name] = (settings[real], "file") if real in settings else (DEFAULT_CONFIG[real], "default")
    if as_json:
        echo_json({name: value for name, (value, _) in values.items()})
    elif key:
        click.echo(json.dumps(values[key][0]))
    else:
        rows = [[n, json.dumps(v), src] for n, (v, src) in values.items()]
        click.echo(f"settings file: {env.config_path}\n")
        click.echo(render_table(["KEY", "VALUE", "FROM"], rows))


@config.command(name="set", context_settings={"ignore_unknown_options": True})
@click.argument("key")
@click.argument("value")
@_common
def config_set(
    *, key: str, value: str, backend: str | None, config_path: str | None, as_json: bool
) -> None:
    """Set a setting, checked as the manager checks it (e.g. max-retries 5, backoff-base 2)."""
    env = _env(backend, config_path)
    real = config_key(key)
    settings = {**env.settings(), real: parse_value(value)}
    try:
        check_settings(settings)
    except ConfigError as exc:
        raise CLIError(f"invalid value for {key}: {exc}") from None
    save_settings(env.config_path, settings)
    if as_json:
        echo_json({key: settings[real]})
    else:
        click.echo(f"{key} = {json.dumps(settings[real])} (saved to {env.config_path})")


@config.command(name="unset")
@click.argument("key")
@_common
def config_unset(*, key: str, backend: str | None, config_path: str | None, as_json: bool) -> None:
    """Remove a setting, back to its default."""
    env = _env(backend, config_path)
    real = config_key(key)
    settings = env.settings()
    settings.pop(real, None)
    save_settings(env.config_path, settings)
    if not as_json:
        click.echo(f"{key} = {json.dumps(DEFAULT_CONFIG[real])} (default)")


# -- worker, demo ----------------------------------------------------------------------------


def _split_queues(values: Sequence[str]) -> list[str]:
    return [q.strip() for v in values for q in v.split(",") if q.strip()]


_LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)
#: The options of ``typedq worker`` and ``typedq worker start``.
_WORKER_OPTIONS = [
    click.option("--app", metavar="MODULE:ATTR", help="Your JobQueueManager (or a function returning one)."),
    click.option(
        "-Q", "--queues", multiple=True, metavar="NAMES",
        help="Queues to work, comma-separated; name=weight: every worker serves them all by weight.",
    ),
    click.option(
        "-c", "--concurrency", type=click.IntRange(min=1),
        help="Worker threads per queue; for a queue of async handlers, jobs at once on one event loop.",
    ),
    click.option(
        "--worker-class", type=click.Choice(["auto", "thread", "async"]),
        help="Worker kind for every queue: async runs --concurrency jobs on one event loop "
        "(default: each queue's worker_class setting, auto: async when all its handlers are async def).",
    ),
    click.option("-P", "--processes", type=click.IntRange(min=0),
                 help="Worker processes; 0: threads in this process (default: the processes setting)."),
    click.option(
        "--memory-limit", type=click.IntRange(min=1), metavar="MIB",
        help="Address space each worker process may map, MiB; a handler past it gets MemoryError "
        "(default: the memory_limit_mb setting; worker processes only).",
    ),
    click.option("--grace", type=click.FloatRange(min=0), help="Seconds jobs may finish after a signal."),
    click.option("--log-level", type=_LEVELS, help="Log level (default WARNING)."),
    click.option("--backend", metavar="URL", help="Backend URL (env TYPEDQ_BACKEND); --app brings its own."),
    click.option("--config", "config_path", metavar="PATH", help="Settings file (typedq.json)."),
]


def _worker_options(func: Any) -> Any:
    for option in reversed(_WORKER_OPTIONS):
        func = option(func)
    return func


@cli.group(invoke_without_command=True)
@_worker_options
@click.pass_context
def worker(ctx: click.Context, /, **options: Any) -> None:
    """Run workers until SIGTERM/SIGINT. Shell-command jobs always run; --app adds your job types.

    \b
    `typedq worker [OPTIONS]` and `typedq worker start [--count N] [OPTIONS]` are the same.
    First signal: stop claiming, let running jobs finish for the grace period, then give
    the rest back to the queue (interrupted, not failed). Second signal: give them back now.
    """
    if ctx.invoked_subcommand is None:
        _run_worker(**options)


@worker.command(name="start")
@_worker_options
@click.option("--count", type=click.IntRange(min=0), metavar="N",
              help="Worker processes, as --processes (queuectl's name).")
@click.pass_context
def worker_start(ctx: click.Context, /, count: int | None, **options: Any) -> None:
    """Start workers (queuectl's form): --count N worker processes; otherwise as `typedq worker`."""
    before = ctx.parent.params if ctx.parent is not None else {}
    merged = {k: v if v not in (None, ()) else before.get(k, v) for k, v in options.items()}
    if count is not None:
        if merged["processes"] not in (None, count):
            raise CLIError(f"--count {count} and --processes {merged['processes']} disagree: give one")
        merged["processes"] = count
    _run_worker(**merged)


worker.add_command(stop_workers_cmd)


def _run_worker(
    *, app: str | None, queues: tuple[str, ...], concurrency: int | None, processes: int | None,
    worker_class: str | None, memory_limit: int | None,
    grace: float | None, log_level: str | None, backend: str | None, config_path: str | None,
) -> None:
    level = (log_level or "WARNING").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = _split_queues(queues) or None
    env = _env(backend, config_path)
    where = f"app {app}" if app else env.backend
    manager: JobQueueManager | None = None
    if processes is None:
        # Not given: the `processes` setting decides (the app's config, or typedq.json).
        manager = load_app(app) if app else env.open(create=True)
        processes = int(manager.config["processes"])
    if memory_limit is not None and not processes:
        if manager is not None:
            manager.close(graceful=False)
        raise CLIError("--memory-limit caps worker processes: give --processes N (N >= 1) with it")
    if processes:
        cfg = None
        try:
            if not app:
                manager = manager or env.open(create=True)  # with every queue the backend knows
                names = names or sorted(manager.queues)
                cfg = manager.config
            if manager is not None:
                check_shared_backend(manager.config["backend"])
        finally:
            if manager is not None:
                manager.close(graceful=False)
        click.echo(f"typedq worker: {processes} process(es) on {where}; {_STOP_HINT}", err=True)
        pool = run_worker_processes(
            app, processes=processes, concurrency=concurrency, queues=names, grace_s=grace,
            config=cfg, log_level=level, worker_class=worker_class, memory_limit_mb=memory_limit,
        )
        click.echo(
            f"typedq worker: stopped{' at once' if pool.immediate else ''}; {pool.completed} completed, "
            f"{pool.failed} failed attempts, {pool.released} given back, {pool.restarts} restarts",
            err=True,
        )
        raise click.exceptions.Exit(pool.exit_code)
    manager = manager or (load_app(app) if app else env.open(create=True))
    if not backend_for(manager.config["backend"]).shared:
        click.echo(
            f"typedq worker: note: {manager.config['backend']} holds jobs inside this process only", err=True
        )
    stop = StopRequest()
    try:
        register_shell_jobs(manager)
        click.echo(f"typedq worker: threads in process {os.getpid()} on {where}; {_STOP_HINT}", err=True)
        with stop_signals({signal.SIGTERM: stop.escalate, signal.SIGINT: stop.escalate}):
            report = serve(
                manager, queues=names, concurrency=concurrency, grace_s=grace, stop=stop,
                worker_class=worker_class,
            )
    finally:
        manager.close(graceful=False)
    click.echo(
        f"typedq worker: stopped{' at once' if report.immediate else ''} ({report.reason}); "
        f"{report.completed} completed, {report.failed} failed attempts, {len(report.released)} given back",
        err=True,
    )
    code = 128 + (stop.signum or signal.SIGTERM) if report.immediate else EXIT_OK
    raise click.exceptions.Exit(code)


@cli.command()
@click.option("--backend", metavar="URL", help="Default: a fresh sqlite:///./typedq-demo.db.")
@click.option("--workers", type=click.IntRange(1, 32), default=4, help="Threads per queue (4).")
def demo(*, backend: str | None, workers: int) -> None:
    """Run a few hundred jobs (with dependencies, retries and a dead letter) and show the result."""
    raise click.exceptions.Exit(run_demo(backend, workers=workers))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    try:
        args = list(argv) if argv is not None else None
        rv = cli.main(args=args, prog_name="typedq", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return EXIT_FAILED
    return rv if isinstance(rv, int) else EXIT_OK
