"""The ``typedq`` command line as a queuectl user expects it (spec 003), read by people.

queuectl's names (``worker start --count``, ``dlq retry``, ``processing``), delayed jobs
shown as ``scheduled``, local ISO times (``--json`` keeps the numbers beside them),
reading commands that refuse a missing database, paging with cursors, jobs from stdin,
and what ``cancel`` says of a running job. Fixtures come from ``test_cli``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from tests.integration import test_cli
from tests.integration.test_cli import (
    ON_EVERY_STORE,
    Run,
    _json,
    _make_dead,
    _one_error_line,
    _pids_of,
    _run_worker_until,
)

from typedq._timefmt import iso_local
from typedq.job import Job, JobStatus
from typedq.manager import JobQueueManager

# The CLI fixtures: a SQLite file in tmp_path (and Redis for ON_EVERY_STORE), the CLI invoked
# in-process on it, a manager.
backend = test_cli.backend
run = test_cli.run
manager = test_cli.manager

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d")
EPOCH = re.compile(r"\b1\d{9}\.\d+")


def _ids(result_json: list[dict[str, object]]) -> list[object]:
    return [j["job_id"] for j in result_json]


# -- queuectl's names ----------------------------------------------------------------------------


@ON_EVERY_STORE
@pytest.mark.timeout(60)
def test_worker_start_count_runs_that_many_worker_processes(run: Run, manager: JobQueueManager) -> None:
    ids = [f"j{n}" for n in range(4)]
    for job_id in ids:
        assert run("enqueue", "--id", job_id, "true").exit_code == 0
    queue = manager.get_queue("default")
    done = lambda: all(queue.get_job(i).status is JobStatus.COMPLETED for i in ids)  # noqa: E731
    result = _run_worker_until(run, done, "start", "--count", "2")
    assert result.exit_code == 0, result.output
    assert "2 process(es)" in result.stderr
    assert os.getpid() not in _pids_of(manager, ids)


@ON_EVERY_STORE
def test_worker_start_without_count_is_typedq_worker(run: Run, manager: JobQueueManager) -> None:
    assert run("enqueue", "--id", "a", "true").exit_code == 0
    queue = manager.get_queue("default")
    result = _run_worker_until(run, lambda: queue.get_job("a").status is JobStatus.COMPLETED, "start")
    assert result.exit_code == 0, result.output
    assert f"threads in process {os.getpid()}" in result.stderr
    assert "disagree" in _one_error_line(run("worker", "start", "--count", "2", "--processes", "3"))


@ON_EVERY_STORE
def test_dlq_retry_is_replay(run: Run, manager: JobQueueManager) -> None:
    _make_dead(manager, "d1")
    assert _json(run("dlq", "retry", "d1", "--json")) == {"replayed": ["d1"], "dependents": []}
    assert manager.get_job("d1").status is JobStatus.PENDING
    assert "PENDING, not DEAD" in _one_error_line(run("dlq", "retry", "d1"))


@ON_EVERY_STORE
def test_state_processing_means_running(run: Run, manager: JobQueueManager) -> None:
    for job_id in ("a", "b"):
        assert run("enqueue", "--id", job_id, "true").exit_code == 0
    claim = manager.get_queue("default").claim("w", lease_s=30)
    assert claim is not None
    assert _ids(_json(run("list", "--state", "processing", "--json"))) == [claim.job.job_id]
    assert _ids(_json(run("list", "--state", "PROCESSING", "--json"))) == [claim.job.job_id]
    assert _ids(_json(run("list", "-s", "running", "--json"))) == [claim.job.job_id]


@ON_EVERY_STORE
def test_a_delayed_job_is_listed_as_scheduled(run: Run, manager: JobQueueManager) -> None:
    assert run("enqueue", "--id", "now", "true").exit_code == 0
    assert run("enqueue", "--id", "later", "--delay", "3600", "true").exit_code == 0
    assert manager.get_job("later").status is JobStatus.PENDING  # stored as it always was

    table = run("list").stdout
    later = next(line for line in table.splitlines() if line.startswith("later"))
    assert "SCHEDULED" in later
    assert "waiting until" in later
    assert re.search(r"\(in (59\.\d|60\.0) min\)", later), later
    assert "PENDING" in next(line for line in table.splitlines() if line.startswith("now"))

    assert _ids(_json(run("list", "--state", "scheduled", "--json"))) == ["later"]
    assert _ids(_json(run("list", "--state", "pending", "--json"))) == ["now"]
    listed = _json(run("list", "--json"))
    assert [(j["status"], j["state"]) for j in listed] == [("PENDING", "PENDING"), ("PENDING", "SCHEDULED")]

    status = _json(run("status", "--json"))
    assert status["delayed"] == {"default": 1}
    assert status["queues"]["default"]["PENDING"] == 2  # the stored counts
    text = run("status").stdout
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("QUEUE"))
    header, default = lines[at], lines[at + 1]
    columns = dict(zip(header.split(), default.split(), strict=True))
    assert (columns["PENDING"], columns["SCHEDULED"]) == ("1", "1")
    assert "1 delayed job(s) waiting" in text

    shown = run("show", "later").stdout
    assert re.search(r"state: +SCHEDULED \(PENDING, waiting until " + ISO.pattern + r" \(in ", shown), shown


# -- times for people ------------------------------------------------------------------------


def test_tables_show_local_iso_times_and_json_keeps_numbers_beside_them(
    run: Run, manager: JobQueueManager
) -> None:
    assert run("enqueue", "--id", "a", "--delay", "5", "true").exit_code == 0
    for args in (["list"], ["show", "a"]):
        text = run(*args).stdout
        assert ISO.search(text), text
        assert not EPOCH.search(text), text
    assert "(in " in run("show", "a").stdout
    job = _json(run("list", "--json"))[0]
    assert isinstance(job["created_at"], float)
    assert job["created_at_iso"] == iso_local(job["created_at"])
    assert job["scheduled_at_iso"] == iso_local(job["scheduled_at"])
    assert job["started_at"] is None
    assert job["started_at_iso"] is None
    shown = _json(run("show", "a", "--json"))
    assert shown["created_at_iso"] == iso_local(manager.get_job("a").created_at)


# -- a missing database ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["status"], ["list"], ["list", "--state", "dead"], ["show", "x"], ["wait", "x"], ["cancel", "x"],
        ["dlq", "list"], ["dlq", "replay", "--all"], ["dlq", "retry", "x"], ["dlq", "purge", "--yes"],
    ],
    ids="-".join,
)
def test_reading_commands_refuse_a_missing_database(run: Run, tmp_path: Path, args: list[str]) -> None:
    typo = tmp_path / "jbos.db"
    line = _one_error_line(run(*args, "--backend", f"sqlite:///{typo}"))
    assert f"no database at {typo}" in line
    assert not typo.exists()
    assert not list(tmp_path.glob("jbos.db*"))


def test_enqueue_creates_the_database(run: Run, tmp_path: Path) -> None:
    fresh = tmp_path / "new.db"
    assert run("enqueue", "true", "--backend", f"sqlite:///{fresh}").exit_code == 0
    assert fresh.exists()
    assert len(_json(run("list", "--json", "--backend", f"sqlite:///{fresh}"))) == 1


# -- paging ----------------------------------------------------------------------------------


@ON_EVERY_STORE
def test_list_pages_with_a_cursor_newest_and_offset(run: Run, manager: JobQueueManager) -> None:
    for n in range(7):
        assert run("enqueue", "--id", f"j{n}", "true").exit_code == 0
    first = run("list", "-n", "3")
    assert first.stdout.splitlines()[-1] == "next page: --after j2"
    second = run("list", "-n", "3", "--after", "j2", "--json")
    assert _ids(json.loads(second.stdout)) == ["j3", "j4", "j5"]
    assert "next page: --after j5" in second.stderr
    last = run("list", "-n", "3", "--after", "j5")
    assert "j6" in last.stdout
    assert "next page" not in last.output
    assert _ids(_json(run("list", "--newest", "-n", "2", "--json"))) == ["j6", "j5"]
    assert _ids(_json(run("list", "--newest", "--after", "j5", "-n", "2", "--json"))) == ["j4", "j3"]
    assert _ids(_json(run("list", "--offset", "5", "--json"))) == ["j5", "j6"]
    assert "no job with job_id='ghost'" in _one_error_line(run("list", "--after", "ghost"))


@ON_EVERY_STORE
def test_list_pages_across_queues_in_creation_order(run: Run, manager: JobQueueManager) -> None:
    order = [("a0", "qa"), ("b0", "qb"), ("a1", "qa"), ("a2", "qa"), ("b1", "qb"), ("b2", "qb")]
    for n, (job_id, queue) in enumerate(order):
        q = manager.queues.get(queue) or manager.create_queue(queue)
        q.enqueue(Job(job_type="x", job_id=job_id, queue=queue, created_at=1_000.0 + n))
    seen: list[object] = []
    args: list[str] = []
    for _ in range(10):
        result = run("list", "-n", "2", "--json", *args)
        seen += _ids(_json(result))
        cursor = re.search(r"next page: --after (\S+)", result.stderr)
        if cursor is None:
            break
        args = ["--after", cursor.group(1)]
    assert seen == [job_id for job_id, _ in order]
    assert _ids(_json(run("list", "--newest", "-n", "3", "--json"))) == ["b2", "b1", "a2"]


# -- jobs from stdin -------------------------------------------------------------------------


@ON_EVERY_STORE
def test_enqueue_dash_reads_one_json_job_from_stdin(run: Run, manager: JobQueueManager) -> None:
    result = run("enqueue", "-", "--json", input='{\n  "id": "one",\n  "command": "echo hi"\n}\n')
    assert _json(result)["job_id"] == "one"
    assert manager.get_job("one").payload["command"] == "echo hi"


@ON_EVERY_STORE
def test_enqueue_dash_reads_json_lines_all_or_none(run: Run, manager: JobQueueManager) -> None:
    lines = "\n".join([
        '{"id": "l1", "command": "true"}',
        "",
        '{"id": "l2", "type": "resize", "payload": {"w": 3}, "depends_on": ["l3"]}',
        '{"id": "l3", "command": "echo three", "priority": 9}',
    ])
    result = _json(run("enqueue", "-", "--json", input=lines))
    assert result == {"job_ids": ["l1", "l2", "l3"], "queue": "default", "count": 3}
    assert manager.get_job("l3").priority == 9
    assert manager.get_job("l2").depends_on == ["l3"]

    bad = '{"id": "m1", "command": "true"}\n{"id": "m2", "command": "true"\n'
    assert "line 2 of stdin" in _one_error_line(run("enqueue", "-", input=bad))
    duplicate = '{"id": "m1", "command": "true"}\n{"id": "l1", "command": "true"}\n'
    assert "l1" in _one_error_line(run("enqueue", "-", input=duplicate))
    two_queues = '{"id": "m1", "command": "true"}\n{"id": "m2", "command": "true", "queue": "x"}\n'
    assert "2 queues" in _one_error_line(run("enqueue", "-", input=two_queues))
    assert "not a JSON job" in _one_error_line(run("enqueue", "-", input="echo hi\n"))
    assert "no job on stdin" in _one_error_line(run("enqueue", "-", input=""))
    assert sorted(_ids(_json(run("list", "--json")))) == ["l1", "l2", "l3"]  # nothing half-written


# -- cancel of a running job -----------------------------------------------------------------


@ON_EVERY_STORE
def test_cancel_of_a_running_handler_job_says_it_will_finish(run: Run, manager: JobQueueManager) -> None:
    manager.submit("resize", {"w": 1}, job_id="r", queue="default")
    assert run("enqueue", "--id", "s", "sleep 5").exit_code == 0
    queue = manager.get_queue("default")
    claimed = {c.job.job_id for c in queue.claim_many("w", lease_s=30, limit=2)}
    assert claimed == {"r", "s"}
    outcome = _json(run("cancel", "r", "s", "--json"))
    assert outcome["r"].startswith("still RUNNING")
    assert "sees ctx.cancelled within one heartbeat" in outcome["r"]
    assert "records it CANCELLED and refuses its result" in outcome["r"]
    assert outcome["s"] == "cancel requested"  # a shell job: its command is stopped
    assert queue.get_job("r").cancel_requested
