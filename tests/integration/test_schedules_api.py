"""Periodic jobs through the manager (``schedule``, ``@periodic``, pause/resume/remove)
and the command line (``typedq schedules``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from pydantic import BaseModel
from tests.helpers import wait_until

from typedq import JobQueueManager, JobType
from typedq.cli import cli
from typedq.clock import FakeClock
from typedq.errors import (
    ConfigError,
    InvalidJobError,
    PayloadValidationError,
    ScheduleNotFoundError,
)
from typedq.job import JobStatus
from typedq.scheduler import SLOT_KEY


class Report(BaseModel):
    to: str
    pages: int = 1


report = JobType("report", Report, result=int, queue="reports")


@pytest.fixture
def manager(clock: FakeClock) -> JobQueueManager:
    made = JobQueueManager(clock=clock)
    yield made  # type: ignore[misc]  # a generator fixture
    made.close()


def test_schedule_stores_a_typed_schedule_on_the_job_types_queue(
    manager: JobQueueManager, clock: FakeClock
) -> None:
    entry = manager.schedule(report, Report(to="ops"), cron="@hourly", tz="Europe/Berlin", priority=9)
    assert entry.name == "report"
    assert entry.payload == {"to": "ops", "pages": 1}
    assert entry.options["priority"] == 9
    assert entry.options["metadata"] == {"typedq.payload_version": 1}
    assert entry.next_run_at == (clock.now() // 3600 + 1) * 3600  # Berlin's hours start on UTC hours
    assert manager.schedules() == [("reports", entry)]
    # overlap is stored only when True: a definition stored before the option existed is
    # the same definition when declared again.
    assert "overlap" not in entry.options
    overlapping = manager.schedule(report, Report(to="ops"), cron="@hourly", name="r2", overlap=True)
    assert overlapping.options["overlap"] is True


def test_declaring_again_keeps_the_state_and_a_change_replaces_it(
    manager: JobQueueManager, clock: FakeClock
) -> None:
    first = manager.schedule("ping", {"n": 1}, every=timedelta(minutes=5), name="ping")
    manager.pause_schedule("ping")
    clock.advance(3600)
    again = manager.schedule("ping", {"n": 1}, every=300, name="ping")  # the same definition
    assert again.next_run_at == first.next_run_at
    assert again.paused
    changed = manager.schedule("ping", {"n": 2}, every=300, name="ping")
    assert changed.payload == {"n": 2}
    assert changed.next_run_at == (clock.now() // 300 + 1) * 300
    assert changed.paused


def test_resume_skips_the_slots_that_passed_while_paused(manager: JobQueueManager, clock: FakeClock) -> None:
    manager.schedule("ping", every=60, catch_up="all")
    manager.pause_schedule("ping")
    clock.advance(600)
    resumed = manager.resume_schedule("ping")
    assert not resumed.paused
    assert resumed.next_run_at == (clock.now() // 60 + 1) * 60
    manager.scheduler.run_once()
    assert manager.get_queue("default").size == 0


def test_remove_and_unknown_names(manager: JobQueueManager) -> None:
    manager.schedule("ping", every=60)
    assert manager.remove_schedule("ping")
    with pytest.raises(ScheduleNotFoundError):
        manager.remove_schedule("ping")
    with pytest.raises(ScheduleNotFoundError):
        manager.pause_schedule("ping")


def test_a_name_in_two_queues_needs_the_queue(manager: JobQueueManager) -> None:
    manager.schedule("ping", every=60, queue="a")
    manager.schedule("ping", every=60, queue="b")
    with pytest.raises(ConfigError, match="several queues") as caught:
        manager.pause_schedule("ping")
    assert caught.value.field == "queue"
    assert manager.pause_schedule("ping", queue="b").paused
    assert not manager.queues["a"].get_schedule("ping").paused


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        pytest.param({"cron": "61 * * * *"}, ConfigError, "cron", id="bad-minute"),
        pytest.param({"cron": "0 0 30 2 *"}, ConfigError, "cron", id="never"),
        pytest.param({"cron": "* * *"}, ConfigError, "cron", id="three-fields"),
        pytest.param({"cron": "@fortnightly"}, ConfigError, "cron", id="unknown-alias"),
        pytest.param({}, ConfigError, "cron", id="neither"),
        pytest.param({"cron": "* * * * *", "every": 60}, ConfigError, "cron", id="both"),
        pytest.param({"every": 0.5}, ConfigError, "every", id="sub-second"),
        pytest.param({"every": 1.5}, ConfigError, "every", id="fraction"),
        pytest.param({"every": "60"}, ConfigError, "every", id="text"),
        pytest.param({"every": 60, "tz": "Mars/Olympus"}, ConfigError, "tz", id="tz"),
        pytest.param({"every": 60, "catch_up": "some"}, ConfigError, "catch_up", id="catch-up"),
        pytest.param({"every": 60, "dst": "twice"}, ConfigError, "dst", id="dst"),
        pytest.param({"every": 60, "name": "has space"}, ConfigError, "name", id="name"),
        pytest.param({"every": 60, "priority": 11}, InvalidJobError, "priority", id="priority"),
        pytest.param({"every": 60, "colour": "red"}, ConfigError, "colour", id="unknown-option"),
        pytest.param({"every": 60, "overlap": "yes"}, ConfigError, "overlap", id="overlap"),
        pytest.param({"every": 60, "payload": {"x": {1, 2}}}, ConfigError, "payload", id="not-json"),
    ],
)
def test_bad_schedules_are_refused_naming_the_field(
    manager: JobQueueManager, kwargs: dict[str, object], error: type[Exception], field: str
) -> None:
    with pytest.raises(error) as caught:
        manager.schedule("ping", **kwargs)  # type: ignore[arg-type]  # bad on purpose
    assert caught.value.field == field  # type: ignore[attr-defined]
    assert manager.schedules() == []


def test_a_typed_payload_is_validated(manager: JobQueueManager) -> None:
    with pytest.raises(PayloadValidationError, match="to"):
        manager.schedule(report, cron="@daily")  # Report needs "to"
    assert manager.schedules() == []


def test_periodic_registers_the_handler_and_the_schedule(manager: JobQueueManager, clock: FakeClock) -> None:
    @manager.periodic(report, Report(to="ops", pages=3), every=60)
    def make_report(payload: Report) -> int:
        return payload.pages

    assert "report" in manager.handlers
    (queue, entry), = manager.schedules()
    assert (queue, entry.name, entry.every_s) == ("reports", "report", 60.0)
    assert make_report(Report(to="x")) == 1  # the function itself is returned


def test_workers_run_the_scheduler_with_the_system_clock(tmp_path: Path) -> None:
    done: list[float] = []
    manager = JobQueueManager({"backend": f"sqlite:///{tmp_path / 'jobs.db'}", "max_workers": 1})
    try:
        manager.register_handler("tick", lambda payload: done.append(payload["n"]))
        manager.schedule("tick", {"n": 1}, every=1, catch_up="none")
        manager.start_workers()
        assert manager.scheduler.running
        wait_until(lambda: len(done) >= 2, timeout=10, message="two slots ran")
        jobs = manager.get_queue("default").list_jobs(status=JobStatus.COMPLETED)
        slots = sorted(j.metadata[SLOT_KEY] for j in jobs)
        assert slots == sorted(set(slots))
        assert manager.get_stats()["total_submitted"] >= 2
    finally:
        manager.close()
    assert not manager.scheduler.running


def test_the_scheduler_setting_off_runs_none(tmp_path: Path) -> None:
    manager = JobQueueManager({"scheduler": False, "max_workers": 1})
    try:
        manager.start_workers()
        assert not manager.scheduler.running
    finally:
        manager.close()
    with pytest.raises(ConfigError, match="scheduler"):
        JobQueueManager({"scheduler": "yes"})
    with pytest.raises(ConfigError, match="scheduler_lock_s"):
        JobQueueManager({"scheduler_lock_s": 0})


# -- the command line ----------------------------------------------------------------------


@pytest.fixture
def kolkata(monkeypatch: pytest.MonkeyPatch) -> Iterator[ZoneInfo]:
    """The process's local time zone set to Asia/Kolkata (UTC+05:30, no DST): a local time
    is then told from a UTC one, and from Berlin's, whatever the date."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield ZoneInfo("Asia/Kolkata")
    monkeypatch.undo()
    time.tzset()


