"""The blocking half of a push relay: PyAV demux of a camera and stream-copy mux to a target.

`RemuxWorker.run()` runs in one worker thread until `stop` is set. It opens the source (RTSP over
TCP), waits for a video keyframe, copies packets without decoding, and reconnects the source or
the target after errors with jittered backoff. Timestamps stay monotonic across reconnects: each
source session is shifted to start just after the last packet written. Counters reach the caller
through `on_stats`, called from this thread.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from time import monotonic
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import av
import av.error
from av.container import InputContainer, OutputContainer
from av.packet import Packet
from av.stream import Stream

from agent.errors import Unavailable
from agent.net.backoff import Backoff
from agent.secret import mask

log = logging.getLogger(__name__)

#: Muxer name and options per target URL scheme.
TARGET_FORMATS: dict[str, tuple[str, dict[str, str]]] = {
    "rtsp": ("rtsp", {"rtsp_transport": "tcp"}),
    "rtmp": ("flv", {}),
    "srt": ("mpegts", {}),
}
#: Audio codecs each muxer carries; other audio is dropped (noted once in the log).
AUDIO_CODECS: dict[str, frozenset[str]] = {
    "rtsp": frozenset({"pcm_mulaw", "pcm_alaw", "aac", "opus"}),
    "flv": frozenset({"aac", "mp3", "pcm_mulaw", "pcm_alaw"}),
    "mpegts": frozenset({"aac", "mp3", "ac3", "opus"}),
}
#: Seconds between two counter reports while relaying.
STATS_INTERVAL = 0.5
#: Longest wait for the first video keyframe of a source session, in packets.
MAX_PACKETS_BEFORE_KEYFRAME = 2000
#: Gap left between two source sessions on the output timeline, seconds, when no frame rate.
DEFAULT_GAP = Fraction(1, 25)


class TargetError(Unavailable):
    """The target refused the connection or a write."""


class RelayState(enum.StrEnum):
    NEW = "new"
    CONNECTING = "connecting"
    RELAYING = "relaying"
    BACKOFF = "backoff"
    STOPPED = "stopped"


@dataclass
class RelayStats:
    """Counters of one relay; copied for each report."""

    state: RelayState = RelayState.NEW
    packets: int = 0
    bytes: int = 0
    reconnects: int = 0
    last_error: str = ""
    dropped_audio: str = ""
    started_at: float = field(default_factory=time.time)

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "packets": self.packets,
            "bytes": self.bytes,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "dropped_audio": self.dropped_audio,
            "started_at": self.started_at,
        }


def redact(url: str) -> str:
    """The URL for logs and status: no user or password, no query (SRT passphrase, tokens),
    and an RTMP stream key (the last path segment) masked."""
    parts = urlsplit(url)
    try:
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return f"{parts.scheme}://(invalid address)"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    path = parts.path
    if parts.scheme.lower().startswith("rtmp") and path.count("/") >= 2:
        path = path.rsplit("/", 1)[0] + "/***"
    query = "***" if parts.query else ""
    return mask(urlunsplit((parts.scheme, netloc, path, query, "")))  # a login in the path


def target_format(url: str) -> tuple[str, dict[str, str]]:
    """Muxer name and options for a target URL; ValueError for an unknown scheme."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in TARGET_FORMATS:
        raise ValueError(f"unsupported target scheme {scheme!r} (rtsp, rtmp, srt)")
    fmt, opts = TARGET_FORMATS[scheme]
    return fmt, dict(opts)


def _signature(streams: list[Stream]) -> tuple[object, ...]:
    """What must match for a new source session to reuse the open target."""
    sig: list[object] = []
    for s in streams:
        cc: Any = s.codec_context
        sig.append(
            (
                s.type,
                cc.name,
                getattr(cc, "width", None),
                getattr(cc, "height", None),
                getattr(cc, "sample_rate", None),
                bytes(cc.extradata or b""),
            )
        )
    return tuple(sig)


class _Lane:
    """One relayed stream: its output stream, this session's tick mapping, what was written."""

    __slots__ = ("den", "end", "identity", "last_dts", "num", "offset", "out", "time_base")

    def __init__(self, out: Stream) -> None:
        assert out.time_base is not None
        self.out = out
        self.time_base: Fraction = out.time_base
        #: Source ticks to output ticks: round(ticks * num / den) + offset.
        self.num = self.den = 1
        self.identity = True
        self.offset = 0
        self.last_dts: int | None = None
        #: End of the last packet written, output ticks.
        self.end: int | None = None


