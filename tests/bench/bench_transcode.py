"""CPU of the live view's H.265 -> H.264 transcode against the FFmpeg CLI doing the same work.

Source: the simulated camera in its own process (its encoder is not counted), persona "hanwha",
whose main stream is 1280x720@30 H.265. The agent: one process running one transcoding
`H264Feed` (agent/media/h264_feed.py, agent/media/transcode.py: PyAV decode with one thread,
libx264 ultrafast/zerolatency, constrained baseline, no B-frames) with `VIEWERS` subscribed
`H264Track`s draining the packets as aiortc's sender would (RTP packing and SRTP are not in it).
The baseline: `ffmpeg -threads 1 -rtsp_transport tcp -i SRC -an -c:v libx264 -preset ultrafast
-tune zerolatency -profile:v baseline -bf 0 -threads 1` with the agent's bitrate, VBV and
keyframe interval, to the null muxer: the same decode and encode, same source. The second
figure puts 2 viewers of one feed beside 1 viewer, same run, as CPU per encoded picture (the
simulated camera's frame rate sags when the machine is busy). CPU comes from /proc (user +
system) over `SECONDS` after `WARMUP`; frames are counted over the same window (the encoder's
count in the agent, `-progress` in FFmpeg) so the two did the same number of pictures.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from agent.media.transcode import KEYFRAME_SECONDS, bitrate_for
from tests.bench.bench_sim import _start_sim, _stop
from tests.bench.common import Figure, proc_cpu_seconds
from tests.ports import free_port

SECONDS = 15.0
WARMUP = 5.0
WIDTH, HEIGHT, FPS = 1280, 720, 30
PATH = "/profile2/media.smp"

_AGENT = r"""
import asyncio, sys, time
from agent.media.h264_feed import H264Feed

async def main():
    url, viewers, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    feed = H264Feed(url, transcode=True, open_timeout=10, read_timeout=5)
    tracks = [feed.subscribe() for _ in range(viewers)]
    await feed.start()

    async def drain(track):
        while True:
            await track.recv()

    tasks = [asyncio.create_task(drain(t)) for t in tracks]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        enc = feed.encoder
        print(f"frame={enc.encoded if enc else 0} dropped={enc.dropped if enc else 0}", flush=True)
        await asyncio.sleep(0.5)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for t in tracks:
        t.stop()
    await feed.stop()

asyncio.run(main())
"""


class _Counter:
    """The latest `frame=N` (and `dropped=N`) a child prints on stdout."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.frames = 0
        self.dropped = 0
        assert proc.stdout is not None
        self._out = proc.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._out:
            for word in raw.decode("ascii", "replace").split():
                key, _, value = word.partition("=")
                if key == "frame" and value.isdigit():
                    self.frames = int(value)
                elif key == "dropped" and value.isdigit():
                    self.dropped = int(value)


@dataclass(frozen=True)
class Usage:
    cores: float
    fps: float  # pictures encoded per second over the window
    dropped: int  # pictures the agent's encoder skipped over the window

    @property
    def ms_per_frame(self) -> float:
        """CPU milliseconds per encoded picture."""
        return self.cores / self.fps * 1000.0


def _measure(cmd: list[str]) -> Usage:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    counter = _Counter(proc)
    try:
        time.sleep(WARMUP)
        cpu0, frames0, dropped0 = proc_cpu_seconds(proc.pid), counter.frames, counter.dropped
        time.sleep(SECONDS)
        cpu = proc_cpu_seconds(proc.pid) - cpu0
        frames, dropped = counter.frames - frames0, counter.dropped - dropped0
        if proc.poll() is not None:
            raise RuntimeError("a transcoder exited during the measurement")
        if frames <= 0:
            raise RuntimeError("a transcoder encoded nothing")
        return Usage(cpu / SECONDS, frames / SECONDS, dropped)
    finally:
        _stop(proc)


def _agent(src: str, viewers: int) -> Usage:
    run_for = str(WARMUP + SECONDS + 5)
    return _measure([sys.executable, "-c", _AGENT, src, str(viewers), run_for])


def _ffmpeg(src: str) -> Usage:
    kbps = bitrate_for(WIDTH, HEIGHT) // 1000
    gop = round(FPS * KEYFRAME_SECONDS)
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-threads", "1"]
    cmd += ["-rtsp_transport", "tcp", "-i", src, "-an", "-c:v", "libx264"]
    cmd += ["-preset", "ultrafast", "-tune", "zerolatency", "-profile:v", "baseline"]
    cmd += ["-bf", "0", "-threads", "1", "-g", str(gop), "-b:v", f"{kbps}k"]
    cmd += ["-maxrate", f"{kbps}k", "-bufsize", f"{kbps}k", "-pix_fmt", "yuv420p"]
    cmd += ["-progress", "pipe:1", "-stats_period", "0.5", "-f", "null", "-"]
    return _measure(cmd)


def run() -> list[Figure]:
    if not shutil.which("ffmpeg"):
        raise RuntimeError("bench_transcode needs the ffmpeg CLI (apt-get install ffmpeg)")
    port, rtsp = free_port(), free_port()
    sim, _info, _ = _start_sim(
        [
            *("--port", str(port), "--rtsp-port", str(rtsp), "--persona", "hanwha"),
            *("--username", "admin", "--password", "admin"),
        ]
    )
    src = f"rtsp://admin:admin@127.0.0.1:{rtsp}{PATH}"
    try:
        one = _agent(src, 1)
        base = _ffmpeg(src)
        two = _agent(src, 2)
    finally:
        _stop(sim)
    bench = "transcode"
    what = f"{WIDTH}x{HEIGHT}@{FPS} H.265 -> H.264, {SECONDS:.0f} s"
    return [
        Figure(
            bench,
            "CPU per transcoded camera (1 viewer)",
            one.cores,
            "cores",
            base.cores,
            "ffmpeg CLI libx264 ultrafast zerolatency, same source, threads and settings",
            note=f"{what}; agent {one.fps:.1f} fps encoded ({one.dropped} pictures dropped), "
            f"ffmpeg {base.fps:.1f} fps; agent process includes the interpreter and loop",
        ),
        Figure(
            bench,
            "CPU per encoded picture, 2 viewers of one encoder",
            two.ms_per_frame,
            "ms",
            one.ms_per_frame,
            "the same with 1 viewer",
            note=f"{what}; {two.fps:.1f} fps encoded ({two.dropped} dropped) with 2 viewers, "
            f"{one.fps:.1f} with 1 (per picture, since the source's rate varies with the load)",
        ),
    ]
