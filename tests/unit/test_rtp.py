"""RTP packets and stream state, H.264/H.265 packetizers and depacketizers, Annex-B helpers."""

from __future__ import annotations

import base64
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import InvalidArgument, LimitExceeded, ProtocolError
from agent.proto.h264 import (
    ParameterSets,
    is_keyframe,
    join_annexb,
    nal_type,
    parse_sprop_parameter_sets,
    profile_level_id,
    split_annexb,
)
from agent.proto.rtp import (
    H264Depacketizer,
    H264Packetizer,
    H265Depacketizer,
    H265Packetizer,
    RtpPacket,
    RtpStream,
    depacketizer,
    is_rtcp,
    packetizer,
    pcmu_payloads,
    rtcp_sender_report,
)

# Parameter sets libx264 produced for 640x360 (ultrafast, zerolatency).
SPS = base64.b64decode("Z0LAFtoCgL/lhAAAAwAEAAADAHo8WLqA")
PPS = base64.b64decode("aM48gA==")


def h264_nal(kind: int, size: int, fill: int = 0xAB) -> bytes:
    return bytes((0x60 | kind,)) + bytes((fill,)) * (size - 1)


def h265_nal(kind: int, size: int, fill: int = 0xCD) -> bytes:
    return bytes((kind << 1, 0x01)) + bytes((fill,)) * (size - 2)


@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    ext=st.none() | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=8).map(lambda b: b * 4)),
)
def test_packet_round_trip(
    pt: int,
    seq: int,
    ts: int,
    ssrc: int,
    payload: bytes,
    marker: bool,
    csrc: tuple[int, ...],
    ext: tuple[int, bytes] | None,
) -> None:
    packet = RtpPacket(pt, seq, ts, ssrc, payload, marker, csrc, ext)
    data = packet.encode()
    assert data[0] >> 6 == 2
    assert RtpPacket.parse(data) == packet


def test_padding_is_removed_and_bad_packets_rejected() -> None:
    data = bytearray(RtpPacket(96, 1, 2, 3, b"abc").encode() + b"\x00\x00\x03")
    data[0] |= 0x20
    assert RtpPacket.parse(bytes(data)).payload == b"abc"
    for bad in (b"\x80\x60", b"\x40" + bytes(11), b"\x81" + bytes(11), b"\x90" + bytes(13)):
        with pytest.raises(ProtocolError):
            RtpPacket.parse(bad)
    data[-1] = 50
    with pytest.raises(ProtocolError, match="padding"):
        RtpPacket.parse(bytes(data))
    with pytest.raises(InvalidArgument):
        RtpPacket(128, 0, 0, 0).encode()


def test_rtcp_detection() -> None:
    assert is_rtcp(b"\x81\xc9\x00\x07")  # receiver report
    assert not is_rtcp(RtpPacket(96, 1, 2, 3, b"x").encode())


