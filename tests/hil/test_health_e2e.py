"""Health end to end: the real agent reports to the simulated cloud, whose Central agent record,
Watcher stream stats and cluster stats follow a camera going down and traffic flowing; the
agent's /metrics carries the same figures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

from agent.app import Agent
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.cloud.app import SimCloud
from tests.world import SimCameraSpec, World

AUTH = {"Authorization": aiohttp.encode_basic_auth("admin", "admin")}
PW = "health-pw"


async def get(url: str) -> Any:
    async with aiohttp.ClientSession(headers=AUTH) as s, s.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.json(content_type=None) if "json" in r.content_type else await r.text()


async def until(check: Any, timeout: float) -> Any:
    async with asyncio.timeout(timeout):
        while not (value := await check()):
            await asyncio.sleep(0.2)
        return value


def decode(url: str, n: int) -> int:
    got = 0
    with av.open(url, options={"rtsp_transport": "tcp", "timeout": "5000000"}, timeout=10) as c:
        for _ in c.decode(video=0):
            got += 1
            if got >= n:
                break
    return got


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[SimCloud, SimCamera, Agent, str]]:
    async with World(
        [SimCameraSpec(SimCameraConfig(password=PW, name="Health", serial="HLT1"))],
        cloud=SimCloud(port=0, camera_login=("admin", PW)),
        state_dir=tmp_path / "state",
        configure=lambda cfg: replace(cfg, health_interval=1.0),
    ) as w:
        agent = await w.start_agent()

        async def online() -> bool:
            return w.online(1)

        await until(online, 20)
        act = await agent.cloud.activate(await w.new_token("h"))
        yield w.cloud, w.cameras[0], agent, str(act.streams[-1]["stream_name"])


async def test_cloud_and_metrics_follow_the_camera(
    world: tuple[SimCloud, SimCamera, Agent, str],
) -> None:
    cloud, cam, agent, name = world
    agent_id = agent.cloud.status()["agent_id"]

    async def camera_stats() -> dict[str, Any] | None:
        stream = await get(f"{cloud.watcher_url}/streams/{name}")
        stats = stream["stats"].get("agent_camera")
        return stream if stats and stats["isOnline"] and "sim_rtsp_url" in stream else None

    stream = await until(camera_stats, 20)
    record = await get(f"{cloud.central_url}/agents/{agent_id}")
    stats = record["stats"]
    for key in ("agent_type", "version", "local_ip", "mac_address", "peer_ip",
                "connections_requested", "connections_established",
                "endpoint_connection", "streampoint_connection"):  # fmt: skip
        assert key in stats, key
    before = stats["streampoint_connection"]["bytes_to_server"]

    # Traffic through the agent: the cloud sees bytes and tunnels, /metrics the same bytes.
    assert await asyncio.to_thread(decode, stream["sim_rtsp_url"], 30) == 30

    async def flowed() -> dict[str, Any] | None:
        s = (await get(f"{cloud.central_url}/agents/{agent_id}"))["stats"]
        sp = s["streampoint_connection"]
        return s if sp["bytes_to_server"] > before and sp["connections_opened"] >= 1 else None

    await until(flowed, 10)

    async def relayed() -> bool:
        stream = await get(f"{cloud.watcher_url}/streams/{name}")
        return bool(stream["stats"]["agent_camera"]["relay_bytes_out"] > 50_000)

    await until(relayed, 10)
    text = await get_metrics(agent)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in parse_om(text) for s in f.samples}  # fmt: skip
    cam_id = agent.inventory.cameras()[0].id
    assert samples[("camera_agent_camera_up", (("camera", cam_id),))] == 1.0

    cluster = await get(f"{cloud.central_url}/cluster/stats")
    assert cluster["agent_metrics_total"]["total"] == 1
    assert cluster["agent_metrics_total"]["operational"] == 1
    om = await get(f"{cloud.central_url}/cluster/stats?format=openmetrics")
    values = {s.name: s.value for f in parse_om(om) for s in f.samples}
    assert values["agent_operational_count"] == 1

    # The camera dies: offline in the cloud within 10 s.
    down_at = time.monotonic()
    reboot = asyncio.create_task(cam.reboot(30))

    async def offline() -> bool:
        s = (await get(f"{cloud.watcher_url}/streams/{name}"))["stats"]["agent_camera"]
        return not s["isOnline"]

    try:
        await until(offline, 12)
        took = time.monotonic() - down_at
        print(f"\ncamera shown offline in the cloud {took:.1f} s after it died")
        assert took < 10
        cluster = await get(f"{cloud.central_url}/cluster/stats")
        assert cluster["agent_metrics_total"]["operational"] == 0
        text = await get_metrics(agent)
        up = [s.value for f in parse_om(text) for s in f.samples
              if s.name == "camera_agent_camera_up"]  # fmt: skip
        assert up == [0.0]
    finally:
        reboot.cancel()
        await asyncio.gather(reboot, return_exceptions=True)


async def get_metrics(agent: Agent) -> str:
    await agent.health.collect()
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"http://127.0.0.1:{agent.api.port}/metrics",
            headers={"Accept": "application/openmetrics-text"},
        ) as r,
    ):
        assert r.status == 200
        return await r.text()
