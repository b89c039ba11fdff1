"""Stored schedules: what a periodic job is (its *definition*) and where it stands (its
*state*), as every backend keeps them beside a queue's jobs.

A :class:`ScheduleEntry` is plain, JSON-safe data; a backend stores its definition as
canonical JSON (:meth:`ScheduleEntry.definition_json`) and its state (``next_run_at``,
``last_run_at``, ``paused``) in fields of their own, so that the scheduler's
compare-and-set on ``next_run_at`` never rewrites the definition. The rules that turn
a definition into fire times live above the backends (``typedq._cron``,
``typedq.scheduler``).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from typedq.errors import ConfigError

__all__ = ["MAX_SCHEDULE_NAME", "STATE_FIELDS", "ScheduleEntry", "check_schedule_name", "stored_definition"]

#: The longest schedule name: a slot's job id is ``<name>@<UTC stamp>`` (at most 128).
MAX_SCHEDULE_NAME: Final = 100
_NAME_RE: Final = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_SCHEDULE_NAME}}}")
#: The fields that say where a schedule stands, not what it is.
STATE_FIELDS: Final = ("next_run_at", "last_run_at", "paused")


def check_schedule_name(name: object) -> str:
    """Return ``name`` if it is a valid schedule name.

    Raises:
        ConfigError: naming ``name``: not 1-100 letters, digits or ``_ . : -``.
    """
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise ConfigError(
            "name", name, f"a schedule name of 1 to {MAX_SCHEDULE_NAME} letters, digits or _ . : -"
        )
    return name


@dataclass
class ScheduleEntry:
    """A periodic job as stored: its definition, then its state.

    Definition: ``name`` (unique in its queue), ``job_type``, the rule (``cron`` in
    ``tz``, or ``every_s``), ``payload`` (JSON-safe), ``options`` (``priority``,
    ``max_retries``, ``timeout_seconds``, ``metadata`` of each job it makes),
    ``catch_up`` and ``dst``. State: ``next_run_at`` (the next slot to fire, epoch
    seconds; None when the rule never fires again), ``last_run_at`` (the last slot
    fired), ``paused``.
    """

    name: str
    job_type: str
    cron: str | None = None
    every_s: float | None = None
    tz: str = "UTC"
    payload: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    catch_up: str = "latest"
    dst: str = "once"
    next_run_at: float | None = None
    last_run_at: float | None = None
    paused: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScheduleEntry:
        """Rebuild an entry from :meth:`to_dict` data."""
        return cls(**data)

    def definition(self) -> dict[str, Any]:
        """What the schedule is: every field but :data:`STATE_FIELDS`."""
        data = self.to_dict()
        for name in STATE_FIELDS:
            del data[name]
        return data

    def definition_json(self) -> str:
        """The definition as canonical JSON (sorted keys, no spaces): equal definitions
        give equal text.

        Raises:
            ConfigError: naming ``payload``: the payload or options are not JSON-safe.
        """
        try:
            return json.dumps(self.definition(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                "payload", self.payload, f"JSON-safe data (dicts, lists, str, int, float, bool, None): {exc}"
            ) from None

    @classmethod
    def from_stored(
        cls, definition: str, next_run_at: float | None, last_run_at: float | None, paused: bool
    ) -> ScheduleEntry:
        """An entry from its stored definition JSON and state."""
        data = json.loads(definition)
        return cls(**data, next_run_at=next_run_at, last_run_at=last_run_at, paused=paused)


def stored_definition(entry: ScheduleEntry) -> str:
    """Check what ``put_schedule`` is given; return the definition JSON to store.

    Raises:
        ConfigError: a bad name, or a payload or options that are not JSON-safe.
    """
    check_schedule_name(entry.name)
    return entry.definition_json()
