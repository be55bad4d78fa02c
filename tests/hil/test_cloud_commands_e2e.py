"""Cloud commands end to end: the simulated cloud's Watcher and Central calls, the real agent, a
simulated camera. Each call is checked by its effect on the camera's state."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.app import Agent
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.control import state as cam_state
from agent.sim.camera.firmware import build_image
from agent.sim.cloud.app import SimCloud
from tests.world import SimCameraSpec, World

AUTH = {"Authorization": aiohttp.encode_basic_auth("admin", "admin")}
CAM_PW = "cmd-pw-1"


class CommandWorld(World):
    """One simulated camera bound to a stream of the running agent, and cloud calls."""

    def __init__(self, tmp: Path) -> None:
        cam = SimCameraConfig(password=CAM_PW, name="Cmd", serial="CMD0001")
        super().__init__(
            [SimCameraSpec(cam)],
            cloud=SimCloud(port=0, camera_login=("admin", CAM_PW)),
            state_dir=tmp / "state",
        )
        self.tmp = tmp
        self.stream = ""

    @property
    def cam(self) -> SimCamera:
        return self.cameras[0]

    async def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, **kw: Any
    ) -> tuple[int, Any]:
        url = path if path.startswith("http") else f"{self.cloud.watcher_url}{path}"
        async with aiohttp.ClientSession(headers=AUTH) as s:
            args: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
            async with s.request(method, url, **args, **kw) as r:
                text = await r.text()
                try:
                    return r.status, json.loads(text) if text else None
                except ValueError:
                    return r.status, text

    async def relayed(self) -> dict[str, Any]:
        """The stream's Watcher record once the simulated streamer relays it (sim_rtsp_url)."""
        async with asyncio.timeout(10):
            while True:
                _, stream = await self.call("GET", f"/streams/{self.stream}")
                if "sim_rtsp_url" in stream:
                    return dict(stream)
                await asyncio.sleep(0.1)


def _decode(url: str, n: int) -> int:
    got = 0
    with av.open(url, options={"rtsp_transport": "tcp", "timeout": "5000000"}, timeout=10) as c:
        for _ in c.decode(video=0):
            got += 1
            if got >= n:
                break
    return got


