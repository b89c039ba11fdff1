"""Worker identity: one id per incarnation of a worker, never a reused name.

An id is ``prefix@host:pid:start:random``: the host and pid say where the worker runs,
the process start time tells a pid reused by a later process apart, and the random part
tells two workers of one process apart. A backend whose workers all run on one host
(SQLite) parses it to check whether a lease's owner is still alive before rescuing.

The host is the machine's host name, or ``TYPEDQ_HOSTNAME`` when set (read once, at
import): for containers whose host names are random or shared, so that the worker
registry names a host an operator recognises. It must be non-empty and hold no ``:``,
``@`` or whitespace (it is a field of the id).
"""

from __future__ import annotations

import os
import re
import secrets
import socket

from typedq.errors import ConfigError

__all__ = [
    "HOST",
    "HOST_ENV",
    "new_worker_id",
    "owner_alive",
    "parse_worker_id",
    "process_start_time",
    "set_supervisor",
    "stop_pid",
]

#: The environment variable that overrides the host name in worker ids and the registry.
HOST_ENV = "TYPEDQ_HOSTNAME"


def _host() -> str:
    given = os.environ.get(HOST_ENV)
    if given is None or given == "":
        return socket.gethostname()
    if re.fullmatch(r"[^\s:@]{1,253}", given) is None:
        raise ConfigError(HOST_ENV, given, "a host name of 1-253 characters without ':', '@' or spaces")
    return given


HOST = _host()

_supervisor: int | None = None


def set_supervisor(pid: int | None) -> None:
    """Record the process that supervises this one (a process pool's parent), or None."""
    global _supervisor
    _supervisor = pid


def stop_pid() -> int:
    """The process to signal to stop this process's workers gracefully.

    This process, or its supervisor when it has one: a pool replaces a child that stops,
    so stopping a pool's worker means stopping the pool.
    """
    return os.getpid() if _supervisor is None else _supervisor


def _proc_stat(pid: int) -> tuple[bytes, int] | None:
    """``(state, start time)`` of process ``pid`` from ``/proc``, or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Fields 3 (state) and 22 (start time); the command name (field 2) may contain
    # spaces, so split after its ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[0], int(fields[19])


def process_start_time(pid: int) -> int:
    """Return the start time of process ``pid`` in clock ticks since boot (0 if unknown).

    Together with the pid it identifies one incarnation of a process: a pid reused by a
    later process has a different start time.
    """
    found = _proc_stat(pid)
    return 0 if found is None else found[1]


def new_worker_id(prefix: str | None = None) -> str:
    """Return a worker id unique to this incarnation: ``prefix@host:pid:start:random``.

    ``start`` is the process start time (see :func:`process_start_time`), so a backend
    on the same host can tell whether the owner of a lease is still alive.
    """
    pid = os.getpid()
    return f"{prefix or 'worker'}@{HOST}:{pid}:{process_start_time(pid)}:{secrets.token_hex(4)}"


def parse_worker_id(worker_id: str) -> tuple[str, int, int] | None:
    """Return ``(host, pid, start_time)`` from an id made by :func:`new_worker_id`, or None."""
    _, _, rest = worker_id.rpartition("@")
    parts = rest.split(":")
    if len(parts) != 4:
        return None
    try:
        return parts[0], int(parts[1]), int(parts[2])
    except ValueError:
        return None


def owner_alive(worker_id: str | None) -> bool | None:
    """Whether the process that owns ``worker_id`` is alive on this host.

    Returns True or False for an id of this host whose owner can be checked, and None
    when it cannot be told (another host, or an id not made by :func:`new_worker_id`).
    A zombie (killed, not yet reaped by its parent) is not alive: it keeps its pid and
    start time, but will never finish its jobs.
    """
    if not worker_id:
        return None
    parsed = parse_worker_id(worker_id)
    if parsed is None or parsed[0] != HOST:
        return None
    _, pid, start = parsed
    if start == 0:
        return None
    found = _proc_stat(pid)
    return found is not None and found[1] == start and found[0] not in (b"Z", b"X")
