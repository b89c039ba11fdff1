"""How SQLite bulk enqueue scales with the number of jobs already in the file.

Run: ``.venv/bin/python benchmarks/bench_sqlite_sweep.py [--runs 3] [--with-1m]``. For each
n in 1,000, 10,000, 100,000 (and 1,000,000 with ``--with-1m``), each on a fresh file, in
batches of 1,000 per transaction, the median jobs/s of ``--runs`` rounds of:

* typedq ``enqueue_many``, default ids (random UUID4 strings, as the specification asks);
* typedq ``enqueue_many``, time-ordered ids given by the caller (``"{n:012d}"``);
* raw ``executemany`` of the same rows on typedq's schema (``SQL.insert_into(FRESH_COLUMNS)``,
  random UUID4 ids): the floor of typedq's SQL;
* raw ``executemany`` on a minimal table with a unique id index (random UUID4 ids);

plus the WAL pages one 1,000-row commit wrote at the end of the run (typedq, random ids),
which is what grows with n: each random id lands on a random leaf page of the
``(queue, job_id)`` unique index, so once the index has more leaves than a batch has rows,
nearly every row of a commit dirties its own page, and the WAL (and every checkpoint)
writes ~900 pages per 1,000 rows instead of ~60 for ordered ids.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_sqlite import make_jobs, payload, raw_bulk_insert, raw_schema_bulk_insert
from typedq.backends._sqlite_driver import DRIVER, sqlite3
from typedq.backends.sqlite import SQLiteQueue
from typedq.job import Job

BATCH = 1000


def _enqueue_many(path: Path, jobs: list[Job]) -> tuple[int, float, int]:
    queue = SQLiteQueue(path, name="bench")
    wal = Path(f"{path}-wal")
    start = time.perf_counter()
    for lo in range(0, len(jobs) - BATCH, BATCH):
        queue.enqueue_many(jobs[lo : lo + BATCH])
    elapsed = time.perf_counter() - start
    # Untimed: empty the WAL, so its size after the last commit is what that commit wrote
    # (a WAL frame is a 24-byte header and a 4,096-byte page).
    side = sqlite3.connect(path)
    side.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    side.close()
    start = time.perf_counter()
    queue.enqueue_many(jobs[len(jobs) - BATCH :])
    elapsed += time.perf_counter() - start
    pages = wal.stat().st_size // 4120
    queue.close()
    return len(jobs), elapsed, pages


def typedq_random(path: Path, n: int) -> tuple[int, float, int]:
    return _enqueue_many(path, make_jobs(n))


def typedq_ordered(path: Path, n: int) -> tuple[int, float, int]:
    jobs = [Job(job_id=f"{i:012d}", job_type="bench", payload=payload(i)) for i in range(n)]
    return _enqueue_many(path, jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--with-1m", action="store_true", help="also n = 1,000,000 (minutes)")
    args = parser.parse_args()
    sizes = [1_000, 10_000, 100_000] + ([1_000_000] if args.with_1m else [])
    print(
        f"SQLite {sqlite3.sqlite_version} (module {DRIVER}), batches of {BATCH:,}, "
        f"medians of {args.runs} runs, files in {tempfile.gettempdir()}, {os.cpu_count()} CPUs"
    )
    header = (
        f"{'n':>9}  {'typedq random ids':>17}  {'typedq ordered ids':>18}  "
        f"{'raw, typedq schema':>18}  {'raw, minimal':>12}  {'WAL pages/commit':>16}"
    )
    print(header)
    for n in sizes:
        rates: dict[str, list[float]] = {k: [] for k in ("random", "ordered", "schema", "minimal")}
        pages: list[int] = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                count, seconds, last = typedq_random(Path(tmp) / "a.db", n)
                rates["random"].append(count / seconds)
                pages.append(last)
                count, seconds, _ = typedq_ordered(Path(tmp) / "b.db", n)
                rates["ordered"].append(count / seconds)
                raws: list[tuple[str, Callable[[Path, int], tuple[int, float]]]] = [
                    ("schema", raw_schema_bulk_insert), ("minimal", raw_bulk_insert)
                ]
                for name, scenario in raws:
                    count, seconds = scenario(Path(tmp) / f"{name}.db", n)
                    rates[name].append(count / seconds)
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(
            f"{n:>9,}  {med['random']:>17,.0f}  {med['ordered']:>18,.0f}  "
            f"{med['schema']:>18,.0f}  {med['minimal']:>12,.0f}  {statistics.median(pages):>16,.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
