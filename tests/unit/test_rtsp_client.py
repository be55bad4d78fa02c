"""Pure helpers of the RTSP client and the restreamer: URLs, SDP tracks, keyframes, timeline."""

from __future__ import annotations

import pytest

from agent.errors import ProtocolError
from agent.media.restream import _Timeline, starts_keyframe
from agent.media.rtsp_client import RtspClient, redact, resolve_control, track_info
from agent.proto.sdp import SessionDescription


@pytest.mark.parametrize(
    ("base", "control", "expected"),
    [
        ("rtsp://h/live/", "trackID=1", "rtsp://h/live/trackID=1"),
        ("rtsp://h/live", "trackID=1", "rtsp://h/live/trackID=1"),
        ("rtsp://h:554/a/b/", None, "rtsp://h:554/a/b/"),
        ("rtsp://h/a/", "*", "rtsp://h/a/"),
        ("rtsp://h/a/", "/other/track1", "rtsp://h/other/track1"),
        ("rtsp://h/a/", "rtsp://u:p@x:8554/s/t", "rtsp://x:8554/s/t"),
    ],
)
def test_resolve_control(base: str, control: str | None, expected: str) -> None:
    assert resolve_control(base, control) == expected


def test_redact_and_constructor_keep_credentials_out() -> None:
    assert redact("rtsp://user:p%40ss@10.0.0.1:554/x") == "rtsp://10.0.0.1:554/x"
    assert redact("rtsp://h/x") == "rtsp://h/x"
    client = RtspClient("rtsp://user:s3cret@127.0.0.1:8554/live")
    assert client.url == "rtsp://127.0.0.1:8554/live"
    with pytest.raises(ProtocolError) as info:
        RtspClient("http://user:s3cret@127.0.0.1/live")
    assert "s3cret" not in str(info.value)


def test_track_info_from_sdp() -> None:
    sdp = SessionDescription.parse(
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=x\r\nt=0 0\r\n"
        "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        "a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0IAHpWoKA9puAgICBA=,aM48gA==\r\n"
        "a=framerate:25\r\n"
        "m=audio 0 RTP/AVP 0\r\n"
        "m=audio 0 RTP/AVP 97\r\n"
    )
    video = track_info(sdp.media[0])
    assert video is not None
    assert (video.kind, video.encoding, video.clock_rate, video.payload_type) == (
        "video",
        "H264",
        90000,
        96,
    )
    assert video.fmtp is not None and video.fmtp["packetization-mode"] == "1"
    assert video.framerate == 25
    audio = track_info(sdp.media[1])
    assert audio is not None and (audio.encoding, audio.clock_rate) == ("PCMU", 8000)
    assert track_info(sdp.media[2]) is None  # dynamic type without rtpmap


@pytest.mark.parametrize(
    ("encoding", "payload", "key"),
    [
        ("H264", bytes([0x65, 0x88]), True),  # IDR
        ("H264", bytes([0x67, 0x42]), True),  # SPS
        ("H264", bytes([0x41, 0x9A]), False),  # non-IDR slice
        ("H264", bytes([0x7C, 0x85, 0x00]), True),  # FU-A start of an IDR
        ("H264", bytes([0x7C, 0x05, 0x00]), False),  # FU-A middle of an IDR
        ("H264", bytes([0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68]), True),  # STAP-A SPS+PPS
        ("H264", bytes([0x78, 0x00, 0x09, 0x67]), False),  # truncated STAP-A
        ("H265", bytes([0x40, 0x01, 0x0C]), True),  # VPS
        ("H265", bytes([0x26, 0x01, 0xAF]), True),  # IDR_W_RADL
        ("H265", bytes([0x02, 0x01, 0xD0]), False),  # TRAIL_R
        ("H265", bytes([0x62, 0x01, 0x93, 0x00]), True),  # FU start of IDR_W_RADL
        ("H265", bytes([0x62, 0x01, 0x13, 0x00]), False),  # FU middle
        ("H265", bytes([0x60, 0x01, 0x00, 0x02, 0x40, 0x01]), True),  # AP holding a VPS
        ("JPEG", b"\x00", True),
    ],
)
def test_starts_keyframe(encoding: str, payload: bytes, key: bool) -> None:
    assert starts_keyframe(encoding, payload) is key


def test_timeline_unwraps_and_reanchors() -> None:
    line = _Timeline(90000)
    first = line.ticks(0xFFFFFF00, 2.0)
    assert first == 180000
    assert line.ticks(0x00000100, 2.0) == first + 0x200  # 32-bit wrap
    assert line.ticks(0x00000000, 2.0) == first + 0x100  # B-frames step back
    assert line.ticks(0x80000000, 50.0) == 50 * 90000  # a jump re-anchors at "now"
