"""The RTSP server with simulated camera sources, on loopback, against FFmpeg (PyAV).

PyAV calls block, so they run in threads; a small client built on the project's own parser
checks what FFmpeg does not show (status codes, RTP-Info, stalls, timeouts).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import av
import pytest
import pytest_asyncio
import zxingcpp
from PIL import Image

from agent.media.rtsp_server import RtspServer
from agent.media.source import Fanout, MediaPacket
from agent.proto.h264 import is_keyframe, parse_sprop_parameter_sets
from agent.proto.httpauth import HttpAuthenticator, digest_authorization, parse_challenges
from agent.proto.rtp import H264Depacketizer, RtpPacket
from agent.proto.rtsp import (
    InterleavedFrame,
    RtspParser,
    RtspRequest,
    RtspResponse,
    parse_rtp_info,
    parse_session,
    parse_transport,
)
from agent.proto.sdp import SessionDescription
from agent.sim.camera import video
from agent.sim.camera.video import EncoderSettings, Overlay, VideoSource

pytestmark = pytest.mark.asyncio(loop_scope="module")

USER = "admin"
PASSWORD = "s3cret-Pass"
QR_TEXT = "https://example.com/activate?token=7f3a9c2e51d04b86"
MAIN = EncoderSettings("H264", 1280, 720, 25, 2000, 50)
SUB = EncoderSettings("H264", 640, 360, 15, 500, 30)


@dataclass
class Camera:
    server: RtspServer
    sources: dict[str, VideoSource]

    def url(self, path: str, password: str = PASSWORD) -> str:
        return f"rtsp://{USER}:{password}@127.0.0.1:{self.server.port}{path}"


@pytest.fixture(autouse=True)
def no_error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a test during which anything (asyncio included) logged an error."""
    caplog.set_level(logging.INFO)
    yield
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def camera() -> AsyncIterator[Camera]:
    sources = {
        "/main": VideoSource("main", MAIN, lambda: Overlay(("Camera main",)), audio=True),
        "/sub": VideoSource("sub", SUB, lambda: Overlay(("Camera sub",), QR_TEXT)),
        "/h265": VideoSource(
            "h265", EncoderSettings("H265", 640, 360, 15, 500, 30), lambda: Overlay(())
        ),
        "/reconf": VideoSource("reconf", SUB, lambda: Overlay(("PTZ p=0.1 t=0.2 z=0.0",))),
        "/idle": VideoSource("idle", SUB, lambda: Overlay(())),
    }
    auth = HttpAuthenticator("Camera", {USER: PASSWORD}.get)
    server = RtspServer(
        host="127.0.0.1", port=0, resolve=sources.get, auth=auth, request_timeout=1.0
    )
    await server.start()
    yield Camera(server, sources)
    await server.stop()
    for source in sources.values():
        await source.close()
    assert not any(source.running for source in sources.values())


@dataclass
class Watched:
    sizes: list[tuple[int, int]] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)
    audio_frames: int = 0
    codecs: list[str] = field(default_factory=list)
    audio_rate: int = 0
    last: av.VideoFrame | None = None


def watch(
    url: str,
    frames: int,
    *,
    tcp: bool = True,
    stop: threading.Event | None = None,
    on_frame: Callable[[av.VideoFrame], None] | None = None,
) -> Watched:
    """Decode `frames` video frames (or until `stop`) with FFmpeg; blocking."""
    seen = Watched()
    options = {"rtsp_transport": "tcp"} if tcp else {}
    with av.open(url, options=options, timeout=10) as container:
        seen.codecs = [s.codec_context.name for s in container.streams]
        for packet in container.demux():
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    seen.sizes.append((frame.width, frame.height))
                    seen.stamps.append(time.monotonic())
                    seen.last = frame
                    if on_frame is not None:
                        on_frame(frame)
                elif isinstance(frame, av.AudioFrame):
                    seen.audio_frames += 1
                    seen.audio_rate = frame.sample_rate
            if len(seen.sizes) >= frames or (stop is not None and stop.is_set()):
                break
    return seen


