"""The agent against onvif_simple_server, the ONVIF daemon of real consumer cameras.

The peer is built and served by tests/peers/onvif_simple_server.py (lighttpd CGI on 127.0.0.1,
as an unprivileged user); its media profiles point at a simulated camera's RTSP server and
snapshot. Every check reads the peer's own state (its PTZ position, presets and home files, its
configuration) rather than trusting the agent's answer. It runs in two modes: default (unknown
and unimplemented `Set*` calls get an empty success) and strict (`adv_fault_if_unknown=1
adv_fault_if_set=1`: they get a `ter:Action/ActionFailed` fault). Continuous moves are cloud
commands (`camera_ptz`): that test activates the agent with a simulated cloud and sends them
from its Watcher API. H.265 has its own peer configuration: Media2 on, the second profile
the simulated camera's H.265 stream, watched through the agent's restream server. WS-Discovery
(the peer's wsd_simple_server) is tested in a network namespace by test_peer_wsdiscovery.py.

Where the agent is known to be wrong against this peer, the test states the right behaviour and
is marked `xfail(strict=True)`: it fails loudly as soon as the agent is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest

from agent.api.openapi import openapi_document
from agent.app import Agent
from agent.config import AgentConfig, DiscoveryConfig, RestreamConfig
from agent.discovery.records import CameraState
from agent.discovery.scan import discover
from agent.secret import Credentials, Secret
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.cloud.app import SimCloud
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
RESTREAM_USER, RESTREAM_PASSWORD = "nvr", "oss-Restream-pw-1"
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


def _profile(cam: SimCamera, i: int, token: str, size: tuple[int, int]) -> StreamProfile:
    """The peer's profile `Profile_<i>`: `size` as its configuration declares it, the stream
    and snapshot of the simulated camera's profile `token`."""
    prof = cam.model.profile(token)
    return StreamProfile(
        name=f"Profile_{i}",
        width=size[0],
        height=size[1],
        rtsp_url=f"rtsp://%s:{cam.rtsp_port}{prof.rtsp_path}",
        snapshot_url=f"http://%s:{cam.port}/onvif/snapshot?profile={token}",
        encoding=prof.encoder.encoding,
    )


def _camera_size(cam: SimCamera, token: str) -> tuple[int, int]:
    """The size the simulated camera's profile `token` sends."""
    enc = cam.model.profile(token).encoder
    return enc.width, enc.height


@asynccontextmanager
async def _world(mode: str, tokens: tuple[str, str], *, media2: bool) -> AsyncIterator[World]:
    """A simulated camera and the peer in front of it, its two profiles on `tokens`."""
    cam = SimCamera(SimCameraConfig(username=USER, password=PASSWORD, serial="OSSSIM1"))
    await cam.start()
    try:
        sizes = {"main": (1920, 1080)}  # the main profile declares more than the camera sends
        profiles = tuple(
            _profile(cam, i, token, sizes.get(token, _camera_size(cam, token)))
            for i, token in enumerate(tokens)
        )
        config = PeerConfig(
            username=USER,
            password=PASSWORD,
            profiles=profiles,
            strict=mode == "strict",
            media2=media2,
        )
        async with OnvifSimpleServer(mode, config) as peer:
            yield World(cam, peer)
    finally:
        await cam.stop()


@pytest.fixture(params=MODES)
async def world(request: pytest.FixtureRequest, peer_build: None) -> AsyncIterator[World]:
    async with _world(request.param, ("main", "sub"), media2=False) as w:
        yield w


@pytest.fixture(params=MODES)
async def h265_world(request: pytest.FixtureRequest, peer_build: None) -> AsyncIterator[World]:
    """The peer with Media2 on, its second profile the simulated camera's H.265 stream."""
    async with _world(request.param, ("main", "h265"), media2=True) as w:
        yield w


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


