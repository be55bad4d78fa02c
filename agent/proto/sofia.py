"""The XMeye "Sofia" (DVR-IP, NETsurveillance) binary protocol on TCP 34567, sans-I/O.

Every message is a 20-byte little-endian header and a body::

    0  u8   head, always 0xFF
    1  u8   version (0; 1 on some newer firmware)
    2  u16  reserved
    4  u32  session id (0 before login, then the one the login reply names)
    8  u32  sequence number
    12 u8   total packets (or channel)
    13 u8   current packet; 1 in the empty block that ends a firmware upload
    14 u16  message id
    16 u32  body length

Bodies are JSON terminated by "\\n\\0" (or just "\\0"), except firmware upload blocks, which are
raw image bytes. Passwords travel as the "sofia hash": MD5, its 16 bytes summed in pairs, each
sum modulo 62 picked from 0-9A-Za-z (8 characters). The message ids and Ret codes below are the
ones the open-source python-dvr project documents for these cameras.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from agent.errors import (
    AgentError,
    AuthError,
    InvalidArgument,
    LimitExceeded,
    ProtocolError,
    Unavailable,
)

HEADER = struct.Struct("<BBxxIIBBHI")
HEAD = 0xFF
#: Largest body accepted in a message, bytes.
MAX_DATA = 1024 * 1024
#: Largest JSON body parsed, bytes, and its deepest nesting.
MAX_JSON = 64 * 1024
MAX_DEPTH = 16
_HASH_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class Msg(IntEnum):
    LOGIN_REQ = 1000
    LOGIN_RSP = 1001
    KEEPALIVE_REQ = 1006
    KEEPALIVE_RSP = 1007
    UPGRADE_REQ = 1520  # OPSystemUpgrade {"Action": "Start", "Type": "System"}
    UPGRADE_RSP = 1521
    UPGRADE_DATA = 1522  # raw image block; an empty one with current=1 ends the upload
    UPGRADE_DATA_RSP = 1523
    UPGRADE_PROGRESS = 1524  # Ret = percent written, then 515 (done) or 512..514 (failed)
    UPGRADE_INFO_REQ = 1525
    UPGRADE_INFO_RSP = 1526


class Ret(IntEnum):
    OK = 100
    UNKNOWN_ERROR = 101
    UNSUPPORTED_VERSION = 102
    NOT_PERMITTED = 103
    ALREADY_LOGGED_IN = 104
    NOT_LOGGED_IN = 105
    BAD_CREDENTIALS = 106
    NO_PERMISSION = 107
    BAD_PASSWORD = 203
    NO_SUCH_USER = 205
    BLACKLISTED = 207
    UPGRADE_STARTED = 511
    UPGRADE_NOT_STARTED = 512
    UPGRADE_DATA_ERROR = 513
    UPGRADE_FAILED = 514
    UPGRADE_DONE = 515


_AUTH_CODES = frozenset({103, 105, 106, 107, 203, 205, 207})
_TEXT = {
    101: "unknown error",
    102: "unsupported version",
    103: "request not permitted",
    104: "user already logged in",
    105: "user is not logged in",
    106: "user name or password incorrect",
    107: "user lacks the permission",
    203: "password incorrect",
    205: "user does not exist",
    207: "user blacklisted",
    512: "upgrade was not started",
    513: "upgrade data error",
    514: "upgrade error",
}


@dataclass(frozen=True)
class Frame:
    """One message as read from the wire."""

    msg: int
    session: int
    sequence: int
    data: bytes
    version: int = 0
    total: int = 0
    current: int = 0

    def json(self) -> dict[str, Any]:
        return decode_json(self.data)


def sofia_hash(password: str) -> str:
    """The 8-character password hash Sofia logins carry."""
    md5 = hashlib.md5(password.encode("utf-8"), usedforsecurity=False).digest()
    return "".join(_HASH_CHARS[(a + b) % 62] for a, b in zip(md5[::2], md5[1::2], strict=True))


def session_hex(session: int) -> str:
    return f"0x{session:08X}"


def parse_session(value: object) -> int:
    """A SessionID field ("0x0000001A") as a number."""
    if not isinstance(value, str) or not 3 <= len(value) <= 10 or value[:2] not in ("0x", "0X"):
        raise ProtocolError("SessionID is not a hex number")
    try:
        return int(value[2:], 16)
    except ValueError:
        raise ProtocolError("SessionID is not a hex number") from None


def encode(
    msg: int,
    data: bytes = b"",
    *,
    session: int = 0,
    sequence: int = 0,
    version: int = 0,
    total: int = 0,
    current: int = 0,
) -> bytes:
    """One message: header and body."""
    if len(data) > MAX_DATA:
        raise LimitExceeded(f"Sofia body of {len(data)} bytes exceeds {MAX_DATA}")
    try:
        head = HEADER.pack(HEAD, version, session, sequence, total, current, msg, len(data))
    except struct.error:
        raise InvalidArgument("Sofia header field out of range") from None
    return head + data


def encode_json(msg: int, body: Mapping[str, Any], *, session: int = 0, sequence: int = 0) -> bytes:
    """A message with a JSON body, terminated by "\\n\\0" as the cameras' own tools do."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return encode(msg, text + b"\n\0", session=session, sequence=sequence)


