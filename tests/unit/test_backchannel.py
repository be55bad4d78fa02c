"""Two-way audio to the camera (agent.media.backchannel): G.711 encoding, the choice of codec in
the camera's SDP, 20 ms packets from 48 kHz frames, the RTSP backchannel session against the
simulated camera (real RTSP on loopback; the camera's speaker records what it gets), the camera
refusing, and `TalkRelay` opening on the first frame and closing when frames stop. Also the
detection of an audio output in real cameras' recorded ONVIF answers (tests/fixtures/onvif)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agent.camera.media import has_audio_output, profiles
from agent.camera.session import NAMESPACES
from agent.errors import SessionLimit, Unavailable, Unsupported
from agent.media import backchannel as bc
from agent.media.backchannel import (
    Backchannel,
    Packetizer,
    TalkRelay,
    TalkTarget,
    encode_g711,
    pick_codec,
)
from agent.proto.sdp import SessionDescription
from agent.sim.camera.camera import SimCamera, SimCameraConfig
from agent.sim.camera.speaker import ALAW, ULAW
from tests.unit.test_onvif_captures import CaptureCamera
from tests.world import sim_camera

USER, PASSWORD = "admin", "talk-s3cret"


# ---- G.711 and packets --------------------------------------------------------------------


@pytest.mark.parametrize(("encoding", "table"), [("PCMU", ULAW), ("PCMA", ALAW)])
def test_g711_round_trip_is_within_the_codec_step(encoding: str, table: Any) -> None:
    pcm = np.linspace(-32768, 32767, 20001).astype(np.int16)
    codes = np.frombuffer(encode_g711(pcm, encoding), dtype=np.uint8)
    back = table[codes].astype(np.int32)
    error = np.abs(back - pcm.astype(np.int32))
    # G.711 keeps 4 bits of mantissa: the error is under 1/16 of the magnitude (plus the
    # smallest step near zero).
    assert np.all(error <= np.abs(pcm.astype(np.int32)) / 16 + 16), int(error.max())
    # Every code the encoder makes decodes to itself when encoded again.
    assert encode_g711(table[codes], encoding) == codes.tobytes()


def test_g711_silence_codes() -> None:
    assert encode_g711(np.zeros(4, np.int16), "PCMU") == b"\xff" * 4  # mu-law zero
    assert encode_g711(np.zeros(4, np.int16), "PCMA") == b"\xd5" * 4  # A-law zero


def _media(lines: str) -> Any:
    sdp = SessionDescription.parse("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n" + lines)
    return sdp.media[0]


def test_pick_codec_takes_the_first_g711_the_camera_offers() -> None:
    both = _media("m=audio 0 RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n")
    assert pick_codec(both) == ("PCMA", 8)
    aac_first = _media(
        "m=audio 0 RTP/AVP 97 0\r\na=rtpmap:97 MPEG4-GENERIC/16000/1\r\na=sendonly\r\n"
    )
    assert pick_codec(aac_first) == ("PCMU", 0)  # static type without rtpmap
    assert bc.is_backchannel(aac_first)
    with pytest.raises(Unsupported, match=r"no G\.711"):
        pick_codec(_media("m=audio 0 RTP/AVP 97\r\na=rtpmap:97 L16/16000/1\r\n"))
    with pytest.raises(Unsupported):  # PCMU at another rate is not G.711
        pick_codec(_media("m=audio 0 RTP/AVP 96\r\na=rtpmap:96 PCMU/16000\r\n"))
    assert not bc.is_backchannel(_media("m=audio 0 RTP/AVP 0\r\na=recvonly\r\n"))


def _tone_frame(index: int, samples: int = 960, hz: float = 440.0) -> av.AudioFrame:
    """20 ms of a tone as aiortc's Opus decoder gives it: 48 kHz, stereo, packed s16."""
    t = (np.arange(samples) + index * samples) / 48000
    mono = (np.sin(2 * np.pi * hz * t) * 12000).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(
        np.repeat(mono, 2).reshape(1, -1), format="s16", layout="stereo"
    )
    frame.sample_rate = 48000
    frame.pts = index * samples
    frame.time_base = Fraction(1, 48000)
    return frame


def test_packetizer_cuts_20_ms_packets_at_8_khz() -> None:
    pack = Packetizer("PCMU")
    payloads = [p for i in range(50) for p in pack.feed(_tone_frame(i))]
    assert all(len(p) == bc.PACKET_SAMPLES for p in payloads)
    # 1 s in; the resampler keeps a few ms back: 49 or 50 whole packets out.
    assert 49 <= len(payloads) <= 50, len(payloads)
    pcm = ULAW[np.frombuffer(b"".join(payloads), np.uint8)].astype(float)
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    peak = float(np.fft.rfftfreq(len(pcm), 1 / 8000)[int(np.argmax(spectrum))])
    assert abs(peak - 440) < 5, peak


# ---- against the simulated camera -----------------------------------------------------------


