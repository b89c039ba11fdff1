"""Throughput of the Redis backend against raw redis-py loops and five peers, on one server.

Run: ``.venv/bin/python benchmarks/bench_redis.py [--runs 5] [--jobs 20000] [--url URL]
[--arq-python PATH] [--peers huey,rq,dramatiq,arq,saq]`` (the peers come with
``pip install -e '.[bench]'``; arq pins redis-py < 6, so it lives in a virtualenv of its
own named by ``--arq-python``). Without ``--url`` the benchmark starts a private
``redis-server`` (no persistence) on a free port and stops it at the end; with ``--url``
it works on that server, touching only keys it wrote (never ``FLUSHDB``). Each of
``--runs`` rounds runs every scenario once, in turn, each under a fresh key prefix
(deleted afterwards, and only it). A rate is the median over the rounds (min..max beside
it); a ratio is the median of the ratios within each round, so a slow spell of a shared
machine hits a figure and its yardstick alike.

Every contender stores the same JSON payload, ``{"n": i, "name": "job-i", "tags":
["a", "b"]}``, and talks to the server through redis-py with hiredis.

*Raw* loops, the floor of any queue on this server and client:

1. ``LPUSH`` of one JSON payload per round trip, jobs/s;
2. pipelined ``LPUSH`` of 1,000 payloads per round trip, jobs/s;
3. a minimal ``EVALSHA`` claim (``RPOP`` + ``HSET`` a lease) and ``EVALSHA`` complete
   (``HSET`` the result, ``HDEL`` the lease) per job, pairs/s; and the same loop in 4
   forked processes draining one list: how far the driver and the server scale with
   processes on this machine, the yardstick of 8 below.

*typedq* (``RedisQueue``, default ``FrameCodec("json")``; jobs built before the clock):

4. ``enqueue`` one at a time, jobs/s (vs 1);
5. ``enqueue_many`` in batches of 1,000, jobs/s (vs 2);
6. drain in this process: ``claim_many`` of a worker's batch size, then one
   ``complete_many``, jobs/s (vs 3);
7. drain by one real worker process (``run_worker_processes`` of ``_bench_app``, one
   thread), timed from the stored ``started_at`` of its first job to the
   ``finished_at`` of its last, jobs/s (vs 3, and vs the fastest peer's drain);
8. the same with 4 worker processes (vs 7). The processes are spawned and each imports
   typedq before its first claim, so the first ones drain while the last still start
   (0.1-0.5 s of a 1-2 s drain here): the rate *while all 4 run* counts the jobs
   finished between the last process's first start and the first process's last
   finish, over that span (vs 7 too). For 7 and 8, the CPU seconds the server, the
   workers (each process's threads, by the scheduler's account) and the whole machine
   used over that span (how busy the cores were), and the server's CPU per job: its
   one thread bounds a drain at one job per that many µs.

*Peers* (``_bench_peers``: Huey's ``RedisHuey``, RQ, Dramatiq's Redis broker, arq, SAQ):
each one's own enqueue call, one job at a time, and one worker process of it draining
the N jobs, timed from its task's first run to its N-th. A peer that cannot be imported
or run is listed with the reason.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import redis

from typedq.backends.base import Completion
from typedq.backends.redis import RedisQueue
from typedq.job import Job, JobStatus
from typedq.process import run_worker_processes
from typedq.worker import DEFAULT_BATCH_SIZE

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _bench_peers  # noqa: E402  # benchmarks/ is not a package

perf_counter = time.perf_counter

#: The private server's pid (its CPU time is read from /proc), and the CPU seconds it
#: used in the timed part of the last scenario (None: not known).
SERVER: dict[str, Any] = {"pid": None, "cpu": None, "at": 0.0}


def begin() -> float:
    """Start a scenario's clock (and note the server's CPU time)."""
    SERVER["at"] = _cpu_of(SERVER["pid"])
    return perf_counter()


def end(start: float) -> float:
    """Stop a scenario's clock: the seconds since ``start`` (and the server's CPU seconds)."""
    elapsed = perf_counter() - start
    SERVER["cpu"] = _cpu_of(SERVER["pid"]) - SERVER["at"] if SERVER["pid"] else None
    return elapsed

RAW_CLAIM = """
local id = redis.call('RPOP', KEYS[1])
if not id then return false end
redis.call('HSET', KEYS[2] .. id, 'lease', ARGV[1])
return id
"""
RAW_COMPLETE = """
redis.call('HSET', KEYS[1] .. ARGV[1], 'result', ARGV[2])
redis.call('HDEL', KEYS[1] .. ARGV[1], 'lease')
return 1
"""


def payload(i: int) -> dict[str, Any]:
    return {"n": i, "name": f"job-{i}", "tags": ["a", "b"]}


def with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


def clean(client: redis.Redis, prefix: str) -> None:
    """Delete the keys a scenario wrote under ``prefix`` (typedq's, the raw loops', every
    peer's), and no other."""
    patterns = [f"{{{prefix}}}:*", f"{{{prefix}:*", f"raw-{prefix}*"]
    for peer in _bench_peers.PEERS:
        patterns += _bench_peers.key_patterns(peer, prefix)
    keys = [key for pattern in patterns for key in client.scan_iter(match=pattern, count=1000)]
    for lo in range(0, len(keys), 1000):
        client.unlink(*keys[lo : lo + 1000])
    client.srem("rq:queues", f"rq:queue:{prefix}")  # RQ's set of every queue's key


def raw_lpush(client: redis.Redis, prefix: str, n: int) -> tuple[int, float]:
    key = f"raw-{prefix}:list"
    lpush, dumps = client.lpush, json.dumps
    start = begin()
    for i in range(n):
        lpush(key, dumps(payload(i)))
    return n, end(start)


def raw_pipelined(client: redis.Redis, prefix: str, n: int) -> tuple[int, float]:
    key = f"raw-{prefix}:list"
    start = begin()
    for lo in range(0, n, 1000):
        with client.pipeline(transaction=False) as pipe:
            for i in range(lo, min(n, lo + 1000)):
                pipe.lpush(key, json.dumps(payload(i)))
            pipe.execute()
    return n, end(start)


def _raw_fill(client: redis.Redis, prefix: str, n: int) -> tuple[str, str]:
    key, jobs = f"raw-{prefix}:ids", f"raw-{prefix}:job:"
    with client.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.lpush(key, str(i))
            pipe.hset(f"{jobs}{i}", "payload", json.dumps(payload(i)))
        pipe.execute()
    return key, jobs


def _raw_drain(client: redis.Redis, key: str, jobs: str) -> int:
    """The raw claim + complete loop until the list is empty; the jobs it took."""
    claim, complete = client.register_script(RAW_CLAIM), client.register_script(RAW_COMPLETE)
    done = 0
    while (job_id := claim([key, jobs], [time.time() + 30])) is not None:
        complete([jobs], [job_id, "null"])
        done += 1
    return done


def raw_claim_complete(client: redis.Redis, prefix: str, n: int) -> tuple[int, float]:
    key, jobs = _raw_fill(client, prefix, n)
    start = begin()
    done = _raw_drain(client, key, jobs)
    elapsed = end(start)
    assert done == n, (done, n)
    return n, elapsed


def raw_claim_complete_processes(
    client: redis.Redis, url: str, prefix: str, n: int, processes: int
) -> tuple[int, float]:
    """The raw loop in ``processes`` forked processes draining one list: how far the
    driver and the server scale with processes on this machine (the yardstick of
    typedq's 4-process drain), timed from their common start to the last one's end."""
    key, jobs = _raw_fill(client, prefix, n)
    go_read, go_write = os.pipe()
    done_read, done_write = os.pipe()
    children = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:  # a child: its own client, the loop, its count back through the pipe
            code = 1
            try:
                os.read(go_read, 1)
                own = redis.Redis.from_url(url)
                os.write(done_write, f"{_raw_drain(own, key, jobs)}\n".encode())
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    start = begin()
    os.write(go_write, b"x" * processes)
    for pid in children:
        os.waitpid(pid, 0)
    elapsed = end(start)
    os.close(done_write)
    with os.fdopen(done_read) as replies:
        done = sum(int(line) for line in replies)
    for fd in (go_read, go_write):
        os.close(fd)
    assert done == n, (done, n)
    return n, elapsed


def make_jobs(n: int) -> list[Job]:
    return [Job(job_type="bench", payload=payload(i)) for i in range(n)]


def typedq_enqueue(url: str, n: int) -> tuple[int, float]:
    queue = RedisQueue(url, name="bench")
    jobs = make_jobs(n)
    enqueue = queue.enqueue
    start = begin()
    for job in jobs:
        enqueue(job)
    elapsed = end(start)
    queue.close()
    return n, elapsed


def typedq_enqueue_many(url: str, n: int) -> tuple[int, float]:
    queue = RedisQueue(url, name="bench")
    jobs = make_jobs(n)
    start = begin()
    for lo in range(0, n, 1000):
        queue.enqueue_many(jobs[lo : lo + 1000])
    elapsed = end(start)
    queue.close()
    return n, elapsed


def typedq_drain(url: str, n: int) -> tuple[int, float]:
    queue = RedisQueue(url, name="bench")
    jobs = make_jobs(n)
    for lo in range(0, n, 1000):
        queue.enqueue_many(jobs[lo : lo + 1000])
    claim_many, complete_many = queue.claim_many, queue.complete_many
    done = 0
    start = begin()
    while claims := claim_many("bench-worker", lease_s=30.0, limit=DEFAULT_BATCH_SIZE):
        outcomes = complete_many([Completion(c.job.job_id, c.token, None) for c in claims])
        assert all(isinstance(o, Job) for o in outcomes)
        done += len(claims)
    elapsed = end(start)
    queue.close()
    assert done == n, (done, n)
    return n, elapsed


def _cpu_of(pid: int | None) -> float:
    """CPU seconds process ``pid`` ran so far, all its threads (0 when unknown).

    Read from each thread's ``/proc/<pid>/task/<tid>/schedstat`` (the scheduler's own
    account, in nanoseconds), not from ``/proc/<pid>/stat``: that one counts clock ticks
    by sampling, and here it overstated the drains' processes (they summed to 2.3-2.5
    cores on a 2-core machine). A thread that ended is no longer counted.
    """
    if pid is None:
        return 0.0
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def _machine_busy() -> float:
    """CPU seconds every process of the machine used so far (/proc/stat, all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int | None = None) -> list[int]:
    """The pids of the processes below ``pid`` (this one by default), from /proc."""
    found: list[int] = []
    todo = [pid or os.getpid()]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                kids = [int(k) for k in Path(f"/proc/{parent}/task/{tid}/children").read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def typedq_process(url: str, n: int, processes: int = 1, server_pid: int | None = None) -> tuple[int, float]:
    queue = RedisQueue(url, name="bench")
    jobs = make_jobs(n)
    for lo in range(0, n, 1000):
        queue.enqueue_many(jobs[lo : lo + 1000])
    os.environ["TYPEDQ_BENCH_BACKEND"] = url
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    finished = threading.Event()

    # (wall-clock time, to match the jobs' stored times; the CPU seconds of the server, of
    # the worker processes, of the whole machine), every 50 ms while the drain runs.
    samples: list[tuple[float, float, float, float]] = []

    def sample() -> tuple[float, float, float, float]:
        # The private server is a child of this process too: it is not a worker.
        workers = sum(_cpu_of(pid) for pid in _descendants() if pid != server_pid)
        return time.time(), _cpu_of(server_pid), workers, _machine_busy()

    def stopper() -> None:
        deadline = time.monotonic() + 600
        while not finished.is_set() and time.monotonic() < deadline:
            samples.append(sample())
            if queue.count_by_status()[JobStatus.COMPLETED] >= n:
                break
            time.sleep(0.05)
        if not finished.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=stopper, daemon=True)
    watcher.start()
    try:
        run_worker_processes(
            "_bench_app:make_manager", processes=processes, concurrency=1, queues=["bench"], grace_s=5.0
        )
    finally:
        finished.set()
        watcher.join()
    done: list[Job] = []
    after: str | None = None
    while page := queue.list_jobs(status=JobStatus.COMPLETED, limit=1000, after=after):
        done += page
        after = page[-1].job_id
    queue.close()
    assert len(done) == n, (len(done), n)
    start = min(j.started_at or 0.0 for j in done)
    end = max(j.finished_at or 0.0 for j in done)
    span = _all_running(done)
    rate = _all_running_rate(done, span)
    ALL_RUNNING[processes].append(rate)
    inside = [each for each in samples if span[0] <= each[0] <= span[1]]
    if len(inside) >= 2 and inside[-1][0] > inside[0][0]:
        (t0, s0, w0, m0), (t1, s1, w1, m1) = inside[0], inside[-1]
        CPU[processes].append(((s1 - s0) / (t1 - t0), (w1 - w0) / (t1 - t0), (m1 - m0) / (t1 - t0)))
        if rate:
            CPU_PER_JOB[processes].append((m1 - m0) / (t1 - t0) / rate * 1e6)
            SERVER_PER_JOB[processes].append((s1 - s0) / (t1 - t0) / rate * 1e6)
    return n, end - start


def _all_running(done: list[Job]) -> tuple[float, float]:
    """The span in which every worker process ran: from the last process's first start
    to the first process's last finish (by the jobs' stored times and worker ids)."""
    spans: dict[str | None, list[float]] = {}
    for job in done:
        span = spans.setdefault(job.worker_id, [math.inf, -math.inf])
        span[0] = min(span[0], job.started_at or math.inf)
        span[1] = max(span[1], job.finished_at or -math.inf)
    return max(first for first, _ in spans.values()), min(last for _, last in spans.values())


def _all_running_rate(done: list[Job], span: tuple[float, float]) -> float:
    """Jobs/s finished in ``span`` (see :func:`_all_running`)."""
    lo, hi = span
    if hi <= lo:
        return 0.0
    return sum(1 for job in done if lo <= (job.finished_at or 0.0) <= hi) / (hi - lo)


#: processes -> per round, the drain's rate while all its worker processes ran.
ALL_RUNNING: dict[int, list[float]] = {1: [], 4: []}
#: The 4-process drain's rate while all 4 ran, as a row of the results.
ALL_FOUR: Final = "typedq drain, 4 worker processes, while all 4 run"

#: processes -> per round (cores busy with the server, with the worker processes, and with
#: every process of the machine, this benchmark's or not) while all the worker processes
#: ran (see :func:`_all_running`; sampled by the watcher every 50 ms).
CPU: dict[int, list[tuple[float, float, float]]] = {1: [], 4: []}
#: processes -> per round, the whole machine's CPU µs per job drained in that span: the
#: same with 4 processes as with 1 means the processes add no work, only overlap.
CPU_PER_JOB: dict[int, list[float]] = {1: [], 4: []}
#: processes -> per round, the server's CPU µs per job drained in that span: its one
#: thread cannot move more than 1e6 / that many jobs a second.
SERVER_PER_JOB: dict[int, list[float]] = {1: [], 4: []}


class PeerUnavailable(Exception):
    """A peer that cannot be imported or run here (the message says why)."""


def peer_python(peer: str, arq_python: str | None) -> str:
    return arq_python if peer == "arq" and arq_python else sys.executable


def peer_problem(peer: str, python: str) -> str | None:
    """Why ``peer`` cannot run with ``python`` (None: it can)."""
    module = _bench_peers.MODULES[peer]
    done = subprocess.run(
        [python, "-c", f"import {module}, redis; print({module}.__name__, redis.__version__)"],
        capture_output=True, text=True, check=False,
    )
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or ["?"])[-1]
    hint = ""
    if peer == "arq":
        hint = (
            " (arq 0.28 requires redis-py < 6, which typedq's redis extra does not allow in the "
            "same environment: make a virtualenv with `pip install arq` and pass --arq-python)"
        )
    return f"cannot import {module} with {python}: {last}{hint}"


def _peer_cmd(python: str, *args: str) -> list[str]:
    return [python, "-c", "import _bench_peers; _bench_peers.main()", *args]


def peer_enqueue(peer: str, python: str, url: str, prefix: str, n: int) -> tuple[int, float]:
    done = subprocess.run(
        _peer_cmd(python, "enqueue", peer, url, prefix, str(n)),
        capture_output=True, text=True, cwd=HERE, check=False, timeout=900,
    )
    if done.returncode != 0:
        raise PeerUnavailable(f"{peer} enqueue failed: {done.stderr.strip()[-500:]}")
    return n, float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def peer_drain(peer: str, python: str, url: str, prefix: str, n: int) -> tuple[int, float]:
    peer_enqueue(peer, python, url, prefix, n)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "drained.json"
        log = Path(folder) / "worker.log"
        with open(log, "wb") as sink:
            proc = subprocess.Popen(
                _peer_cmd(python, "work", peer, url, prefix, str(n), str(out)),
                cwd=HERE, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 900
            while not out.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise PeerUnavailable(
                        f"{peer} worker {'exited' if proc.poll() is not None else 'timed out'}: "
                        f"{log.read_text(errors='replace')[-500:]}"
                    )
                time.sleep(0.05)
            record = json.loads(out.read_text())
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return int(record["count"]), float(record["last"]) - float(record["first"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_private_server(folder: str) -> tuple[subprocess.Popen[bytes], str]:
    """A private ``redis-server`` (no persistence) on a free loopback port, and its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: pass --url of a server to use")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", folder],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    return proc, url


