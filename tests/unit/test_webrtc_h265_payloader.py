"""The RFC 7798 payloader of agent/media/webrtc_h265.py: NAL splitting, single NAL unit and
fragmentation unit packets (headers, S/E bits, sizes), RTP timestamps, parameter sets from
extradata, the aiortc registration; and the payloads, sent as an RTP stream on loopback, read by
FFmpeg's own H.265 depayloader (the system `ffmpeg`), whose pictures must equal those of the
bitstream decoded directly."""

from __future__ import annotations

import hashlib
import random
import socket
import struct
import threading
import time
from fractions import Fraction
from pathlib import Path

import aiortc.codecs
import aiortc.rtcrtpsender
import av
import pytest
from aiortc.codecs.h264 import PACKET_MAX
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from agent.errors import Unsupported
from agent.media import webrtc_h265
from agent.media.webrtc_h265 import (
    FU_TYPE,
    H265Payloader,
    fragment,
    has_parameter_sets,
    is_irap,
    nal_type,
    packetize,
    parameter_sets,
    split_annexb,
)
from tests.ports import free_port

FRAMES = 12
SIZE = (640, 360)


def _nal(kind: int, layer: int, tid: int, body: bytes) -> bytes:
    """A NAL unit with the given type, nuh_layer_id and TemporalId (+1 in the header)."""
    return bytes([(kind << 1) | (layer >> 5), ((layer & 0x1F) << 3) | tid]) + body


def _reassemble(payloads: list[bytes]) -> list[bytes]:
    """NAL units from single NAL unit and FU payloads (the test's own reading)."""
    nals: list[bytes] = []
    current: bytearray | None = None
    for p in payloads:
        if nal_type(p) != FU_TYPE:
            assert current is None
            nals.append(p)
            continue
        fu = p[2]
        if fu & 0x80:
            assert current is None
            current = bytearray([(p[0] & 0x81) | ((fu & 0x3F) << 1), p[1]])
        assert current is not None
        current += p[3:]
        if fu & 0x40:
            nals.append(bytes(current))
            current = None
    assert current is None
    return nals


@pytest.fixture(scope="module")
def clip() -> list[bytes]:
    """FRAMES access units of H.265 (libx265, noise: large NAL units), Annex B."""
    rng = random.Random(7)
    enc = av.CodecContext.create("libx265", "w")
    assert isinstance(enc, av.VideoCodecContext)
    enc.width, enc.height = SIZE
    enc.pix_fmt = "yuv420p"
    enc.time_base = Fraction(1, 30)
    enc.framerate = Fraction(30)
    enc.options = {"x265-params": "log-level=error:bframes=0:keyint=6:min-keyint=6:scenecut=0"}
    units: list[bytes] = []
    for i in range(FRAMES):
        frame = av.VideoFrame(*SIZE, "yuv420p")
        for plane in frame.planes:
            plane.update(rng.randbytes(plane.buffer_size))
        frame.pts = i
        units += [bytes(p) for p in enc.encode(frame)]
    units += [bytes(p) for p in enc.encode(None)]
    assert len(units) == FRAMES
    return units


def test_split_annexb_keeps_nal_units_whole() -> None:
    a, b, c = _nal(32, 0, 1, b"\x0c\x01"), _nal(1, 0, 1, b"\x00\x00\x03\x01x"), _nal(19, 0, 1, b"y")
    data = b"\x00\x00\x00\x01" + a + b"\x00\x00\x01" + b + b"\x00\x00\x00\x00\x01" + c
    assert split_annexb(data) == [a, b, c]
    assert split_annexb(a) == [a]  # no start code: one NAL unit
    assert split_annexb(b"") == []


def test_small_nal_units_are_sent_as_they_are() -> None:
    nals = [_nal(1, 0, 1, b"p" * 10), _nal(1, 0, 1, b"q" * (PACKET_MAX - 2))]
    assert packetize(nals) == nals


