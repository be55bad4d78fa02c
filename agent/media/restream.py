"""Restreaming: each camera stream is pulled once and served to any number of local viewers.

`CameraSource` is a `MediaSource` fed by one upstream `RtspClient`; RTP payloads pass through
unchanged (no decoding), re-timed onto the source's own timeline, which stays monotonic across
camera reconnects. `Restreamer` serves the shared sessions (agent.media.hub) on its own RTSP port
at `/<camera_id>/<stream>`, Digest authentication required.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from agent.errors import (
    AgentError,
    AuthError,
    ConfigError,
    NotFound,
    SessionLimit,
    Unavailable,
    Unsupported,
)
from agent.log import LogOnce
from agent.media.rtsp_client import RtspClient, RtspTrack
from agent.media.rtsp_server import RtspServer
from agent.media.source import (
    Fanout,
    MediaPacket,
    MediaSource,
    PacketQueue,
    Subscription,
    TrackInfo,
)
from agent.net.backoff import Backoff
from agent.proto.httpauth import HttpAuthenticator
from agent.proto.rtp import RtpPacket

log = logging.getLogger(__name__)

DEFAULT_LINGER = 10.0
MIN_RETRY = 0.5  # seconds between two upstream attempts, even when a viewer is waiting
MAX_AU_PACKETS = 2048  # an access unit longer than this is passed on in pieces
MAX_AU_BYTES = 4 * 1024 * 1024
MAX_TIMESTAMP_JUMP = 10.0  # seconds; a larger upstream jump re-anchors the track
MAX_GOP_PACKETS = 1024  # the last group of pictures, replayed to a new viewer, is bounded
MAX_GOP_BYTES = 2 * 1024 * 1024
REALM = "camera-agent"
#: Consumers that give way (agent.media.hub): a session only they use is closed for another.
BACKGROUND = frozenset({"qr", "snapshot"})
ANCHOR_STEP = 50  # a re-anchored track starts 1/50 s after the last timestamp handed out


class UpstreamDirectory(Protocol):
    """Where the camera streams are."""

    def upstream_url(self, camera_id: str, stream: str) -> str:
        """RTSP URL (with credentials) of a camera stream ("main", "sub" or a profile token).

        Raises NotFound / Unsupported / NotConfigured, or Unavailable while the camera is paused.
        """
        ...


def starts_keyframe(encoding: str, payload: bytes) -> bool:
    """True when an RTP payload starts an IDR/SPS (H.264) or IRAP/VPS (H.265) NAL unit."""
    if encoding == "H264":
        return any(kind in (5, 7) for kind in _h264_types(payload))
    if encoding == "H265":
        return any(16 <= kind <= 23 or kind == 32 for kind in _h265_types(payload))
    return True  # other video codecs (e.g. JPEG): every frame stands alone


def _h264_types(payload: bytes) -> list[int]:
    if not payload:
        return []
    kind = payload[0] & 0x1F
    if kind == 24:  # STAP-A
        return [nal[0] & 0x1F for nal in _aggregated(payload, 1)]
    if kind == 28:  # FU-A: only its start counts
        return [payload[1] & 0x1F] if len(payload) > 1 and payload[1] & 0x80 else []
    return [kind]


def _h265_types(payload: bytes) -> list[int]:
    if len(payload) < 2:
        return []
    kind = (payload[0] >> 1) & 0x3F
    if kind == 48:  # AP
        return [(nal[0] >> 1) & 0x3F for nal in _aggregated(payload, 2)]
    if kind == 49:  # FU
        return [payload[2] & 0x3F] if len(payload) > 2 and payload[2] & 0x80 else []
    return [kind]


def _aggregated(payload: bytes, pos: int) -> list[bytes]:
    """NAL units of an aggregation packet (size-prefixed); a truncated tail is ignored."""
    nals: list[bytes] = []
    while pos + 2 < len(payload) and len(nals) < 64:
        size = int.from_bytes(payload[pos : pos + 2], "big")
        pos += 2
        if size == 0 or pos + size > len(payload):
            break
        nals.append(payload[pos : pos + 1])
        pos += size
    return nals


@dataclass(slots=True)
class _Timeline:
    """Maps one track's upstream RTP timestamps onto the source timeline (in track ticks).

    The first packet is anchored at the source's clock; later ones follow the camera's
    timestamps. A new anchor (a camera reconnect, a jump) never goes back before what was
    handed out: a camera that sent ahead of real time (a burst of buffered frames) would
    otherwise hand every consumer a timestamp going backwards after it reconnects."""

    clock: int
    base: int | None = None
    last: int = 0
    ext: int = 0
    high: int | None = None  # highest ticks handed out

    def ticks(self, raw: int, now: float) -> int:
        if self.base is not None:
            delta = ((raw - self.last + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            if abs(delta) <= MAX_TIMESTAMP_JUMP * self.clock:
                self.last = raw
                self.ext += delta
                return self._out(self.base + self.ext)
        anchor = round(now * self.clock)
        if self.high is not None:
            anchor = max(anchor, self.high + max(1, self.clock // ANCHOR_STEP))
        self.base, self.last, self.ext = anchor, raw, 0
        return self._out(anchor)

    def restart(self) -> None:
        """The next packet comes from a new upstream session: anchor it afresh."""
        self.base = None

    def _out(self, ticks: int) -> int:
        if self.high is None or ticks > self.high:
            self.high = ticks
        return ticks


@dataclass(slots=True)
class _Track:
    info: TrackInfo
    timeline: _Timeline
    unit: list[MediaPacket] = field(default_factory=list)
    unit_bytes: int = 0
    unit_key: bool = False


def _same_layout(a: Sequence[TrackInfo], b: Sequence[TrackInfo]) -> bool:
    key = [(t.kind, t.encoding, t.clock_rate, t.payload_type) for t in a]
    return key == [(t.kind, t.encoding, t.clock_rate, t.payload_type) for t in b]


class CameraSource:
    """One camera stream, pulled over one upstream RTSP connection while anyone watches."""

    def __init__(
        self,
        camera_id: str,
        stream: str,
        url_of: Callable[[], str],
        *,
        linger: float = DEFAULT_LINGER,
        timeout: float = 10.0,
        idle_timeout: float = 10.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.camera_id = camera_id
        self.stream = stream
        self._url_of = url_of
        self._linger = linger
        self._timeout = timeout
        self._idle_timeout = idle_timeout
        self._backoff = backoff or Backoff(base=MIN_RETRY, cap=10.0)
        self._epoch = time.monotonic()
        self._fanout = self._new_fanout()
        self._info: list[TrackInfo] | None = None
        self._tracks: list[_Track] = []
        self._gop: list[MediaPacket] = []
        self._gop_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._linger_task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._attempt: asyncio.Future[None] | None = None
        self._kinds: dict[PacketQueue, str] = {}
        self.claimed_until = 0.0  # monotonic; see open()
        self.claimed_by = ""
        self._kick = asyncio.Event()
        self._log_once = LogOnce(log)
        self.ended = False
        self.state = "idle"
        self.last_frame_at: float | None = None  # epoch of the last video frame
        self.keyframe_interval: float | None = None
        self._frames: deque[float] = deque(maxlen=512)
        self._last_key: float | None = None
        self.packets = 0
        self.bytes = 0
        self.reconnects = 0
        self.last_error: str | None = None

    @property
    def name(self) -> str:
        return f"{self.camera_id}/{self.stream}"

    @property
    def subscribers(self) -> int:
        return self._fanout.count

    @property
    def running(self) -> bool:
        """True while the upstream task exists."""
        return self._task is not None and not self._task.done()

    @property
    def stopping(self) -> bool:
        """True while cancelled tasks (an upstream being torn down) are still finishing."""
        return bool(self._retiring)

    # MediaSource.

    def now(self) -> float:
        return time.monotonic() - self._epoch

    async def describe(self) -> list[TrackInfo]:
        """The upstream tracks while the camera streams; otherwise one (re)connection attempt
        is awaited, at most `timeout` seconds: a camera that is down is reported (Unavailable,
        RTSP 503) instead of a description from the last session that no packet would follow."""
        if self.ended:
            raise Unavailable(f"{self.name}: stream closed")
        if self.state == "streaming" and self._info is not None:
            return list(self._info)
        self._kick.set()  # a viewer is waiting: retry a failed upstream now
        self._start()
        if self._attempt is None or self._attempt.done():
            self._attempt = asyncio.get_running_loop().create_future()
        attempt = self._attempt
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.shield(attempt)
        except TimeoutError:
            pass
        return self._known_tracks()

    def _known_tracks(self) -> list[TrackInfo]:
        if self._info is None or self.state != "streaming":
            raise Unavailable(f"{self.name}: camera unreachable ({self.last_error or 'timeout'})")
        return list(self._info)

    def open(self, kind: str = "restream") -> None:
        """Start the upstream session if it is not running (it lingers without consumers); a
        consumer of `kind` is expected within `timeout` seconds (until then the session counts
        as that consumer's, not as idle)."""
        now = time.monotonic()
        if now >= self.claimed_until or self.claimed_by in BACKGROUND:
            self.claimed_by = kind
        self.claimed_until = now + self._timeout
        self._start()

    def _start(self) -> None:
        """The upstream running, and lingering while nobody subscribes."""
        self._ensure_upstream()
        if not self._fanout.count and not self.ended:
            self._schedule_linger()

    def subscribe(self) -> Subscription:
        return self.subscribe_as("restream")

    def subscribe_as(self, kind: str) -> Subscription:
        """Subscribe, counted as a consumer of `kind` (restream, push, webrtc, ...)."""
        if self.ended:
            queue = PacketQueue()
            queue.close()
            return queue
        self._kinds = {q: k for q, k in self._kinds.items() if not q.closed}
        queue = self._fanout.subscribe()
        self._kinds[queue] = kind
        queue.put(self._gop)  # start at the last keyframe instead of waiting for the next
        return queue

    def consumers(self) -> dict[str, int]:
        """Open subscriptions by kind."""
        out: dict[str, int] = {}
        for queue, kind in self._kinds.items():
            if not queue.closed:
                out[kind] = out.get(kind, 0) + 1
        return out

    # Life cycle.

    def close(self) -> None:
        """End every subscription and stop the upstream (finish with `wait_closed`)."""
        if self.ended:
            return
        self.ended = True
        self.state = "ended"
        self._fanout.close()
        for task in (self._task, self._linger_task):
            if task is not None:
                self._retire(task)
        self._task = self._linger_task = None

    async def wait_closed(self) -> None:
        while self._retiring:
            await asyncio.gather(*list(self._retiring), return_exceptions=True)

    def _retire(self, task: asyncio.Task[None]) -> None:
        task.cancel()
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _new_fanout(self) -> Fanout:
        return Fanout(on_active=self._on_active, on_idle=self._on_idle)

    def _on_active(self) -> None:
        if self._linger_task is not None:
            self._linger_task.cancel()
            self._linger_task = None
        self._ensure_upstream()

    def _on_idle(self) -> None:
        if not self.ended:
            self._schedule_linger()

    def _schedule_linger(self) -> None:
        if self._linger_task is None or self._linger_task.done():
            self._linger_task = asyncio.create_task(
                self._linger_then_stop(), name="restream-linger"
            )

    async def _linger_then_stop(self) -> None:
        await asyncio.sleep(self._linger)
        if self._fanout.count or self._task is None:
            return
        log.info("restream %s: no viewers for %.0f s, closing upstream", self.name, self._linger)
        task, self._task = self._task, None
        self._info = None  # re-read on the next DESCRIBE: the camera may have changed
        self.state = "idle"
        self._retire(task)

    def _ensure_upstream(self) -> None:
        if self.ended or self.running:
            return
        self._task = asyncio.create_task(self._run(), name=f"restream-{self.name}")

    # Upstream.

    async def _run(self) -> None:
        last_attempt = 0.0
        while True:
            last_attempt = time.monotonic()
            self.state = "connecting"
            await self._session()
            self._flush_all()
            self._finish_attempt()
            self._backoff.down()
            self.state = "backoff"
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._backoff.next_delay()):
                    await self._kick.wait()
            await asyncio.sleep(max(0.0, last_attempt + MIN_RETRY - time.monotonic()))
            self.reconnects += 1

    async def _session(self) -> None:
        """One upstream connection, until it fails."""
        client: RtspClient | None = None
        try:
            client = RtspClient(
                self._url_of(), timeout=self._timeout, idle_timeout=self._idle_timeout
            )
            tracks = await client.start()
            self._connected(tracks)
            async for index, packet in client.packets():
                self._on_packet(index, packet)
        except (AgentError, OSError) as exc:
            self.last_error = str(exc) or type(exc).__name__
            self._log_once.log(logging.WARNING, "up", "restream %s: %s", self.name, self.last_error)
        except Exception as exc:  # a bug must not end restreaming for good
            self.last_error = f"internal error: {type(exc).__name__}"
            log.exception("restream %s: upstream failed", self.name)
        finally:
            if client is not None:
                await client.close()

    def _connected(self, tracks: list[RtspTrack]) -> None:
        info = [t.info for t in tracks]
        if self._info is not None and not _same_layout(self._info, info):
            log.info("restream %s: camera changed its tracks, ending viewers", self.name)
            old, self._fanout = self._fanout, self._new_fanout()
            old.close()
        if self._tracks and _same_layout([t.info for t in self._tracks], info):
            for track in self._tracks:  # same tracks: their timelines go on, monotonic
                track.timeline.restart()
            self._tracks = [_Track(i, t.timeline) for i, t in zip(info, self._tracks, strict=True)]
        else:
            self._tracks = [_Track(i, _Timeline(i.clock_rate)) for i in info]
        self._info = info
        self._gop, self._gop_bytes = [], 0
        self._backoff.up()
        self.state = "streaming"
        self.last_error = None
        self._log_once.clear("up")
        log.info("restream %s: upstream playing (%d tracks)", self.name, len(info))
        self._finish_attempt()

    def _finish_attempt(self) -> None:
        if self._attempt is not None and not self._attempt.done():
            self._attempt.set_result(None)

    def _on_packet(self, index: int, rtp: RtpPacket) -> None:
        track = self._tracks[index]
        self.packets += 1
        self.bytes += len(rtp.payload)
        ticks = track.timeline.ticks(rtp.timestamp, self.now())
        if track.info.kind != "video":
            self._publish([MediaPacket(index, rtp.payload, ticks, rtp.marker, True)])
            return
        if track.unit and track.unit[0].timestamp != ticks:
            self._flush(track)
        if not track.unit:
            track.unit_key = False
        if not track.unit_key:
            track.unit_key = starts_keyframe(track.info.encoding, rtp.payload)
        track.unit.append(MediaPacket(index, rtp.payload, ticks, rtp.marker))
        track.unit_bytes += len(rtp.payload)
        if rtp.marker or len(track.unit) >= MAX_AU_PACKETS or track.unit_bytes >= MAX_AU_BYTES:
            self._flush(track)

    def _flush(self, track: _Track) -> None:
        """Publish a buffered access unit, its first packet flagged when it holds a keyframe."""
        unit = track.unit
        if not unit:
            return
        if track.unit_key:
            first = unit[0]
            unit[0] = MediaPacket(first.track, first.payload, first.timestamp, first.marker, True)
            if first.track == self._first_video:
                self._gop, self._gop_bytes = [], 0
        if unit[0].track == self._first_video:
            self._count_frame(track.unit_key)
        track.unit, track.unit_bytes, track.unit_key = [], 0, False
        self._publish(unit)

    def _count_frame(self, keyframe: bool) -> None:
        """Frame rate and keyframe interval of the main video track, for health reports."""
        now = time.monotonic()
        self.last_frame_at = time.time()
        self._frames.append(now)
        while self._frames and self._frames[0] < now - 5.0:
            self._frames.popleft()
        if keyframe:
            if self._last_key is not None:
                self.keyframe_interval = now - self._last_key
            self._last_key = now

    @property
    def fps(self) -> float | None:
        """Video frames per second over the last five seconds."""
        if len(self._frames) < 2 or self.state != "streaming":
            return None
        span = self._frames[-1] - self._frames[0]
        return (len(self._frames) - 1) / span if span > 0 else None

    @property
    def _first_video(self) -> int:
        return next((i for i, t in enumerate(self._tracks) if t.info.kind == "video"), -1)

    def _publish(self, packets: list[MediaPacket]) -> None:
        """Hand packets to the viewers and keep them in the bounded last-GOP buffer."""
        self._fanout.publish(packets)
        if self._gop or (packets[0].keyframe and packets[0].track == self._first_video):
            self._gop.extend(packets)
            self._gop_bytes += sum(len(p.payload) for p in packets)
            if len(self._gop) > MAX_GOP_PACKETS or self._gop_bytes > MAX_GOP_BYTES:
                self._gop, self._gop_bytes = [], 0

    def _flush_all(self) -> None:
        for track in self._tracks:
            self._flush(track)

    def status(self) -> dict[str, Any]:
        return {
            "camera": self.camera_id,
            "stream": self.stream,
            "subscribers": self.subscribers,
            "consumers": self.consumers(),
            "upstream": self.state,
            "packets": self.packets,
            "bytes": self.bytes,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "fps": round(self.fps, 2) if self.fps is not None else None,
            "keyframe_interval_seconds": (
                round(self.keyframe_interval, 3) if self.keyframe_interval is not None else None
            ),
            "last_frame_at": self.last_frame_at,
        }


