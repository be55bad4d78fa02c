"""WebRTC live view: a viewer's SDP offer in, the answer out, the camera's H.264 passed through.

Each session is one aiortc `RTCPeerConnection` sending a camera's H.264 packets as they come
from RTSP (no decode, no re-encode); an H.265 stream is passed through the same way to a viewer
whose offer lists H.265 (agent/media/webrtc_h265.py adds H.265 to aiortc), else, for a camera
with H.265 streams only, the H.264 of a transcoding feed (`answer(..., transcode=True)`), refused
while `transcode_allowed()` is false (load shedding). Viewers of the same RTSP URL and mode
(passed through or transcoded) share one `H264Feed` (and so one encoder). No STUN
or TURN server is configured: only host candidates on the LAN (or the addresses given).
Sessions close on ICE failure, on the end of the camera stream and when not connected for
`idle_timeout` seconds; `close()` ends every peer connection, task and reader thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)

from agent.errors import InvalidArgument, Unavailable, Unsupported
from agent.media import webrtc_h265
from agent.media.backchannel import TalkRelay, TalkTarget
from agent.media.h264_feed import H264Feed, H264Track
from agent.media.webrtc_sdp import check_offer, ice_host_addresses, lan_addresses

log = logging.getLogger(__name__)

#: Seconds allowed for setting the remote description, creating and gathering the answer.
NEGOTIATION_TIMEOUT = 10.0
#: Seconds between checks of a session's state (state changes also wake the check at once).
WATCH_INTERVAL = 1.0


@dataclass(eq=False)
class _Session:
    pc: RTCPeerConnection
    feed: H264Feed
    track: H264Track
    talk: TalkRelay | None = None  # the viewer's microphone to the camera's speaker
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    closed: bool = False


class WebRtcSessions:
    """All WebRTC viewers of this agent, bounded in number."""

    def __init__(
        self,
        *,
        max_sessions: int = 8,
        idle_timeout: float = 30.0,
        open_timeout: float = 10.0,
        read_timeout: float = 5.0,
        ice_addresses: Sequence[str] | None = None,
        transcode_allowed: Callable[[], bool] | None = None,
        talk_targets: Callable[[str], TalkTarget] | None = None,
    ) -> None:
        if max_sessions < 1 or idle_timeout <= 0 or open_timeout <= 0 or read_timeout <= 0:
            raise InvalidArgument("limits and timeouts must be positive")
        self._max = max_sessions
        self._idle = idle_timeout
        self._open_timeout = open_timeout
        self._read_timeout = read_timeout
        self._ice_addresses = tuple(ice_addresses) if ice_addresses is not None else None
        self._sessions: set[_Session] = set()
        self._transcode_allowed = transcode_allowed
        #: The two-way audio target of a camera (agent.media.backchannel.talk_targets).
        self.talk_targets = talk_targets
        #: Feeds by (URL, transcode): a pass-through and a transcode of one URL are two feeds.
        self._feeds: dict[tuple[str, bool], H264Feed] = {}
        #: True when aiortc could be taught H.265 (webrtc_h265.enable()): H.265 pass-through.
        self.h265 = webrtc_h265.enable()
        self._pending = 0
        self._closed = False

    @property
    def count(self) -> int:
        """Sessions open or being negotiated."""
        return len(self._sessions) + self._pending

    @property
    def feeds(self) -> int:
        """Camera connections currently open."""
        return len(self._feeds)

    @property
    def encoders(self) -> int:
        """Transcoding feeds (H.264 encoders) currently open."""
        return sum(1 for f in self._feeds.values() if f.transcode)

    def offers_h265(self, offer_sdp: str) -> bool:
        """True when H.265 pass-through is enabled and the offer's first video section lists
        video/H265 (RFC 7798). A cheap textual check, before the offer is validated."""
        if not self.h265:
            return False
        video = False
        for line in offer_sdp.splitlines():
            if line.startswith("m="):
                if video:
                    return False
                video = line.startswith("m=video ")
            elif video and line.startswith("a=rtpmap:"):
                parts = line.split(None, 1)
                if len(parts) == 2 and parts[1].upper().startswith("H265/90000"):
                    return True
        return False

    def talk_target(self, camera_id: str) -> TalkTarget | None:
        """Where a viewer of the camera may talk to (None: two-way audio is not wired)."""
        return self.talk_targets(camera_id) if self.talk_targets is not None else None

    async def answer(
        self,
        offer_sdp: str,
        rtsp_url: str,
        *,
        transcode: bool = False,
        talk: TalkTarget | None = None,
    ) -> str:
        """Answer a viewer's offer with the camera at `rtsp_url`; returns the answer SDP.
        With `transcode`, the stream is decoded and encoded to H.264 (one encoder per URL).
        Without, an H.264 stream is passed through, and an H.265 one too when the offer lists
        H.265 (answered with H.265 and its RTX only).

        Raises InvalidArgument/LimitExceeded for a bad offer, Unavailable when the session
        limit is reached, a transcode is refused under load or the camera cannot be read,
        AuthError, Unsupported (without `transcode`: neither H.264 nor H.265 the viewer takes).

        With `talk`, an audio section the viewer sends on (sendrecv or sendonly) is answered
        recvonly (Opus, PCMU or PCMA) and its audio goes to the camera's speaker over the ONVIF
        backchannel (agent.media.backchannel); without, audio is answered inactive.
        """
        offer = check_offer(offer_sdp)
        if self._closed:
            raise Unavailable("WebRTC sessions are shut down")
        if transcode and self._transcode_allowed is not None and not self._transcode_allowed():
            raise Unavailable(
                "live view of this camera needs an H.265 to H.264 transcode, paused under load "
                "to keep video relaying; try again later"
            )
        if self.count >= self._max:
            raise Unavailable(f"too many WebRTC sessions (limit {self._max})")
        self._pending += 1
        try:
            return await self._negotiate(offer, rtsp_url, transcode, talk)
        finally:
            self._pending -= 1

    async def close_all(self) -> None:
        """End every open session (and the camera connections only they used); new offers are
        still answered. Offers being negotiated are not affected."""
        await self._end_all(list(self._sessions), "session(s)")

    async def close_transcoded(self) -> None:
        """End the sessions fed by a transcode (their encoders stop with the last of them)."""
        await self._end_all(
            [s for s in self._sessions if s.feed.transcode], "transcoded session(s)"
        )

    async def _end_all(self, sessions: list[_Session], what: str) -> None:
        for s in sessions:
            if s.task is not None:
                s.task.cancel()
        await asyncio.gather(*(self._end(s) for s in sessions), return_exceptions=True)
        tasks = [s.task for s in sessions if s.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        if sessions:
            log.info("WebRTC: %d %s ended", len(sessions), what)

    async def close(self) -> None:
        """Close every peer connection and camera connection; waits for tasks and threads."""
        self._closed = True
        await self.close_all()
        feeds = list(self._feeds.values())
        self._feeds.clear()
        await asyncio.gather(*(f.stop() for f in feeds), return_exceptions=True)

    # ---- internals -----------------------------------------------------------------------

    async def _subscribe(self, url: str, transcode: bool) -> tuple[H264Feed, H264Track]:
        feed = self._feeds.get((url, transcode))
        if feed is None or (feed.thread is not None and not feed.alive):
            feed = H264Feed(
                url,
                open_timeout=self._open_timeout,
                read_timeout=self._read_timeout,
                transcode=transcode,
            )
            self._feeds[(url, transcode)] = feed
        track = feed.subscribe()  # before awaiting, so the feed counts this user
        try:
            await feed.start()
        except BaseException:
            track.stop()
            await self._release_feed(feed)
            raise
        return feed, track

    async def _negotiate(
        self, offer: str, url: str, transcode: bool, talk: TalkTarget | None = None
    ) -> str:
        feed, track = await self._subscribe(url, transcode)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        session = _Session(pc, feed, track)
        try:
            async with asyncio.timeout(NEGOTIATION_TIMEOUT):
                answer, session.talk = await self._exchange(pc, offer, track, talk, feed.codec)
        except BaseException as exc:
            track.stop()
            await pc.close()
            await self._release_feed(feed)
            if isinstance(exc, TimeoutError):
                raise Unavailable("WebRTC negotiation timed out") from None
            raise
        if self._closed:  # close() ran while negotiating
            track.stop()
            await pc.close()
            await self._release_feed(feed)
            raise Unavailable("WebRTC sessions are shut down")
        self._sessions.add(session)
        pc.on("connectionstatechange", session.changed.set)
        track.on("ended", session.changed.set)
        session.task = asyncio.create_task(self._watch(session), name="webrtc-session")
        if session.talk is not None:
            session.talk.start()
        log.info("WebRTC session opened (%d active)", len(self._sessions))
        return answer

    async def _exchange(
        self,
        pc: RTCPeerConnection,
        offer: str,
        track: H264Track,
        talk: TalkTarget | None = None,
        codec: str = "h264",
    ) -> tuple[str, TalkRelay | None]:
        """The answer SDP, and the relay of the viewer's microphone when `talk` is given and
        the offer sends audio. `codec` is the feed's: "hevc" is answered with H.265 only."""
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        except Exception as exc:  # aiortc raises assorted errors for offers it cannot use
            raise InvalidArgument(f"unusable SDP offer: {type(exc).__name__}: {exc}") from None
        hevc = codec == "hevc"
        preferred = [
            c
            for c in RTCRtpSender.getCapabilities("video").codecs
            if c.mimeType.lower() == "video/rtx" or _carries(c, hevc=hevc)
        ]
        video_done = False
        relay: TalkRelay | None = None
        for transceiver in pc.getTransceivers():
            if (
                transceiver.kind == "video"
                and not video_done
                and transceiver.direction != "inactive"
            ):
                _keep_only(transceiver, hevc=hevc)
                transceiver.setCodecPreferences(preferred)
                transceiver.direction = "sendonly"
                transceiver.sender.replaceTrack(track)
                video_done = True
            elif talk is not None and relay is None and _sends_audio(transceiver):
                transceiver.direction = "recvonly"
                relay = TalkRelay(transceiver.receiver.track, talk)
            else:
                transceiver.direction = "inactive"
        if not video_done:
            raise InvalidArgument("SDP offer has no usable video section")
        try:
            answer = await pc.createAnswer()
        except Exception as exc:
            raise InvalidArgument(f"cannot answer SDP offer: {type(exc).__name__}") from None
        addresses = self._ice_addresses if self._ice_addresses is not None else lan_addresses()
        with ice_host_addresses(addresses):
            await pc.setLocalDescription(answer)
        return str(pc.localDescription.sdp), relay

    async def _watch(self, session: _Session) -> None:
        idle_since: float | None = time.monotonic()
        try:
            while True:
                state = session.pc.connectionState
                if state in ("failed", "closed") or session.track.readyState != "live":
                    log.info("WebRTC session ending: connection %s", state)
                    return
                now = time.monotonic()
                if state == "connected":
                    idle_since = None
                elif idle_since is None:
                    idle_since = now
                elif now - idle_since > self._idle:
                    log.info("WebRTC session idle for %.0f s, closing", self._idle)
                    return
                session.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(WATCH_INTERVAL, self._idle)):
                        await session.changed.wait()
        finally:
            await asyncio.shield(self._end(session))

    async def _end(self, session: _Session) -> None:
        if session.closed:
            return
        session.closed = True
        self._sessions.discard(session)
        session.track.stop()
        if session.talk is not None:
            await session.talk.close()
        await session.pc.close()
        await self._release_feed(session.feed)
        log.info("WebRTC session closed (%d active)", len(self._sessions))

    async def _release_feed(self, feed: H264Feed) -> None:
        if feed.subscribers > 0:
            return
        key = (feed.url, feed.transcode)
        if self._feeds.get(key) is feed:
            del self._feeds[key]
        await feed.stop()


