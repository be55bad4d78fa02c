"""The agent daemon end to end: simulated cameras -> discovery -> inventory -> local API.

Every route of the local API is called on a real simulated camera, its answer is checked against
the published OpenAPI document, and its effect is checked on the simulator's own state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import pytest

from agent.api.openapi import openapi_document
from agent.app import Agent
from agent.audit import read_entries
from agent.config import AgentConfig
from agent.secret import Credentials, Secret
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet
from tests.fakes import ApiClient, SpecChecker
from tests.world import SimCameraSpec, World

USER, PASSWORD = "admin", "agent-pw"


class Stack:
    def __init__(self, fleet: SimCameraFleet, agent: Agent, client: ApiClient) -> None:
        self.fleet = fleet
        self.agent = agent
        self.client = client

    @property
    def cam(self) -> SimCamera:
        return self.fleet.cameras[0]

    def id_of(self, cam: SimCamera) -> str:
        serial = cam.model.identity.serial_number
        ids = [c.id for c in self.agent.inventory.cameras() if c.serial_number == serial]
        if ids:
            return ids[0]
        # Not identified yet (e.g. credentials refused): known by its address only.
        xaddr = f"127.0.0.1:{cam.port}/"
        return next(c.id for c in self.agent.inventory.cameras() if xaddr in c.xaddr)

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        return await self.client.call(method, path, body, **kw)

    async def onvif(self, method: str, suffix: str = "", body: Any = None) -> Any:
        return await self.call(method, f"/api/v1/onvif/{self.id_of(self.cam)}{suffix}", body)


async def _wait(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def _one_login(cfg: AgentConfig) -> AgentConfig:
    """Only the first camera's password: the second one's is refused."""
    return replace(
        cfg,
        webrtc_addresses=("127.0.0.1",),
        default_credentials=(Credentials(USER, Secret(PASSWORD)),),
    )


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    configs = [
        SimCameraConfig(username=USER, password=PASSWORD, name="Porch", serial="API0001"),
        SimCameraConfig(username=USER, password="other-pw", name="Shed", serial="API0002"),
    ]
    async with World(
        [SimCameraSpec(c) for c in configs], state_dir=tmp_path / "state", configure=_one_login
    ) as world:
        agent = await world.start_agent()
        await _wait(lambda: len(agent.inventory.cameras()) == 2)
        await _wait(lambda: world.online(1))
        checker = SpecChecker(openapi_document("test"))
        client = ApiClient(world.api_root, checker)
        try:
            yield Stack(world.fleet, agent, client)
        finally:
            await client.close()


async def test_hello_cameras_and_openapi(stack: Stack) -> None:
    hello = (await stack.call("GET", "/api/v1/hello")).json()
    assert "version" in hello
    listing = (await stack.call("GET", "/api/v1/cameras")).json()
    by_serial = {c["serial_number"]: c for c in listing["cameras"]}
    assert by_serial["API0001"]["state"] == "online"
    assert by_serial["API0001"]["id"] == stack.id_of(stack.cam)
    shed = next(c for c in listing["cameras"] if c["id"] == stack.id_of(stack.fleet.cameras[1]))
    assert shed["state"] == "unauthorized"  # its password is not configured
    text = json.dumps(listing)
    assert PASSWORD not in text and "other-pw" not in text
    spec = (await stack.call("GET", "/api/v1/openapi.json")).json()
    assert "/api/v1/onvif/{camera_id}/ptz/preset/apply" in spec["paths"]


async def test_device_network_users(stack: Stack) -> None:
    info = (await stack.onvif("GET")).json()
    assert info["serial_number"] == "API0001"
    assert info["manufacturer"] == stack.cam.model.identity.manufacturer
    net = (await stack.onvif("GET", "/network")).json()
    assert net["http"] == {"port": stack.cam.port, "enabled": True}
    assert net["rtsp"]["port"] == stack.cam.rtsp_port
    users = (await stack.onvif("GET", "/users")).json()
    assert {"user_name": USER, "user_level": "Administrator"} in users["users"]
    assert PASSWORD not in json.dumps(users)
    from agent.sim.camera.model import User, UserLevel

    stack.cam.model.create_users([User("operator", "old-pw", UserLevel.OPERATOR)])
    ok = await stack.onvif("PUT", "/users/operator", {"password": "new-pw-1"})
    assert ok.status == 200
    assert ok.json() == {"status": "ok"}
    user = stack.cam.model.user("operator")
    assert user is not None
    assert user.password == "new-pw-1"
    too_long = await stack.onvif("PUT", "/users/operator", {"password": "x" * 17})
    assert too_long.status == 422


async def test_streams_and_encoder_change_seen_by_rtsp_client(stack: Stack) -> None:
    streams = (await stack.onvif("GET", "/streams")).json()["streams"]
    names = [s["name"] for s in streams]
    assert names[:2] == ["MAIN_STREAM", "SUB_STREAM_1"]
    sub = streams[1]
    assert sub["current_resolution"] == "640x360"
    assert sub["link"].startswith("rtsp://127.0.0.1:")
    body = {
        "stream_profile": "SUB_STREAM_1",
        "encoder": "H264",
        "resolution": "320x180",
        "framerate": 10,
        "bitrate": 256,
        "gov_length": 20,
    }
    assert (await stack.onvif("PUT", "/stream/encoder", body)).status == 200
    enc = stack.cam.model.profile("sub").encoder
    assert (enc.width, enc.height, enc.fps_limit, enc.gov_length) == (320, 180, 10, 20)
    url = stack.cam.rtsp_url("sub").replace("rtsp://", f"rtsp://{USER}:{PASSWORD}@")

    def decode() -> tuple[int, int]:
        with av.open(url, options={"rtsp_transport": "tcp"}, timeout=(10, 10)) as c:
            for frame in c.decode(c.streams.video[0]):
                return frame.width, frame.height
        return 0, 0

    assert await asyncio.to_thread(decode) == (320, 180)
    bad = await stack.onvif("PUT", "/stream/encoder", {**body, "resolution": "1234x567"})
    assert bad.status == 400
    assert bad.json()["status"] == "onvif_invalid_argument"


async def test_every_image_setting_changes_the_camera(stack: Stack) -> None:
    image = (await stack.onvif("GET", "/image")).json()
    assert image["brightness"]["supported_range"] == {"min_val": 0, "max_val": 100}
    for path, field in (
        ("brightness", "brightness"),
        ("contrast", "contrast"),
        ("saturation", "color_saturation"),
        ("sharpness", "sharpness"),
    ):
        assert (await stack.onvif("PUT", f"/image/{path}", {"value": 73})).status == 200
        assert getattr(stack.cam.model.imaging.settings, field) == 73
    assert (await stack.onvif("PUT", "/image/backlight", {"mode": "ON"})).status == 200
    assert stack.cam.model.imaging.settings.backlight_mode == "ON"
    assert (await stack.onvif("PUT", "/image/ir", {"mode": "OFF"})).status == 200
    assert stack.cam.model.imaging.settings.ir_cut_filter == "OFF"
    assert (await stack.onvif("PUT", "/image/exposure", {"value": 5000})).status == 200
    assert stack.cam.model.imaging.settings.exposure_time == 5000
    assert (await stack.onvif("PUT", "/image/dr", {"mode": "ON", "value": 80})).status == 200
    assert stack.cam.model.imaging.settings.wdr_mode == "ON"
    assert stack.cam.model.imaging.settings.wdr_level == 80
    wb = {"mode": "MANUAL", "cr_gain": 100, "cb_gain": 150}
    assert (await stack.onvif("PUT", "/image/wb", wb)).status == 200
    s = stack.cam.model.imaging.settings
    assert (s.wb_mode, s.cr_gain, s.cb_gain) == ("MANUAL", 100, 150)
    out = await stack.onvif("PUT", "/image/brightness", {"value": 101})
    assert out.status == 400
    assert out.json()["status"] == "onvif_invalid_argument"
    assert stack.cam.model.imaging.settings.brightness == 73
    wrong_type = await stack.onvif("PUT", "/image/brightness", {"value": "bright"})
    assert wrong_type.status == 422
    assert wrong_type.json()["detail"][0]["loc"][-1] == "value"


async def test_ptz_steps_home_and_presets(stack: Stack) -> None:
    ptz = stack.cam.model.ptz
    mono = stack.cam.model.monotonic
    info = (await stack.onvif("GET", "/ptz")).json()
    assert info["home_supported"] is True
    before = ptz.status(mono())
    assert (await stack.onvif("PUT", "/ptz", {"move": "RIGHT_UP", "step": 5})).status == 200
    after = ptz.status(mono())
    assert after.pan > before.pan
    assert after.tilt > before.tilt
    assert not after.pan_tilt_moving  # a step always ends with a Stop
    assert (await stack.onvif("PUT", "/ptz", {"zoom": "ZOOM_IN", "step": 3})).status == 200
    assert ptz.status(mono()).zoom > before.zoom
    assert (await stack.onvif("PUT", "/ptz/home")).status == 200
    home = ptz.status(mono())
    await stack.onvif("PUT", "/ptz", {"move": "LEFT", "step": 10})
    assert ptz.status(mono()).pan < home.pan
    assert (await stack.onvif("PUT", "/ptz/home/apply")).status == 200
    await _wait(lambda: not ptz.status(mono()).pan_tilt_moving, 10)
    assert ptz.status(mono()).pan == pytest.approx(home.pan, abs=1e-3)
    assert (await stack.onvif("POST", "/ptz/preset", {"preset_name": "gate"})).status == 200
    assert "gate" in (await stack.onvif("GET", "/ptz/presets")).json()["presets"]
    assert [p.name for p in ptz.presets] == ["gate"]
    await stack.onvif("PUT", "/ptz", {"move": "DOWN", "step": 10})
    assert (await stack.onvif("POST", "/ptz/preset/apply", {"preset_name": "gate"})).status == 200
    await _wait(lambda: not ptz.status(mono()).pan_tilt_moving, 10)
    assert ptz.status(mono()).tilt == pytest.approx(home.tilt, abs=1e-3)
    assert (await stack.onvif("DELETE", "/ptz/preset", {"preset_name": "gate"})).status == 200
    assert ptz.presets == []
    missing = await stack.onvif("POST", "/ptz/preset/apply", {"preset_name": "gate"})
    assert missing.status == 400
    assert missing.json()["status"] == "onvif_invalid_argument"
    bad = await stack.onvif("PUT", "/ptz", {"move": "UP", "step": 11})
    assert bad.status == 422


async def test_network_change_moves_the_rtsp_server(stack: Stack) -> None:
    cam = stack.fleet.cameras[0]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert (await stack.onvif("PUT", "/network", {"rtsp": free})).status == 200
    await _wait(lambda: cam.online and cam.rtsp is not None and cam.rtsp.port == free, 10)
    net = (await stack.onvif("GET", "/network")).json()
    assert net["rtsp"]["port"] == free


async def test_snapshot_and_errors(stack: Stack) -> None:
    snap = await stack.call("GET", f"/api/v1/camerasnapshots/{stack.id_of(stack.cam)}")
    assert snap.status == 200
    assert snap.body[:2] == b"\xff\xd8"
    assert "X-Snapshot-Timestamp" in snap.headers
    unknown = await stack.call("GET", f"/api/v1/onvif/{uuid.uuid4()}")
    assert unknown.status == 404
    assert unknown.json()["status"] == "not_found"
    not_uuid = await stack.call("GET", "/api/v1/onvif/not-a-uuid")
    assert not_uuid.status == 422
    shed = stack.id_of(stack.fleet.cameras[1])
    denied = await stack.call("GET", f"/api/v1/onvif/{shed}")
    assert denied.status == 400
    assert denied.json()["status"] == "onvif_unauthenticated"
    assert "other-pw" not in denied.body.decode()
    garbage = await stack.call(
        "PUT",
        f"/api/v1/onvif/{stack.id_of(stack.cam)}/image/brightness",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert garbage.status == 422


async def test_rebooting_camera_answers_503_then_recovers(stack: Stack) -> None:
    stack.cam.schedule_reboot(2.0)
    await _wait(lambda: not stack.cam.online, 5)
    down = await stack.onvif("GET")
    assert down.status == 503
    assert down.json()["status"] == "temporarily_unavailable"
    await _wait(lambda: stack.cam.online, 10)
    deadline = time.monotonic() + 20
    while True:
        again = await stack.onvif("GET")
        if again.status == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert again.status == 200


def test_daemon_persists_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`camera-agent run` as a process: inventory persisted, clean exit within 5 s."""
    ready = tmp_path / "sim.json"
    sim = subprocess.Popen(
        [
            sys.executable, "-m", "agent", "sim", "camera", "--port", "0", "--rtsp-port", "0",
            "--no-discovery", "--password", "pw-d", "--ready-file", str(ready),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline and sim.poll() is None
            time.sleep(0.1)
        port = json.loads(ready.read_text())["cameras"][0]["port"]
        state = tmp_path / "state"
        with socket_port() as api_port:
            pass
        cmd = [
            sys.executable, "-m", "agent", "run", "--config", str(tmp_path / "agent.toml"),
            "--state-dir", str(state), "--api", f"127.0.0.1:{api_port}",
            "--probe", f"127.0.0.1:{port}", "--username", "admin", "--password", "pw-d",
        ]  # fmt: skip
        (tmp_path / "agent.toml").write_text("[discovery]\nmulticast = false\nmdns = false\n")
        agent = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        try:
            doc = state / "inventory.json"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if doc.exists() and '"online"' in doc.read_text():
                    break
                time.sleep(0.2)
            assert '"online"' in doc.read_text()
            assert oct(os.stat(doc).st_mode & 0o777) == "0o600"
            t0 = time.monotonic()
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(10) == 0
            assert time.monotonic() - t0 < 5
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
        stderr = agent.stderr.read() if agent.stderr else ""
        assert "Traceback" not in stderr
        assert "pw-d" not in stderr
    finally:
        sim.terminate()
        sim.wait(15)


@contextlib.contextmanager
def socket_port() -> Any:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


async def test_pause_and_resume_a_camera(stack: Stack) -> None:
    cid = stack.id_of(stack.cam)
    paused = await stack.call("PUT", f"/api/v1/cameras/{cid}/run_state", {"run_state": "paused"})
    assert paused.status == 200
    assert paused.json()["run_state"] == "paused"
    assert stack.agent.inventory.get(cid).paused
    listing = (await stack.call("GET", "/api/v1/cameras")).json()["cameras"]
    assert next(c for c in listing if c["id"] == cid)["run_state"] == "paused"
    doc = stack.agent.state.file("inventory.json")
    await _wait(lambda: '"paused"' in doc.read_text(), 5)
    resumed = await stack.call("PUT", f"/api/v1/cameras/{cid}/run_state", {"run_state": "running"})
    assert resumed.json()["run_state"] == "running"


async def test_webrtc_live_view_through_the_local_api(stack: Stack) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from agent.media.webrtc_sdp import ice_host_addresses

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    pc.on("track", lambda track: got.done() or got.set_result(track))
    pc.addTransceiver("video", direction="recvonly")
    try:
        with ice_host_addresses(["127.0.0.1"]):
            await pc.setLocalDescription(await pc.createOffer())
        reply = await stack.call(
            "POST",
            f"/api/v1/webrtc/{stack.id_of(stack.cam)}",
            data=pc.localDescription.sdp.encode(),
            headers={"Content-Type": "application/sdp"},
        )
        assert reply.status == 201, reply.body
        await pc.setRemoteDescription(RTCSessionDescription(reply.body.decode(), "answer"))
        async with asyncio.timeout(20):
            track = await got
            frames = [await track.recv() for _ in range(10)]
        assert (frames[-1].width, frames[-1].height) == (1280, 720)  # the main H.264 stream
    finally:
        await pc.close()


async def test_every_attempted_change_is_audited_with_its_outcome(stack: Stack) -> None:
    """Failed changes are recorded too, with the HTTP status and the error code answered, on
    disk before the answer is sent; reads and live views are not recorded."""
    cid = stack.id_of(stack.cam)
    base = f"/api/v1/onvif/{cid}"
    unknown = str(uuid.uuid4())
    locked = stack.id_of(stack.fleet.cameras[1])  # its password is not configured
    calls: list[tuple[str, str, Any, int, str]] = [
        ("PUT", f"{base}/image/brightness", {"value": 42}, 200, ""),
        ("PUT", f"{base}/image/brightness", {"value": 101}, 400, "onvif_invalid_argument"),
        ("PUT", f"{base}/image/brightness", {"value": "bright"}, 422, "unprocessable_entity"),
        ("PUT", f"/api/v1/onvif/{unknown}/image/brightness", {"value": 5}, 404, "not_found"),
        ("PUT", f"/api/v1/onvif/{locked}/image/brightness", {"value": 5}, 400,
         "onvif_unauthenticated"),
        ("POST", f"{base}/ptz/preset/apply", {"preset_name": "nowhere"}, 400,
         "onvif_invalid_argument"),
    ]  # fmt: skip
    audit = stack.agent.audit
    before = len(audit.entries())
    for method, path, body, status, _ in calls:
        reply = await stack.call(method, path, body)
        assert reply.status == status, (path, reply.body)
        # Recorded before the answer: the entry is on disk when the client has its reply.
        on_disk = await asyncio.to_thread(read_entries, audit.path) if audit.path else []
        assert len(on_disk) == before + 1, (path, on_disk[-1:])
        before += 1
    # Camera down: the change fails with 503 and is recorded as such.
    stack.cam.schedule_reboot(3.0)
    await _wait(lambda: not stack.cam.online, 5)
    down = await stack.onvif("PUT", "/image/contrast", {"value": 10})
    assert down.status == 503
    calls.append(("PUT", f"{base}/image/contrast", {"value": 10}, 503, "temporarily_unavailable"))
    # Reads, watching and unknown routes are not changes.
    assert (await stack.onvif("GET", "/image")).status == 503
    assert (await stack.call("PUT", "/api/v1/nothing-here", {"x": 1}, check=False)).status == 404
    entries = audit.entries()[-len(calls) :]
    assert len(audit.entries()) == before + 1
    for (method, path, body, status, code), entry in zip(calls, entries, strict=True):
        assert entry["source"] == "local_api"
        assert entry["command"].startswith(f"{method} /onvif/{{camera_id}}/")
        assert entry["camera_id"] == path.split("/")[4]
        assert entry["status"] == status, entry
        assert entry["args"] == body
        if status == 200:
            assert entry["result"] == "ok" and entry["error"] == "" and "code" not in entry
        else:
            assert entry["result"] == "error" and entry["code"] == code, entry
            assert entry["error"].startswith(f"HTTP {status} {code}"), entry
    assert await asyncio.to_thread(read_entries, audit.path) == audit.entries()
    await _wait(lambda: stack.cam.online, 15)


async def test_malformed_requests_log_one_line_without_traceback(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A NUL in a header (or in the request line) makes the HTTP parser fail. The agent answers
    400 and logs one line per BAD_REQUEST_LOG_INTERVAL, no traceback and not the bytes sent (a
    header may hold a token); the API keeps answering."""
    port = stack.agent.api.port
    requests = [
        b"GET /api/v1/hello HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Junk: a\x00b\r\n\r\n",
        b"GET /api/v1/hello HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer sec-api-token-7f3a\x00\r\n\r\n",
        b"GET /api/v1/he\x00llo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    ]
    caplog.set_level(logging.DEBUG)
    for i in range(60):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(requests[i % len(requests)])
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(200), 5)
        finally:
            writer.close()
            await writer.wait_closed()
        assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0], answer
    hello = await stack.call("GET", "/api/v1/hello")
    assert hello.status == 200
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    about = [r for r in loud if "malformed HTTP request" in r.getMessage()]
    assert len(about) == 1, [r.getMessage() for r in loud]
    assert not [r for r in loud if r.name.startswith("aiohttp")], [r.getMessage() for r in loud]
    assert all(r.exc_info is None and r.exc_text is None for r in caplog.records)
    assert "Traceback" not in caplog.text
    assert "sec-api-token-7f3a" not in caplog.text
    assert "\x00" not in caplog.text
