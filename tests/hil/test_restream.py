"""Restreaming simulated cameras on loopback, watched through FFmpeg (PyAV) and RtspClient.

PyAV calls block, so they run in threads. Hostile "cameras" are raw asyncio servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import av
import pytest
import pytest_asyncio

from agent.errors import (
    AuthError,
    LimitExceeded,
    NotFound,
    ProtocolError,
    Unavailable,
)
from agent.media.hub import SessionHub
from agent.media.restream import Restreamer
from agent.media.rtsp_client import RtspClient
from agent.proto.rtsp import RtspParser, RtspRequest, RtspResponse
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet

pytestmark = pytest.mark.asyncio(loop_scope="module")

USER = "viewer"
PASSWORD = "R3stream-Pass"
SIZES = {"main": (1280, 720), "sub": (640, 360)}


class FleetDirectory:
    """UpstreamDirectory over a simulated fleet: camera ids are the camera names."""

    def __init__(self, cameras: list[SimCamera]) -> None:
        self.cameras = {cam.config.name: cam for cam in cameras}
        self.paused: set[str] = set()
        self.urls: dict[str, str] = {}  # camera id -> URL override (hostile cameras)

    def upstream_url(self, camera_id: str, stream: str) -> str:
        if camera_id in self.urls:
            return self.urls[camera_id]
        cam = self.cameras.get(camera_id)
        if cam is None or stream not in SIZES:
            raise NotFound(f"no stream {camera_id}/{stream}")
        if camera_id in self.paused:
            raise Unavailable(f"camera {camera_id} is paused")
        parts = urlsplit(cam.rtsp_url(stream))
        return urlunsplit(parts._replace(netloc=f"admin:admin@{parts.netloc}"))


@pytest.fixture(autouse=True)
def no_secrets_or_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG, logger="agent")
    yield
    for record in caplog.records:
        text = record.getMessage()
        assert "admin:admin" not in text and PASSWORD not in text, text
        assert record.levelno < logging.ERROR, text


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet() -> AsyncIterator[SimCameraFleet]:
    configs = [SimCameraConfig(name="cam1"), SimCameraConfig(name="cam2")]
    async with SimCameraFleet(configs, discovery_port=None) as fleet:
        yield fleet


@pytest_asyncio.fixture(loop_scope="module")
async def directory(fleet: SimCameraFleet) -> FleetDirectory:
    return FleetDirectory(fleet.cameras)


Make = Callable[..., Awaitable[Restreamer]]


@pytest_asyncio.fixture(loop_scope="module")
async def make_restreamer(directory: FleetDirectory) -> AsyncIterator[Make]:
    started: list[tuple[SessionHub, Restreamer]] = []

    async def make(linger: float = 1.0, timeout: float = 5.0) -> Restreamer:
        hub = SessionHub(
            directory,
            limit_of=lambda _camera_id: 8,
            linger=linger,
            timeout=timeout,
            idle_timeout=timeout,
        )
        restreamer = Restreamer(hub, port=0, username=USER, password=PASSWORD)
        await hub.start()
        await restreamer.start()
        started.append((hub, restreamer))
        return restreamer

    yield make
    for hub, restreamer in started:
        await restreamer.stop()
        await hub.stop()


def with_auth(url: str, user: str = USER, password: str = PASSWORD) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.netloc}"))


def decode(url: str, size: tuple[int, int], frames: int = 50) -> tuple[int, float]:
    """Frames decoded (all of `size`) and the monotonic time of the first one."""
    count, first = 0, 0.0
    options = {"rtsp_transport": "tcp", "timeout": "5000000"}
    with av.open(url, options=options) as container:
        for frame in container.decode(video=0):
            assert (frame.width, frame.height) == size
            if count == 0:
                first = time.monotonic()
            count += 1
            if count >= frames:
                break
    return count, first


async def drain(client: RtspClient, seconds: float) -> None:
    """Read RTP until the client fails (or `seconds` pass: TimeoutError)."""
    async with asyncio.timeout(seconds):
        async for _ in client.packets():
            pass


def session_count(cam: SimCamera) -> int:
    rtsp = cam.rtsp
    return rtsp.session_count if rtsp is not None else 0


async def until(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


class MaxSessions:
    """Samples the camera's RTSP session count while a block runs."""

    def __init__(self, cam: SimCamera) -> None:
        self.cam = cam
        self.max = 0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.max = max(self.max, session_count(self.cam))
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> MaxSessions:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_three_viewers_share_one_upstream(
    fleet: SimCameraFleet, make_restreamer: Make
) -> None:
    cam = fleet.cameras[0]
    restreamer = await make_restreamer()
    url = with_auth(restreamer.url("cam1", "sub"))
    assert "@" not in restreamer.url("cam1", "sub")
    async with MaxSessions(cam) as sessions:
        results = await asyncio.gather(
            *(asyncio.to_thread(decode, url, SIZES["sub"]) for _ in range(3))
        )
    assert [n for n, _ in results] == [50, 50, 50]
    assert sessions.max == 1
    (source,) = restreamer.status()["sources"]
    assert source["camera"] == "cam1" and source["stream"] == "sub"
    assert source["packets"] > 0 and source["bytes"] > 0 and source["upstream"] == "streaming"