class Holds:
    """Counts open holds like the hub does; `full` makes the next one fail."""

    def __init__(self) -> None:
        self.open = 0
        self.taken = 0
        self.full = False

    def __call__(self) -> Holds.One:
        if self.full:
            raise SessionLimit("camera c1 allows 1 RTSP session(s) and holds 1 (main)")
        self.open += 1
        self.taken += 1
        return Holds.One(self)

    class One:
        def __init__(self, owner: Holds) -> None:
            self.owner = owner
            self.done = False

        def release(self) -> None:
            assert not self.done, "released twice"
            self.done = True
            self.owner.open -= 1


@pytest.fixture
async def cam() -> AsyncIterator[SimCamera]:
    async with sim_camera(SimCameraConfig(username=USER, password=PASSWORD)) as camera:
        yield camera


def _target(camera: SimCamera, holds: Holds) -> TalkTarget:
    url = camera.rtsp_url().replace("rtsp://", f"rtsp://{USER}:{PASSWORD}@")
    return TalkTarget("c1", lambda: url, holds)


async def _feed(push: Any, frames: int, start: int = 0, burst: int = 1) -> None:
    """`frames` frames of 20 ms in real time, `burst` of them at once."""
    t0 = time.monotonic()
    for i in range(frames):
        push(_tone_frame(start + i))
        if (i + 1) % burst == 0:
            await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.02 - time.monotonic()))


async def test_backchannel_sends_paced_g711_rtp(cam: SimCamera) -> None:
    holds = Holds()
    channel = Backchannel(_target(cam, holds))
    await channel.open()
    assert holds.open == 1 and channel.encoding == "PCMU"
    assert cam.rtsp is not None and cam.rtsp.session_count == 1
    assert not cam.video_active  # only the backchannel was SETUP: no video is encoded
    await _feed(channel.push, 50, burst=5)  # 1 s, in bursts of 100 ms as a jittery network
    await channel.flush(2.0)
    assert channel.queued == 0
    await asyncio.sleep(0.1)
    await channel.close()
    assert holds.open == 0 and channel.failed is None
    assert cam.rtsp.session_count == 0  # TEARDOWN ended it on the camera
    assert cam.speaker is not None
    state = cam.speaker.state()
    assert state["codec"] == "PCMU" and state["sessions"] == 1 and state["lost"] == 0
    assert state["packets"] == channel.sent >= 49
    assert state["max_gap_ms"]["rtp"] == 20.0  # contiguous RTP time
    assert state["max_gap_ms"]["arrival"] < 60, state  # paced out of the bursts
    assert state["rms"] > 5000, state  # the tone (12000 peak: rms 8485), not silence
    log = list(cam.speaker.log)
    assert all(p.payload_bytes == 160 for p in log)
    steps = {(b.sequence - a.sequence) & 0xFFFF for a, b in itertools.pairwise(log)}
    assert steps == {1}
    # Paced: the packets span their RTP duration, not a burst.
    span = log[-1].arrival - log[0].arrival
    assert span >= (len(log) - 1) * 0.02 * 0.9, span


async def test_a_camera_without_backchannel_ends_the_talk(caplog: pytest.LogCaptureFixture) -> None:
    camera = SimCamera(SimCameraConfig(username=USER, password=PASSWORD, backchannel=False))
    await camera.start()
    try:
        holds = Holds()
        channel = Backchannel(_target(camera, holds))
        with pytest.raises(Unavailable, match="551"):  # Require refused: Option not supported
            await channel.open()
        assert holds.open == 0 and holds.taken == 1
    finally:
        await camera.stop()


async def test_a_full_camera_refuses_and_the_hold_is_not_taken(cam: SimCamera) -> None:
    holds = Holds()
    holds.full = True
    with pytest.raises(SessionLimit):
        await Backchannel(_target(cam, holds)).open()
    assert holds.taken == 0


async def test_the_camera_refusing_453_ends_the_talk() -> None:
    camera = SimCamera(SimCameraConfig(username=USER, password=PASSWORD, max_sessions=1))
    await camera.start()
    try:
        holds = Holds()
        first = Backchannel(_target(camera, holds))
        await first.open()
        second = Backchannel(_target(camera, holds))
        with pytest.raises(Unavailable, match="453"):
            await second.open()
        assert holds.open == 1
        await first.close()
        assert holds.open == 0
    finally:
        await camera.stop()


