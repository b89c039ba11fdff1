"""Private: unique keys, the part every backend shares.

A job asks for a unique key through its metadata, under :data:`UNIQUE_META`::

    {"key": "report:2026-12", "for_s": 3600.0, "states": ["PENDING", "RUNNING"]}

``for_s`` (None: no time limit) and ``states`` (the statuses in which the job holds the
key; default :data:`DEFAULT_STATES`) are optional. The manager writes it from
``submit(unique_key=...)`` and the job type's ``unique=`` / ``unique_fields=``; a caller of
the queue protocol may write it too.

Each backend keeps one entry per (queue, key): the holder's id, the time the hold ends
(``until``, the enqueue time plus ``for_s``; None for none) and the holder's states. The
enqueue transition (one lock, one SQL transaction, one script) reads the entry and the
holder's current status: the key is *held* while the holder exists, its status is one of
its states and ``until`` has not passed. A held key refuses the new job with
:class:`~typedq.errors.DuplicateJobError` naming the holder; a free one is taken in the
same transition. The key is therefore released by any transition that moves the holder
out of its states (completion, death, cancellation, deletion), with no bookkeeping in
those transitions: the next enqueue of the key sees it. An entry that no longer holds its
key is removed by the next enqueue of the key (which replaces it) or by a sweep
(``Queue.sweep_unique_keys``, which the reaper runs in bounded batches): a sweep examines
the entries from a cursor on and deletes, in one transition, those not held, so a key is
never swept while its holder holds it, and a job that returns to its states later (a dead
job replayed) holds its key again only until the sweep has seen it out of them.

A job takes its key only when it is enqueued in one of its states (a PENDING job, as
submitted; an imported COMPLETED job with the default states does not).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from typedq.errors import InvalidJobError
from typedq.job import Job, JobStatus

__all__ = [
    "DEFAULT_STATES",
    "MAX_UNIQUE_KEY",
    "UNIQUE_META",
    "UniqueSpec",
    "UniqueSweep",
    "bad_cursor",
    "check_sweep",
    "held",
    "parse_states",
    "unique_metadata",
    "unique_of",
]

#: The metadata key of a job's unique-key request.
UNIQUE_META: Final = "typedq.unique"
#: The statuses a job holds its key in unless told otherwise.
DEFAULT_STATES: Final = (JobStatus.PENDING, JobStatus.RUNNING)
#: The longest unique key, in characters.
MAX_UNIQUE_KEY: Final = 1000

_FIELD: Final = f"metadata[{UNIQUE_META!r}]"


@dataclass(frozen=True, slots=True)
class UniqueSpec:
    """A job's unique key: the key, how long it may hold it, and in which statuses."""

    key: str
    for_s: float | None
    states: tuple[str, ...]

    def until(self, now: float) -> float | None:
        """When a hold taken at ``now`` ends by time (None: only by status)."""
        return None if self.for_s is None else now + self.for_s

    @property
    def states_text(self) -> str:
        """The states as stored: status names joined by commas."""
        return ",".join(self.states)


class UniqueSweep(NamedTuple):
    """What one :meth:`~typedq.backends.base.Queue.sweep_unique_keys` call did: the entries
    it removed, and the cursor to pass to the next call ('' once it reached the end)."""

    removed: int
    cursor: str


def check_sweep(cursor: object, limit: object) -> None:
    """Check the arguments of a sweep (the cursor's form is each backend's own).

    Raises:
        InvalidJobError: ``cursor`` is not a string, or ``limit`` not an int >= 1.
    """
    if not isinstance(cursor, str):
        raise bad_cursor(cursor)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidJobError("limit", limit, "an int >= 1")


def bad_cursor(cursor: object) -> InvalidJobError:
    """The error naming ``cursor``, one this backend never returned."""
    return InvalidJobError("cursor", cursor, "'' (start) or the cursor the previous sweep returned")


