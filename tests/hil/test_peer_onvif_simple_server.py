"""The agent against onvif_simple_server, the ONVIF daemon of real consumer cameras.

The peer is built and served by tests/peers/onvif_simple_server.py (lighttpd CGI on 127.0.0.1,
as an unprivileged user); its media profiles point at a simulated camera's RTSP server and
snapshot. Every check reads the peer's own state (its PTZ position, presets and home files, its
configuration) rather than trusting the agent's answer. It runs in two modes: default (unknown
and unimplemented `Set*` calls get an empty success) and strict (`adv_fault_if_unknown=1
adv_fault_if_set=1`: they get a `ter:Action/ActionFailed` fault).

Where the agent is known to be wrong against this peer, the test states the right behaviour and
is marked `xfail(strict=True)`: it fails loudly as soon as the agent is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.api.openapi import openapi_document
from agent.app import Agent
from agent.config import AgentConfig, DiscoveryConfig
from agent.discovery.records import CameraState
from agent.discovery.scan import discover
from agent.secret import Credentials, Secret
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from tests.fakes import ApiClient, SpecChecker
from tests.peers.onvif_simple_server import PEERS_DIR as PEERS
from tests.peers.onvif_simple_server import (
    OnvifSimpleServer,
    PeerConfig,
    PeerUnavailable,
    StreamProfile,
    build,
    process_uid,
)

USER, PASSWORD = "admin", "oss-Peer-pw"
#: One step of the agent's PTZ step move: this fraction of the absolute range (0..360 degrees).
STEP_FRACTION = 0.02
MODES = ("default", "strict")


@pytest.fixture(scope="module")
def peer_build() -> None:
    """Build both instances once per module; skip only when the peer cannot be built here."""
    try:
        for mode in MODES:
            build(PEERS / mode)
    except PeerUnavailable as exc:
        pytest.skip(f"onvif_simple_server cannot be built here: {exc}")


@dataclass
class World:
    cam: SimCamera
    peer: OnvifSimpleServer


@pytest.fixture(params=MODES)
async def world(request: pytest.FixtureRequest, peer_build: None) -> AsyncIterator[World]:
    cam = SimCamera(SimCameraConfig(username=USER, password=PASSWORD, serial="OSSSIM1"))
    await cam.start()
    try:
        profiles = tuple(
            StreamProfile(
                name=f"Profile_{i}",
                width=w,
                height=h,
                rtsp_url=f"rtsp://%s:{cam.rtsp_port}{cam.model.profile(token).rtsp_path}",
                snapshot_url=f"http://%s:{cam.port}/onvif/snapshot?profile={token}",
            )
            for i, (token, w, h) in enumerate((("main", 1920, 1080), ("sub", 640, 360)))
        )
        config = PeerConfig(
            username=USER, password=PASSWORD, profiles=profiles, strict=request.param == "strict"
        )
        async with OnvifSimpleServer(request.param, config) as peer:
            yield World(cam, peer)
    finally:
        await cam.stop()


class Stack:
    def __init__(self, world: World, agent: Agent, client: ApiClient) -> None:
        self.cam = world.cam
        self.peer = world.peer
        self.agent = agent
        self.client = client

    @property
    def id(self) -> str:
        return next(c.id for c in self.agent.inventory.cameras())

    async def onvif(self, method: str, suffix: str = "", body: Any = None) -> Any:
        return await self.client.call(method, f"/api/v1/onvif/{self.id}{suffix}", body)


async def _wait(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def stack(world: World, tmp_path: Path) -> AsyncIterator[Stack]:
    cfg = AgentConfig(
        state_dir=tmp_path / "state",
        api_host="127.0.0.1",
        api_port=0,
        webrtc_addresses=("127.0.0.1",),
        discovery=DiscoveryConfig(
            multicast=False, mdns=False, probe=(("127.0.0.1", world.peer.port),)
        ),
        default_credentials=(Credentials(USER, Secret(PASSWORD)),),
    )
    agent = Agent(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.wait_for(agent.ready.wait(), 20)
    await _wait(lambda: any(c.state == "online" for c in agent.inventory.cameras()))
    client = ApiClient(f"http://127.0.0.1:{agent.api.port}", SpecChecker(openapi_document("test")))
    try:
        yield Stack(world, agent, client)
    finally:
        await client.close()
        stop.set()
        await asyncio.wait_for(task, 10)


def _boot_id() -> str:
    """This boot's id: it changes if the machine rebooted."""
    return Path("/proc/sys/kernel/random/boot_id").read_text()


