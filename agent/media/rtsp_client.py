"""Asyncio RTSP 1.0 client that pulls RTP over TCP interleaved (RFC 2326 section 10.12).

Built on the sans-I/O codecs in `agent.proto`. Every network step is bounded by a timeout,
every size by the parser's limits; failures are `AgentError` subclasses whose text never
carries the credentials of the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from agent.errors import AgentError, AuthError, NotFound, ProtocolError, Unavailable, Unsupported
from agent.media.source import TrackInfo
from agent.proto.httpauth import basic_authorization, digest_authorization, parse_challenges
from agent.proto.rtp import RtpPacket, is_rtcp
from agent.proto.rtsp import (
    InterleavedFrame,
    RtspParser,
    RtspRequest,
    RtspResponse,
    Transport,
    encode_interleaved,
    parse_session,
    parse_transport,
)
from agent.proto.sdp import MediaDescription, SessionDescription

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
DEFAULT_SESSION_TIMEOUT = 60
MIN_KEEPALIVE = 1.0  # seconds; a server announcing a tiny session timeout cannot make us spin
TEARDOWN_TIMEOUT = 1.0
MAX_TRACKS = 4
MAX_EARLY_FRAMES = 256  # RTP that arrives before the PLAY answer, kept for packets()
_STATIC_RTPMAP = {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1), 26: ("JPEG", 90000, None)}


@dataclass(frozen=True)
class RtspTrack:
    """One track of the upstream presentation and the interleaved channel its RTP uses."""

    index: int
    info: TrackInfo
    control_url: str
    channel: int


def redact(url: str) -> str:
    """`url` without user:password."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class RtspClient:
    """Plays one RTSP presentation over one TCP connection; RTP comes out of `packets()`."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        idle_timeout: float = 10.0,
        user_agent: str = "camera-agent",
    ) -> None:
        try:
            parts = urlsplit(url)
            self._host = parts.hostname or ""
            self._port = parts.port or 554
        except ValueError as exc:
            raise ProtocolError("invalid RTSP URL") from exc
        if parts.scheme.lower() != "rtsp" or not self._host:
            raise ProtocolError(f"not an rtsp:// URL: {redact(url)[:80]!r}")
        self._username = unquote(parts.username) if parts.username is not None else None
        self._password = unquote(parts.password or "")
        self.url = redact(url)
        self._timeout = timeout
        self._idle_timeout = idle_timeout
        self._user_agent = user_agent
        self._parser = RtspParser()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._cseq = 0
        self._auth_scheme: str | None = None
        self._challenge: dict[str, str] = {}
        self._nc = 0
        self._session: str | None = None
        self._session_timeout = DEFAULT_SESSION_TIMEOUT
        self._keepalive_method = "OPTIONS"
        self._play_url = self.url
        self._channels: dict[int, int] = {}  # RTP channel -> track index
        self._events: deque[RtspResponse | RtspRequest | InterleavedFrame] = deque()
        self._early: deque[InterleavedFrame] = deque(maxlen=MAX_EARLY_FRAMES)
        self.tracks: list[RtspTrack] = []
        self.server: str | None = None

    # Public API.

    async def start(
        self,
        *,
        require: str | None = None,
        select: Callable[[MediaDescription], bool] | None = None,
    ) -> list[RtspTrack]:
        """Connect, DESCRIBE, SETUP every video/audio track over TCP and PLAY.

        `require`: an RTSP feature tag sent as `Require` with DESCRIBE, SETUP and PLAY (the ONVIF
        backchannel). `select`: only the media sections it accepts are SETUP."""
        tag = {"Require": require} if require else {}
        try:
            async with asyncio.timeout(self._timeout):
                self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        except (OSError, TimeoutError) as exc:
            raise Unavailable(f"cannot connect to {self.url}: {exc or 'timeout'}") from None
        options = await self._request("OPTIONS", self.url)
        public = {m.strip().upper() for m in options.headers.get("Public", "").split(",")}
        if "GET_PARAMETER" in public:
            self._keepalive_method = "GET_PARAMETER"
        self.server = options.headers.get("Server")
        describe = await self._request("DESCRIBE", self.url, Accept="application/sdp", **tag)
        media, base, aggregate = self._presentation(describe)
        for media_desc in media:
            if select is None or select(media_desc[1]):
                await self._setup(media_desc, base, **tag)
        if not self.tracks:
            raise Unsupported(f"{self.url}: no playable video or audio track")
        self._play_url = aggregate
        await self._request("PLAY", aggregate, Range="npt=0.000-", **tag)
        return list(self.tracks)

    async def send_interleaved(self, channel: int, payload: bytes) -> None:
        """Send one interleaved frame (RTP to the camera, e.g. on a backchannel track)."""
        if self._writer is None or self._session is None:
            raise ProtocolError("RtspClient.send_interleaved() before start()")
        try:
            self._writer.write(encode_interleaved(channel, payload))
            async with asyncio.timeout(self._timeout):
                await self._writer.drain()
        except (OSError, TimeoutError) as exc:
            raise Unavailable(f"{self.url}: send failed: {exc or 'timeout'}") from None

    async def packets(self) -> AsyncIterator[tuple[int, RtpPacket]]:
        """(track index, RTP packet) until the connection fails; RTCP is skipped."""
        if self._reader is None or self._session is None:
            raise ProtocolError("RtspClient.packets() before start()")
        keepalive = max(MIN_KEEPALIVE, self._session_timeout / 2)
        now = time.monotonic()
        next_keepalive = now + keepalive
        last_rtp = now
        while True:
            while self._early:
                if (item := self._rtp(self._early.popleft())) is not None:
                    last_rtp = time.monotonic()
                    yield item
            now = time.monotonic()
            if now >= next_keepalive:
                await self._send(self._build(self._keepalive_method, self._play_url))
                next_keepalive = now + keepalive
            if now - last_rtp >= self._idle_timeout:
                raise Unavailable(f"{self.url}: no RTP for {self._idle_timeout:g} s")
            wait = min(next_keepalive, last_rtp + self._idle_timeout) - now
            for event in await self._read(wait):
                if isinstance(event, InterleavedFrame):
                    if (item := self._rtp(event)) is not None:
                        last_rtp = time.monotonic()
                        yield item
                elif isinstance(event, RtspResponse):
                    self._check_keepalive(event)
                else:
                    await self._answer_request(event)

    async def close(self) -> None:
        """TEARDOWN (best effort, bounded) and close the connection; idempotent."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            if self._session is not None and not writer.is_closing():
                self._writer = writer
                with contextlib.suppress(AgentError, OSError, TimeoutError):
                    async with asyncio.timeout(TEARDOWN_TIMEOUT):
                        await self._send(self._build("TEARDOWN", self._play_url))
                        await self._response(self._cseq)
                self._writer = None
        finally:
            self._session = None
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(TEARDOWN_TIMEOUT):
                    await writer.wait_closed()

    # Requests.

    def _build(self, method: str, uri: str, **headers: str) -> RtspRequest:
        self._cseq += 1
        request = RtspRequest(method, uri)
        request.headers["CSeq"] = str(self._cseq)
        request.headers["User-Agent"] = self._user_agent
        if self._session is not None:
            request.headers["Session"] = self._session
        for name, value in headers.items():
            request.headers[name.replace("_", "-")] = value
        if self._auth_scheme is not None and self._username is not None:
            request.headers["Authorization"] = self._authorization(method, uri)
        return request

    def _authorization(self, method: str, uri: str) -> str:
        assert self._username is not None
        if self._auth_scheme == "basic":
            return basic_authorization(self._username, self._password)
        self._nc += 1
        return digest_authorization(
            self._username, self._password, method, uri, self._challenge, nc=self._nc
        )

    async def _request(self, method: str, uri: str, **headers: str) -> RtspResponse:
        """Send a request and return its 2xx response; answers one 401 with credentials."""
        retried = False
        while True:
            request = self._build(method, uri, **headers)
            await self._send(request)
            response = await self._response(self._cseq)
            if response.status != 401:
                break
            if retried or not self._use_challenge(response):
                raise AuthError(f"{method} {self.url}: authentication failed")
            retried = True
        if 200 <= response.status < 300:
            return response
        text = f"{method} {self.url}: {response.status} {response.reason[:60]}"
        if response.status == 403:
            raise AuthError(text)
        if response.status == 404:
            raise NotFound(text)
        if response.status in (453, 503) or response.status >= 500:
            raise Unavailable(text)
        if response.status in (461, 501, 551):
            raise Unsupported(text)
        raise ProtocolError(text)

    def _use_challenge(self, response: RtspResponse) -> bool:
        """Pick Digest (else Basic) from a 401; False when we cannot answer it."""
        if self._username is None:
            return False
        try:
            challenges = parse_challenges(response.headers.getall("WWW-Authenticate", []))
        except ProtocolError:
            return False
        for scheme, params in challenges:
            if scheme.lower() == "digest" and params.get("algorithm", "MD5").upper() in (
                "MD5",
                "MD5-SESS",
                "SHA-256",
                "SHA-256-SESS",
            ):
                self._auth_scheme, self._challenge, self._nc = "digest", params, 0
                return True
        if any(scheme.lower() == "basic" for scheme, _ in challenges):
            self._auth_scheme = "basic"
            return True
        return False

    async def _send(self, request: RtspRequest) -> None:
        if self._writer is None:
            raise Unavailable(f"{self.url}: not connected")
        log.debug("RTSP -> %s %s", request.method, redact(request.uri))
        try:
            self._writer.write(request.encode())
            async with asyncio.timeout(self._timeout):
                await self._writer.drain()
        except (OSError, TimeoutError) as exc:
            raise Unavailable(f"{self.url}: send failed: {exc or 'timeout'}") from None

    async def _response(self, cseq: int) -> RtspResponse:
        """Wait (bounded by `timeout`) for the response numbered `cseq`."""
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    while self._events:
                        event = self._events.popleft()
                        if isinstance(event, InterleavedFrame):
                            self._early.append(event)
                        elif isinstance(event, RtspRequest):
                            await self._answer_request(event)
                        elif event.cseq == cseq:
                            return event
                    self._events.extend(await self._read(None))
        except TimeoutError:
            raise Unavailable(f"{self.url}: no answer within {self._timeout:g} s") from None

    async def _read(
        self, wait: float | None
    ) -> list[RtspResponse | RtspRequest | InterleavedFrame]:
        """Events from the next chunk of data; [] when `wait` seconds pass first."""
        assert self._reader is not None
        try:
            async with asyncio.timeout(wait):
                data = await self._reader.read(READ_CHUNK)
        except TimeoutError:
            if wait is None:
                raise
            return []
        except OSError as exc:
            raise Unavailable(f"{self.url}: connection failed: {exc}") from None
        if not data:
            raise Unavailable(f"{self.url}: connection closed by the camera")
        return self._parser.feed(data)

    async def _answer_request(self, request: RtspRequest) -> None:
        """Servers may send requests (e.g. ANNOUNCE, GET_PARAMETER); we implement none."""
        response = RtspResponse(501 if request.method != "OPTIONS" else 200)
        if request.cseq is not None:
            response.headers["CSeq"] = str(request.cseq)
        if self._writer is not None:
            self._writer.write(response.encode())

    def _check_keepalive(self, response: RtspResponse) -> None:
        if response.status == 454:
            raise Unavailable(f"{self.url}: session expired on the camera")
        if response.status >= 300:
            log.debug("RTSP keep-alive to %s answered %d", self.url, response.status)

    # DESCRIBE and SETUP.

    def _presentation(
        self, describe: RtspResponse
    ) -> tuple[list[tuple[int, MediaDescription]], str, str]:
        """Playable media (index, description), the base URL and the aggregate control URL."""
        if not describe.body:
            raise ProtocolError(f"DESCRIBE {self.url}: empty answer")
        sdp = SessionDescription.parse(describe.body)
        base = redact(
            describe.headers.get("Content-Base")
            or describe.headers.get("Content-Location")
            or self.url
        )
        if urlsplit(base).scheme.lower() != "rtsp":
            base = self.url
        media = [
            (i, m)
            for i, m in enumerate(sdp.media)
            if m.kind in ("video", "audio") and m.proto.upper() == "RTP/AVP" and m.formats
        ][:MAX_TRACKS]
        aggregate = resolve_control(base, sdp.attribute("control"))
        return media, base, aggregate

    async def _setup(self, item: tuple[int, MediaDescription], base: str, **headers: str) -> None:
        _, media = item
        info = track_info(media)
        if info is None:
            return
        url = resolve_control(base, media.control)
        wanted = 2 * len(self.tracks)
        transport = Transport("RTP/AVP", "TCP", True, (wanted, wanted + 1))
        response = await self._request("SETUP", url, Transport=transport.format(), **headers)
        session = response.headers.get("Session")
        if session is None and self._session is None:
            raise ProtocolError(f"SETUP {self.url}: no Session header")
        if session is not None:
            ident, timeout = parse_session(session)
            self._session = ident
            if timeout:
                self._session_timeout = timeout
        reply = response.headers.get("Transport")
        channel = wanted
        if reply is not None:
            chosen = parse_transport(reply)[0]
            if chosen.lower != "TCP":
                raise Unsupported(f"SETUP {self.url}: camera refused TCP interleaved transport")
            if chosen.interleaved is not None:
                channel = chosen.interleaved[0]
        if channel in self._channels:
            raise ProtocolError(f"SETUP {self.url}: interleaved channel {channel} reused")
        index = len(self.tracks)
        self._channels[channel] = index
        self.tracks.append(RtspTrack(index, info, url, channel))

    def _rtp(self, frame: InterleavedFrame) -> tuple[int, RtpPacket] | None:
        index = self._channels.get(frame.channel)
        if index is None or is_rtcp(frame.payload):
            return None
        try:
            return index, RtpPacket.parse(frame.payload)
        except ProtocolError as exc:
            log.debug("RTSP %s: bad RTP packet dropped: %s", self.url, exc)
            return None


