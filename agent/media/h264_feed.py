"""A camera's H.264 as encoded packets: one RTSP connection, many bounded subscribers.

A worker thread opens the RTSP URL with PyAV over TCP (open and read timeouts, so a silent
camera never hangs) and demuxes H.264 packets without decoding them. Packets reach the event
loop through `call_soon_threadsafe` with a bounded number in flight, then fan out to each
`H264Track`'s bounded queue. A slow subscriber loses data (queue emptied, waits for the next
keyframe); it never grows memory or slows the others.

Passing through, an H.265 stream is handed on the same way (Annex B access units, VPS/SPS/PPS
before each IRAP picture, `codec == "hevc"`) for viewers whose offer takes H.265
(agent/media/webrtc_h265.py packs it into RTP).

In transcode mode (a camera with H.265 streams only) the thread decodes the stream instead and
an `H264Encoder` (agent/media/transcode.py) makes H.264 of it in a thread of its own, once for
every viewer of the feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import av
import av.container
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.frame import Frame
from av.packet import Packet

from agent.errors import AgentError, AuthError, Unavailable, Unsupported
from agent.media import webrtc_h265
from agent.media.transcode import TIME_BASE, H264Encoder, decoder_threads

log = logging.getLogger(__name__)

#: Packets handed to the loop but not yet delivered; beyond this the thread drops packets.
MAX_IN_FLIGHT = 64
#: Packets queued per subscriber before it is resynchronised on the next keyframe.
TRACK_QUEUE = 64
#: Packets since the last keyframe kept for viewers that join mid-GOP (instant start).
GOP_CACHE_PACKETS = 150
GOP_CACHE_BYTES = 4 * 1024 * 1024
#: Largest packet accepted from the camera.
MAX_PACKET_BYTES = 4 * 1024 * 1024
#: Decoder threads of a transcoding feed.
DECODER_THREADS = 1

_START_CODE = b"\x00\x00\x00\x01"


@dataclass(frozen=True, slots=True)
class EncodedUnit:
    """One H.264 (or, passing H.265 through, H.265) access unit in Annex B form; `gap` marks
    data lost just before it."""

    data: bytes
    pts: int
    time_base: Fraction
    keyframe: bool
    gap: bool = False


def has_sps(data: bytes) -> bool:
    """True when an Annex B buffer holds a sequence parameter set (NAL type 7)."""
    i = data.find(b"\x00\x00\x01")
    while i != -1 and i + 3 < len(data):
        if data[i + 3] & 0x1F == 7:
            return True
        i = data.find(b"\x00\x00\x01", i + 3)
    return False


def parameter_sets(extradata: bytes | None) -> bytes:
    """SPS/PPS as Annex B from codec extradata (Annex B or avcC form); b"" if none."""
    if not extradata:
        return b""
    if extradata.startswith((b"\x00\x00\x01", _START_CODE)):
        return extradata
    if extradata[0] != 1 or len(extradata) < 7:
        return b""
    out = bytearray()
    pos = 5
    try:
        for count_mask in (0x1F, 0xFF):
            count = extradata[pos] & count_mask
            pos += 1
            for _ in range(count):
                size = int.from_bytes(extradata[pos : pos + 2], "big")
                pos += 2
                out += _START_CODE + extradata[pos : pos + size]
                pos += size
    except IndexError:
        return b""
    return bytes(out)


def _map_error(exc: Exception) -> AgentError:
    if isinstance(exc, av.HTTPUnauthorizedError | av.HTTPForbiddenError):
        return AuthError("camera refused the RTSP credentials")
    if isinstance(exc, AgentError):
        return exc
    # av errors carry the URL (with its credentials) in str(exc): report only the reason
    reason = getattr(exc, "strerror", None) or type(exc).__name__
    return Unavailable(f"camera stream unavailable: {reason}")


class H264Track(MediaStreamTrack):
    """A video track yielding the feed's H.264 as `av.Packet`s, starting at a keyframe."""

    kind = "video"

    def __init__(self, feed: H264Feed, queue_size: int = TRACK_QUEUE) -> None:
        super().__init__()
        self._feed: H264Feed | None = feed
        self._queue: asyncio.Queue[EncodedUnit | None] = asyncio.Queue(queue_size)
        self._want_keyframe = True
        self.dropped = 0

    def push(self, unit: EncodedUnit | None) -> None:
        """Queue one unit (None: the feed ended); on overflow drop until the next keyframe."""
        if unit is None:
            while self._queue.full():
                self._queue.get_nowait()
            self._queue.put_nowait(None)
            return
        if unit.gap:
            self._want_keyframe = True
        if self._want_keyframe and not unit.keyframe:
            self.dropped += 1
            return
        if self._queue.full():
            self.dropped += self._queue.qsize() + 1
            while not self._queue.empty():
                self._queue.get_nowait()
            self._want_keyframe = True
            if self._feed is not None:
                self._feed.request_keyframe()
            return
        self._want_keyframe = False
        self._queue.put_nowait(unit)

    async def recv(self) -> Frame | Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        unit = await self._queue.get()
        if unit is None:
            self.stop()
            raise MediaStreamError
        packet = Packet(unit.data)
        packet.pts = unit.pts
        packet.dts = unit.pts
        packet.time_base = unit.time_base
        return packet

    def stop(self) -> None:
        super().stop()
        if self._feed is not None:
            self._feed.unsubscribe(self)
            self._feed = None