async def test_main_and_sub_of_one_camera(fleet: SimCameraFleet, make_restreamer: Make) -> None:
    cam = fleet.cameras[0]
    restreamer = await make_restreamer()
    async with MaxSessions(cam) as sessions:
        results = await asyncio.gather(
            *(
                asyncio.to_thread(decode, with_auth(restreamer.url("cam1", s)), SIZES[s])
                for s in ("main", "sub")
            )
        )
    assert [n for n, _ in results] == [50, 50]
    assert sessions.max == 2
    # The main stream carries the camera's audio track through.
    client = RtspClient(with_auth(restreamer.url("cam1", "main")), timeout=5)
    try:
        tracks = await client.start()
        assert [(t.info.kind, t.info.encoding) for t in tracks] == [
            ("video", "H264"),
            ("audio", "PCMU"),
        ]
        assert "sprop-parameter-sets" in (tracks[0].info.fmtp or {})
        seen: set[int] = set()
        async with asyncio.timeout(5):
            async for index, packet in client.packets():
                seen.add(index)
                assert packet.payload
                if seen == {0, 1}:
                    break
    finally:
        await client.close()


async def raw_describe(url: str, authorization: str | None = None) -> RtspResponse:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        request = RtspRequest("DESCRIBE", url)
        request.headers["CSeq"] = "1"
        if authorization is not None:
            request.headers["Authorization"] = authorization
        writer.write(request.encode())
        parser = RtspParser()
        async with asyncio.timeout(5):
            while True:
                for event in parser.feed(await reader.read(65536)):
                    assert isinstance(event, RtspResponse)
                    return event
    finally:
        writer.close()
        await writer.wait_closed()


async def test_credentials_required(make_restreamer: Make) -> None:
    restreamer = await make_restreamer()
    url = restreamer.url("cam1", "sub")
    response = await raw_describe(url)
    assert response.status == 401
    challenges = response.headers.getall("WWW-Authenticate")
    assert challenges and all(c.startswith("Digest ") for c in challenges)
    basic = "Basic " + __import__("base64").b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert (await raw_describe(url, basic)).status == 401
    for bad in (url, with_auth(url, USER, "wrong"), with_auth(url, "admin", PASSWORD)):
        client = RtspClient(bad, timeout=5)
        with pytest.raises(AuthError) as info:
            await client.start()
        await client.close()
        assert "wrong" not in str(info.value) and PASSWORD not in str(info.value)
    with pytest.raises(av.error.HTTPUnauthorizedError):
        await asyncio.to_thread(decode, with_auth(url, USER, "wrong"), SIZES["sub"])


async def test_unknown_and_paused_are_not_found(
    directory: FleetDirectory, make_restreamer: Make
) -> None:
    restreamer = await make_restreamer()
    directory.paused.add("cam2")
    try:
        for camera, stream in (("nope", "main"), ("cam1", "nope"), ("cam2", "main")):
            client = RtspClient(with_auth(restreamer.url(camera, stream)), timeout=5)
            with pytest.raises(NotFound):
                await client.start()
            await client.close()
        url = with_auth(restreamer.url("cam1", "main")).replace("/cam1/main", "/cam1/main/x")
        client = RtspClient(url, timeout=5)
        with pytest.raises(NotFound):
            await client.start()
        await client.close()
    finally:
        directory.paused.clear()


async def test_close_camera_ends_viewers(fleet: SimCameraFleet, make_restreamer: Make) -> None:
    cam = fleet.cameras[1]
    restreamer = await make_restreamer()
    client = RtspClient(with_auth(restreamer.url("cam2", "sub")), timeout=5)
    try:
        await client.start()
        async with asyncio.timeout(5):
            async for _ in client.packets():
                break
        restreamer.close_camera("cam2")
        with pytest.raises(Unavailable):
            await drain(client, 5)
    finally:
        await client.close()
    assert await until(lambda: session_count(cam) == 0, 3)
    assert restreamer.status()["sources"] == []


async def test_upstream_stops_after_linger(fleet: SimCameraFleet, make_restreamer: Make) -> None:
    cam = fleet.cameras[1]
    restreamer = await make_restreamer(linger=1.5)
    count, _ = await asyncio.to_thread(decode, with_auth(restreamer.url("cam2", "sub")), (640, 360))
    assert count == 50
    assert session_count(cam) == 1  # still lingering
    assert await until(lambda: session_count(cam) == 0, 3)
    assert restreamer.status()["sources"][0]["upstream"] == "idle"


