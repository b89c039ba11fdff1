"""The ``typedq`` command line (click's CliRunner, plus a few real ``python -m typedq`` runs).

Most tests use a SQLite file in ``tmp_path`` (the CLI's state lives in the backend, so each
invocation sees what the previous one wrote); those marked ``ON_EVERY_STORE`` also run on
Redis, under a key prefix of their own. Bad input must give one ``Error:`` line and
exit 2, never a traceback; destructive commands without ``--yes`` change nothing (J6). A
payload over the size limit is bad input too (H3).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from tests.conformance.conftest import redis_test_url
from tests.helpers import interrupt_when, wait_until

from typedq.cli import cli
from typedq.job import JobStatus
from typedq.manager import JobQueueManager
from typedq.serializers import make_serializer

REPO = Path(__file__).resolve().parents[2]

Run = Callable[..., Result]


#: A test of a command on the stores the CLI is used with: it runs on a SQLite file and on
#: Redis (``backend`` parametrized); the other tests run on SQLite only.
ON_EVERY_STORE = pytest.mark.parametrize(
    "backend",
    [pytest.param("sqlite", id="sqlite"), pytest.param("redis", id="redis", marks=pytest.mark.redis)],
    indirect=True,
)


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The backend URL: a SQLite file in ``tmp_path`` (the default), or, for a test marked
    ``ON_EVERY_STORE``, also the Redis server under a key prefix of the test's own (its
    keys deleted at teardown); ``memory://`` when a test asks for it."""
    kind = getattr(request, "param", "sqlite")
    if kind in ("sqlite", "memory"):
        yield f"sqlite:///{tmp_path / 'jobs.db'}" if kind == "sqlite" else "memory://"
        return
    with redis_test_url() as url:
        yield url


