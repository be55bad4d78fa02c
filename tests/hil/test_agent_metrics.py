"""`GET /metrics` of a running agent with a simulated camera: parses as OpenMetrics and as
Prometheus text, and carries the agent's, the host's and the camera's figures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_prom

from agent.app import Agent
from agent.config import AgentConfig, DiscoveryConfig
from agent.secret import Credentials, Secret
from agent.sim.camera.camera import SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    async with SimCameraFleet(
        [SimCameraConfig(name="Metrics", serial="MET1")], discovery_port=None
    ) as fleet:
        cfg = AgentConfig(
            state_dir=tmp_path / "state",
            api_host="127.0.0.1",
            api_port=0,
            discovery=DiscoveryConfig(
                multicast=False, mdns=False, probe=(("127.0.0.1", fleet.cameras[0].port),)
            ),
            default_credentials=(Credentials("admin", Secret("admin")),),
            health_interval=1.0,
        )
        a = Agent(cfg)
        stop = asyncio.Event()
        task = asyncio.create_task(a.run(stop))
        try:
            await asyncio.wait_for(a.ready.wait(), 20)
            async with asyncio.timeout(20):
                while not any(c.state == "online" for c in a.inventory.cameras()):
                    await asyncio.sleep(0.1)
            yield a
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def test_metrics_parse_and_carry_the_figures(agent: Agent) -> None:
    cam_id = agent.inventory.cameras()[0].id
    url = f"http://127.0.0.1:{agent.api.port}/metrics"
    async with asyncio.timeout(10):
        while True:  # the next sample after the camera came online
            snapshot = await agent.metrics()
            if any(c.get("state") == "online" for c in snapshot["cameras"]):
                break
            await asyncio.sleep(0.2)
    async with aiohttp.ClientSession() as s:
        async with s.get(url, headers={"Accept": "application/openmetrics-text"}) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            om = await r.text()
        async with s.get(url) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            prom = await r.text()
    families = {f.name: f for f in parse_om(om)}
    assert {f.name for f in parse_prom(prom)}  # the older format parses too
    up = [s for s in families["camera_agent_camera_up"].samples if s.labels["camera"] == cam_id]
    assert [s.value for s in up] == [1.0]
    samples = {s.name: s for f in families.values() for s in f.samples}
    assert samples["camera_agent_info"].labels["version"]
    assert families["camera_agent_memory_bytes"].samples
    assert families["camera_agent_uptime_seconds"].samples[0].value > 0
    assert "camera_agent_event_loop_lag_seconds" in families
