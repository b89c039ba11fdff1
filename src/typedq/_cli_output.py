"""How the ``typedq`` commands print: tables for people, JSON for scripts, progress.

Tables and progress go through :func:`click.echo`; progress goes to stderr, so ``--json``
output on stdout stays clean for a pipe.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import click

from typedq.job import Job, JobStatus
from typedq.shell import SHELL_JOB_TYPE

__all__ = [
    "STATUS_ORDER",
    "echo_json",
    "fmt_time",
    "job_detail",
    "job_row",
    "job_summary",
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


def fmt_time(ts: float | None) -> str:
    """A local time as ``YYYY-MM-DD HH:MM:SS`` (``-`` for None)."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


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


def job_row(job: Job) -> list[object]:
    """A row of :data:`JOB_HEADERS`."""
    return [
        job.job_id, job.queue, job.job_type, job.status.value,
        f"{job.retry_count}/{job.max_retries}", job.priority, fmt_time(job.created_at),
        job_summary(job),
    ]


def job_detail(job: Job) -> str:
    """Every field of a job, one per line, with a shell job's output in full."""
    lines = [
        ("id", job.job_id), ("type", job.job_type), ("queue", job.queue),
        ("state", job.status.value), ("priority", job.priority),
        ("retries", f"{job.retry_count} of {job.max_retries}"), ("attempts", job.attempt),
        ("workers lost", job.lost_count), ("created", fmt_time(job.created_at)),
        ("scheduled", fmt_time(job.scheduled_at)), ("started", fmt_time(job.started_at)),
        ("finished", fmt_time(job.finished_at)), ("worker", job.worker_id),
        ("lease until", fmt_time(job.lease_until)), ("timeout", job.timeout_seconds),
        ("depends on", ", ".join(job.depends_on) or None),
        ("cancel requested", "yes" if job.cancel_requested else None),
        ("error", job.error),
    ]
    width = max(len(k) for k, _ in lines)
    out = [f"{k + ':':<{width + 1}} {v}" for k, v in lines if v is not None]
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
