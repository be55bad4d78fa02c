"""WS-Discovery 2005/04 as ONVIF uses it: Probe, ProbeMatches, Hello, Bye (sans-I/O).

SOAP 1.2 envelopes with WS-Addressing 2004/08 headers. `parse` turns one UDP datagram into a
message dataclass, `serialize` does the reverse, and `matches` decides whether a target answers a
Probe (Types by QName, Scopes by the RFC 3986 prefix rule or strcmp0).
"""

from __future__ import annotations

import io
import random
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple, TypeAlias
from urllib.parse import quote, unquote, urlsplit
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape, quoteattr

import defusedxml
import defusedxml.ElementTree as SafeET

from agent.errors import InvalidArgument, LimitExceeded, ProtocolError

NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
NS_DN = "http://www.onvif.org/ver10/network/wsdl"
NS_TDS = "http://www.onvif.org/ver10/device/wsdl"

ACTION_PROBE = NS_WSD + "/Probe"
ACTION_PROBE_MATCHES = NS_WSD + "/ProbeMatches"
ACTION_HELLO = NS_WSD + "/Hello"
ACTION_BYE = NS_WSD + "/Bye"
TO_DISCOVERY = "urn:schemas-xmlsoap-org:ws:2005:04:discovery"
TO_ANONYMOUS = NS_WSA + "/role/anonymous"

MATCH_RFC3986 = NS_WSD + "/rfc3986"
MATCH_RFC2396 = NS_WSD + "/rfc2396"  # the 2005/04 name of the same rule
MATCH_STRCMP0 = NS_WSD + "/strcmp0"
_MATCH_RFC3986_2009 = "http://docs.oasis-open.org/ws-dd/ns/discovery/2009/01/rfc3986"
_PREFIX_RULES = frozenset({MATCH_RFC3986, MATCH_RFC2396, _MATCH_RFC3986_2009})

MULTICAST_GROUP = "239.255.255.250"
MULTICAST_PORT = 3702

MAX_DATAGRAM = 65536
MAX_ITEMS = 64  # per Types / Scopes / XAddrs list and per ProbeMatches
MAX_ELEMENTS = 2048
MAX_DEPTH = 16
MAX_NS_DECLARATIONS = 256

# SOAP-over-UDP retransmission (section 3.4 and Appendix I of the 2004/09 spec).
MULTICAST_UDP_REPEAT = 2
UNICAST_UDP_REPEAT = 1
UDP_MIN_DELAY = 0.050
UDP_MAX_DELAY = 0.250
UDP_UPPER_DELAY = 0.500

_ONVIF_SCOPE = "onvif://www.onvif.org/"
# Prefixes some cameras use in Types without declaring them.
_KNOWN_PREFIXES = {"dn": NS_DN, "tdn": NS_DN, "tds": NS_TDS}


class QName(NamedTuple):
    """A qualified name compared by namespace and local part, never by prefix."""

    namespace: str
    local: str

    def __str__(self) -> str:
        return f"{{{self.namespace}}}{self.local}"


NVT = QName(NS_DN, "NetworkVideoTransmitter")
DEVICE = QName(NS_TDS, "Device")


_NOT_XML = frozenset([*map(chr, range(0x20)), "\x7f", "\ufffe", "\uffff"])
_SURROGATES = re.compile("[\ud800-\udfff]")


def _check_token(value: str, what: str) -> None:
    """A list item or header value: non-empty, no whitespace, no control characters."""
    if not value:
        raise InvalidArgument(f"{what} is empty")
    if any(ch.isspace() or ch in _NOT_XML for ch in value) or _SURROGATES.search(value):
        raise InvalidArgument(f"{what} contains whitespace or non-XML characters: {value!r}")


def _check_list(values: Sequence[str], what: str) -> None:
    if len(values) > MAX_ITEMS:
        raise InvalidArgument(f"too many {what}: {len(values)} > {MAX_ITEMS}")
    for value in values:
        _check_token(value, what)


def _check_types(types: Sequence[QName]) -> None:
    if len(types) > MAX_ITEMS:
        raise InvalidArgument(f"too many types: {len(types)} > {MAX_ITEMS}")
    for qname in types:
        _check_token(qname.local, "type local name")
        if ":" in qname.local:
            raise InvalidArgument(f"type local name contains ':': {qname.local!r}")
        if qname.namespace:
            _check_token(qname.namespace, "type namespace")
            if "{" in qname.namespace or "}" in qname.namespace:
                raise InvalidArgument(f"type namespace is not a URI: {qname.namespace!r}")


