"""Tunnel multiplexer wire format: frame types, payload codecs and an incremental decoder.

Every frame is a 12-byte header `!BBHII` (version, type, flags, stream id, payload length)
followed by the payload. See docs/tunnel.md.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import IntEnum

from agent.errors import InvalidArgument, LimitExceeded, ProtocolError

VERSION = 1
HEADER = struct.Struct("!BBHII")
HEADER_SIZE = HEADER.size  # 12
MAX_DATA = 64 * 1024  # largest DATA payload
MAX_WINDOW = 2**31 - 1  # largest flow-control window
MAX_STREAM_ID = 2**32 - 1
MAX_HOST = 253
MAX_REQUEST_ID = 64
MAX_TEXT = 256  # reason texts (REFUSE, RESET, GOAWAY), UTF-8 bytes
PING_SIZE = 8

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_OPEN_FIXED = struct.Struct("!IHBB")  # window, port, kind, host length
_GOAWAY_FIXED = struct.Struct("!IH")  # last stream id, code
_HOST_RE = re.compile(r"[A-Za-z0-9._:%-]{1,253}")
_REQUEST_ID_RE = re.compile(r"[\x21-\x7e]{0,64}")


class FrameType(IntEnum):
    """The frame type byte."""

    OPEN = 1
    ACCEPT = 2
    REFUSE = 3
    DATA = 4
    WINDOW_UPDATE = 5
    FIN = 6
    CLOSE = 7
    RESET = 8
    PING = 9
    PONG = 10
    GOAWAY = 11


class TargetKind(IntEnum):
    """What the tunnel carries; the agent may apply per-kind policy."""

    RTSP = 1
    HTTP = 2


class ErrorCode(IntEnum):
    """Reason codes of REFUSE, RESET and GOAWAY. Unknown codes are kept as plain ints."""

    NORMAL = 0
    PROTOCOL = 1
    FLOW_CONTROL = 2
    STREAM_CLOSED = 3
    REFUSED = 4
    TOO_MANY_STREAMS = 5
    GOING_AWAY = 6
    INTERNAL = 7
    CANCEL = 8
    FRAME_SIZE = 9
    CONNECT_FAILED = 10
    TIMEOUT = 11
    NOT_ALLOWED = 12


_CONNECTION_TYPES = frozenset({FrameType.PING, FrameType.PONG, FrameType.GOAWAY})
# (minimum, maximum) payload length per type; DATA's maximum is the decoder's limit.
_LENGTHS: dict[int, tuple[int, int]] = {
    FrameType.OPEN: (_OPEN_FIXED.size + 1 + 1, _OPEN_FIXED.size + MAX_HOST + 1 + MAX_REQUEST_ID),
    FrameType.ACCEPT: (4, 4),
    FrameType.REFUSE: (2, 2 + MAX_TEXT),
    FrameType.DATA: (1, MAX_DATA),
    FrameType.WINDOW_UPDATE: (4, 4),
    FrameType.FIN: (0, 0),
    FrameType.CLOSE: (0, 0),
    FrameType.RESET: (2, 2 + MAX_TEXT),
    FrameType.PING: (PING_SIZE, PING_SIZE),
    FrameType.PONG: (PING_SIZE, PING_SIZE),
    FrameType.GOAWAY: (_GOAWAY_FIXED.size, _GOAWAY_FIXED.size + MAX_TEXT),
}


@dataclass(frozen=True, slots=True)
class Target:
    """Where a tunnel goes: a camera's host (name or IP literal) and TCP port."""

    host: str
    port: int
    kind: TargetKind
    request_id: str = ""

    def __post_init__(self) -> None:
        if not _HOST_RE.fullmatch(self.host):
            raise InvalidArgument("tunnel host must be 1-253 chars of [A-Za-z0-9._:%-]")
        if not 1 <= self.port <= 65535:
            raise InvalidArgument("tunnel port out of range")
        if not _REQUEST_ID_RE.fullmatch(self.request_id):
            raise InvalidArgument("request id must be up to 64 printable ASCII chars")


