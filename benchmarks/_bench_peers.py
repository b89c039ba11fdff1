"""The peers of ``bench_redis.py``: Huey's ``RedisHuey``, RQ, Dramatiq (Redis broker), arq
and SAQ, each enqueueing and draining the same jobs on the same server.

Each peer runs in processes of its own, started by ``bench_redis.py`` as
``python -c 'import _bench_peers; _bench_peers.main()' ACTION PEER URL PREFIX N [OUT]``:

* ``enqueue``: enqueue N jobs one at a time with the peer's own call and print the
  seconds it took, as JSON (the jobs' arguments are built before the clock starts);
* ``work``: run one worker process of the peer, its usual way, until its no-op task has
  run N times; the task notes the wall clock of its first and of its N-th run and writes
  them to OUT, the drain's span (as typedq's is its first job's ``started_at`` to its
  last job's ``finished_at``). The caller then kills the process.

Every job's one argument is the payload of ``bench_redis.payload(i)``. The keys of a run
carry ``PREFIX`` (the peer's queue name, namespace or job ids), so :func:`key_patterns`
finds them for deletion; nothing else on the server is touched.

How each peer's worker runs (its defaults but the logging, which is raised to WARNING
for every contender so that a drain measures the queue, not a log handler):

* Huey: ``RedisHuey(name=PREFIX)`` (blocking pops), a consumer with 1 worker thread;
* RQ: a ``SimpleWorker`` (runs each job in its own process, without RQ's default fork
  per job, its fastest way), results kept as by default;
* Dramatiq: ``RedisBroker(namespace=...)``, a ``Worker`` with its default 8 threads (with 1
  thread, its prefetch of 2 messages holds it at a few hundred jobs a second);
* arq: a ``Worker`` (asyncio, ``max_jobs`` 10, results kept 1 h as by default);
* SAQ: a ``Worker`` (asyncio, ``concurrency`` 10).

arq 0.28 requires redis-py < 6, which typedq's ``redis`` extra does not allow alongside
it: ``bench_redis.py --arq-python`` names the interpreter of a virtualenv that has arq.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PEERS = ("huey", "rq", "dramatiq", "arq", "saq")
#: The package each peer needs (the import that tells whether it is installed).
MODULES = {"huey": "huey", "rq": "rq", "dramatiq": "dramatiq", "arq": "arq", "saq": "saq"}


def payload(i: int) -> dict[str, Any]:
    return {"n": i, "name": f"job-{i}", "tags": ["a", "b"]}


def key_patterns(peer: str, prefix: str) -> list[str]:
    """The ``SCAN MATCH`` patterns of every key a peer's run under ``prefix`` writes."""
    return {
        "huey": [f"huey.*{prefix}*"],
        "rq": [f"rq:*{prefix}*"],
        "dramatiq": [f"dramatiq-{prefix}*"],
        "arq": [f"arq:*{prefix}*"],
        "saq": [f"saq:*{prefix}*"],
    }[peer]


class _Recorder:
    """Counts the task's runs; at the N-th writes the first and last wall-clock times."""

    def __init__(self) -> None:
        self.count = 0
        self.first = 0.0
        self.target = int(os.environ.get("BENCH_PEER_N", "0"))
        self.out = os.environ.get("BENCH_PEER_OUT", "")

    def hit(self) -> None:
        now = time.time()
        if self.count == 0:
            self.first = now
        self.count += 1
        if self.count == self.target:
            tmp = self.out + ".tmp"
            Path(tmp).write_text(json.dumps({"first": self.first, "last": now, "count": self.count}))
            os.replace(tmp, self.out)


RECORDER = _Recorder()


# -- Huey ------------------------------------------------------------------------------


def _huey(url: str, prefix: str) -> tuple[Any, Any]:
    from huey import RedisHuey

    huey = RedisHuey(name=prefix, url=url)

    @huey.task(name="bench")
    def bench(p: dict[str, Any]) -> None:
        RECORDER.hit()

    return huey, bench


def huey_enqueue(url: str, prefix: str, n: int) -> float:
    _, bench = _huey(url, prefix)
    args = [payload(i) for i in range(n)]
    start = time.perf_counter()
    for p in args:
        bench(p)
    return time.perf_counter() - start


def huey_work(url: str, prefix: str) -> None:
    huey, _ = _huey(url, prefix)
    consumer = huey.create_consumer(workers=1, periodic=False, check_worker_health=False)
    consumer.run()


# -- RQ ------------------------------------------------------------------------------


def rq_task(p: dict[str, Any]) -> None:
    RECORDER.hit()