@dataclass(frozen=True)
class AppSequence:
    """Ordering header of Hello, Bye and ProbeMatches."""

    instance_id: int
    message_number: int
    sequence_id: str | None = None

    def __post_init__(self) -> None:
        for value in (self.instance_id, self.message_number):
            if not 0 <= value < 2**32:
                raise InvalidArgument(f"AppSequence number out of range: {value}")
        if self.sequence_id is not None:
            _check_token(self.sequence_id, "SequenceId")


@dataclass(frozen=True)
class DiscoveryTarget:
    """What a Target Service tells about itself (ProbeMatch and Hello body)."""

    endpoint_reference: str
    types: tuple[QName, ...]
    scopes: tuple[str, ...]
    xaddrs: tuple[str, ...]
    metadata_version: int = 1

    def __post_init__(self) -> None:
        _check_token(self.endpoint_reference, "endpoint reference")
        _check_types(self.types)
        _check_list(self.scopes, "scopes")
        _check_list(self.xaddrs, "xaddrs")
        if not 0 <= self.metadata_version < 2**32:
            raise InvalidArgument(f"metadata version out of range: {self.metadata_version}")


ProbeMatch: TypeAlias = DiscoveryTarget


@dataclass(frozen=True)
class Probe:
    """A search for targets; empty types or scopes match everything."""

    message_id: str
    types: tuple[QName, ...] = ()
    scopes: tuple[str, ...] = ()
    match_by: str | None = None  # None: the default RFC 3986 rule

    def __post_init__(self) -> None:
        _check_token(self.message_id, "MessageID")
        _check_types(self.types)
        _check_list(self.scopes, "scopes")
        if self.match_by is not None:
            _check_token(self.match_by, "MatchBy")


@dataclass(frozen=True)
class ProbeMatches:
    """A reply to the Probe whose MessageID is `relates_to`."""

    message_id: str
    relates_to: str
    matches: tuple[DiscoveryTarget, ...]
    app_sequence: AppSequence | None = None

    def __post_init__(self) -> None:
        _check_token(self.message_id, "MessageID")
        _check_token(self.relates_to, "RelatesTo")
        if len(self.matches) > MAX_ITEMS:
            raise InvalidArgument(f"too many matches: {len(self.matches)} > {MAX_ITEMS}")


@dataclass(frozen=True)
class Hello:
    """A target joined the network (or changed its metadata)."""

    message_id: str
    target: DiscoveryTarget
    app_sequence: AppSequence | None = None

    def __post_init__(self) -> None:
        _check_token(self.message_id, "MessageID")


@dataclass(frozen=True)
class Bye:
    """A target leaves the network."""

    message_id: str
    endpoint_reference: str
    app_sequence: AppSequence | None = None

    def __post_init__(self) -> None:
        _check_token(self.message_id, "MessageID")
        _check_token(self.endpoint_reference, "endpoint reference")


Message: TypeAlias = Probe | ProbeMatches | Hello | Bye


def new_message_id() -> str:
    """A fresh `urn:uuid:` MessageID."""
    return f"urn:uuid:{uuid.uuid4()}"


def endpoint_reference(seed: str) -> str:
    """A stable `urn:uuid:` endpoint reference derived from `seed` (e.g. a serial number)."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'camera-agent:' + seed)}"


def onvif_scopes(
    *,
    name: str,
    hardware: str,
    location: str = "",
    extra: Iterable[str] = (),
) -> tuple[str, ...]:
    """The scopes an ONVIF Profile S camera announces; values are percent-encoded."""
    scopes = [
        _ONVIF_SCOPE + "type/video_encoder",
        _ONVIF_SCOPE + "Profile/Streaming",
        _ONVIF_SCOPE + "name/" + quote(name, safe=""),
        _ONVIF_SCOPE + "hardware/" + quote(hardware, safe=""),
    ]
    if location:
        scopes.append(_ONVIF_SCOPE + "location/" + quote(location, safe="/"))
    scopes.extend(extra)
    return tuple(scopes)


def retransmit_delays(repeat: int, rng: random.Random | None = None) -> tuple[float, ...]:
    """Seconds to wait before each of `repeat` retransmissions (SOAP-over-UDP schedule)."""
    pick = rng or random.Random()  # noqa: S311 - timing jitter, not security
    delay = pick.uniform(UDP_MIN_DELAY, UDP_MAX_DELAY)
    delays = []
    for _ in range(repeat):
        delays.append(delay)
        delay = min(delay * 2, UDP_UPPER_DELAY)
    return tuple(delays)


# ---- matching ------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _canonical(uri: str) -> tuple[str, str, tuple[str, ...]] | None:
    """Scheme and authority lowered, path split into unescaped segments; None if unusable."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None
    segments = [unquote(seg) for seg in parts.path.split("/")]
    if segments and segments[0] == "":
        segments = segments[1:]
    if segments and segments[-1] == "":  # a trailing "/" does not add a segment
        segments = segments[:-1]
    if "." in segments or ".." in segments:
        return None
    return parts.scheme.lower(), parts.netloc.lower(), tuple(segments)