def decode_json(data: bytes) -> dict[str, Any]:
    """A JSON object body; the "\\n\\0" / "\\0" terminator is optional."""
    end = len(data)
    while end and data[end - 1] in b"\0\n\r \t":
        end -= 1
    if end > MAX_JSON:
        raise LimitExceeded(f"Sofia JSON body over {MAX_JSON} bytes")
    raw = data[:end]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    _check_depth(text)
    try:
        body = json.loads(text)
    except ValueError:
        raise ProtocolError("Sofia body is not JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError("Sofia body is not a JSON object")
    return body


def _check_depth(text: str) -> None:
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise LimitExceeded(f"Sofia JSON nested deeper than {MAX_DEPTH}")
        elif ch in "]}":
            depth -= 1


def ret_of(body: Mapping[str, Any]) -> int:
    ret = body.get("Ret")
    if isinstance(ret, bool) or not isinstance(ret, int):
        raise ProtocolError("Sofia reply has no numeric Ret")
    return ret


def ret_error(ret: int, what: str) -> AgentError:
    """The typed error for a refusal: credentials (AuthError), the image (InvalidArgument),
    a camera that could not start or finish (Unavailable), anything else (ProtocolError)."""
    text = _TEXT.get(ret, "unexpected answer")
    message = f"{what}: the camera answered Ret {ret} ({text})"
    if ret in _AUTH_CODES:
        return AuthError(message)
    if ret == Ret.UPGRADE_DATA_ERROR:
        return InvalidArgument(f"{what}: the camera refused the image (Ret {ret}, {text})")
    if ret in (Ret.UPGRADE_NOT_STARTED, Ret.UPGRADE_FAILED):
        return Unavailable(message)
    return ProtocolError(message)


def check_ret(body: Mapping[str, Any], what: str, ok: frozenset[int] = frozenset({100})) -> int:
    """The reply's Ret when it is one of `ok`, else raise its typed error."""
    ret = ret_of(body)
    if ret not in ok:
        raise ret_error(ret, what)
    return ret


class Decoder:
    """Incremental: `feed()` bytes as they arrive, get the complete frames."""

    def __init__(self, *, max_data: int = MAX_DATA) -> None:
        self._max_data = max_data
        self._buf = bytearray()
        self._head: tuple[int, ...] | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while True:
            if self._head is None:
                if len(self._buf) < HEADER.size:
                    return frames
                head = HEADER.unpack_from(self._buf)
                if head[0] != HEAD:
                    raise ProtocolError(f"Sofia header starts with 0x{head[0]:02X}, not 0xFF")
                if head[1] > 1:
                    raise ProtocolError(f"Sofia version {head[1]} unknown")
                if head[7] > self._max_data:
                    raise LimitExceeded(f"Sofia body of {head[7]} bytes exceeds {self._max_data}")
                del self._buf[: HEADER.size]
                self._head = head
            length = self._head[7]
            if len(self._buf) < length:
                return frames
            _, version, session, sequence, total, current, msg, _ = self._head
            frames.append(
                Frame(msg, session, sequence, bytes(self._buf[:length]), version, total, current)
            )
            del self._buf[:length]
            self._head = None
