"""SOAP 1.2 for the simulated camera: envelope parsing, XML helpers, faults,
WS-Security UsernameToken verification and the operation registry.

Parsing uses defusedxml with DTDs, entities and external references forbidden, plus
depth and element-count limits, so hostile XML costs little and raises a typed error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote
from xml.etree.ElementTree import Element, ParseError, TreeBuilder
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from agent.errors import (
    AuthError,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    ProtocolError,
)
from agent.sim.camera.model import CameraModel, Profile, User, UserLevel

if TYPE_CHECKING:
    from agent.sim.camera.firmware import FirmwareUploads

NS = {
    "env": "http://www.w3.org/2003/05/soap-envelope",
    "ter": "http://www.onvif.org/ver10/error",
    "tt": "http://www.onvif.org/ver10/schema",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tr2": "http://www.onvif.org/ver20/media/wsdl",
    "tptz": "http://www.onvif.org/ver20/ptz/wsdl",
    "timg": "http://www.onvif.org/ver20/imaging/wsdl",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
}
SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"

#: Largest SOAP request accepted, bytes (the HTTP layer enforces it before reading).
MAX_BODY = 1024 * 1024
#: Deepest element nesting accepted (real requests stay under 10).
MAX_DEPTH = 64
#: Most elements accepted in one request.
MAX_ELEMENTS = 20000
#: Largest distance between a UsernameToken's Created and the camera clock, seconds.
MAX_CREATED_SKEW = 120.0
#: Nonces remembered for replay detection, and for how long (seconds).
NONCE_CACHE_SIZE = 8192
NONCE_TTL = 2 * MAX_CREATED_SKEW + 10.0
_MAX_TOKEN_FIELD = 256

# ---------------------------------------------------------------------------- XML writing


def fmt(value: object) -> str:
    """An XML text value: booleans lower case, floats without noise, text escaped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.6g}"
    return escape(str(value), {'"': "&quot;"})


def el(tag: str, *children: str | None, attrs: Mapping[str, object] | None = None) -> str:
    """`<tag attrs>children</tag>`; children are XML strings, None ones are left out."""
    head = tag + "".join(f' {k}="{fmt(v)}"' for k, v in (attrs or {}).items() if v is not None)
    body = "".join(c for c in children if c)
    return f"<{head}>{body}</{tag}>" if body else f"<{head}/>"


def tx(tag: str, value: object) -> str:
    """`<tag>value</tag>` with the value escaped."""
    return f"<{tag}>{fmt(value)}</{tag}>"


def duration(seconds: float) -> str:
    """xs:duration of whole or fractional seconds, e.g. PT5S."""
    return f"PT{fmt(float(seconds))}S"


_DURATION = re.compile(
    r"^P(?:(\d{1,6})D)?(?:T(?=\d)(?:(\d{1,6})H)?(?:(\d{1,6})M)?(?:(\d{1,6}(?:\.\d{1,9})?)S)?)?$"
)


def parse_duration(text: str) -> float:
    """Seconds of an xs:duration without years or months (PT5S, PT0.5S, P0DT1M)."""
    m = _DURATION.match(text.strip())
    if not m or text.strip() in ("P", "PT"):
        raise InvalidArgument(f"{text!r} is not a duration like PT5S")
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in m.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def iso_utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------- XML reading


def local(tag: str) -> str:
    return tag.rpartition("}")[2]


def child(elem: Element | None, *path: str) -> Element | None:
    """Follow child local names (namespace ignored, as cameras do)."""
    for name in path:
        if elem is None:
            return None
        elem = next((c for c in elem if local(c.tag) == name), None)
    return elem


def children(elem: Element | None, name: str) -> list[Element]:
    return [] if elem is None else [c for c in elem if local(c.tag) == name]


def text(elem: Element | None, *path: str) -> str | None:
    node = child(elem, *path)
    return None if node is None else (node.text or "").strip()


def require(elem: Element | None, *path: str) -> str:
    value = text(elem, *path)
    if value is None:
        raise InvalidArgument(f"missing {'/'.join(path)}")
    return value


def as_float(value: str | None, what: str) -> float:
    try:
        result = float(value or "")
    except ValueError:
        raise InvalidArgument(f"{what}: {value!r} is not a number") from None
    if not math.isfinite(result):
        raise InvalidArgument(f"{what}: {value!r} is not a finite number")
    return result


def as_int(value: str | None, what: str) -> int:
    try:
        return int((value or "").strip())
    except ValueError:
        raise InvalidArgument(f"{what}: {value!r} is not an integer") from None


