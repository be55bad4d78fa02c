"""Agent-cloud protocol (docs/protocol.md): messages, signed texts, QR payload. Sans-I/O.

Shared by the agent and the simulated cloud. Every decoder enforces the size limit and the
field types, and raises ProtocolError (LimitExceeded for size) with a short reason.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yarl
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.errors import AuthError, LimitExceeded, ProtocolError

MAX_MESSAGE = 64 * 1024
MAX_QR = 2048
MAX_DEPTH = 16
HEARTBEAT_S = 20
PING_TIMEOUT_S = 60.0
MAX_BAD_MESSAGES = 10
BAD_MESSAGE_WINDOW_S = 60.0
NONCE_BYTES = 32
MAX_ID = 2**53 - 1

CLOSE_AUTH_FAILED = 4401
CLOSE_POLICY = 1008

CTX_ACTIVATE = "camera-agent/activate/v1"
CTX_ENDPOINT = "camera-agent/endpoint/v1"
CTX_STREAMPOINT = "camera-agent/streampoint/v1"

QR_SCHEME = "camera-agent"
QR_HOST = "activate"

Purpose = Literal["endpoint", "streampoint"]
_LOGIN_CTX: dict[str, str] = {"endpoint": CTX_ENDPOINT, "streampoint": CTX_STREAMPOINT}

# Commands and who sends them (agent or endpoint), and whether they are requests or events.
AGENT_REQUESTS = frozenset({"hello"})
AGENT_EVENTS = frozenset(
    {
        "description",
        "streampoint_connected",
        "streampoint_connect_failure",
        "streampoint_disconnected",
        "camera_firmware_progress",
        "agent_update_progress",
        "stats",
    }
)
SERVER_REQUESTS = frozenset(
    {
        "streampoint_connect",
        "streampoint_disconnect",
        "reboot",
        "reset",
        "disconnect",
        "camera_ptz",
        "camera_reboot",
        "camera_config_get",
        "camera_config_set",
        "camera_auth_get",
        "camera_auth_set",
        "camera_firmware",
        "agent_update",
        "logs",
    }
)
COMMANDS = AGENT_REQUESTS | AGENT_EVENTS | SERVER_REQUESTS
MESSAGE_TYPES = frozenset(
    {"challenge", "login", "welcome", "error", "request", "response", "event", "ping", "pong"}
)

# Error codes used in `error` messages, responses and HTTP bodies.
ERR_INVALID_MESSAGE = "invalid_message"
ERR_UNKNOWN_COMMAND = "unknown_command"
ERR_AUTH_FAILED = "authentication_failed"
ERR_INVALID_REQUEST = "invalid_request"
ERR_BAD_SIGNATURE = "bad_signature"
ERR_TOKEN_UNKNOWN = "token_unknown"  # noqa: S105
ERR_TOKEN_USED = "token_used"  # noqa: S105
ERR_TOKEN_EXPIRED = "token_expired"  # noqa: S105
ACTIVATION_ERRORS: dict[str, int] = {
    ERR_INVALID_REQUEST: 400,
    ERR_BAD_SIGNATURE: 400,
    ERR_TOKEN_UNKNOWN: 404,
    ERR_TOKEN_USED: 409,
    ERR_TOKEN_EXPIRED: 410,
}


# ---------------------------------------------------------------------------- base64 / keys


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: object, *, field: str = "value", size: int | None = None) -> bytes:
    """Strict standard base64 (padded); `size` checks the decoded length."""
    if not isinstance(text, str) or len(text) > MAX_MESSAGE:
        raise ProtocolError(f"{field}: expected a base64 string")
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise ProtocolError(f"{field}: not valid base64") from exc
    if size is not None and len(data) != size:
        raise ProtocolError(f"{field}: expected {size} bytes, got {len(data)}")
    return data


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """Base64 of the 32 raw bytes of the public key."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return b64encode(pub.public_bytes(Encoding.Raw, PublicFormat.Raw))


def load_public_key(text: object) -> Ed25519PublicKey:
    """Parse a base64 raw Ed25519 public key; ProtocolError if malformed."""
    raw = b64decode(text, field="public_key", size=32)
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise ProtocolError("public_key: not an Ed25519 key") from exc


