import random

import pytest

from agent.net import backoff
from agent.net.backoff import Backoff


def test_ceiling_doubles_to_cap() -> None:
    assert [backoff.ceiling(n) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff.ceiling(10_000) == 60
    with pytest.raises(ValueError):
        backoff.ceiling(-1)


def test_delays_within_bounds_and_spread() -> None:
    rng = random.Random(7)
    for n in range(12):
        samples = [backoff.delay(n, rng=rng) for _ in range(200)]
        top = backoff.ceiling(n)
        assert all(0.0 <= s <= top for s in samples)
        assert max(samples) > top * 0.8  # full jitter reaches near the bound
        assert min(samples) < top * 0.2  # ... and near zero


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_reset_after_long_uptime_only() -> None:
    clock = Clock()
    b = Backoff(rng=random.Random(1), clock=clock)
    for _ in range(5):
        b.next_delay()
    assert b.attempt == 5
    b.up()
    clock.now += 29.0
    b.down()
    assert b.attempt == 5  # short-lived: schedule continues
    b.up()
    clock.now += 30.0
    b.down()
    assert b.attempt == 0
    assert b.next_delay() <= 1.0


def test_at_cap_uses_cap_bound() -> None:
    b = Backoff(rng=random.Random(3))
    vals = [b.next_delay(at_cap=True) for _ in range(100)]
    assert max(vals) > 30 and all(0 <= v <= 60 for v in vals)