@pytest.fixture
def run(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """Invoke the CLI in-process on the test's SQLite file (created first: reading
    commands refuse a missing one); exceptions propagate."""
    JobQueueManager({"backend": backend}).close()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TYPEDQ_CONFIG", raising=False)
    monkeypatch.setenv("TYPEDQ_BACKEND", backend)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def manager(backend: str) -> Iterator[JobQueueManager]:
    """A manager on the same file, to look at (and arrange) what the CLI did."""
    m = JobQueueManager({"backend": backend})
    yield m
    m.close(graceful=False)


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _one_error_line(result: Result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "no error message"
    return lines[-1]


def _make_dead(manager: JobQueueManager, job_id: str, queue: str = "default") -> None:
    manager.submit("anything", {"n": 1}, job_id=job_id, queue=queue, max_retries=0)
    q = manager.get_queue(queue)
    claim = q.claim("test-worker", lease_s=30.0)
    assert claim is not None
    q.bury(job_id, token=claim.token, error="RuntimeError: it broke")


def _run_worker_until(run: Run, done: Callable[[], bool], *args: str, timeout: float = 20.0) -> Result:
    """Run ``typedq worker`` in this process; SIGINT it once ``done()`` holds."""
    with interrupt_when(done, timeout):
        result = run("worker", "--concurrency", "2", *args)
    assert done(), f"the worker stopped before the jobs were done:\n{result.output}"
    return result


# -- enqueue, list, show --------------------------------------------------------------------


@ON_EVERY_STORE
def test_enqueue_a_shell_command_then_list_and_show(run: Run) -> None:
    result = run("enqueue", "echo hello")
    assert result.exit_code == 0, result.output
    assert "enqueued" in result.stdout
    listed = _json(run("list", "--json"))
    assert len(listed) == 1
    job = listed[0]
    assert (job["job_type"], job["status"], job["payload"]["command"]) == ("shell", "PENDING", "echo hello")
    table = run("list")
    assert "$ echo hello" in table.stdout
    assert "PENDING" in table.stdout
    shown = run("show", job["job_id"])
    assert shown.exit_code == 0
    assert "id:" in shown.stdout
    assert job["job_id"] in shown.stdout


@ON_EVERY_STORE
def test_enqueue_the_json_form_of_spec_003(run: Run, manager: JobQueueManager) -> None:
    data = _json(run("enqueue", '{"id": "job1", "command": "sleep 2", "max_retries": 2}', "--json"))
    assert data == {"job_id": "job1", "queue": "default", "type": "shell", "status": "PENDING"}
    job = manager.get_job("job1")
    assert job.max_retries == 2
    assert job.payload == {"command": "sleep 2", "shell": False, "timeout": None}


@ON_EVERY_STORE
def test_enqueue_a_typed_job_on_its_queue(run: Run, manager: JobQueueManager) -> None:
    data = _json(
        run(
            "enqueue",
            "--type",
            "resize",
            "--payload",
            '{"url": "u", "width": 3}',
            "--queue",
            "images",
            "--priority",
            "7",
            "--id",
            "r1",
            "--json",
        )
    )
    assert data["queue"] == "images"
    manager.create_queue("images")
    job = manager.get_job("r1")
    assert (job.job_type, job.payload, job.priority, job.queue) == (
        "resize",
        {"url": "u", "width": 3},
        7,
        "images",
    )
    listed = _json(run("list", "--queue", "images", "--json"))
    assert [j["job_id"] for j in listed] == ["r1"]


@ON_EVERY_STORE
def test_options_override_the_json_job_and_dependencies_are_kept(run: Run, manager: JobQueueManager) -> None:
    assert run("enqueue", "--id", "a", "true").exit_code == 0
    result = run(
        "enqueue", '{"id": "b", "command": "true", "priority": 2}', "--priority", "9", "--depends-on", "a"
    )
    assert result.exit_code == 0, result.output
    job = manager.get_job("b")
    assert (job.priority, job.depends_on) == (9, ["a"])


@ON_EVERY_STORE
@pytest.mark.timeout(30)
@pytest.mark.parametrize("limit", [None, 2000], ids=["default-1MiB", "configured"])
def test_enqueue_payload_size_limit_exact_accepted_one_byte_over_exit_2(
    run: Run, manager: JobQueueManager, limit: int | None
) -> None:
    """H3 through the CLI: the serialized payload may be exactly the limit, not one byte more."""
    if limit is None:
        limit = 1_048_576  # the default
    else:
        assert run("config", "set", "max-payload-size", str(limit)).exit_code == 0
    overhead = len(make_serializer("json").dumps({"s": ""}))

    def payload(size: int) -> str:
        return json.dumps({"s": "x" * (size - overhead)})

    accepted = run("enqueue", "--type", "blob", "--payload", payload(limit), "--id", "at-limit")
    assert accepted.exit_code == 0, accepted.output
    assert len(manager.get_job("at-limit").payload["s"]) == limit - overhead
    line = _one_error_line(run("enqueue", "--type", "blob", "--payload", payload(limit + 1), "--id", "over"))
    assert line.startswith("Error: ")
    assert f"{limit + 1} bytes" in line
    assert f"limit of {limit} bytes" in line
    assert [j["job_id"] for j in _json(run("list", "--json"))] == ["at-limit"]  # nothing written


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["enqueue", '{"id": "x", "command": "ls"'], "malformed JSON", id="malformed-json"),
        pytest.param(["enqueue", "[1, 2]"], "must be an object", id="json-array"),
        pytest.param(["enqueue", '{"cmd": "ls"}'], "unknown key 'cmd'", id="unknown-key"),
        pytest.param(["enqueue"], "missing command", id="no-command"),
        pytest.param(["enqueue", '{"id": "x"}'], "missing command", id="json-without-command"),
        pytest.param(["enqueue", '{"command": "  "}'], "command", id="blank-command"),
        pytest.param(["enqueue", "echo 'unbalanced"], "command", id="unbalanced-quote"),
        pytest.param(["enqueue", "--type", "x", "ls"], "not both", id="command-and-type"),
        pytest.param(["enqueue", "--type", "x", "--payload", "{oops"], "malformed JSON", id="bad-payload"),
        pytest.param(["enqueue", "--type", "x", "--payload", "[]"], "payload", id="payload-not-object"),
        pytest.param(["enqueue", "--id", "bad id!", "ls"], "job_id", id="bad-id"),
        pytest.param(["enqueue", "--depends-on", "ghost", "ls"], "ghost", id="unknown-dependency"),
        pytest.param(["show", "nope"], "no job with job_id='nope'", id="show-unknown"),
        pytest.param(["cancel", "nope"], "nope", id="cancel-unknown"),
        pytest.param(["dlq", "replay", "nope"], "nope", id="replay-unknown"),
        pytest.param(["dlq", "replay"], "--all", id="replay-nothing"),
        pytest.param(["wait", "nope"], "nope", id="wait-unknown"),
        pytest.param(["config", "set", "max-retry", "5"], "did you mean 'max-retries'", id="config-typo"),
        pytest.param(["config", "set", "max-retries", "-1"], "max_retries", id="config-negative"),
        pytest.param(["config", "set", "max-retries", "many"], "max_retries", id="config-not-a-number"),
        pytest.param(["config", "set", "lease", "1"], "lease_s", id="config-lease-vs-heartbeat"),
        pytest.param(["config", "set", "serializer", "yaml"], "yaml", id="config-unknown-serializer"),
        pytest.param(["config", "get", "colour"], "unknown config key", id="config-get-unknown"),
        pytest.param(["config", "set", "concurrency", "0"], "max_workers=0 is invalid: an int >= 1",
                     id="config-concurrency-0"),
        pytest.param(["config", "set", "max-payload-size", "40"],
                     "max_payload_size=40 is invalid: an int >= 41",
                     id="config-payload-below-frame-header"),
        pytest.param(["worker", "--app", "no_such_module_typedq:app"], "cannot import", id="bad-app"),
        pytest.param(["worker", "--app", "json"], "module:attribute", id="app-without-attribute"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(run: Run, args: list[str], needle: str) -> None:
    line = _one_error_line(run(*args))
    assert line.startswith("Error: ")
    assert needle in line


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["enqueue", "--priority", "11", "ls"], id="priority-range"),
        pytest.param(["list", "--state", "sleeping"], id="bad-state"),
        pytest.param(["list", "--limit", "0"], id="bad-limit"),
        pytest.param(["frobnicate"], id="unknown-command"),
        pytest.param(["worker", "--processes", "-1"], id="negative-processes"),
    ],
)
def test_usage_errors_exit_2(run: Run, args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "Error:" in result.stderr


@ON_EVERY_STORE
def test_priority_levels_by_name_in_enqueue_priority_and_status(run: Run, manager: JobQueueManager) -> None:
    assert run("enqueue", "--id", "h", "-p", "high", "true").exit_code == 0
    assert run("enqueue", "--id", "c", "--priority", "CRITICAL", "true").exit_code == 0
    assert run("enqueue", "--id", "n", "true").exit_code == 0
    assert [manager.get_job(i).priority for i in ("h", "c", "n")] == [7, 10, 5]
    changed = run("priority", "h", "batch")
    assert changed.exit_code == 0, changed.output
    assert changed.stdout.strip() == "h: priority 1 (BATCH), PENDING"
    assert _json(run("priority", "n", "low", "--json")) == {
        "job_id": "n", "priority": 3, "level": "LOW", "status": "PENDING"
    }
    assert manager.get_job("h").priority == 1
    assert "priority" in _one_error_line(run("priority", "h", "urgent"))
    assert manager.get_job("h").priority == 1
    assert "no job" in _one_error_line(run("priority", "missing", "high")).lower()
    status = _json(run("status", "--json"))
    assert status["ready_by_priority"]["default"] == {
        "CRITICAL": 1, "HIGH": 0, "NORMAL": 0, "LOW": 1, "BATCH": 1
    }
    table = run("status").stdout
    assert "ready by priority level:" in table
    header, row = table.split("ready by priority level:")[1].strip().splitlines()[:2]
    assert header.split() == ["QUEUE", "CRITICAL", "HIGH", "NORMAL", "LOW", "BATCH"]
    assert row.split() == ["default", "1", "0", "0", "1", "1"]


@ON_EVERY_STORE
def test_list_filters_by_state_case_insensitively(run: Run, manager: JobQueueManager) -> None:
    _make_dead(manager, "d1")
    assert run("enqueue", "--id", "p1", "true").exit_code == 0
    assert [j["job_id"] for j in _json(run("list", "--state", "dead", "--json"))] == ["d1"]
    assert [j["job_id"] for j in _json(run("list", "-s", "PENDING", "--json"))] == ["p1"]
    assert run("list", "--state", "running").stdout.strip() == "no jobs"


# -- running workers ------------------------------------------------------------------------


@ON_EVERY_STORE
def test_worker_runs_shell_jobs_keeps_output_and_dead_letters_failures(
    run: Run, manager: JobQueueManager
) -> None:
    assert run("config", "set", "backoff-base", "0.01").exit_code == 0
    assert run("enqueue", "--id", "ok", "echo hi").exit_code == 0
    assert (
        run("enqueue", "--id", "bad", "--max-retries", "1", "--shell", "echo oops >&2; exit 3").exit_code == 0
    )
    queue = manager.get_queue("default")

    def done() -> bool:
        return all(queue.get_job(i).status in (JobStatus.COMPLETED, JobStatus.DEAD) for i in ("ok", "bad"))

    result = _run_worker_until(run, done)
    assert result.exit_code == 0, result.output
    assert "stopped" in result.stderr
    ok = queue.get_job("ok")
    assert ok.status is JobStatus.COMPLETED
    assert isinstance(ok.result, dict)
    assert ok.result["stdout"] == "hi\n"
    shown = run("show", "ok")
    assert "--- stdout ---\nhi" in shown.stdout
    bad = queue.get_job("bad")
    assert (bad.status, bad.retry_count, bad.attempt) == (JobStatus.DEAD, 1, 2)
    assert "exited with code 3" in (bad.error or "")
    assert "oops" in (bad.error or "")
    dead = _json(run("dlq", "list", "--json"))
    assert [j["job_id"] for j in dead] == ["bad"]


def test_memory_backend_with_worker_processes_is_refused(run: Run) -> None:
    line = _one_error_line(run("worker", "--backend", "memory://", "--processes", "2"))
    assert "memory://" in line
    assert "worker processes" in line


def _pids_of(manager: JobQueueManager, job_ids: list[str], queue: str = "default") -> set[int]:
    from typedq._identity import parse_worker_id

    owners = [parse_worker_id(manager.get_queue(queue).get_job(i).worker_id or "") for i in job_ids]
    return {owner[1] for owner in owners if owner is not None}


@ON_EVERY_STORE
@pytest.mark.timeout(60)
def test_the_processes_setting_runs_worker_processes(run: Run, manager: JobQueueManager) -> None:
    assert run("config", "set", "processes", "2").exit_code == 0
    ids = [f"j{n}" for n in range(6)]
    for job_id in ids:
        assert run("enqueue", "--id", job_id, "true").exit_code == 0
    queue = manager.get_queue("default")
    result = _run_worker_until(run, lambda: all(queue.get_job(i).status is JobStatus.COMPLETED for i in ids))
    assert result.exit_code == 0, result.output
    assert "2 process(es)" in result.stderr
    pids = _pids_of(manager, ids)
    assert pids
    assert os.getpid() not in pids  # run by the worker processes, not by this one


@ON_EVERY_STORE
@pytest.mark.timeout(60)
def test_worker_serves_several_queues_by_the_weights_given(run: Run, tmp_path: Path, backend: str) -> None:
    """``-Q emails=3,reports=1``: one worker claims three emails for each report while
    both queues have work, by the claim times the store kept."""
    app = f"cliweights{backend.partition(':')[0]}"  # a module name of its own: imports are cached
    (tmp_path / f"{app}.py").write_text(
        "from typedq.manager import JobQueueManager\n"
        f"manager = JobQueueManager({{'backend': {backend!r}, 'batch_size': 1, 'poll_interval': 0.01}})\n"
        "manager.register_handler('email', lambda p: None, queue='emails')\n"
        "manager.register_handler('report', lambda p: None, queue='reports')\n"
    )
    setup = JobQueueManager({"backend": backend, "queues": {"emails": {}, "reports": {}}})
    try:
        ids = [setup.submit("email", {}, queue="emails") for _ in range(24)]
        ids += [setup.submit("report", {}, queue="reports") for _ in range(24)]

        def done() -> bool:
            return all(setup.get_job(i).status is JobStatus.COMPLETED for i in ids)

        with interrupt_when(done, 30.0):
            result = run("worker", "-Q", "emails=3,reports=1", "-c", "1", "--app", f"{app}:manager")
        assert result.exit_code == 0, result.output
        assert done()
        jobs = sorted((setup.get_job(i) for i in ids), key=lambda job: job.started_at or 0.0)
        order = "".join("e" if job.queue == "emails" else "r" for job in jobs)
        assert order[:16] == "eereeere" * 2, order
    finally:
        setup.close(graceful=False)


@ON_EVERY_STORE
@pytest.mark.timeout(60)
@pytest.mark.parametrize("processes", [0, 2])
def test_worker_with_an_app_runs_its_job_types(
    run: Run, tmp_path: Path, backend: str, processes: int
) -> None:
    """The app's manager brings its job types and its own config, its processes setting
    included: 0 runs the workers in the typedq process itself, 2 in two worker processes."""
    app = f"cliapp{processes}{backend.partition(':')[0]}"  # a module name of its own: imports are cached
    (tmp_path / f"{app}.py").write_text(
        "from typedq.manager import JobQueueManager\n"
        f"manager = JobQueueManager({{'backend': {backend!r}, 'processes': {processes}}})\n"
        "manager.register_handler('double', lambda p: p['n'] * 2, queue='math')\n"
    )
    assert (
        run("enqueue", "--type", "double", "--payload", '{"n": 21}', "--queue", "math", "--id", "d").exit_code
        == 0
    )
    check = JobQueueManager({"backend": backend, "queues": {"math": {}}})
    try:
        queue = check.get_queue("math")
        result = _run_worker_until(
            run, lambda: queue.get_job("d").status is JobStatus.COMPLETED, "--app", f"{app}:manager"
        )
        assert result.exit_code == 0, result.output
        assert queue.get_job("d").result == 42
        pids = _pids_of(check, ["d"], "math")
        if processes:
            assert f"{processes} process(es) on app {app}:manager" in result.stderr
            assert pids
            assert os.getpid() not in pids
        else:
            assert pids == {os.getpid()}
    finally:
        check.close(graceful=False)


def test_the_processes_setting_is_checked(run: Run, tmp_path: Path) -> None:
    line = _one_error_line(run("config", "set", "processes", "-1"))
    assert "processes" in line
    assert "an int >= 0" in line
    assert "did you mean 'processes'" in _one_error_line(run("config", "set", "proceses", "2"))
    assert not (tmp_path / "typedq.json").exists()
    # The setting with memory:// is refused when the workers start (its jobs cannot cross).
    assert run("config", "set", "processes", "2", "--backend", "memory://").exit_code == 0
    line = _one_error_line(run("worker", "--backend", "memory://"))
    assert "memory://" in line
    assert "cannot be used with worker processes" in line
    assert "the processes setting 0" in line


# -- dead letters, cancel, wait ---------------------------------------------------------------


@ON_EVERY_STORE
def test_dlq_purge_without_yes_changes_nothing(run: Run, manager: JobQueueManager) -> None:
    _make_dead(manager, "d1")
    _make_dead(manager, "d2")
    line = _one_error_line(run("dlq", "purge"))
    assert "would delete 2 dead job(s)" in line
    assert "--yes" in line
    assert [j["job_id"] for j in _json(run("dlq", "list", "--json"))] == ["d1", "d2"]
    assert _json(run("dlq", "purge", "--yes", "--json")) == {"deleted": ["d1", "d2"]}
    assert _json(run("dlq", "list", "--json")) == []
    assert "empty" in run("dlq", "list").stdout


@ON_EVERY_STORE
def test_purge_deletes_jobs_that_ended_before_the_cutoff_and_needs_yes(
    run: Run, manager: JobQueueManager
) -> None:
    from typedq.job import Job

    now = time.time()
    queue = manager.get_queue("default")
    queue.import_jobs(
        [
            Job(job_id=job_id, job_type="t", status=JobStatus.COMPLETED, finished_at=now - age).to_dict()
            for job_id, age in (("old", 2 * 86_400.0), ("recent", 60.0))
        ]
        + [Job(job_id="gone", job_type="t", status=JobStatus.CANCELLED, finished_at=now - 3e5).to_dict()]
    )
    line = _one_error_line(run("purge", "--completed", "--cancelled", "--older-than", "1d"))
    assert "would delete 2 job(s)" in line
    assert "--yes" in line
    assert sorted(j.job_id for j in queue.list_jobs()) == ["gone", "old", "recent"]
    done = _json(run("purge", "--completed", "--older-than", "1d", "--yes", "--json"))
    assert (done["purged"], done["total"]) == ({"default": {"COMPLETED": 1}}, 1)
    assert sorted(j.job_id for j in queue.list_jobs()) == ["gone", "recent"]
    assert "purged 1 job(s)" in run("purge", "--cancelled", "--older-than", "2d", "--yes").stdout


@ON_EVERY_STORE
def test_purge_dead_takes_the_dead_letters_too(run: Run, manager: JobQueueManager) -> None:
    manager.submit("anything", {}, job_id="d1", queue="default", max_retries=0)
    queue = manager.get_queue("default")
    claim = queue.claim("w", lease_s=30.0)
    assert claim is not None
    queue.bury("d1", token=claim.token, error="boom", dead_letter=manager.get_dead_letter_queue())
    done = _json(run("purge", "--dead", "--older-than", "0", "--yes", "--json"))
    assert done["purged"] == {"default": {"DEAD": 1}, "dead-letter": {"DEAD": 1}}
    assert _json(run("dlq", "list", "--json")) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--older-than", "1d"), "--completed, --cancelled"),
        (("--completed", "--older-than", "soon"), "not a duration"),
        (("--completed", "--older-than", "-1d"), "not a duration"),
    ],
)
def test_purge_refuses_bad_arguments(run: Run, args: tuple[str, ...], message: str) -> None:
    assert message in _one_error_line(run("purge", *args, "--yes"))


