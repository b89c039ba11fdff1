"""Which ``sqlite3`` module the SQLite backend uses: the standard library's or pysqlite3's.

Python's ``sqlite3`` is linked against the system's SQLite library; Debian 12's is 3.40.1,
which has the WAL-reset bug (fixed in 3.51.3). The optional extra ``typedq[sqlite]``
installs ``pysqlite3``, whose wheel bundles a newer SQLite (3.53.4 in pysqlite3 0.6.1)
behind the same DB-API interface. typedq then uses it, when its SQLite is newer than the
standard library's. ``TYPEDQ_SQLITE_DRIVER`` overrides the choice, read once at import:

* ``auto`` (the default): pysqlite3 when installed and newer, else the standard library;
* ``sqlite3``: always the standard library;
* ``pysqlite3``: always pysqlite3 (a :class:`~typedq.errors.ConfigError` when missing).

Every backend module takes ``sqlite3`` from here, so its exception classes, constants and
connections all come from one module.
"""

from __future__ import annotations

import importlib
import os
import sqlite3 as _stdlib
from types import ModuleType
from typing import TYPE_CHECKING, Final

from typedq.errors import ConfigError

__all__ = ["DRIVER", "DRIVERS", "DRIVER_ENV", "is_unique_violation", "sqlite3"]

#: The environment variable that picks the driver.
DRIVER_ENV: Final = "TYPEDQ_SQLITE_DRIVER"
#: Its allowed values.
DRIVERS: Final = ("auto", "sqlite3", "pysqlite3")

_SQLITE_CONSTRAINT: Final = 19
_SQLITE_CONSTRAINT_UNIQUE: Final = 2067


def _choose(wanted: str) -> ModuleType:
    if wanted not in DRIVERS:
        raise ConfigError(DRIVER_ENV, wanted, f"one of {', '.join(DRIVERS)}")
    if wanted == "sqlite3":
        return _stdlib
    try:
        module = importlib.import_module("pysqlite3.dbapi2")
    except ImportError:
        if wanted == "pysqlite3":
            raise ConfigError(
                DRIVER_ENV, wanted, "pysqlite3 installed: pip install 'typedq[sqlite]'"
            ) from None
        return _stdlib
    if wanted == "auto" and tuple(module.sqlite_version_info) <= _stdlib.sqlite_version_info:
        return _stdlib
    return module


if TYPE_CHECKING:
    import sqlite3
else:
    sqlite3 = _choose(os.environ.get(DRIVER_ENV, "auto"))

#: The name of the module in use: ``"sqlite3"`` or ``"pysqlite3"``.
DRIVER: Final = "sqlite3" if sqlite3 is _stdlib else "pysqlite3"


def is_unique_violation(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "UNIQUE constraint failed".

    The standard library turns on extended result codes (``SQLITE_CONSTRAINT_UNIQUE``,
    2067); pysqlite3 reports the primary code (``SQLITE_CONSTRAINT``, 19) for every
    constraint, so there the message tells a unique violation from the others.
    """
    code = int(getattr(exc, "sqlite_errorcode", 0) or 0)
    if code == _SQLITE_CONSTRAINT_UNIQUE:
        return True
    return code == _SQLITE_CONSTRAINT and str(exc).startswith("UNIQUE constraint failed")
