"""Video through the agent tunnel, end to end: simulated cloud (two streampoints), three simulated
cameras, the real agent; FFmpeg (PyAV) pulls each camera from the simulated streamer's loopback
port, through the agent's data connection. Then the chain is broken three ways (camera reboot,
agent restart, streampoint switch) and the consumer must get video again within 5 s.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import av
import pytest

from agent.sim.camera.camera import SimCameraConfig
from agent.sim.cloud.app import SimCloud
from tests.viewer import Viewer
from tests.world import SimCameraSpec, World

CAM_PW = "tunnel-pw"
RECOVERY_S = 5.0


def decode(url: str, frames: int) -> tuple[int, int, int]:
    """(frames decoded, width, height) of the first video stream at `url`."""
    with av.open(
        url, options={"rtsp_transport": "tcp", "timeout": "5000000"}, timeout=10
    ) as container:
        n = w = h = 0
        for frame in container.decode(video=0):
            n, w, h = n + 1, frame.width, frame.height
            if n >= frames:
                break
        return n, w, h


class TunnelWorld(World):
    """The simulated cloud with two streampoints and three simulated cameras."""

    def __init__(self, tmp: Path) -> None:
        cams = [
            SimCameraConfig(password=CAM_PW, name=f"Cam{i}", serial=f"TUN000{i}") for i in range(3)
        ]
        super().__init__(
            [SimCameraSpec(c) for c in cams],
            cloud=SimCloud(port=0, streampoints=2, camera_login=("admin", CAM_PW)),
            state_dir=tmp / "state",
        )

    async def activate_all(self) -> dict[str, str]:
        """Bind every camera to a stream of its own; {camera serial: stream name}."""
        agent = self.agent
        await until(lambda: self.online(3), 20)
        by_port = {
            urlsplit(c.xaddr).port: c.id for c in agent.inventory.cameras()
        }  # camera id by ONVIF port
        names: dict[str, str] = {}
        for cam in self.cameras:
            token = await self.new_token(cam.config.name)
            act = await agent.cloud.activate(token, camera_id=by_port[cam.port])
            names[cam.config.serial] = str(act.streams[-1]["stream_name"])
        return names

    async def stream_url(self, name: str, which: str = "main") -> str:
        """The simulated streamer's URL of a stream (and of the camera's other stream)."""

        async def ready() -> bool:
            body = await self.cloud_json("GET", f"{self.cloud.watcher_url}/streams/{name}")
            return "sim_rtsp_url" in body

        await until_async(ready, 10)
        body = await self.cloud_json("GET", f"{self.cloud.watcher_url}/streams/{name}")
        url = str(body["sim_rtsp_url"])
        if which == "main":
            return url
        parts = urlsplit(url)
        return urlunsplit(parts._replace(path=parts.path.replace("/main", f"/{which}")))

    def streampoint(self) -> str | None:
        sp = self.agent.cloud.status().get("streampoint")
        return str(sp["hostname"]) if sp and sp.get("alive") else None


async def until(check: Any, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.1)


async def until_async(check: Any, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[TunnelWorld]:
    async with TunnelWorld(tmp_path) as w:
        yield w


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_three_cameras_main_and_sub_through_the_tunnel(world: TunnelWorld) -> None:
    agent = await world.start_agent()
    names = await world.activate_all()
    await until(lambda: world.streampoint() == "streampoint-1", 15)
    urls = [await world.stream_url(n, w) for n in names.values() for w in ("main", "sub")]
    assert all(urlsplit(u).hostname == "127.0.0.1" for u in urls)
    # Own threads: six blocking decoders would fill the default executor the cameras also use.
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(len(urls)) as pool:
        results = await asyncio.gather(*(loop.run_in_executor(pool, decode, u, 100) for u in urls))
    for (n, w, h), url in zip(results, urls, strict=True):
        assert n == 100, url
        assert (w, h) == ((1280, 720) if url.endswith("/main") else (640, 360))
    tunnels = agent.cloud.status()["streampoint"]["tunnels"]
    assert tunnels["opened"] >= 6
    assert tunnels["bytes_out"] > 1_000_000  # camera -> cloud, through the agent
    await until(lambda: agent.cloud.status()["streampoint"]["tunnels"]["open"] == 0, 10)
    # What a streamer on the other side sees for a target the agent does not own: a refusal.
    peer = world.cloud.hub.tunnels(agent.cloud.status()["agent_id"]) if world.cloud.hub else None
    assert peer is not None
    from agent.net.tunnel import Refused
    from agent.proto.mux_frames import ErrorCode, Target, TargetKind

    left, right = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, left)
    with pytest.raises(Refused) as err:
        await peer.open(Target("127.0.0.1", world.cloud.port, TargetKind.HTTP), transport)
    right.close()
    assert err.value.code == ErrorCode.NOT_ALLOWED
    assert agent.cloud.status()["streampoint"]["tunnels"]["refused"] >= 1


async def test_video_resumes_after_camera_reboot_agent_restart_and_streampoint_switch(
    world: TunnelWorld,
) -> None:
    await world.start_agent()
    names = await world.activate_all()
    await until(lambda: world.streampoint() == "streampoint-1", 15)
    cam = world.cameras[0]
    viewer = Viewer(await world.stream_url(names[cam.config.serial]))
    viewer.start()
    try:
        await until(lambda: len(viewer.frames) >= 25, 20)

        # 1. The camera reboots: gone for 2 s, then back on the same ports.
        async with aiohttp.ClientSession() as s:
            r = await s.post(f"http://127.0.0.1:{cam.port}/sim/reboot", json={"seconds": 2})
            assert r.status == 202
        await until(lambda: not _port_open(cam.rtsp_port), 5)
        await until(lambda: _port_open(cam.rtsp_port), 15)
        back = time.monotonic()
        await until(lambda: viewer.first_frame_after(back) is not None, RECOVERY_S + 3)
        took_camera = (viewer.first_frame_after(back) or 0) - back

        # 2. The agent restarts (same state directory: same identity and activation).
        await world.stop_agent()
        await world.start_agent()
        back = time.monotonic()
        await until(lambda: viewer.first_frame_after(back) is not None, RECOVERY_S + 3)
        took_agent = (viewer.first_frame_after(back) or 0) - back

        # 3. Central moves the agent to the other streampoint.
        agent_id = world.agent.cloud.status()["agent_id"] if world.agent else ""
        await until(lambda: world.streampoint() == "streampoint-1", 15)
        switched = time.monotonic()
        opens = viewer.opens
        await world.cloud_json(
            "PUT",
            f"{world.cloud.central_url}/agents/{agent_id}",
            {"layout": {"ingest": "streampoint-2"}},
        )
        await until(lambda: world.streampoint() == "streampoint-2", 15)
        moved = time.monotonic()
        await until(lambda: viewer.first_frame_after(moved + 2) is not None, RECOVERY_S + 5)
        during = [f for f in viewer.frames if f >= switched]
        took_switch = max(b - a for a, b in zip([switched, *during], during, strict=False))
        reconnects = viewer.opens - opens
    finally:
        viewer.stop()
    print(
        f"\nrecovery: camera reboot {took_camera:.2f} s, agent restart {took_agent:.2f} s, "
        f"streampoint switch {took_switch:.2f} s ({reconnects} reconnects)"
    )
    assert took_camera < RECOVERY_S
    assert took_agent < RECOVERY_S
    assert took_switch < RECOVERY_S
    assert reconnects <= 1