async def until(check: Any, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[CommandWorld]:
    async with CommandWorld(tmp_path) as w:
        agent = await w.start_agent()
        await until(lambda: any(c.state == "online" for c in agent.inventory.cameras()), 20)
        status, tok = await w.call("POST", "/agent_activation_token", {"title": "Cmd"})
        assert status in (200, 201)
        act = await agent.cloud.activate(tok["token"])
        w.stream = str(act.streams[-1]["stream_name"])
        await until(lambda: agent.cloud.control is not None and _ready(agent), 15)
        yield w


def _ready(agent: Agent) -> bool:
    ep = agent.cloud.status().get("endpoint")
    return bool(ep and ep.get("state") == "ready")


async def test_ptz_moves_and_stops_the_camera(world: CommandWorld) -> None:
    before = cam_state(world.cam)["ptz"]
    status, _ = await world.call(
        "POST", f"/streams/{world.stream}/ptz", {"command": "move_continuous", "right": 60}
    )
    assert status in (200, 204)
    await asyncio.sleep(0.5)
    moving = cam_state(world.cam)["ptz"]
    assert moving["moving"] and moving["pan"] > before["pan"]
    status, _ = await world.call("POST", f"/streams/{world.stream}/ptz", {"command": "stop"})
    assert status in (200, 204)
    await until(lambda: not cam_state(world.cam)["ptz"]["moving"], 3)
    # Presets by name, and home.
    for body in (
        {"command": "set_preset", "preset": "door"},
        {"command": "goto_home"},
        {"command": "goto_preset", "preset": "door"},
        {"command": "remove_preset", "preset": "door"},
    ):
        status, answer = await world.call("POST", f"/streams/{world.stream}/ptz", body)
        assert status in (200, 204), (body, answer)
    # Bad input changes nothing.
    await until(lambda: not cam_state(world.cam)["ptz"]["moving"], 10)
    still = cam_state(world.cam)["ptz"]
    for body in (
        {"command": "move_continuous", "right": 101},
        {"command": "move_continuous", "up": 10, "down": 10},
        {"command": "move_continuous", "left": True},
        {"command": "spin"},
        {"command": "goto_preset", "preset": "no-such-preset"},
    ):
        status, answer = await world.call("POST", f"/streams/{world.stream}/ptz", body)
        assert 400 <= status < 500, (body, status, answer)
    await asyncio.sleep(0.3)
    after = cam_state(world.cam)["ptz"]
    assert (after["pan"], after["tilt"], after["moving"]) == (still["pan"], still["tilt"], False)
    status, _ = await world.call("POST", "/streams/no-such-stream/ptz", {"command": "stop"})
    assert status == 404
    async with (
        aiohttp.ClientSession(headers=AUTH) as s,
        s.post(f"{world.cloud.watcher_url}/streams/{world.stream}/ptz", data=b"{not json") as r,
    ):
        assert r.status == 400


async def test_camera_config_and_auth_round_trip(world: CommandWorld) -> None:
    status, config = await world.call("GET", f"/streams/{world.stream}/camera_config")
    assert status == 200, config
    assert config["camera_info"]["serial_number"] == "CMD0001"
    status, config = await world.call(
        "PUT",
        f"/streams/{world.stream}/camera_config",
        {"sensor": {"brightness_correction": 80, "infrared_cutoff_filter": {"mode": "off"}}},
    )
    assert status == 200, config
    assert config["sensor"]["brightness_correction"] == 80
    assert config["sensor"]["infrared_cutoff_filter"]["mode"] == "off"
    settings = world.cam.model.imaging.settings
    assert settings.brightness > 50
    before = world.cam.model.imaging.settings
    status, _ = await world.call(
        "PUT", f"/streams/{world.stream}/camera_config", {"sensor": {"saturation": 400}}
    )
    assert status == 400
    assert world.cam.model.imaging.settings == before

    status, auth = await world.call("GET", f"/streams/{world.stream}/auth")
    assert status == 200 and auth["login"] == "admin" and auth["password"] == CAM_PW
    status, auth = await world.call(
        "PUT", f"/streams/{world.stream}/auth", {"password": "new-pw-22"}
    )
    assert status == 200, auth
    assert world.cam.model.users["admin"].password == "new-pw-22"
    # The agent updated its own record: it still drives the camera.
    status, config = await world.call("GET", f"/streams/{world.stream}/camera_config")
    assert status == 200, config
    # And the streamer, which now logs in with the new password, still gets video.
    stream = await world.relayed()
    assert ":new-pw-22@" in stream["sim_rtsp_url"]
    assert await asyncio.to_thread(_decode, stream["sim_rtsp_url"], 5) == 5
    entries = world.agent.audit.entries() if world.agent else []
    assert [e["command"] for e in entries][-2:] == ["camera_config_set", "camera_auth_set"]
    assert "new-pw-22" not in json.dumps(entries)


async def test_reboot_and_firmware_update(world: CommandWorld) -> None:
    boot = cam_state(world.cam)["boot_time"]
    status, _ = await world.call("POST", f"/streams/{world.stream}/reboot")
    assert status in (200, 204)
    await until(lambda: cam_state(world.cam)["boot_time"] != boot, 20)
    # The stream comes back by itself: the streamer pulls it through the agent again.
    stream = await world.relayed()
    frames = 0
    async with asyncio.timeout(30):
        while frames < 10:
            try:
                frames = await asyncio.to_thread(_decode, stream["sim_rtsp_url"], 10)
            except av.error.FFmpegError:
                await asyncio.sleep(0.5)

    image = build_image("2.0.0", os.urandom(200_000), model=world.cam.model.identity.model)
    status, answer = await world.call(
        "PUT",
        f"/streams/{world.stream}/firmware_update?proto=onvif",
        raw=image,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 202, answer
    seen_running = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        _, stream = await world.call("GET", f"/streams/{world.stream}")
        seen_running = seen_running or "firmware_update_duration" in stream
        fw = stream.get("firmware_update") or {}
        if fw.get("state") in ("done", "failed"):
            break
        await asyncio.sleep(0.3)
    assert fw.get("state") == "done", fw
    assert seen_running
    assert cam_state(world.cam)["firmware_version"] == "2.0.0"
    # The same through Hikvision ISAPI.
    status, answer = await world.call(
        "PUT",
        f"/streams/{world.stream}/firmware_update?proto=isapi",
        raw=build_image("2.1.0", os.urandom(100_000), model=world.cam.model.identity.model),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 202, answer
    async with asyncio.timeout(60):
        while (
            fw := (await world.call("GET", f"/streams/{world.stream}"))[1].get(
                "firmware_update", {}
            )
        ).get("state") not in ("done", "failed") or fw.get("proto") != "isapi":
            await asyncio.sleep(0.3)
    assert fw["state"] == "done", fw
    assert cam_state(world.cam)["firmware_version"] == "2.1.0"
    assert world.cam.isapi is not None  # (rebuilt at the reboot)
    # A truncated image is refused and changes nothing.
    status, answer = await world.call(
        "PUT",
        f"/streams/{world.stream}/firmware_update?proto=onvif",
        raw=build_image("3.0.0", b"x" * 5000)[:-100],
        headers={"Content-Type": "application/octet-stream"},
    )
    if status == 202:
        async with asyncio.timeout(60):
            while (
                fw := (await world.call("GET", f"/streams/{world.stream}"))[1].get(
                    "firmware_update", {}
                )
            ).get("state") not in ("done", "failed"):
                await asyncio.sleep(0.3)
        assert fw["state"] == "failed"
    else:
        assert status == 400
    assert cam_state(world.cam)["firmware_version"] == "2.1.0"
    status, _ = await world.call(
        "PUT",
        f"/streams/{world.stream}/firmware_update?proto=floppy",
        raw=image,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 400


async def test_logs_are_signed_and_hold_the_audit(
    world: CommandWorld, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # as the daemon logs
    await world.call("POST", f"/streams/{world.stream}/ptz", {"command": "stop"})
    agent = world.agent
    assert agent is not None
    cam_id = agent.inventory.cameras()[0].id
    async with (  # a change through the local API is audited too
        aiohttp.ClientSession() as s,
        s.put(
            f"http://127.0.0.1:{agent.api.port}/api/v1/onvif/{cam_id}/image/brightness",
            json={"value": 70},
        ) as r,
    ):
        assert r.status == 200
    local = agent.audit.entries()[-1]
    assert local["source"] == "local_api" and local["camera_id"] == cam_id
    assert local["args"] == {"value": 70} and local["result"] == "ok"
    agent_id = agent.cloud.status()["agent_id"]
    status, logs = await world.call("GET", f"{world.cloud.central_url}/agents/{agent_id}/logs")
    assert status == 200, logs
    assert logs["agent_id"] == agent_id and logs["status"] == "ok"
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(agent.cloud.status()["public_key"]))
    key.verify(base64.b64decode(logs["b"]), logs["a"].encode())
    content = json.loads(gzip.decompress(base64.b64decode(logs["a"])))
    assert any(e["command"] == "camera_ptz" for e in content["audit"])
    assert any(e["source"] == "local_api" for e in content["audit"])
    assert content["log"] and logs["buffer_size"] <= logs["buffer_limit"]
    # The same audit, from the command line.
    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agent", "log", "--state-dir", str(world.tmp / "state")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "camera_ptz" in shown.stdout and "cloud" in shown.stdout


async def test_paused_camera_and_offline_agent_refuse(world: CommandWorld) -> None:
    agent = world.agent
    assert agent is not None
    cam_id = agent.inventory.cameras()[0].id
    agent.inventory.set_paused(cam_id, True)
    status, answer = await world.call(
        "POST", f"/streams/{world.stream}/ptz", {"command": "move_continuous", "up": 50}
    )
    assert status == 503, answer
    assert not cam_state(world.cam)["ptz"]["moving"]
    agent.inventory.set_paused(cam_id, False)
    await world.stop_agent()
    status, answer = await world.call("POST", f"/streams/{world.stream}/reboot")
    assert status == 503, answer