# ---------------------------------------------------------------------------- signed texts


def _text(*lines: str) -> bytes:
    for line in lines:
        if "\n" in line or "\r" in line:
            raise ProtocolError("a signed field contains a line break")
    return "\n".join(lines).encode("utf-8")


def activation_text(token: str, public_key: str, serial: str) -> bytes:
    """The text signed at activation."""
    return _text(CTX_ACTIVATE, token, public_key, serial)


def login_text(purpose: Purpose, agent_id: str, nonce: str) -> bytes:
    """The text signed to log in to the endpoint or a streampoint (nonce in base64)."""
    try:
        ctx = _LOGIN_CTX[purpose]
    except KeyError:
        raise ProtocolError(f"unknown login purpose {purpose!r}") from None
    return _text(ctx, agent_id, nonce)


def sign(key: Ed25519PrivateKey, text: bytes) -> str:
    """Base64 Ed25519 signature of `text`."""
    return b64encode(key.sign(text))


def verify(public_key: Ed25519PublicKey | str, signature: object, text: bytes) -> None:
    """Raise AuthError unless `signature` (base64) is valid for `text`."""
    try:
        pub = load_public_key(public_key) if isinstance(public_key, str) else public_key
        sig = b64decode(signature, field="signature", size=64)
        pub.verify(sig, text)
    except (ProtocolError, InvalidSignature) as exc:
        raise AuthError("signature does not verify") from exc


# ---------------------------------------------------------------------------- JSON


