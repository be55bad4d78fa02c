"""CPU of one push relay (camera RTSP -> RTSP publish, stream copy) against the FFmpeg CLI.

Source: the simulated camera (1280x720@25 H.264 + PCMU) in its own process. Receiver: `ffmpeg`
in RTSP listen mode writing to the null muxer. Measured: CPU of the process doing the relay.
Baseline, same run, same source and receiver:
`ffmpeg -rtsp_transport tcp -i SRC -c copy -f rtsp -rtsp_transport tcp DST`
(if the `ffmpeg` CLI is missing, a bare PyAV demux/mux loop in its own process).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

from tests.bench.bench_sim import _start_sim, _stop
from tests.bench.common import Figure, free_port, proc_cpu_seconds, proc_rss_mib

SECONDS = 10.0
WARMUP = 3.0

_RELAY = r"""
import asyncio, sys
from agent.media.push import PushRelay, PushTarget
async def main():
    relay = PushRelay(sys.argv[1], PushTarget(sys.argv[2]), name="bench")
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(float(sys.argv[3]))
    print(relay.status(), file=sys.stderr)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
asyncio.run(main())
"""

_BARE = r"""
import sys, time
import av
src, dst, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
with av.open(src, options={"rtsp_transport": "tcp"}, timeout=10) as i:
    streams = [i.streams.video[0], *i.streams.audio[:1]]
    o = av.open(dst, "w", format="rtsp", options={"rtsp_transport": "tcp"}, timeout=10)
    outs = [o.add_stream_from_template(s) for s in streams]
    end = time.monotonic() + seconds
    for p in i.demux(streams):
        if p.dts is None:
            continue
        p.stream = outs[streams.index(p.stream)]
        o.mux(p)
        if time.monotonic() > end:
            break
    o.close()
"""


def _receiver(port: int) -> subprocess.Popen[bytes]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        args = [ffmpeg, "-loglevel", "error", "-rtsp_flags", "listen", "-listen_timeout", "30"]
        args += ["-i", f"rtsp://127.0.0.1:{port}/live", "-c", "copy", "-f", "null", "-"]
    else:
        script = (
            "import sys, av\n"
            "with av.open(sys.argv[1], options={'rtsp_flags': 'listen', 'listen_timeout': '30'})"
            " as c:\n    for _ in c.demux(): pass\n"
        )
        args = [sys.executable, "-c", script, f"rtsp://127.0.0.1:{port}/live"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return proc


def _measure(cmd: list[str], port: int) -> tuple[float, float]:
    """(CPU cores, RSS MiB) of `cmd` relaying to a receiver on `port`, after a warm-up."""
    receiver = _receiver(port)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(WARMUP)
        cpu0 = proc_cpu_seconds(proc.pid)
        time.sleep(SECONDS)
        cores = (proc_cpu_seconds(proc.pid) - cpu0) / SECONDS
        return cores, proc_rss_mib(proc.pid)
    finally:
        _stop(proc)
        _stop(receiver)


def run() -> list[Figure]:
    port, rtsp = free_port(), free_port()
    sim, _info, _ = _start_sim(
        [
            *("--port", str(port), "--rtsp-port", str(rtsp)),
            *("--username", "admin", "--password", "admin"),
        ]
    )
    src = f"rtsp://admin:admin@127.0.0.1:{rtsp}/live/main"
    try:
        run_for = str(WARMUP + SECONDS + 5)
        dst = free_port()
        relay, relay_rss = _measure(
            [sys.executable, "-c", _RELAY, src, f"rtsp://127.0.0.1:{dst}/live", run_for], dst
        )
        dst = free_port()
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg:
            base_name = "ffmpeg -c copy CLI, same source and receiver"
            cmd = [ffmpeg, "-loglevel", "error", "-rtsp_transport", "tcp", "-i", src]
            cmd += ["-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp"]
            cmd += [f"rtsp://127.0.0.1:{dst}/live"]
        else:
            base_name = "bare PyAV remux loop (ffmpeg CLI missing)"
            cmd = [sys.executable, "-c", _BARE, src, f"rtsp://127.0.0.1:{dst}/live", run_for]
        base, base_rss = _measure(cmd, dst)
    finally:
        _stop(sim)
    bench = "push relay"
    return [
        Figure(
            bench,
            "CPU per relayed 1280x720@25 H.264+PCMU stream (RTSP -> RTSP)",
            relay,
            "cores",
            base,
            base_name,
            note="stream copy, no decode; relay figure includes the Python interpreter and loop",
        ),
        Figure(bench, "RSS of the relay process", relay_rss, "MiB", base_rss, base_name),
    ]
