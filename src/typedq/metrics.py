"""Prometheus metrics of a typedq store (the ``typedq[metrics]`` extra).

Everything is read from the store at scrape time, so one exporter shows the work of
every worker process on every host that uses the store, and several exporters show the
same figures:

* **Gauges** come from the backend's counts, never by reading jobs:
  ``typedq_queue_jobs{queue,state}`` (``Queue.count_by_status``: on Redis the sizes
  of the status indexes, SQLite its ``job_counts`` table; O(1) in the number of jobs),
  ``typedq_queue_jobs_by_priority{queue,priority}`` (PENDING jobs per priority level,
  where the backend has ``count_by_priority``), ``typedq_queue_jobs_scheduled{queue}``
  (PENDING jobs due later: delayed or waiting to retry, ``Queue.count_scheduled``; they
  are also in ``state="pending"``), ``typedq_dead_letters`` and
  ``typedq_dead_letters_dropped_total``, and the worker registry's
  ``typedq_workers{queue,state}`` (live / dead), ``typedq_workers_busy{queue}`` and
  ``typedq_worker_utilization{queue}`` (busy live workers over live workers).
* ``typedq_jobs_submitted_total{queue,job_type}``: jobs ever submitted to the queue
  (``Queue.count_submitted``, kept by the store, so it counts what every producer
  process submitted and never goes down when jobs are purged).
* **Counters and histograms** per queue and job type (``typedq_jobs_completed_total``,
  ``_failed_total`` (failed attempts, retried or not), ``_retried_total``,
  ``_dead_total``, ``_cancelled_total``; ``typedq_job_wait_seconds`` from due to
  start, ``typedq_job_run_seconds`` of the handler) are kept by each worker in its
  registry entry (``WorkerInfo.metrics``), written at every heartbeat. When an entry
  is removed (the worker stops cleanly and unregisters with its final figures, or a
  dead entry is forgotten after ``WORKER_RETENTION_S``), its figures are added to the
  queue's retired-workers totals in the store, in the same atomic step
  (``Queue.retired_metrics``). The exporter sums the retired totals and every entry,
  live and dead: each worker is counted exactly once, with what it did up to its stop,
  even one whose whole life fell between two scrapes. The totals are read before the
  entries, so a worker removed between the two reads is missed by that scrape (never
  counted twice), and each series is kept at least at what this exporter reported
  before: a series never goes down while the exporter runs (a restart of the exporter
  is an ordinary counter reset).

Labels are bounded: queue names, states, priority levels, job types; never job or
worker ids. ``typedq_up`` is 0 when the store could not be read (the rest is then
missing from that scrape, not a 500).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from typedq._worker_metrics import BUCKETS, OUTCOMES
from typedq.backends._worker_totals import add_metrics
from typedq.errors import ConfigError

try:
    from prometheus_client import CollectorRegistry, generate_latest, start_http_server
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - the extra is installed in tests
    raise ConfigError(
        "metrics", "prometheus_client", "the metrics extra: pip install 'typedq[metrics]'"
    ) from exc

if TYPE_CHECKING:
    from typedq.manager import JobQueueManager

__all__ = ["CONTENT_TYPE", "TypedqCollector", "registry_for", "render", "serve_metrics"]

logger = logging.getLogger(__name__)

#: The content type of :func:`render`'s output (Prometheus text format 0.0.4).
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

_Key = tuple[str, str]  # (queue, job type)


def _normal(entry: dict[str, Any]) -> dict[str, Any]:
    """One job type's summed figures with every outcome, bucket and sum present."""
    out: dict[str, Any] = {outcome: int(entry.get(outcome, 0)) for outcome in OUTCOMES}
    for name in ("wait", "run"):
        counts = [int(n) for n in (entry.get(name) or [])[: len(BUCKETS) + 1]]
        out[name] = counts + [0] * (len(BUCKETS) + 1 - len(counts))
        out[f"{name}_sum"] = float(entry.get(f"{name}_sum", 0.0))
    return out


