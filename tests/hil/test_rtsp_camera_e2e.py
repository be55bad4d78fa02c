"""A plain RTSP camera (no ONVIF) end to end: bound to the cloud by a QR code shown on its video
and by a typed token, pulled by the cloud through the agent's tunnel, pushed to a receiver,
watched over WebRTC.

Two simulated cameras are given to the agent by RTSP URL only (`[[camera]]` tables): the agent
never learns their ONVIF address. One world (simulated cloud, cameras, the real agent, a push
receiver) is shared by the module. Each result is read on the far side: the simulated cloud's own
records and the frames its streamer, the push receiver and a WebRTC viewer decode.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
import pytest_asyncio

from agent.camera.rtsp_only import rtsp_camera_id
from agent.config import AgentConfig, PushConfig
from agent.secret import Secret
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.cloud.app import SimCloud
from tests.hil.test_push import Received, _receiver
from tests.hil.test_webrtc import Viewer
from tests.ports import free_port
from tests.world import RtspCameraSpec, World, wait_until

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

USER, PASSWORD = "admin", "Rtsp-e2e-pw4"
#: Frames each consumer must decode.
FRAMES = 10


@dataclasses.dataclass
class Scene:
    world: World
    pushed: Received
    push_url: str

    @property
    def cloud(self) -> SimCloud:
        assert self.world.cloud is not None
        return self.world.cloud

    def cam(self, index: int) -> SimCamera:
        return self.world.rtsp_cameras[index]

    def cid(self, index: int) -> str:
        return rtsp_camera_id(self.cam(index).rtsp_url("main"))

    def size(self, index: int, token: str) -> tuple[int, int]:
        encoder = self.cam(index).model.profile(token).encoder
        return encoder.width, encoder.height


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scene(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Scene]:
    tmp: Path = tmp_path_factory.mktemp("rtsp-e2e")
    cams = [
        RtspCameraSpec(SimCameraConfig(username=USER, password=PASSWORD, name=n, serial=s))
        for n, s in (("Porch", "RTE0001"), ("Garage", "RTE0002"))
    ]
    push_port = free_port()
    push_url = f"rtsp://127.0.0.1:{push_port}/live"
    async with AsyncExitStack() as stack:
        world = await stack.enter_async_context(
            # The cloud knows the cameras' login (as the app's user gave it): the agent never
            # sends it.
            World(
                cams, cloud=SimCloud(port=0, camera_login=(USER, PASSWORD)), state_dir=tmp / "state"
            )
        )
        listen = {"rtsp_flags": "listen", "listen_timeout": "60"}
        pushed = await stack.enter_async_context(_receiver(push_url, listen, FRAMES))
        porch = rtsp_camera_id(world.rtsp_cameras[0].rtsp_url("main"))

        def configure(cfg: AgentConfig) -> AgentConfig:
            push = PushConfig(camera=porch, url=Secret(push_url), stream="sub")
            return dataclasses.replace(cfg, push=(push,), webrtc_addresses=("127.0.0.1",))

        agent = await world.start_agent(configure)
        await wait_until(lambda: world.online(2), 20)
        assert {c.kind for c in agent.inventory.cameras()} == {"rtsp"}
        yield Scene(world, pushed, push_url)
        await world.stop_agent()


def _decode(url: str, frames: int = FRAMES) -> set[tuple[int, int]]:
    """The frame sizes of `frames` frames decoded from `url` (FFmpeg, over TCP)."""
    sizes: set[tuple[int, int]] = set()
    options = {"rtsp_transport": "tcp", "timeout": "5000000"}
    with av.open(url, options=options, timeout=10) as container:
        for n, frame in enumerate(container.decode(video=0), 1):
            sizes.add((frame.width, frame.height))
            if n >= frames:
                break
    return sizes


async def _token(scene: Scene, token: str) -> dict[str, Any]:
    status, body = await scene.world.http(
        "GET", f"{scene.cloud.watcher_url}/agent_activation_token/{token}"
    )
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def _bound_stream(scene: Scene, token: str) -> dict[str, Any]:
    """The cloud's record of the stream a token was used for, once the agent bound it."""

    async def bound() -> bool:
        tok = await _token(scene, token)
        if "stream_name" not in tok:
            return False
        status, stream = await scene.world.http(
            "GET", f"{scene.cloud.watcher_url}/streams/{tok['stream_name']}"
        )
        return status == 200 and bool(stream["inputs"]) and "sim_rtsp_url" in stream

    await wait_until(bound, 30)
    tok = await _token(scene, token)
    stream = await scene.world.cloud_json(
        "GET", f"{scene.cloud.watcher_url}/streams/{tok['stream_name']}"
    )
    assert isinstance(stream, dict)
    return stream


