"""RFC 9457 problem details for every error the REST API answers with.

A body is ``application/problem+json``: ``type`` (a URN naming the error class, e.g.
``urn:typedq:problem:job-not-found``), ``title``, ``status``, ``detail`` (the error's
message), plus the typed error's own fields where it has them (``field``, ``value``,
``allowed``, ``job_id``, ``queue``, ``name``) and ``errors`` for a request that failed
validation.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from starlette.responses import Response

from typedq.errors import (
    BackendError,
    BackendUnavailableError,
    InvalidTransitionError,
    JobNotFoundError,
    QueueNotFoundError,
    ScheduleNotFoundError,
    SerializationError,
    TypedqError,
)

__all__ = ["PROBLEM_JSON", "ProblemResponse", "problem", "problem_of_error"]

PROBLEM_JSON: Final = "application/problem+json"

_TITLES: Final = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
    415: "Unsupported Media Type", 422: "Unprocessable Content", 500: "Internal Server Error",
    503: "Service Unavailable",
}
_FIELDS: Final = ("field", "allowed", "job_id", "queue", "name", "known")


class ProblemResponse(Response):
    """A JSON response of media type ``application/problem+json``."""

    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=str, ensure_ascii=False).encode()


def _slug(name: str) -> str:
    name = name.removesuffix("Error") or name
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def problem(
    status: int, detail: str, *, kind: str | None = None, headers: dict[str, str] | None = None,
    **extra: Any,
) -> ProblemResponse:
    """A problem response of ``status`` (``kind`` names the ``type``; default the title)."""
    title = _TITLES.get(status, "Error")
    body = {
        "type": f"urn:typedq:problem:{kind or _slug(title.replace(' ', ''))}",
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return ProblemResponse(body, status_code=status, headers=headers)


def status_of(exc: TypedqError) -> int:
    """The HTTP status of a typed error."""
    if isinstance(exc, JobNotFoundError | QueueNotFoundError | ScheduleNotFoundError):
        return 404
    if isinstance(exc, InvalidTransitionError):
        return 409
    if isinstance(exc, BackendUnavailableError | BackendError):
        return 503
    if isinstance(exc, ValueError | SerializationError):
        return 422
    return 500


def problem_of_error(exc: TypedqError) -> ProblemResponse:
    """The problem response of a typed error, with its fields."""
    extra: dict[str, Any] = {}
    for name in _FIELDS:
        if hasattr(exc, name):
            extra[name] = getattr(exc, name)
    if hasattr(exc, "value"):
        extra["value"] = repr(exc.value) if not isinstance(exc.value, str | int | float | bool) else exc.value
    return problem(status_of(exc), str(exc), kind=_slug(type(exc).__name__), **extra)
