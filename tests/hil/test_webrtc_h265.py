"""WebRTC live view of H.265 cameras, through the local API, the inventory's stream choice and
real aiortc viewers, against simulated cameras on loopback.

- "AllH265": a camera added by RTSP URL whose only stream is H.265 640x360 (the simulated
  camera's `/live/h265`): transcoded to H.264, one encoder for all its viewers.
- "Hanwha": the persona with an H.265 1280x720 main stream and an H.264 640x360 sub stream:
  the sub is played as it is to a viewer offering H.264 only; a viewer whose offer lists H.265
  gets the main stream's H.265 passed through. That viewer is go2rtc (AlexxIT/go2rtc at
  dc1685e, the binary in `../shared/peers/`), whose WHEP client offers H.265
  (pkg/webrtc/api.go); its RTSP server's output is read back with PyAV.

One test runs the whole agent, whose live view reads cameras through the session hub; the
last ones drive the H.264 encoder alone with synthetic pictures.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest

from agent.api import ApiServer, build_app
from agent.config import CameraConfig
from agent.discovery.inventory import Inventory
from agent.discovery.records import CameraState
from agent.health.shed import Shedder, ShedPolicy
from agent.media.transcode import H264Encoder
from agent.media.webrtc import WebRtcSessions
from agent.secret import Credentials
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.fleet import SimCameraFleet
from tests.hil.test_webrtc import LOOPBACK, Viewer
from tests.peers.go2rtc import GO2RTC, go2rtc
from tests.world import SimCameraSpec, World, wait_until

pytestmark = pytest.mark.timeout(90)

LOGIN = Credentials("admin", "admin")


@dataclass
class Rig:
    all_h265: SimCamera
    hanwha: SimCamera
    all_h265_id: str
    hanwha_id: str
    inventory: Inventory
    sessions: WebRtcSessions
    shedder: Shedder
    http: aiohttp.ClientSession
    base: str

    async def offer(self, cid: str, viewer: Viewer, *, h265: bool = False) -> tuple[int, Any]:
        sdp = await viewer.offer()
        if h265:
            sdp = _offer_h265_first(sdp)
        async with self.http.post(
            f"{self.base}/api/v1/webrtc/{cid}", json={"type": "offer", "sdp": sdp}
        ) as r:
            return r.status, await r.json()

    async def watch(self, cid: str, *, h265: bool = False) -> Viewer:
        viewer = Viewer()
        status, body = await self.offer(cid, viewer, h265=h265)
        assert status == 200, body
        assert "H264" in body["sdp"] and "H265" not in body["sdp"]
        await viewer.accept(body["sdp"])
        return viewer


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    configs = [SimCameraConfig(name="AllH265"), SimCameraConfig(persona="hanwha")]
    async with SimCameraFleet(configs, discovery_port=None) as fleet:
        all_h265, hanwha = fleet.cameras
        inventory = Inventory(None, default_credentials=[LOGIN], recheck_interval=3600.0)
        rec = await inventory.add_rtsp(
            CameraConfig(all_h265.rtsp_url("h265"), "AllH265", credentials=LOGIN)
        )
        assert rec.state is CameraState.ONLINE, rec.reason
        assert [p["encoding"] for p in rec.profiles] == ["H265"]
        onvif = await inventory.add_onvif(hanwha.device_url)
        assert onvif.state is CameraState.ONLINE, onvif.reason
        shedder = Shedder(ShedPolicy(cooldown=0.0))
        sessions = WebRtcSessions(
            max_sessions=4,
            idle_timeout=5.0,
            open_timeout=3.0,
            read_timeout=3.0,
            ice_addresses=LOOPBACK,
            transcode_allowed=lambda: shedder.allows("transcode"),
        )
        app = build_app(inventory, version="test", webrtc=sessions, shed=shedder.denial)
        api = ApiServer(app, "127.0.0.1", 0)
        await api.start()
        http = aiohttp.ClientSession()
        try:
            yield Rig(
                all_h265,
                hanwha,
                rec.id,
                onvif.id,
                inventory,
                sessions,
                shedder,
                http,
                f"http://127.0.0.1:{api.port}",
            )
        finally:
            await http.close()
            await api.stop()
            await sessions.close()
            await inventory.close()


def _offer_h265_first(sdp: str) -> str:
    """The offer as a browser that receives H.265 in WebRTC makes it: H.265 listed first."""
    lines = sdp.split("\r\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("m=video "))
    words = lines[at].split(" ")
    lines[at] = " ".join([*words[:3], "49", *words[3:]])
    lines[at + 1 : at + 1] = [
        "a=rtpmap:49 H265/90000",
        "a=fmtp:49 level-id=93;profile-id=1;tier-flag=0;tx-mode=SRST",
    ]
    return "\r\n".join(lines)


def _threads(name: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name == name)


def _camera_sessions(cam: SimCamera) -> Counter[str]:
    """RTSP sessions open at the simulated camera, by stream path (the camera's own state)."""
    rtsp = cam.rtsp
    assert rtsp is not None
    return Counter(session.path for session, _conn in rtsp._sessions.values())


async def test_all_h265_camera_is_transcoded_once_for_two_viewers(rig: Rig) -> None:
    first = await rig.watch(rig.all_h265_id)
    frames = await first.frames(5)
    assert {(f.width, f.height) for f in frames} == {(640, 360)}
    assert rig.sessions.encoders == 1 and _threads("h264-encode") == 1

    second = await rig.watch(rig.all_h265_id)
    assert {(f.width, f.height) for f in await second.frames(3)} == {(640, 360)}
    assert rig.sessions.count == 2
    assert rig.sessions.feeds == 1 and rig.sessions.encoders == 1, "viewers share one encoder"
    assert _threads("h264-encode") == 1 and _threads("h264-feed") == 1
    assert _camera_sessions(rig.all_h265) == Counter({"/live/h265": 1})

    await first.pc.close()
    await wait_until(lambda: rig.sessions.count == 1, 15)
    assert rig.sessions.encoders == 1, "the encoder stays while a viewer watches"
    assert len(await second.frames(3)) == 3

    await second.pc.close()
    await wait_until(lambda: rig.sessions.count == 0, 15)
    assert rig.sessions.feeds == 0 and rig.sessions.encoders == 0
    await wait_until(lambda: _threads("h264-encode") == 0 and _threads("h264-feed") == 0, 10)
    await wait_until(lambda: not _camera_sessions(rig.all_h265), 10)


async def test_h265_main_h264_sub_camera_plays_the_sub_as_it_is(rig: Rig) -> None:
    # a viewer offering H.264 only gets the H.264 sub stream, passed through
    viewer = await rig.watch(rig.hanwha_id)
    frames = await viewer.frames(3)
    assert {(f.width, f.height) for f in frames} == {(640, 360)}
    assert rig.sessions.feeds == 1 and rig.sessions.encoders == 0
    assert _threads("h264-encode") == 0
    assert _camera_sessions(rig.hanwha) == Counter({"/profile3/media.smp": 1})
    await viewer.pc.close()


def _video_codecs(sdp: str) -> list[str]:
    """The rtpmap names of an SDP's first video section."""
    section = sdp.split("m=video ", 1)[1].split("\r\nm=", 1)[0]
    return [line.split(" ", 1)[1] for line in section.split("\r\n") if line.startswith("a=rtpmap:")]


async def test_offer_listing_h265_is_answered_with_the_h265_main_only(rig: Rig) -> None:
    assert rig.sessions.h265, "aiortc 1.16 takes the H.265 registration"
    offerers = [Viewer(), Viewer()]  # their offers only: aiortc cannot decode H.265
    status, body = await rig.offer(rig.hanwha_id, offerers[0], h265=True)
    assert status == 200, body
    assert _video_codecs(body["sdp"]) == ["H265/90000"]
    assert rig.sessions.encoders == 0
    assert _camera_sessions(rig.hanwha) == Counter({"/profile2/media.smp": 1})
    # the all-H.265 camera too: its only stream passed through, no transcode
    status, body = await rig.offer(rig.all_h265_id, offerers[1], h265=True)
    assert status == 200, body
    assert _video_codecs(body["sdp"]) == ["H265/90000"]
    assert rig.sessions.encoders == 0 and rig.sessions.feeds == 2
    # an H.264-only viewer of that camera meanwhile: a transcode of the same URL, its own feed
    viewer = await rig.watch(rig.all_h265_id)
    assert {(f.width, f.height) for f in await viewer.frames(3)} == {(640, 360)}
    assert rig.sessions.encoders == 1 and rig.sessions.feeds == 3
    assert _camera_sessions(rig.all_h265) == Counter({"/live/h265": 2})
    await rig.sessions.close_all()
    assert rig.sessions.feeds == 0
    for v in (*offerers, viewer):
        await v.pc.close()


@dataclass
class Reading:
    codec: str
    sizes: set[tuple[int, int]]
    rate: float  # frames per second of stream time
    frames: int


def _read_rtsp(url: str, count: int) -> Reading:
    """Decode `count` pictures of an RTSP stream (in a thread: PyAV blocks)."""
    with av.open(url, options={"rtsp_transport": "tcp"}, timeout=(10.0, 10.0)) as container:
        stream = container.streams.video[0]
        times: list[float] = []
        sizes: set[tuple[int, int]] = set()
        for frame in container.decode(stream):
            if frame.pts is None or frame.time_base is None:
                continue
            times.append(float(frame.pts * frame.time_base))
            sizes.add((frame.width, frame.height))
            if len(times) >= count:
                break
        span = max(times) - min(times)
        return Reading(stream.codec_context.name, sizes, (len(times) - 1) / span, len(times))


@pytest.mark.skipif(not GO2RTC.exists(), reason="needs go2rtc in ../shared/peers")
async def test_go2rtc_receives_the_h265_main_passed_through(rig: Rig, tmp_path: Path) -> None:
    source = f"webrtc:{rig.base}/api/v1/webrtc/{rig.hanwha_id}"
    async with go2rtc(tmp_path, source, webrtc=True, log_level="debug") as peer:
        reading = asyncio.create_task(asyncio.to_thread(_read_rtsp, peer.rtsp, 45))
        await wait_until(lambda: rig.sessions.count == 1 or reading.done(), 20)
        assert rig.sessions.count == 1 and rig.sessions.feeds == 1
        assert rig.sessions.encoders == 0 and _threads("h264-encode") == 0, "no transcoder"
        assert _camera_sessions(rig.hanwha) == Counter({"/profile2/media.smp": 1})
        result = await reading
    print(f"go2rtc read {result}")
    assert result.codec == "hevc"
    assert result.sizes == {(1280, 720)}
    assert 27.0 <= result.rate <= 33.0, result
    # a viewer offering H.264 only still gets the H.264 sub
    viewer = await rig.watch(rig.hanwha_id)
    assert {(f.width, f.height) for f in await viewer.frames(3)} == {(640, 360)}
    assert rig.sessions.encoders == 0
    await viewer.pc.close()


async def test_shed_level_1_refuses_and_ends_transcoded_views(rig: Rig) -> None:
    # a transcoded view open when the load rises is ended (as the daemon does at level 1)
    early = Viewer()
    status, body = await rig.offer(rig.all_h265_id, early)
    assert status == 200, body
    assert rig.sessions.encoders == 1
    hot = {"system": {"temperature_celsius": 77.0, "cpu_percent": 10.0, "throttled": 0}}
    assert rig.shedder.update(hot) == 1
    await rig.sessions.close_transcoded()
    assert rig.sessions.count == 0 and rig.sessions.encoders == 0
    assert _threads("h264-encode") == 0

    refused = Viewer()
    status, body = await rig.offer(rig.all_h265_id, refused)
    assert status == 503, body
    assert "transcode" in body["detail"] and "load" in body["detail"]
    assert rig.sessions.count == 0 and rig.sessions.feeds == 0
    assert _threads("h264-feed") == 0, "a refused view never opens the camera"

    # the live view itself is not shed at level 1: an H.264 stream still plays
    sub = Viewer()
    status, body = await rig.offer(rig.hanwha_id, sub)
    assert status == 200, body
    assert rig.sessions.encoders == 0
    for v in (early, refused, sub):
        await v.pc.close()


async def test_daemon_transcodes_through_the_shared_camera_session(tmp_path: Path) -> None:
    """The running agent: the transcoding feed reads the camera through the session hub."""
    spec = SimCameraSpec(SimCameraConfig(name="Hub"))
    async with World([spec], state_dir=tmp_path / "state") as world:
        agent = await world.start_agent(
            configure=lambda cfg: replace(cfg, webrtc_addresses=LOOPBACK)
        )
        await wait_until(lambda: world.online(1), 20)
        cam = world.cameras[0]
        rec = await agent.inventory.add_rtsp(
            CameraConfig(cam.rtsp_url("h265"), "AllH265", credentials=LOGIN)
        )
        url, transcode = agent.inventory.live_stream(rec.id)
        assert transcode and f"/webrtc/{rec.id}/main" in url
        viewer = Viewer()
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{agent.api.port}/api/v1/webrtc/{rec.id}",
                json={"type": "offer", "sdp": await viewer.offer()},
            ) as r,
        ):
            assert r.status == 200, await r.text()
            await viewer.accept((await r.json())["sdp"])
        frames = await viewer.frames(3)
        assert {(f.width, f.height) for f in frames} == {(640, 360)}
        assert agent.webrtc.encoders == 1
        assert _camera_sessions(cam)["/live/h265"] == 1
        # an offer listing H.265: the same hub URL passed through, a feed of its own
        offerer = Viewer()
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{agent.api.port}/api/v1/webrtc/{rec.id}",
                json={"type": "offer", "sdp": _offer_h265_first(await offerer.offer())},
            ) as r,
        ):
            assert r.status == 200, await r.text()
            assert _video_codecs((await r.json())["sdp"]) == ["H265/90000"]
        assert agent.webrtc.feeds == 2 and agent.webrtc.encoders == 1
        await viewer.pc.close()
        await offerer.pc.close()


