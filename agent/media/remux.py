"""The blocking half of a push relay: PyAV demux of a camera and stream-copy mux to a target.

`RemuxWorker.run()` runs in one worker thread until `stop` is set. It opens the source (RTSP over
TCP), waits for a video keyframe, copies packets without decoding, and reconnects the source or
the target after errors with jittered backoff. Timestamps stay monotonic across reconnects: each
source session is shifted to start just after the last packet written, and a jump of the
source's timestamps inside a session (a restart at 0, a leap) is taken out the same way. The
target is connected once the first keyframe is in hand, with its clock origin set so that the
first packet's time is "now" for the target's own clock (RTCP sender reports). Counters reach
the caller through `on_stats`, called from this thread.
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
#: A source timestamp going back by more than this, seconds, within one source session is a
#: discontinuity (the source restarted its clock): the stream is moved to continue just after
#: its last packet. A smaller step back is clamped (video) or dropped (audio).
BACKWARD_JUMP = Fraction(1, 2)
#: A source timestamp leaping forward by more than this, seconds, is a discontinuity too. Kept
#: long so that a real stall of one stream (the other still flowing) keeps its place in time.
FORWARD_JUMP = Fraction(10)


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
    #: The failure the relay is recovering from; "" once packets reach the target again.
    last_error: str = ""
    #: The most recent failure and when (wall clock), kept after the relay recovered.
    last_failure: str = ""
    last_failure_at: float | None = None
    dropped_audio: str = ""
    started_at: float = field(default_factory=time.time)

    def failed(self, text: str) -> None:
        self.last_error = self.last_failure = text
        self.last_failure_at = time.time()

    def recovered(self) -> None:
        self.last_error = ""

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "packets": self.packets,
            "bytes": self.bytes,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "last_failure": self.last_failure,
            "last_failure_at": self.last_failure_at,
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


def _frame_gap(video: Stream) -> Fraction:
    """One frame interval of the source video, seconds (DEFAULT_GAP when it has no rate)."""
    rate = video.average_rate or video.guessed_rate
    return 1 / Fraction(rate) if rate else DEFAULT_GAP


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

    __slots__ = (
        "back",
        "den",
        "end",
        "forward",
        "identity",
        "last_dts",
        "num",
        "offset",
        "out",
        "spacing",
        "time_base",
    )

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
        #: Output ticks: the last regular DTS step, and the steps back and forward that are
        #: discontinuities (BACKWARD_JUMP, FORWARD_JUMP).
        self.spacing = 1
        self.back = round(BACKWARD_JUMP / self.time_base)
        self.forward = round(FORWARD_JUMP / self.time_base)


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
        # Position in `streams` (and in `self._lanes`) per source stream index.
        by_index: list[int | None] = [None] * (max(s.index for s in streams) + 1)
        for i, s in enumerate(streams):
            by_index[s.index] = i
        lanes: list[_Lane] = []
        # FFmpeg's RTP demuxer gives the first packet of an RTSP session no timestamp, and that
        # is the keyframe a camera sends a new viewer: kept here, it is placed one frame before
        # the next video packet rather than skipped (which would cost a whole GOP).
        held: Packet[Any] | None = None
        skipped = 0
        is_set = self.stop.is_set
        for packet in source.demux(streams):
            if is_set():
                return
            if packet.size == 0:
                continue
            position = by_index[packet.stream_index]
            if position is None:
                continue
            if packet.dts is None:
                if not lanes and position == 0 and packet.is_keyframe:
                    held = packet
                continue
            if not lanes:
                first = packet
                if position == 0 and not packet.is_keyframe and held is not None:
                    before = packet.dts - round(_frame_gap(video) / (video.time_base or 1))
                    held.dts = held.pts = before
                    first = held
                elif position != 0 or not packet.is_keyframe:
                    skipped += 1
                    if skipped > MAX_PACKETS_BEFORE_KEYFRAME:
                        raise Unavailable("no video keyframe from the source")
                    continue
                self._start(streams, first)
                lanes = self._lanes
                self._write(first, lanes[0])
                self._connected()  # the target took the keyframe
                if first is packet:
                    continue
            self._write(packet, lanes[position])
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

    def _open_output(self, streams: list[Stream], first_at: Fraction) -> None:
        """Connect the target; `first_at` is the output time (seconds) of the first packet.

        FFmpeg's RTP muxer (rtsp:// targets) takes the container's `start_time_realtime` (the
        header time when unset) as the wall clock of PTS 0 and stamps its RTCP sender reports
        from it (FFmpeg/FFmpeg libavformat/rtpenc.c, `rtp_write_header`; rtpenc_chain.c copies
        it to each stream). Receivers that sync by RTCP (FFmpeg's RTSP demuxer among them)
        place every packet by that clock. Left at the header time, the first packet (PTS 0 in
        the first session, the end of the timeline so far after a reconnect) lands the
        keyframe wait before the receiver's start, or the timeline's length after it: a run
        of packets the receiver stacks on one instant, or a hole. Set so that `first_at` is
        now, the first packet lands at the receiver's present. Other muxers ignore it.
        """
        options = dict(self.target_options)
        options["start_time_realtime"] = str(round((time.time() - first_at) * 1_000_000))
        try:
            output = av.open(
                self.target_url,
                "w",
                format=self.format,
                options=options,
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

    def _start(self, streams: list[Stream], first: Packet[Any]) -> None:
        """Start a source session at its first keyframe: plan the shift that puts it after
        everything written so far, connect the target if it is not, set the lanes' mapping.

        The target is connected here, not when the source opens: until the first keyframe
        (up to a GOP, seconds) nothing can be written, and a target connected earlier has
        started its clock (see `_open_output`) that long before the first packet.
        """
        assert first.dts is not None
        tb0 = streams[0].time_base or (self._lanes[0].time_base if self._lanes else None)
        if tb0 is None:
            raise Unavailable("source video has no time base")
        start = first.dts * tb0
        self._sync_resume()
        gap = _frame_gap(streams[0])
        shift = -start if self._resume_at is None else self._resume_at + gap - start
        if self._output is None:
            self._open_output(streams, start + shift)
        for s, lane in zip(streams, self._lanes, strict=True):
            ratio = (s.time_base or lane.time_base) / lane.time_base
            lane.num, lane.den = ratio.numerator, ratio.denominator
            lane.identity = lane.num == lane.den == 1
            lane.offset = round(shift / lane.time_base)
            lane.spacing = max(1, round(gap / lane.time_base))

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
        if last is not None:
            step = dts - last
            if step <= 0 or step > lane.forward:
                if step < -lane.back or step > lane.forward:
                    # The source's clock jumped (restarted at 0, leapt): clamping to last + 1
                    # would stack every packet until the source caught up (a run of packets
                    # one tick apart, seconds of video on a few milliseconds), a leap would
                    # leave a hole. Move this stream to go on one step after its last packet.
                    moved = last + lane.spacing - dts
                    lane.offset += moved
                    dts += moved
                    pts += moved
                    log.info(
                        "%s: source timestamps jumped by %.3f s on stream %d; continuing",
                        self.name,
                        float(-moved * lane.time_base),
                        packet.stream_index,
                    )
                elif lane is not self._lanes[0]:
                    return  # late audio from before the keyframe: drop it
                else:
                    dts = last + 1
            else:
                lane.spacing = step
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
        self.stats.recovered()
        self._set_state(RelayState.RELAYING)
        log.info("%s: relaying %s -> %s", self.name, redact(self.source_url),
                 redact(self.target_url))  # fmt: skip
        self._logged_error = ""

    def _failed(self, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}".replace(self.source_url, redact(self.source_url))
        text = text.replace(self.target_url, redact(self.target_url))
        self.stats.failed(text)
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