def resolve_control(base: str, control: str | None) -> str:
    """A control URL resolved against the base URL (RFC 2326 C.1.1).

    `*` or no control means the base itself. A relative control is appended to the base with a
    single "/" (what cameras expect, also when the base lacks its trailing slash); one that
    starts with "/" replaces the path.
    """
    if not control or control == "*":
        return base
    if urlsplit(control).scheme:
        return redact(control)
    if control.startswith("/"):
        return urljoin(base, control)
    return base.rstrip("/") + "/" + control


def track_info(media: MediaDescription) -> TrackInfo | None:
    """TrackInfo of an SDP media section (its first payload type), or None if unusable."""
    try:
        payload_type = int(media.formats[0])
    except ValueError:
        return None
    rtpmap = media.rtpmaps.get(payload_type)
    if rtpmap is not None:
        encoding, clock, channels = rtpmap.encoding.upper(), rtpmap.clock_rate, rtpmap.channels
    elif payload_type in _STATIC_RTPMAP:
        encoding, clock, channels = _STATIC_RTPMAP[payload_type]
    else:
        return None
    if clock <= 0:
        return None
    fmtp = media.fmtps.get(payload_type) or None
    framerate = None
    if (raw := media.attribute("framerate")) is not None:
        with contextlib.suppress(ValueError):
            framerate = float(raw) if 0 < float(raw) <= 1000 else None
    kind: Literal["video", "audio"] = "video" if media.kind == "video" else "audio"
    return TrackInfo(kind, encoding, clock, payload_type, fmtp, channels, framerate)