def median_ratio(rates: dict[str, list[float]], ours: str, yardstick: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(rates[ours], yardstick, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--url", default=None, help="a server to use (default: a private redis-server)")
    parser.add_argument("--peers", default=",".join(_bench_peers.PEERS))
    parser.add_argument("--arq-python", default=None, help="the python of a virtualenv that has arq")
    args = parser.parse_args()
    n = args.jobs
    folder = tempfile.mkdtemp(prefix="bench-redis-")
    server: subprocess.Popen[bytes] | None = None
    if args.url is None:
        server, url = start_private_server(folder)
    else:
        url = args.url
    try:
        run(args, url, n, server.pid if server is not None else None)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        shutil.rmtree(folder, ignore_errors=True)


def run(args: argparse.Namespace, url: str, n: int, server_pid: int | None) -> None:
    client = redis.Redis.from_url(url)
    info = client.info("server")
    print(
        f"Redis {info['redis_version']} at {url}{' (private)' if server_pid else ''}; Python "
        f"{platform.python_version()}, redis-py {redis.__version__}; {os.cpu_count()} cores; "
        f"{n} jobs, {args.runs} runs"
    )
    scenarios: dict[str, Callable[[str, str], tuple[int, float]]] = {
        "raw LPUSH, one a round trip": lambda u, p: raw_lpush(client, p, n),
        "raw LPUSH, pipelined by 1,000": lambda u, p: raw_pipelined(client, p, n),
        "raw EVALSHA claim + complete": lambda u, p: raw_claim_complete(client, p, n),
        "raw EVALSHA claim + complete, 4 processes": lambda u, p: raw_claim_complete_processes(
            client, url, p, n, 4
        ),
        "typedq enqueue": lambda u, p: typedq_enqueue(u, n),
        "typedq enqueue_many (1,000)": lambda u, p: typedq_enqueue_many(u, n),
        "typedq drain, claim_many + complete_many": lambda u, p: typedq_drain(u, n),
        "typedq drain, 1 worker process": lambda u, p: typedq_process(u, n, 1, server_pid),
        "typedq drain, 4 worker processes": lambda u, p: typedq_process(u, n, 4, server_pid),
    }
    unavailable: dict[str, str] = {}
    peers = [p for p in args.peers.split(",") if p]
    for peer in peers:
        python = peer_python(peer, args.arq_python)
        problem = peer_problem(peer, python)
        if problem is not None:
            unavailable[peer] = problem
            continue

        def enqueue(u: str, p: str, peer: str = peer, python: str = python) -> tuple[int, float]:
            return peer_enqueue(peer, python, url, p, n)

        def drain(u: str, p: str, peer: str = peer, python: str = python) -> tuple[int, float]:
            return peer_drain(peer, python, url, p, n)

        scenarios[f"{peer} enqueue"] = enqueue
        scenarios[f"{peer} drain, 1 worker process"] = drain
    rates: dict[str, list[float]] = {name: [] for name in scenarios}
    server_us: dict[str, list[float]] = {}
    SERVER["pid"] = server_pid
    for round_ in range(args.runs):
        for name, scenario in scenarios.items():
            if name.split(" ", 1)[0] in unavailable:
                continue
            prefix = f"bench-{uuid.uuid4().hex[:10]}"
            SERVER["cpu"] = None
            try:
                count, elapsed = scenario(with_prefix(url, prefix), prefix)
            except PeerUnavailable as exc:
                unavailable[name.split(" ", 1)[0]] = str(exc)
                continue
            finally:
                clean(client, prefix)
            rates[name].append(count / elapsed)
            if SERVER["cpu"] is not None:
                server_us.setdefault(name, []).append(SERVER["cpu"] / count * 1e6)
        print(f"run {round_ + 1}/{args.runs} done", file=sys.stderr)
    rates = {name: values for name, values in rates.items() if len(values) == args.runs}
    if len(ALL_RUNNING[4]) == args.runs:  # for one process that span is the whole drain
        rates[ALL_FOUR] = ALL_RUNNING[4]
    print(f"\n{'scenario':50} {'jobs/s (median)':>16}  {'min..max':>16}  server CPU µs/job")
    for name, values in rates.items():
        cpu = f"{statistics.median(server_us[name]):8.1f}" if name in server_us else ""
        spread = f"{min(values):,.0f}..{max(values):,.0f}"
        print(f"{name:50} {statistics.median(values):16,.0f}  {spread:>16}  {cpu}")
    for peer, reason in unavailable.items():
        print(f"{peer + ': not run':50} {reason}")
    print()
    goals = [
        ("typedq enqueue", "raw LPUSH, one a round trip", 0.85),
        ("typedq enqueue_many (1,000)", "raw LPUSH, pipelined by 1,000", 0.5),
        ("typedq drain, claim_many + complete_many", "raw EVALSHA claim + complete", None),
        ("typedq drain, 1 worker process", "raw EVALSHA claim + complete", 0.5),
        ("typedq drain, 4 worker processes", "typedq drain, 1 worker process", 2.5),
        (ALL_FOUR, "typedq drain, 1 worker process", 2.5),
        ("raw EVALSHA claim + complete, 4 processes", "raw EVALSHA claim + complete", None),
    ]
    for ours, yardstick, goal in goals:
        if ours not in rates:
            continue
        ratio = median_ratio(rates, ours, rates[yardstick])
        target = f"  (goal >= {goal}x: {'met' if ratio >= goal else 'NOT met'})" if goal else ""
        print(f"{ours} / {yardstick}: {ratio:.2f}x{target}")
    drains = [
        name for name in rates if name.endswith("drain, 1 worker process") and not name.startswith("typedq")
    ]
    if drains:
        fastest = [max(rates[name][i] for name in drains) for i in range(args.runs)]
        leader = max(drains, key=lambda name: statistics.median(rates[name]))
        ratio = median_ratio(rates, "typedq drain, 1 worker process", fastest)
        print(
            f"typedq drain, 1 worker process / the fastest peer's 1-worker drain of each round "
            f"(median leader: {leader.split(' ', 1)[0]}): {ratio:.2f}x  (goal >= 3x: "
            f"{'met' if ratio >= 3 else 'NOT met'})"
        )
    for processes, samples in CPU.items():
        if samples and server_pid is not None:
            server_cores = statistics.median(s for s, _, _ in samples)
            worker_cores = statistics.median(w for _, w, _ in samples)
            machine = statistics.median(m for _, _, m in samples)
            print(
                f"CPU during the {processes}-process drain while all its processes ran (medians): "
                f"redis-server {server_cores:.2f} cores, worker processes {worker_cores:.2f} cores, "
                f"together {server_cores + worker_cores:.2f}; the whole machine (other programs too) "
                f"{machine:.2f} of {os.cpu_count()} cores"
                + (
                    f", {statistics.median(CPU_PER_JOB[processes]):.1f} µs of it per job"
                    if CPU_PER_JOB[processes]
                    else ""
                )
            )
        if SERVER_PER_JOB[processes] and server_pid is not None:
            per_job = statistics.median(SERVER_PER_JOB[processes])
            print(
                f"  redis-server {per_job:.1f} µs of CPU per job: its one thread bounds the "
                f"{processes}-process drain at {1e6 / per_job:,.0f} jobs/s"
            )


if __name__ == "__main__":
    main()