def _close(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(abs(x - y) < 1e-3 for x, y in zip(a, b, strict=True))


async def test_discover_probe_reads_identity_and_profiles(world: World) -> None:
    found = await discover(
        timeout=1.0,
        probes=[("127.0.0.1", world.peer.port)],
        multicast=False,
        username=USER,
        password=PASSWORD,
    )
    assert len(found) == 1
    cam, c = found[0], world.peer.config
    assert cam.state is CameraState.ONLINE, cam.reason
    assert (cam.manufacturer, cam.model, cam.firmware_version) == (
        c.manufacturer,
        c.model,
        c.firmware_version,
    )
    assert (cam.serial_number, cam.hardware_id) == (c.serial_number, c.hardware_id)
    got = [(p["name"], p["width"], p["height"], p["rtsp_uri"]) for p in cam.profiles]
    want = [(p.name, p.width, p.height, p.rtsp_url.replace("%s", "127.0.0.1")) for p in c.profiles]
    assert got == want
    assert cam.snapshot_uri == c.profiles[0].snapshot_url.replace("%s", "127.0.0.1")
    assert cam.ptz and not cam.imaging  # it has no imaging service


async def test_device_streams_snapshot(stack: Stack) -> None:
    c = stack.peer.config
    info = (await stack.onvif("GET")).json()
    assert info == {
        "manufacturer": c.manufacturer,
        "model": c.model,
        "firmware_version": c.firmware_version,
        "serial_number": c.serial_number,
        "hardware_id": c.hardware_id,
    }
    streams = (await stack.onvif("GET", "/streams")).json()["streams"]
    main = next(s for s in streams if s["name"] == "MAIN_STREAM")
    assert main["current_resolution"] == f"{c.profiles[0].width}x{c.profiles[0].height}"
    snap = await stack.client.call("GET", f"/api/v1/camerasnapshots/{stack.id}")
    assert snap.status == 200
    assert snap.body[:2] == b"\xff\xd8"  # the simulated camera's JPEG, through the peer's URL


async def test_ptz_step_home_presets(stack: Stack) -> None:
    peer = stack.peer
    ptz = (await stack.onvif("GET", "/ptz")).json()
    x0, y0, z0 = peer.position()
    assert ptz["pan_tilt"]["current_position"] == {"x": x0, "y": y0}
    assert ptz["pan_tilt"]["supported_range"]["x"] == {"min_val": 0.0, "max_val": peer.config.max_x}
    step = STEP_FRACTION * peer.config.max_x
    assert (await stack.onvif("PUT", "/ptz", {"move": "RIGHT", "step": 1})).status == 200
    assert _close(peer.position(), (x0 + step, y0, z0))
    assert peer.commands()[-1] == "stop all"  # the step ends with a Stop
    assert (await stack.onvif("PUT", "/ptz/home")).status == 200
    assert _close(peer.home(), peer.position())
    home = peer.home()
    assert (await stack.onvif("PUT", "/ptz", {"move": "LEFT", "step": 2})).status == 200
    assert _close(peer.position(), (x0 - step, y0, z0))
    assert (await stack.onvif("PUT", "/ptz/home/apply")).status == 200
    assert _close(peer.position(), home)
    # Presets: stored by the camera with its position, applied and removed by name.
    assert (await stack.onvif("POST", "/ptz/preset", {"preset_name": "door"})).status == 200
    stored = peer.presets()
    assert list(stored) == ["door"]
    assert _close(stored["door"][1], home)
    assert (await stack.onvif("PUT", "/ptz", {"move": "UP", "step": 1})).status == 200
    assert not _close(peer.position(), home)
    listed = (await stack.onvif("GET", "/ptz/presets")).json()
    assert listed == {"presets": ["door"]}
    apply = await stack.onvif("POST", "/ptz/preset/apply", {"preset_name": "door"})
    assert apply.status == 200
    assert _close(peer.position(), home)
    delete = await stack.onvif("DELETE", "/ptz/preset", {"preset_name": "door"})
    assert delete.status == 200
    assert peer.presets() == {}


async def test_users_hidden_and_imaging_absent(stack: Stack) -> None:
    assert (await stack.onvif("GET", "/users")).json() == {"users": []}  # it hides its users
    change = await stack.onvif("PUT", f"/users/{USER}", {"password": "new-pw-1"})
    assert change.status == 400
    conf = (stack.peer.dir / "onvif_simple_server.conf").read_text()
    assert f"password={PASSWORD}\n" in conf
    image = await stack.onvif("GET", "/image")
    assert (image.status, image.json()["status"]) == (400, "onvif_unsupported_action")


async def test_reboot_fails_harmlessly(stack: Stack) -> None:
    """SystemReboot runs reboot(2) as the unprivileged CGI user: it must fail and change
    nothing; the machine and the peer keep running."""
    peer = stack.peer
    assert process_uid(peer.pid) != 0
    boot = _boot_id()
    control = await stack.agent.inventory.control(stack.id)
    with contextlib.suppress(Exception):  # whatever it answers, nothing may happen
        await control.reboot()
    assert peer.running
    assert _boot_id() == boot
    assert (await stack.onvif("GET")).status == 200


async def test_network_read_refusal_is_permanent(stack: Stack) -> None:
    net = await stack.onvif("GET", "/network")
    assert 400 <= net.status < 500


async def test_network_write_not_applied_is_refused(stack: Stack) -> None:
    put = await stack.onvif("PUT", "/network", {"rtsp": 8555})
    assert 400 <= put.status < 500
    if stack.peer.config.strict:
        assert "ActionFailed" in put.json()["detail"] or "Action failed" in put.json()["detail"]
    else:
        assert put.json()["status"] == "onvif_not_applied"


async def test_encoder_write_not_applied_is_refused(stack: Stack) -> None:
    body = {
        "stream_profile": "MAIN_STREAM",
        "encoder": "H264",
        "resolution": "1920x1080",
        "framerate": 30,
        "bitrate": 1234,
    }
    put = await stack.onvif("PUT", "/stream/encoder", body)
    streams = (await stack.onvif("GET", "/streams")).json()["streams"]
    held = next(s for s in streams if s["name"] == "MAIN_STREAM")["current_bitrate"]
    assert held != 1234  # the peer cannot change its encoder
    assert 400 <= put.status < 500, put.body
