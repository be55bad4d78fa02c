"""Camera commands through the simulated cloud, answered by a scripted agent over loopback.

The scripted agent is a real WebSocket client: it logs in to the endpoint with its Ed25519 key
and answers each request from a table (results, error codes, slow answers, none at all).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.proto import cloud as pc
from agent.sim.cloud import commands, firmware
from agent.sim.cloud.app import SimCloud
from tests.world import World

BASIC = {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()}
CAMERA = pc.CameraInfo(
    id="cam-1", manufacturer="Sim", model="SC-2000", rtsp_url="rtsp://127.0.0.1:8554/live/main"
)
CONFIG = {
    "sensor": {"brightness_correction": 50, "image_orientation": "normal"},
    "camera_info": {"manufacturer": "Sim", "model": "SC-2000", "firmware": "1.0"},
    "media_quality": "medium",
}
LOGS = {
    "status": "ok",
    "version": "0.1.0",
    "serial": "BOX1",
    "meminfo": "806400",
    "buffer_limit": 65536,
    "buffer_size": 120,
    "a": base64.b64encode(b"gzip bytes").decode(),
    "b": base64.b64encode(b"s" * 64).decode(),
}

Handler = Callable[[pc.Request], Awaitable[pc.Response | None]]


def ok(result: dict[str, Any] | None = None, delay: float = 0.0) -> Handler:
    async def handler(req: pc.Request) -> pc.Response:
        await asyncio.sleep(delay)
        return pc.Response(req.id, True, dict(result or {}))

    return handler


def fail(code: str, message: str) -> Handler:
    async def handler(req: pc.Request) -> pc.Response:
        return pc.Response(req.id, False, {}, pc.Error(code, message))

    return handler


async def silent(req: pc.Request) -> None:
    return None


class FakeAgent:
    """Logs in to the endpoint and answers requests from `table`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.table: dict[str, Handler] = {}
        self.requests: list[pc.Request] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls, http: aiohttp.ClientSession, url: str, agent_id: str, key: Ed25519PrivateKey
    ) -> FakeAgent:
        ws = await http.ws_connect(url)
        challenge = pc.decode(await ws.receive_str(timeout=5))
        assert isinstance(challenge, pc.Challenge)
        sig = pc.sign(key, pc.login_text("endpoint", agent_id, challenge.nonce))
        await ws.send_str(pc.encode(pc.Login(agent_id, sig)))
        assert isinstance(pc.decode(await ws.receive_str(timeout=5)), pc.Welcome)
        return cls(ws)

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            req = pc.decode(msg.data)
            if isinstance(req, pc.Request):
                self.requests.append(req)
                task = asyncio.create_task(self._answer(req))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _answer(self, req: pc.Request) -> None:
        handler = self.table.get(req.command, fail("unknown_command", "not in the table"))
        response = await handler(req)
        if response is not None and not self.ws.closed:
            await self.ws.send_str(pc.encode(response))

    async def event(self, command: str, payload: dict[str, Any]) -> None:
        await self.ws.send_str(pc.encode(pc.Event(command, payload)))

    def last(self, command: str) -> pc.Request:
        return [r for r in self.requests if r.command == command][-1]

    async def close(self) -> None:
        await self.ws.close()
        for task in [self._reader, *self._tasks]:
            task.cancel()
        await asyncio.gather(self._reader, *self._tasks, return_exceptions=True)


@dataclass
class Linked:
    """The simulated cloud with a protocol-level agent connected to its endpoint."""

    cloud: SimCloud
    http: aiohttp.ClientSession
    agent: FakeAgent
    agent_id: str
    stream: str
    extra: dict[str, Any] = field(default_factory=dict)

    async def call(
        self, method: str, path: str, *, stream: str | None = None, **kw: Any
    ) -> tuple[int, Any]:
        url = f"{self.cloud.watcher_url}/streams/{stream or self.stream}{path}"
        kw.setdefault("headers", BASIC)
        async with self.http.request(method, url, **kw) as r:
            body = await r.json() if r.content_type == "application/json" else await r.read()
            return r.status, body

    async def stream_view(self) -> dict[str, Any]:
        status, view = await self.call("GET", "")
        assert status == 200
        return dict(view)

    async def wait_offline(self) -> None:
        for _ in range(250):
            if not self.cloud.online(self.agent_id):
                return
            await asyncio.sleep(0.02)
        raise AssertionError("agent still online")