@ON_EVERY_STORE
def test_dlq_replay_runs_a_dead_job_again(run: Run, manager: JobQueueManager) -> None:
    _make_dead(manager, "d1")
    assert run("enqueue", "--id", "p", "true").exit_code == 0
    line = _one_error_line(run("dlq", "replay", "p"))
    assert "PENDING, not DEAD" in line
    assert _json(run("dlq", "replay", "d1", "--json")) == {"replayed": ["d1"], "dependents": []}
    job = manager.get_job("d1")
    assert (job.status, job.retry_count, job.error) == (JobStatus.PENDING, 0, None)
    _make_dead(manager, "d2", queue="other")
    replayed = _json(run("dlq", "replay", "--all", "--queue", "other", "--json"))
    assert replayed == {"replayed": ["d2"], "dependents": []}


@ON_EVERY_STORE
def test_cancel_a_pending_job_and_refuse_an_ended_one(run: Run, manager: JobQueueManager) -> None:
    assert run("enqueue", "--id", "p", "true").exit_code == 0
    assert _json(run("cancel", "p", "--json")) == {"p": "cancelled"}
    assert manager.get_job("p").status is JobStatus.CANCELLED
    again = run("cancel", "p")
    assert again.exit_code == 1
    assert "already CANCELLED" in again.stdout


