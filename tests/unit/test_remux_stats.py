"""Relay status: the current error clears on recovery, the last failure stays visible."""

from __future__ import annotations

import time

from agent.media.remux import RelayState, RelayStats


def test_failure_is_current_until_recovered_then_kept_as_last_failure() -> None:
    stats = RelayStats()
    assert stats.snapshot()["last_failure_at"] is None
    before = time.time()
    stats.failed("TargetError: target: [Errno 32] Broken pipe")
    snap = stats.snapshot()
    assert (
        snap["last_error"] == snap["last_failure"] == "TargetError: target: [Errno 32] Broken pipe"
    )
    assert before <= snap["last_failure_at"] <= time.time()

    stats.state = RelayState.RELAYING
    stats.recovered()
    snap = stats.snapshot()
    assert snap["last_error"] == ""
    assert snap["last_failure"] == "TargetError: target: [Errno 32] Broken pipe"
    assert snap["last_failure_at"] >= before


def test_a_new_failure_replaces_the_last_one() -> None:
    stats = RelayStats()
    stats.failed("Unavailable: source ended the stream")
    first = stats.last_failure_at
    stats.recovered()
    stats.failed("TargetError: target: refused")
    assert stats.last_error == stats.last_failure == "TargetError: target: refused"
    assert first is not None and stats.last_failure_at is not None
    assert stats.last_failure_at >= first
