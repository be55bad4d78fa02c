"""Health to the cloud: a `stats` event on the control connection every interval, and at once
when something an operator cares about changes (a camera's state, a link going up or down).

While the cloud is unreachable the samples wait in a bounded buffer (oldest dropped first, and
counted); on reconnect they go out oldest first, each marked with its own time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

log = logging.getLogger(__name__)

#: Samples kept while the cloud is unreachable.
BUFFER = 120
#: Seconds between looks for a state change.
WATCH = 1.0
#: Most cameras sent in one sample (the control connection's messages are at most 64 KiB).
MAX_CAMERAS = 100

Send = Callable[[str, dict[str, Any]], Awaitable[None]]


def compact(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """What goes to the cloud: the figures, without per-core and per-interface detail."""
    system = dict(snapshot.get("system") or {})
    for key in ("cpu_percent_per_core", "network", "errors"):
        system.pop(key, None)
    net = (snapshot.get("system") or {}).get("network") or {}
    if isinstance(net, Mapping):
        system["network_bytes_sent"] = sum(int(v.get("bytes_sent") or 0) for v in net.values())
        system["network_bytes_recv"] = sum(int(v.get("bytes_recv") or 0) for v in net.values())
    cameras = [dict(c) for c in (snapshot.get("cameras") or [])[:MAX_CAMERAS]]
    return {
        "ts": snapshot.get("ts", time.time()),
        "system": system,
        "agent": dict(snapshot.get("agent") or {}),
        "cameras": cameras,
    }


class StatsReporter:
    """Sends health samples through `send` (set by `attach` while the connection is up)."""

    def __init__(
        self,
        sample: Callable[[], Awaitable[Mapping[str, Any]]],
        signature: Callable[[], Hashable],
        *,
        interval: float = 10.0,
        buffer: int = BUFFER,
    ) -> None:
        self._sample = sample
        self._signature = signature
        self._interval = interval
        self._queue: deque[dict[str, Any]] = deque(maxlen=buffer)
        self._send: Send | None = None
        self._wake = asyncio.Event()
        self.sent = 0
        self.dropped = 0
        self.failed = 0

    def attach(self, send: Send | None) -> None:
        """The connection is up (`send`) or down (None); attaching flushes the buffer."""
        self._send = send
        if send is not None:
            self._wake.set()

    def status(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "buffered": len(self._queue),
            "dropped": self.dropped,
            "failed": self.failed,
        }

    async def run(self) -> None:
        last_sig = self._signature()
        next_due = 0.0
        while True:
            now = time.monotonic()
            sig = self._signature()
            if sig != last_sig or now >= next_due:
                last_sig = sig
                next_due = now + self._interval
                await self._take()
            await self._flush()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(WATCH, max(0.05, next_due - now)))

    async def _take(self) -> None:
        try:
            payload = compact(await self._sample())
        except Exception:  # a sampling bug must not stop reporting
            log.exception("health sample failed")
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(payload)

    async def _flush(self) -> None:
        send = self._send
        while self._queue and send is not None:
            payload = self._queue[0]
            live = len(self._queue) == 1
            try:
                await send("stats", {**payload, "buffered": not live, "dropped": self.dropped})
            except (ConnectionError, OSError, RuntimeError) as exc:
                self.failed += 1
                log.debug("stats not sent (kept for later): %s", exc)
                return
            except Exception:  # e.g. a message too large: skip it rather than block the rest
                log.exception("stats sample could not be sent; dropped")
                self.dropped += 1
            self._queue.popleft()
            self.sent += 1
