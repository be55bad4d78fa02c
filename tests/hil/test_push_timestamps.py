"""Push relay timestamps as real receivers see them, across target and source restarts.

Receivers are the system FFmpeg in listen mode (`ffmpeg -i rtsp://...` with `-rtsp_flags listen`,
or `-listen 1` for RTMP), copying what they get into an FLV file (millisecond timestamps), each
in its own process, keeping the timestamps it received (`-copyts`); the files are read back with
`ffprobe -show_packets`. A relay that hands a receiver timestamps it cannot place shows there as
a run of packets 0 or 1 ms apart (FFmpeg writes a timestamp it finds going back as the previous
one plus one).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from agent.media.push import PushRelay, PushTarget
from agent.net.backoff import Backoff
from agent.sim.camera.camera import SimCameraConfig, encoder_settings
from tests.ports import free_port
from tests.world import sim_camera, stop_process, wait_until

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None, reason="needs FFmpeg"
    ),
]

PASSWORD = "pw-Ts-S3cret-5"
#: Steps below this, milliseconds, between two video packets are stacked frames (25 fps: 40).
STACKED_MS = 10


@dataclass
class Probed:
    """What an FLV file holds: per stream type, (dts, pts) in ms; decodable video frames."""

    video: list[tuple[int, int]]
    audio: list[tuple[int, int]]
    frames: int


async def _output(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, argv
    return out.decode()


async def _probe(path: Path) -> Probed:
    types = await _output(
        "ffprobe", "-v", "error", "-show_entries", "stream=index,codec_type", "-of", "csv=p=0",
        str(path),
    )  # fmt: skip
    kind = dict(line.split(",")[:2] for line in types.split())
    packets = await _output(
        "ffprobe", "-v", "error", "-show_entries", "packet=stream_index,dts,pts", "-of",
        "csv=p=0", str(path),
    )  # fmt: skip
    streams: dict[str, list[tuple[int, int]]] = {"video": [], "audio": []}
    for line in packets.split():
        index, pts, dts = line.split(",")[:3]
        if "N/A" not in (pts, dts):
            streams[kind[index]].append((int(dts), int(pts)))
    frames = await _output(
        "ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
        "stream=nb_read_frames", "-of", "csv=p=0", str(path),
    )  # fmt: skip
    return Probed(streams["video"], streams["audio"], int(frames.strip().strip(",")))


def _steps(packets: list[tuple[int, int]]) -> list[int]:
    return [b[0] - a[0] for a, b in itertools.pairwise(packets)]


def _assert_in_place(probed: Probed, min_video: int) -> None:
    """Strictly increasing DTS per stream, no stacked video, every video packet decodes.

    FFmpeg's RTP demuxer gives the first packet of a session no timestamp; the receiver then
    writes it at the time of the next one: one step of 0 at the very start is allowed."""
    assert len(probed.video) >= min_video, len(probed.video)
    video = _steps(probed.video)[1:]
    assert min(video) > 0, video
    stacked = [i for i, step in enumerate(video) if step < STACKED_MS]
    assert not stacked, (stacked, video[:40])
    assert all(step > 0 for step in _steps(probed.audio)), _steps(probed.audio)
    assert probed.frames >= len(probed.video) - 2


@contextlib.asynccontextmanager
async def _receiver(listen_args: list[str], out: Path) -> AsyncIterator[None]:
    """`ffmpeg` listening for one publisher and copying it into `out` (FLV); SIGTERM on exit
    (FFmpeg then ends the file properly and closes the connection)."""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-analyzeduration", "500000", *listen_args, "-c", "copy", "-copyts", "-f", "flv",
        str(out),
        stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        await asyncio.sleep(0.5)  # listening
        yield
    finally:
        await stop_process(proc)


@contextlib.asynccontextmanager
async def _relay(source: str, target: str) -> AsyncIterator[PushRelay]:
    relay = PushRelay(
        source, PushTarget(target), name="ts", open_timeout=5, read_timeout=5,
        backoff=Backoff(base=0.2, cap=0.5),
    )  # fmt: skip
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_rtsp_receiver_restart_keeps_timestamps_in_place(
    tmp_path: Path,
) -> None:
    """An RTSP receiver places packets by the relay's RTCP sender reports: the first packet
    of each connection (the first keyframe, seconds after the source opened) must land at the
    receiver's present, before and after the receiver restarts."""
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/live"
    listen = ["-rtsp_flags", "listen", "-listen_timeout", "15", "-i", url]
    first, second = tmp_path / "first.flv", tmp_path / "second.flv"
    config = SimCameraConfig(username="admin", password=PASSWORD)
    async with sim_camera(config) as cam:
        source = cam.rtsp_url("main").replace("rtsp://", f"rtsp://admin:{PASSWORD}@")
        async with _relay(source, url) as relay:
            async with _receiver(listen, first):
                await wait_until(lambda: relay.status()["packets"] >= 100, 30, "relaying")
            await wait_until(lambda: relay.status()["last_error"] != "", 15, "target failure")
            failure = relay.status()["last_failure"]
            assert "TargetError" in failure
            restarted = relay.status()["packets"]
            async with _receiver(listen, second):
                await wait_until(
                    lambda: relay.status()["packets"] >= restarted + 150, 30, "relaying again"
                )
                status = relay.status()
                assert status["state"] == "relaying"
                assert status["last_error"] == ""  # healthy again
                assert status["last_failure"] == failure  # still visible
                assert status["last_failure_at"] is not None
                assert status["reconnects"] >= 1
                assert PASSWORD not in str(status)
    for path, least in ((first, 25), (second, 40)):
        probed = await _probe(path)
        _assert_in_place(probed, least)
        # Where the receiver put the first packet that has a time of its own: at its present
        # (about 0), not seconds before (a stacked run) nor after (a hole).
        assert abs(probed.video[1][0]) < 300, (path.name, probed.video[:3])


