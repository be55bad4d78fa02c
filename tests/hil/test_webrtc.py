"""WebRTC live view against a simulated camera, with a real aiortc viewer, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from fractions import Fraction

import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import InvalidArgument, LimitExceeded, Unavailable, Unsupported
from agent.media.h264_feed import (
    TRACK_QUEUE,
    EncodedUnit,
    H264Feed,
    has_sps,
    parameter_sets,
)
from agent.media.webrtc import WebRtcSessions
from agent.media.webrtc_sdp import check_offer, ice_host_addresses
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet

LOOPBACK = ("127.0.0.1",)


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    async with SimCameraFleet([SimCameraConfig(name="Porch")], discovery_port=None) as fleet:
        yield fleet.cameras[0]


def _codecs(*mime: str) -> list[RTCRtpCodecCapability]:
    caps = RTCRtpReceiver.getCapabilities("video")
    assert caps is not None
    return [c for c in caps.codecs if c.mimeType in mime]


def _url(cam: SimCamera, profile: str = "sub") -> str:
    return cam.rtsp_url(profile).replace("rtsp://", "rtsp://admin:admin@")


class Viewer:
    """An aiortc peer that receives H.264 video only."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        self.pc.on("track", self._on_track)
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        transceiver.setCodecPreferences(_codecs("video/H264", "video/rtx"))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if not self.track.done():
            self.track.set_result(track)

    async def offer(self) -> str:
        with ice_host_addresses(LOOPBACK):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def frames(self, n: int, timeout: float = 20.0) -> list[av.VideoFrame]:
        out: list[av.VideoFrame] = []
        async with asyncio.timeout(timeout):
            track = await self.track
            while len(out) < n:
                frame = await track.recv()
                assert isinstance(frame, av.VideoFrame)
                out.append(frame)
        return out


@pytest.fixture
async def sessions() -> AsyncIterator[WebRtcSessions]:
    s = WebRtcSessions(
        max_sessions=2, idle_timeout=5.0, open_timeout=3.0, read_timeout=3.0, ice_addresses=LOOPBACK
    )
    yield s
    await s.close()


def _feed_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "h264-feed"]


def _candidate_addresses(sdp: str) -> set[str]:
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


async def test_live_view_two_viewers_share_camera_and_close_releases_all(
    cam: SimCamera, sessions: WebRtcSessions
) -> None:
    tasks_before = asyncio.all_tasks()
    viewer = Viewer()
    t0 = time.monotonic()
    answer = await sessions.answer(await viewer.offer(), _url(cam))
    assert "H264" in answer
    assert "VP8" not in answer and "opus" not in answer.lower()
    assert _candidate_addresses(answer) == {"127.0.0.1"}
    await viewer.accept(answer)
    first = await viewer.frames(1)
    latency = time.monotonic() - t0
    print(f"first-frame latency {latency * 1000:.0f} ms")
    frames = first + await viewer.frames(20)
    assert all((f.width, f.height) == (640, 360) for f in frames)
    assert latency < 8.0
    assert sessions.count == 1 and sessions.feeds == 1

    second = Viewer()
    await second.accept(await sessions.answer(await second.offer(), _url(cam)))
    frames2 = await second.frames(5)
    assert {(f.width, f.height) for f in frames2} == {(640, 360)}
    assert sessions.count == 2
    assert sessions.feeds == 1, "second viewer must share the camera connection"
    assert len(_feed_threads()) == 1

    with pytest.raises(Unavailable, match="too many"):
        await sessions.answer(await Viewer().offer(), _url(cam))

    await sessions.close()
    await viewer.pc.close()
    await second.pc.close()
    assert sessions.count == 0 and sessions.feeds == 0
    assert _feed_threads() == []
    await asyncio.sleep(0.1)
    left = {t for t in asyncio.all_tasks() - tasks_before if not t.done()}
    current = asyncio.current_task()
    assert current is not None
    left.discard(current)
    assert not left, left


async def test_viewer_leaving_closes_session_and_camera_connection(
    cam: SimCamera, sessions: WebRtcSessions
) -> None:
    viewer = Viewer()
    await viewer.accept(await sessions.answer(await viewer.offer(), _url(cam)))
    await viewer.frames(3)
    await viewer.pc.close()
    async with asyncio.timeout(15):
        while sessions.count or sessions.feeds:
            await asyncio.sleep(0.1)
    assert _feed_threads() == []


async def test_idle_session_is_closed(cam: SimCamera) -> None:
    s = WebRtcSessions(idle_timeout=0.5, open_timeout=3.0, ice_addresses=LOOPBACK)
    try:
        viewer = Viewer()
        viewer.pc.addTransceiver("audio", direction="recvonly")
        # answer never applied: no ICE, so the session stays unconnected
        answer = await s.answer(await viewer.offer(), _url(cam))
        audio = answer.split("m=audio", 1)[1]
        assert "a=inactive" in audio and "a=sendonly" not in audio
        assert s.count == 1
        async with asyncio.timeout(5):
            while s.count or s.feeds or _feed_threads():
                await asyncio.sleep(0.1)
        assert _feed_threads() == []
        await viewer.pc.close()
    finally:
        await s.close()


