"""The REST API's routes: jobs, typed submission, dead letters, queues, workers, schedules.

Every answer is JSON (``Job.to_dict()`` data for jobs); nothing is ever pickled. Errors are
problem details (``_problems``). Authentication is ``_auth``'s: the reading routes need
a read-only or admin token, the mutating ones an admin token.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Final

from fastapi import APIRouter, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from typedq._typed_api import TypedHandler
from typedq.api._auth import Access, Tokens
from typedq.api._problems import problem, problem_of_error
from typedq.errors import ConfigError, JobNotFoundError, TypedqError
from typedq.job import MAX_PRIORITY, MIN_PRIORITY, Job, JobStatus
from typedq.manager import JobQueueManager
from typedq.metrics import CONTENT_TYPE, registry_for, render

__all__ = ["DEFAULT_MAX_BODY", "create_app"]

#: The largest request body accepted by default (bytes); larger ones get 413.
DEFAULT_MAX_BODY: Final = 1 << 20
#: The most jobs one listing returns.
MAX_PAGE: Final = 500

_PROBLEM: Final[dict[int | str, dict[str, Any]]] = {
    code: {"description": text, "content": {"application/problem+json": {}}}
    for code, text in (
        (401, "No or unknown bearer token"),
        (403, "A read-only token on a mutating route"),
        (404, "No such job, queue or schedule"),
        (409, "The job is not in a state that allows this"),
        (413, "Request body too large"),
        (422, "Invalid request or job fields"),
        (503, "The store cannot be reached"),
    )
}


class _BodyLimit:
    """ASGI middleware refusing request bodies over ``limit`` bytes with 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await self._refuse(scope, receive, send)
                return
        # Read the whole body first (at most ``limit`` bytes are held), then hand it on:
        # a body without Content-Length is refused as soon as it grows past the limit.
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > self.limit:
                await self._refuse(scope, receive, send)
                return
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive),
                       send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await problem(413, f"request bodies are limited to {self.limit} bytes")(scope, receive, send)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    """A ``receive`` giving ``messages`` first, then waiting on ``then`` (a disconnect)."""
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        if then is None:
            return {"type": "http.disconnect"}
        return await then()

    return receive


#: Paths served without a token: the health check and the dashboard's page (no data).
PUBLIC_PATHS: Final = frozenset({"/healthz", "/"})
_READING: Final = frozenset({"GET", "HEAD"})


class _Auth:
    """ASGI middleware: a read-only or admin bearer token for reading routes, an admin
    token for any other method; checked before the request is read any further."""

    def __init__(self, app: ASGIApp, tokens: Tokens, open_access: bool) -> None:
        self.app = app
        self.tokens = tokens
        self.open_access = open_access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.open_access or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        presented = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    presented = token.strip()
        access = self.tokens.check(presented)
        if access is Access.NONE:
            response = problem(
                401, "a valid bearer token is required (Authorization: Bearer TOKEN)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        elif access is Access.READ and scope["method"] not in _READING:
            response = problem(403, "this route changes the store: it needs an admin token")
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


class Priority(BaseModel):
    """A new priority for a job."""

    model_config = ConfigDict(extra="forbid")
    priority: int = Field(ge=MIN_PRIORITY, le=MAX_PRIORITY)


def _job(job: Job) -> dict[str, Any]:
    return job.to_dict()


def _typed_types(manager: JobQueueManager) -> dict[str, TypedHandler[Any, Any]]:
    return {name: h for name, h in sorted(manager.handlers.items()) if isinstance(h, TypedHandler)}


def create_app(
    manager: JobQueueManager,
    *,
    tokens: Tokens | None = None,
    insecure_no_auth: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    cors_origins: tuple[str, ...] = (),
) -> FastAPI:
    """The REST API and dashboard of ``manager`` as an ASGI app (mount it, or run it
    with ``typedq api``).

    A typed job type registered on ``manager`` (``manager.register`` /
    ``@manager.handler``) before this call gets ``POST /api/jobs/{name}`` taking its
    payload model.

    Args:
        manager: the manager whose queues the API serves.
        tokens: accepted tokens (default: from ``TYPEDQ_API_TOKEN`` and
            ``TYPEDQ_API_READ_TOKEN``).
        insecure_no_auth: serve without tokens, every request an admin (only for a
            server bound to a loopback address; ``typedq api`` checks).
        max_body_bytes: the largest request body accepted.
        cors_origins: origins allowed cross-origin (none by default: CORS off).

    Raises:
        ConfigError: no token is configured and ``insecure_no_auth`` is not set.
    """
    tokens = Tokens.from_env() if tokens is None else tokens
    if tokens.empty and not insecure_no_auth:
        raise ConfigError(
            "tokens", None,
            "an admin token (TYPEDQ_API_TOKEN) or insecure_no_auth=True on a loopback address",
        )
    app = FastAPI(
        title="typedq", version="1", description="Jobs, dead letters, queues and workers of a typedq store.",
        # No Swagger UI: its page loads scripts from a CDN and could not send the token.
        docs_url=None, redoc_url=None,
    )
    app.add_middleware(_Auth, tokens=tokens, open_access=insecure_no_auth and tokens.empty)
    app.add_middleware(_BodyLimit, limit=max_body_bytes)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware  # noqa: PLC0415  (only when asked for)

        app.add_middleware(
            CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"],
        )

    _install_errors(app)
    # The _Auth middleware checks tokens; the security scheme documents it in OpenAPI.
    bearer = Security(HTTPBearer(auto_error=False))
    read = APIRouter(dependencies=[bearer], responses=_PROBLEM)
    write = APIRouter(dependencies=[bearer], responses=_PROBLEM)
    _reading_routes(read, manager)
    _writing_routes(write, manager)
    app.include_router(read)
    app.include_router(write)

    @app.get("/healthz", tags=["health"], responses={503: _PROBLEM[503]})
    def healthz() -> Response:
        """Whether the store answers (no token needed)."""
        try:
            manager.get_queue("default").size  # noqa: B018 - a read of the store
        except Exception as exc:
            return problem(503, f"the store cannot be read: {type(exc).__name__}: {exc}")
        return JSONResponse({"status": "ok"})

    page = resources.files("typedq.api").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    def dashboard() -> HTMLResponse:
        return HTMLResponse(page, headers={
            "Content-Security-Policy": "default-src 'self' 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff",
        })

    return app


def _install_errors(app: FastAPI) -> None:
    async def typed(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TypedqError)
        return problem_of_error(exc)

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        where = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors)
        return problem(422, f"invalid request: {where}", kind="request-validation", errors=errors)

    async def http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return problem(exc.status_code, str(exc.detail))

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        TypedqError: typed, RequestValidationError: invalid, StarletteHTTPException: http,
    }
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)


