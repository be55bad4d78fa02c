"""Looks for activation QR codes in the cameras' pictures.

Each online camera's lowest-resolution profile is opened with PyAV in a thread; about two frames
a second are handed to zxing-cpp. A few cameras are read at a time (each for a bounded window),
so the CPU cost stays bounded. A camera that fails is retried after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import zxingcpp

from agent.discovery.records import CameraRecord, CameraState
from agent.errors import AgentError
from agent.media.remux import redact
from agent.net.backoff import Backoff
from agent.net.urls import with_credentials
from agent.proto import cloud as codec
from agent.secret import mask

log = logging.getLogger(__name__)

#: Frames per second handed to the QR decoder.
SAMPLE_FPS = 2.0
#: Cameras read at once.
CONCURRENCY = 3
#: Seconds one camera is read before its slot goes to the next. A QR code held up to a camera
#: stays in view for seconds, so short turns find it sooner on an NVR with many cameras.
WINDOW = 6.0
#: Seconds for opening a stream.
OPEN_TIMEOUT = 10.0
#: Seconds between looks at the inventory for cameras.
RESCAN = 2.0
#: Seconds between checks of `allowed` while scanning is paused.
PAUSE_POLL = 1.0

_QR = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)


@dataclass(frozen=True)
class Sighting:
    """A QR payload seen by a camera."""

    camera_id: str
    payload: codec.QrPayload


def sub_stream_url(rec: CameraRecord) -> str | None:
    """The RTSP URL of the camera's smallest profile, with its credentials in it."""
    profiles = [p for p in rec.profiles if isinstance(p.get("rtsp_uri"), str) and p["rtsp_uri"]]
    if not profiles:
        return None
    best = min(profiles, key=lambda p: int(p.get("width") or 0) * int(p.get("height") or 0))
    url = str(best["rtsp_uri"])
    if rec.credentials is None:
        return url
    return with_credentials(url, rec.credentials.username, rec.credentials.password.reveal())


def scan_stream(
    url: str, stop: threading.Event, found: Callable[[str], None], window: float
) -> None:
    """Read `url` for `window` seconds (or until `stop`), passing each QR text to `found`.
    Blocking: runs in a thread. Raises av errors on a bad stream."""
    deadline = time.monotonic() + window
    next_look = 0.0
    with av.open(
        url, options={"rtsp_transport": "tcp"}, timeout=(OPEN_TIMEOUT, OPEN_TIMEOUT)
    ) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        for frame in container.decode(stream):
            now = time.monotonic()
            if stop.is_set() or now > deadline:
                return
            if now < next_look:
                continue
            next_look = now + 1.0 / SAMPLE_FPS
            image = frame.to_ndarray(format="gray")
            for code in zxingcpp.read_barcodes(image, formats=_QR):
                if code.text:
                    found(code.text)


class QrScanner:
    """Scans the inventory's online cameras; sightings of our codes go to `sightings`."""

    def __init__(
        self,
        cameras: Callable[[], list[CameraRecord]],
        *,
        used_tokens: Callable[[], set[str]] = set,
        concurrency: int = CONCURRENCY,
        window: float = WINDOW,
        allowed: Callable[[], bool] = lambda: True,
        url_of: Callable[[CameraRecord], str | None] = sub_stream_url,
    ) -> None:
        self._cameras = cameras
        self._url_of = url_of
        self._allowed = allowed
        self.paused = False
        self._used = used_tokens
        self._window = window
        self._slots = asyncio.Semaphore(concurrency)
        self.sightings: asyncio.Queue[Sighting] = asyncio.Queue(maxsize=16)
        self._stop = threading.Event()
        self._backoff: dict[str, Backoff] = {}
        self._not_before: dict[str, float] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.scanning: set[str] = set()
        self._ignored: set[str] = set()

    def ignore(self, token: str) -> None:
        """Do not report this token again (it was refused)."""
        if len(self._ignored) < 1024:
            self._ignored.add(token)

    def status(self) -> dict[str, Any]:
        return {"scanning": sorted(self.scanning), "cameras": len(self._tasks)}

    async def run(self) -> None:
        """Scan until cancelled; every camera task is cancelled and awaited on the way out."""
        self._stop.clear()
        try:
            while True:
                if not self._allowed():
                    await self._pause()
                    continue
                online = {
                    r.id: r
                    for r in self._cameras()
                    if r.state == CameraState.ONLINE and not r.paused
                }
                for cid in list(self._tasks):
                    if self._tasks[cid].done():
                        del self._tasks[cid]
                for cid, rec in online.items():
                    if cid not in self._tasks and time.monotonic() >= self._not_before.get(cid, 0):
                        self._tasks[cid] = asyncio.create_task(self._scan(rec))
                await asyncio.sleep(RESCAN)
        finally:
            await self._end_scans()

    async def _end_scans(self) -> None:
        """Stop every reading thread and cancel and await every camera task."""
        self._stop.set()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _pause(self) -> None:
        """End the scans under way and wait (polling `allowed`) until scanning is allowed."""
        log.info("QR scanning paused (load shedding)")
        self.paused = True
        await self._end_scans()
        # Threads still winding down keep the old (set) event; new scans get a fresh one.
        self._stop = threading.Event()
        try:
            allowed = False
            while not allowed:
                await asyncio.sleep(PAUSE_POLL)
                allowed = self._allowed()
        finally:
            self.paused = False
        log.info("QR scanning resumed")

    async def _scan(self, rec: CameraRecord) -> None:
        try:
            url = self._url_of(rec)
        except AgentError as exc:  # no stream now, or the camera's session budget is used up
            log.info("QR scan of camera %s skipped: %s", rec.id, exc)
            url = None
        if url is None:
            self._not_before[rec.id] = time.monotonic() + 30.0
            return
        loop = asyncio.get_running_loop()

        def found(text: str) -> None:  # in the decoding thread
            loop.call_soon_threadsafe(self._offer, rec.id, text)

        async with self._slots:
            self.scanning.add(rec.id)
            try:
                await asyncio.to_thread(scan_stream, url, self._stop, found, self._window)
            except (av.FFmpegError, OSError, IndexError, ValueError) as exc:
                back = self._backoff.setdefault(rec.id, Backoff(base=2.0, cap=120.0))
                wait = back.next_delay()
                self._not_before[rec.id] = time.monotonic() + wait
                log.info(
                    "QR scan of camera %s failed (%s); retry in %.0f s",
                    rec.id,
                    _error_text(exc, url),
                    wait,
                )
                return
            finally:
                self.scanning.discard(rec.id)
        self._backoff.pop(rec.id, None)

    def _offer(self, camera_id: str, text: str) -> None:
        payload = codec.parse_qr(text)
        if payload is None or payload.token in self._ignored or payload.token in self._used():
            return
        with contextlib.suppress(asyncio.QueueFull):
            self.sightings.put_nowait(Sighting(camera_id, payload))


def _error_text(exc: BaseException, url: str) -> str:
    """A stream error for the log: PyAV names the URL it opened, credentials included."""
    return mask(str(exc).replace(url, redact(url)))
