"""Private: the submit options that become job metadata (unique keys, a job's own retry
policy), shared by ``JobQueueManager.submit`` and the typed API."""

from __future__ import annotations

from typing import Any, Final

from typedq.backends._unique import UNIQUE_META, unique_metadata
from typedq.errors import ConfigError, InvalidJobError
from typedq.retry import RETRY_META, FailureRules, RetryPolicy

__all__ = ["ON_CONFLICT", "check_on_conflict", "submit_metadata"]

#: What a submit whose unique key is held does: return the holder's id, or raise.
ON_CONFLICT: Final = ("return", "raise")


def check_on_conflict(value: object) -> str:
    """Return ``value`` if it is ``"return"`` or ``"raise"``.

    Raises:
        InvalidJobError: naming ``on_conflict``.
    """
    if value not in ON_CONFLICT:
        raise InvalidJobError(
            "on_conflict", value, "'return' (the holder's id) or 'raise' (DuplicateJobError)"
        )
    return str(value)


def submit_metadata(fields: dict[str, Any], rules: FailureRules | None) -> dict[str, Any]:
    """Take ``unique_key``, ``unique_for``, ``unique_states`` and ``retry`` out of the
    submit ``fields`` and return the metadata entries they ask for.

    A policy's ``max_retries`` (the job's own, else its type's) becomes the job's
    ``max_retries`` unless ``fields`` gives one.

    Raises:
        InvalidJobError: a bad unique option (naming it), or ``unique_for`` /
            ``unique_states`` without ``unique_key``.
        ConfigError: ``retry`` is not a ``RetryPolicy``, or one with a ``delay_fn``.
    """
    extra: dict[str, Any] = {}
    key = fields.pop("unique_key", None)
    unique_for = fields.pop("unique_for", None)
    states = fields.pop("unique_states", None)
    if key is not None:
        extra[UNIQUE_META] = unique_metadata(key, unique_for=unique_for, states=states)
    elif unique_for is not None or states is not None:
        name = "unique_for" if unique_for is not None else "unique_states"
        given = unique_for if unique_for is not None else states
        raise InvalidJobError(name, given, "given with a unique_key")
    policy = fields.pop("retry", None)
    if policy is not None:
        if not isinstance(policy, RetryPolicy):
            raise ConfigError("retry", policy, "a RetryPolicy")
        extra[RETRY_META] = policy.to_data()
    elif rules is not None:
        policy = rules.retry_policy
    if policy is not None and policy.max_retries is not None:
        fields.setdefault("max_retries", policy.max_retries)
    return extra