def as_bool(value: str | None, what: str) -> bool:
    v = (value or "").strip().lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise InvalidArgument(f"{what}: {value!r} is not a boolean")


def opt_float(elem: Element | None, *path: str) -> float | None:
    value = text(elem, *path)
    return None if value is None else as_float(value, "/".join(path))


def attr_float(elem: Element | None, name: str) -> float | None:
    if elem is None or name not in elem.attrib:
        return None
    return as_float(elem.attrib[name], f"{local(elem.tag)}@{name}")


# ---------------------------------------------------------------------------- envelope


class SoapVersionMismatch(ProtocolError):
    """The envelope is not SOAP 1.2."""


@dataclass(frozen=True)
class Envelope:
    header: Element | None
    request: Element  # first child of Body
    operation: str  # its local name
    namespace: str  # its namespace


class _LimitedBuilder(TreeBuilder):
    def __init__(self) -> None:
        super().__init__()
        self._depth = 0
        self._count = 0

    def start(self, tag: str, attrs: dict[str, str], /) -> Element:
        self._depth += 1
        self._count += 1
        if self._depth > MAX_DEPTH:
            raise LimitExceeded(f"XML nested deeper than {MAX_DEPTH}")
        if self._count > MAX_ELEMENTS:
            raise LimitExceeded(f"more than {MAX_ELEMENTS} XML elements")
        return super().start(tag, attrs)

    def end(self, tag: str, /) -> Element:
        self._depth -= 1
        return super().end(tag)


def parse_xml(data: bytes) -> Element:
    """Parse untrusted XML: no DTD, entities or external references; bounded."""
    if len(data) > MAX_BODY:
        raise LimitExceeded(f"request larger than {MAX_BODY} bytes")
    parser = DefusedXMLParser(target=_LimitedBuilder(), forbid_dtd=True)
    try:
        parser.feed(data)
        root: Element = parser.close()
    except DefusedXmlException as exc:
        raise ProtocolError(f"forbidden XML construct: {type(exc).__name__}") from None
    except ParseError as exc:
        raise ProtocolError(f"malformed XML: {exc}") from None
    return root


def parse_envelope(data: bytes) -> Envelope:
    """Split a SOAP 1.2 request into header and operation element."""
    root = parse_xml(data)
    if root.tag == f"{{{SOAP11_NS}}}Envelope":
        raise SoapVersionMismatch("SOAP 1.1 envelope; this service speaks SOAP 1.2")
    if root.tag != f"{{{NS['env']}}}Envelope":
        raise ProtocolError("root element is not a SOAP 1.2 Envelope")
    header = root.find(f"{{{NS['env']}}}Header")
    body = root.find(f"{{{NS['env']}}}Body")
    if body is None or len(body) == 0:
        raise ProtocolError("SOAP Body is missing or empty")
    request = body[0]
    ns, _, name = request.tag[1:].partition("}") if request.tag.startswith("{") else ("", "", "")
    return Envelope(header, request, name or request.tag, ns)


_PROLOGUE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<env:Envelope'
    + "".join(f' xmlns:{p}="{uri}"' for p, uri in NS.items())
    + "><env:Body>"
)


def envelope(body: str) -> bytes:
    """A response envelope around `body` (XML using the NS prefixes)."""
    return (_PROLOGUE + body + "</env:Body></env:Envelope>").encode()


# ---------------------------------------------------------------------------- faults

_RECEIVER = {"ter:ActionNotSupported", "ter:Action", "ter:OutofMemory", "ter:CriticalError"}
_REASONS = {
    "ter:WellFormed": "Well-formed Error",
    "ter:InvalidArgVal": "Argument Value Invalid",
    "ter:InvalidArgs": "Invalid Args",
    "ter:NotAuthorized": "Sender not Authorized",
    "ter:ActionNotSupported": "Optional Action Not Implemented",
    "ter:OperationProhibited": "Operation Prohibited",
    "ter:WrongSoapVersion": "Wrong SOAP Version",
    "ter:Action": "Action Failed",
}