@dataclass(frozen=True, slots=True)
class OpenFrame:
    stream_id: int
    target: Target
    window: int  # the opener's initial receive window


@dataclass(frozen=True, slots=True)
class AcceptFrame:
    stream_id: int
    window: int  # the acceptor's initial receive window


@dataclass(frozen=True, slots=True)
class RefuseFrame:
    stream_id: int
    code: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DataFrame:
    stream_id: int
    payload: memoryview | bytes


@dataclass(frozen=True, slots=True)
class WindowUpdateFrame:
    stream_id: int
    increment: int


@dataclass(frozen=True, slots=True)
class FinFrame:
    stream_id: int


@dataclass(frozen=True, slots=True)
class CloseFrame:
    stream_id: int


@dataclass(frozen=True, slots=True)
class ResetFrame:
    stream_id: int
    code: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PingFrame:
    opaque: bytes


@dataclass(frozen=True, slots=True)
class PongFrame:
    opaque: bytes


@dataclass(frozen=True, slots=True)
class GoAwayFrame:
    last_stream_id: int
    code: int
    reason: str = ""


Frame = (
    OpenFrame
    | AcceptFrame
    | RefuseFrame
    | DataFrame
    | WindowUpdateFrame
    | FinFrame
    | CloseFrame
    | ResetFrame
    | PingFrame
    | PongFrame
    | GoAwayFrame
)


def _check_id(stream_id: int) -> None:
    if not 1 <= stream_id <= MAX_STREAM_ID:
        raise InvalidArgument("stream id out of range")


def _check_u32(value: int, low: int, high: int, what: str) -> None:
    if not low <= value <= high:
        raise InvalidArgument(f"{what} out of range")


def _reason(code: int, reason: str) -> bytes:
    if not 0 <= code <= 0xFFFF:
        raise InvalidArgument("error code out of range")
    text = reason.encode()
    if len(text) > MAX_TEXT:
        raise InvalidArgument("reason text too long")
    return _U16.pack(code) + text


