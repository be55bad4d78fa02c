"""One camera session per stream, shared by every consumer, within each camera's budget.

Cheap cameras allow two to four RTSP sessions and fail for everyone past that. The hub opens at
most one upstream RTSP session per camera stream (a `CameraSource`, keyed by the stream's URL so
"main" and its profile token are one session) and fans it out to every consumer: restream
viewers, push relays, WebRTC viewers, snapshot decoding and QR scanning (and, later, recording).
A session opens on first use and closes `linger` seconds after its last consumer leaves.

Consumers that demux with FFmpeg (PyAV in this process, or a system `ffmpeg` child) read the
shared session from the hub's own RTSP server on loopback at `/<kind>/<camera id>/<stream>`,
Digest-authenticated with a random password made at start (never stored). A child process gets
its own credential (`lease`), valid only while it runs.

Budget: a camera holds `limit_of(camera_id)` sessions at most. Open shared sessions and the
cloud's tunnels to the camera's RTSP port (`tunnels_of`; the streamer speaks RTSP to the camera
itself) count. A consumer that needs a new session beyond the budget gets `SessionLimit` with
the reason, after sessions nobody uses (lingering) were closed to make room, and, for a consumer
that is not background work, sessions only QR scanning or snapshots use. Pictures (snapshots, QR
scanning) read a session already open when there is one. Tunnels are counted but never refused
here: the cloud's pull comes first, local consumers give way.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from agent.errors import (
    AuthError,
    ConfigError,
    InvalidArgument,
    NotFound,
    SessionLimit,
    Unavailable,
    Unsupported,
)
from agent.log import LogOnce
from agent.media.restream import (
    BACKGROUND,
    DEFAULT_LINGER,
    CameraSource,
    UpstreamDirectory,
)
from agent.media.rtsp_server import RtspServer
from agent.media.source import MediaSource, Subscription, TrackInfo
from agent.proto.httpauth import HttpAuthenticator

log = logging.getLogger(__name__)

#: Who may read the hub's loopback server, by the first segment of the path.
KINDS = frozenset({"restream", "push", "webrtc", "snapshot", "qr", "record"})
#: What else opens a session of its own on a camera (`hold`): the audio backchannel.
HOLD_KINDS = frozenset({"talk"})
#: Shared sessions at most (all cameras); beyond, new streams are refused.
MAX_SOURCES = 256
#: Sessions a camera allows unless configured.
DEFAULT_MAX_SESSIONS = 2
INTERNAL_USER = "camera-agent"
INTERNAL_REALM = "camera-agent internal"


class Consumer:
    """A `MediaSource` view of a shared session whose subscriptions count as `kind`."""

    def __init__(self, source: CameraSource, kind: str) -> None:
        self.source = source
        self.kind = kind

    async def describe(self) -> Sequence[TrackInfo]:
        return await self.source.describe()

    def now(self) -> float:
        return self.source.now()

    def subscribe(self) -> Subscription:
        return self.source.subscribe_as(self.kind)


def stream_key(url: str) -> str:
    """The upstream URL without its credentials: two names of one camera stream share it."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme.lower(), netloc.lower(), parts.path, parts.query, ""))


class Hold:
    """A camera session opened outside the shared ones (e.g. the audio backchannel), counted in
    the camera's budget until `release()`."""

    def __init__(self, hub: SessionHub, camera_id: str, kind: str) -> None:
        self._hub = hub
        self.camera_id = camera_id
        self.kind = kind

    def release(self) -> None:
        self._hub._holds.get(self.camera_id, set()).discard(self)


