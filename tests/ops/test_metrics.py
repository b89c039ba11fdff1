"""The Prometheus exporter: scraped over real HTTP, parsed by prometheus_client's parser.

Counters and histograms come from the workers' registry entries in the store, so an
exporter in another process (``typedq metrics``) sees the same figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.helpers import wait_until
from tests.ops.conftest import Add, Boom, add, boom

from typedq import JobQueueManager
from typedq._worker_metrics import BUCKETS, WorkerMetrics
from typedq.job import JobStatus
from typedq.metrics import registry_for, render, serve_metrics
from typedq.worker import Worker

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """GET ``url`` and parse it: (sample name, labels) -> value."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_worker_metrics_buckets_and_snapshot() -> None:
    metrics = WorkerMetrics()
    metrics.observe("q", "t", wait_s=0.005, run_s=BUCKETS[-1] + 1)
    metrics.observe("q", "t", wait_s=-1.0)
    metrics.count("q", "t", "completed", 2)
    metrics.count("other", "t", "completed", 5)
    snap = metrics.snapshot("q")["t"]
    assert snap["completed"] == 2
    assert snap["wait"][0] == 2  # 0.005 is within le=0.005; a negative wait counts as 0
    assert snap["run"][-1] == 1  # beyond the last bound: +Inf
    assert snap["wait_sum"] == pytest.approx(0.005)
    snap["wait"][0] = 99  # a snapshot is a copy
    assert metrics.snapshot("q")["t"]["wait"][0] == 2
    assert metrics.snapshot("other")["t"]["completed"] == 5
    assert metrics.snapshot()["t"]["completed"] == 7  # every queue's figures, summed
    assert metrics.snapshot("none") == {}


