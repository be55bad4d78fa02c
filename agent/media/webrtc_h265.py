"""H.265 in aiortc for the live view's pass-through: an RFC 7798 payloader and its registration.

aiortc (1.16) has no H.265 (aiortc/aiortc#977). Its video codecs are a module-level table,
`aiortc.codecs.CODECS["video"]`, read when an offer is negotiated, and its sender gets a
codec's packer from `aiortc.codecs.get_encoder`, a name `aiortc.rtcrtpsender` imports at load.
`enable()` patches exactly these, once per process:

- appends video/H265 (clock 90 kHz, no fmtp, nack/pli/remb feedback) and its video/rtx to
  `CODECS["video"]`, on the first free dynamic payload types, after aiortc's own codecs (its
  offers keep listing VP8 and H.264 first; an answer uses the offer's payload types anyway);
- replaces `get_encoder` in `aiortc.codecs` and `aiortc.rtcrtpsender` by a wrapper that returns
  `H265Payloader` for video/H265 and calls aiortc's own function for everything else.

Nothing else of aiortc changes: aiortc still cannot decode H.265 (a peer of this process that
receives it has no decoder), and `H265Payloader.encode()` refuses pictures: H.265 is only
passed through, as the camera encoded it. The patch is applied only to the aiortc versions it was
checked against and only when the internals look as expected; otherwise `enable()` logs once,
returns False and the live view answers with H.264 as before.

Payloads (RFC 7798 section 4.4): a NAL unit of up to `PACKET_MAX` bytes (aiortc's H.264 limit)
is sent as it is (single NAL unit packet); a larger one in fragmentation units (type 49) whose
payload header keeps the NAL's F bit, layer id and TID, with S on the first and E on the last
fragment. No aggregation packets.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import aiortc
import aiortc.codecs
import aiortc.rtcpeerconnection
import aiortc.rtcrtpsender
from aiortc.codecs.base import Encoder
from aiortc.codecs.h264 import PACKET_MAX
from aiortc.mediastreams import VIDEO_TIME_BASE, convert_timebase
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters
from av.frame import Frame
from av.packet import Packet

from agent.errors import Unsupported

log = logging.getLogger(__name__)

MIME_TYPE = "video/H265"
#: aiortc versions whose internals `enable()` was checked against.
SUPPORTED_AIORTC = ("1.16.",)
#: NAL unit type of a fragmentation unit (RFC 7798 section 4.4.3).
FU_TYPE = 49
#: Payload header (2 bytes) and FU header (1 byte).
FU_OVERHEAD = 3
#: NAL unit types: VPS, SPS, PPS; IRAP pictures are 16..23 (BLA, IDR, CRA and reserved IRAP).
VPS, SPS, PPS = 32, 33, 34
IRAP = range(16, 24)

_lock = threading.Lock()
_enabled: bool | None = None


def nal_type(nal: bytes) -> int:
    """The type of an H.265 NAL unit (6 bits of its 2-byte header)."""
    return (nal[0] >> 1) & 0x3F


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B buffer (start codes of 3 or 4 bytes), without start codes;
    a buffer without a start code is one NAL unit."""
    starts: list[int] = []  # NAL positions
    i = data.find(b"\x00\x00\x01")
    while i != -1:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    if not starts:
        return [data] if data else []
    nals = []
    for n, pos in enumerate(starts):
        end = starts[n + 1] - 3 if n + 1 < len(starts) else len(data)
        # a NAL unit never ends with a zero byte: zeros there belong to the next start code
        nal = data[pos:end].rstrip(b"\x00")
        if len(nal) >= 2:
            nals.append(nal)
    return nals


def fragment(nal: bytes, limit: int = PACKET_MAX) -> list[bytes]:
    """A NAL unit larger than `limit` as FU payloads of at most `limit` bytes each."""
    if limit <= FU_OVERHEAD:
        raise ValueError("payload limit too small")
    header = bytes([(nal[0] & 0x81) | (FU_TYPE << 1), nal[1]])  # F, layer id, TID kept
    kind = nal_type(nal)
    body = nal[2:]
    step = limit - FU_OVERHEAD
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    out = []
    for n, chunk in enumerate(chunks):
        fu = kind | (0x80 if n == 0 else 0) | (0x40 if n == len(chunks) - 1 else 0)
        out.append(header + bytes([fu]) + chunk)
    return out


def packetize(nals: list[bytes], limit: int = PACKET_MAX) -> list[bytes]:
    """RTP payloads for one access unit: single NAL unit packets and fragmentation units."""
    out: list[bytes] = []
    for nal in nals:
        if len(nal) <= limit:
            out.append(nal)
        else:
            out.extend(fragment(nal, limit))
    return out


def is_irap(data: bytes) -> bool:
    """True when an Annex B access unit holds an IRAP picture (a point to start decoding)."""
    return any(nal_type(nal) in IRAP for nal in split_annexb(data))


def has_parameter_sets(data: bytes) -> bool:
    """True when an Annex B buffer holds a VPS, an SPS and a PPS."""
    return {VPS, SPS, PPS} <= {nal_type(nal) for nal in split_annexb(data)}