def _sends_audio(transceiver: Any) -> bool:
    """An audio section the viewer sends on (offered sendrecv or sendonly). aiortc keeps the
    offer's direction, seen from the answerer (recvonly or sendrecv), in `_offerDirection`."""
    return (
        transceiver.kind == "audio"
        and getattr(transceiver, "_offerDirection", None) in ("recvonly", "sendrecv")
        and transceiver.receiver.track is not None
    )


def _carries(codec: Any, *, hevc: bool) -> bool:
    """Whether a codec carries the feed's video: H.265 for a pass-through of H.265, else H.264
    in packetization mode 1 (what the passed-through access units need)."""
    mime = codec.mimeType.lower()
    if hevc:
        return bool(mime == webrtc_h265.MIME_TYPE.lower())
    return mime == "video/h264" and str(codec.parameters.get("packetization-mode")) == "1"


def _keep_only(transceiver: Any, *, hevc: bool) -> None:
    """Drop every negotiated codec but the feed's (H.265, or H.264 packetization-mode 1) and
    its RTX.

    aiortc negotiates an answer's codecs in setRemoteDescription, before codec preferences can
    be set on the transceiver it creates; an offer listing VP8 first (as browsers do) would
    otherwise be answered with VP8 first, and the passed-through video sent under VP8's payload
    type. `_codecs` is the negotiated list aiortc's createAnswer and sender read.
    """
    codecs = list(getattr(transceiver, "_codecs", []))
    kept = [c for c in codecs if _carries(c, hevc=hevc)]
    pts = {c.payloadType for c in kept}
    rtx = [
        c for c in codecs if c.mimeType.lower() == "video/rtx" and c.parameters.get("apt") in pts
    ]
    if not kept and hevc:
        raise Unsupported("the SDP offer has no H.265 for the camera's H.265 stream")
    if not kept:
        raise InvalidArgument("the SDP offer has no H.264 (packetization-mode=1)")
    transceiver._codecs = kept + rtx