def rq_enqueue(url: str, prefix: str, n: int) -> float:
    import redis
    from rq import Queue

    queue = Queue(prefix, connection=redis.Redis.from_url(url))
    args = [payload(i) for i in range(n)]
    enqueue = queue.enqueue_call
    start = time.perf_counter()
    for i, p in enumerate(args):
        enqueue(rq_task, args=(p,), job_id=f"{prefix}-{i}")
    return time.perf_counter() - start


def rq_work(url: str, prefix: str) -> None:
    import redis
    from rq import Queue, SimpleWorker

    conn = redis.Redis.from_url(url)
    worker = SimpleWorker([Queue(prefix, connection=conn)], connection=conn, name=f"w-{prefix}")
    worker.work(logging_level="WARNING")


# -- Dramatiq ------------------------------------------------------------------------------


def _dramatiq(url: str, prefix: str) -> tuple[Any, Any]:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=url, namespace=f"dramatiq-{prefix}")
    dramatiq.set_broker(broker)

    @dramatiq.actor(actor_name="bench", queue_name="bench", max_retries=0)
    def bench(p: dict[str, Any]) -> None:
        RECORDER.hit()

    return broker, bench


def dramatiq_enqueue(url: str, prefix: str, n: int) -> float:
    _, bench = _dramatiq(url, prefix)
    args = [payload(i) for i in range(n)]
    send = bench.send
    start = time.perf_counter()
    for p in args:
        send(p)
    return time.perf_counter() - start


def dramatiq_work(url: str, prefix: str) -> None:
    import dramatiq

    broker, _ = _dramatiq(url, prefix)
    worker = dramatiq.Worker(broker)  # its default: 8 threads
    worker.start()
    while True:
        time.sleep(1)


# -- arq ------------------------------------------------------------------------------


async def arq_task(ctx: dict[str, Any], p: dict[str, Any]) -> None:
    RECORDER.hit()


def _arq_settings(url: str) -> Any:
    from arq.connections import RedisSettings

    return RedisSettings.from_dsn(url)


def arq_enqueue(url: str, prefix: str, n: int) -> float:
    from arq import create_pool

    async def run() -> float:
        pool = await create_pool(_arq_settings(url), default_queue_name=f"arq:queue:{prefix}")
        args = [payload(i) for i in range(n)]
        start = time.perf_counter()
        for i, p in enumerate(args):
            await pool.enqueue_job("arq_task", p, _job_id=f"{prefix}-{i}")
        elapsed = time.perf_counter() - start
        await pool.aclose()
        return elapsed

    return asyncio.run(run())


def arq_work(url: str, prefix: str) -> None:
    from arq import Worker

    worker = Worker(
        functions=[arq_task], redis_settings=_arq_settings(url), queue_name=f"arq:queue:{prefix}",
        health_check_key=f"arq:health-check:{prefix}",
    )
    worker.run()


# -- SAQ ------------------------------------------------------------------------------


async def saq_task(ctx: dict[str, Any], *, p: dict[str, Any]) -> None:
    RECORDER.hit()


def saq_enqueue(url: str, prefix: str, n: int) -> float:
    from saq import Queue

    async def run() -> float:
        queue = Queue.from_url(url, name=prefix)
        args = [payload(i) for i in range(n)]
        start = time.perf_counter()
        for p in args:
            await queue.enqueue("saq_task", p=p)
        elapsed = time.perf_counter() - start
        await queue.disconnect()
        return elapsed

    return asyncio.run(run())


def saq_work(url: str, prefix: str) -> None:
    from saq import Queue, Worker

    async def run() -> None:
        worker = Worker(Queue.from_url(url, name=prefix), functions=[saq_task])
        await worker.start()

    asyncio.run(run())


ENQUEUE: dict[str, Callable[[str, str, int], float]] = {
    "huey": huey_enqueue, "rq": rq_enqueue, "dramatiq": dramatiq_enqueue,
    "arq": arq_enqueue, "saq": saq_enqueue,
}
WORK: dict[str, Callable[[str, str], None]] = {
    "huey": huey_work, "rq": rq_work, "dramatiq": dramatiq_work, "arq": arq_work, "saq": saq_work,
}


def main() -> None:
    action, peer, url, prefix, n = sys.argv[1:6]
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("huey", "rq", "rq.worker", "dramatiq", "arq", "arq.worker", "saq"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if action == "enqueue":
        print(json.dumps({"seconds": ENQUEUE[peer](url, prefix, int(n))}))
    else:
        os.environ["BENCH_PEER_N"] = n
        os.environ["BENCH_PEER_OUT"] = sys.argv[6]
        RECORDER.target, RECORDER.out = int(n), sys.argv[6]
        WORK[peer](url, prefix)
