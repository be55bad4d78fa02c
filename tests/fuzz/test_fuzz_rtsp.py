"""Fuzz the RTSP parser (requests, responses, interleaved frames) and its header parsers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from agent.errors import ProtocolError
from agent.proto.rtsp import (
    MAX_BODY,
    MAX_FRAME,
    MAX_HEADER_BYTES,
    MAX_LINE,
    RtspParser,
    RtspRequest,
    RtspResponse,
    encode_interleaved,
    parse_cseq,
    parse_rtp_info,
    parse_session,
    parse_transport,
)
from tests.fuzz._support import InputCount, fuzz_settings, mutated, splits

COUNT = InputCount("RTSP requests/responses")

_SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n"
SEEDS = [
    b"OPTIONS rtsp://127.0.0.1:554/live RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: x\r\n\r\n",
    b"SETUP rtsp://127.0.0.1/live/trackID=0 RTSP/1.0\r\nCSeq: 3\r\n"
    b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n",
    b"PLAY rtsp://127.0.0.1/live RTSP/1.0\r\nCSeq: 4\r\nSession: 12345678;timeout=60\r\n"
    b"Range: npt=0.000-\r\n\r\n",
    b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Type: application/sdp\r\nContent-Length: "
    + str(len(_SDP)).encode()
    + b"\r\n\r\n"
    + _SDP,
    b'RTSP/1.0 401 Unauthorized\r\nCSeq: 2\r\nWWW-Authenticate: Digest realm="c", '
    b'nonce="abc"\r\n\r\n',
    b"RTSP/1.0 200 OK\r\nCSeq: 5\r\nRTP-Info: url=rtsp://h/t0;seq=1;rtptime=2\r\n\r\n"
    + encode_interleaved(0, b"\x80\x60\x00\x01" + bytes(20)),
    encode_interleaved(1, bytes(8)) + b"GET_PARAMETER * RTSP/1.0\r\n  CSeq: 9\r\n\r\n",
]
_LIMIT = MAX_HEADER_BYTES + MAX_LINE + MAX_BODY + MAX_FRAME + 16


@COUNT.fuzzes
def _feed(data: bytes, cuts: list[int]) -> None:
    parser = RtspParser()
    try:
        for chunk in splits(data, cuts):
            for event in parser.feed(chunk):
                if isinstance(event, RtspRequest | RtspResponse):
                    _headers(event.headers)
            assert len(parser._buf) <= _LIMIT  # bounded, whatever arrives
    except ProtocolError:
        with pytest.raises(ProtocolError):
            parser.feed(b"OPTIONS * RTSP/1.0\r\n\r\n")  # stays rejected


def _headers(headers: CIMultiDict[str]) -> None:
    """The header parsers the client and server apply to what they receive."""
    cseq = parse_cseq(headers)
    assert cseq is None or cseq >= 0
    for name, parse in (
        ("Session", parse_session),
        ("Transport", parse_transport),
        ("RTP-Info", parse_rtp_info),
    ):
        value = headers.get(name)
        if value is not None:
            with contextlib.suppress(ProtocolError):
                parse(value)


@fuzz_settings(1500)
@given(mutated(SEEDS), st.lists(st.integers(0, 1 << 16), max_size=6))
def test_mutated_messages(data: bytes, cuts: list[int]) -> None:
    _feed(data, cuts)


@fuzz_settings(1000)
@given(st.binary(max_size=600), st.lists(st.integers(0, 1 << 16), max_size=4))
def test_random_bytes(data: bytes, cuts: list[int]) -> None:
    _feed(data, cuts)


@fuzz_settings(300)
@given(st.integers(1, 64), st.integers(0, 300_000))
def test_huge_lengths(headers: int, length: int) -> None:
    data = b"ANNOUNCE rtsp://h/ RTSP/1.0\r\n" + b"X-A: b\r\n" * headers
    data += b"Content-Length: %d\r\n\r\n" % length
    _feed(data + bytes(min(length, 70_000)), [len(data) // 2])
    _feed(b"$\x00" + (length & 0xFFFF).to_bytes(2, "big") + bytes(100), [])


@fuzz_settings(1500)
@given(st.text(max_size=200))
@COUNT.fuzzes
def test_header_values(value: str) -> None:
    headers: CIMultiDict[str] = CIMultiDict(
        {"CSeq": value, "Session": value, "Transport": value, "RTP-Info": value}
    )
    _headers(headers)


def test_record_count(record_reliability: Callable[..., None]) -> None:
    COUNT.record(record_reliability)