class SoapFault(Exception):
    """A fault to send: env code, ONVIF subcodes (outer first) and reason text."""

    def __init__(self, subcodes: str | Sequence[str], detail: str = "", *, code: str = "") -> None:
        self.subcodes = (subcodes,) if isinstance(subcodes, str) else tuple(subcodes)
        first = self.subcodes[0] if self.subcodes else ""
        self.code = code or ("env:Receiver" if first in _RECEIVER else "env:Sender")
        base = _REASONS.get(first, "")
        self.reason = f"{base}: {detail}" if base and detail else (base or detail or "Fault")
        super().__init__(self.reason)

    @property
    def http_status(self) -> int:
        """SOAP 1.2 HTTP binding: Sender faults are 400, all others 500.

        So WS-Security failures (env:Sender/ter:NotAuthorized) go out as 400, as the ONVIF
        Core spec has it. zeep parses the fault body whatever the status, and clients
        (onvif-zeep-async, Home Assistant) detect bad credentials by the NotAuthorized
        subcode; a 401 would promise HTTP authentication this endpoint does not offer.
        """
        return 400 if self.code == "env:Sender" else 500

    def to_xml(self) -> bytes:
        sub = ""
        for value in reversed(self.subcodes):
            sub = el("env:Subcode", tx("env:Value", value), sub)
        code = el("env:Code", tx("env:Value", self.code), sub)
        reason = el("env:Reason", f'<env:Text xml:lang="en">{fmt(self.reason)}</env:Text>')
        return envelope(el("env:Fault", code, reason))


_ERROR_FAULTS: dict[type[BaseException], tuple[str, ...]] = {
    AuthError: ("ter:NotAuthorized",),
    InvalidArgument: ("ter:InvalidArgVal",),
    NotFound: ("ter:InvalidArgVal", "ter:NoEntity"),
    LimitExceeded: ("ter:Action",),
    ProtocolError: ("ter:WellFormed",),
}


def map_error(cls: type[BaseException], *subcodes: str) -> None:
    """Register the fault subcodes sent for an exception class (most specific wins)."""
    _ERROR_FAULTS[cls] = subcodes


def fault_for(exc: BaseException) -> SoapFault | None:
    """The fault an exception stands for, or None for an internal error."""
    if isinstance(exc, SoapFault):
        return exc
    for cls in type(exc).__mro__:
        if cls in _ERROR_FAULTS:
            return SoapFault(_ERROR_FAULTS[cls], str(exc))
    return None


# ---------------------------------------------------------------------------- WS-Security


@dataclass(frozen=True)
class UsernameToken:
    username: str
    password: str = field(repr=False)
    digest: bool
    nonce: bytes | None = field(default=None, repr=False)
    created: str | None = None


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """Base64(SHA1(nonce + created + password)), the WS-Security PasswordDigest."""
    raw = hashlib.sha1(nonce + created.encode() + password.encode()).digest()  # noqa: S324
    return base64.b64encode(raw).decode()


def parse_security(header: Element | None) -> UsernameToken | None:
    """The UsernameToken of a SOAP header, None when there is none."""
    token = child(header, "Security", "UsernameToken")
    if token is None:
        return None
    values = {name: text(token, name) for name in ("Username", "Password", "Nonce", "Created")}
    if any(v is not None and len(v) > _MAX_TOKEN_FIELD for v in values.values()):
        raise AuthError("oversized UsernameToken field")
    password = child(token, "Password")
    ptype = "" if password is None else password.attrib.get("Type", "")
    nonce = None
    if values["Nonce"] is not None:
        try:
            nonce = base64.b64decode(values["Nonce"], validate=True)
        except (binascii.Error, ValueError):
            raise AuthError("Nonce is not base64") from None
    return UsernameToken(
        username=values["Username"] or "",
        password=values["Password"] or "",
        digest=ptype.endswith("#PasswordDigest"),
        nonce=nonce,
        created=values["Created"],
    )


def parse_created(value: str) -> float:
    try:
        stamp = datetime.fromisoformat(value.strip())
    except ValueError:
        raise AuthError("Created is not an ISO 8601 time") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


class NonceCache:
    """Nonces seen recently, bounded in size and age, for replay detection."""

    def __init__(self, *, size: int = NONCE_CACHE_SIZE, ttl: float = NONCE_TTL) -> None:
        self._size = size
        self._ttl = ttl
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, nonce: bytes, now: float) -> bool:
        """Remember `nonce`; False when it was seen already (a replay)."""
        while self._seen and next(iter(self._seen.values())) < now - self._ttl:
            self._seen.popitem(last=False)
        if nonce in self._seen:
            return False
        if len(self._seen) >= self._size:
            self._seen.popitem(last=False)
        self._seen[nonce] = now
        return True