def _check_depth(value: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise ProtocolError("JSON nested too deeply")
    if isinstance(value, dict):
        for v in value.values():
            _check_depth(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_depth(v, depth + 1)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_object(data: str | bytes) -> dict[str, Any]:
    """Parse one JSON object of at most MAX_MESSAGE bytes (no NaN, not too deep)."""
    size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
    if size > MAX_MESSAGE:
        raise LimitExceeded(f"message of {size} bytes exceeds {MAX_MESSAGE}")
    try:
        value = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise ProtocolError("not JSON") from exc
    if not isinstance(value, dict):
        raise ProtocolError("not a JSON object")
    _check_depth(value)
    return value


def dumps(obj: dict[str, Any]) -> str:
    """Compact JSON; LimitExceeded if larger than MAX_MESSAGE."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if len(text.encode("utf-8")) > MAX_MESSAGE:
        raise LimitExceeded("message too large to send")
    return text


def _str(obj: dict[str, Any], key: str, *, optional: bool = False, max_len: int = 4096) -> str:
    value = obj.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"{key}: expected a string")
    if len(value) > max_len:
        raise LimitExceeded(f"{key}: longer than {max_len}")
    return value


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise ProtocolError(f"{key}: expected a non-negative integer")
    return value


def _dict(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{key}: expected an object")
    return value


# ---------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: str
    server_time_ms: int


@dataclass(frozen=True, slots=True)
class Login:
    agent_id: str
    signature: str


@dataclass(frozen=True, slots=True)
class Welcome:
    heartbeat_s: int
    server_id: str


@dataclass(frozen=True, slots=True)
class Error:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    command: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Response:
    id: int
    ok: bool
    result: dict[str, Any]
    error: Error | None = None


@dataclass(frozen=True, slots=True)
class Event:
    command: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Ping:
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Pong:
    ts_ms: int


Message = Challenge | Login | Welcome | Error | Request | Response | Event | Ping | Pong


class UnknownCommand(ProtocolError):
    """A well-formed request or event names a command this side does not know."""

    def __init__(self, command: str, request_id: int | None) -> None:
        super().__init__(f"unknown command {command[:64]!r}")
        self.command = command
        self.request_id = request_id


def encode(msg: Message) -> str:
    """One message as a JSON text frame."""
    return dumps(to_dict(msg))


def to_dict(msg: Message) -> dict[str, Any]:
    match msg:
        case Challenge():
            return {"type": "challenge", "nonce": msg.nonce, "server_time_ms": msg.server_time_ms}
        case Login():
            return {"type": "login", "agent_id": msg.agent_id, "signature": msg.signature}
        case Welcome():
            return {"type": "welcome", "heartbeat_s": msg.heartbeat_s, "server_id": msg.server_id}
        case Error():
            return {"type": "error", "code": msg.code, "message": msg.message}
        case Request():
            return {
                "type": "request",
                "id": msg.id,
                "command": msg.command,
                "payload": msg.payload,
            }
        case Response():
            if msg.ok:
                return {"type": "response", "id": msg.id, "ok": True, "result": msg.result}
            err = msg.error or Error("error", "")
            return {
                "type": "response",
                "id": msg.id,
                "ok": False,
                "error": {"code": err.code, "message": err.message},
            }
        case Event():
            return {"type": "event", "command": msg.command, "payload": msg.payload}
        case Ping():
            return {"type": "ping", "ts_ms": msg.ts_ms}
        case Pong():
            return {"type": "pong", "ts_ms": msg.ts_ms}
    raise TypeError(f"not a message: {msg!r}")


def _error(obj: dict[str, Any]) -> Error:
    return Error(_str(obj, "code", max_len=128), _str(obj, "message", optional=True))


def decode(data: str | bytes, *, known: frozenset[str] = COMMANDS) -> Message:
    """Parse one frame: ProtocolError if invalid, UnknownCommand if not in `known`."""
    obj = loads_object(data)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("message without a type")
    match kind:
        case "challenge":
            b64decode(obj.get("nonce"), field="nonce", size=NONCE_BYTES)
            return Challenge(_str(obj, "nonce"), _int(obj, "server_time_ms"))
        case "login":
            return Login(_str(obj, "agent_id", max_len=128), _str(obj, "signature", max_len=256))
        case "welcome":
            return Welcome(_int(obj, "heartbeat_s"), _str(obj, "server_id", optional=True))
        case "error":
            return _error(obj)
        case "request" | "event":
            command = _str(obj, "command", max_len=128)
            payload = _dict(obj, "payload")
            if kind == "event":
                if command not in known:
                    raise UnknownCommand(command, None)
                return Event(command, payload)
            req_id = _int(obj, "id")
            if command not in known:
                raise UnknownCommand(command, req_id)
            return Request(req_id, command, payload)
        case "response":
            req_id = _int(obj, "id")
            ok = obj.get("ok")
            if not isinstance(ok, bool):
                raise ProtocolError("ok: expected a boolean")
            if ok:
                return Response(req_id, True, _dict(obj, "result"))
            return Response(req_id, False, {}, _error(_dict(obj, "error")))
        case "ping":
            return Ping(_int(obj, "ts_ms"))
        case "pong":
            return Pong(_int(obj, "ts_ms"))
    raise ProtocolError(f"unknown message type {kind[:64]!r}")


def request_id_of(data: str | bytes) -> int | None:
    """Best-effort id of a malformed request, so the error can name it."""
    try:
        obj = loads_object(data)
        return _int(obj, "id") if obj.get("type") == "request" else None
    except ProtocolError:
        return None


# ---------------------------------------------------------------------------- activation


@dataclass(frozen=True, slots=True)
class CameraInfo:
    id: str
    serial_number: str = ""
    manufacturer: str = ""
    model: str = ""
    rtsp_url: str = ""
    onvif_url: str = ""


@dataclass(frozen=True, slots=True)
class ActivationRequest:
    token: str
    public_key: str
    signature: str
    agent_type: str = "router"
    version: str = ""
    serial: str = ""
    model: str = ""
    camera: CameraInfo | None = None

    def text(self) -> bytes:
        return activation_text(self.token, self.public_key, self.serial)

    def verify(self) -> None:
        """AuthError unless the signature is the public key's over the activation text."""
        verify(self.public_key, self.signature, self.text())

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "token": self.token,
            "public_key": self.public_key,
            "signature": self.signature,
            "agent_type": self.agent_type,
            "version": self.version,
            "serial": self.serial,
            "model": self.model,
        }
        if self.camera is not None:
            cam = self.camera
            body["camera"] = {
                "id": cam.id,
                "serial_number": cam.serial_number,
                "manufacturer": cam.manufacturer,
                "model": cam.model,
                "rtsp_url": cam.rtsp_url,
                "onvif_url": cam.onvif_url,
            }
        return body


def make_activation(
    key: Ed25519PrivateKey,
    token: str,
    *,
    agent_type: str = "router",
    version: str = "",
    serial: str = "",
    model: str = "",
    camera: CameraInfo | None = None,
) -> ActivationRequest:
    """A signed activation request."""
    pub = public_key_b64(key)
    sig = sign(key, activation_text(token, pub, serial))
    return ActivationRequest(token, pub, sig, agent_type, version, serial, model, camera)


def parse_activation(data: str | bytes | dict[str, Any]) -> ActivationRequest:
    """Validate an activation body (types and sizes only; call `.verify()` for the signature)."""
    obj = data if isinstance(data, dict) else loads_object(data)
    token = _str(obj, "token", max_len=256)
    if not token:
        raise ProtocolError("token: empty")
    public_key = _str(obj, "public_key", max_len=64)
    load_public_key(public_key)
    camera = None
    if obj.get("camera") is not None:
        cam = _dict(obj, "camera")
        camera = CameraInfo(
            id=_str(cam, "id", max_len=128),
            serial_number=_str(cam, "serial_number", optional=True, max_len=256),
            manufacturer=_str(cam, "manufacturer", optional=True, max_len=256),
            model=_str(cam, "model", optional=True, max_len=256),
            rtsp_url=_str(cam, "rtsp_url", optional=True, max_len=2048),
            onvif_url=_str(cam, "onvif_url", optional=True, max_len=2048),
        )
    return ActivationRequest(
        token=token,
        public_key=public_key,
        signature=_str(obj, "signature", max_len=256),
        agent_type=_str(obj, "agent_type", optional=True, max_len=64) or "router",
        version=_str(obj, "version", optional=True, max_len=64),
        serial=_str(obj, "serial", optional=True, max_len=256),
        model=_str(obj, "model", optional=True, max_len=256),
        camera=camera,
    )


@dataclass(frozen=True, slots=True)
class ActivationResult:
    agent_id: str
    endpoint_url: str
    streampoint_hostname: str
    streampoint_url: str
    stream_name: str
    server_id: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "endpoint_url": self.endpoint_url,
            "streampoint": {"hostname": self.streampoint_hostname, "url": self.streampoint_url},
            "stream_name": self.stream_name,
            "server_id": self.server_id,
        }