async def test_camera_reboot(fleet: SimCameraFleet, make_restreamer: Make) -> None:
    cam = fleet.cameras[1]
    restreamer = await make_restreamer(linger=10.0, timeout=2.0)
    url = with_auth(restreamer.url("cam2", "sub"))
    assert (await asyncio.to_thread(decode, url, SIZES["sub"], 5))[0] == 5
    async with aiohttp.ClientSession() as http:
        reboot = f"http://127.0.0.1:{cam.port}/sim/reboot"
        async with http.post(reboot, json={"seconds": 2}) as response:
            assert response.status == 202
    assert await until(lambda: not cam.online, 3)
    assert await until(lambda: cam.online, 10)
    back = time.monotonic()
    first: float | None = None
    while first is None and time.monotonic() - back < 10:
        try:
            count, first = await asyncio.to_thread(decode, url, SIZES["sub"])
            assert count == 50
        except av.error.FFmpegError:
            await asyncio.sleep(0.2)
    assert first is not None and first - back < 5.0
    status = restreamer.status()["sources"][0]
    assert status["reconnects"] >= 1 and status["upstream"] == "streaming"


class FakeCamera:
    """A raw TCP "camera" whose behaviour is a coroutine per connection."""

    def __init__(self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]):
        self._handler = handler
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await self._handler(reader, writer)
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"rtsp://admin:admin@127.0.0.1:{port}/live"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()


SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\n"
    b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n"
)