def test_wait_gives_up_with_124(run: Run) -> None:
    assert run("enqueue", "--id", "p", "true").exit_code == 0
    started = time.monotonic()
    line = _one_error_line(run("wait", "p", "--timeout", "0.3"), code=124)
    assert time.monotonic() - started < 5.0
    assert "timed out" in line


@ON_EVERY_STORE
def test_wait_for_ended_jobs(run: Run, manager: JobQueueManager) -> None:
    _make_dead(manager, "d1")
    result = run("wait", "d1", "--timeout", "5")
    assert result.exit_code == 1
    assert "did not complete: d1" in result.stderr


@ON_EVERY_STORE
def test_status_counts_per_queue_and_state(run: Run, manager: JobQueueManager) -> None:
    _make_dead(manager, "d1")
    assert run("enqueue", "true").exit_code == 0
    data = _json(run("status", "--json"))
    assert data["queues"]["default"]["PENDING"] == 1
    assert data["queues"]["default"]["DEAD"] == 1
    assert data["dead_letters"] == 1
    assert data["workers"] == []
    table = run("status").stdout
    assert "QUEUE" in table
    assert "TOTAL" in table


def test_status_names_the_sqlite_library_and_its_wal_reset_bug(run: Run, manager: JobQueueManager) -> None:
    from typedq.backends._sqlite_driver import DRIVER, sqlite3
    from typedq.backends._sqlite_schema import has_wal_reset_bug

    buggy = has_wal_reset_bug(tuple(sqlite3.sqlite_version_info))
    data = _json(run("status", "--json"))
    assert data["storage"]["sqlite_version"] == sqlite3.sqlite_version
    assert data["storage"]["sqlite_driver"] == DRIVER
    assert data["storage"]["wal_reset_bug"] is buggy
    line = next(line for line in run("status").stdout.splitlines() if line.startswith("sqlite: "))
    assert f"sqlite: {sqlite3.sqlite_version} (module {DRIVER})" in line
    assert ("HAS the WAL-reset bug" in line) is buggy
    assert ("typedq[sqlite]" in line) is buggy


