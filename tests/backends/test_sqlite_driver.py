"""The sqlite3 module the SQLite backend uses: the standard library's, or pysqlite3's
(``typedq[sqlite]``, a newer SQLite without the WAL-reset bug) when installed.

The conformance suite's SQLite half runs here under the driver the rest of the run does
not use, so both are proven whenever pysqlite3 is installed.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3 as stdlib_sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from typedq.backends import _sqlite_driver as driver
from typedq.backends._sqlite_schema import has_wal_reset_bug

REPO = Path(__file__).resolve().parents[2]
HAS_PYSQLITE3 = importlib.util.find_spec("pysqlite3") is not None
needs_pysqlite3 = pytest.mark.skipif(not HAS_PYSQLITE3, reason="pysqlite3 is not installed (typedq[sqlite])")


def _pick(value: str) -> subprocess.CompletedProcess[str]:
    code = (
        "from typedq.backends._sqlite_driver import DRIVER, sqlite3;"
        "print(DRIVER, sqlite3.sqlite_version)"
    )
    env = {**os.environ, driver.DRIVER_ENV: value}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def test_the_standard_library_is_used_when_asked() -> None:
    done = _pick("sqlite3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["sqlite3", stdlib_sqlite3.sqlite_version]


def test_an_unknown_driver_name_is_a_config_error_naming_the_choices() -> None:
    done = _pick("sqlean")
    assert done.returncode != 0
    assert "ConfigError" in done.stderr
    assert "TYPEDQ_SQLITE_DRIVER='sqlean'" in done.stderr
    assert "auto, sqlite3, pysqlite3" in done.stderr


@needs_pysqlite3
def test_auto_takes_pysqlite3_when_its_sqlite_is_newer() -> None:
    dbapi2 = importlib.import_module("pysqlite3.dbapi2")
    done = _pick("auto")
    assert done.returncode == 0, done.stderr
    newer = tuple(dbapi2.sqlite_version_info) > stdlib_sqlite3.sqlite_version_info
    assert done.stdout.split()[0] == ("pysqlite3" if newer else "sqlite3")


@needs_pysqlite3
def test_pysqlite3_has_no_wal_reset_bug() -> None:
    dbapi2 = importlib.import_module("pysqlite3.dbapi2")
    assert not has_wal_reset_bug(tuple(dbapi2.sqlite_version_info))


def _modules() -> list[ModuleType]:
    found = [stdlib_sqlite3]
    if HAS_PYSQLITE3:
        found.append(importlib.import_module("pysqlite3.dbapi2"))
    return found


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
def test_a_unique_violation_is_told_from_other_constraints(module: ModuleType) -> None:
    conn = module.connect(":memory:")
    try:
        conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT UNIQUE, c TEXT NOT NULL)")
        conn.execute("INSERT INTO t VALUES (1, 'x', 'c')")
        with pytest.raises(module.IntegrityError) as unique:
            conn.execute("INSERT INTO t VALUES (2, 'x', 'c')")
        with pytest.raises(module.IntegrityError) as not_null:
            conn.execute("INSERT INTO t VALUES (3, 'y', NULL)")
    finally:
        conn.close()
    assert driver.is_unique_violation(unique.value)
    assert not driver.is_unique_violation(not_null.value)


#: The fast tier runs these under the other driver; the slow tier runs the whole suite.
_SAMPLE = ("test_enqueue.py", "test_leases.py", "test_complete_many.py", "test_dependencies.py")


def _run_suite_under_the_other_driver(paths: list[Path]) -> None:
    other = "sqlite3" if driver.DRIVER == "pysqlite3" else "pysqlite3"
    env = {**os.environ, driver.DRIVER_ENV: other}
    # The driver is what differs: the base SQLite variant and every SQLite test; the codec
    # variants (encoding happens before any SQL) run under the default driver only.
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
         "-k", "sqlite and not codec", *map(str, paths)],
        capture_output=True, text=True, timeout=280, check=False, env=env, cwd=REPO,
    )
    tail = done.stdout[-2000:]
    assert done.returncode == 0, tail
    assert " passed" in tail
    assert " failed" not in tail


@needs_pysqlite3
@pytest.mark.timeout(120)
def test_sqlite_tests_and_a_sample_of_the_suite_pass_under_the_other_driver() -> None:
    conformance = REPO / "tests" / "conformance"
    _run_suite_under_the_other_driver(
        [REPO / "tests" / "backends" / "test_sqlite.py", *(conformance / name for name in _SAMPLE)]
    )


@needs_pysqlite3
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_sqlite_conformance_suite_passes_under_the_other_driver() -> None:
    _run_suite_under_the_other_driver([REPO / "tests" / "conformance"])
