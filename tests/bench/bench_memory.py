"""Agent memory: RSS idle (activated, no cameras), with 16 and with 64 cameras relayed, and
its growth over a long run with 64 cameras relayed.

Each relayed camera's sub stream is set to 320x180 at 5 fps (128 kbit/s) and pulled through
the tunnel from the simulated streamer's port by a cheap consumer (agent.media.rtsp_client:
DESCRIBE/SETUP interleaved/PLAY, then read and drop). Cameras run in their own process
(`camera-agent sim camera --count 64`), the simulated cloud and the consumers in this one.
RSS and open files come from /proc, the asyncio task count from the health sample the agent
reports to the cloud; sampled every 10 s until the agent has run BENCH_MEMORY_SECONDS (default
600: a 10-minute run from its start, set-up included; at least 2 minutes of samples).
Baseline: the agent idle, so the figures show what relaying adds to the agent itself (the
relay's CPU against socat is in bench_tunnel).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench.common import Figure, proc_rss_mib
from tests.soak import FleetWorld, quarter_medians

BENCH = "memory"
SETTLE_S = 15.0
EVERY_S = 10.0
MIN_SAMPLING_S = 120.0


async def _settled_rss(world: FleetWorld) -> float:
    await asyncio.sleep(SETTLE_S)
    values = []
    for _ in range(5):
        values.append(proc_rss_mib(world.pid))
        await asyncio.sleep(1.0)
    return statistics.median(values)


async def _idle(tmp: Path) -> float:
    world = FleetWorld(tmp, 0)
    try:
        await world.start()
        await world.activate(None)
        return await _settled_rss(world)
    finally:
        await world.stop()


def _slope_per_hour(samples: list[dict[str, Any]]) -> float:
    xs = [float(s["t"]) for s in samples]
    ys = [float(s["rss_mib"]) for s in samples]
    if len(xs) < 2:
        return 0.0
    return statistics.linear_regression(xs, ys).slope * 3600


async def _relayed(tmp: Path, seconds: float) -> dict[str, Any]:
    world = FleetWorld(tmp, 64, health_interval=EVERY_S)
    try:
        t_setup = time.monotonic()
        await world.start()
        await world.bind(16)
        rss16 = await _settled_rss(world)
        await world.bind(48)
        setup = time.monotonic() - t_setup
        rss64 = await _settled_rss(world)
        t0 = time.monotonic()
        end = max(t_setup + seconds, t0 + MIN_SAMPLING_S)
        samples = []
        while time.monotonic() < end:
            samples.append(world.sample(t0))
            await asyncio.sleep(EVERY_S)
        samples.append(world.sample(t0))
        return {"rss16": rss16, "rss64": rss64, "samples": samples, "setup": setup,
                "bytes": sum(c.bytes for c in world.consumers),
                "reconnects": sum(c.connects - 1 for c in world.consumers)}  # fmt: skip
    finally:
        await world.stop()


def run() -> list[Figure]:
    seconds = float(os.environ.get("BENCH_MEMORY_SECONDS", "600"))
    with tempfile.TemporaryDirectory() as tmp:
        idle = asyncio.run(_idle(Path(tmp)))
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(_relayed(Path(tmp), seconds))
    samples = r["samples"]
    rss = quarter_medians(samples, "rss_mib") or (r["rss64"], r["rss64"])
    fds = quarter_medians(samples, "fds") or (0.0, 0.0)
    tasks = quarter_medians(samples, "tasks")
    alive = min(s["alive"] for s in samples)
    task_text = f"{tasks[0]:.0f} -> {tasks[1]:.0f}" if tasks else "not reported"
    note = (
        f"agent run {seconds:.0f} s; {len(samples)} samples every {EVERY_S:g} s after set-up; "
        f"slope "
        f"{_slope_per_hour(samples):+.2f} MiB/h; first/last quarter medians RSS {rss[0]:.1f} -> "
        f"{rss[1]:.1f} MiB, open files {fds[0]:.0f} -> {fds[1]:.0f}, asyncio tasks {task_text}; "
        f"streams alive (min) {alive}/64, consumer reconnects {r['reconnects']}; "
        f"{r['bytes'] / 2**20:.0f} MiB drained; set-up {r['setup']:.0f} s"
    )
    per_cam = (r["rss64"] - idle) / 64
    return [
        Figure(BENCH, "agent RSS, 16 cameras relayed (320x180@5)", r["rss16"], "MiB", idle,
               "the agent idle (activated, no cameras)"),
        Figure(BENCH, "agent RSS, 64 cameras relayed (320x180@5)", r["rss64"], "MiB", idle,
               "the agent idle (activated, no cameras)",
               note=f"{per_cam:.2f} MiB per relayed camera over idle (discovery, inventory and "
               "ONVIF sessions included)"),
        Figure(BENCH, "RSS growth over the run, 64 cameras relayed", rss[1] - rss[0], "MiB",
               r["rss64"], "RSS with 64 cameras (ratio: growth as a fraction)", note=note),
    ]  # fmt: skip
