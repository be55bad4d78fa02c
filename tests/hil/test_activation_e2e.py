"""Activation end to end: Watcher token -> QR code on a camera's video -> agent -> cloud.

The simulated cloud, a simulated camera and the real agent daemon, all on loopback.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from agent.app import Agent
from agent.config import AgentConfig
from agent.sim.camera.camera import SimCameraConfig
from agent.sim.cloud.app import SimCloud
from tests.world import SimCameraSpec, World, show_text_qr, wait_until

CAM_PW = "cam-pw"


def _no_url(cfg: AgentConfig) -> AgentConfig:
    """No activation URL: all comes from the QR code."""
    return replace(cfg, cloud=replace(cfg.cloud, activation_url=None))


async def check_provisioned(world: World, token: str) -> tuple[str, str]:
    """(stream name, agent id) once the cloud shows the camera provisioned through the agent."""
    watcher = world.cloud.watcher_url
    status, tok = await world.http("GET", f"{watcher}/agent_activation_token/{token}")
    assert status == 200
    name = tok["stream_name"]
    assert tok["camera_name"] == name
    status, stream = await world.http("GET", f"{watcher}/streams/{name}")
    assert status == 200
    (inp,) = stream["inputs"]
    cam = world.cameras[0]
    assert inp["url"] == cam.rtsp_url("main")
    assert inp["via"].startswith("agent://")
    agent_id = inp["via"][len("agent://") :]
    return name, agent_id


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    cam = SimCameraConfig(password=CAM_PW, name="Door", serial="ACT0001")
    async with World(
        [SimCameraSpec(cam)], cloud=SimCloud(port=0), state_dir=tmp_path / "state"
    ) as w:
        yield w


async def _central_alive(world: World, agent_id: str) -> bool:
    status, body = await world.http("GET", f"{world.cloud.central_url}/agents")
    assert status == 200
    for agent in body["agents"]:
        if agent["id"] == agent_id:
            return bool(agent["stats"]["endpoint_connection"]["alive"])
    return False


async def test_qr_code_shown_to_a_camera_activates_the_agent(world: World) -> None:
    token = await world.new_token("Front door")
    status, payload = await world.http("GET", f"{world.cloud.url}/sim/qr/{token}")
    assert status == 200
    assert str(payload).startswith("camera-agent://activate?token=")
    await show_text_qr(world.cameras[0], str(payload))
    agent = await world.start_agent(_no_url)  # no token, no activation URL: all from the QR code

    async def provisioned() -> bool:
        _, tok = await world.http(
            "GET", f"{world.cloud.watcher_url}/agent_activation_token/{token}"
        )
        return isinstance(tok, dict) and "stream_name" in tok

    took = await wait_until(provisioned, 10)  # the product promise: within 10 s
    print(f"provisioned {took:.1f} s after the agent was ready")
    name, agent_id = await check_provisioned(world, token)
    await wait_until(lambda: _central_alive(world, agent_id), 15)
    cloud_status = agent.cloud.status()
    assert cloud_status["activated"]
    assert cloud_status["agent_id"] == agent_id
    assert any(s.get("stream_name") == name for s in cloud_status["streams"])
    await world.stop_agent()
    # A restarted agent reconnects with its stored identity: no token needed.
    again = await world.start_agent(_no_url)
    await wait_until(lambda: _central_alive(world, agent_id), 15)
    assert again.cloud.status()["agent_id"] == agent_id


async def test_activation_through_the_local_api(world: World, tmp_path: Path) -> None:
    token = await world.new_token("Yard")
    agent = await world.start_agent()
    await wait_until(lambda: world.online(1), 15)
    base = world.api
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/activation", json={"token": token}) as r:
            body = await r.json()
            assert r.status == 200, body
        name, agent_id = await check_provisioned(world, token)
        assert body["stream_name"] == name
        assert body["agent_id"] == agent_id
        async with s.post(f"{base}/activation", json={"token": "no-such-token"}) as r:
            refused = await r.json()
            assert r.status == 400
            assert refused["status"] == "token_unknown"
        async with s.get(f"{base}/status") as r:
            status = await r.json()
            assert status["activation"]["activated"] is True
            assert status["activation"]["agent_id"] == agent_id
            assert status["cameras"]["total"] == 1
    (tmp_path / "none.toml").write_text("")
    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agent", "status", "--api", f"127.0.0.1:{agent.api.port}",
         "--config", str(tmp_path / "none.toml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert f"activated as agent {agent_id}" in shown.stdout
    assert "endpoint: ready" in shown.stdout


async def test_activate_command(world: World, tmp_path: Path) -> None:
    token = await world.new_token("Gate")
    state = tmp_path / "cli-state"
    cmd = [sys.executable, "-m", "agent", "activate", "--token", token,
           "--activation-url", world.cloud.url, "--state-dir", str(state)]  # fmt: skip
    done = await asyncio.to_thread(
        subprocess.run, cmd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "agent_id=" in done.stdout
    reused = await asyncio.to_thread(
        subprocess.run,
        [*cmd[:-2], "--state-dir", str(tmp_path / "other-state")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert reused.returncode != 0
    assert "Traceback" not in reused.stderr
    assert "used" in (reused.stderr + reused.stdout).lower()
    assert not (tmp_path / "other-state" / "activation.json").exists()


async def _activated_agent(world: World, token: str) -> Agent:
    agent = await world.start_agent()
    await wait_until(lambda: world.online(1), 15)
    await agent.cloud.activate(token)
    return agent


async def test_redirect_and_reset_from_central(world: World, tmp_path: Path) -> None:
    await world.cloud.stop()
    async with SimCloud(port=0, streampoints=2) as cloud:
        world.cloud = cloud
        token = await world.new_token("Drive")
        agent = await _activated_agent(world, token)
        _, agent_id = await check_provisioned(world, token)
        await wait_until(lambda: _central_alive(world, agent_id), 15)

        def streampoint() -> str | None:
            sp = agent.cloud.status().get("streampoint")
            return sp.get("hostname") if sp and sp.get("alive") else None

        await wait_until(lambda: streampoint() == "streampoint-1", 15)
        status, _ = await world.http(
            "PUT",
            f"{cloud.central_url}/agents/{agent_id}",
            {"layout": {"ingest": "streampoint-2"}},
        )
        assert status == 200
        await wait_until(lambda: streampoint() == "streampoint-2", 15)
        status, _ = await world.http("POST", f"{cloud.central_url}/agents/{agent_id}/reset")
        assert status in (200, 204)
        await wait_until(lambda: not agent.cloud.status()["activated"], 15)
        assert not (tmp_path / "state" / "activation.json").exists()
        await world.stop_agent()


async def test_agent_reconnects_after_cloud_restart_with_db(world: World, tmp_path: Path) -> None:
    await world.cloud.stop()
    db = tmp_path / "cloud.db"
    first = SimCloud(port=0, db=db)
    await first.start()
    port = first.port
    world.cloud = first
    token = await world.new_token("Porch")
    agent = await _activated_agent(world, token)
    try:
        _, agent_id = await check_provisioned(world, token)
        await wait_until(lambda: _central_alive(world, agent_id), 15)
        await first.stop()
        await wait_until(lambda: not agent.cloud.status()["endpoint"]["alive"], 15)
        async with SimCloud(port=port, db=db) as second:
            world.cloud = second
            await wait_until(lambda: _central_alive(world, agent_id), 45)
            _, tok = await world.http("GET", f"{second.watcher_url}/agent_activation_token/{token}")
            assert tok["stream_name"]
            await world.stop_agent()
    finally:
        await first.stop()


async def test_token_from_another_server_is_refused(world: World, tmp_path: Path) -> None:
    async with SimCloud(port=0) as other:
        _, body = await world.http(
            "POST", f"{other.watcher_url}/agent_activation_token", {"title": "elsewhere"}
        )
        token = body["token"]
    agent = Agent(world.agent_config())
    from agent.cloud.activation import TokenUnknown

    with pytest.raises(TokenUnknown):
        await agent.cloud.activate(token)
    assert not (tmp_path / "state" / "activation.json").exists()


async def test_nvr_binds_a_second_camera_shown_another_token(tmp_path: Path) -> None:
    configs = [
        SimCameraConfig(password=CAM_PW, name="Hall", serial="NVR0001"),
        SimCameraConfig(password=CAM_PW, name="Yard", serial="NVR0002"),
    ]
    async with World(
        [SimCameraSpec(c) for c in configs],
        cloud=SimCloud(port=0),
        state_dir=tmp_path / "state",
        configure=_no_url,
    ) as world:
        cloud = world.cloud
        agent = await world.start_agent()
        await wait_until(lambda: world.online(2), 15)
        hall = next(c.id for c in agent.inventory.cameras() if c.serial_number == "NVR0001")
        first = await world.new_token("Hall")
        base = world.api
        async with aiohttp.ClientSession() as s:
            async with s.post(
                f"{base}/activation",
                json={"token": first, "camera_id": hall, "activation_url": cloud.url},
            ) as r:
                assert r.status == 200, await r.text()
            second = await world.new_token("Yard")
            _, payload = await world.http("GET", f"{cloud.url}/sim/qr/{second}")
            yard = world.cameras[1]
            await show_text_qr(yard, str(payload))
            async with s.post(f"{base}/activation/scan", json={"seconds": 60}) as r:
                assert r.status == 200

        async def bound() -> bool:
            _, tok = await world.http("GET", f"{cloud.watcher_url}/agent_activation_token/{second}")
            return isinstance(tok, dict) and "stream_name" in tok

        await wait_until(bound, 15)
        _, tok = await world.http("GET", f"{cloud.watcher_url}/agent_activation_token/{second}")
        _, stream = await world.http("GET", f"{cloud.watcher_url}/streams/{tok['stream_name']}")
        assert stream["inputs"][0]["url"] == yard.rtsp_url("main")
        _, tok1 = await world.http("GET", f"{cloud.watcher_url}/agent_activation_token/{first}")
        _, stream1 = await world.http("GET", f"{cloud.watcher_url}/streams/{tok1['stream_name']}")
        assert stream["inputs"][0]["via"] == stream1["inputs"][0]["via"]  # one agent
        assert stream1["inputs"][0]["url"] == world.cameras[0].rtsp_url("main")
        await world.stop_agent()


async def test_reboot_from_central_stops_the_daemon_for_a_restart(world: World) -> None:
    token = await world.new_token("Barn")
    agent = await _activated_agent(world, token)
    _, agent_id = await check_provisioned(world, token)
    await wait_until(lambda: _central_alive(world, agent_id), 15)
    status, _ = await world.http("POST", f"{world.cloud.central_url}/agents/{agent_id}/reboot")
    assert status in (200, 204)
    task = world.agent_task
    assert task is not None
    await asyncio.wait_for(asyncio.shield(task), 10)  # run() returns by itself
    assert agent.restart_requested
