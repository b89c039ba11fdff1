"""The application the SQLite benchmark's worker processes import (``_bench_app:make_manager``).

The backend URL comes from ``TYPEDQ_BENCH_BACKEND``; the one job type, ``bench``, is a
no-op that returns None, like Huey's task in the same benchmark.
"""

from __future__ import annotations

import os
from typing import Any

from typedq import JobQueueManager


def noop(payload: dict[str, Any]) -> None:
    return None


def make_manager() -> JobQueueManager:
    manager = JobQueueManager({"backend": os.environ["TYPEDQ_BENCH_BACKEND"], "lease_s": 30.0})
    manager.create_queue("bench")
    manager.register_handler("bench", noop, queue="bench")
    return manager
