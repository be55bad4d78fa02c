"""RTSP 1.0 (RFC 2326) message codec: a push parser and serializers.

`RtspParser.feed(bytes)` returns complete requests, responses and `$`-interleaved binary frames
found on one TCP stream. Every size is bounded; violations raise `ProtocolError`/`LimitExceeded`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from multidict import CIMultiDict

from agent.errors import LimitExceeded, ProtocolError

RTSP_VERSION = "RTSP/1.0"

MAX_LINE = 4096
MAX_HEADERS = 64
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY = 64 * 1024
MAX_FRAME = 65535

Headers = CIMultiDict[str]

REASONS: dict[int, str] = {
    100: "Continue",
    200: "OK",
    201: "Created",
    250: "Low on Storage Space",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    415: "Unsupported Media Type",
    451: "Parameter Not Understood",
    453: "Not Enough Bandwidth",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    456: "Header Field Not Valid for Resource",
    457: "Invalid Range",
    459: "Aggregate Operation Not Allowed",
    460: "Only Aggregate Operation Allowed",
    461: "Unsupported Transport",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "RTSP Version Not Supported",
    551: "Option not supported",
}

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(r"RTSP/\d\.\d")
_BAD_TEXT = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SESSION_ID = re.compile(r"[A-Za-z0-9$\-_.+]{1,128}")


def _is_number(text: str) -> bool:
    """ASCII digits only (str.isdigit() also accepts digits int() refuses, like "\u00b2")."""
    return text.isascii() and text.isdigit()


def _encode_head(first_line: str, headers: Headers, body: bytes) -> bytes:
    lines = [first_line]
    for name, value in headers.items():
        if name.lower() == "content-length":
            continue
        if "\r" in value or "\n" in value:
            raise ProtocolError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(slots=True)
class RtspRequest:
    """One RTSP request."""

    method: str
    uri: str
    headers: Headers = field(default_factory=CIMultiDict)
    body: bytes = b""
    version: str = RTSP_VERSION

    @property
    def cseq(self) -> int | None:
        return parse_cseq(self.headers)

    def encode(self) -> bytes:
        return _encode_head(f"{self.method} {self.uri} {self.version}", self.headers, self.body)


@dataclass(slots=True)
class RtspResponse:
    """One RTSP response; `reason` defaults to the standard phrase of `status`."""

    status: int
    headers: Headers = field(default_factory=CIMultiDict)
    body: bytes = b""
    reason: str = ""
    version: str = RTSP_VERSION

    def __post_init__(self) -> None:
        if not self.reason:
            self.reason = REASONS.get(self.status, "Unknown")

    @property
    def cseq(self) -> int | None:
        return parse_cseq(self.headers)

    def encode(self) -> bytes:
        return _encode_head(f"{self.version} {self.status} {self.reason}", self.headers, self.body)


@dataclass(frozen=True, slots=True)
class InterleavedFrame:
    """A `$`-framed binary packet (RTP/RTCP over the RTSP TCP connection)."""

    channel: int
    payload: bytes


RtspMessage = RtspRequest | RtspResponse
RtspEvent = RtspRequest | RtspResponse | InterleavedFrame


def encode_interleaved(channel: int, payload: bytes) -> bytes:
    """Frame `payload` for interleaved channel `channel`."""
    if not 0 <= channel <= 255:
        raise ProtocolError(f"interleaved channel {channel} out of range")
    if len(payload) > MAX_FRAME:
        raise LimitExceeded(f"interleaved frame of {len(payload)} bytes exceeds {MAX_FRAME}")
    return b"$" + bytes((channel,)) + len(payload).to_bytes(2, "big") + payload


class RtspParser:
    """Incremental parser of one RTSP byte stream (either direction)."""

    def __init__(
        self,
        *,
        max_line: int = MAX_LINE,
        max_headers: int = MAX_HEADERS,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_body: int = MAX_BODY,
        max_frame: int = MAX_FRAME,
    ) -> None:
        self._max_line = max_line
        self._max_headers = max_headers
        self._max_header_bytes = max_header_bytes
        self._max_body = max_body
        self._max_frame = max_frame
        self._buf = bytearray()
        self._scanned = 0  # bytes of the current partial line already checked
        self._start: str | None = None
        self._headers: Headers = CIMultiDict()
        self._last_name: str | None = None
        self._header_bytes = 0
        self._body_len: int | None = None
        self._failed: ProtocolError | None = None

    @property
    def pending(self) -> bool:
        """True while part of a message or frame is buffered."""
        return bool(self._buf) or self._start is not None

    def feed(self, data: bytes) -> list[RtspEvent]:
        """Consume `data`; return every event it completes."""
        if self._failed is not None:
            raise ProtocolError(f"stream already rejected: {self._failed}")
        self._buf += data
        events: list[RtspEvent] = []
        try:
            while (event := self._next()) is not None:
                events.append(event)
        except ProtocolError as exc:
            self._failed = exc
            self._buf.clear()
            raise
        return events

    def _next(self) -> RtspEvent | None:
        if self._body_len is not None:
            return self._take_body()
        if self._start is None:
            # Stray line breaks between messages are allowed.
            strip = 0
            while strip < len(self._buf) and self._buf[strip] in b"\r\n":
                strip += 1
            if strip:
                del self._buf[:strip]
            if not self._buf:
                return None
            if self._buf[0] == 0x24:
                return self._take_frame()
            first = self._buf[0]
            if not (0x41 <= first <= 0x5A or 0x61 <= first <= 0x7A):
                raise ProtocolError(f"unexpected byte 0x{first:02x} at the start of a message")
        while (line := self._take_line()) is not None:
            if self._start is None:
                self._start = line
                continue
            if line:
                self._add_header(line)
                continue
            return self._end_headers()
        return None

    def _take_frame(self) -> InterleavedFrame | None:
        if len(self._buf) < 4:
            return None
        length = int.from_bytes(self._buf[2:4], "big")
        if length > self._max_frame:
            raise LimitExceeded(f"interleaved frame of {length} bytes exceeds {self._max_frame}")
        if len(self._buf) < 4 + length:
            return None
        frame = InterleavedFrame(self._buf[1], bytes(self._buf[4 : 4 + length]))
        del self._buf[: 4 + length]
        return frame

    def _take_line(self) -> str | None:
        end = self._buf.find(b"\n", self._scanned)
        if end < 0:
            if _BAD_TEXT.search(self._buf, self._scanned):
                raise ProtocolError("binary data in a message header")
            self._scanned = len(self._buf)
            if len(self._buf) > self._max_line:
                raise LimitExceeded(f"header line longer than {self._max_line} bytes")
            self._check_header_size(len(self._buf))
            return None
        raw = self._buf[:end]
        del self._buf[: end + 1]
        self._scanned = 0
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > self._max_line:
            raise LimitExceeded(f"header line longer than {self._max_line} bytes")
        self._header_bytes += end + 1
        self._check_header_size(0)
        if _BAD_TEXT.search(raw):
            raise ProtocolError("binary data in a message header")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("message header is not valid UTF-8") from exc

    def _check_header_size(self, extra: int) -> None:
        if self._header_bytes + extra > self._max_header_bytes:
            raise LimitExceeded(f"header block larger than {self._max_header_bytes} bytes")

    def _add_header(self, line: str) -> None:
        if line[0] in " \t":
            if self._last_name is None:
                raise ProtocolError("continuation line without a header")
            values = self._headers.getall(self._last_name)
            values[-1] = f"{values[-1]} {line.strip()}"
            self._headers.popall(self._last_name)
            self._headers.extend((self._last_name, v) for v in values)
            return
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise ProtocolError(f"malformed header line {line[:40]!r}")
        if len(self._headers) >= self._max_headers:
            raise LimitExceeded(f"more than {self._max_headers} headers")
        self._headers.add(name, value.strip())
        self._last_name = name

    def _end_headers(self) -> RtspEvent | None:
        raw = self._headers.get("Content-Length")
        length = 0
        if raw is not None:
            if not _is_number(raw) or len(raw) > 12:
                raise ProtocolError(f"invalid Content-Length {raw[:20]!r}")
            length = int(raw)
            if length > self._max_body:
                raise LimitExceeded(f"body of {length} bytes exceeds {self._max_body}")
        self._body_len = length
        return self._take_body()

    def _take_body(self) -> RtspEvent | None:
        assert self._body_len is not None
        assert self._start is not None
        if len(self._buf) < self._body_len:
            return None
        body = bytes(self._buf[: self._body_len])
        del self._buf[: self._body_len]
        event = _make_message(self._start, self._headers, body)
        self._start = None
        self._headers = CIMultiDict()
        self._last_name = None
        self._header_bytes = 0
        self._body_len = None
        self._scanned = 0
        return event


def _make_message(start: str, headers: Headers, body: bytes) -> RtspMessage:
    parts = start.split(" ", 2)
    if start.startswith("RTSP/"):
        if len(parts) < 2 or not _VERSION.fullmatch(parts[0]):
            raise ProtocolError(f"malformed status line {start[:60]!r}")
        code = parts[1]
        if len(code) != 3 or not _is_number(code):
            raise ProtocolError(f"malformed status code {code[:10]!r}")
        reason = parts[2] if len(parts) == 3 else ""
        return RtspResponse(int(code), headers, body, reason, parts[0])
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1] or " " in parts[2]:
        raise ProtocolError(f"malformed request line {start[:60]!r}")
    if not _VERSION.fullmatch(parts[2]):
        raise ProtocolError(f"not an RTSP request (version {parts[2][:16]!r})")
    return RtspRequest(parts[0], parts[1], headers, body, parts[2])


def parse_cseq(headers: Headers) -> int | None:
    """The CSeq value, or None when absent or not a number."""
    raw = headers.get("CSeq", "").strip()
    if not _is_number(raw) or len(raw) > 10:
        return None
    return int(raw)


def parse_session(value: str) -> tuple[str, int | None]:
    """Split a `Session:` header into (id, timeout seconds or None)."""
    ident, *params = (p.strip() for p in value.split(";"))
    if not _SESSION_ID.fullmatch(ident):
        raise ProtocolError(f"invalid session id {ident[:40]!r}")
    timeout: int | None = None
    for param in params:
        key, _, val = param.partition("=")
        if key.strip().lower() == "timeout":
            number = val.strip()
            if not _is_number(number) or len(number) > 10:
                raise ProtocolError(f"invalid session timeout {val[:20]!r}")
            timeout = int(number)
    return ident, timeout


def format_session(ident: str, timeout: int | None = None) -> str:
    """Build a `Session:` header value."""
    return ident if timeout is None else f"{ident};timeout={timeout}"


@dataclass(frozen=True, slots=True)
class RtpInfo:
    """One entry of an `RTP-Info:` header."""

    url: str
    seq: int | None = None
    rtptime: int | None = None


def format_rtp_info(entries: list[RtpInfo]) -> str:
    """Build an `RTP-Info:` header value."""
    out = []
    for entry in entries:
        item = f"url={entry.url}"
        if entry.seq is not None:
            item += f";seq={entry.seq}"
        if entry.rtptime is not None:
            item += f";rtptime={entry.rtptime}"
        out.append(item)
    return ",".join(out)


def parse_rtp_info(value: str) -> list[RtpInfo]:
    """Parse an `RTP-Info:` header value (URLs must not contain `,` or `;`)."""
    entries = []
    for item in value.split(","):
        fields: dict[str, str] = {}
        for param in item.split(";"):
            key, _, val = param.strip().partition("=")
            fields[key.lower()] = val
        if "url" not in fields:
            raise ProtocolError(f"RTP-Info entry without url: {item[:60]!r}")
        try:
            seq = int(fields["seq"]) if "seq" in fields else None
            rtptime = int(fields["rtptime"]) if "rtptime" in fields else None
        except ValueError as exc:
            raise ProtocolError(f"invalid RTP-Info entry {item[:60]!r}") from exc
        entries.append(RtpInfo(fields["url"], seq, rtptime))
    return entries


@dataclass(frozen=True, slots=True)
class Transport:
    """One alternative of a `Transport:` header (RFC 2326 section 12.39)."""

    profile: str = "RTP/AVP"
    lower: str = "UDP"
    unicast: bool = True
    interleaved: tuple[int, int] | None = None
    client_port: tuple[int, int] | None = None
    server_port: tuple[int, int] | None = None
    ssrc: int | None = None
    mode: str | None = None
    extra: tuple[tuple[str, str | None], ...] = ()

    def format(self) -> str:
        """Serialize as a header value."""
        parts = [f"{self.profile}/{self.lower}" if self.lower == "TCP" else self.profile]
        parts.append("unicast" if self.unicast else "multicast")
        for name, pair in (
            ("interleaved", self.interleaved),
            ("client_port", self.client_port),
            ("server_port", self.server_port),
        ):
            if pair is not None:
                parts.append(f"{name}={pair[0]}-{pair[1]}")
        if self.ssrc is not None:
            parts.append(f"ssrc={self.ssrc:08X}")
        if self.mode is not None:
            parts.append(f'mode="{self.mode}"')
        parts.extend(k if v is None else f"{k}={v}" for k, v in self.extra)
        return ";".join(parts)


_SPEC = re.compile(r"(RTP/[A-Z]+)(?:/(UDP|TCP))?", re.IGNORECASE)
_PAIR = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")
MAX_TRANSPORTS = 16


def _pair(name: str, value: str, limit: int) -> tuple[int, int]:
    match = _PAIR.fullmatch(value)
    if match is None:
        raise ProtocolError(f"invalid {name} {value[:20]!r}")
    first = int(match.group(1))
    second = int(match.group(2)) if match.group(2) else first + 1
    if first > limit or second > limit:
        raise ProtocolError(f"{name} {value!r} out of range")
    return first, second


def parse_transport(value: str) -> list[Transport]:
    """Parse every comma-separated alternative of a `Transport:` header."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise ProtocolError("empty Transport header")
    if len(items) > MAX_TRANSPORTS:
        raise LimitExceeded(f"more than {MAX_TRANSPORTS} transport alternatives")
    return [_parse_one_transport(item) for item in items]


def _parse_one_transport(item: str) -> Transport:
    spec, *params = (p.strip() for p in item.split(";"))
    match = _SPEC.fullmatch(spec)
    if match is None:
        raise ProtocolError(f"unsupported transport {spec[:30]!r}")
    result = Transport(match.group(1).upper(), (match.group(2) or "UDP").upper())
    extra: list[tuple[str, str | None]] = []
    for param in params:
        key, eq, val = param.partition("=")
        key = key.strip().lower()
        val = val.strip()
        if key in ("unicast", "multicast"):
            result = replace(result, unicast=key == "unicast")
        elif key == "interleaved":
            result = replace(result, interleaved=_pair(key, val, 255))
        elif key == "client_port":
            result = replace(result, client_port=_pair(key, val, 65535))
        elif key == "server_port":
            result = replace(result, server_port=_pair(key, val, 65535))
        elif key == "ssrc":
            try:
                result = replace(result, ssrc=int(val, 16) & 0xFFFFFFFF)
            except ValueError as exc:
                raise ProtocolError(f"invalid ssrc {val[:20]!r}") from exc
        elif key == "mode":
            result = replace(result, mode=val.strip('"').upper())
        elif key:
            extra.append((key, val if eq else None))
    return replace(result, extra=tuple(extra))
