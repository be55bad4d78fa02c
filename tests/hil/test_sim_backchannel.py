"""Two-way audio into the simulated camera from a client nobody here wrote: go2rtc (AlexxIT/go2rtc,
the binary in `../shared/peers/`) opens the camera's RTSP stream with the ONVIF backchannel
(`#backchannel=1`) and plays a 3 s 440 Hz tone made with FFmpeg into it
(`POST /api/streams?dst=...&src=ffmpeg:FILE#audio=pcmu#input=file`, go2rtc
internal/streams/api.go at dc1685e); the camera's own record (`GET /sim/backchannel`) is checked.
The camera's ONVIF media service announces the speaker to a real ONVIF client (onvif-zeep).
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import io
import math
import shutil
import time
import wave
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from onvif import ONVIFCamera

from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.soap import NS
from tests.audio import tone_wav
from tests.hil.test_onvif_sim import envelope, post, security_header
from tests.peers.go2rtc import GO2RTC, go2rtc
from tests.world import sim_camera

USER, PASSWORD = "admin", "s3cret"
TONE_SECONDS = 3.0
TONE_HZ = 440
#: go2rtc's `file` input template (`-re -i FILE`) lets FFmpeg's WAV reader take 4096-byte
#: blocks, so the audio leaves in 256 ms bursts; this one (`#input=mic`) reads the smallest
#: block the demuxer allows (`max_size` 1024 bytes: 64 ms of 16-bit 8 kHz audio), closer to the
#: steady packets of a microphone.
MIC_INPUT = "-re -max_size 1024 -i {input}"
#: Largest step between consecutive packets' RTP timestamps: the audio has no hole.
MAX_GAP_MS = 100
#: Largest time between consecutive arrivals. The client sends 64 ms blocks; on an idle machine
#: the largest gap stays under 100 ms, but with a CPU hog beside the test (two processes, two
#: cores) single gaps of 100 to 400 ms were seen, so the bound only catches a stalled receiver.
MAX_ARRIVAL_GAP_MS = 500
START_TIMEOUT = 10.0
PLAY_TIMEOUT = 20.0

pytestmark = pytest.mark.skipif(
    not GO2RTC.exists() or shutil.which("ffmpeg") is None, reason="needs go2rtc and ffmpeg"
)


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    async with sim_camera(SimCameraConfig(username=USER, password=PASSWORD)) as camera:
        yield camera


async def _state(cam: SimCamera, path: str = "/sim/backchannel") -> Any:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{cam.port}{path}") as r,
    ):
        assert r.status == 200
        return await (r.json() if path.endswith("backchannel") else r.read())


async def test_go2rtc_plays_a_tone_into_the_camera_speaker(cam: SimCamera, tmp_path: Path) -> None:
    tone = tmp_path / "tone.wav"
    await tone_wav(tone, hz=TONE_HZ, seconds=TONE_SECONDS, rate=8000)
    url = cam.rtsp_url().replace("rtsp://", f"rtsp://{USER}:{PASSWORD}@")
    async with (
        go2rtc(
            tmp_path, f"{url}#backchannel=1", ffmpeg={"mic": MIC_INPUT}, log_level="debug"
        ) as peer,
        aiohttp.ClientSession() as http,
    ):
        src = f"ffmpeg:{tone}#audio=pcmu#input=mic"
        async with http.post(f"{peer.api}/api/streams", params={"dst": "cam", "src": src}) as r:
            assert r.status == 200, await r.text()
        # Wait for the tone to arrive and the packets to stop.
        deadline = time.monotonic() + PLAY_TIMEOUT
        state = await _state(cam)
        while True:
            await asyncio.sleep(0.5)
            state = await _state(cam)
            assert not cam.video_active  # a backchannel-only session starts no encoder
            last = state["last_at"]
            if state["duration_seconds"] >= TONE_SECONDS * 0.9 and time.monotonic() - last > 1.0:
                break
            assert time.monotonic() < deadline, (state, (tmp_path / "go2rtc.log").read_text())
    assert state["codec"] == "PCMU"
    assert state["sessions"] == 1
    assert state["lost"] == 0
    assert abs(state["duration_seconds"] - TONE_SECONDS) <= TONE_SECONDS * 0.1, state
    assert state["rms"] > 1000, state  # a tone, not silence (full scale is 32767)
    assert state["max_gap_ms"]["rtp"] < MAX_GAP_MS, state
    assert state["max_gap_ms"]["arrival"] < MAX_ARRIVAL_GAP_MS, state
    # The received audio is the tone: its strongest frequency is 440 Hz.
    with wave.open(io.BytesIO(await _state(cam, "/sim/backchannel.wav"))) as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(float)
        rate = wav.getframerate()
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    peak = float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])
    assert math.isclose(peak, TONE_HZ, abs_tol=5), peak


async def test_onvif_client_sees_the_speaker(cam: SimCamera) -> None:
    client = ONVIFCamera("127.0.0.1", cam.port, USER, PASSWORD, adjust_time=True, no_cache=True)
    try:
        await client.update_xaddrs()
        media = await client.create_media_service()
        outputs = await media.GetAudioOutputs()
        assert [o.token for o in outputs] == ["AudioOutput_1"]
        configs = await media.GetAudioOutputConfigurations()
        assert [(c.token, c.OutputToken) for c in configs] == [
            ("AudioOutputConfig_1", "AudioOutput_1")
        ]
        decoders = await media.GetAudioDecoderConfigurations()
        assert [d.token for d in decoders] == ["AudioDecoderConfig_1"]
        # zeep puts both under the profile extension's leading xs:any (as it does with the same
        # layout from a real Hikvision: tests/fixtures/onvif/hikvision-ds-2df7276-ael).
        for prof in await media.GetProfiles():
            ext = prof.Extension
            found = [ext.AudioOutputConfiguration, ext.AudioDecoderConfiguration, *ext._value_1]
            tokens = {x.token for x in found if x is not None}
            assert tokens == {"AudioOutputConfig_1", "AudioDecoderConfig_1"}, prof.token
        device = await client.create_devicemgmt_service()
        caps = await device.GetCapabilities({"Category": "All"})
        # Again under the extension's xs:any, as a raw element.
        (deviceio,) = [e for e in caps.Extension._value_1 if e.tag.endswith("}DeviceIO")]
        counts = {child.tag.split("}")[1]: child.text for child in deviceio}
        assert counts["AudioOutputs"] == "1"
    finally:
        await client.close()
    # onvif-zeep has no Media2 client: a signed request by hand.
    body = "<tr2:GetProfiles><tr2:Type>All</tr2:Type></tr2:GetProfiles>"
    url = f"http://127.0.0.1:{cam.port}/onvif/media2_service"
    status, payload = await post(url, envelope(body, security_header(USER, PASSWORD)))
    assert status == 200
    tr2 = NS["tr2"]
    for prof in ET.fromstring(payload).iter(f"{{{tr2}}}Profiles"):
        configs = prof.find(f"{{{tr2}}}Configurations")
        assert configs is not None
        tags = [c.tag.split("}")[1] for c in configs]
        assert tags[-2:] == ["AudioOutput", "AudioDecoder"], tags  # last, as the WSDL orders
        output = configs.find(f"{{{tr2}}}AudioOutput")
        assert output is not None and output.get("token") == "AudioOutputConfig_1"


async def test_camera_without_speaker_refuses_the_backchannel(tmp_path: Path) -> None:
    camera = SimCamera(SimCameraConfig(username=USER, password=PASSWORD, backchannel=False))
    await camera.start()
    try:
        assert camera.speaker is None
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{camera.port}/sim/backchannel") as r:
                assert r.status == 404
            async with s.get(f"http://127.0.0.1:{camera.port}/sim/state") as r:
                assert (await r.json())["backchannel"] is False
        client = ONVIFCamera(
            "127.0.0.1", camera.port, USER, PASSWORD, adjust_time=True, no_cache=True
        )
        try:
            await client.update_xaddrs()
            media = await client.create_media_service()
            assert list(await media.GetAudioOutputs() or []) == []
            prof = (await media.GetProfiles())[0]
            assert prof.Extension is None
        finally:
            await client.close()
    finally:
        await camera.stop()
