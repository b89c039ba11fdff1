"""Worker identity: ids per incarnation, and the owner-liveness check backends rely on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from tests.helpers import wait_until

from typedq._identity import HOST, new_worker_id, owner_alive, parse_worker_id, process_start_time


def test_ids_are_unique_and_parse_back() -> None:
    a, b = new_worker_id("w"), new_worker_id("w")
    assert a != b
    assert parse_worker_id(a) == (HOST, os.getpid(), process_start_time(os.getpid()))


def test_this_process_is_alive_and_foreign_ids_cannot_be_told() -> None:
    assert owner_alive(new_worker_id()) is True
    assert owner_alive(None) is None
    assert owner_alive("plain-name") is None
    assert owner_alive(f"w@another-host:{os.getpid()}:1:ab") is None


def test_a_reused_pid_with_another_start_time_is_not_the_owner() -> None:
    pid = os.getpid()
    assert owner_alive(f"w@{HOST}:{pid}:{process_start_time(pid) + 1}:ab") is False


@pytest.mark.timeout(10)
def test_a_zombie_owner_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        worker_id = f"w@{HOST}:{child.pid}:{process_start_time(child.pid)}:ab"
        assert owner_alive(worker_id) is True
        os.kill(child.pid, signal.SIGKILL)
        # Not reaped yet: the pid and start time are still there, in state Z.
        wait_until(lambda: owner_alive(worker_id) is False, timeout=5.0)
    finally:
        child.kill()
        child.wait()
    assert owner_alive(worker_id) is False


@pytest.mark.timeout(20)
def test_typedq_hostname_overrides_the_host_and_a_bad_one_is_refused() -> None:
    code = (
        "from typedq._identity import HOST, new_worker_id, parse_worker_id; "
        "print(HOST, parse_worker_id(new_worker_id())[0])"
    )
    env = {k: v for k, v in os.environ.items() if k != "TYPEDQ_HOSTNAME"}
    done = subprocess.run([sys.executable, "-c", code], env={**env, "TYPEDQ_HOSTNAME": "host-a"},
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["host-a", "host-a"]
    bad = subprocess.run([sys.executable, "-c", code], env={**env, "TYPEDQ_HOSTNAME": "a:b"},
                         capture_output=True, text=True, check=False)
    assert bad.returncode != 0
    assert "ConfigError: TYPEDQ_HOSTNAME='a:b' is invalid" in bad.stderr
