"""Event-loop lag: how late a sleep of `interval` seconds wakes up.

A loop kept busy by blocking code wakes its timers late; `LoopLag.run()` measures that delay on
every tick and keeps the last value and the largest one since the previous `read_max()`.
"""

from __future__ import annotations

import asyncio


class LoopLag:
    """Measures the lag of the running event loop; run `run()` as an owned task."""

    def __init__(self) -> None:
        self._last = 0.0
        self._max = 0.0
        self.samples = 0

    @property
    def last(self) -> float:
        """Lag of the latest tick, seconds."""
        return self._last

    @property
    def max(self) -> float:
        """Largest lag since the last `read_max()`, seconds."""
        return self._max

    def read_max(self) -> float:
        """Largest lag since the previous call, seconds; starts a new window."""
        value, self._max = self._max, 0.0
        return value

    def record(self, lag: float) -> None:
        """Add one measured lag (negative values, from clock granularity, count as 0)."""
        lag = max(0.0, lag)
        self._last = lag
        self._max = max(self._max, lag)
        self.samples += 1

    async def run(self, interval: float = 0.5) -> None:
        """Measure until cancelled."""
        if interval <= 0:
            raise ValueError("interval must be positive")
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(interval)
            self.record(loop.time() - start - interval)