def parse_activation_result(data: str | bytes | dict[str, Any]) -> ActivationResult:
    """Validate the 200 answer of the activation server."""
    obj = data if isinstance(data, dict) else loads_object(data)
    sp = _dict(obj, "streampoint")
    return ActivationResult(
        agent_id=_str(obj, "agent_id", max_len=128),
        endpoint_url=_str(obj, "endpoint_url", max_len=2048),
        streampoint_hostname=_str(sp, "hostname", max_len=256),
        streampoint_url=_str(sp, "url", max_len=2048),
        stream_name=_str(obj, "stream_name", max_len=256),
        server_id=_str(obj, "server_id", optional=True, max_len=256),
    )


def error_body(code: str, message: str) -> dict[str, Any]:
    """An HTTP error body `{"error", "message"}`."""
    return {"error": code, "message": message}


# ---------------------------------------------------------------------------- QR payload


@dataclass(frozen=True, slots=True)
class QrPayload:
    token: str
    url: str | None = None
    ssid: str | None = None
    psk: str | None = None


def build_qr(payload: QrPayload) -> str:
    """`camera-agent://activate?token=...[&url=...][&ssid=...&psk=...]`."""
    if not payload.token:
        raise ProtocolError("QR payload needs a token")
    query: list[tuple[str, str]] = [("token", payload.token)]
    if payload.url:
        query.append(("url", payload.url))
    if payload.ssid is not None:
        query.append(("ssid", payload.ssid))
        query.append(("psk", payload.psk or ""))
    text = f"{QR_SCHEME}://{QR_HOST}?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}"
    if len(text) > MAX_QR:
        raise LimitExceeded("QR payload too long")
    return text


