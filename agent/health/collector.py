"""Periodic health snapshot: host metrics (in a thread), agent counters, per-camera state.

Snapshot layout (`HealthCollector.collect()`):

    {"ts": epoch seconds,
     "collect_seconds": wall time the snapshot took,
     "system": SystemSampler.sample() (with its own "errors"),
     "agent": {**agent(), "loop_lag_seconds", "loop_lag_max_seconds"},
     "cameras": [dict(c) for c in cameras()],
     "errors": {"agent" | "cameras": reason}  # only when a provider raised}

The agent and camera providers are plain callables run on the event loop; they must be cheap
and non-blocking (read counters, no I/O). Keys they leave out are simply not reported.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from agent.health.loop_lag import LoopLag
from agent.health.system import SystemSampler

log = logging.getLogger(__name__)


class HealthCollector:
    """Builds health snapshots on demand or every `interval` seconds (`run()`)."""

    def __init__(
        self,
        *,
        system: SystemSampler,
        agent: Callable[[], Mapping[str, Any]],
        cameras: Callable[[], Sequence[Mapping[str, Any]]],
        loop_lag: LoopLag | None = None,
    ) -> None:
        self._system = system
        self._agent = agent
        self._cameras = cameras
        self._loop_lag = loop_lag
        self._latest: dict[str, Any] | None = None

    @property
    def latest(self) -> dict[str, Any] | None:
        """The most recent snapshot of `collect()` or `run()`, None before the first."""
        return self._latest

    async def collect(self) -> dict[str, Any]:
        """One snapshot; host metrics are read in a worker thread. Never raises for bad data."""
        start = time.monotonic()
        system = await asyncio.to_thread(self._system.sample)
        errors: dict[str, str] = {}
        try:
            agent = dict(self._agent())
        except Exception as exc:
            log.warning("health: agent metrics unavailable: %s", exc)
            errors["agent"], agent = f"{type(exc).__name__}: {exc}"[:200], {}
        try:
            cameras = [dict(c) for c in self._cameras()]
        except Exception as exc:
            log.warning("health: camera metrics unavailable: %s", exc)
            errors["cameras"], cameras = f"{type(exc).__name__}: {exc}"[:200], []
        if self._loop_lag is not None and self._loop_lag.samples:
            agent["loop_lag_seconds"] = self._loop_lag.last
            agent["loop_lag_max_seconds"] = self._loop_lag.read_max()
        snapshot: dict[str, Any] = {
            "ts": time.time(),
            "collect_seconds": time.monotonic() - start,
            "system": system,
            "agent": agent,
            "cameras": cameras,
        }
        if errors:
            snapshot["errors"] = errors
        self._latest = snapshot
        return snapshot

    async def run(
        self,
        interval: float,
        on_sample: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        """Collect every `interval` seconds until cancelled, handing each snapshot to `on_sample`.

        Ticks are on a fixed schedule; a tick missed because a collection overran is skipped.
        An exception from `on_sample` is logged and the loop goes on.
        """
        if interval <= 0:
            raise ValueError("interval must be positive")
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            snapshot = await self.collect()
            if on_sample is not None:
                try:
                    await on_sample(snapshot)
                except Exception:
                    log.exception("health: snapshot consumer failed")
            now = loop.time()
            next_at += interval
            if next_at <= now:
                next_at += interval * ((now - next_at) // interval + 1)
            await asyncio.sleep(next_at - now)