def max_gap(stamps: list[float]) -> float:
    return max(b - a for a, b in itertools.pairwise(stamps))


async def until(condition: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition still false after {within} s")
        await asyncio.sleep(0.05)


class RawClient:
    """A minimal RTSP client on the project's parser, with Digest auth."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str
    ) -> None:
        self.host = f"[{host}]" if ":" in host else host
        self.writer = writer
        self.parser = RtspParser()
        self.responses: asyncio.Queue[RtspResponse] = asyncio.Queue()
        self.frames: list[InterleavedFrame] = []
        self.closed = asyncio.Event()
        self.cseq = 0
        self.challenge: str | None = None
        self.nc = 0
        self.reading = asyncio.create_task(self._read(reader))

    @classmethod
    async def connect(
        cls, port: int, *, host: str = "127.0.0.1", rcvbuf: int | None = None
    ) -> RawClient:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        return cls(*await asyncio.open_connection(sock=sock), host)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(65536):
                for event in self.parser.feed(data):
                    if isinstance(event, InterleavedFrame):
                        self.frames.append(event)
                    elif isinstance(event, RtspResponse):
                        self.responses.put_nowait(event)
        except ConnectionError:
            pass
        finally:
            self.closed.set()

    async def request(
        self, method: str, uri: str, headers: dict[str, str] | None = None, *, auth: bool = True
    ) -> RtspResponse:
        for _ in range(2):
            self.cseq += 1
            req = RtspRequest(method, uri)
            req.headers["CSeq"] = str(self.cseq)
            for name, value in (headers or {}).items():
                req.headers[name] = value
            if auth and self.challenge is not None:
                self.nc += 1
                req.headers["Authorization"] = digest_authorization(
                    USER, PASSWORD, method, uri, self.challenge, nc=self.nc
                )
            self.writer.write(req.encode())
            response = await asyncio.wait_for(self.responses.get(), 5)
            assert response.cseq == self.cseq
            if response.status != 401 or not auth:
                return response
            self.challenge = next(
                v for v in response.headers.getall("WWW-Authenticate") if v.startswith("Digest")
            )
            self.nc = 0
        return response

    async def play(self, port: int, path: str, tracks: int = 1) -> tuple[str, str, RtspResponse]:
        """DESCRIBE, SETUP `tracks` tracks and PLAY; return (base URL, session, PLAY reply)."""
        described = await self.request("DESCRIBE", f"rtsp://{self.host}:{port}{path}")
        assert described.status == 200
        base = described.headers["Content-Base"]
        session: dict[str, str] = {}
        for index in range(tracks):
            transport = f"RTP/AVP/TCP;unicast;interleaved={2 * index}-{2 * index + 1}"
            reply = await self.request(
                "SETUP", f"{base}trackID={index}", {"Transport": transport, **session}
            )
            assert reply.status == 200
            session = {"Session": parse_session(reply.headers["Session"])[0]}
        played = await self.request("PLAY", base, session)
        assert played.status == 200
        return base, session["Session"], played

    async def close(self) -> None:
        self.writer.close()
        self.reading.cancel()
        await asyncio.gather(self.reading, return_exceptions=True)


async def test_main_stream_video_and_audio_while_a_viewer_stalls(camera: Camera) -> None:
    # A viewer that stops reading must not slow the others on the same source.
    stuck = await RawClient.connect(camera.server.port, rcvbuf=4096)
    await stuck.play(camera.server.port, "/main", tracks=2)
    stuck.reading.cancel()
    seen = await asyncio.to_thread(watch, camera.url("/main"), 50)
    assert seen.codecs == ["h264", "pcm_mulaw"]
    assert len(seen.sizes) >= 50
    assert set(seen.sizes) == {(1280, 720)}
    assert seen.audio_frames >= 10
    assert seen.audio_rate == 8000
    assert max_gap(seen.stamps) < 0.5
    await stuck.close()


async def test_sub_stream_shows_a_readable_qr_code(camera: Camera) -> None:
    seen = await asyncio.to_thread(watch, camera.url("/sub"), 50)
    assert seen.codecs == ["h264"]
    assert len(seen.sizes) >= 50
    assert set(seen.sizes) == {(640, 360)}
    assert seen.last is not None
    codes = zxingcpp.read_barcodes(seen.last.to_ndarray(format="gray"))
    assert [c.text for c in codes] == [QR_TEXT]


async def test_wrong_password_is_refused(camera: Camera, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(av.error.HTTPUnauthorizedError):
        await asyncio.to_thread(watch, camera.url("/sub", password="guess-Pass"), 1)
    assert camera.server.session_count == 0
    text = caplog.text
    assert "guess-Pass" not in text
    assert PASSWORD not in text
    assert "response=" not in text


async def test_two_viewers_at_once(camera: Camera) -> None:
    first, second = await asyncio.gather(
        asyncio.to_thread(watch, camera.url("/sub"), 30),
        asyncio.to_thread(watch, camera.url("/sub"), 30),
    )
    for seen in (first, second):
        assert len(seen.sizes) >= 30
        assert set(seen.sizes) == {(640, 360)}


async def test_reconfigure_reaches_live_and_new_viewers(camera: Camera) -> None:
    source = camera.sources["/reconf"]
    smaller = EncoderSettings("H264", 480, 272, 15, 300, 15)
    reconfigured = threading.Event()
    loop = asyncio.get_running_loop()

    def on_frame(frame: av.VideoFrame) -> None:
        if not reconfigured.is_set():
            reconfigured.set()
            loop.call_soon_threadsafe(source.reconfigure, smaller)

    live = await asyncio.to_thread(watch, camera.url("/reconf"), 30, on_frame=on_frame)
    assert live.sizes[0] == (640, 360)
    assert live.sizes[-1] == (480, 272)
    fresh = await asyncio.to_thread(watch, camera.url("/reconf"), 5)
    assert set(fresh.sizes) == {(480, 272)}


async def test_h265_source_decodes(camera: Camera) -> None:
    seen = await asyncio.to_thread(watch, camera.url("/h265"), 20)
    assert seen.codecs == ["hevc"]
    assert set(seen.sizes) == {(640, 360)}


async def test_clients_falling_back_from_udp_get_tcp(camera: Camera) -> None:
    seen = await asyncio.to_thread(watch, camera.url("/sub"), 10, tcp=False)
    assert set(seen.sizes) == {(640, 360)}


async def test_snapshot_jpeg(camera: Camera) -> None:
    data = await camera.sources["/sub"].snapshot_jpeg()
    image = Image.open(io.BytesIO(data))
    assert (image.format, image.size) == ("JPEG", (640, 360))
    assert [c.text for c in zxingcpp.read_barcodes(image)] == [QR_TEXT]


async def _hostile(port: int, payload: bytes, *, trickle: float = 0.0) -> tuple[bytes, float]:
    """Send `payload` (a byte per `trickle` seconds if set); return the reply and time to close."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = b""
    try:
        if trickle:
            sender = asyncio.create_task(_trickle(writer, payload, trickle))
        else:
            writer.write(payload)
        async with asyncio.timeout(6):
            while chunk := await reader.read(65536):
                data += chunk
    except ConnectionError:
        pass
    finally:
        if trickle:
            sender.cancel()
        writer.close()
    return data, time.monotonic() - start


async def _trickle(writer: asyncio.StreamWriter, payload: bytes, interval: float) -> None:
    try:
        for i in range(len(payload)):
            writer.write(payload[i : i + 1])
            await asyncio.sleep(interval)
    except ConnectionError:
        pass


async def test_hostile_clients_do_not_disturb_a_viewer(camera: Camera) -> None:
    stop = threading.Event()
    frames: list[av.VideoFrame] = []
    viewer = asyncio.create_task(
        asyncio.to_thread(watch, camera.url("/sub"), 10_000, stop=stop, on_frame=frames.append)
    )
    await until(lambda: viewer.done() or len(frames) >= 5, 10)
    start = time.monotonic()
    port = camera.server.port
    results = await asyncio.gather(
        _hostile(port, b"\xff" + os.urandom(4000)),
        _hostile(port, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + os.urandom(64)),
        _hostile(port, b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX-Big: " + b"a" * 1_000_000),
        _hostile(port, b"DESCRIBE rtsp://127.0.0.1/sub RTSP/1.0\r\nCSeq: 2\r\n"),
        _hostile(port, b"OPTIONS * RTSP/1.0\r\nCSeq: 3\r\nX-Slow: " + b"s" * 100, trickle=0.1),
    )
    end = time.monotonic()
    await asyncio.sleep(0.5)
    stop.set()
    seen = await viewer
    stamps = [s for s in seen.stamps if start <= s <= end]
    (garbage, t1), (tls, t2), (huge, t3), (half, t4), (slow, t5) = results
    assert garbage.startswith(b"RTSP/1.0 400 ")
    assert tls.startswith(b"RTSP/1.0 400 ")
    assert huge in (b"",) or huge.startswith(b"RTSP/1.0 400 ")
    assert max(t1, t2, t3) < 1.0
    assert half.startswith(b"RTSP/1.0 408 ")
    assert slow.startswith(b"RTSP/1.0 408 ")
    assert 0.9 < t4 < 3.0
    assert 0.9 < t5 < 3.0  # bytes keep coming, but the request must be complete in time
    assert len(stamps) >= 15 * (end - start) * 0.7
    assert max_gap(stamps) < 0.5


async def test_rtp_info_inband_parameter_sets_stall_and_drop(camera: Camera) -> None:
    port = camera.server.port
    client = await RawClient.connect(port)
    base, session, played = await client.play(port, "/sub")
    described = await client.request("DESCRIBE", base)
    sdp = SessionDescription.parse(described.body)
    sprop = parse_sprop_parameter_sets(sdp.media[0].fmtps[96]["sprop-parameter-sets"])
    [info] = parse_rtp_info(played.headers["RTP-Info"])
    assert info.url == f"{base}trackID=0"
    await until(lambda: len(client.frames) >= 30, 5)
    assert {f.channel for f in client.frames} == {0, 1}  # RTP and RTCP
    packets = [RtpPacket.parse(f.payload) for f in client.frames if f.channel == 0]
    report = next(f.payload for f in client.frames if f.channel == 1)
    _, kind, _, ssrc, _, _, sr_time = struct.unpack_from("!BBHIIII", report)
    assert (kind, ssrc) == (200, packets[0].ssrc)
    assert abs((sr_time - packets[0].timestamp + 2**31) % 2**32 - 2**31) < 90000
    assert packets[0].sequence == info.seq
    assert 0 <= (packets[0].timestamp - (info.rtptime or 0)) % 2**32 < 90000
    depack = H264Depacketizer()
    units = [u for p in packets for u in depack.feed(p)]
    assert depack.lost == 0
    assert is_keyframe("H264", units[0].nals)
    assert list(units[0].nals[:2]) == sprop  # in-band SPS/PPS match the SDP

    camera.server.stall_rtp = True
    await asyncio.sleep(0.3)
    client.frames = [f for f in client.frames if f.channel == 0]
    count = len(client.frames)
    await asyncio.sleep(1.0)
    assert len(client.frames) == count
    alive = await client.request("GET_PARAMETER", base, {"Session": session})
    assert alive.status == 200
    assert not client.closed.is_set()

    camera.server.stall_rtp = False
    await until(lambda: len(client.frames) > count + 10, 5)
    client.frames = [f for f in client.frames if f.channel == 0]
    before, resumed = (RtpPacket.parse(f.payload) for f in client.frames[count - 1 : count + 1])
    assert resumed.payload[0] & 0x1F == 7  # sending resumes at a keyframe, SPS first
    assert resumed.sequence == (before.sequence + 1) % 2**16  # nothing was stamped meanwhile

    camera.server.drop_all_sessions()
    await asyncio.wait_for(client.closed.wait(), 2)
    await until(lambda: camera.server.session_count == 0, 2)
    await client.close()


async def test_status_codes(camera: Camera) -> None:
    port = camera.server.port
    root = f"rtsp://127.0.0.1:{port}"
    client = await RawClient.connect(port)
    options = await client.request("OPTIONS", f"{root}/main", auth=False)
    assert options.status == 200
    assert "SETUP" in options.headers["Public"]
    assert options.headers["Server"]
    assert options.headers["Date"].endswith("GMT")
    denied = await client.request("DESCRIBE", f"{root}/main", auth=False)
    assert denied.status == 401
    challenges = parse_challenges(denied.headers.getall("WWW-Authenticate"))
    assert [s for s, _ in challenges] == ["Digest", "Basic"]

    async def status(method: str, path: str, **headers: str) -> int:
        reply = await client.request(
            method, root + path, {k.replace("_", "-"): v for k, v in headers.items()}
        )
        return reply.status

    tcp = "RTP/AVP/TCP;unicast;interleaved=0-1"
    assert await status("DESCRIBE", "/nowhere") == 404
    assert await status("PLAY", "/main/", Session="DEADBEEF") == 454
    assert await status("PLAY", "/main/") == 454
    assert (
        await status("SETUP", "/main/trackID=0", Transport="RTP/AVP;unicast;client_port=5000-5001")
        == 461
    )
    assert await status("SETUP", "/main/trackID=0", Transport="RTP/AVP/TCP;multicast") == 461
    assert await status("SETUP", "/main", Transport=tcp) == 459
    assert await status("SETUP", "/main/trackID=7", Transport=tcp) == 404
    assert await status("SETUP", "/main/trackID=0", Transport="garbage") == 400
    assert await status("ANNOUNCE", "/main") == 501
    assert await status("OPTIONS", "/main", Require="implicit-play") == 551

    first = await client.request("SETUP", f"{root}/main/trackID=0", {"Transport": tcp})
    assert first.status == 200
    ident, timeout = parse_session(first.headers["Session"])
    assert timeout == 60
    assert parse_transport(first.headers["Transport"])[0].interleaved == (0, 1)
    second = await client.request(
        "SETUP", f"{root}/main/trackID=1", {"Transport": tcp, "Session": ident}
    )
    assert parse_transport(second.headers["Transport"])[0].interleaved == (2, 3)
    assert camera.server.session_count == 1
    assert await status("SETUP", "/sub/trackID=0", Transport=tcp, Session=ident) == 455
    assert await status("PLAY", "/main/trackID=0", Session=ident) == 460
    played = await client.request("PLAY", f"{root}/main/", {"Session": ident})
    assert played.status == 200
    assert len(parse_rtp_info(played.headers["RTP-Info"])) == 2
    assert await status("SET_PARAMETER", "/main/", Session=ident) == 200
    assert await status("PAUSE", "/main/", Session=ident) == 200
    assert await status("TEARDOWN", "/main/", Session=ident) == 200
    assert await status("PLAY", "/main/", Session=ident) == 454
    assert camera.server.session_count == 0

    client.writer.write(b"OPTIONS * RTSP/2.0\r\nCSeq: 100\r\n\r\n")
    assert (await asyncio.wait_for(client.responses.get(), 5)).status == 505
    client.writer.write(b"OPTIONS * RTSP/1.0\r\n\r\n")
    missing = await asyncio.wait_for(client.responses.get(), 5)
    assert (missing.status, missing.cseq) == (400, None)
    await client.close()


async def test_session_timeout_and_connection_close_end_sessions() -> None:
    source = VideoSource("timeout", SUB, lambda: Overlay(()))
    server = RtspServer(
        host="127.0.0.1", port=0, resolve={"/cam": source}.get, auth=None, session_timeout=1.0
    )
    await server.start()
    try:
        client = await RawClient.connect(server.port)
        setup = await client.request(
            "SETUP",
            f"rtsp://127.0.0.1:{server.port}/cam/trackID=0",
            {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"},
        )
        ident, timeout = parse_session(setup.headers["Session"])
        assert timeout == 1
        for _ in range(5):  # keep-alives hold the session open past its timeout
            await asyncio.sleep(0.4)
            keep = await client.request("GET_PARAMETER", "*", {"Session": ident})
            assert keep.status == 200
        assert server.session_count == 1
        await asyncio.wait_for(client.closed.wait(), 3)  # silence: torn down, connection closed
        assert server.session_count == 0
        await client.close()

        other = await RawClient.connect(server.port)
        await other.request(
            "SETUP",
            f"rtsp://127.0.0.1:{server.port}/cam/trackID=0",
            {"Transport": "RTP/AVP/TCP;unicast"},
        )
        assert server.session_count == 1
        await other.close()
        await until(lambda: server.session_count == 0, 2)
    finally:
        await server.stop()
        await source.close()


async def test_ipv6_loopback() -> None:
    source = VideoSource("v6", SUB, lambda: Overlay(()))
    server = RtspServer(host="::1", port=0, resolve={"/cam": source}.get, auth=None)
    await server.start()
    try:
        client = await RawClient.connect(server.port, host="::1")
        base, _, _ = await client.play(server.port, "/cam")
        assert base == f"rtsp://[::1]:{server.port}/cam/"
        described = await client.request("DESCRIBE", base)
        assert SessionDescription.parse(described.body).origin.address == "::1"
        await until(lambda: len(client.frames) >= 5, 5)
        await client.close()
    finally:
        await server.stop()
        await source.close()


async def test_connection_limit() -> None:
    server = RtspServer(
        host="127.0.0.1", port=0, resolve=lambda path: None, auth=None, max_connections=1
    )
    await server.start()
    try:
        first = await RawClient.connect(server.port)
        assert (await first.request("OPTIONS", "*")).status == 200
        refused, elapsed = await _hostile(server.port, b"")
        assert refused.startswith(b"RTSP/1.0 503 ")
        assert elapsed < 1.0
        assert (await first.request("OPTIONS", "*")).status == 200
        await first.close()
    finally:
        await server.stop()


async def test_encoder_runs_only_while_watched(
    camera: Camera, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(video, "IDLE_LINGER", 0.3)
    source = camera.sources["/idle"]
    before = source.running
    port = camera.server.port
    client = await RawClient.connect(port)
    base, session, _ = await client.play(port, "/idle")
    await until(lambda: len(client.frames) >= 5, 5)
    assert (before, source.running) == (False, True)
    assert (await client.request("TEARDOWN", base, {"Session": session})).status == 200
    await until(lambda: not source.running, 3)
    await client.close()


async def test_slow_subscriber_drops_to_the_next_keyframe() -> None:
    needed: list[str] = []
    fanout = Fanout(
        on_active=lambda: needed.append("active"),
        on_idle=lambda: needed.append("idle"),
        on_keyframe_needed=lambda: needed.append("keyframe"),
        max_packets=10,
    )
    slow, fast = fanout.subscribe(), fanout.subscribe()
    assert needed == ["active", "keyframe", "keyframe"]

    def unit(key: bool, n: int) -> list[MediaPacket]:
        return [MediaPacket(0, b"x" * 100, n, i == 3, key and i == 0) for i in range(4)]

    fanout.publish(unit(False, 0))  # nobody is in sync yet: dropped
    fanout.publish(unit(True, 1))
    assert len(fast) == len(slow) == 4
    assert [p.timestamp for p in await fast.get()] == [1] * 4
    fanout.publish(unit(False, 2))
    fanout.publish(unit(False, 3))  # the slow queue overflows: emptied, waits for a keyframe
    assert len(slow) == 0
    assert slow.overflows == 1
    assert needed == ["active", "keyframe", "keyframe", "keyframe"]
    assert [p.timestamp for p in await fast.get()] == [2] * 4 + [3] * 4
    fanout.publish(unit(False, 4))
    assert len(slow) == 0
    fanout.publish(unit(True, 5))
    assert [p.timestamp for p in await slow.get()] == [5] * 4
    assert [p.timestamp for p in await fast.get()] == [4] * 4 + [5] * 4
    assert fast.overflows == 0
    slow.close()
    fast.close()
    assert needed[-1:] == ["idle"]
    assert await fast.get() == []