def _at_least(entry: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """``entry`` with each figure raised to what it was ``before`` (a scrape that missed
    a worker being removed must not make a counter go down)."""
    if before is None:
        return entry
    out: dict[str, Any] = {}
    for name, value in entry.items():
        old = before[name]
        if isinstance(value, list):
            out[name] = [max(a, b) for a, b in zip(value, old, strict=True)]
        else:
            out[name] = max(value, old)
    return out


def _submitted(queue: Any) -> dict[str, int]:
    """``queue.count_submitted()``; empty for a backend without one of its own (a
    third-party backend, or one still inheriting the protocol's abstract method)."""
    reader = getattr(queue, "count_submitted", None)
    found = reader() if callable(reader) else None
    return dict(found) if found else {}


class TypedqCollector(Collector):
    """A ``prometheus_client`` collector reading a manager's store at every scrape.

    Args:
        manager: the manager whose queues (and dead-letter queue) are reported.
    """

    def __init__(self, manager: JobQueueManager) -> None:
        self._manager = manager
        self._lock = threading.Lock()
        # What the last scrape reported per (queue, job type): no series goes below it.
        self._reported: dict[_Key, dict[str, Any]] = {}

    def collect(self) -> Iterator[Metric]:
        """Read the store and yield every metric family (see the module docstring)."""
        with self._lock:
            try:
                families = self._families()
            except Exception as exc:
                logger.warning("metrics: cannot read the store: %s", exc)
                families = []
                up = 0.0
            else:
                up = 1.0
        yield GaugeMetricFamily("typedq_up", "1 when the store could be read for this scrape.", value=up)
        yield from families

    def _families(self) -> list[Metric]:
        manager = self._manager
        queues = manager.queues
        jobs = GaugeMetricFamily(
            "typedq_queue_jobs", "Jobs held, by queue and state.", labels=["queue", "state"]
        )
        by_priority = GaugeMetricFamily(
            "typedq_queue_jobs_by_priority", "PENDING jobs by queue and priority level.",
            labels=["queue", "priority"],
        )
        scheduled = GaugeMetricFamily(
            "typedq_queue_jobs_scheduled",
            "PENDING jobs due later (delayed or waiting to retry), by queue; part of state=pending.",
            labels=["queue"],
        )
        submitted = CounterMetricFamily(
            "typedq_jobs_submitted", "Jobs ever submitted, by queue and job type (kept by the store).",
            labels=["queue", "job_type"],
        )
        for name, queue in sorted(queues.items()):
            for status, count in queue.count_by_status().items():
                jobs.add_metric([name, status.value.lower()], count)
            scheduled.add_metric([name], queue.count_scheduled())
            for job_type, count in sorted(_submitted(queue).items()):
                submitted.add_metric([name, job_type], count)
            counter = getattr(queue, "count_by_priority", None)
            if callable(counter):
                for level, count in sorted(counter().items()):
                    by_priority.add_metric([name, str(int(level))], count)
        dead_letter = manager.get_dead_letter_queue()
        families: list[Metric] = [
            jobs,
            by_priority,
            scheduled,
            submitted,
            GaugeMetricFamily("typedq_dead_letters", "Dead letters held.", value=dead_letter.size),
            CounterMetricFamily(
                "typedq_dead_letters_dropped", "Dead letters dropped to stay within dlq_max.",
                value=dead_letter.count_dropped(),
            ),
        ]
        families += self._worker_families(queues)
        return families

    def _worker_families(self, queues: dict[str, Any]) -> list[Metric]:
        now = time.time()
        workers = GaugeMetricFamily(
            "typedq_workers", "Registered workers by state.", labels=["queue", "state"]
        )
        busy = GaugeMetricFamily("typedq_workers_busy", "Live workers running a job.", labels=["queue"])
        utilization = GaugeMetricFamily(
            "typedq_worker_utilization", "Busy live workers over live workers (0 with none).",
            labels=["queue"],
        )
        totals: dict[_Key, dict[str, Any]] = {}
        for name, queue in sorted(queues.items()):
            figures = queue.retired_metrics()  # before the entries: see the module docstring
            entries = queue.workers()
            live = [w for w in entries if w.alive(now)]
            n_busy = sum(1 for w in live if w.current)
            workers.add_metric([name, "live"], len(live))
            workers.add_metric([name, "dead"], len(entries) - len(live))
            busy.add_metric([name], n_busy)
            utilization.add_metric([name], n_busy / len(live) if live else 0.0)
            for w in entries:
                add_metrics(figures, w.metrics)
            for job_type, entry in figures.items():
                key = (name, job_type)
                totals[key] = _at_least(_normal(entry), self._reported.get(key))
        for key, before in self._reported.items():
            totals.setdefault(key, before)
        self._reported = totals
        families: list[Metric] = [workers, busy, utilization]
        labels = ["queue", "job_type"]
        for outcome in OUTCOMES:
            family = CounterMetricFamily(
                f"typedq_jobs_{outcome}", f"Jobs {outcome} by workers, by queue and job type.", labels=labels
            )
            for key, total in sorted(totals.items()):
                family.add_metric(list(key), total[outcome])
            families.append(family)
        for name, text in (("wait", "Seconds from due to start of an attempt."),
                           ("run", "Seconds a handler ran.")):
            hist = HistogramMetricFamily(f"typedq_job_{name}_seconds", text, labels=labels)
            for key, total in sorted(totals.items()):
                cumulative, buckets = 0, []
                for bound, n in zip([*map(str, BUCKETS), "+Inf"], total[name], strict=True):
                    cumulative += n
                    buckets.append((bound, cumulative))
                hist.add_metric(list(key), buckets, total[f"{name}_sum"])
            families.append(hist)
        return families


def render(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in the Prometheus text format."""
    return generate_latest(registry)


def registry_for(manager: JobQueueManager) -> CollectorRegistry:
    """A registry holding only a :class:`TypedqCollector` of ``manager``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TypedqCollector(manager))
    return registry


def serve_metrics(manager: JobQueueManager, *, host: str = "127.0.0.1", port: int = 9808) -> Any:
    """Serve ``/metrics`` of ``manager`` over HTTP in a background thread.

    Returns:
        The ``(server, thread)`` pair of ``prometheus_client.start_http_server``; call
        ``server.shutdown()`` to stop.
    """
    return start_http_server(port, addr=host, registry=registry_for(manager))
