"""LeaseKeeper registry renewals: dropping an entry waits for a renewal in flight, so a
worker that unregisters right after dropping its entry is never registered again."""

from __future__ import annotations

import threading

import pytest

from typedq.leases import LeaseKeeper


@pytest.mark.timeout(30)
def test_drop_entry_waits_for_a_renewal_in_flight() -> None:
    keeper = LeaseKeeper(lease_s=2.0, heartbeat_s=0.5)
    renewing, release = threading.Event(), threading.Event()
    events: list[str] = []

    def renew() -> None:
        renewing.set()
        release.wait(10)
        events.append("renewed")

    keeper.keep_entry("w1", renew)
    beat = threading.Thread(target=keeper.beat)
    beat.start()
    assert renewing.wait(10)
    dropper = threading.Thread(target=lambda: (keeper.drop_entry("w1"), events.append("dropped")))
    dropper.start()
    dropper.join(0.2)
    assert dropper.is_alive()  # blocked behind the renewal
    release.set()
    dropper.join(10)
    beat.join(10)
    assert events == ["renewed", "dropped"]
    keeper.beat()  # dropped: not renewed again
    assert events == ["renewed", "dropped"]