def verify(
    token: UsernameToken | None,
    *,
    lookup: Callable[[str], User | None],
    camera_now: float,
    nonces: NonceCache,
    now: float,
) -> User:
    """Check a UsernameToken against the users; raise AuthError saying why not."""
    if token is None:
        raise AuthError("no WS-Security UsernameToken")
    user = lookup(token.username)
    if user is None:
        raise AuthError("unknown user")
    if token.digest:
        if token.nonce is None or token.created is None:
            raise AuthError("PasswordDigest without Nonce or Created")
        expected = password_digest(token.nonce, token.created, user.password)
        ok = hmac.compare_digest(expected.encode(), token.password.encode())
    else:
        ok = hmac.compare_digest(user.password.encode(), token.password.encode())
    if not ok:
        raise AuthError("wrong password")
    if token.created is not None and abs(parse_created(token.created) - camera_now) > (
        MAX_CREATED_SKEW
    ):
        raise AuthError(f"Created is more than {MAX_CREATED_SKEW:g} s from the camera clock")
    if token.nonce is not None and not nonces.add(token.nonce, now):
        raise AuthError("replayed nonce")
    return user


# ---------------------------------------------------------------------------- operations


class Access(IntEnum):
    """ONVIF access classes, as the user level each needs."""

    PRE_AUTH = 0
    READ = 1  # User
    ACTUATE = 2  # Operator
    ADMIN = 3  # Administrator

    def allows(self, level: UserLevel | None) -> bool:
        return self is Access.PRE_AUTH or (level is not None and level.rank >= self.value)


class CameraHooks(Protocol):
    """What the services ask of the rest of the simulated camera."""

    def encoder_changed(self, profile_token: str) -> None:
        """The live stream of `profile_token` must pick up its new encoder settings."""

    def schedule_reboot(self, seconds: float) -> None:
        """Restart soon (SystemReboot, firmware installed), staying down `seconds`."""

    def protocols_changed(self) -> None:
        """SetNetworkProtocols changed ports or enabled services."""


@dataclass
class Context:
    """One request as handlers see it."""

    model: CameraModel
    hooks: CameraHooks
    firmware: FirmwareUploads
    host: str  # host part of URLs, IPv6 in brackets
    now: float  # monotonic seconds
    user: User | None = None

    @property
    def base_url(self) -> str:
        """Scheme, host and port of the service and snapshot URLs the camera announces (the
        `advertised_address` fault replaces the real ones)."""
        wrong = self.model.faults.advertised()
        if wrong is not None:
            return f"http://{wrong[0]}:{wrong[1] or self.model.http_port}"
        return f"http://{self.host}:{self.model.http_port}"

    def xaddr(self, service: str) -> str:
        return self.base_url + SERVICES[service].path

    def rtsp_uri(self, profile: Profile) -> str:
        wrong = self.model.faults.advertised()
        host = self.host if wrong is None else wrong[0]
        return f"rtsp://{host}:{self.model.rtsp_port}{profile.rtsp_path}"

    def snapshot_uri(self, profile: Profile) -> str:
        base = self.base_url
        port = self.model.faults.snapshot_port
        if port is not None:  # a snapshot service elsewhere on the camera, switched off
            base = f"{base.rpartition(':')[0]}:{port}"
        return f"{base}/onvif/snapshot?profile={quote(profile.token, safe='')}"


Handler = Callable[[Context, Element], str]


@dataclass(frozen=True)
class Operation:
    name: str
    access: Access
    handler: Handler


class Service:
    """One ONVIF service: its namespace, path and operations."""

    def __init__(self, key: str, prefix: str, path: str, version: tuple[int, int]) -> None:
        self.key = key
        self.prefix = prefix
        self.namespace = NS[prefix]
        self.path = path
        self.version = version
        self.operations: dict[str, Operation] = {}
        self.capabilities: Callable[[Context], str] | None = None  # its Capabilities element
        SERVICES[key] = self

    def operation(self, name: str, *, access: Access) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.operations[name] = Operation(name, access, fn)
            return fn

        return register


#: Every service by key (device, media, media2, ptz, imaging), filled as handlers import.
SERVICES: dict[str, Service] = {}


def find_service(path_service: str, env: Envelope) -> Service | None:
    """The service an envelope is for: by its namespace first, else by the path."""
    by_ns = next((s for s in SERVICES.values() if s.namespace == env.namespace), None)
    return by_ns or SERVICES.get(path_service)


def find_operation(path_service: str, env: Envelope) -> Operation | None:
    """The operation an envelope asks for: by its namespace first, else by the path."""
    service = find_service(path_service, env)
    return None if service is None else service.operations.get(env.operation)
