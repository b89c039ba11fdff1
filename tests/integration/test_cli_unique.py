"""``typedq enqueue`` with unique keys: ``--unique-key``, ``--unique-for`` (a duration, as
``purge --older-than`` reads them) and ``--on-conflict`` (``return`` or ``raise``), and
their JSON-job forms. A held key adds nothing and names the holder; bad values are one
``Error:`` line naming the option, exit 2.
"""

from __future__ import annotations

import pytest
from tests.integration import test_cli
from tests.integration.test_cli import ON_EVERY_STORE, Run, _json, _one_error_line

from typedq.backends._unique import UNIQUE_META
from typedq.job import JobStatus
from typedq.manager import JobQueueManager

# The CLI fixtures: a SQLite file in tmp_path (and Redis for ON_EVERY_STORE), the CLI invoked
# in-process on it, a manager.
backend = test_cli.backend
run = test_cli.run
manager = test_cli.manager


@ON_EVERY_STORE
def test_a_held_unique_key_adds_nothing_and_names_the_holder(run: Run, manager: JobQueueManager) -> None:
    first = _json(run("enqueue", "--id", "a", "--unique-key", "report:12", "--unique-for", "1h30m", "true",
                      "--json"))
    assert (first["job_id"], first["created"]) == ("a", True)
    assert manager.get_job("a").metadata[UNIQUE_META] == {
        "key": "report:12", "for_s": 5400.0, "states": ["PENDING", "RUNNING"],
    }
    again = _json(run("enqueue", "--id", "b", "--unique-key", "report:12", "true", "--json"))
    assert (again["job_id"], again["created"], again["status"]) == ("a", False, "PENDING")
    text = run("enqueue", "--id", "b", "--unique-key", "report:12", "true")
    assert text.exit_code == 0, text.output
    assert "not enqueued" in text.stdout
    assert "report:12" in text.stdout
    assert "held by a" in text.stdout
    line = _one_error_line(run("enqueue", "--id", "b", "--unique-key", "report:12", "--on-conflict", "raise",
                               "true"))
    assert "unique_key" in line
    assert "report:12" in line
    assert "'a'" in line
    with pytest.raises(KeyError):
        manager.get_job("b")
    # Another key, and once the holder ended the same key, make a new job.
    assert _json(run("enqueue", "--id", "c", "--unique-key", "report:13", "true", "--json"))["created"]
    manager.cancel("a")
    made = _json(run("enqueue", "--id", "b", "--unique-key", "report:12", "--on-conflict", "raise", "true",
                     "--json"))
    assert (made["job_id"], made["created"]) == ("b", True)
    assert manager.get_job("b").status is JobStatus.PENDING


def test_unique_states_keep_the_key_while_the_holder_is_in_them(run: Run, manager: JobQueueManager) -> None:
    args = ["--unique-key", "nightly", "--unique-states", "pending, running,Completed", "--json", "true"]
    assert _json(run("enqueue", "--id", "a", *args))["created"]
    assert manager.get_job("a").metadata[UNIQUE_META]["states"] == ["PENDING", "RUNNING", "COMPLETED"]
    queue = manager.get_queue("default")
    claim = queue.claim("w", lease_s=30.0)
    assert claim is not None
    queue.complete("a", token=claim.token)
    # COMPLETED is one of the key's states: the finished job still holds it.
    again = _json(run("enqueue", "--id", "b", *args))
    assert (again["job_id"], again["created"], again["status"]) == ("a", False, "COMPLETED")
    # With the default states, a finished holder has let the key go.
    made = _json(run("enqueue", "--id", "c", "--unique-key", "weekly", "--json", "true"))
    assert made["created"]
    json_job = (
        '{"id": "d", "command": "true", "unique_key": "nightly", "unique_states": ["PENDING", "COMPLETED"]}'
    )
    assert "held by a" in run("enqueue", json_job).stdout


def test_a_json_job_carries_its_unique_key(run: Run, manager: JobQueueManager) -> None:
    job = '{"id": "j1", "command": "true", "unique_key": "k", "unique_for": 60, "on_conflict": "raise"}'
    assert run("enqueue", job).exit_code == 0
    assert manager.get_job("j1").metadata[UNIQUE_META]["for_s"] == 60.0
    line = _one_error_line(run("enqueue", job.replace("j1", "j2")))
    assert "unique_key" in line
    assert "'j1'" in line


@pytest.mark.parametrize(
    ("args", "named"),
    [
        pytest.param(["--unique-key", "k", "--unique-for", "5x"], "--unique-for", id="not-a-duration"),
        pytest.param(["--unique-key", "k", "--unique-for", "0"], "unique_for", id="zero-duration"),
        pytest.param(["--unique-for", "5m"], "unique_for", id="for-without-key"),
        pytest.param(["--unique-key", ""], "unique_key", id="empty-key"),
        pytest.param(["--unique-key", "a\tb"], "unique_key", id="tab-in-key"),
        pytest.param(["--unique-key", "k", "--on-conflict", "ignore"], "--on-conflict", id="bad-on-conflict"),
        pytest.param(['{"command": "true", "unique_key": "k", "on_conflict": "skip"}'], "on_conflict",
                     id="json-bad-on-conflict"),
        pytest.param(
            ["--unique-key", "k", "--unique-states", "pending,done"], "unique_states", id="bad-state"
        ),
        pytest.param(["--unique-key", "k", "--unique-states", ""], "unique_states", id="no-state"),
    ],
)
def test_bad_unique_options_are_one_error_line_naming_the_option(
    run: Run, manager: JobQueueManager, args: list[str], named: str
) -> None:
    command = [] if args[0].startswith("{") else ["true"]
    line = _one_error_line(run("enqueue", *args, *command))
    assert named in line
    assert manager.get_queue("default").size == 0


def test_unique_keys_are_refused_for_a_batch_from_stdin(run: Run, manager: JobQueueManager) -> None:
    lines = '{"command": "true", "unique_key": "a"}\n{"command": "true"}\n'
    line = _one_error_line(run("enqueue", "-", input=lines))
    assert "unique_key" in line
    assert "one job" in line
    line = _one_error_line(run("enqueue", "-", "--unique-key", "k", input='{"command": "true"}\n' * 2))
    assert "unique_key" in line
    assert manager.get_queue("default").size == 0
