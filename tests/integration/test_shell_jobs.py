"""Shell-command jobs (``typedq.shell``): exit code judges, output is kept bounded.

The handler runs a command with subprocess: exit 0 completes the job with its stdout and
stderr, anything else is a typed failure that retries and ends in the dead-letter queue;
a timeout kills the command's whole process group.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import wait_until

from typedq.errors import InvalidJobError, PayloadValidationError, TypedqError
from typedq.job import Job, JobStatus
from typedq.manager import JobQueueManager
from typedq.shell import (
    MAX_OUTPUT_BYTES,
    SHELL_JOB_TYPE,
    ShellCommandError,
    ShellHandler,
    ShellTimeoutError,
    kill_running_commands,
    register_shell_jobs,
    run_command,
    shell_payload,
)

PY = sys.executable


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (killed, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- running commands ---------------------------------------------------------------------


def test_exit_zero_returns_the_output() -> None:
    result = run_command(
        shell_payload(f"{PY} -c \"import sys; print('out'); print('err', file=sys.stderr)\"")
    )
    assert result["exit_code"] == 0
    assert result["stdout"] == "out\n"
    assert result["stderr"] == "err\n"
    assert result["duration_s"] >= 0


def test_arguments_are_split_with_shlex_not_a_shell() -> None:
    result = run_command(shell_payload("echo 'a  b' $HOME ';' x"))
    assert result["stdout"] == "a  b $HOME ; x\n"  # no expansion, no command separator


def test_a_list_command_and_shell_mode() -> None:
    assert run_command(shell_payload(["echo", "a b"]))["stdout"] == "a b\n"
    result = run_command(shell_payload("echo one | tr o O && echo $((1 + 2))", shell=True))
    assert result["stdout"] == "One\n3\n"


def test_env_and_cwd(tmp_path: Path) -> None:
    result = run_command(
        shell_payload("pwd; echo $TYPEDQ_X", shell=True, cwd=str(tmp_path), env={"TYPEDQ_X": "y"})
    )
    assert result["stdout"] == f"{tmp_path}\ny\n"


def test_nonzero_exit_raises_a_typed_error_carrying_the_output() -> None:
    with pytest.raises(ShellCommandError) as info:
        run_command(shell_payload("echo partial; echo boom >&2; exit 3", shell=True))
    err = info.value
    assert isinstance(err, TypedqError)
    assert err.exit_code == 3
    assert err.stdout == "partial\n"
    assert err.stderr == "boom\n"
    assert "exited with code 3" in str(err)
    assert "boom" in str(err)
    assert "partial" in str(err)


def test_a_missing_program_fails_with_127() -> None:
    with pytest.raises(ShellCommandError) as info:
        run_command(shell_payload("no-such-program-typedq --flag"))
    assert info.value.exit_code == 127
    assert "no-such-program-typedq" in str(info.value)


def test_output_is_bounded_keeping_head_and_tail() -> None:
    script = "import sys; sys.stdout.write('H' * 100 + 'x' * 1_000_000 + 'T' * 100)"
    result = run_command(shell_payload([PY, "-c", script]))
    out = result["stdout"]
    assert len(out.encode()) <= MAX_OUTPUT_BYTES + 100
    assert out.startswith("H" * 100)
    assert out.endswith("T" * 100)
    assert "bytes omitted" in out


def test_output_is_bounded_on_failure_too() -> None:
    with pytest.raises(ShellCommandError) as info:
        run_command(shell_payload([PY, "-c", "import sys; sys.stderr.write('e' * 500_000); sys.exit(1)"]))
    assert len(info.value.stderr) <= MAX_OUTPUT_BYTES + 100
    assert len(str(info.value)) < 5_000  # the message quotes only a tail


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    command = f"sleep 30 & echo $! > {pidfile}; wait"
    started = time.monotonic()
    with pytest.raises(ShellTimeoutError) as info:
        run_command(shell_payload(command, shell=True, timeout=0.5))
    assert time.monotonic() - started < 3.0
    assert isinstance(info.value, TimeoutError)
    assert "timed out after 0.5s" in str(info.value)
    grandchild = int(pidfile.read_text())
    wait_until(lambda: not _pid_alive(grandchild), timeout=3.0, message="the background sleep is killed")


def test_kill_running_commands_ends_a_running_command() -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_command(shell_payload("sleep 30"))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: kill_running_commands() > 0, timeout=5.0, message="the command is running")
    thread.join(5.0)
    assert not thread.is_alive()
    assert isinstance(errors[0], ShellCommandError)
    assert errors[0].exit_code == -9


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param({"command": ""}, "command", id="empty"),
        pytest.param({"command": "   "}, "command", id="blank"),
        pytest.param({"command": []}, "command", id="empty-list"),
        pytest.param({"command": 3}, "command", id="not-a-string"),
        pytest.param({"command": "echo 'unbalanced"}, "command", id="unbalanced-quote"),
        pytest.param({"command": "ls", "timeout": 0}, "timeout", id="zero-timeout"),
        pytest.param({"command": "ls", "timeout": "5"}, "timeout", id="string-timeout"),
        pytest.param({"command": "ls", "shell": "yes"}, "shell", id="shell-not-bool"),
        pytest.param({"command": "ls", "env": {"A": 1}}, "env", id="env-not-strings"),
        pytest.param({"command": "ls", "colour": "red"}, "colour", id="unknown-key"),
        pytest.param({}, "command", id="missing"),
    ],
)
def test_bad_payloads_are_refused_naming_the_field(payload: dict[str, object], field: str) -> None:
    with pytest.raises(PayloadValidationError) as info:
        run_command(payload)
    assert isinstance(info.value, InvalidJobError)
    assert info.value.field == field
    assert field in str(info.value)


def test_shell_payload_validates_up_front() -> None:
    with pytest.raises(PayloadValidationError, match="timeout"):
        shell_payload("ls", timeout=-1)
    assert shell_payload("ls") == {"command": "ls", "shell": False, "timeout": None}


def test_errors_survive_pickling_for_process_workers() -> None:
    err = ShellCommandError("false", 1, "o", "e")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.command, copy.exit_code, copy.stdout, copy.stderr) == ("false", 1, "o", "e")
    timeout = pickle.loads(pickle.dumps(ShellTimeoutError("sleep 9", 1.5)))
    assert timeout.timeout_s == 1.5
    assert str(timeout) == str(ShellTimeoutError("sleep 9", 1.5))


def test_the_handler_takes_a_job_or_a_payload() -> None:
    handler = ShellHandler()
    assert handler.takes_job is True
    job = Job.create(SHELL_JOB_TYPE, shell_payload("echo job"))
    assert handler(job)["stdout"] == "job\n"
    assert handler(shell_payload("echo payload"))["stdout"] == "payload\n"


# -- through a manager and its workers ------------------------------------------------------


@pytest.fixture
def manager() -> Iterator[JobQueueManager]:
    m = JobQueueManager({"base_delay": 0.01, "jitter": 0.0, "poll_interval": 0.01})
    yield m
    m.close(timeout=5.0)


def test_register_keeps_an_application_handler(manager: JobQueueManager) -> None:
    def mine(payload: dict[str, object]) -> str:
        return "mine"

    manager.register_handler(SHELL_JOB_TYPE, mine)
    assert register_shell_jobs(manager) is False
    assert manager.handlers[SHELL_JOB_TYPE] is mine
    assert register_shell_jobs(manager, replace=True) is True
    assert isinstance(manager.handlers[SHELL_JOB_TYPE], ShellHandler)


def test_exit_zero_completes_with_output(manager: JobQueueManager) -> None:
    register_shell_jobs(manager)
    job_id = manager.submit(SHELL_JOB_TYPE, shell_payload("echo hello"))
    manager.start_workers(count=1)
    assert manager.wait_for_completion([job_id], timeout=10.0)
    job = manager.get_job(job_id)
    assert job.status is JobStatus.COMPLETED
    assert isinstance(job.result, dict)
    assert job.result["exit_code"] == 0
    assert job.result["stdout"] == "hello\n"


def test_nonzero_exit_retries_then_goes_to_the_dead_letter_queue(manager: JobQueueManager) -> None:
    register_shell_jobs(manager)
    job_id = manager.submit(SHELL_JOB_TYPE, shell_payload("echo nope >&2; exit 4", shell=True), max_retries=2)
    manager.start_workers(count=1)
    assert manager.wait_for_completion([job_id], timeout=10.0)
    job = manager.get_job(job_id)
    assert job.status is JobStatus.DEAD
    assert job.retry_count == 2
    assert job.attempt == 3
    assert "ShellCommandError" in (job.error or "")
    assert "exited with code 4" in (job.error or "")
    assert "nope" in (job.error or "")


def test_a_malformed_payload_is_dead_at_once(manager: JobQueueManager) -> None:
    register_shell_jobs(manager)
    job_id = manager.submit(SHELL_JOB_TYPE, {"command": ""}, max_retries=5)
    manager.start_workers(count=1)
    assert manager.wait_for_completion([job_id], timeout=10.0)
    job = manager.get_job(job_id)
    assert job.status is JobStatus.DEAD
    assert job.retry_count == 0  # no retry can fix a payload
    assert "PayloadValidationError" in (job.error or "")
