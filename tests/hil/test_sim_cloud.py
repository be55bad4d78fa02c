"""The simulated cloud over real loopback sockets, driven by a scripted agent.

The scripted agent speaks docs/protocol.md with aiohttp, agent.proto.cloud and an Ed25519 key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.proto import cloud as pc
from agent.sim.cloud import endpoint
from agent.sim.cloud.app import SimCloud

BASIC = {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()}
CAMERA = pc.CameraInfo(
    id="cam-1", manufacturer="Sim", model="SC-2000", rtsp_url="rtsp://127.0.0.1:8554/live/main"
)


@pytest.fixture
async def cloud() -> AsyncIterator[SimCloud]:
    async with SimCloud(streampoints=2) as c:
        yield c


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def make_named_token(
    http: aiohttp.ClientSession, cloud: SimCloud, **fields: Any
) -> tuple[str, str]:
    """A new token and the name of the stream it will make (the creation answer)."""
    async with http.post(f"{cloud.watcher_url}/login", headers=BASIC) as r:
        assert r.status == 200
        bearer = {"Authorization": f"Bearer {(await r.json())['access_token']}"}
    body = {"title": "Front door", "dvr_depth": 3, "enabled": True, **fields}
    async with http.post(
        f"{cloud.watcher_url}/agent_activation_token", json=body, headers=bearer
    ) as r:
        assert r.status == 200, await r.text()
        data = await r.json()
    assert set(data) == {"token", "stream_name"}, data
    assert isinstance(data["stream_name"], str) and data["stream_name"]
    return str(data["token"]), data["stream_name"]


async def make_token(http: aiohttp.ClientSession, cloud: SimCloud, **fields: Any) -> str:
    return (await make_named_token(http, cloud, **fields))[0]


async def activate(
    http: aiohttp.ClientSession,
    cloud: SimCloud,
    key: Ed25519PrivateKey,
    token: str,
    camera: pc.CameraInfo | None = CAMERA,
) -> tuple[int, dict[str, Any]]:
    req = pc.make_activation(key, token, serial="BOX1", version="0.1.0", camera=camera)
    async with http.post(f"{cloud.url}/agent/v1/activate", json=req.to_dict()) as r:
        return r.status, await r.json()


class ScriptedAgent:
    """Logs in to one WebSocket and records what the server sends."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    @classmethod
    async def connect(
        cls,
        http: aiohttp.ClientSession,
        url: str,
        purpose: pc.Purpose,
        agent_id: str,
        key: Ed25519PrivateKey,
    ) -> tuple[ScriptedAgent, pc.Message]:
        ws = await http.ws_connect(url)
        challenge = pc.decode(await ws.receive_str(timeout=5))
        assert isinstance(challenge, pc.Challenge)
        sig = pc.sign(key, pc.login_text(purpose, agent_id, challenge.nonce))
        await ws.send_str(pc.encode(pc.Login(agent_id, sig)))
        msg = await ws.receive(timeout=5)
        return cls(ws), pc.decode(msg.data)

    async def send(self, msg: pc.Message) -> None:
        await self.ws.send_str(pc.encode(msg))

    async def recv(self) -> pc.Message:
        return pc.decode(await self.ws.receive_str(timeout=5))

    async def recv_request(self) -> pc.Request:
        while True:
            msg = await self.recv()
            if isinstance(msg, pc.Request):
                return msg


async def central(
    http: aiohttp.ClientSession, cloud: SimCloud, method: str, path: str, **kw: Any
) -> tuple[int, Any]:
    async with http.request(method, f"{cloud.central_url}{path}", headers=BASIC, **kw) as r:
        return r.status, (await r.json() if r.content_type == "application/json" else None)


async def wait_offline(cloud: SimCloud, agent_id: str) -> None:
    for _ in range(250):
        if not cloud.online(agent_id) and not cloud.online(agent_id, "streampoint"):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"agent {agent_id} still online")