class SharedSessions(Protocol):
    """Where the restream server gets its camera sessions (agent.media.hub.SessionHub)."""

    def consumer(self, kind: str, camera_id: str, stream: str) -> MediaSource:
        """A view of the camera stream's shared session; raises NotFound, Unsupported,
        NotConfigured, Unavailable (paused) or SessionLimit."""
        ...

    def sources_status(self) -> list[dict[str, Any]]: ...

    def close_camera(self, camera_id: str) -> None: ...


class Restreamer:
    """An RTSP server at rtsp://host:port/<camera_id>/<stream> fed by the shared sessions."""

    def __init__(
        self,
        sessions: SharedSessions,
        *,
        host: str = "127.0.0.1",
        port: int = 8554,
        username: str,
        password: str,
    ) -> None:
        if not username or not password:
            raise ConfigError("the restream server needs a user name and a password")
        self._sessions = sessions
        self._host = host
        self._log_once = LogOnce(log)

        def lookup(user: str) -> str | None:
            return password if hmac.compare_digest(user.encode(), username.encode()) else None

        self._server = RtspServer(
            host=host,
            port=port,
            resolve=self._resolve,
            auth=HttpAuthenticator(REALM, lookup, allow_basic=False),
            server_name="camera-agent restream",
        )

    @property
    def port(self) -> int:
        return self._server.port

    async def start(self) -> None:
        await self._server.start()

    async def stop(self) -> None:
        """Close every viewer connection (the shared sessions are the hub's to close)."""
        await self._server.stop()

    def url(self, camera_id: str, stream: str = "main") -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"rtsp://{host}:{self.port}/{quote(camera_id, safe='')}/{quote(stream, safe='')}"

    def status(self) -> dict[str, Any]:
        return {"port": self.port, "sources": self._sessions.sources_status()}

    def close_camera(self, camera_id: str) -> None:
        """End the viewers and the sessions of a camera (e.g. it was paused)."""
        self._sessions.close_camera(camera_id)

    def _resolve(self, path: str) -> MediaSource | None:
        """A viewer's path to a shared session; SessionLimit goes up (RTSP 453)."""
        parts = path.strip("/").split("/")
        if len(parts) != 2 or not all(parts):
            return None
        camera_id, stream = parts
        try:
            return self._sessions.consumer("restream", camera_id, stream)
        except SessionLimit:
            raise
        except (NotFound, Unsupported, AuthError, Unavailable) as exc:  # incl. NotConfigured
            self._log_once.log(logging.INFO, path, "restream %s refused: %s", path, exc)
            return None
