"""The trial health evaluator: ready, stable window, watchdog gaps, baseline comparison."""

from __future__ import annotations

from pathlib import Path

from agent.update.health import Baseline, Health

GOOD = {"WATCHDOG": "1", "X_ACTIVATED": "1", "X_CONNECTED": "1", "X_CAMERAS": "2"}


def ok(h: Health) -> bool:
    return h.healthy


def _pings(h: Health, start: float, end: float, fields: dict[str, str], step: float = 0.5) -> None:
    t = start
    while t <= end:
        h.feed(t, fields)
        t += step


def test_healthy_after_a_stable_window() -> None:
    h = Health(Baseline(1, 1, 1), stable=5, watchdog=2)
    h.tick(1.0)
    assert not ok(h) and h.reason == "not ready"
    h.feed(1.0, {"READY": "1"})
    _pings(h, 1.5, 5.5, GOOD)
    assert not ok(h) and h.reason.startswith("stable for")
    _pings(h, 6.0, 7.0, GOOD)
    assert ok(h) and h.reason == "healthy"


def test_a_gap_restarts_the_window() -> None:
    h = Health(Baseline(), stable=3, watchdog=1)
    h.feed(0.0, {"READY": "1", **GOOD})
    _pings(h, 0.5, 2.5, GOOD)
    h.tick(4.0)  # 1.5 s without a ping
    assert not ok(h) and "no watchdog ping" in h.reason
    h.feed(4.1, GOOD)
    h.tick(6.0)
    assert not ok(h)  # gap again: no ping since 4.1
    _pings(h, 6.1, 7.1, GOOD)
    assert not ok(h)
    _pings(h, 7.6, 9.6, GOOD)
    assert ok(h)


def test_baseline_is_compared() -> None:
    h = Health(Baseline(activated=1, connected=1, cameras=2), stable=1, watchdog=5)
    h.feed(0.0, {"READY": "1"})
    _pings(h, 0.0, 3.0, {**GOOD, "X_CONNECTED": "0"})
    assert not ok(h) and h.reason == "not connected"
    _pings(h, 3.5, 6.0, {**GOOD, "X_CAMERAS": "0"})
    assert not ok(h) and h.reason == "no camera online"
    _pings(h, 6.5, 9.0, {"WATCHDOG": "1", "X_CONNECTED": "1", "X_CAMERAS": "1"})
    assert ok(h)  # activation kept from before, one camera is enough
    _pings(h, 9.5, 9.5, {"WATCHDOG": "1", "X_ACTIVATED": "0"})
    assert not ok(h) and h.reason == "not activated"


def test_zero_baseline_needs_only_ready_and_pings() -> None:
    h = Health(Baseline(), stable=1, watchdog=1)
    h.feed(0.0, {"READY": "1"})
    _pings(h, 0.5, 1.5, {"WATCHDOG": "1", "X_CONNECTED": "junk"})
    assert ok(h)


def test_baseline_round_trip(tmp_path: Path) -> None:
    b = Baseline.from_fields({"X_ACTIVATED": "1", "X_CONNECTED": "1", "X_CAMERAS": "3"})
    b.save(tmp_path / "update" / "baseline.json")
    assert Baseline.load(tmp_path / "update" / "baseline.json") == b == Baseline(1, 1, 3)
    assert Baseline.load(tmp_path / "missing.json") == Baseline()
    (tmp_path / "bad.json").write_text('{"activated": "x", "cameras": true}')
    assert Baseline.load(tmp_path / "bad.json") == Baseline()