class QueueTrack(MediaStreamTrack):
    """An audio track fed by the test, as aiortc's remote track is by the network."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[av.AudioFrame | None] = asyncio.Queue()

    async def recv(self) -> av.AudioFrame:
        frame = await self.queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame


async def test_relay_opens_on_the_first_frame_and_closes_when_frames_stop(
    cam: SimCamera, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "agent.media.backchannel")
    holds = Holds()
    track = QueueTrack()
    relay = TalkRelay(track, _target(cam, holds), idle=0.4)
    relay.start()
    try:
        await asyncio.sleep(0.2)
        assert holds.taken == 0  # nothing sent yet: no session on the camera
        await _feed(track.queue.put_nowait, 25)  # first press: 0.5 s
        assert holds.open == 1 and relay.talks == 1
        deadline = time.monotonic() + 3
        while holds.open and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert holds.open == 0  # released after the idle time
        await _feed(track.queue.put_nowait, 25, start=25)  # second press
        assert relay.talks == 2 and holds.open == 1
        track.queue.put_nowait(None)  # the viewer leaves: the track ends
        deadline = time.monotonic() + 3
        while holds.open and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert holds.open == 0
    finally:
        await relay.close()
    assert cam.speaker is not None
    state = cam.speaker.state()
    assert state["sessions"] == 2 and state["lost"] == 0
    assert 0.9 <= state["duration_seconds"] <= 1.0, state
    assert relay.failures == 0
    text = caplog.text
    assert PASSWORD not in text and "talk to camera c1 started (PCMU)" in text


async def test_relay_logs_a_refusal_once_per_press(caplog: pytest.LogCaptureFixture) -> None:
    camera = SimCamera(SimCameraConfig(username=USER, password=PASSWORD, backchannel=False))
    await camera.start()
    try:
        holds = Holds()
        track = QueueTrack()
        relay = TalkRelay(track, _target(camera, holds), idle=0.3)
        relay.start()
        try:
            await _feed(track.queue.put_nowait, 20)
            await asyncio.sleep(0.1)
            assert relay.failures == 1 and holds.taken == 1 and holds.open == 0
        finally:
            await relay.close()
    finally:
        await camera.stop()
    lines = [r.getMessage() for r in caplog.records if "not possible" in r.getMessage()]
    assert len(lines) == 1 and "551" in lines[0] and PASSWORD not in caplog.text, lines


# ---- detection in recorded answers -----------------------------------------------------------


class Recorded(CaptureCamera):
    """A recorded camera; GetAudioOutputs, of which no capture was made, is answered as a
    camera without audio outputs does (a SOAP fault)."""

    async def call_raw(
        self, service: str, operation: str, params: dict[str, Any] | None = None
    ) -> tuple[Any, Any]:
        if operation == "GetAudioOutputs" and f"{service}.{operation}" not in self.answers:
            self.calls.append((service, operation, params))
            raise Unsupported(f"{operation}: ter:ActionNotSupported")
        return await super().call_raw(service, operation, params)


#: Capture sets with a Media 1 GetProfiles, and whether a profile holds an audio output (read
#: off the XML: grep AudioOutputConfiguration).
AUDIO_OUTPUT = {
    "axis-m2025-le": False,
    "axis-q3819-pve": False,
    "axis-q6045-e": False,
    "bosch-autodome-ip-starlight-5000i": False,
    "dahua-oem-5mp": False,
    "hikvision-ds-2cd2012-i": False,
    "hikvision-ds-2df7276-ael": True,  # in the profile's Extension
    "lorex-lnb45abb": True,
    "noname-ipd-h4k8m05-bs": False,
    "pelco-d6230l": False,
    "reolink-e1-zoom": False,
    "reolink-trackmix-wifi": True,  # default namespace, not tt:
    "sunba-performance-series": True,
    "trendnet-tv-ip320pi": False,
    "uniview-oem-gx728mf-ir28": False,
}


@pytest.mark.parametrize(("folder", "expected"), sorted(AUDIO_OUTPUT.items()))
async def test_audio_output_in_recorded_profiles(folder: str, expected: bool) -> None:
    camera = Recorded.load(folder)
    if "media2.GetProfiles" not in camera.answers:  # announced, not recorded
        camera.namespaces.discard(NAMESPACES["media2"])
    found = await profiles(camera)  # type: ignore[arg-type]
    assert any(p.audio_output for p in found) is expected
    assert await has_audio_output(camera, found) is expected  # type: ignore[arg-type]
    asked = [op for _, op, _ in camera.calls if op == "GetAudioOutputs"]
    assert asked == ([] if expected else ["GetAudioOutputs"])  # asked only when not in profiles


async def test_audio_output_in_media2_profiles() -> None:
    camera = Recorded.load("sunba-405-xm530")  # Media2 GetProfiles without AudioOutput
    found = await profiles(camera)  # type: ignore[arg-type]
    assert found and not any(p.audio_output for p in found)


def test_packetizer_follows_a_change_of_audio_format() -> None:
    """aiortc gives 48 kHz stereo for Opus, 8 kHz mono for G.711: both are taken."""
    pack = Packetizer("PCMA")
    first = [p for i in range(10) for p in pack.feed(_tone_frame(i))]
    mono = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.int16), format="s16", layout="mono")
    mono.sample_rate = 8000
    mono.pts = 0
    mono.time_base = Fraction(1, 8000)
    later = pack.feed(mono)
    assert len(first) >= 9 and len(later) >= 9
    assert all(len(p) == bc.PACKET_SAMPLES for p in first + later)
