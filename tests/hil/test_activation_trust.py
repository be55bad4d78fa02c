"""Who may move the agent with a QR code: two simulated clouds on loopback (A on 127.0.0.1, B on
127.0.0.2), two simulated cameras and the real agent daemon.

What each cloud did is read from that cloud's own API (its token record, its agent list), not
from what the agent says.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.app import Agent
from agent.cloud import activation as act_mod
from agent.cloud.service import CloudService
from agent.config import CloudConfig
from agent.errors import Unavailable
from agent.proto import cloud as pc
from agent.sim.camera.camera import SimCameraConfig
from agent.sim.cloud.app import SimCloud
from agent.state import StateDir
from tests.hil.test_activation_e2e import CAM_PW, check_provisioned
from tests.hil.test_faults_agent import _can_mount, _fill
from tests.world import SimCameraSpec, World, wait_until


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[World, World]]:
    """(cloud A on 127.0.0.1 with two cameras and the agent's state dir, cloud B on 127.0.0.2)."""
    cams = [
        SimCameraConfig(password=CAM_PW, name="Hall", serial="TRUST01"),
        SimCameraConfig(password=CAM_PW, name="Yard", serial="TRUST02"),
    ]
    async with (
        World(
            [SimCameraSpec(c) for c in cams],
            cloud=SimCloud(host="127.0.0.1", port=0),
            state_dir=tmp_path / "state",
        ) as a,
        World([], cloud=SimCloud(host="127.0.0.2", port=0)) as b,
    ):
        yield a, b


@asynccontextmanager
async def _running(
    world: World, *, activation_url: str | None = None, hosts: tuple[str, ...] = ()
) -> AsyncIterator[Agent]:
    """The agent with these cloud settings, both cameras online; stopped on exit."""
    cloud = CloudConfig(activation_url=activation_url, activation_hosts=hosts)
    agent = await world.start_agent(lambda cfg: replace(cfg, cloud=cloud))
    try:
        await wait_until(lambda: world.online(2), 20)
        yield agent
    finally:
        await world.stop_agent()


def _camera_id(agent: Agent, serial: str) -> str:
    return next(c.id for c in agent.inventory.cameras() if c.serial_number == serial)


async def _token_record(world: World, token: str) -> dict[str, Any]:
    status, body = await world.http(
        "GET", f"{world.cloud.watcher_url}/agent_activation_token/{token}"
    )
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def _cloud_agents(world: World) -> list[dict[str, Any]]:
    status, body = await world.http("GET", f"{world.cloud.central_url}/agents")
    assert status == 200
    return list(body["agents"])


async def _warned(caplog: pytest.LogCaptureFixture, *words: str) -> logging.LogRecord:
    def find() -> logging.LogRecord | None:
        return next(
            (
                r
                for r in caplog.records
                if r.levelno == logging.WARNING and all(w in r.getMessage() for w in words)
            ),
            None,
        )

    await wait_until(lambda: find() is not None, 20)
    found = find()
    assert found is not None
    return found


def _identity(state: Path) -> dict[str, Any]:
    saved = json.loads((state / act_mod.DOCUMENT).read_text())
    return {k: saved[k] for k in ("agent_id", "endpoint_url", "streampoint", "activation_url")}


def _no_token_logged(caplog: pytest.LogCaptureFixture, tokens: list[str]) -> None:
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "activat" in text  # the activation was logged ...
    for token in tokens:
        assert token not in text  # ... without its token


async def test_qr_code_for_another_cloud_cannot_take_a_bound_agent(
    pair: tuple[World, World], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent")
    a, b = pair
    async with _running(a, activation_url=a.cloud.url) as agent:
        first = await a.new_token("Hall")
        await agent.cloud.activate(first, None, _camera_id(agent, "TRUST01"))
        before = _identity(tmp_path / "state")
        assert before["activation_url"] == a.cloud.url

        # In a bind window, the yard camera shows a code made by cloud B.
        foreign = await b.new_token("taken")
        await b.show_qr(a.cameras[1], foreign)
        agent.cloud.scan_for_more(60)
        record = await _warned(caplog, "127.0.0.2")
        assert "127.0.0.1" in record.getMessage()  # names the server the agent is pinned to
        assert foreign not in record.getMessage()
        # Cloud B's own records: the token unused, no agent.
        assert "stream_name" not in await _token_record(b, foreign)
        assert await _cloud_agents(b) == []
        assert b.cloud.tokens()[foreign].public_key is None
        assert _identity(tmp_path / "state") == before
        assert agent.cloud.status()["agent_id"] == before["agent_id"]

        # In the same window a code of cloud A binds the yard camera to the same agent.
        second = await a.new_token("Yard")
        await a.show_qr(a.cameras[1], second)

        async def bound() -> bool:
            return "stream_name" in await _token_record(a, second)

        await wait_until(bound, 20)
        name, agent_id = await check_provisioned(a, first)
        assert agent_id == before["agent_id"]
        record = await _token_record(a, second)
        _, stream = await a.http("GET", f"{a.cloud.watcher_url}/streams/{record['stream_name']}")
        assert stream["inputs"] == [
            {"url": a.cameras[1].rtsp_url("main"), "via": f"agent://{agent_id}"}
        ]
        assert _identity(tmp_path / "state") == before

        # The cloud records the bind when it answers; the agent adds the stream on reading it.
        async def both_streams() -> bool:
            return len(agent.cloud.status()["streams"]) == 2

        await wait_until(both_streams, 20)
        streams = agent.cloud.status()["streams"]
        assert [s["stream_name"] for s in streams] == [name, record["stream_name"]]
        assert all("token" not in s for s in streams)
    assert "stream_name" not in await _token_record(b, foreign)
    _no_token_logged(caplog, [first, second, foreign])


async def test_a_bind_never_replaces_the_agent_identity(
    pair: tuple[World, World], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A server that answers a bind with another agent id, or the same id with another
    endpoint, is refused: the agent keeps its cloud."""
    a, b = pair
    async with _running(a, activation_url=a.cloud.url) as agent:
        first = await a.new_token("Hall")
        await agent.cloud.activate(first, None, _camera_id(agent, "TRUST01"))
        before = _identity(tmp_path / "state")
        yard = _camera_id(agent, "TRUST02")

        # Cloud B already has an agent (another box): it answers a new agent id.
        taken = await b.new_token("other box")
        other = pc.make_activation(Ed25519PrivateKey.generate(), taken, serial="OTHER")
        status, _ = await b.http("POST", f"{b.cloud.url}/agent/v1/activate", other.to_dict())
        assert status == 200
        token_b = await b.new_token("Yard")
        base = f"http://127.0.0.1:{agent.api.port}/api/v1"
        body = {"token": token_b, "camera_id": yard, "activation_url": b.cloud.url}
        async with aiohttp.ClientSession() as s, s.post(f"{base}/activation", json=body) as r:
            answer = await r.json()
        assert r.status == 400 and answer["status"] == "refused", answer
        assert token_b not in json.dumps(answer)
        assert _identity(tmp_path / "state") == before

        # A fresh cloud C numbers its agents as A does: the same agent id, another endpoint.
        async with World([], cloud=SimCloud(host="127.0.0.3", port=0)) as world_c:
            c = world_c.cloud
            token_c = await world_c.new_token("Yard")
            with pytest.raises(act_mod.ActivationError) as info:
                await agent.cloud.activate(token_c, c.url, yard)
            assert "endpoint" in str(info.value) and token_c not in str(info.value)
            assert c.tokens()[token_c].agent_id == before["agent_id"]  # same id, as planned
        assert _identity(tmp_path / "state") == before
        assert agent.cloud.status()["agent_id"] == before["agent_id"]
        assert len(agent.cloud.status()["streams"]) == 1
        await wait_until(lambda: _central_alive_on(a, before["agent_id"]), 20)


async def _central_alive_on(world: World, agent_id: str) -> bool:
    for rec in await _cloud_agents(world):
        if rec["id"] == agent_id:
            return bool(rec["stats"]["endpoint_connection"]["alive"])
    return False


async def test_activation_hosts_limit_qr_codes_before_activation(
    pair: tuple[World, World], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent")
    a, b = pair
    # No activation URL: it comes from the QR code.
    async with _running(a, hosts=("127.0.0.1",)) as agent:
        foreign = await b.new_token("not allowed")
        await b.show_qr(a.cameras[0], foreign)
        record = await _warned(caplog, "127.0.0.2", "not allowed")
        assert foreign not in record.getMessage()
        assert not agent.cloud.status()["activated"]
        assert "stream_name" not in await _token_record(b, foreign)
        assert await _cloud_agents(b) == []

        token = await a.new_token("Hall")
        await a.show_qr(a.cameras[0], token)

        async def activated() -> bool:
            return "stream_name" in await _token_record(a, token)

        await wait_until(activated, 20)
        record_a = await _token_record(a, token)
        _, stream = await a.http("GET", f"{a.cloud.watcher_url}/streams/{record_a['stream_name']}")
        assert stream["inputs"][0]["url"] == a.cameras[0].rtsp_url("main")
        assert agent.cloud.status()["activated"]
        assert _identity(tmp_path / "state")["activation_url"] == a.cloud.url
    assert b.cloud.tokens()[foreign].public_key is None
    _no_token_logged(caplog, [foreign, token])


async def test_state_saved_without_its_activation_url(tmp_path: Path) -> None:
    """An activation saved without `activation_url` is kept; QR binds are pinned to the
    configured activation URL, and refused when there is none."""
    state = StateDir(tmp_path)
    await asyncio.to_thread(state.ensure)
    saved = {
        "agent_id": "1001",
        "endpoint_url": "wss://endpoint.example.net/agent",
        "streampoint": {"hostname": "sp-1", "url": "wss://sp1.example.net/agent"},
        "server_id": "s",
        "activated_at_ms": 1,
        "streams": [{"token": "t", "stream_name": "cam1", "camera_id": "c1"}],
    }
    await asyncio.to_thread(state.write_json, act_mod.DOCUMENT, saved)
    act = await asyncio.to_thread(act_mod.load, state)
    assert act is not None and act.agent_id == "1001" and act.activation_url == ""
    pinned = CloudService(state, activation_url="https://act.example.net")
    pinned.activation = act
    assert pinned.status()["activation_url"] == "https://act.example.net"
    assert pinned.bind_url("https://act.example.net/") == "https://act.example.net/"
    assert pinned.bind_url(None) == "https://act.example.net"
    assert pinned.bind_url("https://other.example.net") is None
    unknown = CloudService(state)
    unknown.activation = act
    assert unknown.bind_url("https://act.example.net") is None
    assert unknown.bind_url(None) is None


async def test_activation_not_saved_on_a_full_disk_is_unavailable(tmp_path: Path) -> None:
    """The server accepted but the state could not be written: a temporary failure (retried by
    the agent), not a crash; with space again the same token gives the same activation."""
    if not _can_mount():
        pytest.skip("needs root to mount a tmpfs")
    root = tmp_path / "state"
    root.mkdir(mode=0o700)
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(root)]
    mounted = await asyncio.to_thread(subprocess.run, mount, capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode(errors='replace')}")
    try:
        async with SimCloud(port=0) as cloud:
            token = (await cloud.state.create_token({"title": "full"})).token
            svc = CloudService(StateDir(root), activation_url=cloud.url)
            await svc._identity()  # the key is written while there is space
            await asyncio.to_thread(_fill, root / "filler")
            with pytest.raises(Unavailable, match="could not be saved"):
                await svc.activate(token)
            assert cloud.tokens()[token].public_key is not None  # the cloud did accept
            assert not (root / act_mod.DOCUMENT).exists()
            await asyncio.to_thread((root / "filler").unlink)
            act = await svc.activate(token)
            assert act.streams[0]["stream_name"] == cloud.tokens()[token].stream_name
            assert await asyncio.to_thread(act_mod.load, svc.state) == act
    finally:
        await asyncio.to_thread(subprocess.run, ["umount", str(root)], check=False)
