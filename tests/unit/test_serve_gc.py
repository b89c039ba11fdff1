"""A process that serves jobs sets the garbage collector up for it (``tune_gc_for_serving``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from typedq import JobQueueManager
from typedq._serve import SERVING_GC_THRESHOLD, StopRequest, serve, tune_gc_for_serving


@pytest.fixture(autouse=True)
def gc_state() -> Iterator[None]:
    """Give the interpreter its collector settings back after each test."""
    threshold, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_the_young_threshold_is_raised_and_start_up_objects_frozen() -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    tune_gc_for_serving()
    assert gc.get_threshold() == (SERVING_GC_THRESHOLD, 10, 10)
    assert gc.get_freeze_count() > 0


def test_an_applications_higher_threshold_and_disabled_collector_are_kept() -> None:
    gc.set_threshold(SERVING_GC_THRESHOLD * 5, 20, 30)
    gc.disable()
    tune_gc_for_serving()
    assert gc.get_threshold() == (SERVING_GC_THRESHOLD * 5, 20, 30)
    assert not gc.isenabled()


def test_serve_sets_the_collector_up_before_its_workers_start() -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    stop = StopRequest()
    stop.now()
    seen: list[tuple[int, int, int]] = []
    with JobQueueManager() as manager:
        report = serve(manager, stop=stop, on_started=lambda workers: seen.append(gc.get_threshold()))
    assert report.reason == "stop requested"
    assert seen == [(SERVING_GC_THRESHOLD, 10, 10)]
    assert gc.get_freeze_count() > 0
