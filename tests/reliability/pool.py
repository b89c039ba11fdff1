"""A real process pool for the process tests: ``python -m typedq worker --app APP ARGS``.

:class:`Pool` starts the pool in its own session with the test's folder and backend in
``TYPEDQ_TEST_DIR`` and ``TYPEDQ_TEST_BACKEND`` (the apps read them; every other
``TYPEDQ_*`` variable of the test's environment is left out), logs to a file of that
folder, and on leaving kills whatever of it is still running. The apps write a pid file
per worker process into ``<folder>/pids``, which :meth:`Pool.worker_pids` reads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.helpers import REPO, wait_until

from typedq.backends.base import Queue
from typedq.job import Job

#: The app most process tests run: the ledger app of ``test_process_workers``.
LEDGER_APP = "tests.reliability.test_process_workers:make_app"
#: Lease knobs of the reliability tests (RELIABILITY.md §4a).
FAST: dict[str, Any] = {"lease_s": 1.0, "heartbeat_s": 0.25, "reaper_s": 0.1, "max_lost": 3}


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not reaped, does not)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def parent(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields is not None else None


def enqueue_work(
    queue: Queue, payloads: list[dict[str, Any]], *, prefix: str = "j", **fields: Any
) -> list[str]:
    """One ``work`` job per payload, ids ``<prefix>00000``, ``<prefix>00001``…, in one batch."""
    jobs = [Job.create("work", p, job_id=f"{prefix}{i:05d}", **fields) for i, p in enumerate(payloads)]
    return queue.enqueue_many(jobs)


class Pool:
    """``python -m typedq worker --app APP ARGS`` in its own session, logging to a file."""

    def __init__(
        self,
        folder: Path,
        backend: str,
        *args: str,
        app: str = LEDGER_APP,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.folder = folder
        self.log_path = folder / f"pool-{time.monotonic_ns()}.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TYPEDQ_")}
        environ.update(TYPEDQ_TEST_DIR=str(folder), TYPEDQ_TEST_BACKEND=backend)
        environ.update(env or {})
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "typedq", "worker", "--app", app, "--log-level", "INFO", *args],
                cwd=REPO, env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """Live worker processes of this pool (its children that built the app)."""
        folder = self.folder / "pids"
        pids = [int(p.name) for p in folder.iterdir()] if folder.exists() else []
        return [p for p in pids if alive(p) and parent(p) == self.proc.pid]

    def wait_full(self, size: int, timeout: float = 20.0) -> list[int]:
        wait_until(
            lambda: len(self.worker_pids()) == size, timeout=timeout, message=f"{size} worker processes"
        )
        return self.worker_pids()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def __enter__(self) -> Pool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        elif exc is None:
            return
        # Leave nothing behind: children of a killed pool are in its session.
        for pid_file in (self.folder / "pids").glob("*"):
            if alive(int(pid_file.name)):
                os.kill(int(pid_file.name), signal.SIGKILL)
