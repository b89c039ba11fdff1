"""How the ``typedq`` commands print: tables for people, JSON for scripts, progress.

Tables and progress go through :func:`click.echo`; progress goes to stderr, so ``--json``
output on stdout stays clean for a pipe.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import click

from typedq._timefmt import iso_local, relative
from typedq.job import Job, JobLogLine, JobStatus
from typedq.shell import SHELL_JOB_TYPE

__all__ = [
    "STATUS_ORDER",
    "display_state",
    "echo_json",
    "fmt_time",
    "is_delayed",
    "job_detail",
    "job_json",
    "job_row",
    "job_summary",
    "progress_text",
    "render_table",
    "wait_with_progress",
]

#: Column order of the status tables.
STATUS_ORDER = [s.value for s in JobStatus]

JOB_HEADERS = ["ID", "QUEUE", "TYPE", "STATE", "TRIES", "PRIO", "CREATED", "INFO"]


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON (values JSON cannot hold are shown as text)."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _cell(value: object, width: int | None) -> str:
    text = "-" if value is None else str(value)
    text = " ".join(text.split()) if "\n" in text or "\t" in text else text
    if width is not None and len(text) > width:
        text = text[: max(1, width - 1)] + "…"
    return text


def render_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    right: Iterable[int] = (),
    max_width: int = 60,
) -> str:
    """Render rows as aligned columns under a header line.

    Args:
        headers: column titles.
        rows: cell values (None shows as ``-``); long cells are cut at ``max_width``.
        right: indexes of columns to right-align (numbers).
        max_width: the widest a cell may be.
    """
    cells = [[_cell(v, max_width) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    aligned = set(right)

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if i in aligned else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(row) for row in cells)])


def fmt_time(ts: float | None, now: float | None = None) -> str:
    """A local ISO time to the second (``-`` for None); with ``now``, how far it is too:
    ``2026-12-05T14:32:19+01:00 (in 2.0 s)``."""
    text = iso_local(ts, "seconds")
    if ts is None or text is None:
        return "-"
    return text if now is None else f"{text} ({relative(ts, now)})"


#: The epoch-time fields of a job, each shown beside an ``_iso`` string in ``--json``.
TIME_FIELDS: Final = ("created_at", "scheduled_at", "started_at", "finished_at", "lease_until")


def is_delayed(job: Job, now: float) -> bool:
    """Whether a PENDING job waits for its ``scheduled_at`` (a delay, a retry's backoff)."""
    return job.status is JobStatus.PENDING and job.scheduled_at is not None and job.scheduled_at > now


def display_state(job: Job, now: float) -> str:
    """The state people see: ``SCHEDULED`` for a delayed PENDING job, else the status."""
    return JobStatus.SCHEDULED.value if is_delayed(job, now) else job.status.value


def job_json(job: Job, now: float) -> dict[str, Any]:
    """``job.to_dict()`` plus, beside each epoch time, its local ISO string (``created_at``
    and ``created_at_iso``), and ``state``: the state a table shows (see :func:`display_state`)."""
    data = job.to_dict()
    for name in TIME_FIELDS:
        if name in data:
            data[f"{name}_iso"] = iso_local(data[name])
    data["state"] = display_state(job, now)
    return data


def _command_of(job: Job) -> str | None:
    if job.job_type != SHELL_JOB_TYPE:
        return None
    command = job.payload.get("command")
    if isinstance(command, list):
        return " ".join(str(a) for a in command)
    return None if command is None else str(command)


def job_summary(job: Job) -> str:
    """One line about a job: its error, else its command (shell jobs), else its payload."""
    if job.error:
        return job.error
    command = _command_of(job)
    if command is not None:
        return f"$ {command}"
    return json.dumps(job.payload, ensure_ascii=False, default=str)


def job_row(job: Job, now: float) -> list[object]:
    """A row of :data:`JOB_HEADERS`."""
    info = job_summary(job)
    if is_delayed(job, now):
        info = f"waiting until {fmt_time(job.scheduled_at, now)}; {info}"
    return [
        job.job_id, job.queue, job.job_type, display_state(job, now),
        f"{job.retry_count}/{job.max_retries}", job.priority, fmt_time(job.created_at),
        info,
    ]


def progress_text(job: Job) -> str:
    """A job's progress as text: ``3/10 (30%) message``; its state without one."""
    progress = job.progress
    if progress is None:
        return job.status.value.lower()
    done = f"{progress.done:g}" + ("" if progress.total is None else f"/{progress.total:g}")
    fraction = progress.fraction
    percent = "" if fraction is None else f" ({fraction:.0%})"
    return f"{done}{percent} {progress.message or ''}".rstrip()


def job_detail(job: Job, now: float, logs: Sequence[JobLogLine] = ()) -> str:
    """Every field of a job, one per line, with a shell job's output in full, its
    progress and the lines its handler logged."""
    state = job.status.value
    if is_delayed(job, now):
        state = f"SCHEDULED (PENDING, waiting until {fmt_time(job.scheduled_at, now)})"
    lines = [
        ("id", job.job_id), ("type", job.job_type), ("queue", job.queue),
        ("state", state), ("priority", job.priority),
        ("retries", f"{job.retry_count} of {job.max_retries}"), ("attempts", job.attempt),
        ("workers lost", job.lost_count), ("created", fmt_time(job.created_at, now)),
        ("scheduled", fmt_time(job.scheduled_at, now)), ("started", fmt_time(job.started_at, now)),
        ("finished", fmt_time(job.finished_at, now)), ("worker", job.worker_id),
        ("lease until", fmt_time(job.lease_until, now)), ("timeout", job.timeout_seconds),
        ("depends on", ", ".join(job.depends_on) or None),
        ("cancel requested", "yes" if job.cancel_requested else None),
        ("progress", None if job.progress is None else progress_text(job)),
        ("error", job.error),
    ]
    width = max(len(k) for k, _ in lines)
    out = [f"{k + ':':<{width + 1}} {v}" for k, v in lines if v is not None and v != "-"]
    out.append(f"{'payload:':<{width + 1}} {json.dumps(job.payload, ensure_ascii=False, default=str)}")
    result = job.result
    if isinstance(result, Mapping) and "exit_code" in result and job.job_type == SHELL_JOB_TYPE:
        out.append(f"{'exit code:':<{width + 1}} {result.get('exit_code')}")
        for stream in ("stdout", "stderr"):
            text = str(result.get(stream) or "")
            if text:
                out.append(f"--- {stream} ---")
                out.append(text.rstrip("\n"))
    elif result is not None:
        out.append(f"{'result:':<{width + 1}} {json.dumps(result, ensure_ascii=False, default=str)}")
    if logs:
        out.append("--- log ---")
        out.extend(f"{fmt_time(line.at)} [{line.attempt}] {line.message}" for line in logs)
    if job.traceback:
        out.append("--- traceback ---")
        out.append(job.traceback.rstrip("\n"))
    return "\n".join(out)


def wait_with_progress(
    poll: Callable[[], tuple[int, int, str]],
    *,
    label: str,
    timeout: float | None = None,
    interval: float = 0.1,
    quiet: bool = False,
) -> bool:
    """Poll until ``done >= total``, showing progress on stderr; False on timeout.

    Args:
        poll: returns ``(done, total, detail)``; ``detail`` is shown beside the bar.
        label: what is being waited for.
        timeout: seconds before giving up (None: no limit).
        interval: seconds between polls.
        quiet: show nothing.

    On a terminal this is a progress bar; otherwise a line at most once a second, so a
    log file gets a readable trace.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    done, total, detail = poll()
    if quiet:
        while done < total:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(interval)
            done, total, detail = poll()
        return True
    if sys.stderr.isatty():
        def show(item: str | None) -> str | None:
            return item

        with click.progressbar(
            length=max(total, 1), label=label, file=sys.stderr, show_pos=True, show_eta=False,
            item_show_func=show,
        ) as bar:
            shown = 0
            while True:
                bar.update(max(0, done - shown), detail)
                shown = max(shown, done)
                if done >= total:
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                time.sleep(interval)
                done, total, detail = poll()
    last: tuple[int, str] | None = None
    next_line = 0.0
    while True:
        now = time.monotonic()
        finished = done >= total
        if (done, detail) != last and (now >= next_line or finished):
            click.echo(f"{label}: {done}/{total} {detail}".rstrip(), err=True)
            last, next_line = (done, detail), now + 1.0
        if finished:
            return True
        if deadline is not None and now >= deadline:
            return False
        time.sleep(interval)
        done, total, detail = poll()
