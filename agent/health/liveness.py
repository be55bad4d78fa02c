"""Camera liveness: a TCP connect to every camera's ONVIF port (its RTSP port for a camera added
by RTSP URL) every few seconds, so a camera that dies is shown offline within seconds (the
inventory's full re-checks are minutes apart), and one that comes back is inspected at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

from agent.discovery.inventory import Inventory
from agent.discovery.records import CameraRecord, CameraState

log = logging.getLogger(__name__)

INTERVAL = 3.0
TIMEOUT = 2.0
#: Failed probes in a row before a camera is marked unreachable.
MISSES = 2
CONCURRENCY = 16
#: Port of a camera address given without one, by URL scheme.
DEFAULT_PORTS = {"http": 80, "https": 443, "rtsp": 554}


class CameraLiveness:
    def __init__(
        self,
        inventory: Inventory,
        *,
        interval: float = INTERVAL,
        timeout: float = TIMEOUT,
        misses: int = MISSES,
    ) -> None:
        self._inventory = inventory
        self._interval = interval
        self._timeout = timeout
        self._misses = misses
        self._failures: dict[str, int] = {}
        self._limit = asyncio.Semaphore(CONCURRENCY)

    async def run(self) -> None:
        while True:
            cams = [r for r in self._inventory.cameras() if not r.paused]
            await asyncio.gather(*(self._probe(r) for r in cams))
            for gone in set(self._failures) - {r.id for r in cams}:
                del self._failures[gone]
            await asyncio.sleep(self._interval)

    async def _probe(self, rec: CameraRecord) -> None:
        found = target(rec.xaddr)
        if found is None:
            return
        host, port = found
        async with self._limit:
            ok = await _answers(host, port, self._timeout)
        if ok:
            self._failures.pop(rec.id, None)
            if rec.state is CameraState.UNREACHABLE:
                self._inventory.recheck_now(rec.id)
            return
        misses = self._failures[rec.id] = self._failures.get(rec.id, 0) + 1
        if misses >= self._misses and rec.state is CameraState.ONLINE:
            self._inventory.report_unreachable(rec.id, f"no answer on {host}:{port}")


def target(xaddr: str) -> tuple[str, int] | None:
    """The host and port probed for a camera: those of its device service address, or of its
    main stream URL for a camera added by RTSP URL (None when it has no host)."""
    try:
        parts = urlsplit(xaddr)
        host, port = parts.hostname, parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 80)
    except ValueError:
        return None
    return (host, port) if host else None


async def _answers(host: str, port: int, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(timeout):
            await writer.wait_closed()
    return True
