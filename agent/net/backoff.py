"""Full-jitter exponential backoff (protocol.md §6): a pure schedule and a small async helper."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

#: First delay bound, seconds.
BASE = 1.0
#: Largest delay, seconds.
CAP = 60.0
#: A connection up this many seconds resets the schedule.
RESET_AFTER = 30.0


def ceiling(attempt: int, *, base: float = BASE, cap: float = CAP) -> float:
    """Upper bound of the delay before attempt `attempt` (0-based): min(cap, base * 2**n)."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    return min(cap, base * 2.0 ** min(attempt, 64))


def delay(
    attempt: int, *, base: float = BASE, cap: float = CAP, rng: random.Random | None = None
) -> float:
    """Seconds to wait before attempt `attempt`: uniform(0, ceiling(attempt))."""
    return (rng or random).uniform(0.0, ceiling(attempt, base=base, cap=cap))


class Backoff:
    """Counts failed attempts and sleeps the full-jitter delay; `up()`/`down()` track how long a
    connection stayed up, so a connection up for `reset_after` seconds resets the schedule."""

    def __init__(
        self,
        *,
        base: float = BASE,
        cap: float = CAP,
        reset_after: float = RESET_AFTER,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base = base
        self.cap = cap
        self.reset_after = reset_after
        self.attempt = 0
        self._rng = rng
        self._clock = clock
        self._up_since: float | None = None

    def up(self) -> None:
        """The connection is established."""
        self._up_since = self._clock()

    def down(self) -> None:
        """The connection ended: reset if it stayed up long enough."""
        if self._up_since is not None and self._clock() - self._up_since >= self.reset_after:
            self.attempt = 0
        self._up_since = None

    def reset(self) -> None:
        self.attempt = 0
        self._up_since = None

    def next_delay(self, *, at_cap: bool = False) -> float:
        """The delay before the next attempt (and count it); `at_cap` uses the cap's bound."""
        n = self.attempt
        self.attempt += 1
        if at_cap:
            return (self._rng or random).uniform(0.0, self.cap)
        return delay(n, base=self.base, cap=self.cap, rng=self._rng)

    async def sleep(self, *, at_cap: bool = False) -> float:
        """Sleep the next delay; returns it."""
        seconds = self.next_delay(at_cap=at_cap)
        await asyncio.sleep(seconds)
        return seconds