@ON_EVERY_STORE
def test_status_shows_every_queue_of_the_file(run: Run, manager: JobQueueManager) -> None:
    from typedq._identity import new_worker_id

    manager.submit("x", {}, job_id="e1", queue="emails")
    manager.submit("x", {}, job_id="e2", queue="emails")
    manager.submit("x", {}, job_id="i1", queue="images")
    assert manager.get_queue("images").claim(new_worker_id("w"), lease_s=30.0) is not None
    _make_dead(manager, "d1", queue="billing")
    manager.get_dead_letter_queue().enqueue(manager.get_job("d1"))  # its dead-letter copy
    data = _json(run("status", "--json"))  # told about no queue: it finds them in the file
    assert data["queues"]["emails"]["PENDING"] == 2
    assert data["queues"]["images"]["RUNNING"] == 1
    assert data["queues"]["billing"]["DEAD"] == 1
    assert "dead-letter" not in data["queues"]  # reported as dead letters, not as a queue
    assert data["dead_letters"] == 1
    assert [w["queues"] for w in data["workers"]] == [["images"]]
    rows = [line.split()[0] for line in run("status").stdout.splitlines() if line.strip()]
    assert {"billing", "default", "emails", "images"} <= set(rows)
    assert "dead-letter" not in rows


@ON_EVERY_STORE
def test_status_shows_the_processes_running_jobs(run: Run, manager: JobQueueManager) -> None:
    from typedq._identity import new_worker_id

    manager.submit("x", {}, job_id="r", queue="default")
    assert manager.get_queue("default").claim(new_worker_id("w"), lease_s=30.0) is not None
    workers = _json(run("status", "--json"))["workers"]
    assert len(workers) == 1
    assert workers[0]["alive"] is True
    assert workers[0]["running"] == ["r"]
    assert str(os.getpid()) in workers[0]["process"]


