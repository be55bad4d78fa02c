"""SDP model, serializer and parser; the SDP the RTSP server announces."""

from __future__ import annotations

import pytest

from agent.errors import LimitExceeded, ProtocolError
from agent.media.rtsp_session import session_sdp
from agent.media.source import TrackInfo
from agent.proto.h264 import parse_sprop_parameter_sets
from agent.proto.sdp import (
    Connection,
    MediaDescription,
    Origin,
    RtpMap,
    SessionDescription,
    format_fmtp,
    parse_fmtp,
    parse_rtpmap,
)

# The shape of a DESCRIBE answer from a common IP camera (H.264 + G.711 backchannel-less).
CAMERA_SDP = (
    "v=0\r\n"
    "o=- 1700000000000000 1700000000000000 IN IP4 192.0.2.10\r\n"
    "s=Media Presentation\r\n"
    "e=NONE\r\n"
    "b=AS:5100\r\n"
    "t=0 0\r\n"
    "a=control:rtsp://192.0.2.10:554/Streaming/Channels/101/?transportmode=unicast\r\n"
    "m=video 0 RTP/AVP 96\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "b=AS:5000\r\n"
    "a=recvonly\r\n"
    "a=x-dimensions:1920,1080\r\n"
    "a=control:rtsp://192.0.2.10:554/Streaming/Channels/101/trackID=1?transportmode=unicast\r\n"
    "a=rtpmap:96 H264/90000\r\n"
    "a=fmtp:96 profile-level-id=420029; packetization-mode=1; "
    "sprop-parameter-sets=Z01AKI2NQDwBE/LCAAAOEAACvyAI,aO44gA==\r\n"
    "m=audio 0 RTP/AVP 0\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "b=AS:50\r\n"
    "a=recvonly\r\n"
    "a=control:rtsp://192.0.2.10:554/Streaming/Channels/101/trackID=2?transportmode=unicast\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=Media_header:MEDIAINFO=494D4B48010100000400010010710110401F000000FA000000000000000000000000000000000000;\r\n"
    "a=appversion:1.0\r\n"
)


def test_parse_a_camera_sdp() -> None:
    sdp = SessionDescription.parse(CAMERA_SDP.encode())
    assert sdp.origin.address == "192.0.2.10"
    assert sdp.name == "Media Presentation"
    assert sdp.bandwidths == [("AS", 5100)]
    assert sdp.times == [(0, 0)]
    video, audio = sdp.media
    assert (video.kind, video.formats, video.proto) == ("video", ["96"], "RTP/AVP")
    assert video.rtpmaps == {96: RtpMap(96, "H264", 90000)}
    params = video.fmtps[96]
    assert params["packetization-mode"] == "1"
    sps, pps = parse_sprop_parameter_sets(params["sprop-parameter-sets"])
    assert sps[0] & 0x1F == 7
    assert pps[0] & 0x1F == 8
    assert video.attribute("recvonly") == ""
    assert video.attribute("sendonly") is None
    assert video.control is not None
    assert video.control.endswith("trackID=1?transportmode=unicast")
    assert audio.rtpmaps[0] == RtpMap(0, "PCMU", 8000)
    assert audio.connection == Connection("IN", "IP4", "0.0.0.0")


def test_build_and_parse_round_trip() -> None:
    video = MediaDescription(
        "video",
        formats=["96"],
        bandwidths=[("AS", 2000)],
        attributes=[
            ("rtpmap", "96 H264/90000"),
            ("fmtp", format_fmtp(96, {"packetization-mode": "1", "profile-level-id": "42C01F"})),
            ("framerate", "25"),
            ("control", "trackID=0"),
            ("recvonly", None),
        ],
    )
    sdp = SessionDescription(
        origin=Origin("-", "123", "1", "IN", "IP6", "::1"),
        name="Camera",
        info="main stream",
        connection=Connection("IN", "IP6", "::"),
        attributes=[("control", "*")],
        media=[video],
    )
    text = sdp.encode()
    assert text.startswith("v=0\r\no=- 123 1 IN IP6 ::1\r\ns=Camera\r\n")
    assert text.endswith("a=recvonly\r\n")
    assert SessionDescription.parse(text) == sdp


def test_fmtp_and_rtpmap_helpers() -> None:
    assert parse_fmtp("96 sprop-parameter-sets=Z0I=,aM4=;Packetization-Mode=1") == (
        96,
        {"sprop-parameter-sets": "Z0I=,aM4=", "packetization-mode": "1"},
    )
    assert parse_rtpmap("8 PCMA/8000/1") == RtpMap(8, "PCMA", 8000, 1)
    assert RtpMap(0, "PCMU", 8000).encode() == "0 PCMU/8000"
    for bad in ("96", "x H264/90000", "96 H264/fast"):
        with pytest.raises(ProtocolError):
            parse_rtpmap(bad)
    with pytest.raises(ProtocolError):
        parse_fmtp("abc x=1")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "o=- 1 1 IN IP4 h\r\n",
        "v=0\r\nbogus\r\n",
        "v=0\r\no=- 1 IN IP4\r\n",
        "v=0\r\nm=video\r\n",
        "v=0\r\nm=video x RTP/AVP 96\r\n",
        "v=0\r\nt=now\r\n",
        "v=0\r\nb=AS:lots\r\n",
        "v=0\r\nc=IN IP4\r\n",
        b"v=0\r\ns=\xff\r\n",
    ],
)
def test_malformed_sdp(text: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        SessionDescription.parse(text)


def test_limits() -> None:
    with pytest.raises(LimitExceeded):
        SessionDescription.parse("v=0\r\n" + "a=x\r\n" * 2000)
    with pytest.raises(LimitExceeded):
        SessionDescription.parse("v=0\r\n" + "m=video 0 RTP/AVP 96\r\n" * 17)
    with pytest.raises(LimitExceeded):
        SessionDescription.parse("v=0\r\n" + "a=" + "x" * 70000)


def test_values_cannot_inject_lines() -> None:
    with pytest.raises(ProtocolError):
        SessionDescription(name="x\r\na=evil").encode()


def test_session_sdp_announces_tracks() -> None:
    tracks = [
        TrackInfo(
            "video",
            "H264",
            90000,
            96,
            {"packetization-mode": "1", "sprop-parameter-sets": "Z0I=,aM4="},
            framerate=25,
        ),
        TrackInfo("audio", "PCMU", 8000, 0),
    ]
    text = session_sdp(tracks, name="cam", session_id="42", address="127.0.0.1").encode()
    sdp = SessionDescription.parse(text)
    assert sdp.attribute("control") == "*"
    assert sdp.origin == Origin("-", "42", "1", "IN", "IP4", "127.0.0.1")
    video, audio = sdp.media
    assert video.control == "trackID=0"
    assert audio.control == "trackID=1"
    assert video.fmtps[96]["sprop-parameter-sets"] == "Z0I=,aM4="
    assert video.attribute("framerate") == "25"
    assert audio.rtpmaps == {0: RtpMap(0, "PCMU", 8000)}
    assert all(m.attribute("recvonly") == "" for m in sdp.media)


def test_bandwidth_with_odd_whitespace_is_refused_cleanly() -> None:
    # Found by atheris: str.strip() removes "\x1e" but int() does not accept it.
    with pytest.raises(ProtocolError):
        SessionDescription.parse(b"v=0\na=:0\nb=:\x1e\x1e\x1e\x1e\x1e\x1e\x1e\x1e00\ni=\x08=:=")
