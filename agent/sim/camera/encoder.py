"""PyAV encoders of the simulated camera: cheap H.264/H.265 and a G.711 mu-law tone table.

Everything here blocks: call it from the encoder thread or through `asyncio.to_thread`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Literal

import av
import numpy as np
from av.video.codeccontext import VideoCodecContext

from agent.errors import InvalidArgument
from agent.proto.h264 import ParameterSets, split_annexb

TONE_HZ = 1000
TONE_LEVEL = 0.25  # of full scale
AUDIO_RATE = 8000


@dataclass(frozen=True)
class EncoderSettings:
    """Video encoder settings of one camera profile; `gop` is the keyframe interval in frames."""

    encoding: Literal["H264", "H265"]
    width: int
    height: int
    fps: int
    bitrate_kbps: int
    gop: int

    def __post_init__(self) -> None:
        if self.encoding not in ("H264", "H265"):
            raise InvalidArgument(f"unsupported encoding {self.encoding!r}")
        if not (16 <= self.width <= 4096 and 16 <= self.height <= 2304):
            raise InvalidArgument(f"resolution {self.width}x{self.height} out of range")
        if self.width % 2 or self.height % 2:
            raise InvalidArgument(f"resolution {self.width}x{self.height} must be even")
        if not 1 <= self.fps <= 60:
            raise InvalidArgument(f"frame rate {self.fps} out of range 1..60")
        if not 16 <= self.bitrate_kbps <= 100_000:
            raise InvalidArgument(f"bitrate {self.bitrate_kbps} kbit/s out of range")
        if not 1 <= self.gop <= 1000:
            raise InvalidArgument(f"GOP length {self.gop} out of range 1..1000")


def open_video_encoder(
    settings: EncoderSettings, *, global_header: bool = False
) -> VideoCodecContext:
    """An opened libx264/libx265 encoder: no B-frames, zero latency, one thread.

    Without `global_header` the parameter sets are repeated in-band before every keyframe.
    """
    name = "libx264" if settings.encoding == "H264" else "libx265"
    ctx = av.CodecContext.create(name, "w")
    assert isinstance(ctx, VideoCodecContext)
    ctx.width = settings.width
    ctx.height = settings.height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, settings.fps)
    ctx.framerate = Fraction(settings.fps, 1)
    ctx.bit_rate = settings.bitrate_kbps * 1000
    ctx.gop_size = settings.gop
    ctx.max_b_frames = 0
    ctx.thread_count = 1
    if global_header:
        ctx.flags |= av.codec.context.Flags.global_header
    rate = settings.bitrate_kbps
    common = f"keyint={settings.gop}:min-keyint={settings.gop}:scenecut=0"
    common += f":vbv-maxrate={rate}:vbv-bufsize={rate}"
    options = {"preset": "ultrafast", "tune": "zerolatency", "forced-idr": "1"}
    if settings.encoding == "H264":
        options["x264-params"] = common
    else:
        options["x265-params"] = f"log-level=error:bframes=0:pools=none:frame-threads=1:{common}"
    ctx.options = options
    ctx.open()
    return ctx


def probe_parameter_sets(settings: EncoderSettings) -> ParameterSets:
    """The parameter sets the encoder will use for `settings`, without encoding a frame."""
    ctx = open_video_encoder(settings, global_header=True)
    found = ParameterSets.find(settings.encoding, split_annexb(bytes(ctx.extradata or b"")))
    if found is None:
        raise InvalidArgument(f"{settings.encoding} encoder gave no parameter sets")
    return found


@lru_cache(maxsize=1)
def mulaw_beep() -> bytes:
    """One second of G.711 mu-law at 8 kHz: a 1 kHz beep for the first 200 ms, then silence."""
    t = np.arange(AUDIO_RATE) / AUDIO_RATE
    wave = np.sin(2 * np.pi * TONE_HZ * t) * TONE_LEVEL * 32767
    wave[AUDIO_RATE // 5 :] = 0
    samples = wave.astype(np.int16).reshape(1, -1)
    ctx = av.CodecContext.create("pcm_mulaw", "w")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate = AUDIO_RATE
    ctx.format = "s16"
    ctx.layout = "mono"
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = AUDIO_RATE
    frame.pts = 0
    packets = [*ctx.encode(frame), *ctx.encode(None)]
    return b"".join(bytes(p) for p in packets)
