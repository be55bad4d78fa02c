"""Restream fan-out: what each RTSP viewer of one camera costs the agent, against go2rtc.

One simulated camera (1280x720@25 H.264 + PCMU, in its own process) is restreamed by the agent
(`camera-agent run`, its own process: the camera as a `[[camera]]` table, the restream server
on loopback) and by go2rtc (tests/peers/go2rtc.py). For 1, 4 and 16 viewers, each server in
turn gets that many `ffmpeg -rtsp_transport tcp -i URL -map 0 -c copy -f null -` readers (the
same for both; each must receive at least half of the frames of the window). CPU is the server
process's user + system time from /proc over `SECONDS` after `WARMUP`, divided by the viewers:
the readers and the camera are other processes, so nothing of theirs is counted, and all of the
server's threads are. Memory: RSS added per viewer, (RSS with N viewers - RSS idle) / N, idle
being the same process with the camera known and no viewer.

"Camera sessions held": the agent restarted with push entries, then restream viewers, WebRTC
viewers (aiortc receivers in this process) and snapshots all at once; the figure is the
simulated camera's own session count (its peak over the phase, `GET /sim/state`) against the
consumers that run at once, what the camera would hold with a session per consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from agent.sim.world import World
from tests.bench import hub_procs as hp
from tests.bench.common import Figure
from tests.peers.go2rtc import go2rtc

BENCH = "restream fan-out"
VIEWERS = (1, 4, 16)
SECONDS = 8.0
WARMUP = 3.0
#: Consumers of the sessions phase.
RESTREAMS, PUSHES, WEBRTCS, SNAPSHOTS = 2, 2, 2, 2


IDLE_SECONDS = 4.0


async def _fanout(run_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"agent": {}, "go2rtc": {}}
    async with hp.cloud() as sim_cloud, hp.camera(run_dir) as cam:
        async with (
            hp.agent(run_dir, cam, sim_cloud) as agent,
            go2rtc(run_dir, cam.url("main")) as g2,
        ):
            await cam.wait_sessions(0)
            out["agent_idle"] = await hp.measure(agent.pid, [], 1.0, IDLE_SECONDS)
            out["go2rtc_idle"] = await hp.measure(g2.pid, [], 0.0, IDLE_SECONDS)
            for n in VIEWERS:
                for name, pid, url in (
                    ("agent", agent.pid, agent.restream_url()),
                    ("go2rtc", g2.pid, g2.rtsp),
                ):
                    await cam.wait_sessions(0)
                    async with hp.readers(run_dir, [url] * n) as rs:
                        usage = await hp.measure(pid, rs, WARMUP, SECONDS)
                        out[name][n] = usage
                        if name == "agent":
                            out.setdefault("held", {})[n] = await cam.sessions()
        out["sessions"] = await _sessions(run_dir, cam, sim_cloud)
    return out


async def _sessions(run_dir: Path, cam: hp.Camera, sim_cloud: World) -> dict[str, Any]:
    """Every kind of consumer at once; the sessions the camera holds."""
    from tests.hil.test_webrtc import Viewer

    await cam.wait_sessions(0)
    await cam.reset_peak()
    async with (
        hp.receivers(PUSHES) as targets,
        hp.agent(run_dir, cam, sim_cloud, pushes=targets) as agent,
    ):
        await _wait_pushes(agent)
        viewers: list[Viewer] = []
        try:
            async with hp.readers(run_dir, [agent.restream_url()] * RESTREAMS) as rs:
                async with aiohttp.ClientSession() as s:
                    for _ in range(WEBRTCS):
                        viewer = Viewer()
                        viewers.append(viewer)
                        body = {"type": "offer", "sdp": await viewer.offer()}
                        async with s.post(f"{agent.api}/webrtc/{agent.camera_id}", json=body) as r:
                            if r.status != 200:
                                raise RuntimeError(f"WebRTC offer: HTTP {r.status}")
                            await viewer.accept((await r.json())["sdp"])
                    for viewer in viewers:
                        await viewer.frames(5)
                    for _ in range(SNAPSHOTS):
                        async with s.get(f"{agent.api}/camerasnapshots/{agent.camera_id}") as r:
                            if r.status != 200 or not (await r.read()).startswith(b"\xff\xd8"):
                                raise RuntimeError(f"snapshot: HTTP {r.status}")
                usage = await hp.measure(agent.pid, rs, 0.0, 2.0)
                state = await cam.state()
                status = await agent.get("/status")
        finally:
            for viewer in viewers:
                await viewer.pc.close()
    camera = status["relay"]["sessions"]["cameras"][agent.camera_id]
    consumers: dict[str, int] = {}
    for stream in camera["streams"]:
        for kind, count in stream["consumers"].items():
            consumers[kind] = consumers.get(kind, 0) + int(count)
    return {
        "now": int(state["rtsp_sessions"]),
        "peak": int(state["rtsp_sessions_peak"]),
        "refused": int(state["rtsp_sessions_refused"]),
        "agent_held": int(camera["held"]),
        "consumers": consumers,
        "frames": usage.frames,
    }


async def _wait_pushes(agent: hp.AgentProcess, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                push = (await agent.get("/status"))["relay"]["push"]
                relays = [p.get("relay") or {} for p in push]
                if (
                    push
                    and all(p["state"] == "running" for p in push)
                    and all(r.get("packets", 0) > 0 for r in relays)
                ):
                    return
            await asyncio.sleep(0.5)


def run() -> list[Figure]:
    from tests.bench.bench_webrtc import quiet

    quiet()
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(_fanout(Path(tmp)))
    figures = []
    base = "go2rtc 1.9.14 restreaming the same camera to the same readers"
    what = f"1280x720@25 H.264+PCMU, ffmpeg -c copy readers, {SECONDS:g} s"
    ai, gi = r["agent_idle"], r["go2rtc_idle"]
    for n in VIEWERS:
        a, g = r["agent"][n], r["go2rtc"][n]
        figures.append(
            Figure(BENCH, f"agent CPU per viewer, {n} RTSP viewer{'s' * (n > 1)}",
                   a.cores / n, "cores", g.cores / n, base,
                   note=f"{what}; whole process, in cores: agent {a.cores:.4f} (idle "
                   f"{ai.cores:.4f}), go2rtc {g.cores:.4f} (idle {gi.cores:.4f}); camera "
                   f"sessions held by the agent: {r['held'][n]}; fewest "
                   f"frames per reader: agent {a.frames}, go2rtc {g.frames}")
        )  # fmt: skip
    for n in VIEWERS:
        a, g = r["agent"][n], r["go2rtc"][n]
        figures.append(
            Figure(BENCH, f"RSS added per viewer, {n} RTSP viewer{'s' * (n > 1)}",
                   (a.rss - ai.rss) / n, "MiB", (g.rss - gi.rss) / n,
                   base + " (its RSS over its own idle RSS)",
                   note=f"RSS with {n}: agent {a.rss:.1f} MiB (idle {ai.rss:.1f}), "
                   f"go2rtc {g.rss:.1f} MiB (idle {gi.rss:.1f}); viewer counts run "
                   "in increasing order in one process each")
        )  # fmt: skip
    top = VIEWERS[-1]
    figures.append(
        Figure(BENCH, f"RSS with {top} RTSP viewers", r["agent"][top].rss, "MiB",
               r["go2rtc"][top].rss, base,
               note=f"idle (no viewer, camera known): agent {ai.rss:.1f} MiB, go2rtc "
               f"{gi.rss:.1f} MiB; the agent's RSS is that of the whole daemon (discovery, "
               "cloud connection, API, health included)")
    )  # fmt: skip
    s = r["sessions"]
    count = RESTREAMS + PUSHES + WEBRTCS + 1
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(s["consumers"].items()))
    figures.append(
        Figure(BENCH, "camera sessions held, restream + push + WebRTC + snapshots at once",
               s["peak"], "sessions", count,
               "one session per consumer: the consumers at once (counted, not measured)",
               note=f"{RESTREAMS} restream viewers, {PUSHES} push relays, {WEBRTCS} WebRTC "
               f"viewers, {SNAPSHOTS} snapshots one after the other (counted once); the camera's "
               f"own count: peak {s['peak']}, open at the end {s['now']}, refused "
               f"{s['refused']}; the agent's account: held {s['agent_held']}, consumers by kind "
               f"{kinds}")
    )  # fmt: skip
    return figures