def scripted(
    after_play: bytes, *, repeat: bool = False, methods: list[str] | None = None
) -> Callable[..., Any]:
    """A camera that answers OPTIONS..PLAY properly, then sends `after_play`."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = RtspParser()
        while data := await reader.read(65536):
            for event in parser.feed(data):
                assert isinstance(event, RtspRequest)
                if methods is not None:
                    methods.append(event.method)
                response = RtspResponse(200)
                response.headers["CSeq"] = event.headers["CSeq"]
                response.headers["Session"] = "ABC;timeout=2"
                if event.method == "DESCRIBE":
                    response.body = SDP
                if event.method == "SETUP":
                    response.headers["Transport"] = "RTP/AVP/TCP;unicast;interleaved=0-1"
                writer.write(response.encode())
                if event.method == "PLAY":
                    await writer.drain()
                    await asyncio.sleep(0.1)  # after the client has read the PLAY answer
                    writer.write(after_play)
                    while repeat:
                        for event in parser.feed(await _ready(reader)):
                            if isinstance(event, RtspRequest) and methods is not None:
                                methods.append(event.method)
                        writer.write(after_play)
                        await writer.drain()
                        await asyncio.sleep(0.01)

    return handler


async def _ready(reader: asyncio.StreamReader) -> bytes:
    """Whatever the client sent meanwhile (b"" when nothing)."""
    try:
        async with asyncio.timeout(0.001):
            return await reader.read(65536)
    except TimeoutError:
        return b""


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    await asyncio.sleep(30)


async def junk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    writer.write(b"\x00\xffGARBAGE\x01\x02" * 100)
    await writer.drain()
    await asyncio.sleep(30)


async def huge_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    writer.write(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 99999999\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(30)


async def frame_flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    while True:  # interleaved frames of the largest size, never an answer
        writer.write(b"$\x00\xff\xff" + bytes(65535))
        await writer.drain()
        await asyncio.sleep(0.01)


async def long_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    writer.write(b"RTSP/1.0 200 OK\r\nX: " + b"a" * 100_000)
    await writer.drain()
    await asyncio.sleep(30)


RTCP_ONLY = b"$\x01\x00\x08" + bytes((0x80, 200, 0, 1)) + bytes(4)


@pytest.mark.parametrize(
    ("handler", "error", "stage"),
    [
        (junk, ProtocolError, "start"),
        (huge_body, LimitExceeded, "start"),
        (long_header, LimitExceeded, "start"),
        (silent, Unavailable, "start"),
        (frame_flood, Unavailable, "start"),
        (scripted(RTCP_ONLY, repeat=True), Unavailable, "packets"),
        (scripted(b"$\x00\x00\x04junk" + b"\x00garbage"), ProtocolError, "packets"),
    ],
)
async def test_hostile_camera(
    handler: Callable[..., Any], error: type[Exception], stage: str
) -> None:
    async with FakeCamera(handler) as url:
        client = RtspClient(url, timeout=1.0, idle_timeout=1.0)
        started = time.monotonic()
        try:
            if stage == "packets":
                await client.start()
            with pytest.raises(error) as info:
                await (drain(client, 5) if stage == "packets" else client.start())
            assert "admin:admin" not in str(info.value)
        finally:
            await client.close()
        assert time.monotonic() - started < 4.0


async def test_hostile_camera_behind_restreamer(
    directory: FleetDirectory, make_restreamer: Make, caplog: pytest.LogCaptureFixture
) -> None:
    restreamer = await make_restreamer(timeout=1.0)
    async with FakeCamera(junk) as bad:
        directory.urls["bad"] = bad
        try:
            client = RtspClient(with_auth(restreamer.url("bad", "main")), timeout=5)
            started = time.monotonic()
            with pytest.raises((Unavailable, ProtocolError)):
                await client.start()
            await client.close()
            assert time.monotonic() - started < 3.0
            status = restreamer.status()["sources"][0]
            assert status["last_error"] and "admin:admin" not in status["last_error"]
        finally:
            del directory.urls["bad"]
    # A camera that fails is the camera's fault: answered 503 (or 400), never logged as an error.
    for record in caplog.records:
        assert "admin:admin" not in record.getMessage()
        assert record.levelno < logging.ERROR
    caplog.clear()


async def test_no_leaks_after_many_viewers(fleet: SimCameraFleet, make_restreamer: Make) -> None:
    cam = fleet.cameras[1]
    restreamer = await make_restreamer(linger=0.3)
    url = with_auth(restreamer.url("cam2", "sub"))
    await asyncio.sleep(0.1)
    tasks_before = asyncio.all_tasks()
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        client = RtspClient(url, timeout=5)
        try:
            await client.start()
            async with asyncio.timeout(5):
                async for _ in client.packets():
                    break
        finally:
            await client.close()
    assert await until(lambda: session_count(cam) == 0, 3)
    assert await until(lambda: restreamer.status()["sources"][0]["upstream"] == "idle", 3)
    await asyncio.sleep(0.2)
    leaked = [t for t in asyncio.all_tasks() - tasks_before if t is not asyncio.current_task()]
    assert not leaked
    assert len(os.listdir("/proc/self/fd")) == fds_before


RTP = b"$\x00\x00\x0e" + bytes((0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0x41, 0x9A))


async def test_keepalive_follows_session_timeout() -> None:
    methods: list[str] = []
    async with FakeCamera(scripted(RTP, repeat=True, methods=methods)) as url:
        client = RtspClient(url, timeout=1.0, idle_timeout=1.0)
        try:
            await client.start()
            payloads: list[bytes] = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.5):
                    async for index, packet in client.packets():
                        payloads.append(packet.payload if index == 0 else b"")
        finally:
            await client.close()
    assert len(payloads) > 50 and set(payloads) == {b"\x41\x9a"}
    # Session timeout 2 s: a keep-alive (OPTIONS: no Public header) every second.
    assert methods[:4] == ["OPTIONS", "DESCRIBE", "SETUP", "PLAY"]
    assert methods[4:].count("OPTIONS") >= 2


async def test_a_viewer_keeps_monotonic_time_across_a_camera_reconnect(
    fleet: SimCameraFleet, make_restreamer: Make
) -> None:
    """The camera drops every session; the viewer's session goes on, and the RTP timestamps it
    gets never step back (each reconnect re-anchors after the last timestamp handed out).
    A guard: the simulated camera sends in real time, so the case that broke (a camera sending
    ahead of real time, then reconnecting) is tested in tests/unit/test_restream_timeline.py."""
    cam = fleet.cameras[1]
    restreamer = await make_restreamer(linger=10.0, timeout=3.0)
    client = RtspClient(with_auth(restreamer.url("cam2", "sub")), timeout=5, idle_timeout=5)
    stamps: list[int] = []
    arrived: list[float] = []
    try:
        tracks = await client.start()
        video = next(i for i, t in enumerate(tracks) if t.info.kind == "video")
        dropped_at: float | None = None
        async with asyncio.timeout(20):
            async for index, packet in client.packets():
                if index != video:
                    continue
                stamps.append(packet.timestamp)
                arrived.append(time.monotonic())
                if dropped_at is None and len(stamps) == 100:
                    cam.drop_rtsp_sessions()  # the camera's side only: the viewer stays
                    dropped_at = time.monotonic()
                if dropped_at is not None and time.monotonic() - dropped_at > 3.0:
                    break
    finally:
        await client.close()
    status = restreamer.status()["sources"][0]
    assert status["reconnects"] >= 1  # the upstream did reconnect under the viewer
    deltas = [((b - a + 2**31) % 2**32) - 2**31 for a, b in itertools.pairwise(stamps)]
    assert min(deltas) >= 0, "a timestamp went back"
    after = [t for t in arrived if dropped_at is not None and t > dropped_at + 0.5]
    assert len(after) > 20  # video kept coming on the same session
