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
    B:all                   zset   every job by arrival number (listing, export)
    B:st:<STATUS>           zset   the jobs in a status, by arrival number
    B:ty:<job_type>         zset   the jobs of a type, by arrival number
    B:ready                 zset   ready jobs, all scores 0, ordered by member (see below)
    B:rt:<job_type>         zset   the same, per job type (claims by type)
    B:delayed               zset   PENDING jobs due later, by due time
    B:leases                zset   leased RUNNING jobs, by lease deadline
    B:dependents:<job_id>   set    blocked jobs waiting for this job
    B:cg:<n>                set    the RUNNING jobs of one batch claim (claim_many)
    B:alone                 set    PENDING jobs to be claimed alone (batch rescues)
    B:fin:<STATUS>          zset   the jobs that ended in a status, by finish time (purge)
    B:counts                hash   jobs per status (size and counts are O(1) reads)
    B:seq, B:cgseq          string arrival and claim-group counters
    B:wake                  list   tokens pushed when work becomes ready (BLPOP)
    B:intr:<id>             list   tokens that wake one queue object's waiters
    B:meta                  hash   the layout's version
    B:workers               hash   the worker registry: worker id -> its entry as JSON
    B:wseen                 zset   the same workers by last heartbeat (to forget old ones)

A ready member is ``<10 - priority as one hex digit><scheduled_at: 16 hex><created_at:
16 hex><arrival: 12 hex><job_id>``: the floats as order-preserving hex of their IEEE 754
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

from typedq.backends._frames import UNDECODABLE_KEY, FrameFields
from typedq.errors import ConfigError
from typedq.job import TERMINAL_STATUSES, TRACEBACK_KEY, Job, JobStatus, take_legacy_traceback

__all__ = [
    "FIXED_KEYS",
    "LAYOUT_VERSION",
    "HashCodec",
    "RedisSettings",
    "base_key",
    "legacy_base_key",
    "parse_redis_url",
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
    "all": "zset",
    "alone": "set",
    "workers": "hash",
    "wseen": "zset",
    "counts": "hash",
    "seq": "string",
    "cgseq": "string",
    "wake": "list",
    "meta": "hash",
    **{f"st:{s.value}": "zset" for s in JobStatus},
    **{f"fin:{s.value}": "zset" for s in TERMINAL_STATUSES},
}

_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_OPTIONS: Final = {
    "prefix": "a key prefix of 1-64 letters, digits or _ . : -",
    "socket_timeout": "seconds a command may take (default 10)",
    "socket_connect_timeout": "seconds a connection may take (default 5)",
    "health_check_interval": "seconds between connection checks (default 0: none)",
    "max_connections": "the most connections this process opens (default unbounded)",
}


@dataclass(frozen=True)
class RedisSettings:
    """What a ``redis://`` or ``rediss://`` URL says."""

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

    @property
    def masked_url(self) -> str:
        """The URL with its password replaced by ``***`` (for messages and logs)."""
        return mask_url(self.url)

    def pool_key(self) -> tuple[Any, ...]:
        """What makes two URLs share a connection pool (the prefix does not)."""
        return tuple(getattr(self, f.name) for f in fields(self) if f.name not in ("url", "prefix"))


def mask_url(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***``."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)


def _number(option: str, text: str, kind: type[float] | type[int], url: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"backend.{option}", text, _OPTIONS[option]) from None
    if not 0 <= value < float('inf'):
        raise ConfigError(f"backend.{option}", text, _OPTIONS[option])
    return value


def parse_redis_url(url: str) -> RedisSettings:
    """Read ``redis://[user:pass@]host[:port][/db][?prefix=typedq&...]`` (``rediss://``: TLS).

    Options: ``prefix``, ``socket_timeout``, ``socket_connect_timeout``,
    ``health_check_interval``, ``max_connections``.

    Raises:
        ConfigError: the URL is malformed, or an option is unknown or has a bad value
            (the message names it; the password is never shown).
    """
    masked = mask_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError:
        raise ConfigError("backend", masked, "a URL such as redis://host:6379/0") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise ConfigError("backend", masked, "a redis:// or rediss:// URL")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ConfigError("backend.db", path, "a database number such as /0")
    options: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in _OPTIONS:
            raise ConfigError(f"backend.{name}", value, f"one of the options {', '.join(sorted(_OPTIONS))}")
        if name == "prefix":
            if _PREFIX_RE.fullmatch(value) is None:
                raise ConfigError("backend.prefix", value, _OPTIONS[name])
            options[name] = value
        elif name in ("health_check_interval", "max_connections"):
            options[name] = _number(name, value, int, url)
        else:
            options[name] = _number(name, value, float, url)
    return RedisSettings(
        url=url,
        host=parts.hostname or "localhost",
        port=port,
        db=int(path) if path else 0,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=scheme == "rediss",
        **options,
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


_STATUS: Final = {s.value.encode(): s for s in JobStatus}
_RUNNING: Final = JobStatus.RUNNING


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode()


def _float(raw: bytes | None) -> float | None:
    return None if raw is None else float(raw)


class HashCodec(FrameFields):
    """Encodes jobs into hash fields and decodes hashes into jobs with one ``FrameCodec``."""

    def fields(self, job: Job) -> list[Any]:
        """The hash fields of ``job`` but its type and status, as ``[name, value, ...]``.

        Fields at their default (None, 0, False, empty) are left out.

        Raises:
            SerializationError: a payload, metadata or result cannot be encoded (the
                message names the field and the job).
        """
        payload, metadata, result, depends = self.blobs(job)
        sched = job.scheduled_at
        out: list[Any] = [
            "p", job.priority,
            "ca", repr(float(job.created_at)),
            "mr", job.max_retries,
            "q", job.queue,
            "pl", payload,
            "sk", (UNSCHEDULED_HEX if sched is None else sort_hex(sched)) + sort_hex(job.created_at),
        ]
        if sched is not None:
            out += ("sa", repr(float(sched)))
        if metadata is not None:
            out += ("md", metadata)
        if job.timeout_seconds is not None:
            out += ("to", repr(float(job.timeout_seconds)))
        if depends is not None:
            out += ("d", depends)
        if job.attempt or job.retry_count or job.lost_count or job.cancel_requested or job.error is not None:
            for name, value in (("a", job.attempt), ("rc", job.retry_count), ("lc", job.lost_count)):
                if value:
                    out += (name, value)
            if job.cancel_requested:
                out += ("cr", "1")
            if job.error is not None:
                out += ("e", job.error)
        for name, when in (("lu", job.lease_until), ("sd", job.started_at), ("f", job.finished_at)):
            if when is not None:
                out += (name, repr(float(when)))
        if job.worker_id is not None:
            out += ("w", job.worker_id)
        if result is not None:
            out += ("r", result)
        if job.run_alone:
            out += ("ra", "1")
        if job.traceback is not None:
            out += ("tb", job.traceback)
        return out

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
        )
