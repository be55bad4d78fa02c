"""H.264 and H.265 bitstream helpers: Annex-B splitting, NAL types, parameter sets, SDP fmtp."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from agent.errors import InvalidArgument, ProtocolError

Codec = Literal["H264", "H265"]

START_CODE = b"\x00\x00\x00\x01"


class H264Nal(IntEnum):
    """H.264 NAL unit types (ITU-T H.264 table 7-1, RFC 6184)."""

    SLICE = 1
    IDR = 5
    SEI = 6
    SPS = 7
    PPS = 8
    AUD = 9
    STAP_A = 24
    FU_A = 28


class H265Nal(IntEnum):
    """H.265 NAL unit types (ITU-T H.265 table 7-1, RFC 7798)."""

    TRAIL_R = 1
    BLA_W_LP = 16
    IDR_W_RADL = 19
    IDR_N_LP = 20
    CRA = 21
    RSV_IRAP_23 = 23
    VPS = 32
    SPS = 33
    PPS = 34
    AUD = 35
    PREFIX_SEI = 39
    AP = 48
    FU = 49


def split_annexb(data: bytes) -> list[bytes]:
    """Split an Annex-B byte stream (3- or 4-byte start codes) into NAL units."""
    nals: list[bytes] = []
    start = data.find(b"\x00\x00\x01")
    if start < 0:
        return [data] if data else []
    if start > 0 and data[:start].strip(b"\x00"):
        raise ProtocolError("Annex-B stream does not start with a start code")
    pos = start + 3
    while True:
        nxt = data.find(b"\x00\x00\x01", pos)
        # Zero bytes before a start code belong to it (4-byte form, trailing_zero_8bits).
        nal = data[pos:] if nxt < 0 else data[pos:nxt].rstrip(b"\x00")
        if nal:
            nals.append(nal)
        if nxt < 0:
            return nals
        pos = nxt + 3


def join_annexb(nals: Iterable[bytes]) -> bytes:
    """Join NAL units into an Annex-B stream with 4-byte start codes."""
    return b"".join(START_CODE + nal for nal in nals)


def nal_type(codec: Codec, nal: bytes) -> int:
    """The NAL unit type of `nal` for `codec`."""
    if not nal:
        raise ProtocolError("empty NAL unit")
    return nal[0] & 0x1F if codec == "H264" else (nal[0] >> 1) & 0x3F


def is_keyframe(codec: Codec, nals: Iterable[bytes]) -> bool:
    """True when the access unit holds an IDR (H.264) or IRAP (H.265) picture."""
    for nal in nals:
        kind = nal_type(codec, nal)
        if codec == "H264" and kind == H264Nal.IDR:
            return True
        if codec == "H265" and H265Nal.BLA_W_LP <= kind <= H265Nal.RSV_IRAP_23:
            return True
    return False


_PARAM_TYPES: dict[Codec, tuple[int, ...]] = {
    "H264": (H264Nal.SPS, H264Nal.PPS),
    "H265": (H265Nal.VPS, H265Nal.SPS, H265Nal.PPS),
}


def is_parameter_set(codec: Codec, nal: bytes) -> bool:
    """True for SPS/PPS (and VPS for H.265)."""
    return nal_type(codec, nal) in _PARAM_TYPES[codec]


@dataclass(frozen=True, slots=True)
class ParameterSets:
    """The parameter sets of a stream, in decoding order (H.264: SPS, PPS; H.265: VPS, SPS, PPS)."""

    codec: Codec
    nals: tuple[bytes, ...]

    @classmethod
    def find(cls, codec: Codec, nals: Iterable[bytes]) -> ParameterSets | None:
        """The first complete set found in `nals`, or None."""
        found: dict[int, bytes] = {}
        for nal in nals:
            kind = nal_type(codec, nal)
            if kind in _PARAM_TYPES[codec]:
                found.setdefault(kind, nal)
        if len(found) != len(_PARAM_TYPES[codec]):
            return None
        return cls(codec, tuple(found[t] for t in _PARAM_TYPES[codec]))

    @property
    def sps(self) -> bytes:
        return self.nals[-2]

    def fmtp(self) -> dict[str, str]:
        """SDP fmtp parameters (RFC 6184 section 8.1, RFC 7798 section 7.1)."""
        if self.codec == "H264":
            return {
                "packetization-mode": "1",
                "profile-level-id": profile_level_id(self.sps),
                "sprop-parameter-sets": sprop_parameter_sets(self.nals),
            }
        b64 = [base64.b64encode(nal).decode() for nal in self.nals]
        return {"sprop-vps": b64[0], "sprop-sps": b64[1], "sprop-pps": b64[2]}


def profile_level_id(sps: bytes) -> str:
    """`profile-level-id` (profile_idc, constraint flags, level_idc as hex) of an H.264 SPS."""
    if len(sps) < 4 or sps[0] & 0x1F != H264Nal.SPS:
        raise InvalidArgument("not an H.264 SPS")
    return sps[1:4].hex().upper()


def sprop_parameter_sets(nals: Sequence[bytes]) -> str:
    """Base64 parameter sets joined by commas (RFC 6184 `sprop-parameter-sets`)."""
    return ",".join(base64.b64encode(nal).decode() for nal in nals)


def parse_sprop_parameter_sets(value: str) -> list[bytes]:
    """Decode a `sprop-parameter-sets` value."""
    try:
        return [base64.b64decode(item, validate=True) for item in value.split(",") if item]
    except ValueError as exc:
        raise ProtocolError("invalid sprop-parameter-sets") from exc
