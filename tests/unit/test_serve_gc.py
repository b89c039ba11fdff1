"""A process that serves jobs sets the garbage collector up for it (``tune_gc_for_serving``).

The collector's settings are given back after each test by an autouse fixture of
``tests/conftest.py``."""

from __future__ import annotations

import gc

from typedq import JobQueueManager
from typedq._serve import SERVING_GC_THRESHOLD, StopRequest, serve, tune_gc_for_serving


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
