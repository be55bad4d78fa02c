"""Cameras that speak RTSP only, added to the running agent by URL (local API or config file).

A simulated camera stands in for them through its RTSP server alone: the agent is never told its
ONVIF address. Everything runs on loopback.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import av
import pytest
from PIL import Image

from agent.api.openapi import openapi_document
from agent.app import Agent
from agent.config import AgentConfig, CameraConfig, DiscoveryConfig, RestreamConfig
from agent.discovery.inventory import Inventory
from agent.health.liveness import CameraLiveness
from agent.health.liveness import target as liveness_target
from agent.secret import Credentials, Secret
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from tests.fakes import ApiClient, Reply, SpecChecker

USER, PASSWORD = "admin", "Rtsp-only-pw7"
VIEWER, VIEWER_PASSWORD = "viewer", "Viewer-pw-123"
SIZES = {"main": (1280, 720), "sub": (640, 360)}
ENCODER = {
    "stream_profile": "SUB_STREAM_1",
    "encoder": "H264",
    "resolution": "640x360",
    "framerate": 15,
    "bitrate": 512,
}
#: Seconds the agent gets to start or to reach a state.
WAIT = 20.0


def with_login(url: str, user: str = USER, password: str = PASSWORD) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.netloc}"))


def expected_id(url: str) -> str:
    parts = urlsplit(url)
    normal = urlunsplit(("rtsp", f"{parts.hostname}:{parts.port}", parts.path, parts.query, ""))
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"camera-agent:rtsp:{normal}"))


async def wait_for(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def any_online(inventory: Inventory) -> Callable[[], bool]:
    return lambda: any(c.state == "online" for c in inventory.cameras())


class Running:
    """The agent on loopback with the restream server on, and an API client."""

    def __init__(self, agent: Agent, task: asyncio.Task[None], stop: asyncio.Event) -> None:
        self.agent = agent
        self.task = task
        self.stop_event = stop
        self.client = ApiClient(
            f"http://127.0.0.1:{agent.api.port}", SpecChecker(openapi_document("test"))
        )
        self.replies: list[Reply] = []

    async def call(self, method: str, path: str, body: Any = None) -> Reply:
        reply = await self.client.call(method, path, body)
        self.replies.append(reply)
        return reply

    async def stop(self) -> None:
        await self.client.close()
        self.stop_event.set()
        await asyncio.wait_for(self.task, 10)

    def assert_no_secret(self) -> None:
        for reply in self.replies:
            assert PASSWORD.encode() not in reply.body
            assert b"wrong-pw" not in reply.body


async def start_agent(state_dir: Path, cameras: tuple[CameraConfig, ...] = ()) -> Running:
    cfg = AgentConfig(
        state_dir=state_dir,
        api_host="127.0.0.1",
        api_port=0,
        webrtc_addresses=("127.0.0.1",),
        discovery=DiscoveryConfig(multicast=False, mdns=False),
        restream=RestreamConfig(
            host="127.0.0.1", port=0, username=VIEWER, password=Secret(VIEWER_PASSWORD)
        ),
        cameras=cameras,
    )
    agent = Agent(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.wait_for(agent.ready.wait(), WAIT)
    return Running(agent, task, stop)


@pytest.fixture
async def camera() -> AsyncIterator[SimCamera]:
    cam = SimCamera(SimCameraConfig(username=USER, password=PASSWORD, serial="RTSP0001"))
    await cam.start()
    try:
        yield cam
    finally:
        await cam.stop()


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    run = await start_agent(tmp_path / "state")
    try:
        yield run
    finally:
        await run.stop()
    run.assert_no_secret()


def decode(url: str, size: tuple[int, int], frames: int = 20) -> int:
    """Frames of `size` decoded from `url` with FFmpeg (PyAV)."""
    count = 0
    options = {"rtsp_transport": "tcp", "timeout": "5000000"}
    with av.open(url, options=options) as container:
        for frame in container.decode(video=0):
            assert (frame.width, frame.height) == size
            count += 1
            if count >= frames:
                break
    return count


async def test_added_by_api_restreams_snapshots_and_refuses_onvif(
    running: Running, camera: SimCamera
) -> None:
    main, sub = camera.rtsp_url("main"), camera.rtsp_url("sub")
    body = {"rtsp_url": with_login(main), "sub_url": sub, "name": "Garage"}
    reply = await running.call("POST", "/api/v1/cameras", body)
    assert reply.status == 200, reply.body
    record = reply.json()
    cid = record["id"]
    assert cid == expected_id(main)
    assert record["kind"] == "rtsp" and record["name"] == "Garage"
    assert record["state"] == "online", record
    assert record["sources"] == ["api"]
    assert [(p["token"], p["rtsp_uri"], p["encoding"]) for p in record["profiles"]] == [
        ("main", main, "H264"),
        ("sub", sub, "H264"),
    ]
    listing = (await running.call("GET", "/api/v1/cameras")).json()
    assert [c["id"] for c in listing["cameras"]] == [cid]

    restream = running.agent.restream
    assert restream is not None
    for stream in ("main", "sub"):
        url = f"rtsp://{VIEWER}:{VIEWER_PASSWORD}@127.0.0.1:{restream.port}/{cid}/{stream}"
        assert await asyncio.to_thread(decode, url, SIZES[stream]) == 20

    snap = await running.call("GET", f"/api/v1/camerasnapshots/{cid}")
    assert snap.status == 200 and snap.content_type == "image/jpeg"
    picture = Image.open(io.BytesIO(snap.body))
    assert picture.format == "JPEG" and picture.size == SIZES["sub"]  # the smallest stream

    for method, suffix, payload in (
        ("GET", "/ptz", None),
        ("GET", "/image", None),
        ("PUT", "/stream/encoder", ENCODER),
        ("GET", "/users", None),
        ("GET", "/network", None),
        ("GET", "", None),
    ):
        answer = await running.call(method, f"/api/v1/onvif/{cid}{suffix}", payload)
        assert answer.status == 400, (suffix, answer.body)
        assert answer.json()["status"] == "onvif_not_available", (suffix, answer.body)

    gone = await running.call("DELETE", f"/api/v1/cameras/{cid}")
    assert gone.status == 200 and gone.json() == {"status": "ok"}
    assert (await running.call("GET", "/api/v1/cameras")).json()["cameras"] == []
    assert (await running.call("GET", f"/api/v1/camerasnapshots/{cid}")).status == 404
    assert (await running.call("DELETE", f"/api/v1/cameras/{cid}")).status == 404
    await wait_for(lambda: not (running.agent.state.path / "inventory.json").exists() or (
        cid not in (running.agent.state.path / "inventory.json").read_text()
    ))  # fmt: skip


async def test_wrong_password_is_unauthorized_then_fixed(
    running: Running, camera: SimCamera
) -> None:
    main = camera.rtsp_url("main")
    body = {"rtsp_url": main, "username": USER, "password": "wrong-pw"}
    record = (await running.call("POST", "/api/v1/cameras", body)).json()
    assert record["state"] == "unauthorized", record
    assert record["id"] == expected_id(main)
    snap = await running.call("GET", f"/api/v1/camerasnapshots/{record['id']}")
    assert snap.status == 400 and snap.json()["status"] == "onvif_unauthenticated"
    # The same URL again with the right password: the same camera, now online.
    fixed = {"rtsp_url": main, "username": USER, "password": PASSWORD}
    again = (await running.call("POST", "/api/v1/cameras", fixed)).json()
    assert again["id"] == record["id"] and again["state"] == "online", again
    assert len((await running.call("GET", "/api/v1/cameras")).json()["cameras"]) == 1


async def test_camera_without_rtsp_server_is_unreachable(running: Running) -> None:
    body = {"rtsp_url": "rtsp://127.0.0.1:9/none"}  # discard port: nothing listens on loopback
    record = (await running.call("POST", "/api/v1/cameras", body)).json()
    assert record["state"] == "unreachable", record


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"rtsp_url": "http://127.0.0.1/x"}, "rtsp_url"),
        ({"rtsp_url": "rtsp://"}, "rtsp_url"),
        ({"rtsp_url": "rtsp://127.0.0.1:99999/x"}, "rtsp_url"),
        ({"rtsp_url": "rtsp://127.0.0.1/x", "sub_url": "rtmp://127.0.0.1/x"}, "sub_url"),
        ({"rtsp_url": "rtsp://127.0.0.1/x", "password": PASSWORD}, "username"),
        ({"rtsp_url": "rtsp://a:b@127.0.0.1/x", "onvif_url": "http://127.0.0.1/"}, "exactly"),
        ({"name": "x"}, "exactly"),
        # No camera protocol carries a control character in a login (SOAP XML refuses them):
        # such a login, stored, would make every later call to the camera fail.
        ({"onvif_url": "http://127.0.0.1/", "username": "admin", "password": "a\x00b"}, "password"),
        ({"onvif_url": "http://127.0.0.1/", "username": "ad\x07min"}, "username"),
        ({"rtsp_url": "rtsp://admin:a%00b@127.0.0.1/x"}, "password"),
        ({"rtsp_url": "rtsp://127.0.0.1/x", "username": "a", "password": "\x1b[2J"}, "password"),
        ({"onvif_url": "http://127.0.0.1/", "username": "a", "password": "x" * 129}, "password"),
    ],
)
async def test_bad_bodies_are_refused(running: Running, body: Any, needle: str) -> None:
    reply = await running.call("POST", "/api/v1/cameras", body)
    assert reply.status in (400, 422), reply.body
    assert needle in reply.body.decode()
    assert running.agent.inventory.cameras() == []


async def test_onvif_camera_added_by_url(running: Running, camera: SimCamera) -> None:
    body = {"onvif_url": camera.device_url, "username": USER, "password": PASSWORD}
    record = (await running.call("POST", "/api/v1/cameras", body)).json()
    assert record["kind"] == "onvif" and record["state"] == "online", record
    assert record["serial_number"] == "RTSP0001" and record["sources"] == ["probe"]
    ptz = await running.call("GET", f"/api/v1/onvif/{record['id']}/ptz")
    assert ptz.status == 200


async def test_a_forgotten_camera_takes_its_login_with_it(
    running: Running, camera: SimCamera
) -> None:
    body = {"onvif_url": camera.device_url, "username": USER, "password": PASSWORD}
    record = (await running.call("POST", "/api/v1/cameras", body)).json()
    assert record["state"] == "online", record
    assert (await running.call("DELETE", f"/api/v1/cameras/{record['id']}")).status == 200
    # Added again without a login: the one given before went with the camera.
    again = await running.call("POST", "/api/v1/cameras", {"onvif_url": camera.device_url})
    assert again.json()["state"] != "online", again.json()
    assert (await running.call("POST", "/api/v1/cameras", body)).json()["state"] == "online"


async def test_config_camera_keeps_its_id_across_restarts(
    tmp_path: Path, camera: SimCamera
) -> None:
    main = camera.rtsp_url("main")
    entry = CameraConfig(main, "Porch", credentials=Credentials(USER, Secret(PASSWORD)))
    state = tmp_path / "state"
    ids: list[str] = []
    for _run in range(2):
        run = await start_agent(state, (entry,))
        try:
            await wait_for(any_online(run.agent.inventory))
            (cam,) = (await run.call("GET", "/api/v1/cameras")).json()["cameras"]
            assert cam["kind"] == "rtsp" and cam["name"] == "Porch" and "config" in cam["sources"]
            ids.append(cam["id"])
        finally:
            await run.stop()
        run.assert_no_secret()
    assert ids == [expected_id(main)] * 2
    stored = state / "inventory.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    document = json.loads(stored.read_text())
    (saved,) = document["cameras"]
    assert saved["kind"] == "rtsp" and saved["credentials"]["username"] == USER
    assert all(PASSWORD not in p["rtsp_uri"] for p in saved["profiles"])
    # A new password in the config: the same camera, the new credentials.
    renamed = replace(entry, name="Front porch")
    run = await start_agent(state, (renamed,))
    try:
        (cam,) = (await run.call("GET", "/api/v1/cameras")).json()["cameras"]
        assert cam["id"] == ids[0] and cam["name"] == "Front porch"
    finally:
        await run.stop()
    assert os.access(stored, os.R_OK)


async def test_liveness_probes_the_rtsp_port(camera: SimCamera) -> None:
    inventory = Inventory(None)
    creds = Credentials(USER, Secret(PASSWORD))
    record = await inventory.add_rtsp(CameraConfig(camera.rtsp_url("main"), credentials=creds))
    assert record.state == "online", record.reason
    liveness = CameraLiveness(inventory, interval=0.05, timeout=1.0, misses=2)
    task = asyncio.create_task(liveness.run())
    try:
        await asyncio.sleep(0.5)  # ten rounds of probes
        assert record.state == "online", record.reason
        await camera.stop()
        await wait_for(lambda: record.state == "unreachable", 5.0)
        assert str(camera.rtsp_port) in record.reason
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await inventory.close()


@pytest.mark.parametrize(
    ("xaddr", "expected"),
    [
        ("rtsp://127.0.0.1/stream1", ("127.0.0.1", 554)),
        ("RTSP://127.0.0.1:8554/stream1", ("127.0.0.1", 8554)),
        ("http://127.0.0.1/onvif/device_service", ("127.0.0.1", 80)),
        ("https://127.0.0.1/onvif/device_service", ("127.0.0.1", 443)),
        ("rtsp:///no-host", None),
        ("rtsp://127.0.0.1:99999/x", None),
    ],
)
def test_liveness_target_port(xaddr: str, expected: tuple[str, int] | None) -> None:
    assert liveness_target(xaddr) == expected