class SessionHub:
    """The shared camera sessions of the agent and the loopback server that hands them out."""

    def __init__(
        self,
        directory: UpstreamDirectory,
        *,
        limit_of: Callable[[str], int] = lambda _camera_id: DEFAULT_MAX_SESSIONS,
        tunnels_of: Callable[[str], int] = lambda _camera_id: 0,
        linger: float = DEFAULT_LINGER,
        timeout: float = 10.0,
        idle_timeout: float = 10.0,
        host: str = "127.0.0.1",
    ) -> None:
        self._directory = directory
        self._limit_of = limit_of
        self._tunnels_of = tunnels_of
        self._linger = linger
        self._timeout = timeout
        self._idle_timeout = idle_timeout
        self._host = host
        self._sources: dict[tuple[str, str], CameraSource] = {}
        self._closing: set[CameraSource] = set()
        self._password = secrets.token_urlsafe(24)
        self._leases: dict[str, str] = {}
        self._holds: dict[str, set[Hold]] = {}
        self.refused = 0
        self._log_once = LogOnce(log)
        self._server = RtspServer(
            host=host,
            port=0,
            resolve=self._resolve_internal,
            auth=HttpAuthenticator(INTERNAL_REALM, self._lookup, allow_basic=False),
            server_name="camera-agent hub",
        )

    # ---- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._server.start()
        except OSError as exc:
            reason = f"the camera session hub cannot listen on {self._host}: {exc}"
            raise ConfigError(reason) from None

    async def stop(self) -> None:
        """Close the loopback server, every consumer and every camera session."""
        await self._server.stop()
        for key in list(self._sources):
            self._retire(key)
        closing, self._closing = self._closing, set()
        await asyncio.gather(*(s.wait_closed() for s in closing))

    @property
    def port(self) -> int:
        return self._server.port

    # ---- sessions ------------------------------------------------------------------------

    def source(self, camera_id: str, stream: str, kind: str = "restream") -> CameraSource:
        """The shared session of a camera stream, opened (connecting) if it was not.

        Raises NotFound / Unsupported / NotConfigured / Unavailable (paused) from the
        directory, and SessionLimit when the camera's budget is used up."""
        url = self._directory.upstream_url(camera_id, stream)
        key = (camera_id, stream_key(url))
        source = self._sources.get(key)
        if source is not None and source.ended:
            del self._sources[key]
            source = None
        if source is not None and source.running:
            source.open(kind)  # a new consumer of this kind is on its way
            return source
        self._admit(camera_id, key, kind)
        if source is None:
            self._prune()
            if len(self._sources) >= MAX_SOURCES:
                raise Unavailable(f"too many camera streams open (limit {MAX_SOURCES})")
            source = CameraSource(
                camera_id,
                stream,
                lambda: self._directory.upstream_url(camera_id, stream),
                linger=self._linger,
                timeout=self._timeout,
                idle_timeout=self._idle_timeout,
            )
            self._sources[key] = source
        source.open(kind)
        return source

    def consumer(self, kind: str, camera_id: str, stream: str) -> Consumer:
        if kind not in KINDS:
            raise InvalidArgument(f"unknown consumer kind {kind!r}")
        return Consumer(self.source(camera_id, stream, kind), kind)

    def url(
        self,
        kind: str,
        camera_id: str,
        stream: str,
        *,
        credentials: tuple[str, str] | None = None,
    ) -> str:
        """The loopback RTSP URL a `kind` consumer reads the shared session from; the session
        is opened (budget checked) now, so a refusal comes with its reason here."""
        self.consumer(kind, camera_id, stream)
        user, password = credentials or (INTERNAL_USER, self._password)
        login = f"{quote(user, safe='')}:{quote(password, safe='')}@"
        path = "/".join(quote(p, safe="") for p in (kind, camera_id, stream))
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"rtsp://{login}{host}:{self.port}/{path}"

    def frame_url(self, kind: str, camera_id: str) -> str:
        """Where to decode a picture of the camera: its sub stream, or the main one when the
        budget has room only for a session already open."""
        for stream in ("sub", "main"):
            if self._is_open(camera_id, stream):
                return self.url(kind, camera_id, stream)
        try:
            return self.url(kind, camera_id, "sub")
        except (SessionLimit, Unsupported):  # no room, or one stream only
            return self.url(kind, camera_id, "main")

    def _is_open(self, camera_id: str, stream: str) -> bool:
        try:
            key = (camera_id, stream_key(self._directory.upstream_url(camera_id, stream)))
        except (NotFound, Unsupported, AuthError, Unavailable):
            return False
        source = self._sources.get(key)
        return source is not None and source.running and not source.ended

    def hold(self, camera_id: str, kind: str) -> Hold:
        """Count a session `kind` opens on the camera by itself (SessionLimit when the budget
        has no room, after making room as for a shared session); `release()` it when closed."""
        if kind not in HOLD_KINDS:
            raise InvalidArgument(f"unknown session kind {kind!r}")
        self._admit(camera_id, None, kind)
        held = Hold(self, camera_id, kind)
        self._holds.setdefault(camera_id, set()).add(held)
        return held

    def lease(self) -> tuple[str, str]:
        """A credential for one child process; `release` it when the child ends."""
        user = f"lease-{secrets.token_hex(6)}"
        self._leases[user] = secrets.token_urlsafe(24)
        return user, self._leases[user]

    def release(self, user: str) -> None:
        self._leases.pop(user, None)

    def close_camera(self, camera_id: str) -> None:
        """End every consumer and session of a camera (it was paused or forgotten)."""
        for key in [k for k in self._sources if k[0] == camera_id]:
            self._retire(key)
        self._closing = {s for s in self._closing if s.stopping}

    def _retire(self, key: tuple[str, str]) -> None:
        """Forget a session and close it (`stop` waits for the ones still closing)."""
        source = self._sources.pop(key)
        source.close()
        self._closing.add(source)

    def held(self, camera_id: str) -> int:
        """Sessions the camera holds now: shared sessions open plus tunnels to its RTSP port."""
        return self._open_count(camera_id) + self._tunnels(camera_id)

    def _open(self, camera_id: str, exclude: tuple[str, str] | None = None) -> list[CameraSource]:
        """The camera's shared sessions holding a session on it (all but `exclude`)."""
        return [
            s
            for key, s in self._sources.items()
            if key[0] == camera_id and key != exclude and s.running and not s.ended
        ]

    def _open_count(self, camera_id: str, exclude: tuple[str, str] | None = None) -> int:
        return len(self._open(camera_id, exclude)) + len(self._holds.get(camera_id, ()))

    def _tunnels(self, camera_id: str) -> int:
        try:
            return max(0, int(self._tunnels_of(camera_id)))
        except Exception:  # a figure for the budget must not break a viewer
            log.exception("counting the tunnels of camera %s failed", camera_id)
            return 0

    def make_room(self, camera_id: str) -> None:
        """A cloud tunnel to the camera's RTSP port is opening: if the camera would hold more
        than its budget, close the sessions that give way (unused, or only QR scanning and
        snapshots use them). The tunnel opens anyway: the cloud's pull comes first."""
        limit = self._limit_of(camera_id)
        if self._open_count(camera_id) + self._tunnels(camera_id) + 1 > limit:
            self._evict(camera_id, None, "tunnel")

    def _evict(self, camera_id: str, key: tuple[str, str] | None, kind: str) -> None:
        """Close the camera's sessions that give way to a new one of `kind`."""
        for other, source in list(self._sources.items()):
            if other[0] != camera_id or other == key:
                continue
            users = set(source.consumers())
            if not users and time.monotonic() < source.claimed_until:
                users = {source.claimed_by}  # opened for a consumer on its way
            if not users or (kind not in BACKGROUND and users <= BACKGROUND):
                log.info("camera %s: closing its %s session to make room", camera_id, source.stream)
                self._retire(other)

    def _admit(self, camera_id: str, key: tuple[str, str] | None, kind: str) -> None:
        limit = self._limit_of(camera_id)
        if self._open_count(camera_id, key) + self._tunnels(camera_id) < limit:
            return
        self._evict(camera_id, key, kind)
        tunnels = self._tunnels(camera_id)
        count = self._open_count(camera_id, key) + tunnels
        if count < limit:
            return
        self.refused += 1
        streams = sorted(s.stream for s in self._open(camera_id))
        holds = sorted(h.kind for h in self._holds.get(camera_id, ()))
        held = ", ".join([*streams, *holds, *(["cloud tunnel"] * tunnels)]) or "none"
        message = (
            f"camera {camera_id} allows {limit} RTSP session(s) and holds {count} ({held}); "
            "close a consumer or raise [sessions] max_sessions for it"
        )
        self._log_once.log(logging.WARNING, f"limit {camera_id}", "%s", message)
        raise SessionLimit(message)

    def _prune(self) -> None:
        for key, source in list(self._sources.items()):
            if not source.subscribers and not source.running:
                del self._sources[key]

    # ---- loopback server -----------------------------------------------------------------

    def _lookup(self, user: str) -> str | None:
        if hmac.compare_digest(user.encode(), INTERNAL_USER.encode()):
            return self._password
        return self._leases.get(user)

    def _resolve_internal(self, path: str) -> MediaSource | None:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if len(parts) != 3 or not all(parts) or parts[0] not in KINDS:
            return None
        kind, camera_id, stream = parts
        try:
            return self.consumer(kind, camera_id, stream)
        except (NotFound, Unsupported, AuthError) as exc:  # AuthError: NotConfigured too
            self._log_once.log(logging.INFO, path, "hub %s refused: %s", path, exc)
            return None

    # ---- status --------------------------------------------------------------------------

    def sources_status(self) -> list[dict[str, Any]]:
        """Each shared session, as the restream status lists them."""
        return [s.status() for s in self._sources.values()]

    def status(self, camera_ids: Sequence[str] = ()) -> dict[str, Any]:
        """Per camera: its budget, the sessions it holds and who consumes each."""
        cameras: dict[str, Any] = {}
        known = [*camera_ids, *(k[0] for k in self._sources), *self._holds]
        for cid in dict.fromkeys(known):
            streams = [
                {
                    "stream": s.stream,
                    "upstream": s.state,
                    "open": s.running,
                    "consumers": s.consumers(),
                    "last_error": s.last_error,
                }
                for k, s in self._sources.items()
                if k[0] == cid
            ]
            cameras[cid] = {
                "max_sessions": self._limit_of(cid),
                "held": self.held(cid),
                "tunnels": self._tunnels(cid),
                "streams": streams,
                "other": sorted(h.kind for h in self._holds.get(cid, ())),
            }
        return {"refused": self.refused, "cameras": cameras}
