"""The daemon applies its hardware profile: update bundles must target it, the profile's
thermal thresholds drive load shedding (a hot box stops QR sampling, snapshots and live views,
never the relay), and the status route and `camera-agent status` show it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.app import Agent
from agent.config import AgentConfig, DiscoveryConfig
from agent.errors import ConfigError
from agent.status import format_status


def _config(tmp: Path, profile: str, temp_file: Path) -> AgentConfig:
    return AgentConfig(
        state_dir=tmp / "state",
        api_host="127.0.0.1",
        api_port=0,
        discovery=DiscoveryConfig(multicast=False, mdns=False),
        webrtc_addresses=("127.0.0.1",),
        hardware_profile=profile,
        thermal_zone=temp_file,
        health_interval=0.2,
    )


async def _status(agent: Agent) -> dict[str, Any]:
    url = f"http://127.0.0.1:{agent.api.port}/api/v1/status"
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200
        return dict(await r.json())


async def test_a_hot_box_sheds_optional_work(tmp_path: Path) -> None:
    temp = tmp_path / "temp"
    await asyncio.to_thread(temp.write_text, "90000\n")  # 90 °C, above the Pi 4's hard limit
    agent = Agent(_config(tmp_path, "raspberry-pi-4", temp))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        async with asyncio.timeout(20):
            await agent.ready.wait()
            while agent.shedder.level < 2:
                await asyncio.sleep(0.1)
        assert agent.updates.hardware == "raspberry-pi-4"
        assert not agent.shedder.allows("qr") and not agent.shedder.allows("webrtc")
        status = await _status(agent)
        hardware = status["hardware"]
        assert hardware["id"] == "raspberry-pi-4" and hardware["forced"] is True
        assert hardware["shed"]["level"] == 2
        assert set(hardware["shed"]["shed"]) == {"qr", "snapshot", "transcode", "webrtc"}
        text = format_status({"running": True, **status})
        assert "hardware: raspberry-pi-4" in text and "load shed level 2" in text
        assert "temperature" in text
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_an_unknown_forced_profile_is_a_config_error(tmp_path: Path) -> None:
    agent = Agent(_config(tmp_path, "toaster-9000", tmp_path / "none"))
    with pytest.raises(ConfigError, match="unknown hardware profile"):
        await agent.run(asyncio.Event())