@pytest.mark.timeout(60)
def test_scrape_shows_counts_counters_histograms_and_workers(
    manager: JobQueueManager, workers: Callable[[int], list[Worker]]
) -> None:
    for i in range(5):
        manager.enqueue(add, Add(a=i, b=1))
    manager.enqueue(boom, Boom(reason="always"))
    manager.enqueue(add, Add(a=0, b=0), delay_s=3600)  # scheduled: due in an hour
    started = workers(2)
    server, _ = serve_metrics(manager, port=0)
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        def settled() -> bool:
            s = scrape(url)
            return (
                value(s, "typedq_jobs_completed_total", queue="default", job_type="add") == 5
                and value(s, "typedq_jobs_dead_total", queue="default", job_type="boom") == 1
            )

        wait_until(settled, timeout=20, interval=0.05, message="workers' counters in the registry")
        s = scrape(url)
        assert value(s, "typedq_up") == 1
        assert value(s, "typedq_queue_jobs", queue="default", state="completed") == 5
        assert value(s, "typedq_queue_jobs", queue="default", state="dead") == 1
        assert value(s, "typedq_queue_jobs", queue="default", state="pending") == 1
        assert value(s, "typedq_queue_jobs_scheduled", queue="default") == 1
        assert value(s, "typedq_dead_letters") == 1
        # boom: max_retries=1, so one retried failure and one that killed it.
        assert value(s, "typedq_jobs_failed_total", queue="default", job_type="boom") == 2
        assert value(s, "typedq_jobs_retried_total", queue="default", job_type="boom") == 1
        assert value(s, "typedq_jobs_failed_total", queue="default", job_type="add") == 0
        # One observation per attempt: 5 for add, 2 for boom.
        assert value(s, "typedq_job_run_seconds_count", queue="default", job_type="add") == 5
        assert value(s, "typedq_job_wait_seconds_count", queue="default", job_type="boom") == 2
        assert value(s, "typedq_job_run_seconds_bucket", queue="default", job_type="add", le="+Inf") == 5
        assert value(s, "typedq_workers", queue="default", state="live") == len(started)
        assert value(s, "typedq_worker_utilization", queue="default") is not None
        # Bounded labels: no job ids or worker ids anywhere.
        assert all(set(dict(labels)) <= {"queue", "job_type", "state", "le", "priority"} for _, labels in s)

        # Workers that stop remove their registry entries; their counts stay in the sums.
        for worker in started:
            worker.stop()
        for worker in started:
            worker.join(10)
        wait_until(lambda: not manager.registered_workers(), timeout=10)
        s = scrape(url)
        assert value(s, "typedq_workers", queue="default", state="live") == 0
        assert value(s, "typedq_jobs_completed_total", queue="default", job_type="add") == 5
        assert value(s, "typedq_job_run_seconds_count", queue="default", job_type="add") == 5
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(60)
def test_typedq_metrics_command_in_another_process(
    manager: JobQueueManager, workers: Callable[[int], list[Worker]], shared_store_url: str, tmp_path: Path,
) -> None:
    """``typedq metrics --port`` in its own process reports the work of this process's
    workers: the figures travel through the store."""
    for i in range(3):
        manager.enqueue(add, Add(a=i, b=i))
    workers(1)
    wait_until(lambda: manager.get_queue("default").count_by_status()[JobStatus.COMPLETED] == 3, timeout=20)
    env = {**os.environ, "TYPEDQ_CONFIG": str(tmp_path / "typedq.json"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "typedq", "metrics", "--backend", shared_store_url, "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "/metrics" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = line.strip().rsplit(" ", 1)[-1]

        def counted() -> Any:
            return value(scrape(url), "typedq_jobs_completed_total", queue="default", job_type="add") == 3

        wait_until(counted, timeout=20, interval=0.05, message="the other process's scrape")
        s = scrape(url)
        assert value(s, "typedq_queue_jobs", queue="default", state="completed") == 3
        assert value(s, "typedq_workers", queue="default", state="live") == 1
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_submitted_total_counts_every_submission_and_survives_a_purge(manager: JobQueueManager) -> None:
    queue = manager.get_queue("default")
    registry = registry_for(manager)

    def submitted() -> dict[str, float]:
        text = render(registry).decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["typedq_jobs_submitted"].type == "counter"
        return {
            s.labels["job_type"]: s.value
            for s in families["typedq_jobs_submitted"].samples
            if s.name == "typedq_jobs_submitted_total" and s.labels["queue"] == "default"
        }

    assert submitted() == {}
    for i in range(3):
        manager.enqueue(add, Add(a=i, b=1))
    manager.enqueue(boom, Boom(reason="x"))
    assert submitted() == {"add": 3.0, "boom": 1.0}
    for _ in range(3):
        claim = queue.claim("w", lease_s=30.0, job_types=["add"])
        assert claim is not None
        queue.complete(claim.job.job_id, token=claim.token)
    assert queue.purge(statuses=[JobStatus.COMPLETED], older_than=queue.clock.now() + 1.0) == 3
    assert submitted() == {"add": 3.0, "boom": 1.0}


def test_scrape_reports_down_when_the_store_fails(manager: JobQueueManager) -> None:
    registry = registry_for(manager)
    queue = manager.get_queue("default")

    def broken() -> Any:
        raise ConnectionError("store down")

    setattr(queue, "count_by_status", broken)  # noqa: B010  (an instance attribute shadows the method)
    try:
        text = render(registry).decode()
    finally:
        delattr(queue, "count_by_status")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["typedq_up"].samples[0].value == 0
    assert "typedq_queue_jobs" not in families


def _parsed(text: bytes) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


@pytest.mark.timeout(60)
def test_a_worker_whose_life_fell_between_two_scrapes_is_counted_exactly(shared_store_url: str) -> None:
    """5 jobs by a worker that started and stopped between two scrapes, and never
    heartbeated in between (heartbeat 30 s): its final figures reach the store when it
    unregisters, so the next scrape counts exactly 5, and so does a fresh exporter."""
    manager = JobQueueManager({
        "backend": shared_store_url, "lease_s": 90.0, "heartbeat_s": 30.0, "poll_interval": 0.02,
    })

    @manager.handler(add)
    def _add(p: Add) -> int:
        return p.a + p.b

    try:
        registry = registry_for(manager)
        completed = {"name": "typedq_jobs_completed_total", "queue": "default", "job_type": "add"}
        assert value(_parsed(render(registry)), **completed) is None
        refs = [manager.enqueue(add, Add(a=i, b=1)) for i in range(5)]
        manager.start_workers("default", 1)
        done = JobStatus.COMPLETED
        wait_until(lambda: all(manager.get_job(r.job_id).status is done for r in refs), timeout=20)
        assert manager.stop_workers("default") == []
        assert manager.registered_workers() == []
        for exporter in (registry, registry, registry_for(manager)):  # scraped again, and afresh
            s = _parsed(render(exporter))
            assert value(s, **completed) == 5
            assert value(s, "typedq_job_run_seconds_count", queue="default", job_type="add") == 5
            assert value(s, "typedq_job_wait_seconds_bucket", queue="default", job_type="add", le="+Inf") == 5
    finally:
        manager.close()


@pytest.mark.timeout(60)
def test_a_worker_serving_two_queues_counts_each_job_once_under_its_own_queue(shared_store_url: str) -> None:
    manager = JobQueueManager({"backend": shared_store_url, "heartbeat_s": 0.1, "poll_interval": 0.05})
    try:
        manager.register_handler("email", lambda payload: None, queue="emails")
        manager.register_handler("report", lambda payload: None, queue="reports")
        ids = [manager.submit("email", {}) for _ in range(3)]
        ids += [manager.submit("report", {}) for _ in range(2)]
        started = manager.start_workers(queues={"emails": 1, "reports": 1}, count=1)
        wait_until(lambda: all(manager.get_job(i).status is JobStatus.COMPLETED for i in ids), timeout=30.0)

        def completed() -> dict[tuple[str, str], float]:
            got: dict[tuple[str, str], float] = {}
            for family in text_string_to_metric_families(render(registry_for(manager)).decode()):
                for sample in family.samples:
                    if sample.name == "typedq_jobs_completed_total":
                        got[sample.labels["queue"], sample.labels["job_type"]] = sample.value
            return got

        expected = {("emails", "email"): 3.0, ("reports", "report"): 2.0}
        # Registered with both queues, the worker reports each queue's figures to that
        # queue only: no job counted twice, none under the other queue.
        wait_until(lambda: {k: v for k, v in completed().items() if v} == expected, timeout=10.0)
        for worker in started:
            worker.stop()
            worker.join(10)
        assert {k: v for k, v in completed().items() if v} == expected  # the retired totals
    finally:
        manager.close(graceful=False)
