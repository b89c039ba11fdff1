"""Resource readings of a process from ``/proc`` (Linux; no ``psutil`` needed): resident
set, CPU time, threads (RELIABILITY.md §4d); and the soak tests' growth rule's slope."""

from __future__ import annotations

import os

__all__ = ["cpu_seconds", "rss_bytes", "slope_mib_per_100k", "thread_count"]

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


def slope_mib_per_100k(points: list[tuple[int, int]]) -> float:
    """The least-squares slope of ``(jobs, resident bytes)`` points, in MiB per 100,000
    jobs (RELIABILITY.md L1's growth rule)."""
    xs = [jobs for jobs, _ in points]
    ys = [rss / (1 << 20) for _, rss in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 100_000
