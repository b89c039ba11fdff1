"""Validation of ``JobQueueManager`` configuration.

Every option is checked when the manager is built: an unknown name is refused with a
"did you mean" suggestion, and a value out of range with the field, the value and what
is allowed (all ``ConfigError``, a ``ValueError``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, Final

from typedq._validate import require_number
from typedq.aworker import DEFAULT_CONCURRENCY, MAX_CONCURRENCY
from typedq.errors import ConfigError, InvalidJobError
from typedq.job import parse_priority
from typedq.leases import UNIQUE_SWEEP_REST_S, check_lease_settings
from typedq.policy import ClaimPolicy
from typedq.serializers.base import MAX_HEADER_SIZE
from typedq.worker import DEFAULT_BATCH_SIZE, DEFAULT_DLQ_MAX

__all__ = [
    "DEFAULT_CONFIG",
    "MIN_PAYLOAD_SIZE",
    "QUEUE_DEFAULTS",
    "SUBMIT_FIELDS",
    "WORKER_CLASSES",
    "unknown_key_error",
    "validate_config",
    "validate_queue_settings",
]

#: The smallest ``max_payload_size``: the longest frame header (see typedq.serializers.base).
MIN_PAYLOAD_SIZE: Final = MAX_HEADER_SIZE

#: The values of ``worker_class``: "thread" (``Worker``: one job at a time per thread),
#: "async" (``AsyncWorker``: ``concurrency`` jobs at once on one event loop), "auto" (async
#: when every handler routed to the queue is an ``async def``, thread otherwise).
WORKER_CLASSES: Final = ("auto", "thread", "async")

#: Settings a queue may override, with their defaults.
QUEUE_DEFAULTS: Final[dict[str, Any]] = {
    "max_workers": 4,
    "default_priority": 5,
    "poll_interval": 0.1,
    "base_delay": 1.0,
    "max_delay": None,
    "jitter": 0.5,
    "max_retries": 3,
    # The most jobs a worker claims at once (and completions it commits together) while
    # its jobs are quick; 1 takes one job at a time. See typedq.worker.
    "batch_size": DEFAULT_BATCH_SIZE,
    # How the queue's claims choose jobs (typedq.policy.ClaimPolicy, or a dict of its
    # fields: fairness, weights, max_wait_s, max_concurrency, rate, limits); None: strict
    # priority without limits.
    "claim_policy": None,
    # Which worker runs the queue's jobs (see WORKER_CLASSES), and how many jobs an async
    # worker runs at once on its event loop. See typedq.aworker.
    "worker_class": "auto",
    "concurrency": DEFAULT_CONCURRENCY,
}

#: Every top-level config key, with its default.
DEFAULT_CONFIG: Final[dict[str, Any]] = {
    **QUEUE_DEFAULTS,
    "queues": {},
    "backend": "memory://",
    "serializer": None,
    "pickle_key": None,
    "max_payload_size": 1_048_576,
    "lease_s": 30.0,
    "heartbeat_s": 10.0,
    "reaper_s": 5.0,
    "max_lost": 3,
    # Seconds the reaper rests between whole rounds of its sweep of a queue's expired
    # unique keys (0: a batch every pass); see Reaper.
    "unique_sweep_rest_s": UNIQUE_SWEEP_REST_S,
    # The most dead letters the dead-letter queue keeps: burying one more drops the
    # oldest, in the same transition (None: no limit).
    "dlq_max": DEFAULT_DLQ_MAX,
    # Seconds a COMPLETED or CANCELLED job is kept after it finished; the reaper purges
    # older ones (None: kept forever). DEAD and FAILED jobs wait for a replay or a purge.
    "result_ttl": 7 * 86_400.0,
    # memory:// only: the most COMPLETED and CANCELLED jobs a queue keeps (None: all).
    "history_limit": 100_000,
    "shutdown_grace_s": 30.0,
    # Seconds a running job's handler has to stop once its cancellation was requested,
    # before its worker records it CANCELLED and refuses its late result (None: never).
    "cancel_grace_s": 10.0,
    # How many worker processes ``typedq worker`` and ``run_worker_processes`` start when
    # not told; 0: worker threads in one process. ``start_workers()`` always starts threads.
    "processes": 0,
    # The most address space (RLIMIT_AS) each worker process may map, in MiB; a handler
    # that allocates past it gets a MemoryError (None: no limit). Thread workers started
    # by start_workers() are not limited.
    "memory_limit_mb": None,
    # Whether start_workers() also runs the scheduler (see typedq.scheduler), and the time
    # to live of its leader lock: a dead leader is replaced within it.
    "scheduler": True,
    "scheduler_lock_s": 15.0,
}

SUBMIT_FIELDS: Final = frozenset(
    {
        "priority", "scheduled_at", "delay_s", "max_retries", "timeout_seconds",
        "metadata", "depends_on", "job_id", "queue",
        "unique_key", "unique_for", "unique_states", "on_conflict", "retry",
    }
)


def unknown_key_error(where: str, key: object, known: Iterable[str]) -> ConfigError:
    names = sorted(known)
    hint = difflib.get_close_matches(str(key), names, n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    return ConfigError(
        f"{where}{key}", key, f"one of {', '.join(names)}",
        message=f"unknown option {where}{key!r}{suggestion} (allowed: {', '.join(names)})",
    )


def validate_queue_settings(where: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(settings, Mapping):
        raise ConfigError(where.rstrip("."), settings, "a dict of queue settings")
    for key in settings:
        if key not in QUEUE_DEFAULTS:
            raise unknown_key_error(where, key, QUEUE_DEFAULTS)
    s = dict(settings)
    if "max_workers" in s:
        # 0 worker threads would claim nothing: a queue with such a setting never runs.
        require_number(f"{where}max_workers", s["max_workers"], minimum=1, integer=True)
    if "default_priority" in s:
        try:
            name = f"{where}default_priority"
            s["default_priority"] = parse_priority(s["default_priority"], field_name=name)
        except InvalidJobError as exc:
            raise ConfigError(exc.field, exc.value, exc.allowed) from None
    if "claim_policy" in s:
        try:
            s["claim_policy"] = ClaimPolicy.from_config(s["claim_policy"])
        except ConfigError as exc:
            field = exc.field if exc.field.startswith("claim_policy") else f"claim_policy.{exc.field}"
            raise ConfigError(f"{where}{field}", exc.value, exc.allowed) from None
    if "poll_interval" in s:
        require_number(f"{where}poll_interval", s["poll_interval"], minimum=0, strict=True)
    if "base_delay" in s:
        require_number(f"{where}base_delay", s["base_delay"], minimum=0)
    if "max_delay" in s:
        require_number(f"{where}max_delay", s["max_delay"], minimum=0, allow_none=True)
    if "jitter" in s:
        require_number(f"{where}jitter", s["jitter"], minimum=0, maximum=1)
    if "max_retries" in s:
        require_number(f"{where}max_retries", s["max_retries"], minimum=0, integer=True)
    if "batch_size" in s:
        require_number(f"{where}batch_size", s["batch_size"], minimum=1, maximum=1000, integer=True)
    if "worker_class" in s and s["worker_class"] not in WORKER_CLASSES:
        raise ConfigError(
            f"{where}worker_class", s["worker_class"], f"one of {', '.join(map(repr, WORKER_CLASSES))}"
        )
    if "concurrency" in s:
        require_number(
            f"{where}concurrency", s["concurrency"], minimum=1, maximum=MAX_CONCURRENCY, integer=True
        )
    return s


def validate_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise ConfigError("config", config, "a dict")
    for key in config:
        if key not in DEFAULT_CONFIG:
            raise unknown_key_error("", key, DEFAULT_CONFIG)
    merged = {**DEFAULT_CONFIG, **config}
    merged.update(validate_queue_settings("", {k: merged[k] for k in QUEUE_DEFAULTS}))
    queues = merged["queues"]
    if not isinstance(queues, Mapping):
        raise ConfigError("queues", queues, "a dict of queue name -> settings")
    for qname, qsettings in queues.items():
        if not isinstance(qname, str) or not qname:
            raise ConfigError("queues", qname, "non-empty string queue names")
        validate_queue_settings(f"queues.{qname}.", qsettings)
    require_number("reaper_s", merged["reaper_s"], minimum=0, strict=True)
    require_number("max_lost", merged["max_lost"], minimum=1, integer=True)
    require_number("unique_sweep_rest_s", merged["unique_sweep_rest_s"], minimum=0)
    require_number("dlq_max", merged["dlq_max"], minimum=1, integer=True, allow_none=True)
    require_number("result_ttl", merged["result_ttl"], minimum=0, strict=True, allow_none=True)
    require_number("history_limit", merged["history_limit"], minimum=1, integer=True, allow_none=True)
    require_number("shutdown_grace_s", merged["shutdown_grace_s"], minimum=0)
    require_number("cancel_grace_s", merged["cancel_grace_s"], minimum=0, allow_none=True)
    require_number("processes", merged["processes"], minimum=0, integer=True)
    require_number("memory_limit_mb", merged["memory_limit_mb"], minimum=1, integer=True, allow_none=True)
    require_number("max_payload_size", merged["max_payload_size"], minimum=1, integer=True)
    if not isinstance(merged["scheduler"], bool):
        raise ConfigError("scheduler", merged["scheduler"], "True or False")
    require_number("scheduler_lock_s", merged["scheduler_lock_s"], minimum=0, strict=True)
    if merged["max_payload_size"] < MIN_PAYLOAD_SIZE:
        raise ConfigError(
            "max_payload_size", merged["max_payload_size"],
            f"an int >= {MIN_PAYLOAD_SIZE} (bytes; a stored frame's header alone takes up to"
            f" {MIN_PAYLOAD_SIZE})",
        )
    check_lease_settings(merged["lease_s"], merged["heartbeat_s"])
    return merged