# -- config ----------------------------------------------------------------------------------


@ON_EVERY_STORE
def test_config_set_get_unset_is_persisted_and_used(
    run: Run, tmp_path: Path, manager: JobQueueManager
) -> None:
    result = run("config", "set", "max-retries", "5")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "typedq.json").read_text()) == {"max_retries": 5}
    assert run("config", "get", "max-retries").stdout.strip() == "5"
    assert _json(run("config", "get", "--json"))["backoff-base"] == 1.0
    assert run("config", "set", "base_delay", "2.5").exit_code == 0  # the manager's name works too
    assert run("config", "set", "backoff_max", "60").exit_code == 0  # and underscores
    table = run("config", "get").stdout
    assert "backoff-base" in table
    assert "file" in table
    assert run("enqueue", "--id", "j", "true").exit_code == 0
    assert manager.get_job("j").max_retries == 5
    assert run("config", "unset", "max-retries").exit_code == 0
    assert run("config", "get", "max-retries").stdout.strip() == "3"


def test_a_broken_config_file_is_one_line(run: Run, tmp_path: Path) -> None:
    (tmp_path / "typedq.json").write_text("{not json")
    line = _one_error_line(run("status"))
    assert "typedq.json is not valid JSON" in line
    (tmp_path / "typedq.json").write_text('{"max_retries": -2}')
    assert "max_retries" in _one_error_line(run("config", "get"))


