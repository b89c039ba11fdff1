"""The process pool under deaths during start-up (issue: a pool gave up after 4 kills).

A child killed by a signal before it is ready did not fail to start: the pool replaces it
(with a jittered, capped exponential backoff) however often it happens. Only children
that exit on their own before they are ready stop the pool, after 3 in a row.

The children run ``tests.reliability.test_process_workers:make_app`` with
``TYPEDQ_TEST_HOLD`` (start-up waits for a file ``go``, so a kill is sure to land before
the child is ready) or ``TYPEDQ_TEST_EXIT_AT_START`` (the child exits with that code).
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from tests.helpers import wait_until
from tests.reliability.pool import Pool, enqueue_work

from typedq.backends.base import Queue
from typedq.job import JobStatus

pytestmark = pytest.mark.chaos

#: More than the 3 start-up failures in a row that stop a pool.
KILLS = 8


@pytest.mark.timeout(90)
def test_children_killed_during_start_up_are_replaced_until_one_lives(
    tmp_path: Path, backend: str, queue: Queue
) -> None:
    killed: set[int] = set()
    hold = {"TYPEDQ_TEST_HOLD": "1"}
    with Pool(tmp_path, backend, "--processes", "2", "--concurrency", "1", env=hold) as pool:
        while len(killed) < KILLS:
            fresh: list[int] = []

            def new_child(found: list[int] = fresh) -> bool:
                found[:] = [pid for pid in pool.worker_pids() if pid not in killed]
                return bool(found) or pool.proc.poll() is not None

            wait_until(new_child, timeout=20.0, message="a new worker process starting")
            assert pool.proc.poll() is None, f"the pool gave up after {len(killed)} kills:\n{pool.log}"
            for pid in fresh:
                os.kill(pid, signal.SIGKILL)  # still holding in start-up: not ready
                killed.add(pid)
        # Let the next children start: the pool must be serving jobs.
        (tmp_path / "go").touch()
        ids = enqueue_work(queue, [{"s": 0.0}] * 20)
        wait_until(
            lambda: all(queue.get_job(i).status is JobStatus.COMPLETED for i in ids),
            timeout=30.0, message="jobs completed after the kills",
        )
        assert pool.proc.poll() is None
        assert pool.stop() == 0, pool.log
    log = pool.log
    replaced = re.findall(r"was killed by SIGKILL before it was ready; starting a replacement in", log)
    assert len(replaced) >= KILLS
    assert "exit before they are ready" not in log


@pytest.mark.timeout(60)
def test_children_that_exit_on_their_own_before_ready_stop_the_pool(tmp_path: Path, backend: str) -> None:
    with Pool(tmp_path, backend, "--processes", "1", env={"TYPEDQ_TEST_EXIT_AT_START": "5"}) as pool:
        code = pool.proc.wait(30)
    assert code != 0, pool.log
    assert "worker processes exit before they are ready (exit code 5)" in pool.log
    # The first two are replaced (after a backoff), the third stops the pool.
    assert len(re.findall(r"exited with code 5 before it was ready", pool.log)) == 2


def test_respawn_delay_is_jittered_exponential_and_capped() -> None:
    from typedq.process import RESPAWN_BASE_S, RESPAWN_MAX_S, respawn_delay

    for deaths in range(1, 40):
        ceiling = min(RESPAWN_MAX_S, RESPAWN_BASE_S * 2 ** (deaths - 1))
        delays = [respawn_delay(deaths) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (deaths, delays)
        assert len(set(delays)) > 1  # jittered
    assert respawn_delay(1000) <= RESPAWN_MAX_S