async def test_bound_by_qr_code_and_typed_token_then_pulled_through_the_tunnel(
    scene: Scene,
) -> None:
    world, cloud = scene.world, scene.cloud
    # Not activated yet: the agent reads the QR code the app shows on the Porch camera's video.
    first = await world.new_token("Porch")
    await world.show_qr(scene.cam(0), first)
    porch = await _bound_stream(scene, first)
    [porch_input] = porch["inputs"]
    assert porch_input["url"] == scene.cam(0).rtsp_url("main")
    agent_id = porch["stats"]["current_agent_id"]
    assert porch_input["via"] == f"agent://{agent_id}"
    # The cloud's streamer pulls it through the agent's tunnel and decodes its video.
    sizes = await asyncio.to_thread(_decode, porch["sim_rtsp_url"])
    assert sizes == {scene.size(0, "main")}

    # Activated: a token typed into the local API binds the Garage camera to another stream.
    second = await world.new_token("Garage")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{world.api}/activation",
            json={"token": second, "camera_id": scene.cid(1), "activation_url": cloud.url},
        ) as r,
    ):
        assert r.status == 200, await r.text()
    garage = await _bound_stream(scene, second)
    assert garage["name"] != porch["name"]
    assert garage["inputs"] == [
        {"url": scene.cam(1).rtsp_url("main"), "via": f"agent://{agent_id}"}
    ]
    sizes = await asyncio.to_thread(_decode, garage["sim_rtsp_url"])
    assert sizes == {scene.size(1, "main")}
    agents = await world.cloud_json("GET", f"{cloud.central_url}/agents")
    assert [a["id"] for a in agents["agents"]] == [agent_id]  # one agent, two streams
    # A control command from the cloud: the camera has no ONVIF service, and the cloud is told.
    status, answer = await world.http(
        "POST", f"{cloud.watcher_url}/streams/{garage['name']}/ptz", {"command": "stop"}
    )
    assert status == 400, answer
    assert [e["code"] for e in answer["errors"]] == ["onvif_not_available"]


async def test_pushed_to_a_receiver(scene: Scene) -> None:
    await wait_until(lambda: len(scene.pushed.frames) >= FRAMES, 40)
    assert {(w, h) for _, w, h, _, _ in scene.pushed.frames} == {scene.size(0, "sub")}
    agent = scene.world.agent
    assert agent is not None
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{scene.world.api}/status") as r,
    ):
        text = await r.text()
    assert PASSWORD not in text


async def test_watched_over_webrtc(scene: Scene) -> None:
    viewer = Viewer()
    try:
        offer = {"type": "offer", "sdp": await viewer.offer()}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{scene.world.api}/webrtc/{scene.cid(1)}", json=offer) as r,
        ):
            assert r.status == 200, await r.text()
            answer = await r.json()
        await viewer.accept(answer["sdp"])
        frames = await viewer.frames(FRAMES)
        assert {(f.width, f.height) for f in frames} == {scene.size(1, "main")}  # its first stream
    finally:
        await viewer.pc.close()
