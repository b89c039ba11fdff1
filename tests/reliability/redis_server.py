"""A private ``redis-server`` a test owns (RELIABILITY.md §4d): started on a free loopback
port in a folder of the test's, with the persistence and memory settings it asks for,
then shut down, killed, paused or restarted on the same port by the test.

The shared server on 127.0.0.1:6379 is never touched. ``redis_servers`` (the fixture in
``tests/reliability/conftest.py``) builds them and stops every one at teardown; without a
``redis-server`` binary the test is skipped with the reason, or fails when
``TYPEDQ_REQUIRE_SERVICES=1``.

Knobs a test passes as ``redis-server`` options (``{"appendonly": "yes",
"appendfsync": "always"}``): the defaults are no persistence at all (``save ""``,
``appendonly no``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.helpers import redis_available, skip_or_fail, wait_until

__all__ = ["RedisServer", "free_port", "redis_server_binary"]

#: Options every private server starts with; a test's options override them.
BASE_OPTIONS: Mapping[str, str] = {"save": "", "appendonly": "no", "bind": "127.0.0.1"}


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """The ``redis-server`` on PATH; skips (or fails, services required) without one."""
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("redis-server is not installed: the Redis fault tests start a private one")
        raise AssertionError("unreachable")  # skip_or_fail raised
    return binary


class RedisServer:
    """One private ``redis-server`` process, restartable on its port with its data folder.

    Args:
        folder: its working directory (RDB and AOF files, its log).
        options: ``redis-server`` options over :data:`BASE_OPTIONS`.
        port: the port; a free one when None.
    """

    def __init__(
        self, folder: Path, options: Mapping[str, str] | None = None, port: int | None = None
    ) -> None:
        self.binary = redis_server_binary()
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.options = {**BASE_OPTIONS, **(options or {})}
        self.port = port if port is not None else free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.starts = 0

    # -- addresses ------------------------------------------------------------------------

    def url(self, **options: Any) -> str:
        """``redis://127.0.0.1:<port>/0`` with ``options`` as its query string."""
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"redis://127.0.0.1:{self.port}/0" + (f"?{query}" if query else "")

    def client(self, **kwargs: Any) -> Any:
        """A plain redis-py client of this server that never retries (the caller closes it)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        kwargs.setdefault("retry", Retry(NoBackoff(), 0))
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    @property
    def log(self) -> str:
        path = self.folder / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- life cycle -----------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server (again, on the same port and folder) and wait until it answers."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        args = [self.binary, "--port", str(self.port), "--dir", str(self.folder)]
        for name, value in self.options.items():
            args += [f"--{name}", *value.split()] if value else [f"--{name}", ""]
        with open(self.folder / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        self.paused = False
        self.starts += 1
        proc = self.proc
        wait_until(
            lambda: proc.poll() is not None or self._loaded(),
            timeout=timeout,
            message=f"the private redis-server on port {self.port} answers",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}:\n{self.log[-2000:]}")
        return self

    def _loaded(self) -> bool:
        """Whether the server answers and has loaded its data set (no ``LOADING`` reply)."""
        if not redis_available(port=self.port, timeout=0.2):
            return False
        try:
            client = self.client(socket_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the server was never started")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def shutdown(self, *, save: bool = True, timeout: float = 10.0) -> None:
        """``SHUTDOWN SAVE`` (or ``NOSAVE``) and wait for the process to exit."""
        client = self.client(socket_timeout=timeout)
        try:
            with contextlib.suppress(Exception):  # the connection closes under the reply
                client.shutdown(save=save, nosave=not save)
        finally:
            client.close()
        self._reap(timeout)

    def kill(self, timeout: float = 10.0) -> None:
        """``kill -9`` the server (a crash: nothing flushed but what the kernel has)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self._reap(timeout)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (an outage)."""
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def _reap(self, timeout: float) -> None:
        if self.proc is not None:
            self.proc.wait(timeout)
        self.paused = False

    def close(self) -> None:
        """Stop the server whatever its state (teardown)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def wait_down(self, timeout: float = 10.0) -> None:
        """Wait until nothing answers on the port."""
        deadline = time.monotonic() + timeout
        while redis_available(port=self.port, timeout=0.2):
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server on port {self.port} still answers")
            time.sleep(0.01)
