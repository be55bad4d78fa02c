"""H.264 for the live view from a camera that sends H.265 only: decoded frames in, libx264 out.

The feed's reader thread decodes the camera's stream and hands each picture to
`H264Encoder.offer`. The encoder runs in a thread of its own and takes the newest picture when
it is free: a picture not taken before the next one arrives is dropped (counted), so a slow
encoder lowers the frame rate instead of queueing or slowing the reader. libx264 runs with
preset ultrafast, tune zerolatency, constrained baseline profile (every browser's WebRTC H.264
decoder takes it), no B-frames, SPS/PPS before every keyframe, a keyframe at least every
`KEYFRAME_SECONDS` of stream time (and at once on `request_keyframe`), and a bitrate sized from
the picture (`bitrate_for`). Timestamps stay in the camera's 90 kHz clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from fractions import Fraction

import av
from av.codec.context import CodecContext
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType, VideoFrame

log = logging.getLogger(__name__)

#: The clock of encoded timestamps (RTP video's).
TIME_BASE = Fraction(1, 90000)
#: Longest stream time between two keyframes, seconds.
KEYFRAME_SECONDS = 2.0
#: Threads of the H.264 encoder (sliced threads: no added latency).
ENCODER_THREADS = 1
#: Bitrate bounds, bit/s.
MIN_BITRATE = 200_000
MAX_BITRATE = 4_000_000
#: Highest frame rate taken from the camera's stream as it is.
MAX_RATE = 120
#: Bits per second per pixel of the picture (about 1.7 Mbit/s at 1280x720).
BITS_PER_PIXEL = 1.8

#: (Annex B access unit, pts in TIME_BASE, keyframe) for each encoded picture.
Sink = Callable[[bytes, int, bool], None]


def bitrate_for(width: int, height: int) -> int:
    """Target bit/s for a picture size: `BITS_PER_PIXEL` per pixel, within the bounds."""
    return max(MIN_BITRATE, min(MAX_BITRATE, int(width * height * BITS_PER_PIXEL)))


def _encoder(width: int, height: int, rate: Fraction, threads: int) -> VideoCodecContext:
    codec = CodecContext.create("libx264", "w")
    assert isinstance(codec, VideoCodecContext)
    bitrate = bitrate_for(width, height)
    fps = max(1, round(float(rate)))
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuv420p"
    codec.time_base = TIME_BASE
    codec.framerate = rate
    codec.bit_rate = bitrate
    codec.max_b_frames = 0
    codec.gop_size = max(1, round(fps * KEYFRAME_SECONDS))
    codec.thread_count = threads
    kbps = bitrate // 1000
    codec.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "profile": "baseline",
        "x264-params": (
            f"bframes=0:scenecut=0:repeat-headers=1:annexb=1:"
            f"vbv-maxrate={kbps}:vbv-bufsize={kbps}:log-level=error"
        ),
    }
    codec.open()
    return codec


class H264Encoder:
    """One libx264 encoder in its own thread, fed the newest decoded picture."""

    def __init__(
        self, sink: Sink, *, threads: int = ENCODER_THREADS, name: str = "h264-encode"
    ) -> None:
        self._sink = sink
        self._threads = threads
        self._cond = threading.Condition()
        self._pending: VideoFrame | None = None
        self._closed = False
        self._key_wanted = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._rate = Fraction(25)
        self.encoded = 0
        self.dropped = 0
        self.keyframes = 0
        self.error: Exception | None = None

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def start(self, rate: Fraction | None = None) -> None:
        """Start the encoder thread; `rate` is the camera's frame rate when known (a value out
        of 1..`MAX_RATE` is a guess from timestamps, not a rate: the default 25 is kept)."""
        if rate is not None and 1 <= rate <= MAX_RATE:
            self._rate = Fraction(rate)
        self._thread.start()

    def offer(self, frame: VideoFrame) -> None:
        """Hand over a picture (pts in TIME_BASE); replaces one the encoder has not taken."""
        with self._cond:
            if self._closed:
                return
            if self._pending is not None:
                self.dropped += 1
            self._pending = frame
            self._cond.notify()

    def request_keyframe(self) -> None:
        """Make the next encoded picture a keyframe (a viewer lost data)."""
        with self._cond:
            self._key_wanted = True

    def close(self, timeout: float = 5.0) -> None:
        """Stop and join the thread (from a worker thread, never the event loop)."""
        with self._cond:
            self._closed = True
            self._pending = None
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- encoder thread --------------------------------------------------------------------

    def _take(self) -> tuple[VideoFrame | None, bool]:
        with self._cond:
            while self._pending is None and not self._closed:
                self._cond.wait()
            frame, self._pending = self._pending, None
            key, self._key_wanted = self._key_wanted, False
            return frame, key

    def _run(self) -> None:
        codec: VideoCodecContext | None = None
        last_pts: int | None = None
        last_key: int | None = None
        try:
            while True:
                frame, key = self._take()
                if frame is None:
                    return
                width, height = frame.width & ~1, frame.height & ~1
                if width < 2 or height < 2:
                    continue
                if codec is None or (codec.width, codec.height) != (width, height):
                    codec = _encoder(width, height, self._rate, self._threads)
                    last_key = None
                if frame.format.name != "yuv420p" or (frame.width, frame.height) != (width, height):
                    pts = frame.pts
                    frame = frame.reformat(width=width, height=height, format="yuv420p")
                    frame.pts = pts
                pts = frame.pts if frame.pts is not None else 0
                if last_pts is not None and pts <= last_pts:
                    pts = last_pts + 1
                last_pts = pts
                frame.pts = pts
                frame.time_base = TIME_BASE
                if key or last_key is None or pts - last_key >= KEYFRAME_SECONDS / TIME_BASE:
                    frame.pict_type = PictureType.I
                else:
                    frame.pict_type = PictureType.NONE
                for packet in codec.encode(frame):
                    keyframe = bool(packet.is_keyframe)
                    out_pts = packet.pts if packet.pts is not None else pts
                    if keyframe:
                        last_key = out_pts
                        self.keyframes += 1
                    self.encoded += 1
                    self._sink(bytes(packet), out_pts, keyframe)
        except Exception as exc:  # reported by the feed; the viewers' stream ends
            self.error = exc
            log.warning("H.264 encoder failed: %s", type(exc).__name__)
        finally:
            with self._cond:
                self._closed = True
                self._pending = None


def decoder_threads(stream: av.VideoStream, threads: int) -> None:
    """Limit a stream's decoder to `threads` slice threads (no frame-threading latency)."""
    ctx = stream.codec_context
    ctx.thread_count = threads
    ctx.thread_type = "SLICE"