@pytest.fixture
async def world() -> AsyncIterator[Linked]:
    async with World([], cloud=SimCloud()) as sim, aiohttp.ClientSession() as http:
        cloud = sim.cloud
        token = await sim.new_token("Door")
        key = Ed25519PrivateKey.generate()
        req = pc.make_activation(key, token, serial="BOX1", version="0.1.0", camera=CAMERA)
        async with http.post(f"{cloud.url}/agent/v1/activate", json=req.to_dict()) as r:
            assert r.status == 200
            result = pc.parse_activation_result(await r.json())
        agent = await FakeAgent.connect(http, result.endpoint_url, result.agent_id, key)
        try:
            yield Linked(cloud, http, agent, result.agent_id, result.stream_name)
        finally:
            await agent.close()


def assert_deadline(req: pc.Request, limit_s: float, sent_ms: int) -> None:
    deadline = req.payload["deadline_ms"]
    assert sent_ms + limit_s * 1000 - 50 <= deadline <= sent_ms + limit_s * 1000 + 2000


async def test_commands_reach_the_agent_and_answer(world: Linked) -> None:
    auth = {"login": "admin", "password": "s3cret-pass", "port": 8080}
    world.agent.table.update(
        camera_ptz=ok(),
        camera_reboot=ok(),
        camera_config_get=ok(CONFIG),
        camera_config_set=ok({**CONFIG, "media_quality": "high"}),
        camera_auth_get=ok(auth),
        camera_auth_set=ok({**auth, "port": 8081}),
    )
    move = {"command": "move_continuous", "up": 0, "down": 50, "left": 50, "right": 0, "in": 20}
    sent = int(time.time() * 1000)
    assert await world.call("POST", "/ptz", json={**move, "camera_id": "other"}) == (204, b"")
    req = world.agent.last("camera_ptz")
    assert req.payload == {**move, "camera_id": "cam-1", "deadline_ms": req.payload["deadline_ms"]}
    assert_deadline(req, 5, sent)

    assert await world.call("POST", "/reboot") == (204, b"")
    req = world.agent.last("camera_reboot")
    assert set(req.payload) == {"camera_id", "deadline_ms"} and req.payload["camera_id"] == "cam-1"
    assert_deadline(req, 15, sent)

    assert await world.call("GET", "/camera_config") == (200, CONFIG)
    assert_deadline(world.agent.last("camera_config_get"), 20, sent)
    status, body = await world.call("PUT", "/camera_config", json={"media_quality": "high"})
    assert (status, body["media_quality"]) == (200, "high")
    req = world.agent.last("camera_config_set")
    assert req.payload["config"] == {"media_quality": "high"}
    assert req.payload["camera_id"] == "cam-1"

    assert await world.call("GET", "/auth") == (200, auth)
    new = {"password": "n3w-pass", "port": 8081, "unknown": 1}
    status, body = await world.call("PUT", "/auth", json=new)
    assert (status, body["port"]) == (200, 8081)
    req = world.agent.last("camera_auth_set")
    assert {k: v for k, v in req.payload.items() if k != "deadline_ms"} == {
        "camera_id": "cam-1",
        "password": "n3w-pass",
        "port": 8081,
    }
    assert_deadline(req, 20, sent)
    # The stream's input is left as it is, and the agent's log names each command, no secret.
    view = await world.stream_view()
    assert view["inputs"] == [{"url": CAMERA.rtsp_url, "via": f"agent://{world.agent_id}"}]
    lines = "\n".join(world.cloud.agents()[world.agent_id].logs)
    for command in ("camera_ptz", "camera_reboot", "camera_config_set", "camera_auth_set"):
        assert f"command {command} for cam-1: ok" in lines
    assert "pass" not in lines


async def test_agent_errors_map_to_http(world: Linked) -> None:
    cases = {
        "invalid_request": 400,
        "onvif_unsupported_action": 400,
        "onvif_unauthenticated": 400,
        "onvif_refused": 400,
        "onvif_not_available": 400,
        "onvif_not_applied": 409,
        "not_found": 404,
        "temporarily_unavailable": 503,
        "internal_error": 500,
        "unknown_command": 500,
    }
    for code, http_status in cases.items():
        world.agent.table["camera_config_get"] = fail(code, f"because {code}")
        status, body = await world.call("GET", "/camera_config")
        assert status == http_status, code
        assert body["errors"][0] == {
            "status": str(http_status),
            "title": f"because {code}",
            "code": code,
        }
    lines = "\n".join(world.cloud.agents()[world.agent_id].logs)
    assert "command camera_config_get for cam-1: failed onvif_unauthenticated" in lines


