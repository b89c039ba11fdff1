"""The retired-workers totals of a worker registry.

A worker counts what it did in its registry entry (``WorkerInfo.metrics``, see
``typedq._worker_metrics``). When an entry is removed (the worker unregisters on a clean
stop, or a dead entry is forgotten after ``WORKER_RETENTION_S``), its figures are added
to the queue's retired-workers totals in the same atomic step, so every worker's figures
are counted exactly once: in its entry while it has one, in the totals after. The
exporter (``typedq.metrics``) sums the entries and the totals.

:func:`add_metrics` sums two such figures of the shape ``{job_type: {name: number or
list of numbers}}``: numbers are added, lists added element by element (histogram
buckets); anything else is skipped (an entry of a newer version keeps what it can).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = ["add_metrics", "flat_figures", "from_flat"]

#: The most histogram buckets :func:`from_flat` rebuilds (a bound on what it allocates).
_MAX_BUCKETS: Final = 1000


def add_metrics(into: dict[str, Any], metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Add ``metrics`` to ``into`` (changed in place and returned)."""
    for job_type, entry in metrics.items():
        if not isinstance(entry, Mapping):
            continue
        total = into.setdefault(job_type, {})
        for name, value in entry.items():
            if isinstance(value, list):
                have = total.get(name)
                if not isinstance(have, list):
                    have = total[name] = []
                have.extend([0] * (len(value) - len(have)))
                for index, n in enumerate(value):
                    if _is_number(n):
                        have[index] += n
            elif _is_number(value):
                have_n = total.get(name, 0)
                total[name] = (have_n if _is_number(have_n) else 0) + value
    return into


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def flat_figures(metrics: Mapping[str, Any]) -> list[tuple[str, int | float]]:
    """``metrics`` as ``(name, value)`` pairs, one per non-zero figure, for a store that
    adds to each in place (SQLite's ``counters``, a Redis hash): the name is the JSON list
    ``[job type, figure]`` (a count or a sum) or ``[job type, figure, bucket index]``."""
    out: list[tuple[str, int | float]] = []
    for job_type, entry in add_metrics({}, metrics).items():
        for figure, value in entry.items():
            if isinstance(value, list):
                out += ((json.dumps([job_type, figure, i]), n) for i, n in enumerate(value) if n)
            elif value:
                out.append((json.dumps([job_type, figure]), value))
    return out


def from_flat(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Rebuild figures from :func:`flat_figures` pairs (their values summed as stored);
    a name that is not such a list is skipped."""
    totals: dict[str, Any] = {}
    for name, raw in pairs:
        try:
            key = json.loads(name)
            value = float(raw)
        except (ValueError, TypeError):
            continue
        if not isinstance(key, list) or len(key) not in (2, 3) or not isinstance(key[-1], str | int):
            continue
        number: int | float = int(value) if value.is_integer() else value
        entry = totals.setdefault(str(key[0]), {})
        if len(key) == 2:
            entry[str(key[1])] = number
        elif isinstance(key[2], int) and 0 <= key[2] < _MAX_BUCKETS:
            buckets = entry.setdefault(str(key[1]), [])
            buckets.extend([0] * (key[2] + 1 - len(buckets)))
            buckets[key[2]] = number
    return totals
