"""Victim processes of the kill -9 tests: a process that reports over a pipe what it
did, and the parent's end of that pipe. The tests kill victims by pid, never by process
name.

Victims come from :func:`victim_context`: forked from a ``forkserver`` process, a fresh
interpreter that shares nothing with the test's process (no threads, no open
connections, as a ``spawn`` process) and imported the victims' modules once, so a victim
starts in milliseconds where a spawned one imported typedq anew (about half a second
here, a few dozen victims a test)."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, cast

#: The modules victims run code from, imported once by the fork server.
VICTIM_MODULES = (
    "tests.backends._sqlite_procs",
    "tests.reliability._batch_procs",
    "tests.reliability._drain_procs",
)


def victim_context() -> Any:
    """The ``forkserver`` multiprocessing context victims start from (see the module)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(VICTIM_MODULES))
    return context


class Victim:
    """A process of ``context`` (:func:`victim_context`) running ``target(where, *args,
    conn)``, and the parent's end of its pipe (``where``: the store the target opens, a
    file or a URL)."""

    def __init__(self, context: Any, where: object, target: Callable[..., None], *args: object) -> None:
        self.conn, child_end = cast(tuple[Connection, Connection], context.Pipe())
        self.proc: BaseProcess = context.Process(
            target=target, args=(str(where), *args, child_end), daemon=True
        )
        self.proc.start()
        child_end.close()

    def receive(self, timeout: float = 60.0) -> tuple[str, int]:
        kind, value = self.message(timeout)
        return str(kind), int(value)

    def message(self, timeout: float = 60.0) -> tuple[Any, ...]:
        """The next message, waiting at most ``timeout`` seconds for it."""
        assert self.conn.poll(timeout), "the victim sent nothing"
        return tuple(self.conn.recv())

    def rest(self) -> list[tuple[Any, ...]]:
        """Every message the (dead) victim sent and the test has not read yet."""
        messages = []
        try:
            while self.conn.poll():
                messages.append(tuple(self.conn.recv()))
        except EOFError:  # the victim's end is closed: nothing more
            pass
        return messages

    def acknowledged(self, batch: int) -> bool:
        """Whether the (dead) victim had reported ``enqueue_many`` of ``batch`` returned."""
        try:
            return bool(self.conn.poll()) and self.conn.recv() == ("done", batch)
        except EOFError:  # nothing more was sent before the kill
            return False

    def kill(self) -> None:
        """SIGKILL it now and reap it; it must die of the signal."""
        assert self.proc.pid is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(30)
        assert self.proc.exitcode == -signal.SIGKILL

    def end(self) -> None:
        """Kill it if still running (by pid) and release the pipe."""
        if self.proc.is_alive() and self.proc.pid is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(30)
        self.conn.close()