def test_fragmentation_units_keep_type_layer_and_tid() -> None:
    nal = _nal(19, 37, 3, bytes(range(256)) * 12)  # IDR_W_RADL, layer 37, TemporalId 2
    payloads = fragment(nal)
    assert len(payloads) == -(-(len(nal) - 2) // (PACKET_MAX - 3))
    assert all(len(p) <= PACKET_MAX for p in payloads)
    for n, p in enumerate(payloads):
        assert nal_type(p) == FU_TYPE
        assert p[0] & 0x81 == nal[0] & 0x81 and p[1] == nal[1], "F, layer id and TID kept"
        fu = p[2]
        assert fu & 0x3F == 19
        assert bool(fu & 0x80) == (n == 0), "S on the first fragment only"
        assert bool(fu & 0x40) == (n == len(payloads) - 1), "E on the last fragment only"
    assert b"".join(p[3:] for p in payloads) == nal[2:]
    assert _reassemble(payloads) == [nal]
    assert packetize([nal]) == payloads


def test_one_byte_over_the_limit_is_fragmented() -> None:
    nal = _nal(1, 0, 1, b"z" * (PACKET_MAX - 1))
    payloads = packetize([nal])
    assert [p[2] & 0xC0 for p in payloads] == [0x80, 0x40]
    assert _reassemble(payloads) == [nal]


def test_pack_gives_90khz_timestamps_and_refuses_pictures(clip: list[bytes]) -> None:
    payloader = H265Payloader()
    packet = av.Packet(clip[0])
    packet.pts, packet.time_base = 7, Fraction(1, 30)
    payloads, timestamp = payloader.pack(packet)
    assert timestamp == 21_000
    assert _reassemble(payloads) == split_annexb(clip[0])
    packet.pts, packet.time_base = 123_456, Fraction(1, 90_000)
    assert payloader.pack(packet)[1] == 123_456
    with pytest.raises(Unsupported):
        payloader.encode(av.VideoFrame(16, 16, "yuv420p"))


def test_keyframes_and_parameter_sets(clip: list[bytes]) -> None:
    assert [is_irap(u) for u in clip] == [i % 6 == 0 for i in range(FRAMES)]
    assert has_parameter_sets(clip[0]) and not has_parameter_sets(clip[1])
    sets = parameter_sets(clip[0])
    assert [nal_type(n) for n in split_annexb(sets)] == [32, 33, 34]
    # the same sets in hvcC form (ISO/IEC 14496-15): 22 bytes of header, then the arrays
    hvcc = bytearray([1]) + bytes(21) + bytes([3])
    for nal in split_annexb(sets):
        hvcc += bytes([0x80 | nal_type(nal)]) + struct.pack(">HH", 1, len(nal)) + nal
    assert parameter_sets(bytes(hvcc)) == sets
    assert parameter_sets(bytes(hvcc[:-3])) == b"", "a truncated hvcC gives nothing"
    assert parameter_sets(None) == b"" and parameter_sets(b"\x02" * 30) == b""


def test_enable_registers_h265_once() -> None:
    assert webrtc_h265.enable() is True
    assert webrtc_h265.enable() is True
    video = aiortc.codecs.CODECS["video"]
    h265 = [c for c in video if c.mimeType == "video/H265"]
    assert len(h265) == 1
    pt = h265[0].payloadType
    assert [c.parameters.get("apt") for c in video if c.mimeType == "video/rtx"].count(pt) == 1
    pts = [c.payloadType for kind in aiortc.codecs.CODECS.values() for c in kind]
    assert len(pts) == len(set(pts)), "payload types are free ones"
    get = aiortc.rtcrtpsender.get_encoder
    assert get is aiortc.codecs.get_encoder
    assert isinstance(get(h265[0]), H265Payloader)
    h264 = next(c for c in video if c.mimeType == "video/H264")
    assert type(get(h264)).__name__ == "H264Encoder"
    assert webrtc_h265._check() == "aiortc already lists video/H265"


def test_other_aiortc_versions_are_not_patched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "2.0.0")
    monkeypatch.setattr(webrtc_h265, "_enabled", None)
    before = list(aiortc.codecs.CODECS["video"])
    encoder = aiortc.rtcrtpsender.get_encoder
    assert webrtc_h265.enable() is False
    assert aiortc.codecs.CODECS["video"] == before
    assert aiortc.rtcrtpsender.get_encoder is encoder
    codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
    assert type(encoder(codec)).__name__ == "Vp8Encoder"


