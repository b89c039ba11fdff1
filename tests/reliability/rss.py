"""Resource readings of a process from ``/proc`` (Linux; no ``psutil`` needed): resident
set, CPU time, threads (RELIABILITY.md §4d)."""

from __future__ import annotations

import os

__all__ = ["cpu_seconds", "rss_bytes", "thread_count"]

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int | str = "self") -> int:
    """The resident set of process ``pid``, in bytes."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time process ``pid`` used so far (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def thread_count(pid: int | str = "self") -> int:
    """How many threads process ``pid`` runs."""
    return len(os.listdir(f"/proc/{pid}/task"))
