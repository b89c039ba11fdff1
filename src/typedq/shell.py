"""Shell-command jobs: run a command, judge it by its exit code.

A job of type :data:`SHELL_JOB_TYPE` (``"shell"``) carries a payload made by
:func:`shell_payload`::

    {"command": "echo hi", "shell": false, "timeout": 30.0, "cwd": null, "env": null}

Its handler runs the command with :mod:`subprocess`: through ``/bin/sh`` only when the
payload says ``"shell": true``, otherwise split with :func:`shlex.split` (or given as a
list of arguments). Exit code 0 completes the job with ``{"exit_code", "stdout",
"stderr", "duration_s"}``; any other code raises :class:`ShellCommandError` carrying the
same, so the worker retries the job (and buries it after ``max_retries``); the error message (the
job's ``error``) quotes the last 2,000 characters of stderr and of stdout. A command that
cannot be started fails with exit code 127, like a shell's "command not found".

Output is captured bounded: at most :data:`MAX_OUTPUT_BYTES` of each stream is kept (the
first and the last half of it, with a note of how much was left out), so a chatty command
cannot exhaust the worker's memory or the job's result size.

A command runs in its own process group. On ``timeout`` the whole group is killed with
SIGKILL and the attempt fails with :class:`ShellTimeoutError` (a ``TimeoutError``). A
worker that shuts down gives its running jobs back to the queue first and then kills their
commands (:func:`kill_running_commands`), so an interrupted command is run again later,
never half-recorded.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any, Final

from typedq.errors import ConfigError, PayloadValidationError, TypedqError
from typedq.job import Job

if TYPE_CHECKING:
    from typedq.manager import JobQueueManager

__all__ = [
    "MAX_OUTPUT_BYTES",
    "SHELL_JOB_TYPE",
    "ShellCommandError",
    "ShellHandler",
    "ShellTimeoutError",
    "kill_running_commands",
    "register_shell_jobs",
    "run_command",
    "shell_payload",
]

#: The job type of shell-command jobs.
SHELL_JOB_TYPE: Final = "shell"
#: The most bytes kept of each of stdout and stderr.
MAX_OUTPUT_BYTES: Final = 64 * 1024
#: How much of each stream an error message quotes.
_MESSAGE_TAIL: Final = 2000
_PAYLOAD_KEYS: Final = frozenset({"command", "shell", "timeout", "cwd", "env"})

_running_lock = threading.Lock()
_running: set[subprocess.Popen[bytes]] = set()


class ShellCommandError(TypedqError, RuntimeError):
    """A shell-command job exited with a non-zero code (or could not start).

    Attributes:
        command: the command as given.
        exit_code: the exit code; negative for a signal (``-9``: killed), 127 when the
            command could not be started.
        stdout: captured standard output (bounded).
        stderr: captured standard error (bounded).
    """

    def __init__(self, command: str | list[str], exit_code: int, stdout: str, stderr: str) -> None:
        self.command = command
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"command {_short_command(self.command)} exited with code {self.exit_code}"
        for name, output in (("stderr", self.stderr), ("stdout", self.stdout)):
            tail = output.strip()
            if tail:
                if len(tail) > _MESSAGE_TAIL:
                    tail = "…" + tail[-_MESSAGE_TAIL:]
                text += f"\n--- {name} ---\n{tail}"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.command, self.exit_code, self.stdout, self.stderr))


class ShellTimeoutError(ShellCommandError, TimeoutError):
    """A shell-command job ran past its ``timeout``; its process group was killed."""

    def __init__(
        self, command: str | list[str], timeout_s: float, stdout: str = "", stderr: str = ""
    ) -> None:
        self.timeout_s = timeout_s
        super().__init__(command, -signal.SIGKILL, stdout, stderr)

    def _message(self) -> str:
        return f"command {_short_command(self.command)} timed out after {self.timeout_s:g}s and was killed"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.command, self.timeout_s, self.stdout, self.stderr))


def _short_command(command: str | list[str]) -> str:
    text = command if isinstance(command, str) else shlex.join(command)
    return repr(text if len(text) <= 80 else text[:77] + "...")


def shell_payload(
    command: str | list[str],
    *,
    shell: bool = False,
    timeout: float | None = None,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Build (and check) the payload of a shell-command job.

    Args:
        command: a command line, or a list of arguments.
        shell: run ``command`` through ``/bin/sh -c`` (pipes, globs, ``&&``); otherwise it
            is split with :func:`shlex.split` and run directly.
        timeout: seconds after which the command's process group is killed, or None.
        cwd: the working directory, or None for the worker's.
        env: variables added to the worker's environment for this command.

    Raises:
        PayloadValidationError: a field is missing or has a value that is not allowed
            (also an ``InvalidJobError``, a ``ValueError``).
    """
    payload: dict[str, Any] = {"command": command, "shell": shell, "timeout": timeout}
    if cwd is not None:
        payload["cwd"] = cwd
    if env is not None:
        payload["env"] = dict(env)
    _check_payload(payload)
    return payload


