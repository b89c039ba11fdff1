"""The Redis backend's key layout, URL form and job <-> hash encoding.

Every key of a queue starts with its base key ``{prefix}:{queue}`` (``B`` below). The
first braces are the Redis Cluster hash tag: every queue of one prefix lives in one slot,
so a Lua script may touch the keys of several queues of the prefix (a bury that puts the
dead-letter copy into the dead-letter queue, a replay back from it) in one atomic step.
One typedq prefix is therefore one Cluster slot (BullMQ gives the same advice for its
queue prefix): to spread load over a Cluster, give groups of queues prefixes of their
own. The queue name is braced too, so no queue's keys can collide with another's (queue
names hold no braces; job ids hold no braces either)::

    B:j:<job_id>            hash   one job (fields below)
    B:st:<STATUS>           zset   the jobs in a status, by arrival number (its size is
                                   the status's count: O(1) reads)
    B:ty:<job_type>         zset   the jobs of a type, by arrival number
    B:ready                 zset   ready jobs, all scores 0, ordered by member (see below)
    B:rt:<job_type>         zset   the same, per job type (claims by type)
    B:delayed               zset   PENDING jobs due later, by due time
    B:leases                zset   leased RUNNING jobs, by lease deadline
    B:dependents:<job_id>   set    blocked jobs waiting for this job
    B:cg:<n>                set    the RUNNING jobs of one batch claim (claim_many)
    B:alone                 set    PENDING jobs to be claimed alone (batch rescues)
    B:fin:<STATUS>          zset   the jobs that ended in a status, by finish time (purge)
    B:running               hash   RUNNING jobs per job type (claim limits), field ''
                                   marking it complete (see _redis_lua_common)
    B:submitted             hash   jobs ever added per job type (never lowered)
    B:seq, B:cgseq          string arrival and claim-group counters
    B:wake:<job_type>       list   tokens pushed when a job of the type becomes ready or due
                                   later (BLPOP; 'r': made ready; see _redis_wait)
    B:wake                  list   a token when the first job of a new type is added
    B:intr:<id>             list   tokens that wake one queue object's waiters
    B:meta                  hash   the layout's version
    B:workers               hash   the worker registry: worker id -> its entry as JSON
    B:wseen                 zset   the same workers by last heartbeat (to forget old ones)
    B:alive:<worker_id>     string a live worker's heartbeat, expiring after its ttl_s
                                   by the server's clock (the reaper's liveness rule)
    B:locks                 hash   named locks: name -> holder as JSON {o owner, t token,
                                   e deadline} (see _redis_coord)
    B:fences                hash   named locks: name -> fence counter (never lowered)
    B:schedules             hash   schedules: name -> definition as canonical JSON
    B:schedstate            hash   schedules: name -> state as JSON {n next, l last, p paused}
    B:unique                hash   unique keys: key -> "holder id<TAB>until<TAB>states"
                                   (see _redis_lua_unique; written by the enqueue script)
    {prefix:}:epoch         string the prefix's epoch marker (a server that lost its data)

Queues written by an older typedq of this layout may still hold ``B:all`` (every job by
arrival: listing all jobs now merges the status indexes) and ``B:counts`` (jobs per
status: now the status indexes' sizes); neither is read nor written any more.

A job hash holds, besides the job's fields, ``lu`` (the lease deadline by the caller's
clock, as in ``B:leases``) and ``ls`` (the same lease by the server's clock, in ms).

A ready member (made from the job's fields when needed, never stored) is ``<10 - priority
as one hex digit><scheduled_at: 16 hex><created_at: 16 hex><arrival: 12 hex><job_id>``:
the floats as order-preserving hex of their IEEE 754
bits, a job without ``scheduled_at`` as sixteen zeros (before every time). Members of
equal score sort by bytes, so ``ZRANGEBYLEX`` gives the claim order of every backend:
priority desc, scheduled_at (None first), created_at, arrival.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from typedq.backends._control import current_progress, decode_logs, decode_progress, encode_progress
from typedq.backends._frames import UNDECODABLE_KEY, FrameFields
from typedq.errors import ConfigError
from typedq.job import TERMINAL_STATUSES, TRACEBACK_KEY, Job, JobLogLine, JobStatus, take_legacy_traceback

__all__ = [
    "FIXED_KEYS",
    "LAYOUT_VERSION",
    "STATUSES",
    "HashCodec",
    "RedisSettings",
    "base_key",
    "legacy_base_key",
    "parse_redis_url",
    "ready_head",
    "ready_member",
    "sort_hex",
]

#: Version of the key layout, kept in ``B:meta``. Layout 1 used the base key
#: ``{prefix:queue}`` (one slot per queue); a queue of layout 1 is renamed to layout 2 when
#: it is opened (``_redis_conn.migrate_layout``).
LAYOUT_VERSION: Final = 2
#: Fixed keys of a queue (suffix after the base key) and the type each must have.
FIXED_KEYS: Final = {
    "ready": "zset",
    "delayed": "zset",
    "leases": "zset",
    "alone": "set",
    "workers": "hash",
    "wseen": "zset",
    "locks": "hash",
    "fences": "hash",
    "schedules": "hash",
    "schedstate": "hash",
    "running": "hash",
    "submitted": "hash",
    "seq": "string",
    "cgseq": "string",
    "wake": "list",
    "meta": "hash",
    **{f"st:{s.value}": "zset" for s in JobStatus},
    **{f"fin:{s.value}": "zset" for s in TERMINAL_STATUSES},
}

#: Every status, in the order :func:`queue_counts` reads their counts.
STATUSES: Final = tuple(JobStatus)


def queue_counts(pipe: Any, base: str) -> None:
    """Queue on ``pipe`` the reads of the jobs per status of the queue ``base`` (the sizes
    of its status indexes, one ``ZCARD`` each, in the order of :data:`STATUSES`)."""
    for status in STATUSES:
        pipe.zcard(f"{base}:st:{status.value}")


_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_SERVICE_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_OPTIONS: Final = {
    "prefix": "a key prefix of 1-64 letters, digits or _ . : -",
    "socket_timeout": "seconds a command may take (default 10)",
    "socket_connect_timeout": "seconds a connection may take (default 5)",
    "health_check_interval": "seconds between connection checks (default 0: none)",
    "max_connections": "the most connections this process opens (default unbounded)",
    "eviction": "warn or refuse: what to do with a server whose maxmemory-policy is not noeviction "
    "(default warn: one WARNING; refuse: BackendConfigError at open)",
}
#: Options only a ``redis+sentinel://`` URL takes.
_SENTINEL_OPTIONS: Final = {
    "sentinel_password": "the password the sentinels require (default: none)",
}
#: The port of a sentinel listed without one.
SENTINEL_PORT: Final = 26379
_SCHEMES: Final = {"redis": False, "rediss": True}
_SENTINEL_SCHEMES: Final = {"redis+sentinel": False, "rediss+sentinel": True}
_CLUSTER_SCHEMES: Final = {"redis+cluster": False, "rediss+cluster": True}
#: Values of the ``eviction`` option.
EVICTION_MODES: Final = ("warn", "refuse")


@dataclass(frozen=True)
class RedisSettings:
    """What a ``redis://``, ``rediss://``, ``redis+sentinel://`` or ``redis+cluster://`` URL says.

    With Sentinel, ``sentinels`` lists the sentinels' addresses and ``service`` the
    master's name; ``host`` and ``port`` are the first sentinel's (the master's address
    is asked of the sentinels on every connect). With a Cluster, ``cluster`` is True and
    ``nodes`` lists the startup nodes (``host`` and ``port`` are the first one's): the
    client learns the slot map from any of them.
    """

    url: str = field(repr=False)
    host: str = "localhost"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    prefix: str = "typedq"
    socket_timeout: float = 10.0
    socket_connect_timeout: float = 5.0
    health_check_interval: int = 0
    max_connections: int | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    eviction: str = "warn"
    cluster: bool = False
    nodes: tuple[tuple[str, int], ...] = ()

    @property
    def masked_url(self) -> str:
        """The URL with its password replaced by ``***`` (for messages and logs)."""
        return mask_url(self.url)

    def pool_key(self) -> tuple[Any, ...]:
        """What makes two URLs share a connection pool (the prefix and checks do not)."""
        return tuple(
            getattr(self, f.name) for f in fields(self) if f.name not in ("url", "prefix", "eviction")
        )


def mask_url(url: str) -> str:
    """``url`` with the password of its user part and ``sentinel_password`` replaced by ``***``."""
    url = re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)
    return re.sub(r"([?&]sentinel_password=)[^&#]*", r"\1***", url)


def _number(option: str, text: str, kind: type[float] | type[int], url: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"backend.{option}", text, _OPTIONS[option]) from None
    if not 0 <= value < float('inf'):
        raise ConfigError(f"backend.{option}", text, _OPTIONS[option])
    return value


def parse_redis_url(url: str) -> RedisSettings:
    """Read a Redis URL: a server, a master found through Sentinel, or a Redis Cluster.

    * ``redis://[user:pass@]host[:port][/db][?prefix=typedq&...]`` (``rediss://``: TLS)
    * ``redis+sentinel://[user:pass@]host[:port][,host[:port]...]/service[/db][?...]``
      (``rediss+sentinel://``: TLS to the master): the sentinels (port 26379 when
      omitted), tried in turn, name the current master of ``service``; ``user:pass``
      log in to the master, ``sentinel_password`` to the sentinels.
    * ``redis+cluster://[user:pass@]host[:port][,host[:port]...][/0][?...]``
      (``rediss+cluster://``: TLS): startup nodes of a Redis Cluster (port 6379 when
      omitted); a Cluster has database 0 only.

    Options: ``prefix``, ``socket_timeout``, ``socket_connect_timeout``,
    ``health_check_interval``, ``max_connections``, ``eviction`` (``warn`` or ``refuse``);
    with Sentinel also ``sentinel_password``.

    Raises:
        ConfigError: the URL is malformed, or an option is unknown or has a bad value
            (the message names it; passwords are never shown).
    """
    masked = mask_url(url)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in _SENTINEL_SCHEMES:
        return _parse_sentinel_url(url, masked, tls=_SENTINEL_SCHEMES[scheme])
    if scheme in _CLUSTER_SCHEMES:
        return _parse_cluster_url(url, masked, tls=_CLUSTER_SCHEMES[scheme])
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError:
        raise ConfigError("backend", masked, "a URL such as redis://host:6379/0") from None
    if scheme not in _SCHEMES:
        raise ConfigError(
            "backend", masked, "a redis://, rediss://, redis+sentinel:// or redis+cluster:// URL"
        )
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ConfigError("backend.db", path, "a database number such as /0")
    return RedisSettings(
        url=url,
        host=parts.hostname or "localhost",
        port=port,
        db=int(path) if path else 0,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=_SCHEMES[scheme],
        **_options(parts.query, url, sentinel=False),
    )


def _options(query: str, url: str, *, sentinel: bool) -> dict[str, Any]:
    known = {**_OPTIONS, **_SENTINEL_OPTIONS} if sentinel else _OPTIONS
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in known:
            shown = "***" if "password" in name else value
            raise ConfigError(f"backend.{name}", shown, f"one of the options {', '.join(sorted(known))}")
        if name == "prefix":
            if _PREFIX_RE.fullmatch(value) is None:
                raise ConfigError("backend.prefix", value, _OPTIONS[name])
            options[name] = value
        elif name == "sentinel_password":
            options[name] = value or None
        elif name == "eviction":
            if value not in EVICTION_MODES:
                raise ConfigError("backend.eviction", value, _OPTIONS[name])
            options[name] = value
        elif name in ("health_check_interval", "max_connections"):
            options[name] = _number(name, value, int, url)
        else:
            options[name] = _number(name, value, float, url)
    return options


def _parse_sentinel_url(url: str, masked: str, *, tls: bool) -> RedisSettings:
    """``redis+sentinel://[user:pass@]h1[:p1][,h2[:p2]...]/service[/db][?options]``."""
    example = "a URL such as redis+sentinel://host1:26379,host2:26379/mymaster/0"
    rest = url.split("://", 1)[1]
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if "?" in netloc:  # no path at all: redis+sentinel://host?prefix=...
        netloc, _, query = netloc.partition("?")
    userinfo, _, hosts = netloc.rpartition("@")
    sentinels = _hosts(hosts, masked, example, SENTINEL_PORT)
    segments = [s for s in path.split("/") if s]
    if not segments:
        raise ConfigError("backend.service", "", "the master's service name after the sentinels: " + example)
    service = unquote(segments[0])
    if _SERVICE_RE.fullmatch(service) is None:
        raise ConfigError("backend.service", service, "a service name of 1-128 letters, digits or _ . : -")
    if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise ConfigError(
            "backend.db", "/".join(segments[1:]), "a database number after the service, such as /0"
        )
    user, has_password, password = userinfo.partition(":")
    return RedisSettings(
        url=url,
        host=sentinels[0][0],
        port=sentinels[0][1],
        db=int(segments[1]) if len(segments) == 2 else 0,
        username=unquote(user) if user else None,
        password=unquote(password) if has_password and password else None,
        tls=tls,
        sentinels=tuple(sentinels),
        service=service,
        **_options(query, url, sentinel=True),
    )


def _hosts(hosts: str, masked: str, example: str, default_port: int) -> list[tuple[str, int]]:
    """``host[:port][,host[:port]...]`` as ``[(host, port), ...]``."""
    found: list[tuple[str, int]] = []
    for entry in hosts.split(","):
        try:
            parts = urlsplit(f"//{entry}")
            port = parts.port or default_port
        except ValueError:
            raise ConfigError("backend", masked, example) from None
        if not parts.hostname:
            raise ConfigError("backend", masked, example)
        found.append((parts.hostname, port))
    return found


def _parse_cluster_url(url: str, masked: str, *, tls: bool) -> RedisSettings:
    """``redis+cluster://[user:pass@]h1[:p1][,h2[:p2]...][/0][?options]``."""
    example = "a URL such as redis+cluster://host1:7000,host2:7001"
    rest = url.split("://", 1)[1]
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if "?" in netloc:  # no path at all: redis+cluster://host?prefix=...
        netloc, _, query = netloc.partition("?")
    userinfo, _, hosts = netloc.rpartition("@")
    nodes = _hosts(hosts, masked, example, 6379)
    if path.strip("/") not in ("", "0"):
        raise ConfigError(
            "backend.db", path.strip("/"), "database 0, the only one of a Redis Cluster (or none)"
        )
    user, has_password, password = userinfo.partition(":")
    return RedisSettings(
        url=url,
        host=nodes[0][0],
        port=nodes[0][1],
        username=unquote(user) if user else None,
        password=unquote(password) if has_password and password else None,
        tls=tls,
        cluster=True,
        nodes=tuple(nodes),
        **_options(query, url, sentinel=False),
    )


def base_key(prefix: str, queue: str) -> str:
    """The base key of a queue: ``{prefix}:{queue}``; ``{prefix}`` is the hash tag of
    every key of every queue of the prefix.

    Raises:
        ConfigError: the queue name holds a brace (it would break the key layout).
    """
    if "{" in queue or "}" in queue:
        raise ConfigError("name", queue, "a queue name without { or }")
    return f"{{{prefix}}}:{{{queue}}}"


def legacy_base_key(prefix: str, queue: str) -> str:
    """The base key of a queue in key layout 1: ``{prefix:queue}`` (one slot per queue)."""
    return f"{{{prefix}:{queue}}}"


_pack_double: Final = struct.Struct(">d").pack
_unpack_u64: Final = struct.Struct(">Q").unpack
_SIGN: Final = 1 << 63
_ALL_BITS: Final = (1 << 64) - 1
#: The sort hex of a job without ``scheduled_at``: before every time.
UNSCHEDULED_HEX: Final = "0" * 16


def sort_hex(value: float) -> str:
    """16 hex digits that sort (as text) as the float ``value`` sorts."""
    (bits,) = _unpack_u64(_pack_double(value + 0.0))  # + 0.0: -0.0 sorts as 0.0
    bits = bits ^ _ALL_BITS if bits & _SIGN else bits | _SIGN
    return f"{bits:016x}"


def ready_head(priority: int, sort_key: str) -> str:
    """The head of a job's ready member: all of it but the arrival number and the job id
    (the enqueue script appends them, as ``mkrk`` does)."""
    return f"{10 - priority:x}{sort_key}"


def ready_member(priority: int, sort_key: bytes, arrival: int, job_id: str) -> bytes:
    """A job's member of the ready sets (made from its fields ``p``, ``sk`` and ``n``, as
    the scripts' ``mkrk`` makes it; never stored in the job's hash)."""
    return f"{10 - priority:x}".encode() + sort_key + f"{arrival:012x}{job_id}".encode()


_STATUS: Final = {s.value.encode(): s for s in JobStatus}
#: A status's text (a dict lookup: ``.value`` is an enum property, slower).
_STATUS_TEXT: Final = {s: s.value for s in JobStatus}
_RUNNING: Final = JobStatus.RUNNING
_PENDING: Final = JobStatus.PENDING


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode()


def _float(raw: bytes | None) -> float | None:
    return None if raw is None else float(raw)


class HashCodec(FrameFields):
    """Encodes jobs into hash fields and decodes hashes into jobs with one ``FrameCodec``."""

    def enqueue_args(self, job: Job, now: float, args: list[Any], logs: str | None = None) -> bool:
        """Append to ``args`` the enqueue script's arguments for ``job``, added at ``now``
        (see ``_redis_lua._ENQUEUE``; text and bytes only: the script's arguments go
        packed, see ``_redis_conn.pack_args``): its id, type and status; the index it
        goes into beside its status's index and that index's argument; the values of the fields
        every job hash has (``p``, ``ca``, ``mr``, ``q``, ``pl``, ``sk``); then the count of
        its other fields and those, as ``name, value, ...``: the fields not at their default
        (None, 0, False, empty), and ``lg`` (``logs``) when given.

        Returns:
            Whether the job is to be placed by the script's ``place()`` ('p': a PENDING
            job with dependencies, to be run alone or due after ``now``).

        Raises:
            SerializationError: a payload, metadata or result cannot be encoded (the
                message names the field and the job); ``args`` is then left half-written.
        """
        payload, metadata, result, depends = self.blobs(job)
        status = job.status
        sched = job.scheduled_at
        created = job.created_at
        sort_key = (UNSCHEDULED_HEX if sched is None else sort_hex(sched)) + sort_hex(created)
        where = arg = ""
        if status is _PENDING:
            if depends is not None or job.run_alone or (sched is not None and sched > now):
                where = "p"
            else:
                where, arg = "r", ready_head(job.priority, sort_key)
        elif status is _RUNNING:
            if job.lease_until is not None:
                where, arg = "l", repr(float(job.lease_until))
        elif status in TERMINAL_STATUSES and job.finished_at is not None:
            where, arg = "f", repr(float(job.finished_at))
        args += (
            job.job_id, job.job_type, _STATUS_TEXT[status], where, arg,
            str(job.priority), repr(float(created)), str(job.max_retries), job.queue, payload, sort_key, "0",
        )
        start = len(args)
        if sched is not None:
            args += ("sa", repr(float(sched)))
        if metadata is not None:
            args += ("md", metadata)
        if job.timeout_seconds is not None:
            args += ("to", repr(float(job.timeout_seconds)))
        if depends is not None:
            args += ("d", depends)
        if job.attempt or job.retry_count or job.lost_count or job.cancel_requested or job.error is not None:
            for name, value in (("a", job.attempt), ("rc", job.retry_count), ("lc", job.lost_count)):
                if value:
                    args += (name, str(value))
            if job.cancel_requested:
                args += ("cr", "1")
            if job.error is not None:
                args += ("e", job.error)
        if job.lease_until is not None or job.started_at is not None or job.finished_at is not None:
            for name, when in (("lu", job.lease_until), ("sd", job.started_at), ("f", job.finished_at)):
                if when is not None:
                    args += (name, repr(float(when)))
        if job.worker_id is not None:
            args += ("w", job.worker_id)
        if result is not None:
            args += ("r", result)
        if job.run_alone:
            args += ("ra", "1")
        if job.traceback is not None:
            args += ("tb", job.traceback)
        if job.progress is not None:  # an imported job's
            args += ("pg", encode_progress(job.progress))
        if logs is not None:
            args += ("lg", logs)
        args[start - 1] = str(len(args) - start)
        return where == "p"

    def logs(self, flat: list[bytes]) -> list[JobLogLine]:
        """The log lines (``lg``) of a stored hash read as a flat ``[name, value, ...]`` list."""
        it = iter(flat)
        return decode_logs(dict(zip(it, it, strict=True)).get(b"lg"))

    def job(self, job_id: str, flat: list[bytes] | Mapping[bytes, bytes], *, strict: bool = False) -> Job:
        """Build the job of a stored hash (a flat ``[name, value, ...]`` list or a dict).

        Raises:
            DeserializationError: with ``strict``, the payload or metadata cannot be
                decoded (or is not a dict); the message names the field and the job.
        """
        if isinstance(flat, Mapping):
            h = flat
        else:
            it = iter(flat)
            h = dict(zip(it, it, strict=True))
        get = h.get
        context = job_id.encode()
        problems: dict[str, Any] = {}
        payload = self._field(h[b"pl"], context, "payload", problems, strict=strict, job_id=job_id)
        raw_meta = get(b"md")
        metadata = (
            {}
            if raw_meta is None
            else self._field(raw_meta, context, "metadata", problems, strict=strict, job_id=job_id)
        )
        result = self.decode_result(get(b"r"), context, problems)
        depends_on = self.decode_depends(get(b"d"), problems)
        # Absent: not written since layout 2 (layout 1 kept it in the metadata frame);
        # empty: cleared (no traceback).
        traceback = _text(get(b"tb"))
        if TRACEBACK_KEY in metadata:
            legacy = take_legacy_traceback(metadata, None)
            if traceback is None:
                traceback = legacy
        if not traceback:
            traceback = None
        if problems:
            metadata = {**metadata, UNDECODABLE_KEY: problems}
        return Job.unchecked(
            job_id=job_id,
            job_type=h[b"t"].decode(),
            payload=payload,
            priority=int(h[b"p"]),
            scheduled_at=_float(get(b"sa")),
            created_at=float(h[b"ca"]),
            max_retries=int(h[b"mr"]),
            retry_count=int(get(b"rc", 0)),
            timeout_seconds=_float(get(b"to")),
            status=_STATUS[h[b"s"]],
            result=result,
            error=_text(get(b"e")),
            metadata=metadata,
            depends_on=depends_on,
            queue=h[b"q"].decode(),
            attempt=int(get(b"a", 0)),
            worker_id=_text(get(b"w")),
            lease_until=_float(get(b"lu")),
            started_at=_float(get(b"sd")),
            finished_at=_float(get(b"f")),
            lost_count=int(get(b"lc", 0)),
            cancel_requested=b"cr" in h,
            run_alone=b"ra" in h,
            traceback=traceback,
            progress=current_progress(decode_progress(get(b"pg")), int(get(b"a", 0))),
        )