async def test_full_cycle(cloud: SimCloud, http: aiohttp.ClientSession) -> None:
    key = Ed25519PrivateKey.generate()
    token = await make_token(http, cloud)
    status, answer = await activate(http, cloud, key, token)
    assert status == 200, answer
    result = pc.parse_activation_result(answer)
    assert result.streampoint_hostname == "streampoint-1"
    # Idempotent for the same key, refused for another.
    assert await activate(http, cloud, key, token) == (200, answer)
    status, body = await activate(http, cloud, Ed25519PrivateKey.generate(), token)
    assert (status, body["error"]) == (409, "token_used")
    # The token shows the stream, and the stream's input goes via the agent.
    async with http.get(f"{cloud.watcher_url}/agent_activation_token/{token}", headers=BASIC) as r:
        shown = await r.json()
    assert shown["stream_name"] == shown["camera_name"] == result.stream_name
    async with http.get(f"{cloud.watcher_url}/streams/{result.stream_name}", headers=BASIC) as r:
        stream = await r.json()
    assert stream["inputs"] == [{"url": CAMERA.rtsp_url, "via": f"agent://{result.agent_id}"}]
    assert stream["title"] == "Front door" and stream["dvr"]["expiration"] == 3 * 86400

    ctl, welcome = await ScriptedAgent.connect(
        http, result.endpoint_url, "endpoint", result.agent_id, key
    )
    assert isinstance(welcome, pc.Welcome) and welcome.heartbeat_s == pc.HEARTBEAT_S
    await ctl.send(pc.Request(1, "hello", {"version": "0.1.1", "agent_type": "router"}))
    resp = await ctl.recv()
    assert isinstance(resp, pc.Response) and resp.ok and resp.id == 1
    connect = await ctl.recv_request()
    assert connect.command == "streampoint_connect"
    assert connect.payload == {"hostname": "streampoint-1", "url": result.streampoint_url}
    await ctl.send(pc.Response(connect.id, True, {}))
    await ctl.send(pc.Event("description", {"local_ip": "10.0.0.5", "mac_address": "F0-23"}))
    data, welcome = await ScriptedAgent.connect(
        http, result.streampoint_url, "streampoint", result.agent_id, key
    )
    assert isinstance(welcome, pc.Welcome)
    await data.send(pc.Ping(42))
    assert await data.recv() == pc.Pong(42)
    await ctl.send(pc.Ping(7))
    assert await ctl.recv() == pc.Pong(7)

    status, listing = await central(http, cloud, "GET", "/agents")
    assert status == 200
    (agent,) = listing["agents"]
    stats = agent["stats"]
    assert agent["id"] == result.agent_id and agent["key"] == pc.public_key_b64(key)
    assert stats["endpoint_connection"]["alive"] is True
    assert stats["streampoint_connection"]["alive"] is True
    assert stats["streampoint_connection"]["hostname"] == "streampoint-1"
    assert stats["version"] == "0.1.1" and stats["local_ip"] == "10.0.0.5"
    assert stats["endpoint_connection"]["bytes_to_server"] > 0
    assert stats["endpoint_connection"]["bytes_from_server"] > 0
    assert stats["connections_established"] == 2

    # Move the agent to the second streampoint.
    status, _ = await central(
        http,
        cloud,
        "PUT",
        f"/agents/{result.agent_id}",
        json={"layout": {"ingest": "streampoint-2"}},
    )
    assert status == 200
    move = await ctl.recv_request()
    assert move.command == "streampoint_connect"
    assert move.payload["hostname"] == "streampoint-2"

    # Central commands reach the agent as requests; the HTTP call waits for the answer.
    for command in ("reboot", "reset", "disconnect"):
        call = asyncio.create_task(
            central(http, cloud, "POST", f"/agents/{result.agent_id}/{command}")
        )
        req = await ctl.recv_request()
        assert req.command == command
        await ctl.send(pc.Response(req.id, True, {}))
        assert (await call)[0] == 204

    # The logs call asks the agent too; the cloud keeps its own log of what it sent.
    call = asyncio.create_task(central(http, cloud, "GET", f"/agents/{result.agent_id}/logs"))
    req = await ctl.recv_request()
    assert req.command == "logs"
    await ctl.send(pc.Response(req.id, True, {"status": "ok", "a": "x"}))
    status, logs = await call
    assert status == 200 and logs["a"] == "x"
    assert "reboot" in "\n".join(cloud.agents()[result.agent_id].logs)
    await ctl.ws.close()
    await data.ws.close()
    await wait_offline(cloud, result.agent_id)
    status, body = await central(http, cloud, "POST", f"/agents/{result.agent_id}/reboot")
    assert status == 409 and body["errors"][0]["status"] == "409"
    status, _ = await central(http, cloud, "POST", "/agents/999999/reboot")
    assert status == 404
    status, agent = await central(http, cloud, "GET", f"/agents/{result.agent_id}")
    assert agent["stats"]["endpoint_connection"]["alive"] is False


