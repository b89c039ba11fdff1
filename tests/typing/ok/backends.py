"""Every built-in backend satisfies the Queue protocol (mypy refuses one missing a method)."""

from __future__ import annotations

from typedq.backends import JobQueue, Queue, SQLiteQueue
from typedq.backends.redis import RedisQueue

_memory: type[Queue] = JobQueue
_sqlite: type[Queue] = SQLiteQueue
_redis: type[Queue] = RedisQueue
