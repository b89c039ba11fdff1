"""Prometheus metrics of a typedq store (the ``typedq[metrics]`` extra).

Everything is read from the store at scrape time, so one exporter shows the work of
every worker process on every host that uses the store, and several exporters show the
same figures:

* **Gauges** come from the backend's counts, never by reading jobs:
  ``typedq_queue_jobs{queue,state}`` (``Queue.count_by_status``: on Redis the sizes
  of the status indexes, O(1); SQLite counts the queue's rows in one read),
  ``typedq_queue_jobs_by_priority{queue,priority}`` (PENDING jobs per priority level,
  where the backend has ``count_by_priority``), ``typedq_queue_jobs_scheduled{queue}``
  (PENDING jobs due later: delayed or waiting to retry, ``Queue.count_scheduled``; they
  are also in ``state="pending"``), ``typedq_dead_letters`` and
  ``typedq_dead_letters_dropped_total``, and the worker registry's
  ``typedq_workers{queue,state}`` (live / dead), ``typedq_workers_busy{queue}`` and
  ``typedq_worker_utilization{queue}`` (busy live workers over live workers).
* **Counters and histograms** per queue and job type (``typedq_jobs_completed_total``,
  ``_failed_total`` (failed attempts, retried or not), ``_retried_total``,
  ``_dead_total``, ``_cancelled_total``; ``typedq_job_wait_seconds`` from due to
  start, ``typedq_job_run_seconds`` of the handler) are kept by each worker in its
  registry entry (``WorkerInfo.metrics``), written at every heartbeat, and summed over
  every registered worker, live and recently dead (a dead worker's entry stays for
  ``WORKER_RETENTION_S``). A worker that stops on its own removes its entry; the
  exporter then keeps its last figures in the sums, so a series never goes down while
  the exporter runs (a restart of the exporter is an ordinary counter reset). What a
  worker did after its last heartbeat before it stopped (at most one heartbeat
  interval of work) is not counted, nor is a worker whose whole life fell between two
  scrapes.

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


def _zero() -> dict[str, Any]:
    return {
        **dict.fromkeys(OUTCOMES, 0),
        "wait": [0] * (len(BUCKETS) + 1), "wait_sum": 0.0,
        "run": [0] * (len(BUCKETS) + 1), "run_sum": 0.0,
    }


def _add(into: dict[str, Any], entry: dict[str, Any]) -> None:
    for outcome in OUTCOMES:
        into[outcome] += int(entry.get(outcome, 0))
    for name in ("wait", "run"):
        counts = entry.get(name) or []
        for i, n in enumerate(counts[: len(BUCKETS) + 1]):
            into[name][i] += int(n)
        into[f"{name}_sum"] += float(entry.get(f"{name}_sum", 0.0))


class TypedqCollector(Collector):
    """A ``prometheus_client`` collector reading a manager's store at every scrape.

    Args:
        manager: the manager whose queues (and dead-letter queue) are reported.
    """

    def __init__(self, manager: JobQueueManager) -> None:
        self._manager = manager
        self._lock = threading.Lock()
        # (queue, worker id) -> that worker's last metrics seen; the figures of workers
        # whose entries went away, summed per (queue, job type).
        self._seen: dict[tuple[str, str], dict[str, Any]] = {}
        self._retired: dict[_Key, dict[str, Any]] = {}

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
        for name, queue in sorted(queues.items()):
            for status, count in queue.count_by_status().items():
                jobs.add_metric([name, status.value.lower()], count)
            scheduled.add_metric([name], queue.count_scheduled())
            counter = getattr(queue, "count_by_priority", None)
            if callable(counter):
                for level, count in sorted(counter().items()):
                    by_priority.add_metric([name, str(int(level))], count)
        dead_letter = manager.get_dead_letter_queue()
        families: list[Metric] = [
            jobs,
            by_priority,
            scheduled,
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
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for name, queue in sorted(queues.items()):
            entries = queue.workers()
            live = [w for w in entries if w.alive(now)]
            n_busy = sum(1 for w in live if w.current)
            workers.add_metric([name, "live"], len(live))
            workers.add_metric([name, "dead"], len(entries) - len(live))
            busy.add_metric([name], n_busy)
            utilization.add_metric([name], n_busy / len(live) if live else 0.0)
            for w in entries:
                seen[(name, w.worker_id)] = w.metrics
        for key, metrics in self._seen.items():
            if key not in seen:  # the entry went away: keep its last figures in the sums
                for job_type, entry in metrics.items():
                    _add(self._retired.setdefault((key[0], job_type), _zero()), entry)
        self._seen = seen
        totals: dict[_Key, dict[str, Any]] = {k: {**v, "wait": list(v["wait"]), "run": list(v["run"])}
                                              for k, v in self._retired.items()}
        for (queue_name, _), metrics in seen.items():
            for job_type, entry in metrics.items():
                _add(totals.setdefault((queue_name, job_type), _zero()), entry)
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
