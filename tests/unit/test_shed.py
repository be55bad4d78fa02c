"""Load-shedding levels from health samples, with a fake clock."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from agent.errors import ConfigError
from agent.health.shed import Shedder, ShedPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sample(
    temp: float | None = None, cpu: float | None = None, throttled: int | None = None
) -> dict[str, Any]:
    """A HealthCollector snapshot with only the figures the shedder reads."""
    return {
        "ts": 0.0,
        "system": {"temperature_celsius": temp, "cpu_percent": cpu, "throttled": throttled},
        "agent": {},
        "cameras": [],
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def shedder(clock: Clock) -> Shedder:
    return Shedder(ShedPolicy(), clock, wall=lambda: 5000.0 + clock.now)


def test_levels_from_temperature(shedder: Shedder) -> None:
    assert shedder.update(sample(temp=60.0)) == 0
    assert shedder.reason == ""
    assert shedder.update(sample(temp=75.0)) == 0  # "above" is strict
    assert shedder.update(sample(temp=75.1)) == 1
    assert shedder.reason == "temperature 75.1 °C above 75.0"
    assert shedder.update(sample(temp=83.1)) == 2
    assert shedder.reason == "temperature 83.1 °C above 82.0"


def test_hysteresis_and_cooldown(shedder: Shedder, clock: Clock) -> None:
    assert shedder.update(sample(temp=83.0)) == 2
    clock.now += 120
    # Below the hard limit but within the hysteresis: stays at 2 however long it lasts.
    assert shedder.update(sample(temp=78.0)) == 2
    clock.now += 120
    assert shedder.update(sample(temp=77.1)) == 2
    # Out of the hysteresis band: pressure gone at this moment; the cooldown starts now.
    clock.now += 1
    assert shedder.update(sample(temp=76.9)) == 2
    clock.now += 59
    assert shedder.update(sample(temp=76.9)) == 2
    clock.now += 1.5
    assert shedder.update(sample(temp=76.9)) == 1
    assert shedder.reason == "temperature 76.9 °C above 75.0"
    # Level 1 held within its band (70..75] and for the cooldown after leaving it.
    clock.now += 100
    assert shedder.update(sample(temp=71.0)) == 1
    assert shedder.reason == "temperature 71.0 °C near 75.0"
    clock.now += 1
    assert shedder.update(sample(temp=69.0)) == 1
    clock.now += 60
    assert shedder.update(sample(temp=69.0)) == 0
    assert shedder.reason == ""


def test_level_goes_up_at_once_even_in_cooldown(shedder: Shedder, clock: Clock) -> None:
    assert shedder.update(sample(temp=76.0)) == 1
    clock.now += 1
    assert shedder.update(sample(temp=90.0)) == 2


def test_straight_down_to_normal_after_cooldown(shedder: Shedder, clock: Clock) -> None:
    assert shedder.update(sample(temp=90.0)) == 2
    clock.now += 10
    assert shedder.update(sample(temp=50.0)) == 2
    clock.now += 55
    assert shedder.update(sample(temp=50.0)) == 2  # 55 s since the last pressure
    clock.now += 5
    assert shedder.update(sample(temp=50.0)) == 0


def test_cpu_counts_only_when_sustained(shedder: Shedder, clock: Clock) -> None:
    for _ in range(3):
        assert shedder.update(sample(cpu=99.0)) == 0
        clock.now += 10
    assert shedder.update(sample(cpu=99.0)) == 1  # 30 s above
    assert shedder.reason.startswith("CPU 99 %")
    clock.now += 100
    assert shedder.update(sample(cpu=87.0)) == 1  # within the hysteresis
    clock.now += 100
    assert shedder.update(sample(cpu=84.0)) == 1  # cooldown starts
    clock.now += 60
    assert shedder.update(sample(cpu=84.0)) == 0


def test_cpu_dip_restarts_the_sustain_timer(shedder: Shedder, clock: Clock) -> None:
    shedder.update(sample(cpu=95.0))
    clock.now += 20
    shedder.update(sample(cpu=50.0))
    clock.now += 10
    assert shedder.update(sample(cpu=95.0)) == 0
    clock.now += 29
    assert shedder.update(sample(cpu=95.0)) == 0
    clock.now += 1
    assert shedder.update(sample(cpu=95.0)) == 1


def test_cpu_never_raises_to_hard(shedder: Shedder, clock: Clock) -> None:
    for _ in range(10):
        clock.now += 30
        assert shedder.update(sample(cpu=100.0, temp=50.0)) <= 1


@pytest.mark.parametrize(
    ("flags", "level", "word"),
    [
        (0x0, 0, ""),
        (0x1, 1, "under-voltage"),
        (0x4, 1, "throttled"),
        (0x8, 1, "soft temperature limit"),
        (0x2, 0, ""),  # ARM frequency capped alone: not shed
        (0x50000, 0, ""),  # "has occurred" bits only
        (0x5000D, 1, "under-voltage, throttled, soft temperature limit"),
    ],
)
def test_throttled_bits(shedder: Shedder, flags: int, level: int, word: str) -> None:
    assert shedder.update(sample(temp=50.0, throttled=flags)) == level
    if level:
        assert shedder.reason == f"{word} (throttled flags {flags:#x})"


def test_throttled_with_hot_temperature_gives_both_reasons(shedder: Shedder) -> None:
    assert shedder.update(sample(temp=76.0, throttled=0x4)) == 1
    assert "temperature 76.0" in shedder.reason and "throttled" in shedder.reason


@pytest.mark.parametrize(
    "figures",
    [
        {"temperature_celsius": None, "cpu_percent": None, "throttled": None},
        {},
        {"temperature_celsius": float("nan"), "cpu_percent": float("inf"), "throttled": -1},
        {"temperature_celsius": "90", "cpu_percent": "99", "throttled": "0x4"},
        {"temperature_celsius": True, "cpu_percent": True, "throttled": True},
    ],
)
def test_missing_or_odd_figures_never_raise(clock: Clock, figures: dict[str, Any]) -> None:
    shedder = Shedder(ShedPolicy(sustain=0.0), clock)
    for _ in range(5):
        clock.now += 40
        assert shedder.update({"system": figures}) == 0
        assert shedder.update(figures) == 0  # the bare "system" mapping works too


def test_missing_figure_does_not_hold_level_forever(shedder: Shedder, clock: Clock) -> None:
    assert shedder.update(sample(temp=85.0)) == 2
    clock.now += 1
    assert shedder.update(sample(temp=None)) == 2  # cooldown still holds
    clock.now += 60
    assert shedder.update(sample(temp=None)) == 0


def test_allows_per_level(shedder: Shedder, clock: Clock) -> None:
    assert [shedder.allows(f) for f in ("qr", "snapshot", "webrtc")] == [True, True, True]
    assert shedder.denial("snapshot") is None
    shedder.update(sample(temp=76.0))
    assert [shedder.allows(f) for f in ("qr", "snapshot", "webrtc")] == [False, False, True]
    denial = shedder.denial("snapshot")
    assert denial is not None and "temperature 76.0 °C above 75.0" in denial
    assert shedder.denial("webrtc") is None
    shedder.update(sample(temp=90.0))
    assert [shedder.allows(f) for f in ("qr", "snapshot", "webrtc")] == [False, False, False]
    with pytest.raises(ValueError, match="relay"):
        shedder.allows("relay")


def test_status(shedder: Shedder, clock: Clock) -> None:
    assert shedder.status() == {"level": 0, "reason": "", "shed": [], "since": 6000.0}
    clock.now += 7
    shedder.update(sample(temp=85.5))
    assert shedder.status() == {
        "level": 2,
        "reason": "temperature 85.5 °C above 82.0",
        "shed": ["qr", "snapshot", "transcode", "webrtc"],
        "since": 6007.0,
    }
    clock.now += 3
    shedder.update(sample(temp=85.0))  # same level: since unchanged
    assert shedder.status()["since"] == 6007.0


def test_on_change_called_once_per_change_and_logged(
    shedder: Shedder, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    changes: list[tuple[int, int]] = []
    shedder.on_change = lambda old, new: changes.append((old, new))
    caplog.set_level(logging.INFO, logger="agent.health.shed")
    temps = [50, 76, 77, 76, 90, 88, 85, 50, 50, 50, 50]
    for t in temps:
        shedder.update(sample(temp=float(t)))
        clock.now += 30
    assert changes == [(0, 1), (1, 2), (2, 0)]
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.health.shed"]
    assert len(lines) == 3
    assert lines[0] == "load shedding level 0 -> 1: temperature 76.0 °C above 75.0"
    assert lines[1] == "load shedding level 1 -> 2: temperature 90.0 °C above 82.0"
    assert lines[2].startswith("load shedding level 2 -> 0")
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "agent.health.shed")


def test_on_change_failure_is_logged_not_raised(
    shedder: Shedder, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(old: int, new: int) -> None:
        raise RuntimeError("handler broke")

    shedder.on_change = boom
    assert shedder.update(sample(temp=90.0)) == 2
    assert "level change handler failed" in caplog.text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"soft_celsius": 85.0, "hard_celsius": 80.0},
        {"cpu_percent": 0.0},
        {"cpu_percent": 120.0},
        {"cooldown": -1.0},
        {"hysteresis": float("nan")},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        ShedPolicy(**kwargs)


async def test_runner_feeds_new_samples_and_awaits_actions(clock: Clock) -> None:
    shedder = Shedder(ShedPolicy(cooldown=0.0), clock)
    current: dict[str, Any] = {"sample": sample(temp=50.0)}
    actions: list[tuple[int, int]] = []
    acted = asyncio.Event()

    async def on_level(old: int, new: int) -> None:
        actions.append((old, new))
        acted.set()

    task = asyncio.create_task(shedder.run(lambda: current["sample"], 0.01, on_level=on_level))
    try:
        await asyncio.sleep(0.05)
        assert actions == []
        current["sample"] = sample(temp=90.0)
        async with asyncio.timeout(2):
            await acted.wait()
        acted.clear()
        current["sample"] = sample(temp=40.0)
        async with asyncio.timeout(2):
            await acted.wait()
        assert actions == [(0, 2), (2, 0)]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_feed_is_a_collector_consumer(shedder: Shedder) -> None:
    await shedder.feed(sample(temp=90.0))
    assert shedder.level == 2
