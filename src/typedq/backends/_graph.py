"""Dependency-graph helpers for batches of jobs, shared by the backends.

A dependency must already be stored or be in the same batch, so the only cycles that can
form are within one batch: :func:`check_batch_acyclic` finds them, and
:func:`dependency_order` orders a batch so each job follows the batch jobs it depends on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from typedq.backends._control import LOGS_KEY, current_progress, logs_of_record
from typedq.errors import DependencyCycleError, InvalidJobError
from typedq.job import Job, JobLogLine

__all__ = ["check_batch_acyclic", "dependency_order", "jobs_from_export"]


def check_batch_acyclic(batch: dict[str, Job]) -> None:
    """Raise DependencyCycleError if the batch's own dependency edges form a cycle."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(batch, white)
    for root, root_job in batch.items():
        if color[root] != white:
            continue
        path: list[str] = [root]
        color[root] = grey
        stack: list[Iterator[str]] = [iter(root_job.depends_on)]
        while stack:
            dep = next(stack[-1], None)
            if dep is None:
                stack.pop()
                color[path.pop()] = black
                continue
            if dep not in batch:
                continue
            if color[dep] == grey:
                raise DependencyCycleError([*path[path.index(dep) :], dep])
            if color[dep] == white:
                color[dep] = grey
                path.append(dep)
                stack.append(iter(batch[dep].depends_on))


def dependency_order(batch: dict[str, Job]) -> list[Job]:
    """Order an acyclic batch so each job comes after the batch jobs it depends on."""
    ordered: list[Job] = []
    done: set[str] = set()

    def visit(job_id: str) -> None:
        stack = [(job_id, iter(batch[job_id].depends_on))]
        while stack:
            current, deps = stack[-1]
            dep = next(deps, None)
            if dep is None:
                stack.pop()
                if current not in done:
                    done.add(current)
                    ordered.append(batch[current])
            elif dep in batch and dep not in done:
                stack.append((dep, iter(batch[dep].depends_on)))

    for job_id in batch:
        if job_id not in done:
            visit(job_id)
    return ordered


def jobs_from_export(jobs_data: Iterable[dict[str, Any]]) -> tuple[list[Job], dict[str, list[JobLogLine]]]:
    """The jobs of ``export_jobs()`` data, for ``import_jobs``, and the log lines of
    those that have some (by job id). A job's progress comes with it (``Job.progress``).

    Raises:
        InvalidJobError: a record is malformed; the field is named ``jobs_data[i].field``.
    """
    jobs = []
    logs: dict[str, list[JobLogLine]] = {}
    for index, record in enumerate(jobs_data):
        data = record
        lines: list[JobLogLine] = []
        checked: object = record  # the data may not be what its type says
        if isinstance(checked, dict) and LOGS_KEY in record:
            data = dict(record)
            lines = logs_of_record(data, index)
        try:
            job = Job.from_dict(data)
        except InvalidJobError as exc:
            raise InvalidJobError(f"jobs_data[{index}].{exc.field}", exc.value, exc.allowed) from exc
        # Only the progress of the job's current attempt is shown (_control.current_progress),
        # on every backend alike, whatever an older version exported.
        job.progress = current_progress(job.progress, job.attempt)
        jobs.append(job)
        if lines:
            logs[job.job_id] = lines
    return jobs, logs
