"""Fuzz RTP/RTCP packet parsing and the H.264/H.265 depacketizers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from agent.errors import ProtocolError
from agent.proto.rtp import (
    H264Depacketizer,
    RtpPacket,
    RtpStream,
    depacketizer,
    is_rtcp,
    packetizer,
    rtcp_sender_report,
)
from tests.fuzz._support import InputCount, fuzz_settings, mutated

COUNT = InputCount("RTP/RTCP")


def _seeds() -> list[bytes]:
    """A key frame (SPS, PPS, fragmented IDR), a packet with CSRCs and an extension, RTCP."""
    stream = RtpStream(96, ssrc=0x1234, sequence=1, timestamp_offset=0)
    nals = [b"\x67" + bytes(20), b"\x68\xce\x3c\x80", b"\x65" + bytes(3000)]
    out = [stream.packet(p, 0, m) for p, m in packetizer("H264", 1200).packetize(nals)]
    h265 = packetizer("H265", 1200).packetize([b"\x40\x01" + bytes(8), b"\x26\x01" + bytes(2000)])
    out += [stream.packet(p, 1, m) for p, m in h265]
    ext = RtpPacket(96, 7, 8, 9, b"\x01\x02", True, (1, 2), (0xBEDE, bytes(8))).encode()
    rtcp = rtcp_sender_report(
        0x1234, wallclock=1.0, rtp_timestamp=90000, packets=10, octets=1000, cname="cam"
    )
    return [*out, ext, rtcp]


SEEDS = _seeds()


@COUNT.fuzzes
def _parse(data: bytes, unit: H264Depacketizer) -> None:
    is_rtcp(data)
    try:
        packet = RtpPacket.parse(data)
    except ProtocolError:
        return
    assert len(packet.payload) <= len(data)
    with contextlib.suppress(ProtocolError):
        unit.feed(packet)
    assert unit._size <= unit.max_size and len(unit._frag or b"") <= unit.max_size


@fuzz_settings(2000)
@given(st.lists(mutated(SEEDS), min_size=1, max_size=8), st.sampled_from(["H264", "H265"]))
def test_mutated_packets(packets: list[bytes], codec: str) -> None:
    unit = depacketizer(codec)  # type: ignore[arg-type]
    for data in packets:
        _parse(data, unit)
    unit.flush()


@fuzz_settings(2000)
@given(st.binary(max_size=200), st.sampled_from(["H264", "H265"]))
def test_random_bytes(data: bytes, codec: str) -> None:
    _parse(data, depacketizer(codec))  # type: ignore[arg-type]


@fuzz_settings(200)
@given(st.integers(0, 0xFFFF), st.integers(1, 40))
def test_huge_fragmented_nal(seq: int, rounds: int) -> None:
    """FU-A without an end bit: the depacketizer caps what it holds."""
    unit = depacketizer("H264")
    big = b"\x7c\x05" + bytes(60_000)
    for i in range(rounds * 3):
        fu = bytes([0x7C, 0x85 if i == 0 else 0x05]) + big[2:]
        _parse(RtpPacket(96, (seq + i) & 0xFFFF, 1, 2, fu).encode(), unit)


def test_record_count(record_reliability: Callable[..., None]) -> None:
    COUNT.record(record_reliability)