def test_config_path_can_be_given(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "settings.json"
    assert run("config", "set", "jitter", "0", "--config", str(path)).exit_code == 0
    assert json.loads(path.read_text()) == {"jitter": 0}
    assert not (tmp_path / "typedq.json").exists()


# -- demo, help, entry points -----------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "backend",
    [pytest.param("memory", id="memory"), pytest.param("redis", id="redis", marks=pytest.mark.redis)],
    indirect=True,
)
def test_demo(run: Run, backend: str) -> None:
    result = run("demo", "--backend", backend)
    assert result.exit_code == 0, result.output
    assert "dead-letter queue (1)" in result.stdout
    assert "payment-0042" in result.stdout
    assert "completed 299" in result.stdout
    if backend.startswith("redis"):  # a store that keeps the jobs: a second demo is refused
        assert "needs empty queues" in _one_error_line(run("demo", "--backend", backend))


@pytest.mark.parametrize(
    "path",
    [
        [],
        ["enqueue"],
        ["worker"],
        ["status"],
        ["list"],
        ["show"],
        ["cancel"],
        ["wait"],
        ["dlq"],
        ["dlq", "list"],
        ["dlq", "replay"],
        ["dlq", "purge"],
        ["config"],
        ["config", "get"],
        ["config", "set"],
        ["config", "unset"],
        ["demo"],
    ],
)
def test_every_command_has_help(run: Run, path: list[str]) -> None:
    result = run(*path, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.stdout


def _python_m(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "typedq", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TYPEDQ_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return {**env, **extra}


@pytest.mark.timeout(60)
def test_python_m_typedq_enqueue_worker_show(tmp_path: Path) -> None:
    env = _subprocess_env()  # the default backend: ./typedq.db in the working directory
    enq = _python_m(["enqueue", "--id", "hello", "echo hi from a worker", "--json"], tmp_path, env)
    assert enq.returncode == 0, enq.stderr
    assert json.loads(enq.stdout)["job_id"] == "hello"
    assert (tmp_path / "typedq.db").exists()
    worker = subprocess.Popen(
        [sys.executable, "-m", "typedq", "worker"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        checker = JobQueueManager({"backend": f"sqlite:///{tmp_path / 'typedq.db'}"})
        try:
            wait_until(
                lambda: checker.get_job("hello").status is JobStatus.COMPLETED,
                timeout=30.0,
                message="the worker completes the job",
            )
        finally:
            checker.close(graceful=False)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30.0)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, err
    assert "Traceback" not in err
    shown = _python_m(["show", "hello"], tmp_path, env)
    assert shown.returncode == 0
    assert "hi from a worker" in shown.stdout
    bad = _python_m(["enqueue", "{broken"], tmp_path, env)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("Error: malformed JSON")
    assert "Traceback" not in bad.stderr


@pytest.mark.timeout(60)
def test_python_m_typedq_demo_on_the_default_backend(tmp_path: Path) -> None:
    started = time.monotonic()
    demo = _python_m(["demo"], tmp_path, _subprocess_env())
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert time.monotonic() - started < 30.0
    assert "typedq demo on sqlite:///./typedq-demo.db" in demo.stdout
    assert "dead-letter queue (1)" in demo.stdout
    assert "Traceback" not in demo.stderr
    assert (tmp_path / "typedq-demo.db").exists()
    again = _python_m(["demo"], tmp_path, _subprocess_env())  # fresh each run
    assert again.returncode == 0
    assert "submitted 300 ·" in again.stdout


def test_without_click_the_entry_point_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['click'] = None\n"
        "from typedq.__main__ import main\n"
        "sys.exit(main(['status']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "typedq: the command line needs click: pip install 'typedq[cli]'"


def test_main_returns_exit_codes() -> None:
    from typedq.__main__ import main

    assert main(["--version"]) == 0
    assert main(["config", "get", "no-such-key", "--backend", "memory://"]) == 2


def test_batch_size_is_a_setting_checked_like_the_managers(run: Run, tmp_path: Path) -> None:
    assert run("config", "set", "batch-size", "1").exit_code == 0
    assert json.loads((tmp_path / "typedq.json").read_text()) == {"batch_size": 1}
    assert run("config", "get", "batch-size").stdout.strip() == "1"
    line = _one_error_line(run("config", "set", "batch-size", "0"))
    assert "batch_size" in line
    assert run("config", "get", "batch-size").stdout.strip() == "1"  # nothing written


# -- job control: progress and logs ---------------------------------------------------------


@ON_EVERY_STORE
def test_show_and_wait_print_the_jobs_progress_and_log(run: Run, manager: JobQueueManager) -> None:
    from typedq.job import JobLogLine, JobProgress

    manager.submit("x", {}, job_id="p1", queue="default")
    queue = manager.get_queue("default")
    claim = queue.claim("test-worker", lease_s=30.0)
    assert claim is not None
    queue.set_progress("p1", token=claim.token, progress=JobProgress(3, 4, "rows", time.time(), claim.token))
    queue.append_logs("p1", token=claim.token, lines=[JobLogLine(time.time(), 1, "loaded 3 rows")])
    shown = run("show", "p1")
    assert shown.exit_code == 0, shown.output
    assert "progress:" in shown.stdout
    assert "3/4 (75%) rows" in shown.stdout
    assert "--- log ---" in shown.stdout
    assert "[1] loaded 3 rows" in shown.stdout
    data = _json(run("show", "p1", "--json"))
    assert data["progress"]["done"] == 3
    assert [line["message"] for line in data["logs"]] == ["loaded 3 rows"]
    waited = run("wait", "p1", "--timeout", "0.3")
    assert waited.exit_code == 124
    assert "waiting: 75/100 3/4 (75%) rows" in waited.stderr  # the job's own progress
