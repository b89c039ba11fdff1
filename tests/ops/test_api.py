"""The REST API over real HTTP: tokens, typed submission, jobs, dead letters, problems."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.helpers import wait_until
from tests.ops.conftest import ADMIN, READER, Add, Boom, LiveServer, add, boom

from typedq import JobQueueManager
from typedq.api import Tokens, create_app
from typedq.errors import ConfigError
from typedq.worker import Worker

pytestmark = [pytest.mark.timeout(60)]


def _dead_letter(manager: JobQueueManager, workers: Callable[[int], list[Worker]]) -> str:
    """A dead job (``boom`` fails twice), its dead letter in place; workers stopped."""
    ref = manager.enqueue(boom, Boom(reason="no"))
    started = workers(1)
    wait_until(lambda: manager.get_job(ref.job_id).status.value == "DEAD", timeout=20)
    for worker in started:
        worker.stop()
    for worker in started:
        worker.join(10)
    return ref.job_id


def _snapshot(manager: JobQueueManager) -> Any:
    queues = {name: q.export_jobs() for name, q in manager.queues.items()}
    return queues, manager.get_dead_letter_queue().export_jobs()


@pytest.mark.security
def test_every_mutating_route_refuses_without_token_and_with_read_token(
    manager: JobQueueManager, api: LiveServer, workers: Callable[[int], list[Worker]]
) -> None:
    dead_id = _dead_letter(manager, workers)
    pending = manager.enqueue(add, Add(a=1, b=2)).job_id
    paths = api.client(ADMIN).get("/openapi.json").json()["paths"]
    routes = [(m.upper(), path) for path, ops in paths.items() for m in ops if m in ("post", "put", "delete")]
    assert len(routes) >= 7  # submit x2, cancel, retry, priority, replay, purge
    bodies = {"/api/jobs/add": {"payload": {"a": 1, "b": 1}}, "/api/jobs/boom": {"payload": {"reason": "x"}}}
    before = _snapshot(manager)
    anonymous, reader = api.client(), api.client(READER)
    for method, route in routes:
        job_id = dead_id if "dead-letters" in route else pending
        path = re.sub(r"\{job_id\}", job_id, route)
        body = bodies.get(route, {"priority": 9} if route.endswith("priority") else None)
        refused = anonymous.request(method, path, json=body)
        assert refused.status_code == 401, (method, path, refused.text)
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.headers["content-type"] == "application/problem+json"
        forbidden = reader.request(method, path, json=body)
        assert forbidden.status_code == 403, (method, path, forbidden.text)
        wrong = api.client("x" * 30).request(method, path, json=body)
        assert wrong.status_code == 401
    assert _snapshot(manager) == before  # nothing changed
    # The same routes work with the admin token (replay, for one).
    admin = api.client(ADMIN)
    assert admin.post(f"/api/dead-letters/{dead_id}/replay").json() == {"job_ids": [dead_id]}


@pytest.mark.security
def test_reading_routes_need_a_token_but_healthz_does_not(api: LiveServer) -> None:
    anonymous = api.client()
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    for path in ("/api/jobs", "/api/queues", "/api/stats", "/api/workers", "/api/dead-letters",
                 "/api/schedules", "/metrics", "/openapi.json"):
        assert anonymous.get(path).status_code == 401, path
        assert api.client(READER).get(path).status_code == 200, path
    assert anonymous.get("/").status_code == 200  # the dashboard's page: no data in it


def test_typed_submit_validates_with_the_payload_model(manager: JobQueueManager, api: LiveServer) -> None:
    admin = api.client(ADMIN)
    made = admin.post("/api/jobs/add", json={"payload": {"a": 2, "b": 3}, "priority": 8, "delay_s": 60})
    assert made.status_code == 201, made.text
    job = made.json()
    assert (job["job_type"], job["payload"]) == ("add", {"a": 2, "b": 3})
    assert (job["priority"], job["status"]) == (8, "PENDING")
    assert job["scheduled_at"] is not None
    assert manager.get_job(job["job_id"]).payload == {"a": 2, "b": 3}
    bad = admin.post("/api/jobs/add", json={"payload": {"a": "two", "b": 3}})
    assert bad.status_code == 422
    problem = bad.json()
    assert bad.headers["content-type"] == "application/problem+json"
    assert problem["status"] == 422
    assert problem["type"].startswith("urn:typedq:problem:")
    assert ["body", "payload", "a"] in [e["loc"] for e in problem["errors"]]
    assert admin.post("/api/jobs/add", json={"payload": {"a": 1, "b": 1}, "pickle": "x"}).status_code == 422
    # The payload model is the request schema in OpenAPI.
    schema = admin.get("/openapi.json").json()
    body = schema["paths"]["/api/jobs/add"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "Add" in str(schema["components"]["schemas"])
    assert body
    assert [t["name"] for t in admin.get("/api/job-types").json()] == ["add", "boom"]


def test_jobs_listing_pages_get_cancel_priority_retry(manager: JobQueueManager, api: LiveServer) -> None:
    admin = api.client(ADMIN)
    ids = [manager.enqueue(add, Add(a=i, b=0)).job_id for i in range(5)]
    first = admin.get("/api/jobs", params={"limit": 2}).json()
    assert [j["job_id"] for j in first["jobs"]] == ids[:2]
    second = admin.get("/api/jobs", params={"limit": 2, "after": first["next"]}).json()
    assert [j["job_id"] for j in second["jobs"]] == ids[2:4]
    last = admin.get("/api/jobs", params={"limit": 2, "after": second["next"]}).json()
    assert [j["job_id"] for j in last["jobs"]] == ids[4:]
    assert last["next"] is None
    assert admin.get("/api/jobs", params={"status": "COMPLETED"}).json()["jobs"] == []
    assert admin.get("/api/jobs", params={"job_type": "boom"}).json()["jobs"] == []
    assert admin.get(f"/api/jobs/{ids[0]}").json()["payload"] == {"a": 0, "b": 0}
    assert admin.put(f"/api/jobs/{ids[1]}/priority", json={"priority": 9}).json()["priority"] == 9
    assert admin.put(f"/api/jobs/{ids[1]}/priority", json={"priority": 99}).status_code == 422
    assert admin.post(f"/api/jobs/{ids[2]}/cancel").json()["cancelled"] is True
    assert manager.get_job(ids[2]).status.value == "CANCELLED"
    assert admin.post(f"/api/jobs/{ids[2]}/retry").json() == {"job_ids": [ids[2]]}
    conflict = admin.post(f"/api/jobs/{ids[3]}/retry")
    assert conflict.status_code == 409
    assert conflict.json()["field"] == "status"
    missing = admin.get("/api/jobs/nope")
    assert missing.status_code == 404
    assert missing.json()["job_id"] == "nope"
    assert admin.get("/api/jobs", params={"queue": "nope"}).status_code == 404
    assert admin.get("/api/jobs", params={"after": "nope"}).status_code == 404


def test_dead_letters_list_replay_purge_and_stats(
    manager: JobQueueManager, api: LiveServer, workers: Callable[[int], list[Worker]]
) -> None:
    admin = api.client(ADMIN)
    first = _dead_letter(manager, workers)
    second = manager.enqueue(boom, Boom(reason="again")).job_id
    workers(1)
    wait_until(lambda: manager.get_job(second).status.value == "DEAD", timeout=20)
    listed = admin.get("/api/dead-letters").json()
    assert {j["job_id"] for j in listed["jobs"]} == {first, second}
    stats = admin.get("/api/stats").json()
    assert stats["dead_letters"] == 2
    assert stats["queues"]["default"]["DEAD"] == 2
    queues = admin.get("/api/queues").json()
    assert queues[0]["name"] == "default"
    assert queues[0]["counts"]["DEAD"] == 2
    assert admin.get("/api/workers").json()[0]["alive"] is True
    assert admin.delete("/api/dead-letters", params={"older_than_s": 3600}).json() == {"deleted": []}
    purged = admin.delete("/api/dead-letters").json()["deleted"]
    assert set(purged) == {first, second}
    assert admin.get("/api/dead-letters").json()["jobs"] == []
    assert admin.post(f"/api/dead-letters/{first}/replay").status_code == 404
    manager.schedule(add, Add(a=1, b=1), cron="*/5 * * * *", tz="Europe/Berlin", name="tick")
    (entry,) = admin.get("/api/schedules").json()
    assert (entry["name"], entry["queue"], entry["cron"], entry["tz"]) == ("tick", "default", "*/5 * * * *",
                                                                         "Europe/Berlin")
    assert entry["next_run_at"] > 0
    text = admin.get("/metrics").text
    assert {f.name for f in text_string_to_metric_families(text)} >= {"typedq_queue_jobs", "typedq_jobs_dead"}


@pytest.mark.security
def test_bodies_are_bounded(manager: JobQueueManager, serve: Callable[[Any], LiveServer]) -> None:
    server = serve(create_app(manager, tokens=Tokens.of([ADMIN]), max_body_bytes=200))
    admin = server.client(ADMIN)
    big = admin.post("/api/jobs/boom", json={"payload": {"reason": "x" * 500}})
    assert big.status_code == 413
    assert big.json()["status"] == 413

    def chunks() -> Any:  # no Content-Length: counted as it arrives
        yield b'{"payload": {"reason": "'
        for _ in range(10):
            yield b"y" * 50
        yield b'"}}'

    streamed = httpx.post(f"{server.url}/api/jobs/boom", content=chunks(),
                          headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert manager.get_queue("default").size == 0


@pytest.mark.security
def test_refuses_to_start_without_a_token(manager: JobQueueManager, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TYPEDQ_API_TOKEN", raising=False)
    monkeypatch.delenv("TYPEDQ_API_READ_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="tokens"):
        create_app(manager)
    with pytest.raises(ConfigError, match="16 characters"):
        Tokens.of(["short"])
    monkeypatch.setenv("TYPEDQ_API_TOKEN", "t" * 20)
    assert create_app(manager).title == "typedq"


@pytest.mark.security
def test_api_command_refuses_without_token_or_off_loopback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from click.testing import CliRunner

    from typedq.cli import cli

    monkeypatch.delenv("TYPEDQ_API_TOKEN", raising=False)
    monkeypatch.delenv("TYPEDQ_API_READ_TOKEN", raising=False)
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = CliRunner().invoke(cli, ["api", "--backend", url])
    assert result.exit_code == 2
    assert "TYPEDQ_API_TOKEN" in result.output
    result = CliRunner().invoke(cli, ["api", "--backend", url, "--insecure-no-auth", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "loopback" in result.output


def test_insecure_no_auth_serves_without_token(
    manager: JobQueueManager, serve: Callable[[Any], LiveServer]
) -> None:
    server = serve(create_app(manager, tokens=Tokens(), insecure_no_auth=True))
    assert server.client().post("/api/jobs/add", json={"payload": {"a": 1, "b": 1}}).status_code == 201


@pytest.mark.timeout(60)
def test_typedq_api_command_serves_with_a_token(tmp_path: Any) -> None:
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TYPEDQ_API_TOKEN": ADMIN, "TYPEDQ_API_READ_TOKEN": READER,
           "TYPEDQ_CONFIG": str(tmp_path / "typedq.json")}
    url = f"sqlite:///{tmp_path / 'api.db'}"
    with subprocess.Popen(
        [sys.executable, "-m", "typedq", "api", "--backend", url, "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    ) as proc:
        try:
            base = f"http://127.0.0.1:{port}"

            def up() -> bool:
                try:
                    return httpx.get(f"{base}/healthz").status_code == 200
                except httpx.TransportError:
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                    return False

            wait_until(up, timeout=30, interval=0.05, message="typedq api answering")
            assert httpx.get(f"{base}/api/stats").status_code == 401
            stats = httpx.get(f"{base}/api/stats", headers={"Authorization": f"Bearer {READER}"})
            assert stats.json()["queues"]["default"]["PENDING"] == 0
        finally:
            proc.terminate()
            proc.communicate(timeout=10)