def held(status: str | None, until: float | None, states: Iterable[str], now: float) -> bool:
    """Whether an entry still holds its key: its job exists (``status`` is not None), is
    in one of ``states``, and ``until`` has not passed."""
    return status is not None and status in states and (until is None or now < until)


def _states(given: object, field: str) -> tuple[str, ...]:
    allowed = ", ".join(s.value for s in JobStatus)
    if isinstance(given, str) or not isinstance(given, Iterable):
        raise InvalidJobError(field, given, f"a non-empty list of statuses from {allowed}")
    names: list[str] = []
    for item in given:
        try:
            name = JobStatus(item).value
        except ValueError:
            raise InvalidJobError(field, given, f"a non-empty list of statuses from {allowed}") from None
        if name not in names:
            names.append(name)
    if not names:
        raise InvalidJobError(field, given, f"a non-empty list of statuses from {allowed}")
    return tuple(names)


def _key(given: object, field: str) -> str:
    if type(given) is not str or not given or len(given) > MAX_UNIQUE_KEY:
        raise InvalidJobError(field, given, f"a non-empty string of at most {MAX_UNIQUE_KEY} characters")
    if "\t" in given or "\n" in given:
        raise InvalidJobError(field, given, "a string without tabs or newlines")
    return given


def _for_s(given: object, field: str) -> float | None:
    if given is None:
        return None
    seconds = getattr(given, "total_seconds", None)
    value: object = seconds() if callable(seconds) else given
    if (
        type(value) not in (int, float)
        or not math.isfinite(value)  # type: ignore[arg-type]  # checked to be int or float
        or value <= 0  # type: ignore[operator]  # checked to be int or float
    ):
        raise InvalidJobError(field, given, "None, or a number of seconds > 0 (or a timedelta)")
    return float(value)  # type: ignore[arg-type]  # checked to be int or float


def unique_metadata(key: object, *, unique_for: object = None, states: object = None) -> dict[str, Any]:
    """The metadata entry asking for ``key``, validated (what ``submit`` writes).

    Args:
        key: the unique key, a non-empty string.
        unique_for: seconds (or a ``timedelta``) after which the key is released even if
            the job still runs; None for no limit.
        states: the statuses in which the job holds its key (default PENDING, RUNNING).

    Raises:
        InvalidJobError: naming ``unique_key``, ``unique_for`` or ``unique_states``.
    """
    spec = UniqueSpec(
        key=_key(key, "unique_key"),
        for_s=_for_s(unique_for, "unique_for"),
        states=tuple(s.value for s in DEFAULT_STATES) if states is None else _states(states, "unique_states"),
    )
    return {"key": spec.key, "for_s": spec.for_s, "states": list(spec.states)}


def unique_of(job: Job) -> UniqueSpec | None:
    """The unique key ``job`` takes when enqueued, or None (none asked for, or the job is
    not in one of its states).

    Raises:
        InvalidJobError: the metadata entry is malformed (the message names it).
    """
    entry = job.metadata.get(UNIQUE_META) if job.metadata else None
    if entry is None:
        return None
    if not isinstance(entry, dict) or "key" not in entry or not set(entry) <= {"key", "for_s", "states"}:
        raise InvalidJobError(_FIELD, entry, "a dict with 'key' and optionally 'for_s' and 'states'")
    states_given = entry.get("states")
    spec = UniqueSpec(
        key=_key(entry["key"], f"{_FIELD}['key']"),
        for_s=_for_s(entry.get("for_s"), f"{_FIELD}['for_s']"),
        states=(
            tuple(s.value for s in DEFAULT_STATES)
            if states_given is None
            else _states(states_given, f"{_FIELD}['states']")
        ),
    )
    if job.status.value not in spec.states:
        return None
    return spec


def parse_states(text: str) -> tuple[str, ...]:
    """The states of a stored entry (``states_text``)."""
    return tuple(text.split(","))
