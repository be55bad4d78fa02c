"""Live media of one simulated camera profile: a `MediaSource` fed by an encoder thread.

One encoder thread per source, shared by all viewers: it starts with the first subscriber and
exits `IDLE_LINGER` seconds after the last one leaves. The thread renders, encodes, packetizes
and hands batches to the event loop through a bounded hand-over; the loop fans them out.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

import av
from PIL import Image

from agent.log import LogOnce
from agent.media.source import Fanout, MediaPacket, PacketQueue, Subscription, TrackInfo
from agent.proto.h264 import ParameterSets, is_keyframe, is_parameter_set, split_annexb
from agent.proto.rtp import (
    DEFAULT_MTU,
    PCMU_CLOCK_RATE,
    PCMU_PACKET_SAMPLES,
    PCMU_PAYLOAD_TYPE,
    packetizer,
    pcmu_payloads,
)
from agent.sim.camera.encoder import (
    EncoderSettings,
    mulaw_beep,
    open_video_encoder,
    probe_parameter_sets,
)
from agent.sim.camera.render import Overlay, Renderer

__all__ = ["EncoderSettings", "Overlay", "VideoSource"]

log = logging.getLogger(__name__)

IDLE_LINGER = 2.0  # seconds the encoder keeps running after the last viewer leaves
MAX_INFLIGHT = 16  # batches handed to the loop and not yet delivered
MAX_AUDIO_BURST = 10  # audio packets sent at once when catching up; older ones are skipped
VIDEO_PAYLOAD_TYPE = 96
VIDEO_CLOCK_RATE = 90000
AUDIO_TRACK = 1
_PACKET_SECONDS = PCMU_PACKET_SAMPLES / PCMU_CLOCK_RATE


class VideoSource:
    """Test-pattern H.264/H.265 video (and optionally a PCMU beep) of one camera profile."""

    def __init__(
        self,
        name: str,
        settings: EncoderSettings,
        overlay: Callable[[], Overlay],
        *,
        audio: bool = False,
    ) -> None:
        self.name = name
        self._settings = settings
        self._overlay = overlay
        self._audio = audio
        self._keyframe = threading.Event()
        self._fanout = Fanout(
            on_active=self._on_active, on_idle=self._on_idle, on_keyframe_needed=self._keyframe.set
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._stop: threading.Event | None = None  # of the current encoder thread
        self._idle_timer: asyncio.TimerHandle | None = None
        self._params: dict[EncoderSettings, ParameterSets] = {}
        self._inflight = 0
        self._lock = threading.Lock()
        self._snapshot_lock = threading.Lock()
        self._snapshot_renderer: Renderer | None = None
        self._log_once = LogOnce(log)
        self._closed = False

    @property
    def settings(self) -> EncoderSettings:
        return self._settings

    @property
    def running(self) -> bool:
        """True while an encoder thread is alive."""
        self._threads = [t for t in self._threads if t.is_alive()]
        return bool(self._threads)

    @property
    def viewers(self) -> int:
        return self._fanout.count

    def now(self) -> float:
        return time.monotonic()

    async def describe(self) -> list[TrackInfo]:
        settings = self._settings
        params = self._params.get(settings)
        if params is None:
            params = await asyncio.to_thread(probe_parameter_sets, settings)
            if len(self._params) > 8:
                self._params.clear()
            params = self._params.setdefault(settings, params)
        tracks = [
            TrackInfo(
                "video",
                settings.encoding,
                VIDEO_CLOCK_RATE,
                VIDEO_PAYLOAD_TYPE,
                params.fmtp(),
                framerate=settings.fps,
            )
        ]
        if self._audio:
            tracks.append(TrackInfo("audio", "PCMU", PCMU_CLOCK_RATE, PCMU_PAYLOAD_TYPE))
        return tracks

    def subscribe(self) -> Subscription:
        self._loop = asyncio.get_running_loop()
        if self._closed:
            queue = PacketQueue()
            queue.close()
            return queue
        return self._fanout.subscribe()

    def reconfigure(self, settings: EncoderSettings) -> None:
        """Switch the live stream to `settings` (the encoder restarts at its next frame)."""
        self._settings = settings

    async def snapshot_jpeg(self) -> bytes:
        """A JPEG of the current picture."""
        return await asyncio.to_thread(self._snapshot)

    async def close(self) -> None:
        """End every subscription and wait for the encoder thread to exit."""
        self._closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._fanout.close()
        self._stop_encoder()
        for thread in list(self._threads):
            await asyncio.to_thread(thread.join, 5.0)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _on_active(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if (self._stop is None or self._stop.is_set()) and not self._closed:
            assert self._loop is not None
            stop = self._stop = threading.Event()
            thread = threading.Thread(
                target=self._run, args=(stop, self._loop), name=f"encoder-{self.name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _on_idle(self) -> None:
        if self._loop is not None and not self._closed:
            self._idle_timer = self._loop.call_later(IDLE_LINGER, self._stop_if_idle)

    def _stop_if_idle(self) -> None:
        self._idle_timer = None
        if self._fanout.count == 0:
            self._stop_encoder()

    def _stop_encoder(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None

    def _deliver(self, stop: threading.Event, packets: list[MediaPacket]) -> None:
        with self._lock:
            self._inflight -= 1
        if not stop.is_set():
            self._fanout.publish(packets)

    def _hand_over(
        self, stop: threading.Event, loop: asyncio.AbstractEventLoop, packets: list[MediaPacket]
    ) -> None:
        """Pass a batch to the loop; drop it (and ask for a keyframe) if the loop lags."""
        with self._lock:
            if self._inflight >= MAX_INFLIGHT:
                self._keyframe.set()
                return
            self._inflight += 1
        try:
            loop.call_soon_threadsafe(self._deliver, stop, packets)
        except RuntimeError:  # the loop is closed
            stop.set()

    def _current_overlay(self) -> Overlay:
        try:
            return self._overlay()
        except Exception:
            self._log_once.log(logging.WARNING, "overlay", "camera %s: overlay failed", self.name)
            return Overlay(())

    def _run(self, stop: threading.Event, loop: asyncio.AbstractEventLoop) -> None:
        log.debug("camera %s: encoder started", self.name)
        try:
            _EncodeLoop(self, stop, loop).run()
        except Exception:
            log.exception("camera %s: encoder failed", self.name)
            with contextlib.suppress(RuntimeError):  # the loop may be closed
                loop.call_soon_threadsafe(self._encoder_failed, stop)
        finally:
            stop.set()
            log.debug("camera %s: encoder stopped", self.name)

    def _encoder_failed(self, stop: threading.Event) -> None:
        """End the viewers of a failed encoder; the next viewer starts a new one."""
        if self._stop is stop:
            self._stop = None
            self._fanout.close()

    def _snapshot(self) -> bytes:
        settings = self._settings
        with self._snapshot_lock:
            renderer = self._snapshot_renderer
            if renderer is None or (renderer.width, renderer.height) != (
                settings.width,
                settings.height,
            ):
                renderer = self._snapshot_renderer = Renderer(settings.width, settings.height)
            now = time.monotonic()
            picture = renderer.render(
                clock=_clock_text(time.time(), 0), seconds=now, overlay=self._current_overlay()
            )
            rgb = av.VideoFrame.from_ndarray(picture, format="yuv420p").to_ndarray(format="rgb24")
        image = Image.fromarray(rgb)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=85)
        return out.getvalue()


class _Video:
    """Encoder state for one set of settings; frame `index` is due at `start + index/fps`."""

    def __init__(self, settings: EncoderSettings) -> None:
        self.settings = settings
        self.encoder = open_video_encoder(settings)
        self.renderer = Renderer(settings.width, settings.height)
        self.rtp = packetizer(settings.encoding, DEFAULT_MTU)
        self.interval = 1.0 / settings.fps
        self.start = time.monotonic()
        self.index = 0

    @property
    def due(self) -> float:
        return self.start + self.index * self.interval


def _clock_text(wall: float, frame: int) -> str:
    stamp = datetime.fromtimestamp(wall)
    return f"{stamp:%Y-%m-%d %H:%M:%S}.{stamp.microsecond // 1000:03d}  #{frame}"


class _EncodeLoop:
    """The body of one encoder thread: wall-clock paced video frames and audio packets."""

    def __init__(
        self, source: VideoSource, stop: threading.Event, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._source = source
        self._stop = stop
        self._loop = loop
        self._beep = pcmu_payloads(mulaw_beep()) if source._audio else []
        start = time.monotonic()
        self._wall_offset = time.time() - start
        self._audio_start = start
        self._audio_sent = 0
        self._frames = 0  # frames encoded since start (for the burned-in counter)

    def run(self) -> None:
        source = self._source
        video = _Video(source._settings)
        source._keyframe.set()
        while not self._stop.is_set():
            if video.settings is not source._settings:
                video = _Video(source._settings)
                source._keyframe.set()
            now = time.monotonic()
            self._send_audio(now)
            if now >= video.due:
                video.index = max(video.index, int((now - video.start) / video.interval))
                self._send_frame(video)
                video.index += 1
                self._frames += 1
            wake = video.due
            if self._beep:
                wake = min(wake, self._audio_start + self._audio_sent * _PACKET_SECONDS)
            self._stop.wait(max(0.0, wake - time.monotonic()))

    def _send_frame(self, video: _Video) -> None:
        source = self._source
        due = video.due
        picture = video.renderer.render(
            clock=_clock_text(self._wall_offset + due, self._frames),
            seconds=due,
            overlay=source._current_overlay(),
        )
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts = video.index
        if source._keyframe.is_set():
            source._keyframe.clear()
            frame.pict_type = av.video.frame.PictureType.I
        packets: list[MediaPacket] = []
        for packet in video.encoder.encode(frame):
            pts = video.index if packet.pts is None else packet.pts
            ticks = round((video.start + pts * video.interval) * VIDEO_CLOCK_RATE)
            packets += self._video_packets(video, bytes(packet), ticks)
        if packets:
            source._hand_over(self._stop, self._loop, packets)

    def _video_packets(self, video: _Video, data: bytes, ticks: int) -> list[MediaPacket]:
        """RTP payloads of one access unit, parameter sets first on every keyframe."""
        codec = video.settings.encoding
        nals = split_annexb(data)
        key = is_keyframe(codec, nals)
        if key:
            found = ParameterSets.find(codec, nals)
            if found is not None:
                self._source._params[video.settings] = found
            elif (cached := self._source._params.get(video.settings)) is not None:
                nals = [*cached.nals, *(n for n in nals if not is_parameter_set(codec, n))]
        return [
            MediaPacket(0, payload, ticks, marker, key and i == 0)
            for i, (payload, marker) in enumerate(video.rtp.packetize(nals))
        ]

    def _send_audio(self, now: float) -> None:
        if not self._beep:
            return
        due = int((now - self._audio_start) / _PACKET_SECONDS) + 1  # packets due by now
        if due - self._audio_sent > MAX_AUDIO_BURST:
            self._audio_sent = due - MAX_AUDIO_BURST
        base = round(self._audio_start * PCMU_CLOCK_RATE)
        batch = []
        for k in range(self._audio_sent, due):
            start = self._audio_start + k * _PACKET_SECONDS
            # The beep starts on each wall-clock second, in step with the burned-in clock.
            slot = int(((self._wall_offset + start) % 1.0) / _PACKET_SECONDS) % len(self._beep)
            ticks = base + k * PCMU_PACKET_SAMPLES
            batch.append(MediaPacket(AUDIO_TRACK, self._beep[slot], ticks, k == 0, True))
        self._audio_sent = due
        if batch:
            self._source._hand_over(self._stop, self._loop, batch)