def match_scope(probe_scope: str, target_scope: str, match_by: str | None = None) -> bool:
    """True if the Probe's scope matches the target's scope under rule `match_by`."""
    if match_by is None or match_by in _PREFIX_RULES:
        want = _canonical(probe_scope)
        have = _canonical(target_scope)
        if want is None or have is None:
            return False
        return want[:2] == have[:2] and have[2][: len(want[2])] == want[2]
    if match_by == MATCH_STRCMP0:
        return probe_scope == target_scope
    return False  # unsupported rule: a target must not answer


def match_types(probe_types: Iterable[QName], target_types: Iterable[QName]) -> bool:
    """True if every probed type is one of the target's types."""
    have = set(target_types)
    return all(qname in have for qname in probe_types)


def matches(probe: Probe, target: DiscoveryTarget) -> bool:
    """True if `target` must answer `probe`."""
    if not match_types(probe.types, target.types):
        return False
    return all(
        any(match_scope(want, have, probe.match_by) for have in target.scopes)
        for want in probe.scopes
    )


# ---- serialization -------------------------------------------------------------------------

_ENVELOPE_OPEN = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f'<s:Envelope xmlns:s="{NS_SOAP}" xmlns:a="{NS_WSA}" xmlns:d="{NS_WSD}"'
    f' xmlns:dn="{NS_DN}" xmlns:tds="{NS_TDS}">'
)
_WELL_KNOWN = {NS_DN: "dn", NS_TDS: "tds", NS_WSD: "d", NS_WSA: "a", NS_SOAP: "s"}


def _types_xml(types: Sequence[QName]) -> str:
    if not types:
        return ""
    extra: dict[str, str] = {}
    names = []
    for qname in types:
        if not qname.namespace:  # no namespace: unprefixed, no default namespace in scope
            names.append(qname.local)
            continue
        prefix = _WELL_KNOWN.get(qname.namespace) or extra.setdefault(
            qname.namespace, f"t{len(extra)}"
        )
        names.append(f"{prefix}:{qname.local}")
    decls = "".join(f" xmlns:{p}={quoteattr(ns)}" for ns, p in extra.items())
    return f"<d:Types{decls}>{escape(' '.join(names))}</d:Types>"


def _list_xml(tag: str, values: Sequence[str], attrs: str = "") -> str:
    if not values:
        return ""
    return f"<d:{tag}{attrs}>{escape(' '.join(values))}</d:{tag}>"


def _target_xml(target: DiscoveryTarget) -> str:
    return (
        f"<a:EndpointReference><a:Address>{escape(target.endpoint_reference)}</a:Address>"
        "</a:EndpointReference>"
        + _types_xml(target.types)
        + _list_xml("Scopes", target.scopes)
        + _list_xml("XAddrs", target.xaddrs)
        + f"<d:MetadataVersion>{target.metadata_version}</d:MetadataVersion>"
    )


def _header_xml(
    action: str,
    message_id: str,
    to: str,
    relates_to: str | None = None,
    app_sequence: AppSequence | None = None,
) -> str:
    parts = [
        f"<a:MessageID>{escape(message_id)}</a:MessageID>",
        f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>" if relates_to else "",
        f"<a:To>{escape(to)}</a:To>",
        f"<a:Action>{escape(action)}</a:Action>",
    ]
    if app_sequence is not None:
        seq = app_sequence
        sid = f" SequenceId={quoteattr(seq.sequence_id)}" if seq.sequence_id else ""
        parts.append(
            f'<d:AppSequence InstanceId="{seq.instance_id}"'
            f' MessageNumber="{seq.message_number}"{sid}/>'
        )
    return "<s:Header>" + "".join(parts) + "</s:Header>"