async def test_no_answer_is_504_and_a_late_answer_is_harmless(
    world: Linked, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(commands.LIMITS_S, "camera_ptz", 0.3)
    monkeypatch.setattr(commands, "GRACE_S", 0.2)
    world.agent.table["camera_ptz"] = silent
    started = time.monotonic()
    status, body = await world.call("POST", "/ptz", json={"command": "stop"})
    assert (status, body["errors"][0]["code"]) == (504, "agent_timeout")
    assert 0.45 <= time.monotonic() - started < 3
    # A slow answer past the wait: 504, and the late response does not upset the connection.
    world.agent.table["camera_ptz"] = ok(delay=0.8)
    assert (await world.call("POST", "/ptz", json={"command": "stop"}))[0] == 504
    await asyncio.sleep(0.5)
    world.agent.table["camera_ptz"] = ok()
    assert (await world.call("POST", "/ptz", json={"command": "stop"}))[0] == 204
    assert world.cloud.online(world.agent_id)
    assert "camera_ptz for cam-1: timeout" in "\n".join(world.cloud.agents()[world.agent_id].logs)


async def test_bad_requests_and_offline_agent(world: Linked) -> None:
    world.agent.table.update(camera_ptz=ok(), camera_config_set=ok(CONFIG))
    assert (await world.call("POST", "/ptz", stream="nope", json={}))[0] == 404
    assert (await world.call("POST", "/ptz", headers={}, json={}))[0] == 401
    for method, path in (("POST", "/ptz"), ("PUT", "/camera_config"), ("PUT", "/auth")):
        status, body = await world.call(method, path, data=b"{not json", headers=BASIC)
        assert (status, body["errors"][0]["code"]) == (400, "invalid_json"), path
        status, body = await world.call(method, path, json=[1, 2], headers=BASIC)
        assert status == 400, path
    # A stream of the Watcher without a camera behind an agent.
    status, _ = await world.call("PUT", "", stream="plain", json={"inputs": []})
    assert status == 200
    status, body = await world.call("POST", "/reboot", stream="plain")
    assert (status, body["errors"][0]["code"]) == (409, "no_agent_camera")
    assert world.agent.requests == []

    # The agent drops the connection while a command waits: 503.
    world.agent.table["camera_reboot"] = silent
    pending = asyncio.create_task(world.call("POST", "/reboot"))
    for _ in range(100):
        if any(r.command == "camera_reboot" for r in world.agent.requests):
            break
        await asyncio.sleep(0.02)
    await world.agent.close()
    status, body = await pending
    assert (status, body["errors"][0]["code"]) == (503, "agent_offline")
    await world.wait_offline()
    # Offline: every route answers 503 at once.
    started = time.monotonic()
    for method, path, kw in (
        ("POST", "/ptz", {"json": {"command": "stop"}}),
        ("POST", "/reboot", {}),
        ("GET", "/camera_config", {}),
        ("PUT", "/auth", {"json": {"port": 81}}),
        ("PUT", "/firmware_update", {"json": {"image": "AAAA"}}),
    ):
        status, body = await world.call(method, path, **kw)
        assert (status, body["errors"][0]["code"]) == (503, "agent_offline"), path
    url = f"{world.cloud.central_url}/agents/{world.agent_id}/logs"
    async with world.http.get(url, headers=BASIC) as r:
        assert (r.status, (await r.json())["errors"][0]["code"]) == (503, "agent_offline")
    assert time.monotonic() - started < 2


async def test_logs_route(world: Linked) -> None:
    world.agent.table["logs"] = ok({**LOGS, "agent_id": world.agent_id})
    url = f"{world.cloud.central_url}/agents/{world.agent_id}/logs"
    sent = int(time.time() * 1000)
    async with world.http.get(url, headers=BASIC) as r:
        assert r.status == 200
        assert await r.json() == {**LOGS, "agent_id": world.agent_id}
    req = world.agent.last("logs")
    assert set(req.payload) == {"deadline_ms"}
    assert_deadline(req, 10, sent)
    world.agent.table["logs"] = fail("internal_error", "log ring unavailable")
    async with world.http.get(url, headers=BASIC) as r:
        assert (r.status, (await r.json())["errors"][0]["title"]) == (500, "log ring unavailable")
    async with world.http.get(f"{world.cloud.central_url}/agents/9999/logs", headers=BASIC) as r:
        assert r.status == 404


class FirmwareScript:
    """The agent side of `camera_firmware`: download, check, report progress, answer on release."""

    def __init__(self, world: Linked, *, after: str = "2.0", error: str | None = None) -> None:
        self.world = world
        self.after = after
        self.error = error
        self.release = asyncio.Event()
        self.downloaded = asyncio.Event()
        self.data = b""
        self.second_get = 0

    async def __call__(self, req: pc.Request) -> pc.Response:
        url = req.payload["url"]
        async with self.world.http.get(url) as r:
            assert r.status == 200
            self.data = await r.read()
        async with self.world.http.get(url) as r:
            self.second_get = r.status
        camera = req.payload["camera_id"]
        for stage, percent in (("download", 100), ("upload", 60)):
            await self.world.agent.event(
                "camera_firmware_progress",
                {"camera_id": camera, "stage": stage, "percent": percent, "message": stage},
            )
        self.downloaded.set()
        await self.release.wait()
        if self.error is not None:
            return pc.Response(req.id, False, {}, pc.Error(self.error, "camera refused it"))
        result = {"firmware_before": "1.0", "firmware_after": self.after, "duration_ms": 1234}
        return pc.Response(req.id, True, result)


async def wait_state(world: Linked, state: str) -> dict[str, Any]:
    for _ in range(250):
        view = await world.stream_view()
        if view.get("firmware_update", {}).get("state") == state:
            return view
        await asyncio.sleep(0.02)
    raise AssertionError(f"firmware update never reached {state}")


async def test_firmware_update_flow(world: Linked) -> None:
    image = os.urandom(300_000)
    script = FirmwareScript(world)
    world.agent.table["camera_firmware"] = script
    body = {"image": base64.b64encode(image).decode(), "proto": "onvif"}
    sent = int(time.time() * 1000)
    assert await world.call("PUT", "/firmware_update", json=body) == (202, {"status": "started"})
    await asyncio.wait_for(script.downloaded.wait(), 5)
    req = world.agent.last("camera_firmware")
    assert req.payload["camera_id"] == "cam-1" and req.payload["proto"] == "onvif"
    assert req.payload["size"] == len(image)
    assert req.payload["sha256"] == hashlib.sha256(image).hexdigest()
    assert req.payload["url"].startswith(f"{world.cloud.url}/agent/v1/firmware/")
    assert_deadline(req, 600, sent)
    # The image arrived intact, once; a second download is refused.
    assert script.data == image and script.second_get == 404
    # While it runs: the duration and the progress the agent reported; a second update is 409.
    await asyncio.sleep(0.05)
    view = await world.stream_view()
    assert isinstance(view["firmware_update_duration"], int)
    status = view["firmware_update"]
    assert (status["state"], status["stage"], status["percent"]) == ("running", "upload", 60)
    assert status["started_at"] >= sent and status["finished_at"] is None
    status, body = await world.call("PUT", "/firmware_update", json={"image": "AAAA"})
    assert (status, body["errors"][0]["code"]) == (409, "update_running")
    script.release.set()
    view = await wait_state(world, "done")
    assert "firmware_update_duration" not in view
    done = view["firmware_update"]
    assert (done["firmware_after"], done["firmware_before"], done["percent"]) == ("2.0", "1.0", 100)
    assert done["finished_at"] >= done["started_at"]
    lines = "\n".join(world.cloud.agents()[world.agent_id].logs)
    assert "firmware update of cam-1 done firmware 2.0" in lines
    # The image is gone from the cloud's store once the job ended.
    assert world.cloud.firmware is not None
    assert not list(world.cloud.firmware.new_path().parent.iterdir())

    # A raw body next (allowed again), refused by the camera: the status says failed.
    script = FirmwareScript(world, error="onvif_unsupported_action")
    script.release.set()
    world.agent.table["camera_firmware"] = script
    status, _ = await world.call(
        "PUT",
        "/firmware_update?proto=xm",
        data=image[:1000],
        headers={**BASIC, "Content-Type": "application/octet-stream"},
    )
    assert status == 202
    failed = (await wait_state(world, "failed"))["firmware_update"]
    assert failed["message"] == "onvif_unsupported_action: camera refused it"
    assert (
        script.data == image[:1000] and world.agent.last("camera_firmware").payload["proto"] == "xm"
    )


async def test_firmware_multipart_and_validation(world: Linked) -> None:
    script = FirmwareScript(world)
    script.release.set()
    world.agent.table["camera_firmware"] = script
    image = os.urandom(70_000)
    form = aiohttp.FormData()
    form.add_field("proto", "isapi")
    form.add_field("image", image, filename="fw.bin", content_type="application/octet-stream")
    assert (await world.call("PUT", "/firmware_update", data=form))[0] == 202
    await wait_state(world, "done")
    req = world.agent.last("camera_firmware")
    assert req.payload["proto"] == "isapi" and script.data == image
    assert req.payload["sha256"] == hashlib.sha256(image).hexdigest()
    # JSON without proto: iris.
    assert (await world.call("PUT", "/firmware_update", json={"image": "AQID"}))[0] == 202
    await wait_state(world, "done")
    assert world.agent.last("camera_firmware").payload["proto"] == "iris"
    assert script.data == b"\x01\x02\x03"

    count = len(world.agent.requests)
    raw = {**BASIC, "Content-Type": "application/octet-stream"}
    bad: list[tuple[int, str, dict[str, Any]]] = [
        (400, "", {"json": {"image": "AQID", "proto": "ftp"}}),
        (400, "?proto=ftp", {"data": b"x", "headers": raw}),
        (400, "", {"json": {"image": "not base64!"}}),
        (400, "", {"json": {"image": ""}}),
        (400, "", {"json": {"proto": "iris"}}),
        (400, "", {"data": b"", "headers": raw}),
        (400, "", {"data": b"{oops", "headers": {**BASIC, "Content-Type": "application/json"}}),
        (415, "", {"data": b"x", "headers": {**BASIC, "Content-Type": "text/plain"}}),
    ]
    nameless = aiohttp.FormData()
    nameless.add_field("proto", "iris")
    nameless.add_field("other", b"abc", filename="x.bin")
    bad.append((400, "", {"data": nameless}))
    form_type = {**BASIC, "Content-Type": "multipart/form-data; boundary=xyz"}
    part = b'--xyz\r\nContent-Disposition: form-data; name="image"\r\n\r\nabc'
    for data in (b"garbage", part, b"--xyz\r\nbad header\r\n\r\nabc\r\n--xyz--\r\n"):
        bad.append((400, "", {"data": data, "headers": form_type}))
    for http_status, query, kw in bad:
        status, body = await world.call("PUT", "/firmware_update" + query, **kw)
        assert status == http_status, (query, kw, body)
    assert len(world.agent.requests) == count
    # Nothing refused stayed on disk, and the stream is free for the next update.
    assert world.cloud.firmware is not None
    assert not list(world.cloud.firmware.new_path().parent.iterdir())
    assert (await world.call("PUT", "/firmware_update", json={"image": "AQID"}))[0] == 202


async def test_oversized_image_is_413_without_holding_it(world: Linked) -> None:
    world.agent.table["camera_firmware"] = ok()
    block = b"\0" * (1 << 20)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(firmware.MAX_IMAGE // len(block) + 2):
            yield block

    tracemalloc.start()
    try:
        status, resp = await world.call(
            "PUT",
            "/firmware_update",
            data=body(),
            headers={**BASIC, "Content-Type": "application/octet-stream"},
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (status, resp["errors"][0]["code"]) == (413, "too_large")
    assert peak < 16 * (1 << 20)
    # A declared length over the limit is refused before the body is read.
    reader, writer = await asyncio.open_connection("127.0.0.1", world.cloud.port)
    head = (
        f"PUT /watcher/client-api/v3/streams/{world.stream}/firmware_update HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: {BASIC['Authorization']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {10**9}\r\n\r\n"
    )
    writer.write(head.encode() + b'{"image": "')
    await writer.drain()
    assert (
        await asyncio.wait_for(reader.readline(), 5) == b"HTTP/1.1 413 Request Entity Too Large\r\n"
    )
    writer.close()
    await writer.wait_closed()
    assert world.cloud.firmware is not None
    assert not list(world.cloud.firmware.new_path().parent.iterdir())
    assert not [r for r in world.agent.requests if r.command == "camera_firmware"]


async def test_download_expires_and_stop_ends_the_job(world: Linked) -> None:
    assert world.cloud.firmware is not None
    world.cloud.firmware.ttl_s = 0.2
    world.agent.table["camera_firmware"] = silent
    assert (await world.call("PUT", "/firmware_update", json={"image": "AQID"}))[0] == 202
    url = world.agent.last("camera_firmware").payload["url"]
    await asyncio.sleep(0.3)
    async with world.http.get(url) as r:
        assert r.status == 404
    async with world.http.get(f"{world.cloud.url}/agent/v1/firmware/unknown") as r:
        assert r.status == 404
    store = world.cloud.firmware.new_path().parent
    view = await world.stream_view()
    assert view["firmware_update"]["state"] == "running"
    started = time.monotonic()
    await world.cloud.stop()
    assert time.monotonic() - started < 5
    assert not store.exists()