class RemuxWorker:
    """Copies `source_url` to `target_url` until `stop` is set. Call `run()` in its own thread."""

    def __init__(
        self,
        source_url: str,
        target_url: str,
        *,
        name: str,
        stop: threading.Event,
        on_stats: Callable[[dict[str, Any]], None],
        open_timeout: float,
        read_timeout: float,
        backoff: Backoff | None = None,
    ) -> None:
        self.source_url = source_url
        self.target_url = target_url
        self.name = name
        self.stop = stop
        self.format, self.target_options = target_format(target_url)
        self._on_stats = on_stats
        self._timeout = (open_timeout, read_timeout)
        self._backoff = backoff or Backoff()
        self.stats = RelayStats()
        self._last_report = 0.0
        self._logged_error = ""
        self._sessions = 0
        # Output side, kept across source sessions while the stream layout is unchanged.
        self._output: OutputContainer | None = None
        self._lanes: list[_Lane] = []
        self._signature: tuple[object, ...] = ()
        #: End of what was written so far on the output timeline, seconds.
        self._resume_at: Fraction | None = None

    # Thread body.

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    self._session()
                except Exception as exc:
                    self._failed(exc)
                else:
                    continue
                self._set_state(RelayState.BACKOFF)
                self._backoff.down()
                if self.stop.wait(self._backoff.next_delay()):
                    break
        finally:
            self._close_output()
            self._set_state(RelayState.STOPPED)

    def _session(self) -> None:
        self._set_state(RelayState.CONNECTING)
        if self._sessions:
            self.stats.reconnects += 1
        self._sessions += 1
        opts = {"rtsp_transport": "tcp"}
        with av.open(self.source_url, "r", options=opts, timeout=self._timeout) as source:
            self._copy(source)

    def _copy(self, source: InputContainer) -> None:
        if not source.streams.video:
            raise Unavailable("source has no video stream")
        video = source.streams.video[0]
        streams: list[Stream] = [video, *self._audio_streams(source)]
        if self._output is not None and _signature(streams) != self._signature:
            log.info("%s: source stream layout changed, reopening the target", self.name)
            self._close_output()
        if self._output is None:
            self._open_output(streams)
        # Lane per source stream index; None for streams not relayed.
        by_index: list[_Lane | None] = [None] * (max(s.index for s in streams) + 1)
        for s, planned in zip(streams, self._lanes, strict=True):
            by_index[s.index] = planned
        started = False
        skipped = 0
        is_set = self.stop.is_set
        for packet in source.demux(streams):
            if is_set():
                return
            if packet.dts is None or packet.size == 0:
                continue
            lane = by_index[packet.stream_index]
            if lane is None:
                continue
            if not started:
                if lane is not self._lanes[0] or not packet.is_keyframe:
                    skipped += 1
                    if skipped > MAX_PACKETS_BEFORE_KEYFRAME:
                        raise Unavailable("no video keyframe from the source")
                    continue
                self._plan(streams, packet)
                self._connected()
                started = True
            self._write(packet, lane)
        raise Unavailable("source ended the stream")

    def _audio_streams(self, source: InputContainer) -> list[Stream]:
        kept: list[Stream] = []
        allowed = AUDIO_CODECS.get(self.format, frozenset())
        for s in source.streams.audio[:1]:
            codec = s.codec_context.name
            if codec in allowed:
                kept.append(s)
            elif self.stats.dropped_audio != codec:
                log.info("%s: %s audio is not carried by %s; relaying video only",
                         self.name, codec, self.format)  # fmt: skip
                self.stats.dropped_audio = codec
        return kept

    # Output.

    def _open_output(self, streams: list[Stream]) -> None:
        try:
            output = av.open(
                self.target_url,
                "w",
                format=self.format,
                options=self.target_options,
                timeout=self._timeout,
            )
        except (av.error.FFmpegError, OSError) as exc:
            raise TargetError(f"target: {exc}") from exc
        try:
            outs = [output.add_stream_from_template(s) for s in streams]
            output.start_encoding()  # connects and writes the header
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            output.close()
            raise TargetError(f"target: {exc}") from exc
        self._output = output
        self._signature = _signature(streams)
        self._lanes = [_Lane(out) for out in outs]

    def _close_output(self) -> None:
        self._sync_resume()
        output, self._output = self._output, None
        self._lanes = []
        if output is not None:
            try:
                output.close()
            except (av.error.FFmpegError, OSError) as exc:
                log.debug("%s: closing the target: %s", self.name, exc)

    # Timestamps.

    def _sync_resume(self) -> None:
        """Fold the lanes' ends into `_resume_at` (kept as integers while relaying)."""
        for lane in self._lanes:
            if lane.end is not None:
                end = lane.end * lane.time_base
                if self._resume_at is None or end > self._resume_at:
                    self._resume_at = end

    def _plan(self, streams: list[Stream], first: Packet[Any]) -> None:
        """Per lane, the tick conversion and offset that start this session after the last."""
        assert first.dts is not None
        tb0 = streams[0].time_base or self._lanes[0].time_base
        start = first.dts * tb0
        self._sync_resume()
        if self._resume_at is None:
            shift = -start
        else:
            rate = streams[0].average_rate or streams[0].guessed_rate
            gap = 1 / Fraction(rate) if rate else DEFAULT_GAP
            shift = self._resume_at + gap - start
        for s, lane in zip(streams, self._lanes, strict=True):
            ratio = (s.time_base or lane.time_base) / lane.time_base
            lane.num, lane.den = ratio.numerator, ratio.denominator
            lane.identity = lane.num == lane.den == 1
            lane.offset = round(shift / lane.time_base)

    def _write(self, packet: Packet[Any], lane: _Lane) -> None:
        """Shift, convert and mux one packet; integer arithmetic only (hot path)."""
        dts: int = packet.dts  # type: ignore[assignment]  # checked by the caller
        pts = packet.pts
        duration = packet.duration or 0
        offset = lane.offset
        if lane.identity:
            dts += offset
            pts = dts if pts is None else pts + offset
        else:
            num, den2 = 2 * lane.num, 2 * lane.den
            half = lane.den
            dts = (dts * num + half) // den2 + offset
            pts = dts if pts is None else (pts * num + half) // den2 + offset
            duration = (duration * num + half) // den2
            packet.time_base = lane.time_base
            packet.duration = duration
        last = lane.last_dts
        if last is not None and dts <= last:
            if lane is not self._lanes[0]:
                return  # late audio from before the keyframe: drop it
            dts = last + 1
        packet.dts = dts
        packet.pts = pts if pts > dts else dts
        packet.stream = lane.out
        size = packet.size
        assert self._output is not None
        try:
            self._output.mux_one(packet)
        except (av.error.FFmpegError, OSError) as exc:
            raise TargetError(f"target: {exc}") from exc
        lane.last_dts = dts
        lane.end = dts + (duration if duration > 0 else 1)
        stats = self.stats
        stats.packets += 1
        stats.bytes += size
        now = monotonic()
        if now - self._last_report >= STATS_INTERVAL:
            self._report(now)

    # Status and errors.

    def _connected(self) -> None:
        self._backoff.up()
        self._set_state(RelayState.RELAYING)
        log.info("%s: relaying %s -> %s", self.name, redact(self.source_url),
                 redact(self.target_url))  # fmt: skip
        self._logged_error = ""

    def _failed(self, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}".replace(self.source_url, redact(self.source_url))
        text = text.replace(self.target_url, redact(self.target_url))
        self.stats.last_error = text
        expected = isinstance(exc, Unavailable | OSError | av.error.FFmpegError)
        if text != self._logged_error:
            log.warning("%s: %s; retrying with backoff", self.name, text,
                        exc_info=None if expected else exc)  # fmt: skip
            self._logged_error = text
        else:
            log.debug("%s: %s (again)", self.name, text)
        if isinstance(exc, TargetError) or not expected:
            self._close_output()  # a source failure keeps the target open

    def _set_state(self, state: RelayState) -> None:
        if state != self.stats.state:
            self.stats.state = state
            self._report(time.monotonic())

    def _report(self, now: float) -> None:
        self._last_report = now
        self._on_stats(self.stats.snapshot())