@asynccontextmanager
async def _stack(world: World, tmp_path: Path) -> AsyncIterator[Stack]:
    """The agent, finding the peer by a unicast probe; its restream server on loopback."""
    cfg = AgentConfig(
        state_dir=tmp_path / "state",
        api_host="127.0.0.1",
        api_port=0,
        webrtc_addresses=("127.0.0.1",),
        discovery=DiscoveryConfig(
            multicast=False, mdns=False, probe=(("127.0.0.1", world.peer.port),)
        ),
        default_credentials=(Credentials(USER, Secret(PASSWORD)),),
        restream=RestreamConfig(
            host="127.0.0.1", port=0, username=RESTREAM_USER, password=Secret(RESTREAM_PASSWORD)
        ),
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


@pytest.fixture
async def stack(world: World, tmp_path: Path) -> AsyncIterator[Stack]:
    async with _stack(world, tmp_path) as s:
        yield s


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


async def _watcher(cloud: SimCloud, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """A call of the simulated cloud's Watcher API, as its operators make it."""
    auth = {"Authorization": aiohttp.encode_basic_auth("admin", "admin")}
    async with (
        aiohttp.ClientSession(headers=auth) as s,
        s.request(method, f"{cloud.watcher_url}{path}", json=body) as r,
    ):
        text = await r.text()
        return r.status, (await r.json()) if text and r.content_type.endswith("json") else text


async def test_ptz_continuous_and_absolute(stack: Stack) -> None:
    """A continuous move and its stop reach the camera's motor commands with the speeds asked
    for; an absolute move (local API `PUT .../ptz/position` or cloud command `move_absolute`)
    reaches its `abs` command with the values asked for, the axes left out where the camera
    holds them; a position outside its range runs nothing."""
    peer, agent = stack.peer, stack.agent
    # The local API's PTZ route moves by steps only: a position alone is not a move.
    put = await stack.onvif("PUT", "/ptz", {"position": {"x": 10.0, "y": 20.0}, "step": 1})
    assert (put.status, put.json()["status"]) == (400, "onvif_invalid_argument")

    def absolute(since: int) -> list[str]:
        return [c for c in peer.commands()[since:] if c.startswith("abs ")]

    _x0, _y0, z0 = peer.position()
    seen = len(peer.commands())
    put = await stack.onvif("PUT", "/ptz/position", {"x": 10.0, "y": 20.0})
    assert put.status == 200, put.json()
    assert absolute(seen) == [f"abs 10.000000,20.000000,{z0:f}"]
    assert _close(peer.position(), (10.0, 20.0, z0))
    seen = len(peer.commands())
    assert (await stack.onvif("PUT", "/ptz/position", {"y": 45.5})).status == 200
    assert absolute(seen) == [f"abs 10.000000,45.500000,{z0:f}"]  # pan kept
    seen = len(peer.commands())
    out = await stack.onvif("PUT", "/ptz/position", {"x": 400.0})
    assert (out.status, out.json()["status"]) == (400, "onvif_invalid_argument")
    assert "0..360" in out.json()["detail"]
    assert absolute(seen) == []
    # Continuous moves are cloud commands (camera_ptz): sent from the simulated cloud's Watcher.
    async with SimCloud(port=0, camera_login=(USER, PASSWORD)) as cloud:
        status, token = await _watcher(cloud, "POST", "/agent_activation_token", {"title": "O"})
        assert status in (200, 201), token
        act = await agent.cloud.activate(token["token"], activation_url=cloud.url)
        ptz = f"/streams/{act.streams[-1]['stream_name']}/ptz"
        await _wait(lambda: (agent.cloud.status().get("endpoint") or {}).get("state") == "ready")

        async def command(body: dict[str, Any]) -> list[str]:
            """The motor commands the peer ran for this cloud command."""
            seen = len(peer.commands())
            status, answer = await _watcher(cloud, "POST", ptz, body)
            assert status in (200, 204), (body, status, answer)
            return peer.commands()[seen:]

        assert await command({"command": "move_continuous", "right": 60}) == ["move right 0.600000"]
        assert await command({"command": "stop"}) == ["stop all"]
        assert await command({"command": "move_continuous", "down": 30, "out": 10}) == [
            "move down 0.300000",
            "move out 0.100000",
        ]
        assert await command({"command": "move_continuous"}) == ["stop all"]  # all zero
        ran = await command({"command": "move_absolute", "x": 300.25})
        assert [c for c in ran if c.startswith("abs ")] == [f"abs 300.250000,45.500000,{z0:f}"]
        seen = len(peer.commands())
        status, answer = await _watcher(cloud, "POST", ptz, {"command": "move_absolute"})
        assert 400 <= status < 500, answer
        assert peer.commands()[seen:] == []
    assert _close(peer.position(), (300.25, 45.5, z0))


def _decode(url: str, frames: int = 10) -> list[tuple[str, int, int]]:
    """(codec, width, height) of the first `frames` frames decoded from `url` with PyAV."""
    out: list[tuple[str, int, int]] = []
    options = {"rtsp_transport": "tcp", "timeout": "5000000"}
    with av.open(url, options=options) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            out.append((stream.codec_context.name, frame.width, frame.height))
            if len(out) >= frames:
                break
    return out


async def test_h265_profile_through_media2(h265_world: World, tmp_path: Path) -> None:
    """Media 1 cannot say H.265: the server calls its H.265 profile H264 there and H265 only in
    Media2 (`adv_enable_media2=1`). The agent reads that profile's encoding from Media2, its
    size as the server's configuration declares it and its stream URI; the stream, restreamed
    by the agent, decodes as HEVC at the simulated camera's size."""
    peer, cam = h265_world.peer, h265_world.cam
    conf = (peer.dir / "onvif_simple_server.conf").read_text()
    assert "adv_enable_media2=1\n" in conf and "type=H265\n" in conf

    def declared(p: StreamProfile) -> tuple[str, str, int, int, str]:
        return p.name, p.encoding, p.width, p.height, p.rtsp_url.replace("%s", "127.0.0.1")

    want = [declared(p) for p in peer.config.profiles]
    assert [w[1] for w in want] == ["H264", "H265"]
    found = await discover(
        timeout=1.0,
        probes=[("127.0.0.1", peer.port)],
        multicast=False,
        username=USER,
        password=PASSWORD,
    )
    assert len(found) == 1
    assert found[0].state is CameraState.ONLINE, found[0].reason
    got = [
        (p["name"], p["encoding"], p["width"], p["height"], p["rtsp_uri"])
        for p in found[0].profiles
    ]
    assert got == want
    async with _stack(h265_world, tmp_path) as stack:
        (record,) = (await stack.client.call("GET", "/api/v1/cameras")).json()["cameras"]
        got = [
            (p["name"], p["encoding"], p["width"], p["height"], p["rtsp_uri"])
            for p in record["profiles"]
        ]
        assert got == want
        streams = (await stack.onvif("GET", "/streams")).json()["streams"]
        h265 = streams[1]
        assert (h265["current_encoder"], h265["current_resolution"], h265["link"]) == (
            "H265",
            f"{want[1][2]}x{want[1][3]}",
            want[1][4],
        )
        assert stack.agent.restream is not None
        url = stack.agent.restream.url(stack.id, "Profile_1").replace(
            "rtsp://", f"rtsp://{RESTREAM_USER}:{RESTREAM_PASSWORD}@"
        )
        frames = await asyncio.to_thread(_decode, url)
    assert frames == [("hevc", *_camera_size(cam, "h265"))] * 10
