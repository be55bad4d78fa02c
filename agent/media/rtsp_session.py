"""One RTSP session: its tracks, RTP stream state and the task that sends interleaved RTP."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.media.source import MediaSource, Subscription, TrackInfo
from agent.proto.rtp import RtpStream, rtcp_sender_report
from agent.proto.rtsp import encode_interleaved
from agent.proto.sdp import (
    Connection,
    MediaDescription,
    Origin,
    RtpMap,
    SessionDescription,
    format_fmtp,
)

log = logging.getLogger(__name__)

WRITE_TIMEOUT = 10.0  # a viewer that takes no data for this long is dropped
RTCP_INTERVAL = 5.0  # seconds between RTCP sender reports


class SessionState(enum.Enum):
    READY = "ready"
    PLAYING = "playing"
    CLOSED = "closed"


@dataclass(slots=True)
class SessionTrack:
    """A track set up in a session, sent on interleaved channel `channel` (RTCP: +1)."""

    index: int
    info: TrackInfo
    channel: int
    stream: RtpStream
    receive: bool = False  # an ONVIF backchannel track: the client sends, the server takes


@dataclass(frozen=True, slots=True)
class PlayInfo:
    """What a PLAY response announces for one track."""

    index: int
    seq: int
    rtptime: int


class RtspSession:
    """Media state of one session; its RTP goes out on the connection that set it up."""

    def __init__(
        self,
        ident: str,
        path: str,
        source: MediaSource,
        writer: asyncio.StreamWriter,
        *,
        is_stalled: Callable[[], bool],
        on_end: Callable[[RtspSession], None],
    ) -> None:
        self.ident = ident
        self.path = path
        self.source = source
        self.tracks: dict[int, SessionTrack] = {}
        self.state = SessionState.READY
        self.last_activity = time.monotonic()
        self._writer = writer
        self._is_stalled = is_stalled
        self._on_end = on_end
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_report = 0.0
        self._cname = f"{ident.lower()}@camera"

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def add_track(
        self, index: int, info: TrackInfo, channel: int, *, receive: bool = False
    ) -> SessionTrack:
        old = self.tracks.get(index)
        stream = old.stream if old else RtpStream(info.payload_type)
        track = SessionTrack(index, info, channel, stream, receive)
        self.tracks[index] = track
        return track

    def receiving_track(self, channel: int) -> SessionTrack | None:
        """The backchannel track whose RTP arrives on interleaved `channel`, if any."""
        for track in self.tracks.values():
            if track.receive and track.channel == channel:
                return track
        return None

    def play(self) -> list[PlayInfo]:
        """Start (or keep) sending; return seq/rtptime of the next packet of each track."""
        now = self.source.now()
        infos = [
            PlayInfo(t.index, t.stream.next_sequence, t.stream.rtp_timestamp(_ticks(now, t.info)))
            for t in sorted(self.tracks.values(), key=lambda t: t.index)
            if not t.receive
        ]
        if self.state is SessionState.READY:
            # A session with nothing to send (only a backchannel track) leaves the source idle.
            if any(not t.receive for t in self.tracks.values()):
                self._subscription = self.source.subscribe()
                self._task = asyncio.create_task(
                    self._pump(self._subscription), name=f"rtp-{self.ident}"
                )
            self.state = SessionState.PLAYING
        return infos

    async def pause(self) -> None:
        if self.state is SessionState.PLAYING:
            self.state = SessionState.READY
            await self._stop_pump()

    async def close(self) -> None:
        self.state = SessionState.CLOSED
        await self._stop_pump()

    async def _stop_pump(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    async def _pump(self, subscription: Subscription) -> None:
        stalled = False
        try:
            while batch := await subscription.get():
                if self._is_stalled():
                    stalled = True
                    continue
                if stalled:
                    stalled = False
                    subscription.resync()
                    continue
                frames = []
                for packet in batch:
                    track = self.tracks.get(packet.track)
                    if track is not None:
                        rtp = track.stream.packet(packet.payload, packet.timestamp, packet.marker)
                        frames.append(encode_interleaved(track.channel, rtp))
                if frames and time.monotonic() >= self._next_report:
                    self._next_report = time.monotonic() + RTCP_INTERVAL
                    frames += self._sender_reports()
                if frames:
                    self._writer.write(b"".join(frames))
                    await asyncio.wait_for(self._writer.drain(), WRITE_TIMEOUT)
        except (ConnectionError, TimeoutError) as exc:
            log.info("session %s: viewer stopped taking data (%s)", self.ident, exc or "timeout")
        else:
            if self.state is not SessionState.PLAYING:
                return
            log.info("session %s: source %s ended", self.ident, self.path)
        self._on_end(self)

    def _sender_reports(self) -> list[bytes]:
        """An RTCP sender report per track that has sent something, on its odd channel."""
        now, wallclock = self.source.now(), time.time()
        return [
            encode_interleaved(
                track.channel + 1,
                rtcp_sender_report(
                    track.stream.ssrc,
                    wallclock=wallclock,
                    rtp_timestamp=track.stream.rtp_timestamp(_ticks(now, track.info)),
                    packets=track.stream.packets,
                    octets=track.stream.octets,
                    cname=self._cname,
                ),
            )
            for track in self.tracks.values()
            if track.stream.packets
        ]


def _ticks(seconds: float, info: TrackInfo) -> int:
    return round(seconds * info.clock_rate)


def session_sdp(
    tracks: Sequence[TrackInfo],
    *,
    name: str,
    session_id: str,
    address: str,
    backchannel: Sequence[TrackInfo] = (),
) -> SessionDescription:
    """The SDP a DESCRIBE returns for `tracks` (controls `trackID=N`, aggregate `*`).

    With `backchannel` formats, one more audio section (`trackID=len(tracks)`) offers them
    `sendonly`, as the ONVIF Streaming Specification marks the track the client sends on.
    """
    addrtype = "IP6" if ":" in address else "IP4"
    any_address = "::" if addrtype == "IP6" else "0.0.0.0"
    media = []
    for index, info in enumerate(tracks):
        attrs: list[tuple[str, str | None]] = [
            (
                "rtpmap",
                RtpMap(info.payload_type, info.encoding, info.clock_rate, info.channels).encode(),
            )
        ]
        if info.fmtp:
            attrs.append(("fmtp", format_fmtp(info.payload_type, info.fmtp)))
        if info.framerate:
            attrs.append(("framerate", f"{info.framerate:g}"))
        attrs += [("control", f"trackID={index}"), ("recvonly", None)]
        media.append(
            MediaDescription(info.kind, 0, "RTP/AVP", [str(info.payload_type)], attributes=attrs)
        )
    if backchannel:
        back: list[tuple[str, str | None]] = [
            (
                "rtpmap",
                RtpMap(info.payload_type, info.encoding, info.clock_rate, info.channels).encode(),
            )
            for info in backchannel
        ]
        back += [("control", f"trackID={len(tracks)}"), ("sendonly", None)]
        formats = [str(info.payload_type) for info in backchannel]
        media.append(MediaDescription("audio", 0, "RTP/AVP", formats, attributes=back))
    return SessionDescription(
        origin=Origin("-", session_id, "1", "IN", addrtype, address),
        name=name,
        connection=Connection("IN", addrtype, any_address),
        attributes=[("control", "*"), ("range", "npt=0-")],
        media=media,
    )
