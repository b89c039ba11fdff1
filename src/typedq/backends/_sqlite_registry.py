"""The SQLite backend's retired-workers totals (see ``_worker_totals``).

They live in the ``counters`` table (schema 7), one row per figure, named
:data:`PREFIX` + the figure's name of ``_worker_totals.flat_figures``. A fold adds to
each row in place (``ON CONFLICT ... value + excluded.value``), in the transaction that
removes the worker rows it folds. ``counters.value`` holds counts and sums alike (SQLite
keeps a REAL that is not a whole number as it is).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from typedq.backends._sqlite_db import Connections
from typedq.backends._sqlite_driver import sqlite3
from typedq.backends._worker_totals import flat_figures, from_flat

__all__ = ["PREFIX", "fold_metrics", "fold_removed", "retired_metrics"]

#: The start of the ``counters`` names of the retired-workers totals.
PREFIX: Final = "retired_metrics:"
_ADD: Final = (
    "INSERT INTO counters (queue, name, value) VALUES (?, ?, ?)"
    " ON CONFLICT (queue, name) DO UPDATE SET value = value + excluded.value"
)
# Every name starting with PREFIX (';' is the character after ':').
_READ: Final = "SELECT name, value FROM counters WHERE queue = ? AND name >= ? AND name < ?"


def fold_metrics(conn: sqlite3.Connection, queue: str, metrics: Mapping[str, Any]) -> None:
    """Add ``metrics`` (``WorkerInfo.metrics`` shape) to ``queue``'s totals (in the
    caller's transaction)."""
    rows = [(queue, PREFIX + name, value) for name, value in flat_figures(metrics)]
    if rows:
        conn.executemany(_ADD, rows)


def fold_removed(conn: sqlite3.Connection, queue: str, removed: list[tuple[str]]) -> None:
    """Fold the figures of worker rows just deleted (their ``info``, ``RETURNING``)."""
    for (info,) in removed:
        try:
            metrics = json.loads(info).get("metrics") or {}
        except (ValueError, AttributeError):
            continue  # an entry typedq cannot read counts nothing
        fold_metrics(conn, queue, metrics)


def retired_metrics(db: Connections, queue: str) -> dict[str, Any]:
    """``queue``'s retired-workers totals (``WorkerInfo.metrics`` shape)."""
    rows = db.read(_READ, (queue, PREFIX, PREFIX[:-1] + ";"))
    return from_flat((name[len(PREFIX):], value) for name, value in rows)
