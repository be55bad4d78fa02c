"""One camera session per stream for every consumer, counted at the simulated camera (which caps
its sessions like a real one), the per-camera budget, and a new viewer during an outage."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import av
import av.error
import pytest

from agent.app import Agent
from agent.config import AgentConfig, PushConfig, RestreamConfig, SessionsConfig
from agent.media.push_ffmpeg import system_can_push
from agent.secret import Secret
from agent.sim.camera import control as sim_control
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from tests.hil.test_push import _receiver
from tests.hil.test_push_srt import PASSPHRASE, _assert_plays, _listener, _probe, _srt
from tests.hil.test_webrtc import Viewer
from tests.ports import free_port
from tests.world import SimCameraSpec, World, wait_until

pytestmark = pytest.mark.timeout(120)

CAM_PW = "shared-pw-7"
VIEWER_PW = "viewer-pw-12345"


def _decode(url: str, frames: int, seconds: float = 0.0) -> int:
    """Frames decoded from `url` (and go on reading for `seconds` after that)."""
    n = 0
    until: float | None = None
    opts = {"rtsp_transport": "tcp", "timeout": "5000000"}
    with av.open(url, options=opts, timeout=10) as c:
        for _frame in c.decode(video=0):
            n += 1
            if n == frames:
                until = time.monotonic() + seconds
            if until is not None and time.monotonic() >= until:
                break
    return n


def _camera_sessions(cam: SimCamera) -> Counter[str]:
    """RTSP sessions open at the simulated camera, by stream path (the camera's own state)."""
    rtsp = cam.rtsp
    assert rtsp is not None
    return Counter(session.path for session, _conn in rtsp._sessions.values())


def _sim_state(cam: SimCamera) -> dict[str, Any]:
    """What the simulated camera's /sim control reports."""
    return sim_control.state(cam)


def _configure(pushes: list[str], limit: int) -> Any:
    def configure(cfg: AgentConfig) -> AgentConfig:
        return replace(
            cfg,
            webrtc_addresses=("127.0.0.1",),
            restream=RestreamConfig(
                host="127.0.0.1", port=0, username="nvr", password=Secret(VIEWER_PW)
            ),
            sessions=SessionsConfig(max_sessions=limit, linger=2.0),
            push=tuple(PushConfig("@0", Secret(url), "main") for url in pushes),
        )

    return configure


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    spec = SimCameraSpec(
        SimCameraConfig(
            password=CAM_PW,
            name="Shared",
            serial="SHR1",
            max_sessions=2,  # the camera refuses a third session, as cheap cameras do
            faults={"snapshot_port": free_port()},  # snapshots come from the stream
        )
    )
    async with World([spec], state_dir=tmp_path / "state") as w:
        yield w


async def _start(world: World, pushes: list[str], limit: int) -> tuple[Agent, str]:
    """The agent, its push entries naming the camera (known once the agent found it)."""
    agent = await world.start_agent(configure=_configure([], limit))
    await wait_until(lambda: world.online(1), 20)
    cam_id = agent.inventory.cameras()[0].id
    if pushes:
        await world.stop_agent()
        configure = _configure(pushes, limit)

        def with_camera(cfg: AgentConfig) -> AgentConfig:
            cfg = configure(cfg)
            return replace(cfg, push=tuple(replace(p, camera=cam_id) for p in cfg.push))

        agent = await world.start_agent(configure=with_camera)
        await wait_until(lambda: world.online(1), 20)
    return agent, cam_id


async def test_every_consumer_shares_one_session_per_stream(world: World) -> None:
    ports = [free_port() for _ in range(3)]
    pushes = [f"rtsp://127.0.0.1:{p}/live{i}" for i, p in enumerate(ports)]
    listen = {"rtsp_flags": "listen", "listen_timeout": "30"}
    cam = world.cameras[0]
    async with (
        _receiver(pushes[0], listen, 100_000) as rx0,
        _receiver(pushes[1], listen, 100_000) as rx1,
        _receiver(pushes[2], listen, 100_000) as rx2,
    ):
        agent, cam_id = await _start(world, pushes, limit=2)
        assert agent.restream is not None
        url = agent.restream.url(cam_id).replace("rtsp://", f"rtsp://nvr:{VIEWER_PW}@")
        viewing = asyncio.create_task(asyncio.to_thread(_decode, url, 10, 8.0))
        viewers = [Viewer(), Viewer()]
        base = f"http://127.0.0.1:{agent.api.port}/api/v1"
        try:
            async with aiohttp.ClientSession() as s:
                for viewer in viewers:
                    async with s.post(
                        f"{base}/webrtc/{cam_id}",
                        json={"type": "offer", "sdp": await viewer.offer()},
                    ) as r:
                        assert r.status == 200, await r.text()
                        await viewer.accept((await r.json())["sdp"])
                for viewer in viewers:
                    assert len(await viewer.frames(5)) == 5
                await wait_until(lambda: min(len(x.frames) for x in (rx0, rx1, rx2)) >= 25, 30)
                for _ in range(2):  # snapshots decoded from the stream, while all that runs
                    async with s.get(f"{base}/camerasnapshots/{cam_id}") as r:
                        assert r.status == 200, await r.text()
                        assert (await r.read()).startswith(b"\xff\xd8")
                sessions = _camera_sessions(cam)
                async with s.get(f"{base}/status") as r:
                    status = await r.json()
        finally:
            for viewer in viewers:
                await viewer.pc.close()
        assert await viewing >= 10
    # At the camera: exactly one session per stream, none refused by its cap.
    assert set(sessions.values()) == {1}, sessions
    assert "/live/main" in sessions
    state = _sim_state(cam)
    assert state["rtsp_sessions_refused"] == 0
    assert state["rtsp_sessions_peak"] <= 2
    # The agent's own account agrees with the camera's.
    camera = status["relay"]["sessions"]["cameras"][cam_id]
    assert camera["max_sessions"] == 2
    assert camera["held"] == len(sessions)
    main = next(x for x in camera["streams"] if x["stream"] == "main")
    assert main["consumers"]["push"] == 3
    assert main["consumers"]["restream"] == 1
    assert main["consumers"]["webrtc"] == 1  # the two WebRTC viewers share one reader
    assert all(p["state"] == "running" for p in status["relay"]["push"])


async def test_a_consumer_past_the_budget_is_refused_with_the_reason(world: World) -> None:
    agent, cam_id = await _start(world, [], limit=1)
    assert agent.restream is not None
    login = f"rtsp://nvr:{VIEWER_PW}@"
    main = agent.restream.url(cam_id).replace("rtsp://", login)
    sub = agent.restream.url(cam_id, "sub").replace("rtsp://", login)
    viewing = asyncio.create_task(asyncio.to_thread(_decode, main, 5, 6.0))

    def main_viewed() -> bool:  # the viewer is on main (QR scanning may have held sub first)
        streams = agent.hub.status()["cameras"].get(cam_id, {}).get("streams", [])
        return any(x["stream"] == "main" and x["consumers"].get("restream") for x in streams)

    await wait_until(main_viewed, 10)
    await wait_until(lambda: agent.hub.held(cam_id) == 1, 10)
    with pytest.raises(av.error.FFmpegError) as refused:  # RTSP 453 from the agent
        await asyncio.to_thread(_decode, sub, 1)
    assert "453" in str(refused.value) or "Server returned" in str(refused.value)
    base = f"http://127.0.0.1:{agent.api.port}/api/v1"
    async with aiohttp.ClientSession() as s, s.get(f"{base}/status") as r:
        sessions = (await r.json())["relay"]["sessions"]
    assert sessions["refused"] >= 1
    assert sessions["cameras"][cam_id]["held"] == 1
    # A snapshot decoded from the stream uses the session already open instead of a new one.
    async with aiohttp.ClientSession() as s, s.get(f"{base}/camerasnapshots/{cam_id}") as r:
        assert r.status == 200, await r.text()
    assert await viewing >= 5
    assert set(_camera_sessions(world.cameras[0]).values()) <= {1}


async def test_a_new_viewer_during_an_outage_gets_503_in_time(world: World) -> None:
    agent, cam_id = await _start(world, [], limit=2)
    assert agent.restream is not None
    url = agent.restream.url(cam_id).replace("rtsp://", f"rtsp://nvr:{VIEWER_PW}@")
    assert await asyncio.to_thread(_decode, url, 5) == 5  # the session is open (lingers 2 s)
    cam = world.cameras[0]
    cam.schedule_reboot(6.0)  # all its services gone for 6 s
    await wait_until(lambda: agent.hub.sources_status()[0]["upstream"] != "streaming", 15)
    started = time.monotonic()
    with pytest.raises(av.error.FFmpegError) as failed:
        await asyncio.to_thread(_decode, url, 1)
    took = time.monotonic() - started
    assert "503" in str(failed.value) or "Server returned 5" in str(failed.value)
    assert took < 12  # the documented bound: one connection attempt, 10 s at most


@pytest.mark.skipif(not system_can_push("srt://127.0.0.1:1"), reason="no system ffmpeg with SRT")
async def test_srt_push_runs_through_the_system_ffmpeg_on_the_shared_session(
    world: World, tmp_path: Path
) -> None:
    """PyAV's FFmpeg has no libsrt: the agent hands an srt:// push to the system ffmpeg, which
    reads the camera's shared session with a credential of its own."""
    port = free_port()
    out = tmp_path / "srt.ts"
    async with _listener(port, out):
        agent, _cam_id = await _start(world, [_srt(port, "caller")], limit=2)
        await wait_until(lambda: (agent.push.status()[0]["relay"] or {}).get("packets", 0) > 50, 30)
        (entry,) = agent.push.status()
        assert entry["via"] == "ffmpeg" and entry["state"] == "running"
        assert entry["relay"]["state"] == "relaying" and entry["relay"]["last_error"] == ""
        assert PASSPHRASE not in str(agent.relay_status())
        assert set(_camera_sessions(world.cameras[0]).values()) == {1}
        assert len(agent.hub._leases) == 1  # the child's own credential
        await world.stop_agent()
        assert agent.hub._leases == {}  # revoked with the relay
    _assert_plays(await _probe(out), 25)
