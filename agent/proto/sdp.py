"""SDP (RFC 8866) session descriptions: model, serializer and a bounded parser."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.errors import LimitExceeded, ProtocolError

MAX_SDP_BYTES = 64 * 1024
MAX_LINES = 1024
MAX_MEDIA = 16

Attribute = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class Origin:
    """The `o=` line."""

    username: str = "-"
    session_id: str = "0"
    session_version: str = "0"
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def encode(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """A `c=` line."""

    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def encode(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """An `a=rtpmap:` value."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    def encode(self) -> str:
        tail = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{tail}"


class _Attributes:
    attributes: list[Attribute]

    def attribute(self, name: str) -> str | None:
        """Value of the first `a=name`; "" for a flag; None when absent."""
        for key, value in self.attributes:
            if key == name:
                return "" if value is None else value
        return None

    def attribute_all(self, name: str) -> list[str]:
        return [v or "" for k, v in self.attributes if k == name]


def _encode_attrs(attrs: list[Attribute]) -> list[str]:
    return [f"a={k}" if v is None else f"a={k}:{v}" for k, v in attrs]


@dataclass(slots=True)
class MediaDescription(_Attributes):
    """One `m=` section."""

    kind: str
    port: int = 0
    proto: str = "RTP/AVP"
    formats: list[str] = field(default_factory=list)
    title: str | None = None
    connection: Connection | None = None
    bandwidths: list[tuple[str, int]] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)

    @property
    def control(self) -> str | None:
        return self.attribute("control")

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        return {m.payload_type: m for m in map(parse_rtpmap, self.attribute_all("rtpmap"))}

    @property
    def fmtps(self) -> dict[int, dict[str, str]]:
        return dict(map(parse_fmtp, self.attribute_all("fmtp")))

    def encode(self) -> list[str]:
        lines = [f"m={self.kind} {self.port} {self.proto} {' '.join(self.formats)}"]
        if self.title is not None:
            lines.append(f"i={self.title}")
        if self.connection is not None:
            lines.append(f"c={self.connection.encode()}")
        lines.extend(f"b={t}:{v}" for t, v in self.bandwidths)
        return lines + _encode_attrs(self.attributes)


@dataclass(slots=True)
class SessionDescription(_Attributes):
    """A whole session description."""

    origin: Origin = field(default_factory=Origin)
    name: str = "-"
    info: str | None = None
    uri: str | None = None
    connection: Connection | None = None
    bandwidths: list[tuple[str, int]] = field(default_factory=list)
    times: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)])
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    def encode(self) -> str:
        """Serialize with CRLF line ends."""
        lines = ["v=0", f"o={self.origin.encode()}", f"s={self.name or '-'}"]
        if self.info is not None:
            lines.append(f"i={self.info}")
        if self.uri is not None:
            lines.append(f"u={self.uri}")
        if self.connection is not None:
            lines.append(f"c={self.connection.encode()}")
        lines.extend(f"b={t}:{v}" for t, v in self.bandwidths)
        lines.extend(f"t={start} {stop}" for start, stop in self.times or [(0, 0)])
        lines.extend(_encode_attrs(self.attributes))
        for media in self.media:
            lines.extend(media.encode())
        for line in lines:
            if "\r" in line or "\n" in line or "\0" in line:
                raise ProtocolError(f"SDP line {line[:40]!r} contains a control character")
        return "\r\n".join(lines) + "\r\n"

    @classmethod
    def parse(cls, text: str | bytes) -> SessionDescription:
        """Parse `text`; unknown line types are skipped, malformed known ones raise."""
        if len(text) > MAX_SDP_BYTES:
            raise LimitExceeded(f"SDP larger than {MAX_SDP_BYTES} bytes")
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProtocolError("SDP is not valid UTF-8") from exc
        lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
        if len(lines) > MAX_LINES:
            raise LimitExceeded(f"SDP has more than {MAX_LINES} lines")
        if not lines or lines[0].strip() != "v=0":
            raise ProtocolError("SDP must start with v=0")
        session = cls(times=[])
        for line in lines[1:]:
            kind, eq, value = line.partition("=")
            if not eq or len(kind) != 1:
                raise ProtocolError(f"malformed SDP line {line[:40]!r}")
            _parse_line(session, kind, value)
        return session


