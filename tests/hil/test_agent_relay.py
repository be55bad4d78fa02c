"""The agent daemon's relays, with a simulated camera: the restream server (generated password,
one camera session for all viewers, pause), and the status route that reports relays."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import av
import pytest

from agent.app import Agent
from agent.config import AgentConfig, PushConfig, RestreamConfig
from agent.secret import Secret
from agent.sim.camera.camera import SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet
from tests.world import SimCameraSpec, World, wait_until

CAM_PW = "relay-pw"


def decode(url: str, frames: int) -> tuple[int, int]:
    with av.open(url, options={"rtsp_transport": "tcp", "timeout": "5000000"}, timeout=10) as c:
        n = 0
        for frame in c.decode(video=0):
            n += 1
            if n >= frames:
                return n, frame.width
    return n, 0


def _relays(cfg: AgentConfig) -> AgentConfig:
    return replace(
        cfg,
        webrtc_addresses=("127.0.0.1",),
        restream=RestreamConfig(host="127.0.0.1", port=0, username="nvr"),
        push=(PushConfig("no-such-camera", Secret("rtmp://127.0.0.1:1/live/key-9"), "main"),),
    )


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Agent, SimCameraFleet]]:
    async with World(
        [SimCameraSpec(SimCameraConfig(password=CAM_PW, name="Relay", serial="RLY1"))],
        state_dir=tmp_path / "state",
        configure=_relays,
    ) as world:
        agent = await world.start_agent()
        await wait_until(lambda: world.online(1), 20)
        yield agent, world.fleet


async def test_restream_serves_every_viewer_from_one_camera_session(
    running: tuple[Agent, SimCameraFleet],
) -> None:
    agent, _fleet = running
    assert agent.restream is not None
    state = agent.cfg.state_dir / "restream.json"
    assert oct(os.stat(state).st_mode & 0o777) == "0o600"
    password = json.loads(state.read_text())["password"]
    assert len(password) >= 20
    cam_id = agent.inventory.cameras()[0].id
    url = agent.restream.url(cam_id).replace("rtsp://", f"rtsp://nvr:{password}@")
    results = await asyncio.gather(*(asyncio.to_thread(decode, url, 30) for _ in range(3)))
    assert results == [(30, 1280)] * 3
    # While restreamed (the upstream lingers), health knows the camera's frame rate and GOP.
    async with asyncio.timeout(8):
        while not (health := agent._camera_health()[0])["keyframe_interval_seconds"]:
            await asyncio.sleep(0.2)
    assert 20 <= health["fps"] <= 30  # the simulated main stream runs at 25 fps
    assert 1.5 <= health["keyframe_interval_seconds"] <= 2.5  # GOP 50 at 25 fps
    assert health["last_video_at"] is not None
    sub = agent.restream.url(cam_id, "sub").replace("rtsp://", f"rtsp://nvr:{password}@")
    assert await asyncio.to_thread(decode, sub, 10) == (10, 640)
    with pytest.raises(av.error.HTTPUnauthorizedError):
        await asyncio.to_thread(decode, url.replace(password, "wrong-password"), 1)

    base = f"http://127.0.0.1:{agent.api.port}/api/v1"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/status") as r:
            body = await r.json()
        relay = body["relay"]
        assert relay["restream"]["port"] == agent.restream.port
        (push,) = relay["push"]
        assert push["state"] == "waiting" and "key-9" not in json.dumps(relay)
        assert password not in json.dumps(body)
        # Paused: nothing streams, new viewers are refused.
        async with s.put(f"{base}/cameras/{cam_id}/run_state", json={"run_state": "paused"}) as r:
            assert r.status == 200
        with pytest.raises(av.error.FFmpegError):
            await asyncio.to_thread(decode, url, 1)
        async with s.put(f"{base}/cameras/{cam_id}/run_state", json={"run_state": "running"}) as r:
            assert r.status == 200
    assert await asyncio.to_thread(decode, url, 5) == (5, 1280)


async def test_live_view_shares_the_restream_session(
    running: tuple[Agent, SimCameraFleet],
) -> None:
    """WebRTC viewers are fed from the camera's shared session, not from the camera."""
    from tests.hil.test_webrtc import Viewer

    agent, fleet = running
    assert agent.restream is not None
    cam_id = agent.inventory.cameras()[0].id
    assert f"@127.0.0.1:{agent.hub.port}/webrtc/" in agent.inventory.stream_url(cam_id)
    viewer = Viewer()
    base = f"http://127.0.0.1:{agent.api.port}/api/v1"
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{base}/webrtc/{cam_id}",
                json={"type": "offer", "sdp": await viewer.offer()},
            ) as r,
        ):
            assert r.status == 200, await r.text()
            await viewer.accept((await r.json())["sdp"])
        frames = await viewer.frames(10)
        assert frames[-1].width == 1280
        sources = agent.restream.status()["sources"]
        main = [s for s in sources if s["stream"] != "sub"]  # sub: QR scanning (not activated)
        assert [(s["camera"], s["consumers"]) for s in main] == [(cam_id, {"webrtc": 1})]
        rtsp = fleet.cameras[0].rtsp
        assert rtsp is not None
        paths = [session.path for session, _conn in rtsp._sessions.values()]
        assert sorted(set(paths)) == sorted(paths)  # at the camera: one session per stream
    finally:
        await viewer.pc.close()
