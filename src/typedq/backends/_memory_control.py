"""Job control of the memory backend: lease renewals that report a cancel request,
progress, job logs and reordering (see ``_control``)."""

from __future__ import annotations

from collections.abc import Sequence

from typedq.backends import _control as control
from typedq.backends._memory_state import MemoryState
from typedq.backends.base import LeaseRenewal
from typedq.job import Job, JobLogLine, JobProgress

__all__ = ["MemoryControl"]


class MemoryControl(MemoryState):
    """The job-control transitions of ``JobQueue``, each under the queue's lock."""

    def renew_lease(self, job_id: str, *, token: int, lease_s: float) -> LeaseRenewal:
        """Push the lease deadline and report a cancel request; see :meth:`Queue.renew_lease`."""
        with self._lock:
            job = self._get_leased(job_id, token)
            until = job.lease_until = self._clock.now() + lease_s
            self._lease_mono[job_id] = self._clock.monotonic() + lease_s
            return LeaseRenewal(until, job.cancel_requested)

    def set_progress(self, job_id: str, *, token: int, progress: JobProgress) -> None:
        """Store a running job's progress; see :meth:`Queue.set_progress`."""
        with self._lock:
            self._get_leased(job_id, token).progress = control.stamped(progress, token)

    def append_logs(self, job_id: str, *, token: int, lines: Sequence[JobLogLine]) -> None:
        """Add lines to a running job's log; see :meth:`Queue.append_logs`."""
        with self._lock:
            self._get_leased(job_id, token)
            self._logs[job_id] = control.trimmed_logs(self._logs.get(job_id, ()), lines)

    def get_logs(self, job_id: str) -> list[JobLogLine]:
        """A job's log lines, oldest first; see :meth:`Queue.get_logs`."""
        with self._lock:
            self._get(job_id)
            return list(self._logs.get(job_id, ()))

    def reorder(self, job_id: str, *, before: str | None = None, position: str | None = None) -> Job:
        """Move a ready job inside its priority level; see :meth:`Queue.reorder`."""
        control.check_reorder(job_id, before, position)
        with self._cond:
            self._promote_due()
            job = self._get(job_id)
            if job_id not in self._ready_live:
                raise control.not_ready(job_id, self._status[job_id])
            level = [
                other for other_id in self._ready_live
                if other_id != job_id and (other := self._jobs[other_id]).priority == job.priority
            ]
            keyed = sorted(
                (control.order_key((o.scheduled_at, o.created_at)), self._ready_live[o.job_id], o)
                for o in level
            )
            anchor: control.OrderKey | None = None
            previous: control.OrderKey | None = None
            if before is not None:
                other = self._get(before)
                if before not in self._ready_live:
                    raise control.not_ready(before, self._status[before], "before")
                if other.priority != job.priority:
                    raise control.other_level(before, job)
                for index, (_, _, candidate) in enumerate(keyed):
                    if candidate is other:
                        anchor = (other.scheduled_at, other.created_at)
                        if index:
                            prev = keyed[index - 1][2]
                            previous = (prev.scheduled_at, prev.created_at)
                        break
            elif keyed:
                edge = keyed[0][2] if position == "front" else keyed[-1][2]
                anchor = (edge.scheduled_at, edge.created_at)
            key = control.new_order_key(
                job, before=before, position=position, anchor=anchor, previous=previous
            )
            if key is not None:
                self._unplace(job)  # the old heap entry becomes a tombstone
                job.scheduled_at, job.created_at = key
                self._schedule(job)
            return job

