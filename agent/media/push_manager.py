"""Per-camera push configuration: one relay per configured entry, following camera state.

A target PyAV's FFmpeg can write (rtsp://, rtmp://, and srt:// where its build has libsrt) gets
a `PushRelay` (a remux thread in this process); any other the system FFmpeg can write (srt://
with Debian's ffmpeg, udp://, tcp://, rtmps://) gets an `FfmpegRelay` (an `ffmpeg -c copy` child
process, agent.media.push_ffmpeg), supervised the same way, with the same states and status.
Both read the camera's shared session (agent.media.hub); a child gets its own loopback
credential, valid while that relay runs.

Each entry is supervised by its own task. While the camera is unknown, not ready or paused (its
`PushSources.upstream_url` raises), the entry waits and asks again every `recheck` seconds,
logging each distinct reason once. Once a URL is known the relay runs; the source is asked
again at the same pace, so a camera that becomes paused stops its relay (thread joined) and a
resumed one starts a new relay. A changed upstream URL (new credentials) restarts the relay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import av
import av.error

from agent.errors import AgentError, InvalidArgument
from agent.media.push import PushRelay, PushTarget
from agent.media.push_ffmpeg import FfmpegRelay, system_can_push
from agent.media.remux import redact
from agent.net.backoff import Backoff
from agent.net.taskgroup import TaskGroup

log = logging.getLogger(__name__)

#: Seconds between two questions to `PushSources` about an entry's camera.
RECHECK_INTERVAL = 3.0


@dataclass(frozen=True)
class PushEntry:
    """Publish `stream` of camera `camera_id` to `url` (rtsp://, rtmp:// or srt://)."""

    camera_id: str
    url: str
    stream: str = "main"

    def __post_init__(self) -> None:
        if not self.camera_id:
            raise InvalidArgument("push entry needs a camera id")
        if not self.stream:
            raise InvalidArgument("push entry needs a stream name")
        PushTarget(self.url)  # checks the scheme


class PushSources(Protocol):
    """Where the manager learns camera URLs."""

    def upstream_url(self, camera_id: str, stream: str) -> str:
        """The camera's RTSP URL with credentials.

        Raises NotFound, Unsupported or NotConfigured when the camera cannot be relayed now,
        Unavailable while it is paused (SessionLimit when its session budget is used up).
        """
        ...


class ChildSources(PushSources, Protocol):
    """Sources that give a child process its own credential."""

    def child_url(self, camera_id: str, stream: str) -> tuple[str, Callable[[], None]]:
        """A URL for one child process and the call that revokes its credential."""
        ...


_PROTOCOLS: dict[str, bool] = {}


def protocol_available(scheme: str) -> bool:
    """Whether PyAV's FFmpeg has the protocol (cached; blocking, at most ~0.2 s the first time).

    FFmpeg has no list of its protocols in PyAV, so open a caller that cannot connect (the
    discard port on loopback): "protocol not found" is the only answer that means no."""
    if scheme in ("rtsp", "rtmp"):
        return True  # built into every FFmpeg
    if scheme not in _PROTOCOLS:
        try:
            av.open(f"{scheme}://127.0.0.1:9?mode=caller", timeout=0.2).close()
        except av.error.ProtocolNotFoundError:
            _PROTOCOLS[scheme] = False
        except (av.error.FFmpegError, OSError, ValueError):
            _PROTOCOLS[scheme] = True
        else:
            _PROTOCOLS[scheme] = True
    return _PROTOCOLS[scheme]


class _Slot:
    """Supervision state of one entry."""

    def __init__(self, entry: PushEntry) -> None:
        self.entry = entry
        self.state = "new"
        self.reason = ""
        self.relay: PushRelay | FfmpegRelay | None = None
        self.via = ""  # "pyav" or "ffmpeg" once chosen


class PushManager:
    """Runs one relay per entry while its camera is available; see the module docstring."""

    def __init__(
        self,
        sources: PushSources,
        entries: Sequence[PushEntry],
        *,
        recheck: float = RECHECK_INTERVAL,
        open_timeout: float = 10.0,
        read_timeout: float = 10.0,
        backoff: Callable[[], Backoff] | None = None,
    ) -> None:
        if recheck <= 0:
            raise InvalidArgument("recheck interval must be positive")
        self._sources = sources
        self._slots = [_Slot(e) for e in entries]
        self._recheck = recheck
        self._timeouts = (open_timeout, read_timeout)
        self._backoff = backoff
        self._running = False

    def status(self) -> list[dict[str, Any]]:
        """Per entry: camera_id, stream, target (without credentials), state, reason, relay."""
        return [
            {
                "camera_id": slot.entry.camera_id,
                "stream": slot.entry.stream,
                "target": redact(slot.entry.url),
                "state": slot.state,
                "reason": slot.reason,
                "via": slot.via or None,
                "relay": slot.relay.status() if slot.relay is not None else None,
            }
            for slot in self._slots
        ]

    async def run(self) -> None:
        """Supervise every entry until cancelled; all relays and their threads are stopped."""
        if self._running:
            raise RuntimeError("push manager already running")
        self._running = True
        try:
            async with TaskGroup() as group:
                for slot in self._slots:
                    group.create_task(self._supervise(slot), name=f"push-{slot.entry.camera_id}")
                await asyncio.Future()  # until cancelled
        finally:
            for slot in self._slots:
                slot.state = "stopped"
            self._running = False

    # One entry.

    async def _supervise(self, slot: _Slot) -> None:
        entry = slot.entry
        name = f"{entry.camera_id}/{entry.stream}"
        scheme = urlsplit(entry.url).scheme.lower()
        if await asyncio.to_thread(protocol_available, scheme):
            slot.via = "pyav"
        elif await asyncio.to_thread(system_can_push, entry.url):
            slot.via = "ffmpeg"
        else:
            slot.state = "unsupported"
            slot.reason = (
                f"neither PyAV's FFmpeg nor a system ffmpeg can write {scheme}:// "
                "(SRT needs an FFmpeg with libsrt, e.g. Debian's ffmpeg package)"
            )
            log.warning("%s: cannot push to %s: %s", name, redact(entry.url), slot.reason)
            return
        while True:
            url = self._ask(slot, name)
            if url is None:
                await asyncio.sleep(self._recheck)
                continue
            slot.state, slot.reason = "running", ""
            log.info("%s: pushing to %s (%s)", name, redact(entry.url), slot.via)
            release: Callable[[], None] = _nothing
            if slot.via == "ffmpeg":
                source, release = self._child_url(entry, url)
                relay: PushRelay | FfmpegRelay = FfmpegRelay(
                    source, PushTarget(entry.url), name=name, **self._relay_options()
                )
            else:
                relay = PushRelay(url, PushTarget(entry.url), name=name, **self._relay_options())
            slot.relay = relay
            task = asyncio.create_task(relay.run(), name=f"push-relay-{name}")
            try:
                await self._watch(slot, name, url, task)
            finally:
                try:
                    await _stop(task)
                finally:
                    release()

    def _relay_options(self) -> dict[str, Any]:
        return {
            "open_timeout": self._timeouts[0],
            "read_timeout": self._timeouts[1],
            "backoff": self._backoff() if self._backoff else None,
        }

    def _child_url(self, entry: PushEntry, url: str) -> tuple[str, Callable[[], None]]:
        """The source URL for an ffmpeg child: its own credential when the sources give one."""
        child_url = getattr(self._sources, "child_url", None)
        if child_url is None:
            return url, _nothing
        found: tuple[str, Callable[[], None]] = child_url(entry.camera_id, entry.stream)
        return found

    async def _watch(self, slot: _Slot, name: str, url: str, task: asyncio.Task[None]) -> None:
        """Return when the relay must stop: camera gone or paused, URL changed, relay ended."""
        while True:
            await asyncio.wait({task}, timeout=self._recheck)
            if task.done():
                exc = None if task.cancelled() else task.exception()
                slot.state, slot.reason = "waiting", f"relay ended: {exc!r}"
                log.warning("%s: relay ended unexpectedly: %r", name, exc)
                await asyncio.sleep(self._recheck)
                return
            current = self._ask(slot, name)
            if current is None:
                log.info("%s: stopping the relay (%s)", name, slot.reason)
                return
            if current != url:
                log.info("%s: camera URL changed, restarting the relay", name)
                return

    def _ask(self, slot: _Slot, name: str) -> str | None:
        """The camera URL, or None with the entry set to waiting and the reason logged once."""
        entry = slot.entry
        try:
            return self._sources.upstream_url(entry.camera_id, entry.stream)
        except AgentError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if reason != slot.reason or slot.state != "waiting":
                log.info("%s: waiting (%s)", name, reason)
        except Exception as exc:  # a faulty source must not end the other entries
            reason = f"error: {type(exc).__name__}: {exc}"
            if reason != slot.reason or slot.state != "waiting":
                log.exception("%s: waiting (%s)", name, reason)
        slot.state, slot.reason = "waiting", reason
        return None


def _nothing() -> None:
    pass


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel the relay task and wait for its end (thread joined), even if cancelled again."""
    task.cancel()
    interrupted = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            interrupted = True
    if not task.cancelled() and task.exception() is not None:
        log.debug("%s ended with %r", task.get_name(), task.exception())
    if interrupted:
        raise asyncio.CancelledError
