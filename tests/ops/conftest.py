"""Fixtures of the operations tests: managers on a shared store with typed job types, a
real HTTP server (uvicorn in a thread) for the API, and tokens."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import BaseModel, Field
from tests.conformance.conftest import shared_store_url  # the fixture, re-exported
from tests.helpers import stop_and_join

from typedq import JobQueueManager
from typedq.api import Tokens, create_app
from typedq.typed import JobType
from typedq.worker import Worker

__all__ = ["shared_store_url"]

ADMIN = "admin-token-0123456789abcdef"
READER = "read-token-0123456789abcdef"


class Add(BaseModel):
    """The payload of the ``add`` job type."""

    a: int = Field(ge=-1000, le=1000)
    b: int = Field(ge=-1000, le=1000)


class Boom(BaseModel):
    """The payload of the ``boom`` job type, which always fails."""

    reason: str = Field(max_length=100)


add = JobType("add", Add, result=int, max_retries=0)
boom = JobType("boom", Boom, result=int, max_retries=1)


def make_manager(url: str) -> JobQueueManager:
    """A manager on ``url`` with the ``add`` and ``boom`` job types registered; short
    leases, heartbeats and retry delays so registry entries refresh quickly."""
    manager = JobQueueManager({
        "backend": url, "lease_s": 2.0, "heartbeat_s": 0.1, "reaper_s": 0.2,
        "base_delay": 0.01, "jitter": 0.0, "poll_interval": 0.05,
    })

    @manager.handler(add)
    def _add(p: Add) -> int:
        return p.a + p.b

    @manager.handler(boom)
    def _boom(p: Boom) -> int:
        raise RuntimeError(p.reason)

    return manager


@pytest.fixture
def manager(shared_store_url: str) -> Iterator[JobQueueManager]:
    """A manager (see :func:`make_manager`) on an empty shared store, closed after."""
    made = make_manager(shared_store_url)
    yield made
    made.close(graceful=False)


class LiveServer:
    """An ASGI app served by uvicorn on 127.0.0.1 (a free port) in a thread."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="test-uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._clients: list[httpx.Client] = []

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client of this server, sending ``token`` as the bearer token (closed
        when the server stops)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._clients.append(httpx.Client(base_url=self.url, headers=headers, timeout=10))
        return self._clients[-1]

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def serve() -> Iterator[Callable[[Any], LiveServer]]:
    """Serve an ASGI app over real HTTP; every server is stopped at teardown."""
    servers: list[LiveServer] = []

    def _serve(app: Any) -> LiveServer:
        servers.append(LiveServer(app))
        return servers[-1]

    yield _serve
    for server in servers:
        server.stop()


@pytest.fixture
def api(manager: JobQueueManager, serve: Callable[[Any], LiveServer]) -> LiveServer:
    """The API of ``manager`` with one admin and one read-only token, over HTTP."""
    return serve(create_app(manager, tokens=Tokens.of([ADMIN], [READER])))


@pytest.fixture
def workers(manager: JobQueueManager) -> Iterator[Callable[[int], list[Worker]]]:
    """Start ``n`` workers of the manager's default queue; stopped at teardown."""
    started: list[Worker] = []

    def _start(n: int = 1) -> list[Worker]:
        started.extend(manager.start_workers("default", n))
        return started

    yield _start
    stop_and_join(started)