async def test_token_creation_names_the_stream(
    cloud: SimCloud, http: aiohttp.ClientSession
) -> None:
    """`POST /agent_activation_token` answers `{token, stream_name}`: the stream the camera is
    bound to when the token is used. `GET` shows the name only once the token is used."""
    key = Ed25519PrivateKey.generate()
    tokens = [await make_named_token(http, cloud, title=f"cam {i}") for i in range(3)]
    assert len({name for _, name in tokens}) == 3  # unique, also among unused tokens
    token, name = tokens[1]
    async with http.get(f"{cloud.watcher_url}/agent_activation_token/{token}", headers=BASIC) as r:
        assert await r.json() == {"token": token}
    status, answer = await activate(http, cloud, key, token)
    assert status == 200 and answer["stream_name"] == name
    async with http.get(f"{cloud.watcher_url}/agent_activation_token/{token}", headers=BASIC) as r:
        assert (await r.json())["stream_name"] == name
    async with http.get(f"{cloud.watcher_url}/streams/{name}", headers=BASIC) as r:
        assert r.status == 200
        stream = await r.json()
    assert stream["title"] == "cam 1"
    assert stream["inputs"] == [{"url": CAMERA.rtsp_url, "via": f"agent://{answer['agent_id']}"}]
    # A second token of the same agent gets its own announced name too.
    status, again = await activate(http, cloud, key, tokens[0][0])
    assert status == 200 and again["stream_name"] == tokens[0][1]
    assert set(cloud.streams()) == {tokens[0][1], name}


async def test_typed_token_gets_its_camera_on_repeat(
    cloud: SimCloud, http: aiohttp.ClientSession
) -> None:
    """A token used without a camera makes a stream without input; the same key repeating the
    activation with a camera binds that camera to the stream, once."""
    key = Ed25519PrivateKey.generate()
    token, name = await make_named_token(http, cloud)
    status, answer = await activate(http, cloud, key, token, camera=None)
    assert status == 200 and answer["stream_name"] == name
    assert cloud.streams()[name].config["inputs"] == []
    assert await activate(http, cloud, key, token) == (200, answer)
    via = f"agent://{answer['agent_id']}"
    stream = cloud.streams()[name]
    assert stream.config["inputs"] == [{"url": CAMERA.rtsp_url, "via": via}]
    assert stream.camera is not None and stream.camera["id"] == CAMERA.id
    other = pc.CameraInfo(id="cam-2", rtsp_url="rtsp://127.0.0.1:8555/live/main")
    assert await activate(http, cloud, key, token, camera=other) == (200, answer)
    assert cloud.streams()[name].config["inputs"] == [{"url": CAMERA.rtsp_url, "via": via}]
    status, body = await activate(http, cloud, Ed25519PrivateKey.generate(), token)
    assert (status, body["error"]) == (409, "token_used")
    assert cloud.streams()[name].config["inputs"] == [{"url": CAMERA.rtsp_url, "via": via}]