def serialize(message: Message) -> bytes:
    """The datagram for one message."""
    if isinstance(message, Probe):
        attrs = f" MatchBy={quoteattr(message.match_by)}" if message.match_by else ""
        header = _header_xml(ACTION_PROBE, message.message_id, TO_DISCOVERY)
        body = (
            "<d:Probe>"
            + _types_xml(message.types)
            + _list_xml("Scopes", message.scopes, attrs)
            + "</d:Probe>"
        )
    elif isinstance(message, ProbeMatches):
        header = _header_xml(
            ACTION_PROBE_MATCHES,
            message.message_id,
            TO_ANONYMOUS,
            message.relates_to,
            message.app_sequence,
        )
        items = "".join(f"<d:ProbeMatch>{_target_xml(t)}</d:ProbeMatch>" for t in message.matches)
        body = f"<d:ProbeMatches>{items}</d:ProbeMatches>"
    elif isinstance(message, Hello):
        header = _header_xml(
            ACTION_HELLO, message.message_id, TO_DISCOVERY, None, message.app_sequence
        )
        body = f"<d:Hello>{_target_xml(message.target)}</d:Hello>"
    else:
        header = _header_xml(
            ACTION_BYE, message.message_id, TO_DISCOVERY, None, message.app_sequence
        )
        body = (
            f"<d:Bye><a:EndpointReference><a:Address>{escape(message.endpoint_reference)}"
            "</a:Address></a:EndpointReference></d:Bye>"
        )
    data = (_ENVELOPE_OPEN + header + f"<s:Body>{body}</s:Body></s:Envelope>").encode()
    if len(data) > MAX_DATAGRAM:
        raise LimitExceeded(f"message of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    return data


# ---- parsing -------------------------------------------------------------------------------

_NsMaps: TypeAlias = dict[Element, Mapping[str, str]]


def _tag(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def _read_tree(data: bytes) -> tuple[Element, _NsMaps]:
    """Parse with DTDs and entities forbidden, keeping each element's in-scope prefixes."""
    stack: list[Mapping[str, str]] = [{}]
    pending: dict[str, str] = {}
    nsmaps: _NsMaps = {}
    root: Element | None = None
    declarations = 0
    events = ("start-ns", "start", "end")
    try:
        for event, item in SafeET.iterparse(io.BytesIO(data), events, forbid_dtd=True):
            if event == "start-ns":
                declarations += 1
                if declarations > MAX_NS_DECLARATIONS:
                    raise LimitExceeded("too many namespace declarations")
                prefix, uri = item
                pending[prefix] = uri
            elif event == "start":
                current = {**stack[-1], **pending} if pending else stack[-1]
                pending = {}
                stack.append(current)
                nsmaps[item] = current
                if root is None:
                    root = item
                if len(stack) - 1 > MAX_DEPTH:
                    raise LimitExceeded(f"XML nested deeper than {MAX_DEPTH}")
                if len(nsmaps) > MAX_ELEMENTS:
                    raise LimitExceeded(f"more than {MAX_ELEMENTS} XML elements")
            else:
                stack.pop()
    except ProtocolError:
        raise
    except (ParseError, defusedxml.DefusedXmlException, LookupError, ValueError) as exc:
        # LookupError: an unknown encoding in the XML declaration
        raise ProtocolError(f"malformed XML: {exc}") from exc
    if root is None:  # pragma: no cover - expat rejects empty documents first
        raise ProtocolError("empty document")
    return root, nsmaps


def _text(element: Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _split(element: Element | None, what: str) -> tuple[str, ...]:
    items = tuple(_text(element).split())
    if len(items) > MAX_ITEMS:
        raise LimitExceeded(f"more than {MAX_ITEMS} {what}")
    return items


def _uint(value: str | None, what: str) -> int:
    text = (value or "").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise ProtocolError(f"{what} is not a 32-bit unsigned integer: {text[:20]!r}")
    number = int(text)
    if number >= 2**32:
        raise ProtocolError(f"{what} out of range: {number}")
    return number


def _types(element: Element | None, nsmaps: _NsMaps) -> tuple[QName, ...]:
    if element is None:
        return ()
    scope = nsmaps.get(element, {})
    result = []
    for token in _split(element, "types"):
        prefix, sep, local = token.rpartition(":")
        if sep and not prefix:
            raise ProtocolError(f"bad QName in Types: {token!r}")
        if prefix:
            namespace = scope.get(prefix) or _KNOWN_PREFIXES.get(prefix)
        else:
            namespace = scope.get("", "")  # unprefixed: the default namespace, if any
        if namespace is None:
            raise ProtocolError(f"undeclared prefix in Types: {token!r}")
        result.append(QName(namespace, local))
    return tuple(result)


def _target(element: Element, nsmaps: _NsMaps) -> DiscoveryTarget:
    version = element.find(_tag(NS_WSD, "MetadataVersion"))
    return DiscoveryTarget(
        endpoint_reference=_address(element),
        types=_types(element.find(_tag(NS_WSD, "Types")), nsmaps),
        scopes=_split(element.find(_tag(NS_WSD, "Scopes")), "scopes"),
        xaddrs=_split(element.find(_tag(NS_WSD, "XAddrs")), "xaddrs"),
        metadata_version=1 if version is None else _uint(version.text, "MetadataVersion"),
    )


def _address(element: Element) -> str:
    address = _text(element.find(f"{_tag(NS_WSA, 'EndpointReference')}/{_tag(NS_WSA, 'Address')}"))
    if not address:
        raise ProtocolError("EndpointReference/Address missing")
    return address


class _Header(NamedTuple):
    message_id: str
    action: str
    relates_to: str
    app_sequence: AppSequence | None


def _header(envelope: Element) -> _Header:
    header = envelope.find(_tag(NS_SOAP, "Header"))
    if header is None:
        raise ProtocolError("SOAP Header missing")
    message_id = _text(header.find(_tag(NS_WSA, "MessageID")))
    action = _text(header.find(_tag(NS_WSA, "Action")))
    if not message_id or not action:
        raise ProtocolError("WS-Addressing MessageID or Action missing")
    seq = header.find(_tag(NS_WSD, "AppSequence"))
    app_sequence = None
    if seq is not None:
        app_sequence = AppSequence(
            _uint(seq.get("InstanceId"), "InstanceId"),
            _uint(seq.get("MessageNumber"), "MessageNumber"),
            seq.get("SequenceId") or None,
        )
    relates_to = _text(header.find(_tag(NS_WSA, "RelatesTo")))
    return _Header(message_id, action, relates_to, app_sequence)


def _body(envelope: Element) -> Element:
    body = envelope.find(_tag(NS_SOAP, "Body"))
    children = list(body) if body is not None else []
    if len(children) != 1:
        raise ProtocolError("SOAP Body must hold exactly one element")
    return children[0]


_ACTIONS = {
    _tag(NS_WSD, "Probe"): ACTION_PROBE,
    _tag(NS_WSD, "ProbeMatches"): ACTION_PROBE_MATCHES,
    _tag(NS_WSD, "Hello"): ACTION_HELLO,
    _tag(NS_WSD, "Bye"): ACTION_BYE,
}


def parse(data: bytes) -> Message:
    """Decode one datagram; `ProtocolError` (or `LimitExceeded`) if it is not a valid message."""
    if len(data) > MAX_DATAGRAM:
        raise LimitExceeded(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    root, nsmaps = _read_tree(data)
    if root.tag != _tag(NS_SOAP, "Envelope"):
        raise ProtocolError(f"not a SOAP 1.2 envelope: {root.tag[:100]!r}")
    try:
        return _decode(root, nsmaps)
    except InvalidArgument as exc:  # a value our dataclasses refuse
        raise ProtocolError(str(exc)) from exc


def _decode(envelope: Element, nsmaps: _NsMaps) -> Message:
    header = _header(envelope)
    payload = _body(envelope)
    expected = _ACTIONS.get(payload.tag)
    if expected is None:
        raise ProtocolError(f"unsupported body element {payload.tag[:100]!r}")
    if header.action != expected:
        raise ProtocolError(f"Action {header.action[:100]!r} does not fit the body")
    if header.action == ACTION_PROBE:
        scopes = payload.find(_tag(NS_WSD, "Scopes"))
        match_by = (scopes.get("MatchBy") or "").strip() if scopes is not None else ""
        return Probe(
            message_id=header.message_id,
            types=_types(payload.find(_tag(NS_WSD, "Types")), nsmaps),
            scopes=_split(scopes, "scopes"),
            match_by=match_by or None,
        )
    if header.action == ACTION_PROBE_MATCHES:
        if not header.relates_to:
            raise ProtocolError("ProbeMatches without RelatesTo")
        found = payload.findall(_tag(NS_WSD, "ProbeMatch"))
        if len(found) > MAX_ITEMS:
            raise LimitExceeded(f"more than {MAX_ITEMS} ProbeMatch elements")
        return ProbeMatches(
            message_id=header.message_id,
            relates_to=header.relates_to,
            matches=tuple(_target(item, nsmaps) for item in found),
            app_sequence=header.app_sequence,
        )
    if header.action == ACTION_HELLO:
        return Hello(header.message_id, _target(payload, nsmaps), header.app_sequence)
    return Bye(header.message_id, _address(payload), header.app_sequence)
