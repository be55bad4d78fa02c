"""Two-way audio end to end on loopback: an aiortc viewer offers video (receive) and audio
(send: a 3 s 440 Hz tone made by FFmpeg, played by aiortc's MediaPlayer, encoded Opus) to the
local API's `POST /api/v1/webrtc/{camera_id}`; the agent decodes the Opus, resamples it to 8 kHz,
sends it as PCMU over the simulated camera's ONVIF backchannel, and the camera's own record
(`GET /sim/backchannel`) shows what arrived. The backchannel session is counted in the camera's
budget by a real `SessionHub` and released after. A camera without a backchannel is answered
audio inactive. Detection: the camera's ONVIF answers say whether it has a speaker."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

from agent.api import ApiServer, build_app
from agent.discovery.inventory import _apply_details
from agent.discovery.records import CameraRecord
from agent.discovery.session import inspect
from agent.media.backchannel import talk_targets
from agent.media.hub import SessionHub
from agent.media.webrtc import WebRtcSessions
from agent.media.webrtc_sdp import ice_host_addresses
from agent.secret import Credentials, Secret
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from tests.audio import tone_wav
from tests.fakes import FakeDirectory, FakeRecord
from tests.world import sim_camera

pytestmark = [
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg"),
    pytest.mark.timeout(60),
]

USER, PASSWORD = "admin", "talk-pw-7"
TOKEN = "talk-token-1"
LOOPBACK = ("127.0.0.1",)
TONE_SECONDS = 3.0
TONE_HZ = 440
CID = "4f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f"


class SimDirectory(FakeDirectory):
    """The fake inventory with one camera, its streams on the simulated camera."""

    def __init__(self, cam: SimCamera, backchannel: bool) -> None:
        super().__init__([FakeRecord(CID, model="TalkCam", backchannel=backchannel)])
        self.cam = cam

    def _url(self, profile: str) -> str:
        return self.cam.rtsp_url(profile).replace("rtsp://", f"rtsp://{USER}:{PASSWORD}@")

    def stream_url(self, camera_id: str) -> str:
        self.get(camera_id)
        return self._url("sub")

    def upstream_url(self, camera_id: str, stream: str = "main") -> str:
        self.get(camera_id)
        return self._url(stream)


async def _tone(path: Path, volume: float = 1.0) -> None:
    """The tone as a 48 kHz mono WAV."""
    await tone_wav(path, hz=TONE_HZ, seconds=TONE_SECONDS, rate=48000, volume=volume)


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    async with sim_camera(SimCameraConfig(username=USER, password=PASSWORD)) as camera:
        yield camera


class Talker:
    """An aiortc peer that receives H.264 and sends a WAV file as its microphone."""

    def __init__(self, wav: Path) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        video = self.pc.addTransceiver("video", direction="recvonly")
        caps = RTCRtpReceiver.getCapabilities("video")
        assert caps is not None
        video.setCodecPreferences([c for c in caps.codecs if c.mimeType == "video/H264"])
        self.player = MediaPlayer(str(wav))
        assert self.player.audio is not None
        self.pc.addTrack(self.player.audio)  # an audio section the viewer sends on

    async def offer(self) -> str:
        with ice_host_addresses(LOOPBACK):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def close(self) -> None:
        await self.pc.close()
        if self.player.audio is not None:
            self.player.audio.stop()


def _audio_section(sdp: str) -> str:
    audio = sdp[sdp.index("m=audio") :]
    return audio.split("\nm=", 1)[0]


async def _post(port: int, offer: str) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{port}/api/v1/webrtc/{CID}",
            data=offer,
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {TOKEN}"},
        ) as r,
    ):
        assert r.status == 201, await r.text()
        return await r.text()


async def _speaker(cam: SimCamera) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{cam.port}/sim/backchannel") as r,
    ):
        assert r.status == 200
        return dict(await r.json())


async def _serve(
    cam: SimCamera, backchannel: bool
) -> tuple[ApiServer, WebRtcSessions, SessionHub, SimDirectory]:
    directory = SimDirectory(cam, backchannel)
    hub = SessionHub(directory, limit_of=lambda _cid: 2)
    live = WebRtcSessions(ice_addresses=LOOPBACK, talk_targets=talk_targets(directory, hub))
    app = build_app(directory, version="1", webrtc=live, token=Secret(TOKEN))
    server = ApiServer(app, "127.0.0.1", 0)
    await server.start()
    return server, live, hub, directory


async def test_browser_tone_reaches_the_camera_speaker(cam: SimCamera, tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    await _tone(wav)
    server, live, hub, _ = await _serve(cam, backchannel=True)
    talker = Talker(wav)
    try:
        answer = await _post(server.port, await talker.offer())
        audio = _audio_section(answer)
        assert "a=recvonly" in audio and "opus/48000" in audio.lower(), audio
        await talker.accept(answer)
        # The tone plays; when it ends, the agent closes the backchannel after ~2 s.
        deadline = time.monotonic() + 20
        while True:
            await asyncio.sleep(0.25)
            state = await _speaker(cam)
            done = state["last_at"] is not None and time.monotonic() - state["last_at"] > 0.5
            if state["duration_seconds"] >= TONE_SECONDS * 0.9 and done:
                break
            assert time.monotonic() < deadline, state
        assert hub.held(CID) == 1  # the backchannel session, still counted until idle
        deadline = time.monotonic() + 5
        while hub.held(CID) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert hub.held(CID) == 0  # released
        assert cam.rtsp is not None and cam.rtsp.session_count == 1  # the live view's only
    finally:
        await talker.close()
        await live.close()
        await server.stop()
    print(f"speaker: {state}")
    assert state["codec"] == "PCMU" and state["sessions"] == 1 and state["lost"] == 0
    assert abs(state["duration_seconds"] - TONE_SECONDS) <= TONE_SECONDS * 0.1, state
    assert state["rms"] > 1000, state  # a tone, not silence
    assert state["max_gap_ms"]["rtp"] < 100, state
    assert state["max_gap_ms"]["arrival"] < 100, state
    # The tone's frequency survived Opus, resampling and G.711.
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{cam.port}/sim/backchannel.wav") as r,
    ):
        body = await r.read()
    pcm = np.frombuffer(body[44:], dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    peak = float(np.fft.rfftfreq(len(pcm), 1 / 8000)[int(np.argmax(spectrum))])
    assert abs(peak - TONE_HZ) < 5, peak


async def test_camera_without_backchannel_answers_audio_inactive(
    cam: SimCamera, tmp_path: Path
) -> None:
    wav = tmp_path / "tone.wav"
    await _tone(wav)
    server, live, hub, _ = await _serve(cam, backchannel=False)
    talker = Talker(wav)
    try:
        answer = await _post(server.port, await talker.offer())
        assert "a=inactive" in _audio_section(answer)
        video = answer[answer.index("m=video") :].split("\nm=", 1)[0]
        assert "a=sendonly" in video  # the live view itself is unchanged
        await talker.accept(answer)
        await asyncio.sleep(1.0)
        assert hub.held(CID) == 0
    finally:
        await talker.close()
        await live.close()
        await server.stop()
    assert cam.speaker is not None and (await _speaker(cam))["packets"] == 0


@pytest.mark.parametrize("speaker", [True, False])
async def test_the_camera_record_says_whether_it_has_a_speaker(speaker: bool) -> None:
    camera = SimCamera(SimCameraConfig(username=USER, password=PASSWORD, backchannel=speaker))
    await camera.start()
    try:
        xaddr = f"http://127.0.0.1:{camera.port}/onvif/device_service"
        found = await inspect(xaddr, [Credentials(USER, Secret(PASSWORD))], 10.0)
        assert found.details is not None, found.reason
        assert found.details.backchannel is speaker
        rec = CameraRecord(id=CID, xaddr=xaddr)
        _apply_details(rec, found.details)
        assert rec.to_json()["backchannel"] is speaker
        assert CameraRecord.from_state(rec.to_state()).backchannel is speaker
    finally:
        await camera.stop()
