"""What the simulated camera costs: idle cameras, and one viewer of the main stream.

Baselines, measured in the same run:
- idle: the same simulator process hosting one camera;
- streaming: a bare PyAV libx264 encoder fed pre-rendered frames at the same size, rate and
  settings, with no rendering, packetizing or RTSP (what any camera simulator must pay).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av

from tests.bench.common import Figure, proc_cpu_seconds, proc_rss_mib
from tests.ports import free_port

STREAM_SECONDS = 10.0
IDLE_SECONDS = 5.0
FLEET = 200

_BARE_ENCODER = r"""
import sys, time
from fractions import Fraction
import numpy as np, av
w, h, fps, seconds = 1280, 720, 25, float(sys.argv[1])
enc = av.CodecContext.create("libx264", "w")
enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
enc.time_base = Fraction(1, fps)
enc.framerate = fps
enc.bit_rate = 2048_000
enc.gop_size = 50
enc.options = {"preset": "ultrafast", "tune": "zerolatency"}
frames = []
for i in range(fps):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, (i * 40) % w :] = (200, 120, 40)
    frames.append(av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p"))
start = time.monotonic()
n = 0
while time.monotonic() - start < seconds:
    f = frames[n % fps]
    f.pts = n
    enc.encode(f)
    n += 1
    time.sleep(max(0.0, start + n / fps - time.monotonic()))
"""


def _start_sim(args: list[str]) -> tuple[subprocess.Popen[bytes], dict[str, object], float]:
    ready = Path(tempfile.mkdtemp()) / "ready.json"
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent",
            "--log-level",
            "WARNING",
            "sim",
            "camera",
            "--ready-file",
            str(ready),
            "--no-discovery",
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() - t0 > 120:
            raise RuntimeError("simulator did not start")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text()), time.monotonic() - t0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _idle(count: int) -> tuple[float, float, float]:
    """(start seconds, RSS MiB, CPU seconds during IDLE_SECONDS)."""
    proc, _, started = _start_sim(["--count", str(count), "--port", "0", "--rtsp-port", "0"])
    try:
        time.sleep(1.0)
        cpu0 = proc_cpu_seconds(proc.pid)
        time.sleep(IDLE_SECONDS)
        cpu = proc_cpu_seconds(proc.pid) - cpu0
        return started, proc_rss_mib(proc.pid), cpu
    finally:
        _stop(proc)


def _pull(url: str, stop: threading.Event, counter: list[int]) -> None:
    with av.open(url, options={"rtsp_transport": "tcp"}, timeout=(10, 10)) as c:
        for _ in c.demux(c.streams.video[0]):
            counter[0] += 1
            if stop.is_set():
                break


def _stream_cpu() -> tuple[float, float]:
    """(simulator CPU s per video s, bare encoder CPU s per video s)."""
    port, rtsp = free_port(), free_port()
    proc, _info, _ = _start_sim(
        [
            "--port",
            str(port),
            "--rtsp-port",
            str(rtsp),
            "--username",
            "admin",
            "--password",
            "admin",
        ]
    )
    try:
        url = f"rtsp://admin:admin@127.0.0.1:{rtsp}/live/main"
        stop, counter = threading.Event(), [0]
        reader = threading.Thread(target=_pull, args=(url, stop, counter), daemon=True)
        reader.start()
        time.sleep(2.0)  # warm-up: encoder started, first GOP out
        cpu0 = proc_cpu_seconds(proc.pid)
        time.sleep(STREAM_SECONDS)
        sim = (proc_cpu_seconds(proc.pid) - cpu0) / STREAM_SECONDS
        stop.set()
        reader.join(15)
    finally:
        _stop(proc)
    base = subprocess.Popen([sys.executable, "-c", _BARE_ENCODER, str(STREAM_SECONDS + 2)])
    time.sleep(2.0)
    cpu0 = proc_cpu_seconds(base.pid)
    time.sleep(STREAM_SECONDS - 0.5)
    bare = (proc_cpu_seconds(base.pid) - cpu0) / (STREAM_SECONDS - 0.5)
    base.wait(30)
    return sim, bare


def run() -> list[Figure]:
    bench = "simulated camera"
    one_start, one_rss, one_cpu = _idle(1)
    many_start, many_rss, many_cpu = _idle(FLEET)
    sim, bare = _stream_cpu()
    return [
        Figure(
            bench,
            f"start {FLEET} idle cameras",
            many_start,
            "s",
            one_start,
            "same simulator, 1 camera",
        ),
        Figure(
            bench,
            f"RSS with {FLEET} idle cameras",
            many_rss,
            "MiB",
            one_rss,
            "same simulator, 1 camera",
            note=f"{(many_rss - one_rss) / (FLEET - 1):.2f} MiB per extra idle camera",
        ),
        Figure(
            bench,
            f"CPU while {FLEET} cameras idle",
            many_cpu / IDLE_SECONDS,
            "cores",
            one_cpu / IDLE_SECONDS,
            "same simulator, 1 camera",
            note="no encoder runs without a viewer",
        ),
        Figure(
            bench,
            "CPU serving 1 viewer of 1280x720@25 H.264+PCMU",
            sim,
            "cores",
            bare,
            "bare PyAV libx264 encode, same settings",
            note="the ratio is what rendering, packetizing and RTSP add to the encoder",
        ),
    ]
