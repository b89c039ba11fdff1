"""The dashboard in a real browser: Debian's chromium driven by Playwright.

The page is opened, a token given, a queue's counts seen changing after jobs are
submitted, a job's detail opened, and a dead letter replayed by clicking; a screenshot
is saved in the test's tmp dir. Without chromium the test is skipped (it fails under
``TYPEDQ_REQUIRE_SERVICES=1``; ``.ci/run`` installs chromium).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import skip_or_fail, wait_until
from tests.ops.conftest import ADMIN, Add, Boom, LiveServer, add, boom

from typedq import JobQueueManager
from typedq.job import JobStatus
from typedq.worker import Worker

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def page() -> Any:
    if not Path(CHROMIUM).exists():
        skip_or_fail("no chromium (apt-get install chromium) for the dashboard's browser test")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (the dev extra has it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(timezone_id="Asia/Tokyo", viewport={"width": 1400, "height": 1000})
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


@pytest.mark.parametrize("shared_store_url", ["sqlite"], indirect=True)
def test_dashboard_counts_detail_and_replay(
    page: Any, manager: JobQueueManager, api: LiveServer, workers: Callable[[int], list[Worker]],
    tmp_path: Path,
) -> None:
    manager.schedule(add, Add(a=1, b=1), every=3600.0, name="hourly")
    page.goto(api.url + "/")
    page.fill("#token", ADMIN)  # the API answered 401: the page asks for a token
    page.click("#login button")
    page.select_option("#every", "1000")
    pending = page.locator('tr[data-queue="default"] td[data-state="PENDING"]')
    pending.wait_for()
    assert pending.inner_text() == "0"
    assert "hourly" in page.inner_text("#schedules")

    ids = [manager.enqueue(add, Add(a=i, b=i)).job_id for i in range(3)]
    page.wait_for_function(
        "() => document.querySelector('tr[data-queue=default] td[data-state=PENDING]').textContent === '3'"
    )
    # A job's detail, times in the browser's zone (Tokyo, UTC+9).
    page.click(f'#jobs tr[data-job="{ids[0]}"]')
    page.wait_for_selector("#detail:not([hidden])")
    detail = page.inner_text("#d-body")
    assert '"a": 0' in detail
    created = manager.get_job(ids[0]).created_at
    expected = page.evaluate(
        "(t) => new Date(t * 1000).toLocaleString('en-US', {timeZone: 'Asia/Tokyo'})", created
    )
    shown = page.evaluate("(t) => new Date(t * 1000).toLocaleString()", created)
    assert shown == expected
    assert shown in detail

    # A dead letter, replayed by clicking.
    # Its error holds markup: shown as text, never run.
    dead = manager.enqueue(boom, Boom(reason="<img src=x onerror=window.pwned=1>")).job_id
    started = workers(1)
    wait_until(lambda: manager.get_job(dead).status is JobStatus.DEAD, timeout=20)
    for worker in started:
        worker.stop()
    for worker in started:
        worker.join(10)
    page.wait_for_function(
        "() => document.querySelector('tr[data-queue=default] td[data-state=COMPLETED]').textContent === '3'"
    )
    replay = page.locator(f'button.replay[data-job="{dead}"]')
    replay.wait_for()
    assert "<img src=x onerror=window.pwned=1>" in page.inner_text(f'#dead tr[data-job="{dead}"]')
    assert page.evaluate("window.pwned") is None
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    replay.click()
    wait_until(lambda: manager.get_job(dead).status is JobStatus.PENDING, timeout=10)
    replay.wait_for(state="detached")
    assert manager.get_dead_letter_queue().size == 0
    page.wait_for_function(
        "() => document.querySelector('tr[data-queue=default] td[data-state=DEAD]').textContent === '0'"
    )
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