def _is_number(text: str) -> bool:
    """1 to 20 ASCII digits (str.isdigit() also accepts digits int() refuses, like "\u00b2")."""
    return 0 < len(text) <= 20 and text.isascii() and text.isdigit()


def _parse_line(session: SessionDescription, kind: str, value: str) -> None:
    media = session.media[-1] if session.media else None
    if kind == "m":
        if len(session.media) >= MAX_MEDIA:
            raise LimitExceeded(f"SDP has more than {MAX_MEDIA} media sections")
        session.media.append(_parse_media(value))
    elif kind == "a":
        name, colon, val = value.partition(":")
        (media or session).attributes.append((name, val if colon else None))
    elif kind == "c":
        conn = _parse_connection(value)
        if media is None:
            session.connection = conn
        else:
            media.connection = conn
    elif kind == "b":
        btype, _, bval = value.partition(":")
        bval = bval.strip(" \t")
        if not _is_number(bval):
            raise ProtocolError(f"malformed b= line {value[:40]!r}")
        (media or session).bandwidths.append((btype, int(bval)))
    elif kind == "i":
        if media is None:
            session.info = value
        else:
            media.title = value
    elif media is not None:
        return  # other media-level lines (k=) carry nothing we use
    elif kind == "o":
        session.origin = _parse_origin(value)
    elif kind == "s":
        session.name = value
    elif kind == "u":
        session.uri = value
    elif kind == "t":
        parts = value.split()
        if len(parts) != 2 or not all(_is_number(p) for p in parts):
            raise ProtocolError(f"malformed t= line {value[:40]!r}")
        session.times.append((int(parts[0]), int(parts[1])))


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise ProtocolError(f"malformed o= line {value[:60]!r}")
    return Origin(*parts)


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise ProtocolError(f"malformed c= line {value[:60]!r}")
    return Connection(*parts)


def _parse_media(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 4:
        raise ProtocolError(f"malformed m= line {value[:60]!r}")
    port = parts[1].split("/", 1)[0]
    if not _is_number(port) or int(port) > 65535:
        raise ProtocolError(f"invalid media port {parts[1][:20]!r}")
    return MediaDescription(parts[0], int(port), parts[2], parts[3:])


def parse_rtpmap(value: str) -> RtpMap:
    """Parse `96 H264/90000` or `0 PCMU/8000/1`."""
    pt, _, rest = value.strip().partition(" ")
    fields = rest.strip().split("/")
    if len(fields) not in (2, 3):
        raise ProtocolError(f"malformed rtpmap {value[:60]!r}")
    try:
        channels = int(fields[2]) if len(fields) == 3 else None
        return RtpMap(int(pt), fields[0], int(fields[1]), channels)
    except ValueError as exc:
        raise ProtocolError(f"malformed rtpmap {value[:60]!r}") from exc


def parse_fmtp(value: str) -> tuple[int, dict[str, str]]:
    """Parse `96 a=1;b=2` into (96, {"a": "1", "b": "2"}); keys lower-cased."""
    pt, _, rest = value.strip().partition(" ")
    if not _is_number(pt):
        raise ProtocolError(f"malformed fmtp {value[:60]!r}")
    params: dict[str, str] = {}
    for item in rest.split(";"):
        key, _, val = item.strip().partition("=")
        if key:
            params[key.lower()] = val.strip()
    return int(pt), params


def format_fmtp(payload_type: int, params: Mapping[str, str]) -> str:
    """Build an `a=fmtp:` value."""
    return f"{payload_type} " + ";".join(f"{k}={v}" for k, v in params.items())