async def test_login_refused(cloud: SimCloud, http: aiohttp.ClientSession) -> None:
    key = Ed25519PrivateKey.generate()
    _, answer = await activate(http, cloud, key, await make_token(http, cloud))
    result = pc.parse_activation_result(answer)
    # Wrong key; right key but streampoint signature on the endpoint; unknown agent.
    for agent_id, signer, purpose in (
        (result.agent_id, Ed25519PrivateKey.generate(), "endpoint"),
        (result.agent_id, key, "streampoint"),
        ("424242", key, "endpoint"),
    ):
        ws = await http.ws_connect(result.endpoint_url)
        challenge = pc.decode(await ws.receive_str(timeout=5))
        assert isinstance(challenge, pc.Challenge)
        sig = pc.sign(signer, pc.login_text(purpose, agent_id, challenge.nonce))  # type: ignore[arg-type]
        await ws.send_str(pc.encode(pc.Login(agent_id, sig)))
        err = pc.decode(await ws.receive_str(timeout=5))
        assert err == pc.Error("authentication_failed", "authentication failed")
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == pc.CLOSE_AUTH_FAILED
        await ws.close()


async def test_tokens_refused(http: aiohttp.ClientSession) -> None:
    async with SimCloud(token_ttl_s=0.2) as cloud:
        key = Ed25519PrivateKey.generate()
        status, body = await activate(http, cloud, key, "no-such-token")
        assert (status, body["error"]) == (404, "token_unknown")
        token = await make_token(http, cloud)
        await asyncio.sleep(0.3)
        status, body = await activate(http, cloud, key, token)
        assert (status, body["error"]) == (410, "token_expired")
        async with http.get(
            f"{cloud.watcher_url}/agent_activation_token/{token}", headers=BASIC
        ) as r:
            assert r.status == 404
        token = await make_token(http, cloud)
        req = pc.make_activation(key, token).to_dict()
        req["serial"] = "changed after signing"
        async with http.post(f"{cloud.url}/agent/v1/activate", json=req) as r:
            assert (r.status, (await r.json())["error"]) == (400, "bad_signature")
        async with http.post(f"{cloud.url}/agent/v1/activate", data=b"\x00garbage") as r:
            assert (r.status, (await r.json())["error"]) == (400, "invalid_request")
        async with http.post(f"{cloud.url}/agent/v1/activate", data=b"{" * 70000) as r:
            assert r.status == 400
        async with http.get(f"{cloud.watcher_url}/streams") as r:
            assert r.status == 401


async def test_garbage_frames_then_closed(cloud: SimCloud, http: aiohttp.ClientSession) -> None:
    key = Ed25519PrivateKey.generate()
    _, answer = await activate(http, cloud, key, await make_token(http, cloud))
    result = pc.parse_activation_result(answer)
    ctl, _ = await ScriptedAgent.connect(
        http, result.endpoint_url, "endpoint", result.agent_id, key
    )
    await ctl.ws.send_str("not json")
    assert (await ctl.recv()).code == "invalid_message"  # type: ignore[union-attr]
    await ctl.ws.send_str('{"type": "request", "id": 3, "command": "format_disk"}')
    resp = await ctl.recv()
    assert isinstance(resp, pc.Response) and not resp.ok and resp.id == 3
    assert resp.error is not None and resp.error.code == "unknown_command"
    await ctl.ws.send_bytes(b"\x00\x01")
    assert (await ctl.recv()).code == "invalid_message"  # type: ignore[union-attr]
    await ctl.send(pc.Ping(1))  # still served
    assert await ctl.recv() == pc.Pong(1)
    for _ in range(pc.MAX_BAD_MESSAGES):
        await ctl.ws.send_str("[]")
    while True:
        msg = await ctl.ws.receive(timeout=5)
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
    assert msg.type == aiohttp.WSMsgType.CLOSE and ctl.ws.close_code == pc.CLOSE_POLICY