def parameter_sets(extradata: bytes | None) -> bytes:
    """VPS/SPS/PPS as Annex B from H.265 extradata (Annex B or hvcC, ISO/IEC 14496-15
    8.3.3.1); b"" if there are none."""
    if not extradata:
        return b""
    if extradata.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
        return b"".join(
            b"\x00\x00\x00\x01" + n
            for n in split_annexb(extradata)
            if nal_type(n) in (VPS, SPS, PPS)
        )
    if len(extradata) < 23 or extradata[0] != 1:
        return b""
    out = bytearray()
    pos = 22
    try:
        arrays = extradata[pos]
        pos += 1
        for _ in range(arrays):
            pos += 1  # array_completeness, reserved, NAL_unit_type
            count = int.from_bytes(extradata[pos : pos + 2], "big")
            pos += 2
            for _ in range(count):
                size = int.from_bytes(extradata[pos : pos + 2], "big")
                pos += 2
                nal = extradata[pos : pos + size]
                if len(nal) != size:
                    return b""
                pos += size
                if size >= 2 and nal_type(nal) in (VPS, SPS, PPS):
                    out += b"\x00\x00\x00\x01" + nal
    except IndexError:
        return b""
    return bytes(out)


class H265Payloader(Encoder):
    """aiortc's "encoder" for video/H265: packs the camera's access units, never encodes."""

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        raise Unsupported("H.265 is passed through only: no H.265 encoder")

    def pack(self, packet: Packet[Any]) -> tuple[list[bytes], int]:
        assert packet.pts is not None
        assert packet.time_base is not None
        timestamp = convert_timebase(packet.pts, packet.time_base, VIDEO_TIME_BASE)
        return packetize(split_annexb(bytes(packet))), timestamp


def _free_payload_types(table: dict[str, list[RTCRtpCodecParameters]]) -> tuple[int, int]:
    used = {c.payloadType for codecs in table.values() for c in codecs}
    free = [pt for pt in range(96, 128) if pt not in used]
    if len(free) < 2:
        raise LookupError("no free dynamic payload types")
    return free[0], free[1]


def _check() -> str | None:
    """Why the patch cannot be applied to the installed aiortc (None: it can)."""
    version = str(getattr(aiortc, "__version__", ""))
    if not version.startswith(SUPPORTED_AIORTC):
        return f"aiortc {version or '(unknown version)'} is not one H.265 was checked with"
    table = getattr(aiortc.codecs, "CODECS", None)
    if not isinstance(table, dict) or not isinstance(table.get("video"), list):
        return "aiortc.codecs.CODECS is not the expected table"
    video: list[Any] = table["video"]
    if getattr(aiortc.rtcpeerconnection, "CODECS", None) is not table:
        return "aiortc.rtcpeerconnection does not negotiate from aiortc.codecs.CODECS"
    if not callable(getattr(aiortc.codecs, "get_encoder", None)):
        return "aiortc.codecs.get_encoder is missing"
    if getattr(aiortc.rtcrtpsender, "get_encoder", None) is not aiortc.codecs.get_encoder:
        return "aiortc.rtcrtpsender does not use aiortc.codecs.get_encoder"
    if any(c.mimeType.lower() == MIME_TYPE.lower() for c in video):
        return "aiortc already lists video/H265"
    return None


def _wrap(original: Callable[[RTCRtpCodecParameters], Encoder]) -> Callable[..., Encoder]:
    def get_encoder(codec: RTCRtpCodecParameters) -> Encoder:
        if codec.mimeType.lower() == MIME_TYPE.lower():
            return H265Payloader()
        return original(codec)

    get_encoder.__wrapped__ = original  # type: ignore[attr-defined]
    return get_encoder


def enable() -> bool:
    """Register video/H265 in aiortc (see the module's text); True when H.265 can be sent.
    Idempotent; when aiortc is not as expected, logs once and returns False."""
    global _enabled
    with _lock:
        if _enabled is not None:
            return _enabled
        reason = _check()
        if reason is not None:
            log.warning("WebRTC H.265 pass-through not enabled: %s; H.264 is answered", reason)
            _enabled = False
            return False
        table = aiortc.codecs.CODECS
        pt, rtx_pt = _free_payload_types(table)
        table["video"] += [
            RTCRtpCodecParameters(
                mimeType=MIME_TYPE,
                clockRate=90000,
                payloadType=pt,
                rtcpFeedback=[
                    RTCRtcpFeedback(type="nack"),
                    RTCRtcpFeedback(type="nack", parameter="pli"),
                    RTCRtcpFeedback(type="goog-remb"),
                ],
                parameters={},
            ),
            RTCRtpCodecParameters(
                mimeType="video/rtx", clockRate=90000, payloadType=rtx_pt, parameters={"apt": pt}
            ),
        ]
        wrapper = _wrap(aiortc.codecs.get_encoder)
        aiortc.codecs.get_encoder = wrapper
        aiortc.rtcrtpsender.get_encoder = wrapper  # type: ignore[attr-defined]
        log.info("WebRTC H.265 pass-through enabled (payload types %d, rtx %d)", pt, rtx_pt)
        _enabled = True
        return True
