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
SIGKILL and the attempt fails with :class:`ShellTimeoutError` (a ``TimeoutError``).

Cancelling a running shell job (``manager.cancel(job_id)``, ``typedq cancel``) stops its
command: the handler reads the job's ``cancel_requested`` every
:data:`CANCEL_CHECK_S` seconds while the command runs (one read of the job), and once it
is set sends SIGTERM to the command's process group, then SIGKILL after
``cancel_grace_s`` (:data:`DEFAULT_CANCEL_GRACE_S` by default) if the group is still
there, and raises :class:`~typedq.errors.JobCancelledError`: the worker records the job
CANCELLED (not failed, not retried; its dependents FAILED) and calls
``on_job_cancelled``. A
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
from collections.abc import Callable, Mapping
from typing import IO, TYPE_CHECKING, Any, Final

from typedq._validate import require_number
from typedq.errors import ConfigError, JobCancelledError, PayloadValidationError, TypedqError
from typedq.job import Job

if TYPE_CHECKING:
    from typedq.manager import JobQueueManager

__all__ = [
    "CANCEL_CHECK_S",
    "DEFAULT_CANCEL_GRACE_S",
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
#: How often a running command's job is read for ``cancel_requested``, seconds.
CANCEL_CHECK_S: Final = 0.25
#: How long a cancelled command's process group has between SIGTERM and SIGKILL, seconds.
DEFAULT_CANCEL_GRACE_S: Final = 5.0
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


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (a zombie, dead but not yet
    reaped by its new parent, does not)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True  # no /proc: the signal test above is all there is
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _terminate_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the command's process group; SIGKILL it if still there after ``grace_s``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace_s)
    # The leader may be gone while others of its group still run: wait for the group.
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    _kill_group(proc)
    proc.wait()


def _wait(
    proc: subprocess.Popen[bytes],
    timeout: float | None,
    cancelled: Callable[[], bool] | None = None,
    *,
    check_s: float = CANCEL_CHECK_S,
    grace_s: float = DEFAULT_CANCEL_GRACE_S,
) -> str | None:
    """Wait for the command; return ``"timeout"`` or ``"cancelled"`` when it was stopped.

    On timeout the group is killed at once; when ``cancelled()`` turns true (read every
    ``check_s`` seconds) it is terminated (:func:`_terminate_group`); on any exception
    it is killed and the exception goes on.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            step = None if cancelled is None else check_s
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
                step = left if step is None else min(step, left)
            try:
                proc.wait(step)
                return None
            except subprocess.TimeoutExpired:
                pass
            if deadline is not None and time.monotonic() >= deadline:
                _kill_group(proc)
                proc.wait()
                return "timeout"
            if cancelled is not None and cancelled():
                _terminate_group(proc, grace_s)
                return "cancelled"
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise


def run_command(
    payload: Mapping[str, Any],
    *,
    limit: int = MAX_OUTPUT_BYTES,
    cancelled: Callable[[], bool] | None = None,
    cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S,
    cancel_check_s: float = CANCEL_CHECK_S,
    job_id: str = "",
) -> dict[str, Any]:
    """Run the command of a shell-job payload; return its result or raise.

    Args:
        payload: the job's payload (see :func:`shell_payload`).
        limit: the most bytes kept of each of stdout and stderr.
        cancelled: called every ``cancel_check_s`` seconds while the command runs; when
            it returns True the command's process group is stopped (SIGTERM, then
            SIGKILL after ``cancel_grace_s``).
        cancel_grace_s: seconds between SIGTERM and SIGKILL.
        cancel_check_s: seconds between two calls of ``cancelled``.
        job_id: the job's id, for :class:`~typedq.errors.JobCancelledError`.

    Returns:
        ``{"exit_code": 0, "stdout": str, "stderr": str, "duration_s": float}``.

    Raises:
        PayloadValidationError: the payload is malformed (no retry can fix it).
        ShellTimeoutError: the command ran past its ``timeout`` and was killed.
        ShellCommandError: the command exited non-zero or could not be started.
        JobCancelledError: ``cancelled()`` turned true and the command was stopped.
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
        stopped = _wait(proc, timeout, cancelled, check_s=cancel_check_s, grace_s=cancel_grace_s)
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
    if stopped == "cancelled":
        signal_name = "SIGKILL" if proc.returncode == -signal.SIGKILL else "SIGTERM"
        raise JobCancelledError(
            job_id, f"command {_short_command(command)} stopped ({signal_name}) after {duration:.2f}s"
        )
    if stopped == "timeout":
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
        manager: the manager whose queues hold the jobs; with it, a running command is
            stopped when its job's cancellation is requested (the job is read every
            ``cancel_check_s`` seconds while the command runs).
        cancel_grace_s: seconds between SIGTERM and SIGKILL when a command is stopped.
        cancel_check_s: seconds between two reads of a running job.

    Raises:
        ConfigError: ``cancel_grace_s`` is negative or ``cancel_check_s`` not positive.
    """

    takes_job = True
    #: Not counted when the manager picks a queue's worker class: shell jobs run as well
    #: in an async worker's thread pool, so registering them never turns async off.
    any_worker = True

    def __init__(
        self,
        *,
        limit: int = MAX_OUTPUT_BYTES,
        manager: JobQueueManager | None = None,
        cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S,
        cancel_check_s: float = CANCEL_CHECK_S,
    ) -> None:
        require_number("cancel_grace_s", cancel_grace_s, minimum=0)
        require_number("cancel_check_s", cancel_check_s, minimum=0, strict=True)
        self.limit = limit
        self.manager = manager
        self.cancel_grace_s = float(cancel_grace_s)
        self.cancel_check_s = float(cancel_check_s)

    def _cancel_probe(self, job: Job) -> Callable[[], bool] | None:
        """Whether this attempt of ``job`` was asked to stop (read from its queue)."""
        manager = self.manager
        if manager is None:
            return None
        queue = manager.queues.get(job.queue)
        if queue is None:
            return None
        job_id, attempt = job.job_id, job.attempt

        def cancelled() -> bool:
            try:
                current = queue.get_job(job_id)
            except Exception:  # a read that fails says nothing: look again next time
                return False
            return current.cancel_requested and current.attempt == attempt

        return cancelled

    def __call__(self, job_or_payload: Job | dict[str, Any]) -> dict[str, Any]:
        if not isinstance(job_or_payload, Job):
            return run_command(job_or_payload, limit=self.limit)
        return run_command(
            job_or_payload.payload, limit=self.limit, cancelled=self._cancel_probe(job_or_payload),
            cancel_grace_s=self.cancel_grace_s, cancel_check_s=self.cancel_check_s,
            job_id=job_or_payload.job_id,
        )

    def __repr__(self) -> str:
        return f"ShellHandler(limit={self.limit}, cancel_grace_s={self.cancel_grace_s:g})"


def register_shell_jobs(
    manager: JobQueueManager,
    *,
    queue: str = "default",
    replace: bool = False,
    cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S,
) -> bool:
    """Register the :data:`SHELL_JOB_TYPE` handler on ``manager``, routed to ``queue``.

    Args:
        manager: the manager to register on.
        queue: where ``manager.submit("shell", ...)`` puts jobs (a worker of any queue
            runs them).
        replace: replace a ``"shell"`` handler the application registered itself.
        cancel_grace_s: seconds between SIGTERM and SIGKILL when a running job's
            cancellation stops its command.

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
    handler = ShellHandler(manager=manager, cancel_grace_s=cancel_grace_s)
    manager.register_handler(SHELL_JOB_TYPE, handler, queue=queue)
    return True
