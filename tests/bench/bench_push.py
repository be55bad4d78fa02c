"""CPU of push relays (camera RTSP -> RTSP publish, stream copy) against the FFmpeg CLI.

Source: the simulated camera (1280x720@25 H.264 + PCMU) in its own process, so its encoder is
not counted. Receivers: one `ffmpeg` per stream in RTSP listen mode writing to the null muxer.
`STREAMS` relays run at once in one agent process (one `PushRelay` each, one event loop); the
baseline is `STREAMS` processes of
`ffmpeg -rtsp_transport tcp -i SRC -c copy -f rtsp -rtsp_transport tcp DST`, same source and
receivers. A third phase measures the floor of PyAV itself: a bare demux/mux loop per stream,
one thread each, in one Python process, without any relay code. CPU comes from /proc (user +
system) over `SECONDS` after a warm-up and is divided by `STREAMS`. Memory is PSS
(psutil `memory_full_info().pss`, from /proc/PID/smaps_rollup) summed over the relaying
processes: pages the `STREAMS` ffmpeg processes share (the binary, its libraries) count once, not
once per process as RSS would count them.

Shared session: the agent itself (`camera-agent run`, its own process, activated with the
simulated cloud; tests/bench/hub_procs.py) with `STREAMS` `[[push]]` entries of the camera's main
stream to the same kind of receivers: its `PushManager` relays read the one camera session the
session hub holds, through the hub's loopback RTSP server. Against the same `STREAMS` ffmpeg
processes, each reading the camera directly: CPU per relay (the agent's whole process, so the
hub's camera session and loopback server count), and the sessions the camera holds, read from
the simulated camera itself (`GET /sim/state`) at the end of each window.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.bench import hub_procs as hp
from tests.bench.bench_sim import _start_sim, _stop
from tests.bench.common import Figure, proc_cpu_seconds, proc_rss_mib
from tests.ports import free_port

STREAMS = 4
SECONDS = 15.0
WARMUP = 5.0

_RELAY = r"""
import asyncio, sys
from agent.media.push import PushRelay, PushTarget
async def main():
    src, seconds, targets = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    relays = [PushRelay(src, PushTarget(t), name=f"bench{i}") for i, t in enumerate(targets)]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
asyncio.run(main())
"""

_BARE = r"""
import sys, threading, time
import av
def relay(src, dst, end):
    with av.open(src, options={"rtsp_transport": "tcp"}, timeout=10) as i:
        streams = [i.streams.video[0], *i.streams.audio[:1]]
        o = av.open(dst, "w", format="rtsp", options={"rtsp_transport": "tcp"}, timeout=10)
        outs = {s: o.add_stream_from_template(s) for s in streams}
        started = False
        for p in i.demux(streams):
            if p.dts is None:
                continue
            if not started:
                if p.stream is not streams[0] or not p.is_keyframe:
                    continue
                started = True
            p.stream = outs[p.stream]
            o.mux(p)
            if time.monotonic() > end:
                break
        o.close()
src, seconds, targets = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
end = time.monotonic() + seconds
threads = [threading.Thread(target=relay, args=(src, t, end)) for t in targets]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def _receivers(ports: list[int]) -> list[subprocess.Popen[bytes]]:
    procs = []
    for port in ports:
        args = ["ffmpeg", "-loglevel", "error", "-rtsp_flags", "listen", "-listen_timeout", "30"]
        args += ["-i", f"rtsp://127.0.0.1:{port}/live", "-c", "copy", "-f", "null", "-"]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)
    return procs


@dataclass(frozen=True)
class Usage:
    cores: float  # CPU per stream
    pss: float  # MiB, summed over the relaying processes
    rss: float  # MiB, summed likewise (shared pages counted once per process)
    sessions: int = 0  # RTSP sessions the camera held at the end of the window


def _camera_sessions(control_port: int) -> int:
    """RTSP sessions open at the simulated camera now (its `GET /sim/state`)."""
    url = f"http://127.0.0.1:{control_port}/sim/state"
    with urllib.request.urlopen(url, timeout=5) as r:
        return int(json.load(r)["rtsp_sessions"])


def _measure(cmds: list[list[str]], ports: list[int], control_port: int) -> Usage:
    """CPU and memory of `cmds` relaying to receivers on `ports`."""
    receivers = _receivers(ports)
    procs = [
        subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c in cmds
    ]
    try:
        time.sleep(WARMUP)
        cpu0 = sum(proc_cpu_seconds(p.pid) for p in procs)
        time.sleep(SECONDS)
        cpu = sum(proc_cpu_seconds(p.pid) for p in procs) - cpu0
        pss = sum(psutil.Process(p.pid).memory_full_info().pss for p in procs) / 2**20
        rss = sum(proc_rss_mib(p.pid) for p in procs)
        sessions = _camera_sessions(control_port)
        if any(p.poll() is not None for p in procs + receivers):
            raise RuntimeError("a relay or receiver exited during the measurement")
        return Usage(cpu / SECONDS / len(ports), pss, rss, sessions)
    finally:
        for p in procs + receivers:
            _stop(p)


