"""RTP (RFC 3550) packets and stream state; H.264 (RFC 6184), H.265 (RFC 7798) and PCMU payloads."""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.errors import InvalidArgument, LimitExceeded, ProtocolError
from agent.proto.h264 import Codec, H264Nal, H265Nal

RTP_VERSION = 2
SEQ_MASK = 0xFFFF
TS_MASK = 0xFFFFFFFF
DEFAULT_MTU = 1400  # largest RTP payload we emit

PCMU_PAYLOAD_TYPE = 0
PCMU_CLOCK_RATE = 8000
PCMU_PACKET_SAMPLES = 160  # 20 ms

_HEADER = struct.Struct("!BBHII")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet; `extension` is (profile, data) with data a multiple of 4 bytes."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None

    def encode(self) -> bytes:
        if not 0 <= self.payload_type <= 127 or len(self.csrc) > 15:
            raise InvalidArgument("payload type or CSRC count out of range")
        first = (RTP_VERSION << 6) | len(self.csrc) | (0x10 if self.extension else 0)
        out = [
            _HEADER.pack(
                first,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence & SEQ_MASK,
                self.timestamp & TS_MASK,
                self.ssrc & TS_MASK,
            )
        ]
        out.extend(struct.pack("!I", c) for c in self.csrc)
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise InvalidArgument("RTP header extension must be a multiple of 4 bytes")
            out.append(struct.pack("!HH", profile, len(data) // 4) + data)
        out.append(self.payload)
        return b"".join(out)

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one packet; padding is removed."""
        if len(data) < _HEADER.size:
            raise ProtocolError(f"RTP packet of {len(data)} bytes is too short")
        first, second, seq, ts, ssrc = _HEADER.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise ProtocolError(f"RTP version {first >> 6} is not 2")
        pos = _HEADER.size
        count = first & 0x0F
        if len(data) < pos + 4 * count:
            raise ProtocolError("RTP CSRC list truncated")
        csrc = struct.unpack_from(f"!{count}I", data, pos)
        pos += 4 * count
        extension = None
        if first & 0x10:
            if len(data) < pos + 4:
                raise ProtocolError("RTP header extension truncated")
            profile, words = struct.unpack_from("!HH", data, pos)
            pos += 4
            if len(data) < pos + 4 * words:
                raise ProtocolError("RTP header extension truncated")
            extension = (profile, bytes(data[pos : pos + 4 * words]))
            pos += 4 * words
        end = len(data)
        if first & 0x20:
            pad = data[-1]
            if pad == 0 or pad > end - pos:
                raise ProtocolError("invalid RTP padding")
            end -= pad
        return cls(
            second & 0x7F, seq, ts, ssrc, bytes(data[pos:end]), bool(second & 0x80), csrc, extension
        )


def is_rtcp(data: bytes) -> bool:
    """True when `data` looks like RTCP (packet types 192-223, RFC 5761)."""
    return len(data) >= 2 and data[0] >> 6 == RTP_VERSION and 192 <= data[1] <= 223


class RtpStream:
    """Sender state of one RTP stream: SSRC, 16-bit sequence, 32-bit timestamp offset."""

    def __init__(
        self,
        payload_type: int,
        *,
        ssrc: int | None = None,
        sequence: int | None = None,
        timestamp_offset: int | None = None,
    ) -> None:
        self.payload_type = payload_type
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc & TS_MASK
        self._seq = secrets.randbits(16) if sequence is None else sequence & SEQ_MASK
        self._offset = secrets.randbits(32) if timestamp_offset is None else timestamp_offset
        self.packets = 0
        self.octets = 0

    @property
    def next_sequence(self) -> int:
        """Sequence number of the next packet."""
        return self._seq

    def rtp_timestamp(self, ticks: int) -> int:
        """RTP timestamp for a media time in clock ticks (offset added, 32-bit wrap)."""
        return (self._offset + ticks) & TS_MASK

    def packet(self, payload: bytes, ticks: int, marker: bool = False) -> bytes:
        """Build the next packet for `payload` at media time `ticks`."""
        header = _HEADER.pack(
            0x80,
            (0x80 if marker else 0) | self.payload_type,
            self._seq,
            (self._offset + ticks) & TS_MASK,
            self.ssrc,
        )
        self._seq = (self._seq + 1) & SEQ_MASK
        self.packets += 1
        self.octets += len(payload)
        return header + payload


NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
RTCP_SR = 200
RTCP_SDES = 202


def rtcp_sender_report(
    ssrc: int, *, wallclock: float, rtp_timestamp: int, packets: int, octets: int, cname: str
) -> bytes:
    """A compound RTCP packet: a sender report without report blocks, then SDES CNAME.

    `wallclock` is Unix time; it goes out as the NTP timestamp paired with `rtp_timestamp`.
    """
    ntp = wallclock + NTP_EPOCH_OFFSET
    seconds = int(ntp)
    fraction = int((ntp - seconds) * (1 << 32)) & TS_MASK
    report = struct.pack(
        "!BBHIIIIII",
        0x80,
        RTCP_SR,
        6,
        ssrc & TS_MASK,
        seconds & TS_MASK,
        fraction,
        rtp_timestamp & TS_MASK,
        packets & TS_MASK,
        octets & TS_MASK,
    )
    name = cname.encode()[:255]
    item = bytes((1, len(name))) + name + b"\x00"  # CNAME, then the END item
    item += b"\x00" * (-len(item) % 4)
    sdes = struct.pack("!BBHI", 0x81, RTCP_SDES, len(item) // 4 + 1, ssrc & TS_MASK) + item
    return report + sdes


Payloads = list[tuple[bytes, bool]]  # (RTP payload, marker)


class H264Packetizer:
    """Access units to RTP payloads: single NAL unit packets and FU-A (RFC 6184)."""

    fu_overhead = 2

    def __init__(self, mtu: int = DEFAULT_MTU) -> None:
        if mtu < 64:
            raise InvalidArgument(f"MTU {mtu} is too small")
        self.mtu = mtu

    def packetize(self, nals: Sequence[bytes]) -> Payloads:
        """Payloads of one access unit; the marker is set on the last one."""
        out: Payloads = []
        for nal in nals:
            if not nal:
                continue
            if len(nal) <= self.mtu:
                out.append((nal, False))
            else:
                out.extend((chunk, False) for chunk in self._fragments(nal))
        if out:
            out[-1] = (out[-1][0], True)
        return out

    def _fragments(self, nal: bytes) -> list[bytes]:
        indicator = bytes(((nal[0] & 0xE0) | H264Nal.FU_A,))
        kind = nal[0] & 0x1F
        return self._split(nal[1:], lambda s, e: indicator + bytes((s | e | kind,)))

    def _split(self, data: bytes, header: Callable[[int, int], bytes]) -> list[bytes]:
        size = self.mtu - self.fu_overhead
        chunks = []
        for pos in range(0, len(data), size):
            start = 0x80 if pos == 0 else 0
            end = 0x40 if pos + size >= len(data) else 0
            chunks.append(header(start, end) + data[pos : pos + size])
        return chunks


class H265Packetizer(H264Packetizer):
    """Access units to RTP payloads: single NAL unit packets and FU (RFC 7798)."""

    fu_overhead = 3

    def _fragments(self, nal: bytes) -> list[bytes]:
        head = bytes(((nal[0] & 0x81) | (H265Nal.FU << 1), nal[1]))
        kind = (nal[0] >> 1) & 0x3F
        return self._split(nal[2:], lambda s, e: head + bytes((s | e | kind,)))


def packetizer(codec: Codec, mtu: int = DEFAULT_MTU) -> H264Packetizer:
    """The packetizer for `codec`."""
    return H264Packetizer(mtu) if codec == "H264" else H265Packetizer(mtu)


def pcmu_payloads(data: bytes, samples: int = PCMU_PACKET_SAMPLES) -> list[bytes]:
    """Cut mu-law audio (one byte per sample) into payloads of `samples` samples."""
    return [data[pos : pos + samples] for pos in range(0, len(data), samples)]


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """NAL units sharing one RTP timestamp."""

    timestamp: int
    nals: tuple[bytes, ...]


class H264Depacketizer:
    """RTP packets to access units: single NAL, STAP-A and FU-A (RFC 6184)."""

    max_size = 4 * 1024 * 1024

    def __init__(self) -> None:
        self._seq: int | None = None
        self._ts: int | None = None
        self._nals: list[bytes] = []
        self._size = 0
        self._frag: bytearray | None = None
        self.lost = 0

    def feed(self, packet: RtpPacket) -> list[AccessUnit]:
        """Consume one packet; return the access units it completes."""
        units: list[AccessUnit] = []
        if self._seq is not None and packet.sequence != (self._seq + 1) & SEQ_MASK:
            self.lost += (packet.sequence - self._seq - 1) & SEQ_MASK
            self._frag = None
        self._seq = packet.sequence
        if self._nals and packet.timestamp != self._ts:
            units.append(self._emit())
        self._ts = packet.timestamp
        for nal in self._unpack(packet.payload):
            self._size += len(nal)
            self._nals.append(nal)
        if self._size > self.max_size:
            self._nals.clear()
            self._size = 0
            raise LimitExceeded(f"access unit larger than {self.max_size} bytes")
        if packet.marker and self._nals:
            units.append(self._emit())
        return units

    def flush(self) -> list[AccessUnit]:
        """The pending access unit, if any (at end of stream)."""
        return [self._emit()] if self._nals else []

    def _emit(self) -> AccessUnit:
        assert self._ts is not None
        unit = AccessUnit(self._ts, tuple(self._nals))
        self._nals = []
        self._size = 0
        return unit

    def _fragment(self, start: bool, end: bool, head: bytes, data: bytes) -> list[bytes]:
        if start:
            self._frag = bytearray(head)
        elif self._frag is None:
            return []  # the start was lost: drop until the next one
        self._frag += data
        if len(self._frag) > self.max_size:
            self._frag = None
            raise LimitExceeded(f"fragmented NAL unit larger than {self.max_size} bytes")
        if not end:
            return []
        nal = bytes(self._frag)
        self._frag = None
        return [nal]

    def _unpack(self, payload: bytes) -> list[bytes]:
        if not payload:
            raise ProtocolError("empty H.264 RTP payload")
        kind = payload[0] & 0x1F
        if 1 <= kind <= 23:
            return [payload]
        if kind == H264Nal.STAP_A:
            return _aggregated(payload, 1)
        if kind == H264Nal.FU_A:
            if len(payload) < 3:
                raise ProtocolError("truncated FU-A packet")
            fu = payload[1]
            head = bytes(((payload[0] & 0xE0) | (fu & 0x1F),))
            return self._fragment(bool(fu & 0x80), bool(fu & 0x40), head, payload[2:])
        raise ProtocolError(f"unsupported H.264 RTP packet type {kind}")


class H265Depacketizer(H264Depacketizer):
    """RTP packets to access units: single NAL, AP and FU (RFC 7798, no DONL)."""

    def _unpack(self, payload: bytes) -> list[bytes]:
        if len(payload) < 3:
            raise ProtocolError("truncated H.265 RTP payload")
        kind = (payload[0] >> 1) & 0x3F
        if kind < H265Nal.AP:
            return [payload]
        if kind == H265Nal.AP:
            return _aggregated(payload, 2)
        if kind == H265Nal.FU:
            fu = payload[2]
            head = bytes(((payload[0] & 0x81) | ((fu & 0x3F) << 1), payload[1]))
            return self._fragment(bool(fu & 0x80), bool(fu & 0x40), head, payload[3:])
        raise ProtocolError(f"unsupported H.265 RTP packet type {kind}")


def depacketizer(codec: Codec) -> H264Depacketizer:
    """The depacketizer for `codec`."""
    return H264Depacketizer() if codec == "H264" else H265Depacketizer()


def _aggregated(payload: bytes, pos: int) -> list[bytes]:
    nals = []
    while pos < len(payload):
        if pos + 2 > len(payload):
            raise ProtocolError("truncated aggregation packet")
        size = int.from_bytes(payload[pos : pos + 2], "big")
        pos += 2
        if size == 0 or pos + size > len(payload):
            raise ProtocolError("invalid NAL unit size in aggregation packet")
        nals.append(payload[pos : pos + size])
        pos += size
    return nals
