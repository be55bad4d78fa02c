"""Push relay: republish a camera's RTSP stream to an rtsp://, rtmp:// or srt:// target.

No transcoding: one worker thread per relay demuxes the camera with PyAV and muxes the same
packets to the target (see `agent.media.remux`). The event loop only receives counter snapshots,
at most one pending at a time, and awaits the thread's end on cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from agent.config import PUSH_SCHEMES
from agent.errors import InvalidArgument
from agent.media.remux import RelayStats, RemuxWorker, redact, target_format
from agent.net.backoff import Backoff

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushTarget:
    """Where a relay publishes: rtsp:// (ANNOUNCE/RECORD), rtmp:// (FLV), srt:// (MPEG-TS), or
    another scheme of `agent.config.PUSH_SCHEMES` that the system ffmpeg writes."""

    url: str

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme.lower()
        if scheme not in PUSH_SCHEMES:
            raise InvalidArgument(
                f"unsupported target scheme {scheme!r} ({', '.join(PUSH_SCHEMES)})"
            )

    @property
    def format(self) -> str:
        """The muxer (PyAV's for its schemes, else the system ffmpeg's)."""
        try:
            return target_format(self.url)[0]
        except ValueError:
            from agent.media.push_ffmpeg import ffmpeg_format

            return ffmpeg_format(self.url)[0]


class Relay:
    """What every relay has (`PushRelay` here, `agent.media.push_ffmpeg.FfmpegRelay`): its
    source and target, timeouts, and the shape of its status."""

    def __init__(
        self,
        source_url: str,
        target: PushTarget,
        *,
        name: str = "",
        open_timeout: float = 10.0,
        read_timeout: float = 10.0,
    ) -> None:
        if open_timeout <= 0 or read_timeout <= 0:
            raise InvalidArgument("timeouts must be positive")
        self.source_url = source_url
        self.target = target
        self.name = name or redact(source_url)
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout

    def _status_of(self, counters: dict[str, Any]) -> dict[str, Any]:
        """The counters with the relay's name, and its URLs without credentials."""
        return {
            **counters,
            "name": self.name,
            "source": redact(self.source_url),
            "target": redact(self.target.url),
        }


class PushRelay(Relay):
    """Relays `source_url` to `target` until cancelled, reconnecting both sides with backoff."""

    def __init__(
        self,
        source_url: str,
        target: PushTarget,
        *,
        name: str = "",
        open_timeout: float = 10.0,
        read_timeout: float = 10.0,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(
            source_url, target, name=name, open_timeout=open_timeout, read_timeout=read_timeout
        )
        self._backoff = backoff
        self._status = RelayStats().snapshot()
        self._pending = False
        self._latest = self._status
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def status(self) -> dict[str, Any]:
        """State, packets, bytes, reconnects, started_at (wall clock), source, target, and
        failures: `last_error` is the one being recovered from ("" again once packets reach
        the target), `last_failure` and `last_failure_at` (wall clock) the latest one, kept."""
        return self._status_of(self._status)

    async def run(self) -> None:
        """Relay until cancelled; the worker thread is stopped and joined before returning."""
        if self._thread is not None:
            raise RuntimeError("relay already running")
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        done: asyncio.Future[None] = loop.create_future()

        def report(snapshot: dict[str, Any]) -> None:
            with self._lock:
                self._latest = snapshot
                if self._pending:
                    return
                self._pending = True
            with contextlib.suppress(RuntimeError):  # loop closed
                loop.call_soon_threadsafe(self._apply)

        worker = RemuxWorker(
            self.source_url,
            self.target.url,
            name=self.name,
            stop=stop,
            on_stats=report,
            open_timeout=self.open_timeout,
            read_timeout=self.read_timeout,
            backoff=self._backoff,
        )

        def body() -> None:
            try:
                worker.run()
            finally:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_finish, done)

        thread = threading.Thread(target=body, name=f"push-{self.name}", daemon=True)
        self._thread = thread
        thread.start()
        try:
            await asyncio.shield(done)
        finally:
            stop.set()
            if not done.done():
                log.debug("%s: waiting for the relay thread to stop", self.name)
                await _wait_quietly(done)
            thread.join()
            self._thread = None
            self._status = worker.stats.snapshot()

    def _apply(self) -> None:
        with self._lock:
            self._pending = False
            self._status = self._latest


def _finish(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


async def _wait_quietly(done: asyncio.Future[None]) -> None:
    """Await the thread's end even if this task is cancelled again meanwhile."""
    while not done.done():
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            if done.done():
                break
            continue