async def test_session_starts_at_the_keyframe_the_camera_sends_first(tmp_path: Path) -> None:
    """A camera starts a new RTSP viewer on a keyframe, which FFmpeg's RTP demuxer hands out
    without a timestamp. Relayed (placed one frame before the next packet), not skipped, it
    starts the relay well within one GOP; skipped, the relay waits for the next keyframe."""
    port = free_port()
    url = f"rtmp://127.0.0.1:{port}/live/x"
    config = SimCameraConfig(username="admin", password=PASSWORD)
    async with (
        sim_camera(config) as cam,
        _receiver(["-listen", "1", "-i", url], tmp_path / "r.flv"),
    ):
        settings = encoder_settings(cam.model.profiles["main"])
        gop_seconds = settings.gop / settings.fps
        source = cam.rtsp_url("main").replace("rtsp://", f"rtsp://admin:{PASSWORD}@")
        async with _relay(source, url) as relay:
            took = await wait_until(lambda: relay.status()["state"] == "relaying", 30, "relaying")
            await wait_until(lambda: relay.status()["packets"] >= 50, 30, "packets")
    assert took < gop_seconds, (took, gop_seconds)
    probed = await _probe(tmp_path / "r.flv")
    _assert_in_place(probed, 10)


# A source that jumps: MPEG-TS segments with their own timelines, one file after the other.

FPS = 25
SEGMENT_FRAMES = 50  # 2 s, one GOP
SAMPLE_RATE = 16_000
#: Start of each segment, seconds: the second restarts at 0, the third leaps 1000 s ahead.
SEGMENT_STARTS = (0, 0, 1000)


def _segment(path: Path, start: int) -> None:
    """2 s of 160x120 H.264 with B-frames and a 440 Hz AAC tone, timestamps from `start`."""
    with av.open(str(path), "w", format="mpegts") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        video.options = {
            "preset": "veryfast",
            "x264-params": f"bframes=2:keyint={SEGMENT_FRAMES}:min-keyint={SEGMENT_FRAMES}",
        }
        audio = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        samples = 1024
        image = np.zeros((120, 160, 3), dtype=np.uint8)
        for i in range(SEGMENT_FRAMES):
            image[:, :, 0] = (i * 5) % 256
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = start * FPS + i
            frame.time_base = Fraction(1, FPS)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        total = SEGMENT_FRAMES * SAMPLE_RATE // FPS
        for first in range(0, total - samples + 1, samples):
            t = np.arange(first, first + samples) / SAMPLE_RATE
            tone = (0.3 * np.sin(2 * math.pi * 440 * t)).astype(np.float32).reshape(1, -1)
            aframe = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            aframe.sample_rate = SAMPLE_RATE
            aframe.pts = start * SAMPLE_RATE + first
            aframe.time_base = Fraction(1, SAMPLE_RATE)
            out.mux(audio.encode(aframe))
        out.mux(audio.encode(None))


def _jumping_source(folder: Path) -> Path:
    source = folder / "source.ts"
    with source.open("wb") as joined:
        for n, start in enumerate(SEGMENT_STARTS):
            part = folder / f"part{n}.ts"
            _segment(part, start)
            joined.write(part.read_bytes())
    return source


async def test_source_clock_restart_and_leap_keep_spacing(tmp_path: Path) -> None:
    """Inside one source session the source's clock restarts at 0, then leaps 1000 s; at the
    end of the file the source session ends and the next starts at 0 again. The receiver gets
    one timeline with the source's own spacing: no stacked frames, no hole, audio kept."""
    source = await asyncio.to_thread(_jumping_source, tmp_path)
    port = free_port()
    out = tmp_path / "received.flv"
    passes = 2
    per_pass = len(SEGMENT_STARTS) * SEGMENT_FRAMES
    async with (
        _receiver(["-listen", "1", "-i", f"rtmp://127.0.0.1:{port}/live/x"], out),
        _relay(str(source), f"rtmp://127.0.0.1:{port}/live/x") as relay,
    ):
        await wait_until(lambda: relay.status()["reconnects"] >= passes, 30, "passes")
        started = time.monotonic()
        while time.monotonic() - started < 1.0:  # let the receiver write what it got
            await asyncio.sleep(0.1)
    probed = await _probe(out)
    _assert_in_place(probed, passes * per_pass)
    video = _steps(probed.video)
    # The source's spacing (40 ms) inside each source session, jumps taken out; between two
    # sessions a frame's gap after the stream that ended last (here AAC, whose encoder pads
    # the end: about 100 ms more).
    odd = [(i, step) for i, step in enumerate(video) if step != 1000 // FPS]
    assert len(odd) <= relay.status()["reconnects"], odd
    assert max(video) <= 250, odd
    span = probed.video[-1][0] - probed.video[0][0]
    assert span < 2 * len(probed.video) * 1000 // FPS, span  # no 1000 s hole
    assert sum(1 for dts, pts in probed.video if pts > dts) >= len(probed.video) // 2  # B-frames
    # Audio of every segment arrives (none dropped as late), spaced as sent (64 ms).
    per_segment = SEGMENT_FRAMES * SAMPLE_RATE // FPS // 1024
    assert len(probed.audio) >= passes * len(SEGMENT_STARTS) * (per_segment - 2)
    assert max(_steps(probed.audio)) <= 3 * 64, max(_steps(probed.audio))
