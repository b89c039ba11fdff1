"""The app ``bench_metrics.py`` serves with ``typedq api --app _bench_api_app:manager``:
one typed job type, ``add``, on the SQLite file named by ``BENCH_BACKEND``."""

from __future__ import annotations

import os

from pydantic import BaseModel

from typedq import JobQueueManager
from typedq.typed import JobType


class Add(BaseModel):
    a: int
    b: int


add = JobType("add", Add, result=int)
manager = JobQueueManager({"backend": os.environ["BENCH_BACKEND"]})


@manager.handler(add)
def _add(p: Add) -> int:
    return p.a + p.b
