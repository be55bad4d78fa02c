"""RTSP message parser, serializers and header helpers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import LimitExceeded, ProtocolError
from agent.proto.rtsp import (
    InterleavedFrame,
    RtpInfo,
    RtspParser,
    RtspRequest,
    RtspResponse,
    Transport,
    encode_interleaved,
    format_rtp_info,
    format_session,
    parse_rtp_info,
    parse_session,
    parse_transport,
)

# What FFmpeg's RTSP client sends (captured with av.logging at DEBUG).
FFMPEG_SETUP = (
    b"SETUP rtsp://127.0.0.1:8554/main/trackID=0 RTSP/1.0\r\n"
    b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
    b"CSeq: 3\r\n"
    b"User-Agent: Lavf61.7.100\r\n"
    b"\r\n"
)


def test_request_with_headers_is_parsed() -> None:
    [req] = RtspParser().feed(FFMPEG_SETUP)
    assert isinstance(req, RtspRequest)
    assert req.method == "SETUP"
    assert req.uri == "rtsp://127.0.0.1:8554/main/trackID=0"
    assert req.cseq == 3
    assert req.headers["transport"] == "RTP/AVP/TCP;unicast;interleaved=0-1"
    assert req.headers["USER-AGENT"] == "Lavf61.7.100"
    assert req.body == b""


@given(st.lists(st.integers(min_value=1, max_value=len(FFMPEG_SETUP) * 3 - 1), max_size=8))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    body_req = b"SET_PARAMETER rtsp://h/x RTSP/1.0\r\nCSeq: 9\r\nContent-Length: 5\r\n\r\nab\r\nc"
    frame = encode_interleaved(1, b"\x80\xc9rtcp")
    stream = FFMPEG_SETUP + frame + body_req
    parser = RtspParser()
    events = []
    last = 0
    for cut in [*sorted({c % len(stream) for c in cuts}), len(stream)]:
        events += parser.feed(stream[last:cut])
        last = cut
    assert not parser.pending
    assert [type(e) for e in events] == [RtspRequest, InterleavedFrame, RtspRequest]
    assert events[1] == InterleavedFrame(1, b"\x80\xc9rtcp")
    assert isinstance(events[2], RtspRequest)
    assert events[2].body == b"ab\r\nc"


def test_responses_and_interleaved_frames_on_the_client_side() -> None:
    resp = RtspResponse(200)
    resp.headers["CSeq"] = "4"
    resp.headers["Session"] = "ABC;timeout=60"
    data = encode_interleaved(0, b"rtp") + resp.encode() + encode_interleaved(2, b"x" * 300)
    events = RtspParser().feed(data)
    assert events[0] == InterleavedFrame(0, b"rtp")
    assert isinstance(events[1], RtspResponse)
    assert events[1].status == 200
    assert events[1].reason == "OK"
    assert events[1].cseq == 4
    assert events[2] == InterleavedFrame(2, b"x" * 300)


def test_request_round_trip_and_lf_only_lines() -> None:
    req = RtspRequest("DESCRIBE", "rtsp://cam/live")
    req.headers["CSeq"] = "2"
    req.headers["Accept"] = "application/sdp"
    req.body = b"v=0\r\n"
    [parsed] = RtspParser().feed(req.encode())
    assert isinstance(parsed, RtspRequest)
    assert (parsed.method, parsed.uri, parsed.body) == (req.method, req.uri, req.body)
    assert parsed.headers.popall("Content-Length") == ["5"]
    assert parsed.headers == req.headers
    [lf] = RtspParser().feed(b"OPTIONS * RTSP/1.0\nCSeq: 1\n\n")
    assert isinstance(lf, RtspRequest)
    assert lf.cseq == 1


def test_stray_line_breaks_between_messages_and_continuation_lines() -> None:
    data = b"\r\n\r\nOPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX-Long: a\r\n  b\r\n\r\n"
    [req] = RtspParser().feed(data)
    assert isinstance(req, RtspRequest)
    assert req.headers["x-long"] == "a b"


def test_line_too_long_is_rejected_before_its_end() -> None:
    parser = RtspParser(max_line=100)
    with pytest.raises(LimitExceeded, match="line"):
        parser.feed(b"DESCRIBE rtsp://x/" + b"a" * 200)
    with pytest.raises(ProtocolError, match="already rejected"):
        parser.feed(b"\r\n")


def test_huge_header_block_is_rejected_while_it_arrives() -> None:
    parser = RtspParser()
    parser.feed(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n")
    chunk = b"X-Pad: " + b"p" * 1000 + b"\r\n"
    for _ in range(16):
        parser.feed(chunk)  # just under 16 KiB of headers is fine
    with pytest.raises(LimitExceeded, match="header block"):
        parser.feed(chunk)


def test_too_many_headers() -> None:
    data = b"OPTIONS * RTSP/1.0\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(70))
    with pytest.raises(LimitExceeded, match="headers"):
        RtspParser().feed(data)


@pytest.mark.parametrize(
    ("length", "error"),
    [(b"70000", LimitExceeded), (b"-1", ProtocolError), (b"12abc", ProtocolError)],
)
def test_bad_content_length(length: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        RtspParser().feed(b"SET_PARAMETER * RTSP/1.0\r\nContent-Length: " + length + b"\r\n\r\n")


def test_oversized_interleaved_frame() -> None:
    with pytest.raises(LimitExceeded, match="interleaved"):
        RtspParser(max_frame=1000).feed(b"$\x00\x10\x00")


@pytest.mark.parametrize(
    "junk",
    [
        b"\x16\x03\x01\x02\x00\x01\x00",  # a TLS ClientHello
        b"\x00\x00\x00\x00",
        b"OPTIONS * RTSP/1.0\r\nCSeq: \x01\x02\r\n\r\n",
        b"OPTI\x00NS",
    ],
)
def test_binary_junk_is_rejected_at_once(junk: bytes) -> None:
    with pytest.raises(ProtocolError):
        RtspParser().feed(junk)


@pytest.mark.parametrize(
    "line",
    [
        b"GET / HTTP/1.1",
        b"OPTIONS *",
        b"OPTIONS  * RTSP/1.0",
        b"RTSP/1.0 2000 OK",
        b"RTSP/x 200 OK",
        b"DESCRIBE rtsp://x RTSP/1.0 extra",
    ],
)
def test_malformed_start_lines(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        RtspParser().feed(line + b"\r\nCSeq: 1\r\n\r\n")


def test_malformed_header_and_invalid_utf8() -> None:
    with pytest.raises(ProtocolError, match="header line"):
        RtspParser().feed(b"OPTIONS * RTSP/1.0\r\nno colon here\r\n\r\n")
    with pytest.raises(ProtocolError, match="UTF-8"):
        RtspParser().feed(b"OPTIONS * RTSP/1.0\r\nX: \xff\xfe\r\n\r\n")


def test_pending_reports_partial_messages() -> None:
    parser = RtspParser()
    states = [parser.pending]
    for chunk in (b"OPTIONS * RT", b"SP/1.0\r\nCSeq: 1\r\n\r\n", b"$\x00"):
        parser.feed(chunk)
        states.append(parser.pending)
    assert states == [False, True, False, True]


def test_header_values_cannot_inject_lines() -> None:
    resp = RtspResponse(200)
    resp.headers["Session"] = "x\r\nEvil: 1"
    with pytest.raises(ProtocolError):
        resp.encode()


def test_unknown_status_and_missing_cseq() -> None:
    resp = RtspResponse(599)
    assert resp.reason == "Unknown"
    assert resp.cseq is None
    [parsed] = RtspParser().feed(b"RTSP/1.0 461\r\nCSeq: x\r\n\r\n")
    assert isinstance(parsed, RtspResponse)
    assert parsed.reason == "Unsupported Transport"
    assert parsed.cseq is None


def test_transport_alternatives() -> None:
    value = (
        "RTP/AVP;unicast;client_port=5000-5001,"
        'RTP/AVP/TCP;unicast;interleaved=2-3;ssrc=0000ABCD;mode="play",'
        "RTP/AVP;multicast;ttl=16"
    )
    udp, tcp, mcast = parse_transport(value)
    assert (udp.lower, udp.client_port, udp.unicast) == ("UDP", (5000, 5001), True)
    assert (tcp.lower, tcp.interleaved, tcp.ssrc, tcp.mode) == ("TCP", (2, 3), 0xABCD, "PLAY")
    assert (mcast.unicast, mcast.extra) == (False, (("ttl", "16"),))
    assert parse_transport(tcp.format()) == [tcp]
    assert parse_transport("RTP/AVP/TCP;interleaved=4")[0].interleaved == (4, 5)


def test_transport_format_of_a_reply() -> None:
    reply = Transport("RTP/AVP", "TCP", True, (0, 1), ssrc=0x1234)
    assert reply.format() == "RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=00001234"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "RAW/RAW/UDP",
        "RTP/AVP/TCP;interleaved=300-301",
        "RTP/AVP;ssrc=zz",
        ",".join(["RTP/AVP"] * 20),
    ],
)
def test_bad_transports(value: str) -> None:
    with pytest.raises(ProtocolError):
        parse_transport(value)


def test_session_header() -> None:
    assert parse_session("12345678;timeout=60") == ("12345678", 60)
    assert parse_session(" ABCDEF ") == ("ABCDEF", None)
    assert format_session("ABC", 30) == "ABC;timeout=30"
    for bad in ("", "a b", "x;timeout=soon"):
        with pytest.raises(ProtocolError):
            parse_session(bad)


def test_rtp_info_round_trip() -> None:
    entries = [RtpInfo("rtsp://h/x/trackID=0", 100, 4000), RtpInfo("rtsp://h/x/trackID=1", 7)]
    text = format_rtp_info(entries)
    assert text == "url=rtsp://h/x/trackID=0;seq=100;rtptime=4000,url=rtsp://h/x/trackID=1;seq=7"
    assert parse_rtp_info(text) == entries
    with pytest.raises(ProtocolError):
        parse_rtp_info("seq=1")


def test_encode_interleaved_limits() -> None:
    with pytest.raises(ProtocolError):
        encode_interleaved(256, b"")
    with pytest.raises(LimitExceeded):
        encode_interleaved(0, b"x" * 70000)


def test_session_timeout_with_odd_whitespace() -> None:
    # str.strip() removes "\x1e", int() does not: the number checked must be the one converted.
    from agent.proto.rtsp import parse_session

    assert parse_session("abc123;timeout=\x1e60\x1e") == ("abc123", 60)
