"""Fuzz the SDP parser and the rtpmap / fmtp attribute parsers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from agent.errors import ProtocolError
from agent.proto.sdp import MAX_SDP_BYTES, SessionDescription, parse_fmtp, parse_rtpmap
from tests.fuzz._support import InputCount, fuzz_settings, mutated

COUNT = InputCount("SDP")

SEEDS = [
    b"v=0\r\no=- 1700000000 1 IN IP4 127.0.0.1\r\ns=Camera\r\ni=main\r\nc=IN IP4 0.0.0.0\r\n"
    b"b=AS:4000\r\nt=0 0\r\na=control:*\r\na=range:npt=0-\r\n"
    b"m=video 0 RTP/AVP 96\r\nb=AS:3000\r\na=rtpmap:96 H264/90000\r\n"
    b"a=fmtp:96 packetization-mode=1;profile-level-id=42E01F;"
    b"sprop-parameter-sets=Z0LgH9oFB+hAAAADAEAAAA8jxgyo,aM48gA==\r\na=control:trackID=0\r\n"
    b"m=audio 0 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000/1\r\na=control:trackID=1\r\n",
    b"v=0\no=- 0 0 IN IP6 ::1\ns= \nt=3 4\nm=video 5000/2 RTP/AVP 98 99\n"
    b"a=rtpmap:98 H265/90000\na=fmtp:98 sprop-vps=QAE=;sprop-sps=QgE=;sprop-pps=RAE=\n",
]


@COUNT.fuzzes
def _parse(data: bytes | str) -> None:
    try:
        sdp = SessionDescription.parse(data)
    except ProtocolError:
        return
    for media in sdp.media:
        for prop in ("rtpmaps", "fmtps"):
            with contextlib.suppress(ProtocolError):
                getattr(media, prop)
        media.control  # noqa: B018
    try:
        again = SessionDescription.parse(sdp.encode())
    except ProtocolError:
        return  # values that cannot be written back (control characters)
    assert len(again.media) == len(sdp.media)


@fuzz_settings(2000)
@given(mutated(SEEDS))
def test_mutated(data: bytes) -> None:
    _parse(data)


@fuzz_settings(1000)
@given(st.one_of(st.binary(max_size=400), st.text(max_size=400)))
def test_random(data: bytes | str) -> None:
    _parse(data)


@fuzz_settings(50)
@given(st.sampled_from(["a=x\r\n", "m=video 0 RTP/AVP 96\r\n", "b=AS:1\r\n"]), st.integers(1, 20))
def test_huge_documents(line: str, factor: int) -> None:
    _parse("v=0\r\n" + line * (factor * 200))
    _parse(b"v=0\r\n" + b"s=" + b"x" * (MAX_SDP_BYTES // factor))


@fuzz_settings(1500)
@given(st.text(max_size=80))
@COUNT.fuzzes
def test_attributes(value: str) -> None:
    for parse in (parse_rtpmap, parse_fmtp):
        with contextlib.suppress(ProtocolError):
            parse(value)


def test_record_count(record_reliability: Callable[..., None]) -> None:
    COUNT.record(record_reliability)