def test_cli_lists_pauses_resumes_and_removes(shared_store_url: str, kolkata: ZoneInfo) -> None:
    url = shared_store_url
    declaring = JobQueueManager({"backend": url})
    declaring.schedule("report", {"to": "ops"}, cron="30 2 * * *", tz="Europe/Berlin", name="nightly")
    declaring.schedule("ping", every=60, queue="pings")
    declaring.close()
    runner = CliRunner()

    def typedq(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli, ["--backend", url, *args], catch_exceptions=False)
        return result.exit_code, result.output

    code, out = typedq("schedules", "list")
    assert code == 0
    assert "nightly" in out
    assert "30 2 * * * (Europe/Berlin)" in out
    assert "every 60 s" in out
    code, out = typedq("schedules", "list", "--json")
    listed = {e["name"]: e for e in json.loads(out)}
    assert listed["ping"]["queue"] == "pings"
    next_run = listed["nightly"]["next_run_at"]
    # 02:30 in Berlin, shown in the local time zone with its offset, to the second.
    berlin = datetime.fromtimestamp(next_run, ZoneInfo("Europe/Berlin"))
    assert (berlin.hour, berlin.minute, berlin.second) == (2, 30, 0)
    local = datetime.fromtimestamp(next_run, kolkata).isoformat(timespec="seconds")
    assert local.endswith("+05:30")
    assert listed["nightly"]["next_run_iso"] == local
    assert local in typedq("schedules", "list")[1]
    assert typedq("schedules", "pause", "nightly") == (0, "nightly (default): paused\n")
    assert json.loads(typedq("schedules", "list", "--json")[1])[0]["paused"]
    code, out = typedq("schedules", "resume", "nightly")
    assert code == 0
    assert "next run" in out
    code, out = typedq("schedules", "remove", "ping")
    assert code == 2  # without --yes nothing changes
    assert "--yes" in out
    assert "ping" in typedq("schedules", "list")[1]
    assert typedq("schedules", "remove", "ping", "--yes")[0] == 0
    assert "ping" not in typedq("schedules", "list")[1]
    code, out = typedq("schedules", "pause", "ghost")
    assert code == 2
    assert "no schedule named 'ghost'" in out