@pytest.mark.parametrize(
    ("sdp", "error"),
    [
        ("", InvalidArgument),
        ("hello", InvalidArgument),
        ("v=0\r\nm=video\r\n", InvalidArgument),
        ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF x\r\na=rtpmap:x\r\n", InvalidArgument),
        ("v=0\r\n" + "a=x\r\n" * 5000, LimitExceeded),
        ("v=0\r\na=" + "x" * 70000 + "\r\n", LimitExceeded),
        ("v=0\r\n\x00\x01\r\n", InvalidArgument),
    ],
)
async def test_malformed_offer_rejected(sdp: str, error: type[Exception]) -> None:
    s = WebRtcSessions(ice_addresses=LOOPBACK)
    async with asyncio.timeout(5):
        with pytest.raises(error):
            await s.answer(sdp, "rtsp://127.0.0.1:1/none")
    assert s.count == 0 and s.feeds == 0
    await s.close()


async def test_offer_without_h264_rejected() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    t = pc.addTransceiver("video", direction="recvonly")
    t.setCodecPreferences(_codecs("video/VP8"))
    with ice_host_addresses(LOOPBACK):
        await pc.setLocalDescription(await pc.createOffer())
    s = WebRtcSessions(ice_addresses=LOOPBACK)
    with pytest.raises(InvalidArgument, match=r"H\.264"):
        await s.answer(pc.localDescription.sdp, "rtsp://127.0.0.1:1/none")
    await pc.close()
    await s.close()


async def test_h265_stream_is_unsupported(cam: SimCamera, sessions: WebRtcSessions) -> None:
    viewer = Viewer()
    with pytest.raises(Unsupported):
        await sessions.answer(await viewer.offer(), _url(cam, "h265"))
    assert sessions.count == 0 and sessions.feeds == 0
    assert _feed_threads() == []
    await viewer.pc.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP listener that accepts and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    for c in conns:
        c.close()
    srv.close()


async def test_silent_camera_fails_within_timeout(silent_server: int) -> None:
    s = WebRtcSessions(open_timeout=1.5, read_timeout=1.5, ice_addresses=LOOPBACK)
    viewer = Viewer()
    offer = await viewer.offer()
    t0 = time.monotonic()
    with pytest.raises(Unavailable) as info:
        await s.answer(offer, f"rtsp://admin:secretpw@127.0.0.1:{silent_server}/live")
    elapsed = time.monotonic() - t0
    assert elapsed < 6.0, elapsed
    assert "secretpw" not in str(info.value)
    assert s.count == 0 and s.feeds == 0
    assert _feed_threads() == []
    await viewer.pc.close()
    await s.close()


async def test_public_and_mdns_candidates_are_dropped() -> None:
    from agent.media.webrtc_sdp import candidate_allowed

    assert candidate_allowed("a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host")
    assert candidate_allowed("a=candidate:1 1 UDP 2130706431 192.168.1.9 5000 typ host")
    assert not candidate_allowed("a=candidate:1 1 udp 2130706431 8.8.8.8 5000 typ srflx")
    assert not candidate_allowed("a=candidate:1 1 udp 2130706431 abc.local 5000 typ host")
    assert not candidate_allowed("a=candidate:1 1 tcp 2130706431 127.0.0.1 9 typ host")


def test_parameter_sets_from_avcc_and_annexb() -> None:
    sps, pps = b"\x67\x42\xc0\x1e\xaa", b"\x68\xce\x3c\x80"
    avcc = b"\x01\x42\xc0\x1e\xff\xe1" + len(sps).to_bytes(2, "big") + sps
    avcc += b"\x01" + len(pps).to_bytes(2, "big") + pps
    annexb = b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps
    assert parameter_sets(avcc) == annexb
    assert parameter_sets(annexb) == annexb
    assert parameter_sets(b"\x01\x42") == b""
    assert parameter_sets(avcc[:-2]) == b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps[:2]
    assert has_sps(annexb) and not has_sps(b"\x00\x00\x01\x65\x88")


async def test_slow_viewer_queue_is_bounded_and_resyncs_on_keyframe() -> None:
    feed = H264Feed("rtsp://127.0.0.1:1/none")
    track = feed.subscribe()
    tb = Fraction(1, 90000)
    track.push(EncodedUnit(b"\x00\x00\x01\x41", 0, tb, keyframe=False))
    assert track.dropped == 1, "a new viewer starts at a keyframe"
    for i in range(TRACK_QUEUE + 10):
        track.push(EncodedUnit(b"\x00\x00\x01\x65", i, tb, keyframe=i == 0))
    assert track._queue.qsize() <= TRACK_QUEUE
    track.push(EncodedUnit(b"\x00\x00\x01\x41", 999, tb, keyframe=False))
    assert track._queue.empty()
    track.push(EncodedUnit(b"\x00\x00\x01\x65", 1000, tb, keyframe=True))
    packet = await track.recv()
    assert isinstance(packet, av.Packet)
    assert packet.pts == 1000 and bytes(packet) == b"\x00\x00\x01\x65"
    track.stop()
    assert feed.subscribers == 0


@settings(max_examples=200, deadline=None)
@given(
    st.text(max_size=300) | st.binary(max_size=300).map(lambda b: "v=0\r\n" + b.decode("latin-1"))
)
def test_fuzzed_offer_only_raises_typed_errors(text: str) -> None:
    with contextlib.suppress(InvalidArgument, LimitExceeded):
        check_offer(text)