def _picture(pts: int) -> av.VideoFrame:
    frame = av.VideoFrame(320, 180, "yuv420p")
    for plane in frame.planes:
        plane.update(bytes([pts % 251]) * plane.buffer_size)
    frame.pts = pts
    return frame


def _wait(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_encoder_keyframes_every_two_seconds_and_on_request() -> None:
    out: list[tuple[int, bool]] = []
    encoder = H264Encoder(lambda data, pts, key: out.append((pts, key)))
    encoder.start(Fraction(10))
    try:
        for i in range(50):  # 5 s at 10 fps, each taken before the next
            encoder.offer(_picture(i * 9000))
            _wait(lambda i=i: len(out) > i)
        assert [pts for pts, key in out if key] == [0, 180_000, 360_000]
        assert all(b > a for (a, _), (b, _) in itertools.pairwise(out))
        encoder.request_keyframe()
        encoder.offer(_picture(50 * 9000))
        _wait(lambda: len(out) == 51)
        assert out[-1] == (450_000, True)
        assert encoder.dropped == 0
    finally:
        encoder.close()
    assert not encoder.thread.is_alive()


def test_slow_encoder_drops_pictures_instead_of_queueing() -> None:
    out: list[int] = []

    def slow_sink(data: bytes, pts: int, key: bool) -> None:
        time.sleep(0.05)  # a viewer-side stall: the encoder cannot take the next picture
        out.append(pts)

    encoder = H264Encoder(slow_sink)
    encoder.start(Fraction(25))
    try:
        pictures = [_picture(i * 3600) for i in range(40)]
        for picture in pictures:  # offered at once: only the newest waiting one is kept
            encoder.offer(picture)
        _wait(lambda: encoder.encoded + encoder.dropped == 40 and len(out) == encoder.encoded)
        assert encoder.dropped >= 30
        assert encoder.encoded + encoder.dropped == 40
        assert out[-1] == 39 * 3600, "the newest picture is the one encoded"
    finally:
        encoder.close()
    assert not encoder.thread.is_alive()
