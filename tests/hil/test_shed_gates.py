"""Load-shedding gates on real sockets: the local API's snapshot and WebRTC routes, the QR
scanner, and ending every live view at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from agent.api import ApiServer, build_app
from agent.api.openapi import openapi_document
from agent.cloud import qrscan
from agent.cloud.qrscan import QrScanner
from agent.discovery.records import CameraRecord, CameraState
from agent.health.shed import Shedder, ShedPolicy
from agent.media.webrtc import WebRtcSessions
from agent.media.webrtc_sdp import ice_host_addresses
from agent.sim.camera.camera import SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet
from tests.fakes import JPEG, ApiClient, FakeDirectory, FakeLiveView, FakeRecord, SpecChecker

VERSION = "1.2.3"
CAM = "0b7c6a8e-4f1d-4c47-9d7e-3a2b1c0d9e8f"
SNAPSHOT = f"/api/v1/camerasnapshots/{CAM}"
WEBRTC = f"/api/v1/webrtc/{CAM}"
OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=offer\r\nt=0 0\r\n"


def _hot(celsius: float) -> dict[str, Any]:
    return {"system": {"temperature_celsius": celsius, "cpu_percent": 10.0, "throttled": 0}}


class Api:
    def __init__(self, client: ApiClient, shedder: Shedder, live: FakeLiveView) -> None:
        self.client = client
        self.shedder = shedder
        self.live = live


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    shedder = Shedder(ShedPolicy(cooldown=0.0))
    live = FakeLiveView()
    app = build_app(
        FakeDirectory([FakeRecord(CAM)]), version=VERSION, webrtc=live, shed=shedder.denial
    )
    server = ApiServer(app, "127.0.0.1", 0)
    await server.start()
    client = ApiClient(f"http://127.0.0.1:{server.port}", SpecChecker(openapi_document(VERSION)))
    try:
        yield Api(client, shedder, live)
    finally:
        await client.close()
        await server.stop()


async def _offer(api: Api, *, raw: bool = False) -> Any:
    if raw:
        return await api.client.call(
            "POST", WEBRTC, data=OFFER.encode(), headers={"Content-Type": "application/sdp"}
        )
    return await api.client.call("POST", WEBRTC, {"type": "offer", "sdp": OFFER})


def _assert_shed(reply: Any, reason: str) -> None:
    assert reply.status == 503
    assert reply.headers["Retry-After"] == "60"
    body = reply.json()
    assert body["status"] == "temporarily_unavailable"
    assert body["status_code"] == 503
    assert reason in body["detail"]


async def test_api_sheds_snapshot_then_webrtc_and_recovers(api: Api) -> None:
    ok = await api.client.call("GET", SNAPSHOT)
    assert ok.status == 200 and ok.body == JPEG
    assert (await _offer(api)).status == 200

    assert api.shedder.update(_hot(77.5)) == 1
    _assert_shed(await api.client.call("GET", SNAPSHOT), "temperature 77.5 °C above 75.0")
    assert (await _offer(api)).status == 200, "live view is kept at level 1"
    assert (await _offer(api, raw=True)).status == 201

    assert api.shedder.update(_hot(84.0)) == 2
    offers = len(api.live.offers)
    _assert_shed(await _offer(api), "temperature 84.0 °C above 82.0")
    _assert_shed(await _offer(api, raw=True), "temperature 84.0 °C above 82.0")
    _assert_shed(await api.client.call("GET", SNAPSHOT), "temperature 84.0 °C above 82.0")
    assert len(api.live.offers) == offers, "a shed offer never reaches the live view"

    assert api.shedder.update(_hot(60.0)) == 0
    ok = await api.client.call("GET", SNAPSHOT)
    assert ok.status == 200 and ok.body == JPEG and "Retry-After" not in ok.headers
    assert (await _offer(api)).status == 200
    assert len(api.live.offers) == offers + 1


async def test_api_shed_still_checks_camera_id_first(api: Api) -> None:
    api.shedder.update(_hot(90.0))
    bad = await api.client.call("GET", "/api/v1/camerasnapshots/" + "x" * 300)
    assert bad.status == 422


# ---- QR scanner --------------------------------------------------------------------------


class Listener:
    """A loopback TCP server standing in for a camera's RTSP port: counts connections and
    closes each at once (so a stream open fails fast)."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    async def __aenter__(self) -> Listener:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


async def _until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_qr_scanner_opens_no_camera_while_shed_and_resumes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(qrscan, "RESCAN", 0.2)
    monkeypatch.setattr(qrscan, "PAUSE_POLL", 0.2)
    async with Listener() as cam:
        record = CameraRecord(
            "cam-qr",
            f"http://127.0.0.1:{cam.port}/onvif/device_service",
            profiles=[{"rtsp_uri": f"rtsp://127.0.0.1:{cam.port}/sub", "width": 640}],
            state=CameraState.ONLINE,
        )
        allowed = False
        scanner = QrScanner(lambda: [record], window=0.5, allowed=lambda: allowed)
        task = asyncio.create_task(scanner.run())

        def paused() -> bool:
            return scanner.paused

        try:
            await asyncio.sleep(1.5)
            assert cam.connections == 0 and paused()

            allowed = True
            await _until(lambda: cam.connections >= 1, 5.0)
            assert not paused()

            allowed = False
            await _until(paused, 3.0)
            seen = cam.connections
            await asyncio.sleep(2.5)  # longer than the failed camera's first retry delay
            assert cam.connections == seen
            assert scanner.status()["cameras"] == 0

            allowed = True
            await _until(lambda: cam.connections > seen, 15.0)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


# ---- WebRtcSessions.close_all ----------------------------------------------------------------


class Viewer:
    """An aiortc peer receiving H.264 only."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        self.pc.on("track", self._on_track)
        caps = RTCRtpReceiver.getCapabilities("video")
        assert caps is not None
        codecs = [c for c in caps.codecs if c.mimeType in ("video/H264", "video/rtx")]
        self.pc.addTransceiver("video", direction="recvonly").setCodecPreferences(codecs)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if not self.track.done():
            self.track.set_result(track)

    async def offer(self) -> str:
        with ice_host_addresses(("127.0.0.1",)):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def watch(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        async with asyncio.timeout(20):
            await (await self.track).recv()


async def test_close_all_ends_live_views_and_still_answers() -> None:
    sessions = WebRtcSessions(
        max_sessions=2, idle_timeout=5.0, open_timeout=3.0, read_timeout=3.0,
        ice_addresses=("127.0.0.1",),
    )  # fmt: skip
    viewers: list[Viewer] = []
    try:
        async with SimCameraFleet([SimCameraConfig(name="Shed")], discovery_port=None) as fleet:
            url = fleet.cameras[0].rtsp_url("sub").replace("rtsp://", "rtsp://admin:admin@")
            first = Viewer()
            viewers.append(first)
            await first.watch(await sessions.answer(await first.offer(), url))
            assert sessions.count == 1 and sessions.feeds == 1

            await sessions.close_all()
            assert sessions.count == 0 and sessions.feeds == 0
            await _until(lambda: first.pc.connectionState in ("failed", "closed"), 15.0)

            second = Viewer()
            viewers.append(second)
            await second.watch(await sessions.answer(await second.offer(), url))
            assert sessions.count == 1
    finally:
        await sessions.close()
        for v in viewers:
            await v.pc.close()