async def test_silent_agent_dropped(
    cloud: SimCloud, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(endpoint, "PING_TIMEOUT_S", 0.3)
    key = Ed25519PrivateKey.generate()
    _, answer = await activate(http, cloud, key, await make_token(http, cloud))
    result = pc.parse_activation_result(answer)
    ctl, _ = await ScriptedAgent.connect(
        http, result.endpoint_url, "endpoint", result.agent_id, key
    )
    assert cloud.online(result.agent_id)
    msg = await ctl.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and ctl.ws.close_code == endpoint.CLOSE_PING_TIMEOUT
    await ctl.ws.close()
    await wait_offline(cloud, result.agent_id)


async def test_restart_with_db_keeps_state(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    db = tmp_path / "cloud.db"
    key = Ed25519PrivateKey.generate()
    async with SimCloud(db=db) as cloud:
        used = await make_token(http, cloud)
        spare, spare_name = await make_named_token(http, cloud)
        status, answer = await activate(http, cloud, key, used)
        assert status == 200
        server_id = cloud.state.server_id
    async with SimCloud(db=db) as cloud:
        result = pc.parse_activation_result(answer)
        assert cloud.state.server_id == server_id
        assert set(cloud.tokens()) == {used, spare}
        assert result.stream_name in cloud.streams()
        # The same agent logs in after the restart, and the used token is still used.
        ctl, welcome = await ScriptedAgent.connect(
            http, cloud.endpoint_url, "endpoint", result.agent_id, key
        )
        assert isinstance(welcome, pc.Welcome)
        await ctl.ws.close()
        status, body = await activate(http, cloud, Ed25519PrivateKey.generate(), used)
        assert (status, body["error"]) == (409, "token_used")
        # A second token for the same key binds a second stream to the same agent.
        status, again = await activate(http, cloud, key, spare)
        assert status == 200 and again["agent_id"] == result.agent_id
        assert again["stream_name"] == spare_name != result.stream_name
        async with http.get(f"{cloud.url}/", headers=BASIC) as r:
            page = await r.text()
        assert result.stream_name in page and "<script" not in page
        async with http.get(f"{cloud.url}/sim/qr/{spare}") as r:
            qr = pc.parse_qr(await r.text())
        assert qr == pc.QrPayload(spare, url=cloud.url)
        async with http.get(f"{cloud.url}/sim/qr/{spare}.png") as r:
            assert r.content_type == "image/png"
            png = await r.read()
        assert png.startswith(b"\x89PNG")


async def test_oversize_frame_and_bearer(cloud: SimCloud, http: aiohttp.ClientSession) -> None:
    key = Ed25519PrivateKey.generate()
    _, answer = await activate(http, cloud, key, await make_token(http, cloud))
    result = pc.parse_activation_result(answer)
    ctl, _ = await ScriptedAgent.connect(
        http, result.endpoint_url, "endpoint", result.agent_id, key
    )
    await ctl.ws.send_str('{"type":"ping","ts_ms":1,"pad":"' + "x" * pc.MAX_MESSAGE + '"}')
    msg = await ctl.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and ctl.ws.close_code == 1009
    async with http.post(f"{cloud.watcher_url}/login", headers=BASIC) as r:
        bearer = {"Authorization": f"Bearer {(await r.json())['access_token']}"}
    async with http.get(f"{cloud.central_url}/agents", headers=bearer) as r:
        assert r.status == 200
    async with http.get(f"{cloud.central_url}/agents", headers={"Authorization": "Bearer x"}) as r:
        assert r.status == 401
    async with http.get(f"{cloud.central_url}/monitoring/liveness") as r:
        assert r.status == 200 and (await r.json())["now"] > 10**12


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    cmd = [sys.executable, "-m", "agent", "sim", "cloud", "--port", "0", "--streampoints", "2"]
    cmd += ["--db", str(tmp_path / "c.db"), "--ready-file", str(ready)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), proc.stderr.read() if proc.stderr else ""
        info = json.loads(ready.read_text())
        assert set(info["streampoints"]) == {"streampoint-1", "streampoint-2"}
        with urllib.request.urlopen(info["central_url"] + "/monitoring/readiness") as r:
            assert json.load(r)["started_at"] > 10**9
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
    assert rc == 0
