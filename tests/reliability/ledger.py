"""The ledger: the oracle of the reliability tests (RELIABILITY.md §4d).

A test handler appends one line per event to a file opened with ``O_APPEND``::

    start <job_id> <attempt> <token> <pid> <t>
    end <job_id> <attempt> <token> <pid> <t>

Each line is written by a single ``os.write`` call, so lines from concurrent threads and
processes never interleave, and a write that reached the kernel survives ``kill -9`` of
the writer (no fsync is needed: the tests never simulate a power cut). ``t`` is
``time.time()`` with microseconds.

:func:`check` reads the file back and reports:

* ``lost``: expected ids with no ``end`` line, or (when their final statuses are given)
  not COMPLETED; it must be empty;
* ``dups``: ids with more than one ``start`` line; they must be a subset of the ids in
  flight when a process was killed (``unexpected_dups`` is the rest);
* ``dup_attempts``: ``(id, attempt)`` pairs started more than once: the same claim run
  twice, never legitimate (a retry or a redelivery has a new attempt number);
* ``recovery_latencies``: for each killed job, the seconds from the kill to its next
  ``start``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Ledger", "LedgerEntry", "LedgerReport", "check", "read_entries"]


@dataclass(frozen=True)
class LedgerEntry:
    """One parsed ledger line."""

    kind: str
    job_id: str
    attempt: int
    token: int
    pid: int
    t: float


class Ledger:
    """Appends ``start``/``end`` lines to one file; safe across threads and processes.

    Args:
        path: the ledger file; created if missing, never truncated.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _write(self, kind: str, job_id: str, attempt: int, token: int) -> None:
        if self._fd is None:
            raise ValueError(f"ledger {self.path} is closed")
        if not job_id or any(c.isspace() for c in job_id):
            raise ValueError(f"job_id={job_id!r} is invalid: a non-empty id without whitespace")
        line = f"{kind} {job_id} {attempt} {token} {os.getpid()} {time.time():.6f}\n"
        os.write(self._fd, line.encode())

    def start(self, job_id: str, attempt: int = 0, token: int = 0) -> None:
        """Record that a handler started running ``job_id``."""
        self._write("start", job_id, attempt, token)

    def end(self, job_id: str, attempt: int = 0, token: int = 0) -> None:
        """Record that a handler finished running ``job_id``."""
        self._write("end", job_id, attempt, token)

    def close(self) -> None:
        """Close the file descriptor (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_entries(path: str | os.PathLike[str]) -> list[LedgerEntry]:
    """Parse every complete line of a ledger file.

    A torn last line (a writer killed mid-line cannot happen with one ``os.write``, but a
    file may be read while being written) is ignored; any other malformed line raises.
    """
    text = Path(path).read_text()
    lines = text.split("\n")
    if lines and lines[-1] != "":
        lines.pop()  # a line still being written
    entries: list[LedgerEntry] = []
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 6 or parts[0] not in ("start", "end"):
            raise ValueError(f"ledger line {number} is malformed: {line!r}")
        kind, job_id, attempt, token, pid, t = parts
        entries.append(LedgerEntry(kind, job_id, int(attempt), int(token), int(pid), float(t)))
    return entries


@dataclass
class LedgerReport:
    """What :func:`check` found."""

    starts: Counter[str] = field(default_factory=Counter)
    ends: Counter[str] = field(default_factory=Counter)
    lost: set[str] = field(default_factory=set)
    dups: set[str] = field(default_factory=set)
    dup_attempts: set[tuple[str, int]] = field(default_factory=set)
    unexpected_dups: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    recovery_latencies: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No job lost, no duplicate outside the in-flight set, no unknown id."""
        return not (self.lost or self.unexpected_dups or self.dup_attempts or self.unknown)


def check(
    path: str | os.PathLike[str],
    expected_ids: Iterable[str],
    *,
    statuses: Mapping[str, object] | None = None,
    in_flight_at_kill: Iterable[str] = (),
    kill_times: Mapping[str, float] | None = None,
) -> LedgerReport:
    """Compare a ledger with the ids that were enqueued.

    Args:
        path: the ledger file.
        expected_ids: every id whose enqueue returned.
        statuses: final status by id (``JobStatus`` or its string value); an expected id
            whose status is not COMPLETED counts as lost.
        in_flight_at_kill: ids that were running in a killed process; their duplicates
            are allowed.
        kill_times: job id → the time of the kill that interrupted it; the report gives,
            for each, the seconds from the kill to the first later ``start``.

    Returns:
        A :class:`LedgerReport`.
    """
    expected = set(expected_ids)
    entries = read_entries(path)
    report = LedgerReport()
    for entry in entries:
        (report.starts if entry.kind == "start" else report.ends)[entry.job_id] += 1
    seen = set(report.starts) | set(report.ends)
    report.unknown = seen - expected
    report.lost = {job_id for job_id in expected if report.ends[job_id] == 0}
    if statuses is not None:
        report.lost |= {
            job_id for job_id in expected if str(statuses.get(job_id)) != "COMPLETED"
        }
    report.dups = {job_id for job_id, n in report.starts.items() if n > 1}
    attempts = Counter((e.job_id, e.attempt) for e in entries if e.kind == "start")
    report.dup_attempts = {key for key, n in attempts.items() if n > 1}
    report.unexpected_dups = report.dups - set(in_flight_at_kill)
    if kill_times:
        for job_id, killed_at in kill_times.items():
            later = [e.t for e in entries if e.kind == "start" and e.job_id == job_id and e.t > killed_at]
            if later:
                report.recovery_latencies[job_id] = min(later) - killed_at
    return report