class H264Feed:
    """One RTSP connection read in a worker thread, fanned out to `H264Track`s.

    With `transcode`, the stream (H.265, or any codec PyAV decodes) is decoded and encoded to
    H.264 by one encoder that all the feed's viewers share; it runs while the feed does."""

    def __init__(
        self,
        url: str,
        *,
        open_timeout: float = 10.0,
        read_timeout: float = 5.0,
        transcode: bool = False,
    ) -> None:
        self._url = url
        self._transcode = transcode
        self._encoder: H264Encoder | None = None
        self._open_timeout = open_timeout
        self._read_timeout = read_timeout
        self._tracks: set[H264Track] = set()
        self._gop: list[EncodedUnit] = []
        self._gop_bytes = 0
        self._quit = threading.Event()
        self._posted = 0  # written by the thread only
        self._delivered = 0  # written by the loop only
        self._gap = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opened: asyncio.Future[None] | None = None
        self._finished: asyncio.Future[None] | None = None
        self.packets = 0
        #: The stream's codec once open: "h264", or "hevc" when an H.265 stream is passed through.
        self.codec = ""

    @property
    def url(self) -> str:
        return self._url

    @property
    def transcode(self) -> bool:
        return self._transcode

    @property
    def encoder(self) -> H264Encoder | None:
        """The transcoding feed's encoder once the stream is open (None when passing through)."""
        return self._encoder

    @property
    def subscribers(self) -> int:
        return len(self._tracks)

    @property
    def alive(self) -> bool:
        """True while the worker thread runs and has not reported the end of the stream."""
        return self._finished is not None and not self._finished.done()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    async def start(self) -> None:
        """Open the camera; raises Unavailable, AuthError or Unsupported (neither H.264 nor, when
        passing through, H.265)."""
        if self._opened is None:
            loop = asyncio.get_running_loop()
            self._loop = loop
            self._opened = loop.create_future()
            self._finished = loop.create_future()
            self._thread = threading.Thread(target=self._run, name="h264-feed", daemon=True)
            self._thread.start()
        await asyncio.shield(self._opened)

    def subscribe(self) -> H264Track:
        """A new track; it starts with the packets since the last keyframe, if cached."""
        track = H264Track(self)
        self._tracks.add(track)
        for unit in self._gop:
            track.push(unit)
        return track

    def unsubscribe(self, track: H264Track) -> None:
        self._tracks.discard(track)

    def request_keyframe(self) -> None:
        """A viewer lost data: a transcoding feed's next picture is a keyframe (passing
        through, the viewer waits for the camera's next one)."""
        if self._encoder is not None:
            self._encoder.request_keyframe()

    async def stop(self) -> None:
        """Stop reading, close the connection and join the thread (bounded by the timeouts)."""
        self._quit.set()
        thread, finished = self._thread, self._finished
        if thread is None or finished is None:
            return
        limit = self._open_timeout + self._read_timeout + 2.0
        try:
            async with asyncio.timeout(limit):
                await asyncio.shield(finished)
        except TimeoutError:
            log.warning("RTSP reader thread did not stop within %.1f s", limit)
            return
        for _ in range(1000):  # its last step is the signal awaited above: ends at once
            if not thread.is_alive():
                break
            await asyncio.sleep(0.005)
        for track in list(self._tracks):
            track.stop()

    # ---- worker thread -------------------------------------------------------------------

    def _post(self, unit: EncodedUnit) -> None:
        if self._posted - self._delivered >= MAX_IN_FLIGHT:
            self._gap = True
            return
        self._posted += 1
        if self._gap:
            unit = replace(unit, gap=True)
            self._gap = False
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._deliver, unit)

    def _signal(self, error: AgentError | None, *, final: bool) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # loop already closed
            self._loop.call_soon_threadsafe(self._settle, error, final)

    def _run(self) -> None:
        error: AgentError | None = None
        options = {
            "rtsp_transport": "tcp",
            "timeout": str(int(self._read_timeout * 1_000_000)),
            "analyzeduration": "0",
            "probesize": "32",
        }
        try:
            with av.open(
                self._url, options=options, timeout=(self._open_timeout, self._read_timeout)
            ) as container:
                stream = next((s for s in container.streams.video), None)
                if self._transcode:
                    if stream is None:
                        raise Unsupported("camera stream has no video")
                    self._transcode_stream(container, stream)
                    return
                codec = stream.codec_context.name if stream is not None else ""
                if stream is None or codec not in ("h264", "hevc"):
                    raise Unsupported("camera stream is not H.264")
                if codec == "hevc":
                    sets = webrtc_h265.parameter_sets(stream.codec_context.extradata)
                else:
                    sets = parameter_sets(stream.codec_context.extradata)
                self.codec = codec
                self._signal(None, final=False)
                self._demux(container, stream, sets)
        except Exception as exc:  # every failure of the reader ends the feed with a reason
            error = _map_error(exc)
        finally:
            self._signal(error, final=True)

    def _demux(
        self, container: av.container.InputContainer, stream: av.VideoStream, sets: bytes
    ) -> None:
        last_pts: int | None = None
        time_base = stream.time_base or Fraction(1, 90000)
        for packet in container.demux(stream):
            if self._quit.is_set():
                return
            if packet.size == 0:
                continue
            if packet.size > MAX_PACKET_BYTES:
                self._gap = True
                continue
            # the RTP demuxer leaves the first packets without pts until timing is known
            pts = packet.pts if packet.pts is not None else packet.dts
            if pts is None:
                pts = 0 if last_pts is None else last_pts + 1
            last_pts = pts
            data = bytes(packet)
            if self.codec == "hevc":
                keyframe = webrtc_h265.is_irap(data)
                if keyframe and sets and not webrtc_h265.has_parameter_sets(data):
                    data = sets + data
            else:
                keyframe = bool(packet.is_keyframe)
                if keyframe and sets and not has_sps(data):
                    data = sets + data
            self.packets += 1
            self._post(EncodedUnit(data, pts, packet.time_base or time_base, keyframe))

    def _encoded(self, data: bytes, pts: int, keyframe: bool) -> None:
        """The encoder thread's output (the only thread posting while transcoding)."""
        self.packets += 1
        self._post(EncodedUnit(data, pts, TIME_BASE, keyframe))

    def _transcode_stream(
        self, container: av.container.InputContainer, stream: av.VideoStream
    ) -> None:
        decoder_threads(stream, DECODER_THREADS)
        encoder = H264Encoder(self._encoded)
        self._encoder = encoder
        encoder.start(stream.average_rate or stream.guessed_rate)
        self._signal(None, final=False)
        time_base = stream.time_base or TIME_BASE
        last_pts: int | None = None
        try:
            for packet in container.demux(stream):
                if self._quit.is_set():
                    return
                if not encoder.thread.is_alive():
                    raise Unavailable("the H.264 encoder stopped")
                if packet.size == 0 or packet.size > MAX_PACKET_BYTES:
                    continue
                try:
                    frames = stream.codec_context.decode(packet)
                except av.FFmpegError:  # data lost on the way: the next keyframe repairs it
                    continue
                for frame in frames:
                    pts = frame.pts if frame.pts is not None else frame.dts
                    if pts is None:
                        pts = 0 if last_pts is None else last_pts + 1
                    last_pts = pts
                    # the encoder works in the 90 kHz clock, whatever the camera's
                    frame.pts = int(pts * (frame.time_base or time_base) / TIME_BASE)
                    encoder.offer(frame)
        finally:
            encoder.close()

    # ---- event loop ----------------------------------------------------------------------

    def _deliver(self, unit: EncodedUnit) -> None:
        self._delivered += 1
        self._cache(unit)
        for track in list(self._tracks):
            track.push(unit)

    def _cache(self, unit: EncodedUnit) -> None:
        if unit.keyframe:
            self._gop, self._gop_bytes = [], 0
        elif not self._gop or unit.gap:
            self._gop, self._gop_bytes = [], 0
            return
        if (
            len(self._gop) >= GOP_CACHE_PACKETS
            or self._gop_bytes + len(unit.data) > GOP_CACHE_BYTES
        ):
            self._gop, self._gop_bytes = [], 0
            return
        self._gop.append(unit)
        self._gop_bytes += len(unit.data)

    def _settle(self, error: AgentError | None, final: bool) -> None:
        assert self._opened is not None
        assert self._finished is not None
        if not self._opened.done():
            if error is not None:
                self._opened.set_exception(error)
                self._opened.exception()  # marks it retrieved; start() re-raises it
            else:
                self._opened.set_result(None)
        elif error is not None:
            log.warning("RTSP feed ended: %s", error)
        if not final:
            return
        self._gop, self._gop_bytes = [], 0
        for track in list(self._tracks):
            track.push(None)
        if not self._finished.done():
            self._finished.set_result(None)