def _rtp(payloads: list[bytes], timestamp: int, seq: int) -> list[bytes]:
    out = []
    for n, p in enumerate(payloads):
        marker = 0x80 if n == len(payloads) - 1 else 0
        header = struct.pack(">BBHII", 0x80, marker | 96, (seq + n) & 0xFFFF, timestamp, 0x1234)
        out.append(header + p)
    return out


def _udp_bound(port: int) -> bool:
    text = Path("/proc/net/udp").read_text()
    return any(line.split()[1].endswith(f":{port:04X}") for line in text.splitlines()[1:])


def _pictures(units: list[bytes]) -> list[str]:
    """Digests of the pictures FFmpeg's H.265 decoder makes of these access units."""
    decoder = av.CodecContext.create("hevc", "r")
    out: list[str] = []
    for unit in [*units, None]:
        for frame in decoder.decode(av.Packet(unit) if unit is not None else None):
            assert isinstance(frame, av.VideoFrame)
            assert (frame.width, frame.height) == SIZE
            digest = hashlib.md5(usedforsecurity=False)
            for plane in frame.planes:
                digest.update(bytes(plane))
            out.append(digest.hexdigest())
    return out


def _receive(sdp: Path, count: int, out: list[bytes]) -> None:
    """Access units FFmpeg's RTP demuxer (libavformat rtpdec_hevc) makes of the stream."""
    options = {"protocol_whitelist": "file,udp,rtp", "analyzeduration": "0", "probesize": "32"}
    with av.open(str(sdp), format="sdp", options=options, timeout=10.0) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                out.append(bytes(packet))
            if len(out) == count:
                return


def test_ffmpeg_reads_the_rtp_stream_as_the_bitstream(clip: list[bytes], tmp_path: Path) -> None:
    port = next(p for p in iter(free_port, 0) if p % 2 == 0)  # RTP even, RTCP next
    sdp = tmp_path / "clip.sdp"
    sdp.write_text(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=video {port} RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\n",
        encoding="ascii",
    )
    received: list[bytes] = []
    reader = threading.Thread(target=_receive, args=(sdp, FRAMES, received), name="rtp-reader")
    reader.start()
    try:
        deadline = time.monotonic() + 10
        while not _udp_bound(port):
            assert reader.is_alive(), "the RTP reader did not open"
            assert time.monotonic() < deadline, "the RTP reader did not open its port"
            time.sleep(0.02)
        payloader = H265Payloader()
        seq, sent, fragmented = random.Random(1).randrange(65536), 0, 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i, unit in enumerate(clip):
                packet = av.Packet(unit)
                packet.pts, packet.time_base = i, Fraction(1, 30)
                payloads, timestamp = payloader.pack(packet)
                assert timestamp == i * 3000
                fragmented += sum(1 for p in payloads if nal_type(p) == FU_TYPE)
                for datagram in _rtp(payloads, timestamp, seq):
                    sock.sendto(datagram, ("127.0.0.1", port))
                    sent += 1
                    if sent % 16 == 0:
                        time.sleep(0.002)  # paced: nothing lost in the socket buffers
                seq += len(payloads)
            # an access unit delimiter after the clip: the demuxer hands on the last unit at once
            aud = _rtp([_nal(35, 0, 1, b"\x50")], FRAMES * 3000, seq)
            sock.sendto(aud[0], ("127.0.0.1", port))
    finally:
        reader.join(15)
    assert not reader.is_alive()
    assert fragmented > 100, "the clip exercises fragmentation units"
    assert len(received) == FRAMES
    assert [split_annexb(u) for u in received] == [split_annexb(u) for u in clip]
    assert _pictures(received) == _pictures(clip)
    assert len(_pictures(clip)) == FRAMES
