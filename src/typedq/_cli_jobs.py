"""Job-level helpers of the ``typedq`` commands: building a job from the command line or
stdin, collecting jobs across queues, and the worker processes seen running jobs.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Final

from typedq._cli_common import CLIError
from typedq._identity import owner_alive, parse_worker_id
from typedq.errors import InvalidJobError, InvalidTransitionError
from typedq.job import Job, JobStatus
from typedq.manager import JobQueueManager
from typedq.shell import SHELL_JOB_TYPE, shell_payload

__all__ = [
    "UNIQUE_FIELDS",
    "build_job",
    "busy_workers",
    "collect_jobs",
    "dead_jobs",
    "delete_dead",
    "enqueue_stdin",
    "read_stdin_jobs",
    "storage_diagnostics",
    "storage_lines",
]

_JSON_JOB_KEYS: Final = frozenset({
    "id", "job_id", "command", "type", "job_type", "payload", "queue", "priority", "max_retries",
    "timeout", "timeout_seconds", "delay", "delay_s", "depends_on", "metadata", "shell", "cwd", "env",
    "unique_key", "unique_for", "unique_states", "on_conflict",
})
#: The fields that make a single submit of a unique job (not a batch from stdin).
UNIQUE_FIELDS: Final = ("unique_key", "unique_for", "unique_states", "on_conflict")


def _parse_json_job(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CLIError(f"malformed JSON job: {exc}") from None
    if not isinstance(data, dict):
        raise CLIError(f"a JSON job must be an object, not {type(data).__name__}")
    unknown = sorted(set(data) - _JSON_JOB_KEYS)
    if unknown:
        raise CLIError(f"unknown key {unknown[0]!r} in JSON job; keys: {', '.join(sorted(_JSON_JOB_KEYS))}")
    return data


def _first(data: dict[str, Any], *keys: str) -> Any:
    return next((data[k] for k in keys if data.get(k) is not None), None)


def build_job(job: str | None, options: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(job type, payload, submit fields) from the JOB argument and the options."""
    data: dict[str, Any] = {}
    if job is not None and job.lstrip().startswith(("{", "[")):
        data = _parse_json_job(job)
    elif job is not None:
        if options["job_type"] not in (None, SHELL_JOB_TYPE):
            raise CLIError("give either a shell command or --type with --payload, not both")
        data = {"command": job}
    job_type = options["job_type"] or _first(data, "type", "job_type")
    command = data.get("command")
    if job_type is None and command is None:
        raise CLIError('missing command: give a shell command, a JSON job with "command" or "type", '
                       "or --type")

    def pick(option: str, *keys: str) -> Any:
        return options[option] if options[option] is not None else _first(data, *keys)

    timeout = pick("timeout", "timeout", "timeout_seconds")
    fields: dict[str, Any] = {
        "job_id": pick("job_id", "id", "job_id"),
        "queue": pick("queue", "queue") or "default",
        "priority": pick("priority", "priority"),
        "max_retries": pick("max_retries", "max_retries"),
        "delay_s": pick("delay", "delay", "delay_s"),
        "depends_on": list(options["depends_on"]) or data.get("depends_on"),
        "metadata": data.get("metadata"),
        **{name: pick(name, name) for name in UNIQUE_FIELDS},
    }
    if command is not None or job_type == SHELL_JOB_TYPE:
        if job_type not in (None, SHELL_JOB_TYPE):
            raise CLIError(f"a job with a \"command\" is a shell job; it cannot have type {job_type!r}")
        if command is None or (isinstance(command, str) and not command.strip()):
            raise CLIError("missing command: the shell command is empty")
        shell = pick("shell", "shell") or False
        payload = shell_payload(
            command, shell=shell, timeout=timeout, cwd=data.get("cwd"), env=data.get("env")
        )
        job_type = SHELL_JOB_TYPE
    else:
        extra = sorted(k for k in ("shell", "cwd", "env") if k in data)
        if extra:
            raise CLIError(f"{extra[0]!r} applies to shell jobs only (jobs with a \"command\")")
        payload = data.get("payload", {})
        if options["payload"] is not None:
            try:
                payload = json.loads(options["payload"])
            except ValueError as exc:
                raise CLIError(f"malformed JSON in --payload: {exc}") from None
        if not isinstance(payload, dict):
            raise CLIError(f"the payload must be a JSON object, not {type(payload).__name__}")
        fields["timeout_seconds"] = timeout
    return str(job_type), payload, {k: v for k, v in fields.items() if v is not None}


def read_stdin_jobs(text: str) -> list[str]:
    """The JSON jobs of ``typedq enqueue -``: one JSON object, or JSON lines (one job a line).

    Raises:
        CLIError: nothing on stdin, or a line that is not a JSON object.
    """
    if not text.strip():
        raise CLIError("no job on stdin: give a JSON job, or JSON lines (one job a line)")
    try:
        json.loads(text)
    except ValueError:
        lines = [line for line in text.splitlines() if line.strip()]
    else:
        lines = [text]
    for n, line in enumerate(lines, 1):
        if not line.lstrip().startswith("{"):
            where = f"line {n} of stdin" if len(lines) > 1 else "stdin"
            raise CLIError(f"{where} is not a JSON job: {line.strip()[:60]!r} (a JSON object is expected)")
    return lines


