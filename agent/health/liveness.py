"""Camera liveness: a TCP connect to every camera's ONVIF port (its RTSP port for a camera added
by RTSP URL) every few seconds, so a camera that dies is shown offline within seconds (the
inventory's full re-checks are minutes apart), and one that comes back is inspected at once.

A port that takes connections does not prove the camera works: every ONVIF_INTERVAL seconds an
online ONVIF camera is also asked GetSystemDateAndTime (no credentials needed). When that fails
while TCP connects, the camera is shown in error with the reason; when it answers again, it is
inspected at once (and online again if all is well)."""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlsplit

import aiohttp

from agent.camera.session import system_date_and_time
from agent.discovery.inventory import Inventory
from agent.discovery.records import CameraRecord, CameraState
from agent.net.reach import answers

log = logging.getLogger(__name__)

INTERVAL = 3.0
TIMEOUT = 2.0
#: Seconds between two ONVIF-level checks (GetSystemDateAndTime) of one camera.
ONVIF_INTERVAL = 30.0
#: Seconds one ONVIF-level check may take.
ONVIF_TIMEOUT = 5.0
#: Failed probes in a row (of either kind) before a camera is marked.
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
        onvif_interval: float = ONVIF_INTERVAL,
        onvif_timeout: float = ONVIF_TIMEOUT,
    ) -> None:
        self._inventory = inventory
        self._interval = interval
        self._timeout = timeout
        self._misses = misses
        self._onvif_interval = onvif_interval
        self._onvif_timeout = onvif_timeout
        self._failures: dict[str, int] = {}
        self._onvif_failures: dict[str, int] = {}
        self._onvif_due: dict[str, float] = {}
        self._onvif_at: dict[str, str] = {}  # the address the ONVIF misses were counted at
        self._marked: set[str] = set()  # cameras this probe put in error
        self._limit = asyncio.Semaphore(CONCURRENCY)

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(force_close=True, limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as http:
            while True:
                cams = [r for r in self._inventory.cameras() if not r.paused]
                await asyncio.gather(*(self._probe(r, http) for r in cams))
                known = {r.id for r in cams}
                for table in (
                    self._failures,
                    self._onvif_failures,
                    self._onvif_due,
                    self._onvif_at,
                ):
                    for gone in set(table) - known:
                        del table[gone]
                self._marked &= known
                await asyncio.sleep(self._interval)

    async def _probe(self, rec: CameraRecord, http: aiohttp.ClientSession) -> None:
        found = target(rec.xaddr)
        if found is None:
            return
        host, port = found
        async with self._limit:
            ok = await answers(host, port, self._timeout)
        if ok:
            self._failures.pop(rec.id, None)
            if rec.state is CameraState.UNREACHABLE:
                self._inventory.recheck_now(rec.id)
            elif rec.kind == "onvif":
                await self._probe_onvif(rec, http)
            return
        misses = self._failures[rec.id] = self._failures.get(rec.id, 0) + 1
        if misses >= self._misses and rec.state is CameraState.ONLINE:
            self._inventory.report_unreachable(rec.id, f"no answer on {host}:{port}")

    async def _probe_onvif(self, rec: CameraRecord, http: aiohttp.ClientSession) -> None:
        """GetSystemDateAndTime, when due, of an online camera or one this probe marked."""
        watched = rec.state is CameraState.ONLINE or (
            rec.id in self._marked and rec.state is CameraState.ERROR
        )
        now = time.monotonic()
        due = self._onvif_due.setdefault(rec.id, now + self._onvif_interval)
        if not watched or now < due:
            return
        # A camera this probe marked is watched at the fast interval: back online within
        # seconds of answering again, not at the next slow check.
        marked = rec.id in self._marked
        self._onvif_due[rec.id] = now + (self._interval if marked else self._onvif_interval)
        xaddr = rec.xaddr
        async with self._limit:
            problem = await system_date_and_time(http, xaddr, self._onvif_timeout)
        if self._onvif_at.get(rec.id) != xaddr:  # moved meanwhile: earlier misses are not its
            self._onvif_at[rec.id] = xaddr
            self._onvif_failures.pop(rec.id, None)
        if rec.xaddr != xaddr:
            return  # the answer is about an address the camera has left
        if not problem:
            self._onvif_failures.pop(rec.id, None)
            if rec.id in self._marked:
                self._marked.discard(rec.id)
                if rec.state is not CameraState.ONLINE:
                    self._inventory.recheck_now(rec.id)
            return
        misses = self._onvif_failures[rec.id] = self._onvif_failures.get(rec.id, 0) + 1
        if misses >= self._misses and rec.state is CameraState.ONLINE:
            self._marked.add(rec.id)
            self._onvif_due[rec.id] = time.monotonic() + self._interval
            self._inventory.report_not_answering(
                rec.id,
                f"the port answers but the ONVIF service does not: GetSystemDateAndTime: {problem}",
            )


def target(xaddr: str) -> tuple[str, int] | None:
    """The host and port probed for a camera: those of its device service address, or of its
    main stream URL for a camera added by RTSP URL (None when it has no host)."""
    try:
        parts = urlsplit(xaddr)
        host, port = parts.hostname, parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 80)
    except ValueError:
        return None
    return (host, port) if host else None