async def _shared(cam: hp.Camera, run_dir: Path) -> Usage:
    """The agent process relaying `STREAMS` push entries of one camera session."""
    await cam.wait_sessions(0)
    async with (
        hp.cloud() as sim_cloud,
        hp.receivers(STREAMS) as targets,
        hp.agent(run_dir, cam, sim_cloud, pushes=targets) as agent,
    ):
        await asyncio.sleep(WARMUP)
        t0, cpu0 = time.monotonic(), proc_cpu_seconds(agent.pid)
        await asyncio.sleep(SECONDS)
        cpu = (proc_cpu_seconds(agent.pid) - cpu0) / (time.monotonic() - t0)
        pss = psutil.Process(agent.pid).memory_full_info().pss / 2**20
        rss = proc_rss_mib(agent.pid)
        sessions = await cam.sessions()
        push = (await agent.get("/status"))["relay"]["push"]
        if len(push) != STREAMS or any(p["state"] != "running" for p in push):
            raise RuntimeError(f"the agent's push relays are not all running: {push}")
        if any(not (p.get("relay") or {}).get("packets") for p in push):
            raise RuntimeError("a push relay of the agent sent nothing")
        return Usage(cpu / STREAMS, pss, rss, sessions)


def _targets(ports: list[int]) -> list[str]:
    return [f"rtsp://127.0.0.1:{p}/live" for p in ports]


def run() -> list[Figure]:
    if not shutil.which("ffmpeg"):
        raise RuntimeError("bench_push needs the ffmpeg CLI (apt-get install ffmpeg)")
    port, rtsp = free_port(), free_port()
    sim, _info, _ = _start_sim(
        [
            *("--port", str(port), "--rtsp-port", str(rtsp)),
            *("--username", "admin", "--password", "admin"),
        ]
    )
    src = f"rtsp://admin:admin@127.0.0.1:{rtsp}/live/main"
    run_for = str(WARMUP + SECONDS + 5)
    try:
        ports = [free_port() for _ in range(STREAMS)]
        relay = _measure(
            [[sys.executable, "-c", _RELAY, src, run_for, *_targets(ports)]], ports, port
        )
        ports = [free_port() for _ in range(STREAMS)]
        cmds = []
        for target in _targets(ports):
            cmd = ["ffmpeg", "-loglevel", "error", "-rtsp_transport", "tcp", "-i", src]
            cmds.append([*cmd, "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", target])
        base = _measure(cmds, ports, port)
        ports = [free_port() for _ in range(STREAMS)]
        bare = _measure(
            [[sys.executable, "-c", _BARE, src, run_for, *_targets(ports)]], ports, port
        )
        cam = hp.Camera(
            port,
            f"rtsp://127.0.0.1:{rtsp}/live/main",
            f"rtsp://127.0.0.1:{rtsp}/live/sub",
            username="admin",
            password="admin",
        )
        with tempfile.TemporaryDirectory() as tmp:
            shared = asyncio.run(_shared(cam, Path(tmp)))
    finally:
        _stop(sim)
    bench = "push relay"
    base_name = f"ffmpeg -c copy CLI, {STREAMS} processes, same source and receivers"
    what = f"{STREAMS} streams of 1280x720@25 H.264+PCMU, RTSP -> RTSP, {SECONDS:.0f} s"
    return [
        Figure(
            bench,
            "CPU per relayed stream",
            relay.cores,
            "cores",
            base.cores,
            base_name,
            note=f"{what}; {STREAMS} relays in one agent process (interpreter and loop included)",
        ),
        Figure(
            bench,
            "CPU per stream, bare PyAV demux/mux loop (floor of the relay)",
            bare.cores,
            "cores",
            base.cores,
            base_name,
            note=f"{what}; one thread per stream, no relay code",
        ),
        Figure(
            bench,
            f"PSS of the relay process ({STREAMS} streams)",
            relay.pss,
            "MiB",
            base.pss,
            f"{STREAMS} ffmpeg processes, PSS summed",
            note=f"RSS for comparison: the relay process {relay.rss:.1f} MiB, the {STREAMS} "
            f"ffmpeg processes summed {base.rss:.1f} MiB (their shared pages counted "
            f"{STREAMS} times); the bare PyAV loop's PSS {bare.pss:.1f} MiB",
        ),
        Figure(
            bench,
            f"CPU per relay, {STREAMS} relays of one shared camera session (the agent)",
            shared.cores,
            "cores",
            base.cores,
            f"{STREAMS} ffmpeg -c copy processes, each reading the camera itself",
            note=f"{what}; the agent's whole process (camera session, session hub, "
            f"{STREAMS} PushManager relays); its PSS {shared.pss:.1f} MiB, RSS "
            f"{shared.rss:.1f} MiB",
        ),
        Figure(
            bench,
            f"camera sessions held, {STREAMS} push relays",
            shared.sessions,
            "sessions",
            base.sessions,
            f"{STREAMS} ffmpeg -c copy processes, each reading the camera itself",
            note="the simulated camera's own count (GET /sim/state) at the end of each window; "
            f"the standalone PushRelay phase above held {relay.sessions}",
        ),
    ]