def test_rtcp_sender_report_with_cname() -> None:
    data = rtcp_sender_report(
        0xCAFE, wallclock=0.5, rtp_timestamp=2**32 + 5, packets=10, octets=1000, cname="cam1"
    )
    assert is_rtcp(data)
    report, sdes = data[:28], data[28:]
    assert struct.unpack("!BBHIIIIII", report) == (
        0x80,
        200,
        6,
        0xCAFE,
        2_208_988_800,
        2**31,
        5,
        10,
        1000,
    )
    assert len(sdes) % 4 == 0
    assert struct.unpack("!BBHI", sdes[:8]) == (0x81, 202, len(sdes) // 4 - 1, 0xCAFE)
    assert sdes[8:14] == b"\x01\x04cam1"
    assert set(sdes[14:]) == {0}


def test_stream_sequence_and_timestamp_wrap() -> None:
    stream = RtpStream(96, ssrc=7, sequence=0xFFFE, timestamp_offset=0xFFFFFFF0)
    packets = [RtpPacket.parse(stream.packet(b"p", ticks, ticks == 32)) for ticks in (0, 16, 32)]
    assert [p.sequence for p in packets] == [0xFFFE, 0xFFFF, 0]
    assert [p.timestamp for p in packets] == [0xFFFFFFF0, 0, 16]
    assert [p.marker for p in packets] == [False, False, True]
    assert {p.ssrc for p in packets} == {7}
    assert stream.next_sequence == 1
    assert stream.rtp_timestamp(0x10) == 0
    assert (stream.packets, stream.octets) == (3, 3)


def test_stream_start_values_are_random() -> None:
    streams = [RtpStream(0) for _ in range(8)]
    assert len({s.ssrc for s in streams}) > 1
    assert len({s.next_sequence for s in streams}) > 1
    assert len({s.rtp_timestamp(0) for s in streams}) > 1


nal_sizes = st.lists(st.integers(2, 5000), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(sizes=nal_sizes, mtu=st.integers(64, 1500), seq=st.integers(0, 0xFFFF))
def test_h264_round_trip(sizes: list[int], mtu: int, seq: int) -> None:
    nals = [h264_nal(5 if i == len(sizes) - 1 else 6, s, i) for i, s in enumerate(sizes)]
    payloads = H264Packetizer(mtu).packetize(nals)
    assert all(len(p) <= mtu for p, _ in payloads)
    assert [m for _, m in payloads] == [False] * (len(payloads) - 1) + [True]
    stream = RtpStream(96, sequence=seq)
    depack = H264Depacketizer()
    units = []
    for payload, marker in payloads:
        units += depack.feed(RtpPacket.parse(stream.packet(payload, 3000, marker)))
    assert len(units) == 1
    assert units[0].nals == tuple(nals)
    assert depack.lost == 0


@settings(max_examples=60, deadline=None)
@given(sizes=nal_sizes, mtu=st.integers(64, 1500))
def test_h265_round_trip(sizes: list[int], mtu: int) -> None:
    nals = [h265_nal(19 if i else 32, s + 1, i) for i, s in enumerate(sizes)]
    payloads = H265Packetizer(mtu).packetize(nals)
    assert all(len(p) <= mtu for p, _ in payloads)
    stream = RtpStream(96)
    depack = H265Depacketizer()
    units = []
    for payload, marker in payloads:
        units += depack.feed(RtpPacket.parse(stream.packet(payload, 0, marker)))
    assert [u.nals for u in units] == [tuple(nals)]


def test_fu_a_boundaries() -> None:
    pack = H264Packetizer(100)
    exact = h264_nal(5, 100)
    assert pack.packetize([exact]) == [(exact, True)]
    over = h264_nal(5, 101)
    (first, m1), (second, m2) = pack.packetize([over])
    assert (m1, m2) == (False, True)
    # FU indicator keeps F/NRI and says FU-A; FU header carries S/E bits and the NAL type.
    assert (first[0], first[1], len(first)) == (0x60 | 28, 0x80 | 5, 100)
    assert (second[0], second[1], len(second)) == (0x60 | 28, 0x40 | 5, 2 + 2)
    assert first[2:] + second[2:] == over[1:]


def test_fu_boundaries_h265() -> None:
    nal = h265_nal(1, 250)
    chunks = [p for p, _ in H265Packetizer(100).packetize([nal])]
    assert [len(c) for c in chunks] == [100, 100, 3 + 248 - 194]
    assert [(c[0] >> 1) & 0x3F for c in chunks] == [49, 49, 49]
    assert [c[2] for c in chunks] == [0x80 | 1, 1, 0x40 | 1]


def test_stap_a_and_single_nal_depacketizing() -> None:
    sps, pps, idr = SPS, PPS, h264_nal(5, 40)
    stap = bytes((24,)) + b"".join(len(n).to_bytes(2, "big") + n for n in (sps, pps))
    depack = H264Depacketizer()
    assert depack.feed(RtpPacket(96, 1, 90, 1, stap)) == []
    [unit] = depack.feed(RtpPacket(96, 2, 90, 1, idr, marker=True))
    assert unit.nals == (sps, pps, idr)
    assert unit.timestamp == 90
    with pytest.raises(ProtocolError):
        depack.feed(RtpPacket(96, 3, 90, 1, bytes((24, 0, 50, 1))))
    with pytest.raises(ProtocolError, match="type 25"):
        depack.feed(RtpPacket(96, 4, 90, 1, bytes((25, 1, 2))))


def test_lost_fragment_drops_the_nal_and_timestamp_change_ends_a_unit() -> None:
    nal = h264_nal(1, 350)
    payloads = H264Packetizer(100).packetize([nal])
    depack = H264Depacketizer()
    for seq, (payload, marker) in enumerate(payloads):
        if seq != 1:  # the second fragment is lost
            assert depack.feed(RtpPacket(96, seq, 10, 1, payload, marker)) == []
    assert depack.lost == 1
    small = h264_nal(1, 10)
    assert depack.feed(RtpPacket(96, 10, 20, 1, small)) == []  # no marker
    [unit] = depack.feed(RtpPacket(96, 11, 30, 1, small))
    assert (unit.timestamp, unit.nals) == (20, (small,))
    assert [u.timestamp for u in depack.flush()] == [30]


def test_depacketizer_size_limit() -> None:
    depack = H264Depacketizer()
    depack.max_size = 1000
    payloads = H264Packetizer(400).packetize([h264_nal(5, 1500)])
    packets = [RtpPacket(96, seq, 0, 1, p, m) for seq, (p, m) in enumerate(payloads)]
    assert depack.feed(packets[0]) == depack.feed(packets[1]) == []  # 797 bytes so far
    with pytest.raises(LimitExceeded):
        depack.feed(packets[2])


def test_factories_and_pcmu() -> None:
    assert type(packetizer("H265")) is H265Packetizer
    assert type(depacketizer("H264")) is H264Depacketizer
    with pytest.raises(InvalidArgument):
        H264Packetizer(10)
    tone = bytes(range(256)) * 2
    chunks = pcmu_payloads(tone)
    assert [len(c) for c in chunks] == [160, 160, 160, 32]
    assert b"".join(chunks) == tone


def test_annexb_split_and_join() -> None:
    idr = h264_nal(5, 30)
    stream = b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS + b"\x00\x00\x00\x00\x01" + idr
    nals = split_annexb(stream)
    assert nals == [SPS, PPS, idr]
    assert split_annexb(join_annexb(nals)) == nals
    assert [nal_type("H264", n) for n in nals] == [7, 8, 5]
    assert is_keyframe("H264", nals)
    assert not is_keyframe("H264", [h264_nal(1, 5)])
    assert split_annexb(b"") == []
    with pytest.raises(ProtocolError):
        split_annexb(b"\x12\x00\x00\x01\x65")


def test_parameter_sets_and_fmtp() -> None:
    found = ParameterSets.find("H264", [h264_nal(9, 2), SPS, PPS, h264_nal(5, 20)])
    assert found is not None
    assert found.nals == (SPS, PPS)
    fmtp = found.fmtp()
    assert fmtp["profile-level-id"] == profile_level_id(SPS) == "42C016"
    assert fmtp["packetization-mode"] == "1"
    assert parse_sprop_parameter_sets(fmtp["sprop-parameter-sets"]) == [SPS, PPS]
    assert ParameterSets.find("H264", [SPS]) is None
    with pytest.raises(InvalidArgument):
        profile_level_id(PPS)
    with pytest.raises(ProtocolError):
        parse_sprop_parameter_sets("not base64!")


def test_h265_parameter_sets() -> None:
    vps, sps, pps = h265_nal(32, 20), h265_nal(33, 30), h265_nal(34, 6)
    found = ParameterSets.find("H265", [h265_nal(35, 3), vps, sps, pps, h265_nal(19, 50)])
    assert found is not None
    fmtp = found.fmtp()
    assert base64.b64decode(fmtp["sprop-vps"]) == vps
    assert base64.b64decode(fmtp["sprop-sps"]) == sps
    assert base64.b64decode(fmtp["sprop-pps"]) == pps
    assert is_keyframe("H265", [vps, h265_nal(21, 9)])  # CRA is a random access point
    assert not is_keyframe("H265", [h265_nal(1, 9)])