def _check_payload(payload: object) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise PayloadValidationError("payload", payload, "a dict made by shell_payload()")
    for key in payload:
        if key not in _PAYLOAD_KEYS:
            raise PayloadValidationError(key, payload[key], f"one of {', '.join(sorted(_PAYLOAD_KEYS))}")
    command = payload.get("command")
    if isinstance(command, str):
        if not command.strip():
            raise PayloadValidationError("command", command, "a non-empty command line")
    elif isinstance(command, list):
        if not command or not all(isinstance(a, str) for a in command) or not command[0]:
            raise PayloadValidationError("command", command, "a non-empty list of string arguments")
    else:
        raise PayloadValidationError("command", command, "a command line string or a list of arguments")
    shell = payload.get("shell", False)
    if type(shell) is not bool:
        raise PayloadValidationError("shell", shell, "true or false")
    timeout = payload.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < 1e9
    ):
        raise PayloadValidationError("timeout", timeout, "null or a number of seconds > 0")
    cwd = payload.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd):
        raise PayloadValidationError("cwd", cwd, "null or a directory path")
    env = payload.get("env")
    if env is not None and (
        not isinstance(env, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    ):
        raise PayloadValidationError("env", env, "null or a dict of string names to string values")
    if not shell and isinstance(command, str):
        try:
            if not shlex.split(command):
                raise PayloadValidationError("command", command, "a non-empty command line")
        except ValueError as exc:
            raise PayloadValidationError(
                "command", command, f"a command line shlex can split ({exc}); or set shell=true"
            ) from None
    return payload


class _Capture(threading.Thread):
    """Reads one pipe to its end, keeping its first and last ``limit / 2`` bytes."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        super().__init__(name="typedq-shell-capture", daemon=True)
        self._stream = stream
        self._half = max(1, limit // 2)
        self._head = bytearray()
        self._tail = bytearray()
        self._total = 0

    def run(self) -> None:
        fd = self._stream.fileno()
        half = self._half
        try:
            while chunk := os.read(fd, 65536):
                self._total += len(chunk)
                room = half - len(self._head)
                if room > 0:
                    self._head += chunk[:room]
                    chunk = chunk[room:]
                if chunk:
                    self._tail += chunk
                    if len(self._tail) > 2 * half:
                        del self._tail[:-half]
        except OSError:
            pass

    def text(self) -> str:
        tail = self._tail[-self._half :]
        omitted = self._total - len(self._head) - len(tail)
        data = bytes(self._head)
        if omitted > 0:
            data += f"\n[… {omitted} bytes omitted …]\n".encode()
        data += bytes(tail)
        return data.decode("utf-8", errors="replace")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _start(checked: dict[str, Any]) -> subprocess.Popen[bytes]:
    command: str | list[str] = checked["command"]
    use_shell: bool = checked.get("shell", False)
    if use_shell:
        args: str | list[str] = command if isinstance(command, str) else shlex.join(command)
    else:
        args = shlex.split(command) if isinstance(command, str) else list(command)
    env = {**os.environ, **checked["env"]} if checked.get("env") else None
    try:
        return subprocess.Popen(
            args,
            shell=use_shell,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=checked.get("cwd"),
            env=env,
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
    except OSError as exc:
        raise ShellCommandError(command, 127, "", f"cannot run command: {exc}") from None


def _wait(proc: subprocess.Popen[bytes], timeout: float | None) -> bool:
    """Wait for the command; kill its group on timeout (True) or on any exception."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.wait()
        return True
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    return False


def run_command(payload: Mapping[str, Any], *, limit: int = MAX_OUTPUT_BYTES) -> dict[str, Any]:
    """Run the command of a shell-job payload; return its result or raise.

    Returns:
        ``{"exit_code": 0, "stdout": str, "stderr": str, "duration_s": float}``.

    Raises:
        PayloadValidationError: the payload is malformed (no retry can fix it).
        ShellTimeoutError: the command ran past its ``timeout`` and was killed.
        ShellCommandError: the command exited non-zero or could not be started.
    """
    checked = _check_payload(dict(payload))
    command: str | list[str] = checked["command"]
    timeout: float | None = checked.get("timeout")
    started = time.monotonic()
    proc = _start(checked)
    assert proc.stdout is not None  # PIPE
    assert proc.stderr is not None  # PIPE
    with _running_lock:
        _running.add(proc)
    out, err = _Capture(proc.stdout, limit), _Capture(proc.stderr, limit)
    out.start()
    err.start()
    try:
        timed_out = _wait(proc, timeout)
    finally:
        with _running_lock:
            _running.discard(proc)
        # A daemonised grandchild may keep a pipe open: never wait for it for long.
        out.join(1.0)
        err.join(1.0)
        proc.stdout.close()
        proc.stderr.close()
    duration = time.monotonic() - started
    stdout, stderr = out.text(), err.text()
    if timed_out:
        raise ShellTimeoutError(command, float(timeout or 0), stdout, stderr)
    if proc.returncode != 0:
        raise ShellCommandError(command, proc.returncode, stdout, stderr)
    return {"exit_code": 0, "stdout": stdout, "stderr": stderr, "duration_s": round(duration, 6)}


def kill_running_commands() -> int:
    """Kill the process group of every command this process is running; return how many.

    The worker shutdown calls this after giving the jobs back to the queue, so the
    commands' failures are refused (stale lease) instead of counted.
    """
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        _kill_group(proc)
    return len(procs)


class ShellHandler:
    """The handler of shell-command jobs (see :func:`run_command`).

    It takes the whole job (``takes_job``) and accepts a bare payload as well.

    Args:
        limit: the most bytes kept of each of stdout and stderr.
    """

    takes_job = True

    def __init__(self, *, limit: int = MAX_OUTPUT_BYTES) -> None:
        self.limit = limit

    def __call__(self, job_or_payload: Job | dict[str, Any]) -> dict[str, Any]:
        payload = job_or_payload.payload if isinstance(job_or_payload, Job) else job_or_payload
        return run_command(payload, limit=self.limit)

    def __repr__(self) -> str:
        return f"ShellHandler(limit={self.limit})"


def register_shell_jobs(
    manager: JobQueueManager, *, queue: str = "default", replace: bool = False
) -> bool:
    """Register the :data:`SHELL_JOB_TYPE` handler on ``manager``, routed to ``queue``.

    Args:
        manager: the manager to register on.
        queue: where ``manager.submit("shell", ...)`` puts jobs (a worker of any queue
            runs them).
        replace: replace a ``"shell"`` handler the application registered itself.

    Returns:
        Whether the handler was registered (False: the application has its own).

    Raises:
        ConfigError: ``queue`` is not a non-empty string.
    """
    given: object = queue
    if not isinstance(given, str) or not given:
        raise ConfigError("queue", queue, "a non-empty queue name")
    if SHELL_JOB_TYPE in manager.handlers and not replace:
        return False
    manager.register_handler(SHELL_JOB_TYPE, ShellHandler(), queue=queue)
    return True