def enqueue_stdin(
    manager: JobQueueManager, texts: list[str], options: dict[str, Any]
) -> tuple[list[str], str]:
    """Add the JSON jobs ``texts`` in one ``enqueue_many``: all of them or none.

    The command's options (``--queue``, ``--priority``, ...) apply to every job, as to one.
    Returns the ids and the queue.

    Raises:
        CLIError: a job is invalid (naming its line), or the jobs name several queues.
    """
    built = []
    for n, text in enumerate(texts, 1):
        try:
            built.append(build_job(text, options))
        except CLIError as exc:
            raise CLIError(f"line {n} of stdin: {exc.message}") from None
    unique = next((name for _, _, fields in built for name in UNIQUE_FIELDS if name in fields), None)
    if unique is not None:
        raise CLIError(
            f"{unique} applies to one job: the jobs on stdin are added all or none, so submit "
            "unique jobs one per enqueue"
        )
    names = sorted({fields["queue"] for _, _, fields in built})
    if len(names) > 1:
        raise CLIError(
            f"the jobs on stdin are for {len(names)} queues ({', '.join(names)}); one enqueue adds "
            "jobs to one queue, all or none: split them by queue"
        )
    name = names[0]
    queue = manager.queues.get(name) or manager.create_queue(name)
    settings = {**manager.config, **manager.config["queues"].get(name, {})}
    jobs = []
    for n, (job_type, payload, given) in enumerate(built, 1):
        fields = {k: v for k, v in given.items() if k != "queue"}
        fields.setdefault("priority", settings["default_priority"])
        fields.setdefault("max_retries", settings["max_retries"])
        try:
            jobs.append(Job.create(job_type, payload, queue=name, now=manager.clock.now(), **fields))
        except InvalidJobError as exc:
            raise CLIError(f"line {n} of stdin: {exc}") from None
    return queue.enqueue_many(jobs), name


def busy_workers(manager: JobQueueManager) -> list[dict[str, Any]]:
    """Worker processes seen owning RUNNING jobs (workers keep no registry of their own)."""
    owners: dict[str, dict[str, Any]] = {}
    for queue in manager.queues.values():
        for job in queue.list_jobs(status=JobStatus.RUNNING, limit=10_000):
            parsed = parse_worker_id(job.worker_id or "")
            key = f"{parsed[0]}:{parsed[1]}" if parsed else str(job.worker_id)
            entry = owners.setdefault(key, {
                "process": key, "alive": owner_alive(job.worker_id), "queues": [], "running": [],
            })
            entry["running"].append(job.job_id)
            if queue.name not in entry["queues"]:
                entry["queues"].append(queue.name)
    return list(owners.values())


def collect_jobs(manager: JobQueueManager, queue: str | None, state: str | None,
             job_type: str | None, limit: int) -> list[Job]:
    names = [queue] if queue else sorted(manager.queues)
    status_filter = JobStatus(state.upper()) if state else None
    jobs: list[Job] = []
    for name in names:
        jobs += manager.get_queue(name).list_jobs(status=status_filter, job_type=job_type, limit=limit)
    jobs.sort(key=lambda j: j.created_at)
    return jobs[:limit]


def dead_jobs(manager: JobQueueManager, queue: str | None, limit: int) -> list[Job]:
    """The dead letters (of ``queue``): the dead-letter queue's copies, and DEAD jobs not
    (yet) copied there; each job once, its own queue's row first."""
    found = {j.job_id: j for j in collect_jobs(manager, queue, "DEAD", None, limit)}
    for job in manager.get_dead_letter_queue().list_jobs(status=JobStatus.DEAD, limit=limit):
        if queue in (None, job.queue):
            found.setdefault(job.job_id, job)
    return sorted(found.values(), key=lambda j: j.created_at)[:limit]


def delete_dead(manager: JobQueueManager, job: Job) -> bool:
    """Delete a dead letter: its copy and its row (when still DEAD); True if one went."""
    deleted = False
    with contextlib.suppress(KeyError):
        manager.get_dead_letter_queue().delete(job.job_id)
        deleted = True
    origin = manager.queues.get(job.queue)
    if origin is not None:
        with contextlib.suppress(KeyError, InvalidTransitionError):
            if origin.get_job(job.job_id).status is JobStatus.DEAD:
                origin.delete(job.job_id)
                deleted = True
    return deleted


def storage_diagnostics(manager: JobQueueManager) -> dict[str, Any]:
    """The storage facts of the manager's backend (``SQLiteQueue.diagnostics()``), or {}
    for a backend that has none (memory)."""
    queue = manager.queues.get("default") or next(iter(manager.queues.values()), None)
    diagnostics = getattr(queue, "diagnostics", None)
    if not callable(diagnostics):
        return {}
    return dict(diagnostics())


def storage_lines(storage: dict[str, Any]) -> list[str]:
    """The lines ``typedq status`` prints about the storage: the SQLite library and
    whether it has the WAL-reset bug."""
    if "sqlite_version" not in storage:
        return []
    line = f"sqlite: {storage['sqlite_version']} (module {storage.get('sqlite_driver', 'sqlite3')})"
    if not storage.get("wal_reset_bug"):
        return [line + ", free of the WAL-reset bug"]
    return [
        line + ", HAS the WAL-reset bug (3.7.0 to 3.51.2): several writer processes can,"
        " rarely, corrupt the file; pip install 'typedq[sqlite]' for SQLite 3.53"
        " (https://sqlite.org/wal.html#walresetbug)"
    ]