def _reading_routes(router: APIRouter, manager: JobQueueManager) -> None:
    @router.get("/api/queues", tags=["queues"])
    def queues() -> list[dict[str, Any]]:
        """Every queue: jobs per state (and PENDING per priority level, where kept)."""
        out = []
        for name, queue in sorted(manager.queues.items()):
            counts = {s.value: n for s, n in queue.count_by_status().items()}
            entry: dict[str, Any] = {"name": name, "counts": counts}
            by_priority = getattr(queue, "count_by_priority", None)
            if callable(by_priority):
                entry["by_priority"] = {str(int(k)): v for k, v in sorted(by_priority().items())}
            out.append(entry)
        return out

    @router.get("/api/stats", tags=["queues"])
    def stats() -> dict[str, Any]:
        """Jobs per queue and state, dead letters, and live / busy workers."""
        now = time.time()
        infos = manager.registered_workers()
        live = [w for w in infos if w.alive(now)]
        dead_letter = manager.get_dead_letter_queue()
        return {
            "queues": {
                name: {s.value: n for s, n in q.count_by_status().items()}
                for name, q in sorted(manager.queues.items())
            },
            "dead_letters": dead_letter.size,
            "dead_letters_dropped": dead_letter.count_dropped(),
            "workers": {
                "live": len(live), "busy": sum(1 for w in live if w.current), "dead": len(infos) - len(live)
            },
        }

    @router.get("/api/workers", tags=["workers"])
    def workers() -> list[dict[str, Any]]:
        """The registered workers of every queue, live and recently dead."""
        now = time.time()
        out = []
        for info in manager.registered_workers():
            data = info.to_dict()
            data.pop("metrics", None)
            data["alive"] = info.alive(now)
            out.append(data)
        return out

    @router.get("/api/jobs", tags=["jobs"])
    def list_jobs(  # noqa: PLR0917  (query parameters)
        queue: str = "default",
        status: JobStatus | None = None,
        job_type: str | None = Query(default=None, max_length=200),
        limit: int = Query(default=50, ge=1, le=MAX_PAGE),
        after: str | None = Query(
            default=None, max_length=200, description="cursor: `next` of the page before"
        ),
        newest: bool = False,
    ) -> dict[str, Any]:
        """Jobs of a queue, filtered, in pages (keyset cursor)."""
        found = manager.get_queue(queue).list_jobs(
            status=status, job_type=job_type, limit=limit + 1, after=after, newest=newest
        )
        page = found[:limit]
        return {"jobs": [_job(j) for j in page], "next": page[-1].job_id if len(found) > limit else None}

    @router.get("/api/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: str) -> dict[str, Any]:
        """One job: payload, result, error, traceback, times, and its state."""
        return _job(manager.get_job(job_id))

    @router.get("/api/job-types", tags=["jobs"])
    def job_types() -> list[dict[str, Any]]:
        """The typed job types that can be submitted, with their payload's JSON schema."""
        return [
            {"name": name, "queue": h.job_type.queue, "version": h.job_type.version,
             "schema": h.job_type.payload_model.model_json_schema()}
            for name, h in _typed_types(manager).items()
        ]

    @router.get("/api/dead-letters", tags=["dead letters"])
    def dead_letters(
        limit: int = Query(default=50, ge=1, le=MAX_PAGE),
        after: str | None = Query(default=None, max_length=200),
    ) -> dict[str, Any]:
        """The dead letters, oldest first, in pages."""
        found = manager.get_dead_letter_queue().list_jobs(status=JobStatus.DEAD, limit=limit + 1, after=after)
        page = found[:limit]
        return {"jobs": [_job(j) for j in page], "next": page[-1].job_id if len(found) > limit else None}

    @router.get("/api/schedules", tags=["schedules"])
    def schedules() -> list[dict[str, Any]]:
        """Every periodic job: its rule and its next and last run."""
        return [{"queue": queue, **entry.to_dict()} for queue, entry in manager.schedules()]

    registry = registry_for(manager)

    @router.get("/metrics", tags=["metrics"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics (see ``typedq.metrics``)."""
        return Response(render(registry), media_type=CONTENT_TYPE)


def _writing_routes(router: APIRouter, manager: JobQueueManager) -> None:
    for name, handler in _typed_types(manager).items():
        _submit_route(router, manager, name, handler)

    @router.post("/api/jobs/{job_id}/cancel", tags=["jobs"])
    def cancel(job_id: str) -> dict[str, Any]:
        """Cancel a job (PENDING/SCHEDULED at once; RUNNING when its handler checks)."""
        return {"cancelled": manager.cancel(job_id), "job": _job(manager.get_job(job_id))}

    @router.post("/api/jobs/{job_id}/retry", tags=["jobs"])
    def retry(job_id: str, with_dependents: bool = False) -> dict[str, Any]:
        """Run a FAILED, DEAD or CANCELLED job again; returns the ids run again."""
        return {"job_ids": manager.retry(job_id, with_dependents=with_dependents)}

    @router.put("/api/jobs/{job_id}/priority", tags=["jobs"])
    def set_priority(job_id: str, body: Priority) -> dict[str, Any]:
        """Change a waiting job's priority."""
        job = manager.get_job(job_id)
        manager.get_queue(job.queue).set_priority(job_id, body.priority)
        return _job(manager.get_job(job_id))

    @router.post("/api/dead-letters/{job_id}/replay", tags=["dead letters"])
    def replay(job_id: str, with_dependents: bool = False) -> dict[str, Any]:
        """Run a dead job again on its queue (it leaves the dead-letter queue)."""
        return {"job_ids": manager.retry(job_id, with_dependents=with_dependents)
                if with_dependents else [manager.replay_dead_letter(job_id)]}

    @router.delete("/api/dead-letters", tags=["dead letters"])
    def purge(older_than_s: float = Query(default=0.0, ge=0.0, le=1e9)) -> dict[str, Any]:
        """Delete the dead letters that died more than ``older_than_s`` seconds ago
        (with their DEAD rows)."""
        dead_letter = manager.get_dead_letter_queue()
        cutoff = manager.clock.now() - older_than_s
        deleted: list[str] = []
        after: str | None = None
        while True:
            page = dead_letter.list_jobs(status=JobStatus.DEAD, limit=1000, after=after)
            for job in page:
                if job.finished_at is None or job.finished_at <= cutoff:
                    _delete_dead(manager, job)
                    deleted.append(job.job_id)
            if len(page) < 1000:
                break
            after = page[-1].job_id
        return {"deleted": deleted}


def _delete_dead(manager: JobQueueManager, job: Job) -> None:
    with contextlib.suppress(JobNotFoundError):
        manager.get_dead_letter_queue().delete(job.job_id)
    origin = manager.queues.get(job.queue)
    if origin is not None:
        try:
            if origin.get_job(job.job_id).status is JobStatus.DEAD:
                origin.delete(job.job_id)
        except (KeyError, TypedqError):
            pass


def _submit_route(
    router: APIRouter, manager: JobQueueManager, name: str, handler: TypedHandler[Any, Any]
) -> None:
    job_type = handler.job_type
    model = job_type.payload_model
    body_model: type[BaseModel] = create_model(
        f"Submit_{''.join(c if c.isalnum() else '_' for c in name)}",
        __config__=ConfigDict(extra="forbid"),
        payload=(model, ...),
        priority=(int | None, Field(default=None, ge=MIN_PRIORITY, le=MAX_PRIORITY)),
        delay_s=(float | None, Field(default=None, ge=0, le=10 * 365 * 86400)),
        max_retries=(int | None, Field(default=None, ge=0, le=1000)),
        timeout_seconds=(float | None, Field(default=None, gt=0, le=10 * 365 * 86400)),
        job_id=(str | None, Field(default=None, min_length=1, max_length=200)),
        depends_on=(list[str] | None, Field(default=None, max_length=1000)),
    )

    def submit(body: Any) -> JSONResponse:
        options = {k: v for k, v in body.model_dump(exclude={"payload"}).items() if v is not None}
        ref = manager.enqueue(job_type, body.payload, **options)
        return JSONResponse(_job(manager.get_job(ref.job_id)), status_code=201)

    submit.__annotations__ = {"body": body_model, "return": JSONResponse}
    router.add_api_route(
        f"/api/jobs/{name}", submit, methods=["POST"], tags=["submit"], status_code=201,
        summary=f"Submit a {name} job",
        description=f"The payload is a {model.__name__} (version {job_type.version}).",
        response_class=JSONResponse,
    )