def _frame(ftype: FrameType, stream_id: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(VERSION, ftype, 0, stream_id, len(payload)) + payload


def data_header(stream_id: int, length: int) -> bytes:
    """The header of a DATA frame; the payload follows it unchanged."""
    _check_id(stream_id)
    if not 1 <= length <= MAX_DATA:
        raise InvalidArgument("DATA payload must be 1..65536 bytes")
    return HEADER.pack(VERSION, FrameType.DATA, 0, stream_id, length)


def write_data(out: bytearray, stream_id: int, payload: memoryview | bytes) -> None:
    """Append one DATA frame to `out` (the payload is copied once, into `out`)."""
    out += data_header(stream_id, len(payload))
    out += payload


def encode(frame: Frame) -> bytes:
    """Encode one frame; raises InvalidArgument for out-of-range fields."""
    if isinstance(frame, DataFrame):
        return data_header(frame.stream_id, len(frame.payload)) + bytes(frame.payload)
    if isinstance(frame, PingFrame | PongFrame):
        if len(frame.opaque) != PING_SIZE:
            raise InvalidArgument("ping payload must be 8 bytes")
        ftype = FrameType.PING if isinstance(frame, PingFrame) else FrameType.PONG
        return _frame(ftype, 0, frame.opaque)
    if isinstance(frame, GoAwayFrame):
        _check_u32(frame.last_stream_id, 0, MAX_STREAM_ID, "last stream id")
        code_text = _reason(frame.code, frame.reason)
        payload = _U32.pack(frame.last_stream_id) + code_text
        return _frame(FrameType.GOAWAY, 0, payload)
    _check_id(frame.stream_id)
    if isinstance(frame, OpenFrame):
        _check_u32(frame.window, 0, MAX_WINDOW, "window")
        t = frame.target
        host, rid = t.host.encode("ascii"), t.request_id.encode("ascii")
        fixed = _OPEN_FIXED.pack(frame.window, t.port, t.kind, len(host))
        return _frame(FrameType.OPEN, frame.stream_id, fixed + host + bytes([len(rid)]) + rid)
    if isinstance(frame, AcceptFrame):
        _check_u32(frame.window, 0, MAX_WINDOW, "window")
        return _frame(FrameType.ACCEPT, frame.stream_id, _U32.pack(frame.window))
    if isinstance(frame, WindowUpdateFrame):
        _check_u32(frame.increment, 1, MAX_WINDOW, "window increment")
        return _frame(FrameType.WINDOW_UPDATE, frame.stream_id, _U32.pack(frame.increment))
    if isinstance(frame, RefuseFrame):
        return _frame(FrameType.REFUSE, frame.stream_id, _reason(frame.code, frame.reason))
    if isinstance(frame, ResetFrame):
        return _frame(FrameType.RESET, frame.stream_id, _reason(frame.code, frame.reason))
    if isinstance(frame, FinFrame):
        return _frame(FrameType.FIN, frame.stream_id)
    return _frame(FrameType.CLOSE, frame.stream_id)


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError("reason text is not UTF-8") from exc


def _u32_in(raw: bytes, low: int, what: str) -> int:
    value: int = _U32.unpack_from(raw)[0]
    if not low <= value <= MAX_WINDOW:
        raise ProtocolError(f"{what} out of range")
    return value


def _parse_open(stream_id: int, raw: bytes) -> OpenFrame:
    window, port, kind, host_len = _OPEN_FIXED.unpack_from(raw)
    if window > MAX_WINDOW:
        raise ProtocolError("OPEN window out of range")
    end = _OPEN_FIXED.size + host_len
    if end + 1 > len(raw):
        raise ProtocolError("OPEN host length exceeds payload")
    rid_len = raw[end]
    if end + 1 + rid_len != len(raw):
        raise ProtocolError("OPEN request id length does not match payload")
    try:
        target = Target(
            host=raw[_OPEN_FIXED.size : end].decode("ascii"),
            port=port,
            kind=TargetKind(kind),
            request_id=raw[end + 1 :].decode("ascii"),
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"bad OPEN target: {exc}") from exc
    return OpenFrame(stream_id, target, window)


def _parse_control(ftype: int, stream_id: int, raw: bytes) -> Frame:
    if ftype == FrameType.WINDOW_UPDATE:
        return WindowUpdateFrame(stream_id, _u32_in(raw, 1, "window increment"))
    if ftype == FrameType.ACCEPT:
        return AcceptFrame(stream_id, _u32_in(raw, 0, "ACCEPT window"))
    if ftype == FrameType.FIN:
        return FinFrame(stream_id)
    if ftype == FrameType.CLOSE:
        return CloseFrame(stream_id)
    if ftype == FrameType.RESET:
        return ResetFrame(stream_id, _U16.unpack_from(raw)[0], _text(raw[2:]))
    if ftype == FrameType.REFUSE:
        return RefuseFrame(stream_id, _U16.unpack_from(raw)[0], _text(raw[2:]))
    if ftype == FrameType.OPEN:
        return _parse_open(stream_id, raw)
    if ftype == FrameType.PING:
        return PingFrame(raw)
    if ftype == FrameType.PONG:
        return PongFrame(raw)
    last, code = _GOAWAY_FIXED.unpack_from(raw)
    return GoAwayFrame(last, code, _text(raw[_GOAWAY_FIXED.size :]))


def _check_header(
    version: int, ftype: int, flags: int, stream_id: int, length: int, max_data: int
) -> None:
    if version != VERSION:
        raise ProtocolError(f"unsupported mux version {version}")
    limits = _LENGTHS.get(ftype)
    if limits is None:
        raise ProtocolError(f"unknown mux frame type {ftype}")
    if flags:
        raise ProtocolError("reserved mux flags set")
    if (stream_id == 0) != (ftype in _CONNECTION_TYPES):
        raise ProtocolError(f"frame type {ftype} on wrong stream id {stream_id}")
    high = max_data if ftype == FrameType.DATA else limits[1]
    if length > high:
        raise LimitExceeded(f"mux frame type {ftype} of {length} bytes exceeds {high}")
    if length < limits[0]:
        raise ProtocolError(f"mux frame type {ftype} too short ({length} bytes)")


class FrameDecoder:
    """Incremental decoder: `feed()` any split of the byte stream, get whole frames back.

    DATA payloads are memoryviews into the fed buffer when a frame lies within one `feed()`
    (no copy): do not modify a buffer after feeding it. A frame spanning several feeds is
    assembled into new bytes. After an error the decoder is unusable.
    """

    def __init__(self, max_data: int = MAX_DATA) -> None:
        if not 1 <= max_data <= MAX_DATA:
            raise InvalidArgument("max_data must be 1..65536")
        self.max_data = max_data
        self._buf = bytearray()  # an incomplete frame, never more than header + max payload
        self._need = 0  # total size of the frame in _buf once its header is known, else 0
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Decode what `data` completes; raises ProtocolError/LimitExceeded on bad input."""
        frames, error = self.feed_until_error(data)
        if error is not None:
            raise error
        return frames

    def feed_until_error(
        self, data: bytes | bytearray | memoryview
    ) -> tuple[list[Frame], ProtocolError | None]:
        """Like `feed()`, but return the frames before a bad one together with the error."""
        if self._failed:
            raise ProtocolError("mux decoder already failed")
        frames: list[Frame] = []
        try:
            self._feed(memoryview(data).cast("B"), frames)
        except ProtocolError as exc:
            self._failed = True
            self._buf.clear()
            return frames, exc
        return frames, None

    def _header(self, view: bytes | bytearray | memoryview, pos: int) -> tuple[int, int, int]:
        version, ftype, flags, stream_id, length = HEADER.unpack_from(view, pos)
        _check_header(version, ftype, flags, stream_id, length, self.max_data)
        return ftype, stream_id, length

    def _feed(self, view: memoryview, frames: list[Frame]) -> None:
        pos, end = 0, len(view)
        if self._buf:
            pos = self._complete(view, frames)
            if self._buf:
                return
        while end - pos >= HEADER_SIZE:
            ftype, stream_id, length = self._header(view, pos)
            start = pos + HEADER_SIZE
            stop = start + length
            if stop > end:
                break
            frames.append(self._make(ftype, stream_id, view[start:stop]))
            pos = stop
        if pos < end:
            self._buf += view[pos:]
            if len(self._buf) >= HEADER_SIZE:
                self._need = HEADER_SIZE + self._header(self._buf, 0)[2]

    def _complete(self, view: memoryview, frames: list[Frame]) -> int:
        """Finish the buffered frame from the head of `view`; return bytes of `view` used."""
        pos = 0
        if not self._need:
            take = min(HEADER_SIZE - len(self._buf), len(view))
            self._buf += view[:take]
            pos = take
            if len(self._buf) < HEADER_SIZE:
                return pos
            self._need = HEADER_SIZE + self._header(self._buf, 0)[2]
        take = min(self._need - len(self._buf), len(view) - pos)
        self._buf += view[pos : pos + take]
        pos += take
        if len(self._buf) == self._need:
            raw = bytes(self._buf)
            self._buf.clear()
            self._need = 0
            ftype, stream_id, _ = self._header(raw, 0)
            frames.append(self._make(ftype, stream_id, memoryview(raw)[HEADER_SIZE:]))
        return pos

    @staticmethod
    def _make(ftype: int, stream_id: int, payload: memoryview) -> Frame:
        if ftype == FrameType.DATA:
            return DataFrame(stream_id, payload)
        return _parse_control(ftype, stream_id, bytes(payload))


def decode_all(data: bytes) -> list[Frame]:
    """Decode a buffer that must hold whole frames only."""
    decoder = FrameDecoder()
    frames = decoder.feed(data)
    if decoder.buffered:
        raise ProtocolError("truncated mux frame")
    return frames