def parse_qr(text: str) -> QrPayload | None:
    """The payload of one of our QR codes, or None if the text is not one (ignored)."""
    if not isinstance(text, str) or len(text) > MAX_QR:
        return None
    try:
        parts = urllib.parse.urlsplit(text.strip())
    except ValueError:
        return None
    if parts.scheme.lower() != QR_SCHEME or parts.netloc.lower() != QR_HOST:
        return None
    if parts.path not in ("", "/"):
        return None
    try:
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True, max_num_fields=16)
    except ValueError:
        return None
    token = (query.get("token") or [""])[0]
    if not token or not token.isprintable():
        return None

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    return QrPayload(token=token, url=one("url"), ssid=one("ssid"), psk=one("psk"))


#: Longest activation URL considered.
MAX_URL = 2048
#: One DNS label in its ASCII (IDNA) form.
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_HTTP_PORTS = {"http": 80, "https": 443}


def _canonical_host(raw: str) -> str | None:
    """`raw` (a host as the HTTP client connects to it: IDNA ASCII form) in the form hosts are
    compared in: lower case, without a trailing dot; an IP address in its standard text. None
    when it is neither a host name nor an IP address."""
    host = raw.lower()
    if host.endswith("."):
        host = host[:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    if labels[-1].isdecimal():
        return None  # "2.7", "127.1": IPv4 shorthand a resolver may take as an address
    return host


def host_pattern(text: str) -> str:
    """An `activation_hosts` entry (a host name, a suffix of host names, or an IP address) in
    the form hosts are compared in; ProtocolError if it is none of these."""
    name = text.strip() if isinstance(text, str) else ""
    try:
        raw = yarl.URL.build(scheme="https", host=name).raw_host if name else None
    except ValueError:
        raw = None
    host = _canonical_host(raw) if raw else None
    if host is None:
        raise ProtocolError(f"{name[:100]!r} is not a host name or an IP address")
    return host


def url_origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL as the HTTP client reaches it, the host in the
    form of `host_pattern`; None for another scheme, a URL with credentials or an invalid
    host or port."""
    if not isinstance(url, str) or len(url) > MAX_URL:
        return None
    try:
        if "@" in urllib.parse.urlsplit(url).netloc:
            return None
        parsed = yarl.URL(url)
        port = parsed.port
        raw = parsed.raw_host
    except (ValueError, TypeError):
        return None
    scheme = parsed.scheme.lower()
    if scheme not in _HTTP_PORTS or not raw or port is None or not 0 < port < 65536:
        return None
    host = _canonical_host(raw)
    return None if host is None else (scheme, host, port)


def origin_text(url: str) -> str:
    """`scheme://host:port` of a URL for a log line (never its path or query), or a stand-in."""
    origin = url_origin(url)
    if origin is None:
        return "an unusable URL"
    scheme, host, port = origin
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """Whether `host` (canonical, see `url_origin`) is one of `patterns` or a name under one
    of them: "example.net" allows "example.net" and "a.example.net", not "badexample.net". An
    IP address matches only itself. Invalid patterns match nothing."""
    host_is_ip = _is_ip(host)
    for text in patterns:
        try:
            pattern = host_pattern(text)
        except ProtocolError:
            continue
        if host == pattern:
            return True
        if not host_is_ip and not _is_ip(pattern) and host.endswith("." + pattern):
            return True
    return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def activation_url_allowed(
    url: str,
    configured: str | None = None,
    *,
    hosts: Sequence[str] = (),
    pinned: str | None = None,
) -> bool:
    """Whether the agent may use an activation URL read from a QR code (protocol.md 2).

    `pinned` (an activated agent): only the activation server of the current activation, same
    scheme, host and port. Otherwise the `configured` activation server is always allowed; any
    other must be `https://` (or `http://` to a loopback or private address) and, when `hosts`
    (`[cloud] activation_hosts`) is not empty, on one of those hosts. No URL with credentials."""
    origin = url_origin(url)
    if origin is None:
        return False
    if pinned is not None:
        return origin == url_origin(pinned)
    if configured is not None and origin == url_origin(configured):
        return True
    scheme, host, _ = origin
    if hosts and not host_allowed(host, hosts):
        return False
    if scheme == "https":
        return True
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return addr.is_loopback or addr.is_private
