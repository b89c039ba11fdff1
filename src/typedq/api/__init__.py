"""The REST API and web dashboard of a typedq store (the ``typedq[api]`` extra).

``create_app(manager)`` builds a FastAPI app; ``typedq api --backend URL`` serves it with
uvicorn. Routes (OpenAPI at ``/openapi.json``, with a token like the rest):

* ``GET /healthz``: whether the store answers (no token needed).
* ``GET /api/jobs`` (``queue``, ``status``, ``job_type``, ``limit``, ``after``,
  ``newest``; the answer's ``next`` is the cursor of the next page),
  ``GET /api/jobs/{id}``, ``POST /api/jobs/{job_type}`` (one route per typed job type,
  its payload model as the request schema), ``POST /api/jobs/{id}/cancel``,
  ``POST /api/jobs/{id}/retry``, ``PUT /api/jobs/{id}/priority``, ``GET /api/job-types``.
* ``GET /api/dead-letters``, ``POST /api/dead-letters/{id}/replay``,
  ``DELETE /api/dead-letters?older_than_s=``.
* ``GET /api/queues``, ``GET /api/stats``, ``GET /api/workers``, ``GET /api/schedules``,
  ``GET /metrics`` (Prometheus, ``typedq.metrics``).
* ``GET /``: the dashboard, a static page calling the routes above.

Security: bearer tokens (``_auth``), request bodies bounded (413 above
``max_body_bytes``), CORS off unless origins are given, JSON only (no pickle). Errors are
RFC 9457 problem details (``_problems``).
"""

from __future__ import annotations

from typedq.api._app import DEFAULT_MAX_BODY, create_app
from typedq.api._auth import ADMIN_ENV, READ_ENV, Tokens

__all__ = ["ADMIN_ENV", "DEFAULT_MAX_BODY", "READ_ENV", "Tokens", "create_app"]
