"""Two-way audio: a browser's microphone, received over WebRTC, played on the camera's speaker
through the ONVIF audio backchannel (ONVIF Streaming Specification, "Back channel connection").

`TalkRelay` reads the decoded audio of one WebRTC session's incoming track (aiortc decodes the
browser's Opus, or G.711, into `AudioFrame`s). The first frame (push to talk pressed) opens a
`Backchannel`: an RTSP session of its own on the camera, counted in the camera's session budget
(`TalkTarget.hold`), that DESCRIBEs with `Require: www.onvif.org/ver20/backchannel`, SETUPs only
the camera's `sendonly` audio section (TCP interleaved) and PLAYs it. The audio is resampled to
8 kHz mono 16-bit (PyAV's `AudioResampler`), encoded G.711 (PCMU or PCMA, the first of the two
the camera's SDP offers) in 20 ms packets of 160 samples, and sent as RTP on the track's
interleaved channel, paced by the packets' timestamps (not by when the browser's packets came
in). `IDLE_CLOSE` seconds without audio (push to talk released) end the RTSP session (TEARDOWN)
and release the budget. A camera that refuses (no backchannel, 551, 453, no G.711) ends the
talk with one log line; the video of the WebRTC session is never affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import av
import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agent.errors import AgentError, Unavailable, Unsupported
from agent.media.rtsp_client import RtspClient
from agent.proto.rtp import RtpPacket
from agent.proto.sdp import MediaDescription

log = logging.getLogger(__name__)

#: The RTSP feature tag of the ONVIF audio backchannel (ONVIF Streaming Specification 5.3.1).
BACKCHANNEL_TAG = "www.onvif.org/ver20/backchannel"
#: G.711 sample rate.
RATE = 8000
#: Samples per RTP packet (20 ms).
PACKET_SAMPLES = 160
#: Seconds per RTP packet.
PACKET_SECONDS = PACKET_SAMPLES / RATE
#: Packets waiting to be sent at most (1 s); beyond, the oldest are dropped.
MAX_QUEUED = 50
#: Seconds of audio collected before the first packet of a talk spurt leaves, so that the
#: browser's packet jitter does not leave holes in the paced stream.
PREBUFFER = 0.06
#: Seconds of silence from the browser that start a new talk spurt (marker bit, RTP time
#: advanced by the pause); shorter delays only shift the packets.
SPURT_GAP = 0.2
#: Seconds without audio from the browser after which the backchannel session is closed.
IDLE_CLOSE = 2.0
#: Seconds opening the camera's backchannel session may take.
OPEN_TIMEOUT = 10.0
#: Seconds between checks of a talking session for a failed backchannel.
POLL = 0.25
#: G.711 payload types (RFC 3551) by encoding name.
G711 = {"PCMU": 0, "PCMA": 8}


class Releasable(Protocol):
    """A counted camera session (agent.media.hub.Hold)."""

    def release(self) -> None: ...


@dataclass(frozen=True)
class TalkTarget:
    """Where a WebRTC session's microphone goes: the camera, how to reach it directly and how
    to count the session in its budget."""

    camera_id: str
    #: The camera's own RTSP URL (main stream, with credentials); read when talking starts.
    rtsp_url: Callable[[], str]
    #: Counts one session in the camera's budget (raises SessionLimit when it is full).
    hold: Callable[[], Releasable]


class Directory(Protocol):
    def upstream_url(self, camera_id: str, stream: str = "main") -> str: ...


class Hub(Protocol):
    def hold(self, camera_id: str, kind: str) -> Releasable: ...


def talk_targets(directory: Directory, hub: Hub) -> Callable[[str], TalkTarget]:
    """The `TalkTarget` of each camera, from the inventory (direct RTSP URL) and the hub."""

    def target(camera_id: str) -> TalkTarget:
        return TalkTarget(
            camera_id,
            lambda: directory.upstream_url(camera_id, "main"),
            lambda: hub.hold(camera_id, "talk"),
        )

    return target


# ---- G.711 ---------------------------------------------------------------------------------


def _g711_table(codec: str) -> npt.NDArray[np.uint8]:
    """Code of every 16-bit sample (index: sample + 32768), made by FFmpeg's own encoder."""
    ctx = av.CodecContext.create(codec, "w")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate = RATE
    ctx.format = "s16"
    ctx.layout = "mono"
    ctx.open()
    samples = np.arange(-32768, 32768, dtype=np.int16).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = RATE
    data = b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])
    if len(data) != 65536:
        raise Unsupported(f"{codec}: unexpected encoder output")
    return np.frombuffer(data, dtype=np.uint8)


_TABLES: dict[str, npt.NDArray[np.uint8]] = {}


def encode_g711(pcm: npt.NDArray[np.int16], encoding: str) -> bytes:
    """G.711 (`PCMU` or `PCMA`) of 16-bit mono samples."""
    table = _TABLES.get(encoding)
    if table is None:
        table = _TABLES[encoding] = _g711_table({"PCMU": "pcm_mulaw", "PCMA": "pcm_alaw"}[encoding])
    return bytes(table[pcm.astype(np.int32) + 32768])


def pick_codec(media: MediaDescription) -> tuple[str, int]:
    """(encoding, payload type) of the first G.711 format an SDP audio section offers."""
    for fmt in media.formats:
        try:
            pt = int(fmt)
        except ValueError:
            continue
        rtpmap = media.rtpmaps.get(pt)
        if rtpmap is not None:
            name = rtpmap.encoding.upper()
            if name in G711 and rtpmap.clock_rate == RATE and (rtpmap.channels or 1) == 1:
                return name, pt
        elif pt in G711.values():  # static payload type without rtpmap
            return ("PCMU" if pt == 0 else "PCMA"), pt
    offered = ", ".join(media.formats[:8])
    raise Unsupported(f"the camera's backchannel takes no G.711 (offers {offered})")


def is_backchannel(media: MediaDescription) -> bool:
    """An SDP section the camera receives on: audio, `a=sendonly` (from the camera's side)."""
    return media.kind == "audio" and media.attribute("sendonly") is not None


class Packetizer:
    """Audio frames in, 20 ms G.711 payloads out (8 kHz mono)."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self._pending = np.zeros(0, dtype=np.int16)

    def feed(self, frame: av.AudioFrame) -> list[bytes]:
        """The whole packets the audio so far fills; the rest waits for the next frame."""
        try:
            resampled = self._resampler.resample(frame)
        except ValueError:  # the browser's audio changed format (codec): start again
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            resampled = self._resampler.resample(frame)
        parts = [self._pending]
        parts.extend(out.to_ndarray().reshape(-1).astype(np.int16, copy=False) for out in resampled)
        pcm = np.concatenate(parts)
        whole = len(pcm) - len(pcm) % PACKET_SAMPLES
        self._pending = pcm[whole:]
        return [
            encode_g711(pcm[i : i + PACKET_SAMPLES], self.encoding)
            for i in range(0, whole, PACKET_SAMPLES)
        ]


# ---- the camera's backchannel session -------------------------------------------------------


class Backchannel:
    """One RTSP backchannel session to a camera, sending paced G.711 RTP until `close()`."""

    def __init__(self, target: TalkTarget, *, timeout: float = OPEN_TIMEOUT) -> None:
        self.target = target
        self._timeout = timeout
        self._client: RtspClient | None = None
        self._hold: Releasable | None = None
        self._channel = 0
        self._payload_type = 0
        self._packetizer: Packetizer | None = None
        self._queue: deque[bytes] = deque(maxlen=MAX_QUEUED)
        self._ready = asyncio.Event()  # something is queued
        self._empty = asyncio.Event()  # nothing is queued, or sending ended
        self._empty.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: asyncio.Future[None] | None = None
        self.failed: BaseException | None = None
        self.done = asyncio.Event()
        self.sent = 0
        self.dropped = 0

    @property
    def queued(self) -> int:
        """Packets waiting to be sent."""
        return len(self._queue)

    @property
    def encoding(self) -> str | None:
        return self._packetizer.encoding if self._packetizer is not None else None

    async def open(self) -> None:
        """Count the session, open it on the camera and start sending. Raises SessionLimit,
        AuthError, Unsupported (no backchannel, no G.711), Unavailable, ProtocolError."""
        self._hold = self.target.hold()
        try:
            url = self.target.rtsp_url()
            chosen: list[MediaDescription] = []

            def select(media: MediaDescription) -> bool:
                if chosen or not is_backchannel(media):
                    return False
                chosen.append(media)
                return True

            client = RtspClient(url, timeout=self._timeout, idle_timeout=math.inf)
            self._client = client
            try:
                async with asyncio.timeout(self._timeout * 2):
                    tracks = await client.start(require=BACKCHANNEL_TAG, select=select)
            except Unsupported:
                if chosen:
                    raise
                tracks = []  # a camera that ignores the Require header: nothing to SETUP
            if not chosen or not tracks:
                raise Unsupported("the camera offers no audio backchannel (no sendonly audio)")
            encoding, self._payload_type = pick_codec(chosen[0])
            self._channel = tracks[0].channel
            self._packetizer = Packetizer(encoding)
        except BaseException as exc:
            await self.close()
            if isinstance(exc, TimeoutError):
                raise Unavailable("the camera did not open its backchannel in time") from None
            raise
        self._tasks = [
            asyncio.create_task(self._guard(self._send_loop()), name="talk-send"),
            asyncio.create_task(self._guard(self._serve()), name="talk-rtsp"),
        ]

    def push(self, frame: av.AudioFrame) -> None:
        """Queue one frame of the browser's audio (drops the oldest beyond ~1 s)."""
        if self._packetizer is None:
            return
        for payload in self._packetizer.feed(frame):
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(payload)
        if self._queue:
            self._ready.set()
            self._empty.clear()

    async def flush(self, timeout: float) -> None:
        """Wait, at most `timeout` seconds, until the queued audio has been sent (or sending
        ended)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._empty.wait()

    async def close(self) -> None:
        """Stop sending, TEARDOWN, close the connection and release the budget; idempotent,
        and every caller waits for the same closing (which a caller's cancellation does not
        interrupt)."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        client, self._client = self._client, None
        try:
            if client is not None:
                await client.close()
        finally:
            hold, self._hold = self._hold, None
            if hold is not None:
                hold.release()
            self.done.set()
            self._empty.set()

    async def _guard(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.failed is None:
                self.failed = exc
            self.done.set()
            self._empty.set()

    async def _serve(self) -> None:
        """Keep-alives and whatever the camera sends (its RTCP, answers), until it fails."""
        assert self._client is not None
        async for _ in self._client.packets():
            pass
        raise AgentError("the camera ended the backchannel session")

    async def _send_loop(self) -> None:
        """Send the queued payloads, one every 20 ms of RTP time. Audio that comes late (nothing
        queued when a packet is due) is sent when it comes, its RTP time contiguous. After a
        pause longer than SPURT_GAP the next packet leaves PREBUFFER later, its timestamp
        advanced by the time that passed, with the marker bit (a new talk spurt, RFC 3551
        section 4.1)."""
        client = self._client
        assert client is not None
        ssrc = random.getrandbits(32)
        sequence = random.getrandbits(16)
        timestamp = random.getrandbits(32)
        due: float | None = None  # when the next packet is due; None: a new talk spurt
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
            now = time.monotonic()
            marker = False
            if due is None or now - due > SPURT_GAP:
                # A new talk spurt: collect a little first, keep RTP time in step with time.
                start = now + PREBUFFER
                if due is not None:
                    timestamp += round((start - due) / PACKET_SECONDS) * PACKET_SAMPLES
                due, marker = start, True
            elif now > due:
                due = now  # the browser's audio came late: the stream slips, RTP time does not
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if not self._queue:  # cannot happen (nothing takes from it but us); be safe
                continue
            payload = self._queue.popleft()
            if not self._queue:
                self._empty.set()
            packet = RtpPacket(
                self._payload_type,
                sequence & 0xFFFF,
                timestamp & 0xFFFFFFFF,
                ssrc,
                payload,
                marker=marker,
            )
            await client.send_interleaved(self._channel, packet.encode())
            self.sent += 1
            sequence += 1
            timestamp += PACKET_SAMPLES
            due += PACKET_SECONDS


# ---- one WebRTC session's microphone --------------------------------------------------------


class TalkRelay:
    """Feeds one WebRTC session's incoming audio track to the camera's backchannel: a session
    opens on the first frame and closes `idle` seconds after the last."""

    def __init__(
        self,
        track: MediaStreamTrack,
        target: TalkTarget,
        *,
        idle: float = IDLE_CLOSE,
        open_timeout: float = OPEN_TIMEOUT,
    ) -> None:
        self.track = track
        self.target = target
        self._idle = idle
        self._open_timeout = open_timeout
        self._task: asyncio.Task[None] | None = None
        self.channel: Backchannel | None = None
        self.talks = 0  # backchannel sessions opened
        self.failures = 0  # talks that could not start or broke

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="talk-relay")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.channel is not None:  # cancelled while opening or closing
            await self.channel.close()
            self.channel = None

    async def _next(self, timeout: float | None) -> av.AudioFrame | None:
        """The next frame; None after `timeout` seconds without one. MediaStreamError when the
        track ends."""
        try:
            async with asyncio.timeout(timeout):
                frame = await self.track.recv()
        except TimeoutError:
            return None
        return frame if isinstance(frame, av.AudioFrame) else None

    async def _run(self) -> None:
        cid = self.target.camera_id
        try:
            while True:
                frame = await self._next(None)
                if frame is None:
                    continue
                channel = Backchannel(self.target, timeout=self._open_timeout)
                self.channel = channel
                try:
                    await channel.open()
                except MediaStreamError:
                    raise
                except Exception as exc:  # the camera's refusals, and anything unforeseen
                    self.failures += 1
                    log.warning("talk to camera %s not possible: %s", cid, exc)
                    self.channel = None
                    while await self._next(self._idle) is not None:
                        pass  # the rest of this press goes nowhere
                    continue
                self.talks += 1
                log.info("talk to camera %s started (%s)", cid, channel.encoding)
                try:
                    await self._talk(channel, frame)
                except MediaStreamError:
                    raise
                except Exception as exc:  # e.g. audio PyAV cannot resample: end this talk
                    channel.failed = channel.failed or exc
                finally:
                    await channel.close()
                    self.channel = None
                    if channel.failed is not None:
                        self.failures += 1
                        log.warning("talk to camera %s ended: %s", cid, channel.failed)
                    else:
                        log.info("talk to camera %s ended (%d packets sent)", cid, channel.sent)
        except MediaStreamError:
            return

    async def _talk(self, channel: Backchannel, frame: av.AudioFrame) -> None:
        """Pass frames on until `idle` seconds pass without one or the backchannel fails."""
        channel.push(frame)
        last = time.monotonic()
        while not channel.done.is_set():
            got = await self._next(min(POLL, self._idle))
            now = time.monotonic()
            if got is not None:
                channel.push(got)
                last = now
            elif now - last >= self._idle:
                await channel.flush(MAX_QUEUED * PACKET_SECONDS)  # the queued audio plays out
                return
