"""WS-Discovery codec: round trips, captured camera messages, matching rules, hostile input."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import InvalidArgument, LimitExceeded, ProtocolError
from agent.proto.wsdiscovery import (
    DEVICE,
    MATCH_RFC2396,
    MATCH_STRCMP0,
    MAX_DATAGRAM,
    NS_DN,
    NS_TDS,
    NVT,
    UDP_MAX_DELAY,
    UDP_MIN_DELAY,
    UDP_UPPER_DELAY,
    AppSequence,
    Bye,
    DiscoveryTarget,
    Hello,
    Probe,
    ProbeMatches,
    QName,
    endpoint_reference,
    match_scope,
    match_types,
    matches,
    new_message_id,
    onvif_scopes,
    parse,
    retransmit_delays,
    serialize,
)

TARGET = DiscoveryTarget(
    endpoint_reference="urn:uuid:5f5a69c2-e0ae-504f-829b-00fcdab169cc",
    types=(NVT, DEVICE),
    scopes=onvif_scopes(name="Front Door", hardware="SIM-1080", location="site/hall"),
    xaddrs=("http://127.0.0.1:8080/onvif/device_service",),
    metadata_version=7,
)

# A ProbeMatches in the shape Hikvision cameras send: dozens of prefixes, "wsa" bound to
# WS-Addressing 2005/08 while the headers use "wsadis" (2004/08), IPv4 + IPv6 XAddrs.
HIKVISION_PROBE_MATCHES = b"""<?xml version="1.0" encoding="UTF-8"?>
<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"
 xmlns:soapenc="http://www.w3.org/2003/05/soap-encoding"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xs="http://www.w3.org/2001/XMLSchema"
 xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:tds="http://www.onvif.org/ver10/device/wsdl"
 xmlns:trt="http://www.onvif.org/ver10/media/wsdl" xmlns:dn="http://www.onvif.org/ver10/network/wsdl"
 xmlns:tns1="http://www.onvif.org/ver10/topics" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"
 xmlns:wsadis="http://schemas.xmlsoap.org/ws/2004/08/addressing"
 xmlns:wsa="http://www.w3.org/2005/08/addressing"
 xmlns:hikwsd="http://www.onvifext.com/onvif/ext/ver10/wsdl"
 xmlns:hikxsd="http://www.onvifext.com/onvif/ext/ver10/schema">
<env:Header>
<wsadis:MessageID>urn:uuid:66b6a3ee-1dd2-11b2-8a3c-a41437b2c3d4</wsadis:MessageID>
<wsadis:RelatesTo>uuid:0a6dc791-2be6-4991-9af1-454778a1917a</wsadis:RelatesTo>
<wsadis:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsadis:To>
<wsadis:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsadis:Action>
<d:AppSequence InstanceId="1700000100" MessageNumber="12"></d:AppSequence>
</env:Header>
<env:Body>
<d:ProbeMatches>
<d:ProbeMatch>
<wsadis:EndpointReference>
<wsadis:Address>urn:uuid:cf3b5e6a-1dd1-11b2-8a3c-a41437b2c3d4</wsadis:Address>
</wsadis:EndpointReference>
<d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types>
<d:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/Profile/Streaming
 onvif://www.onvif.org/MAC/a4:14:37:b2:c3:d4 onvif://www.onvif.org/hardware/DS-2CD2143G0-I
 onvif://www.onvif.org/name/HIKVISION%20DS-2CD2143G0-I onvif://www.onvif.org/location/city/hangzhou</d:Scopes>
<d:XAddrs>http://192.0.2.64/onvif/device_service http://[2001:db8::64]/onvif/device_service</d:XAddrs>
<d:MetadataVersion>10</d:MetadataVersion>
</d:ProbeMatch>
</d:ProbeMatches>
</env:Body>
</env:Envelope>
"""

# The shape Axis cameras (gSOAP based) send: SOAP-ENV/wsdd prefixes, mustUnderstand, "uuid:" ids.
AXIS_PROBE_MATCHES = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope"'
    b' xmlns:SOAP-ENC="http://www.w3.org/2003/05/soap-encoding"'
    b' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    b' xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
    b' xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing"'
    b' xmlns:wsdd="http://schemas.xmlsoap.org/ws/2005/04/discovery"'
    b' xmlns:tdn="http://www.onvif.org/ver10/network/wsdl"'
    b' xmlns:tds="http://www.onvif.org/ver10/device/wsdl">'
    b"<SOAP-ENV:Header><wsa:MessageID>uuid:7b3e1c2a-0c8f-4a7e-9d6b-accc8e000001</wsa:MessageID>"
    b"<wsa:RelatesTo>urn:uuid:11111111-2222-3333-4444-555555555555</wsa:RelatesTo>"
    b'<wsa:To SOAP-ENV:mustUnderstand="true">'
    b"http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>"
    b'<wsa:Action SOAP-ENV:mustUnderstand="true">'
    b"http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsa:Action>"
    b'<wsdd:AppSequence SOAP-ENV:mustUnderstand="true" MessageNumber="68"'
    b' InstanceId="1460972484"></wsdd:AppSequence></SOAP-ENV:Header>'
    b"<SOAP-ENV:Body><wsdd:ProbeMatches><wsdd:ProbeMatch><wsa:EndpointReference>"
    b"<wsa:Address>urn:uuid:a1b2c3d4-0000-1000-8000-accc8e000001</wsa:Address>"
    b"</wsa:EndpointReference><wsdd:Types>tdn:NetworkVideoTransmitter tds:Device</wsdd:Types>"
    b"<wsdd:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/Profile/Streaming"
    b" onvif://www.onvif.org/hardware/M1065-L onvif://www.onvif.org/name/AXIS%20M1065-L"
    b" onvif://www.onvif.org/location/</wsdd:Scopes>"
    b"<wsdd:XAddrs>http://192.0.2.90/onvif/device_service</wsdd:XAddrs>"
    b"<wsdd:MetadataVersion>1</wsdd:MetadataVersion></wsdd:ProbeMatch></wsdd:ProbeMatches>"
    b"</SOAP-ENV:Body></SOAP-ENV:Envelope>"
)

# The Probe ONVIF clients (e.g. ONVIF Device Manager, onvif-zeep users) multicast.
CLIENT_PROBE = b"""<?xml version="1.0" encoding="utf-8"?>
<Envelope xmlns:dn="http://www.onvif.org/ver10/network/wsdl"
 xmlns="http://www.w3.org/2003/05/soap-envelope">
<Header>
<wsa:MessageID xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing">uuid:d7a0b5b8-9a2e-4bf4-b3b1-2b3c4d5e6f70</wsa:MessageID>
<wsa:To xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing">urn:schemas-xmlsoap-org:ws:2005:04:discovery</wsa:To>
<wsa:Action xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</wsa:Action>
</Header>
<Body>
<Probe xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
 xmlns:xsd="http://www.w3.org/2001/XMLSchema"
 xmlns="http://schemas.xmlsoap.org/ws/2005/04/discovery">
<Types>dn:NetworkVideoTransmitter</Types>
<Scopes />
</Probe>
</Body>
</Envelope>
"""


def _envelope(
    header: str, body: str, envelope_ns: str = "http://www.w3.org/2003/05/soap-envelope"
) -> bytes:
    return (
        f'<s:Envelope xmlns:s="{envelope_ns}"'
        ' xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"'
        ' xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery">'
        f"<s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def _header(action: str = "Hello", message_id: str = "urn:uuid:1", extra: str = "") -> str:
    return (
        f"<a:MessageID>{message_id}</a:MessageID>"
        f"<a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/{action}</a:Action>{extra}"
    )


_EPR = "<a:EndpointReference><a:Address>urn:uuid:2</a:Address></a:EndpointReference>"


# ---- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        Probe(new_message_id(), (NVT,), ("onvif://www.onvif.org/name",)),
        Probe(new_message_id()),
        Probe(new_message_id(), (NVT, DEVICE), ("a:b/c",), MATCH_STRCMP0),
        ProbeMatches(new_message_id(), "uuid:probe-1", (TARGET,), AppSequence(5, 6)),
        ProbeMatches(
            new_message_id(), "uuid:probe-1", (TARGET, TARGET), AppSequence(1, 2, "urn:s")
        ),
        Hello(new_message_id(), TARGET, AppSequence(1700000000, 1)),
        Hello(new_message_id(), DiscoveryTarget("urn:uuid:x", (), (), ())),
        Bye(new_message_id(), TARGET.endpoint_reference, AppSequence(1700000000, 2)),
    ],
)
def test_round_trip(message: Probe | ProbeMatches | Hello | Bye) -> None:
    assert parse(serialize(message)) == message


def test_types_in_foreign_namespaces_get_their_own_prefix() -> None:
    odd = (QName("urn:vendor:a", "Thing"), QName("urn:vendor:b", "Thing"), NVT, QName("", "Bare"))
    message = Probe(new_message_id(), odd)
    data = serialize(message)
    assert b'xmlns:t0="urn:vendor:a"' in data
    assert b'xmlns:t1="urn:vendor:b"' in data
    assert parse(data) == message


_token = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="\ufffe\uffff"
    ),
    min_size=1,
    max_size=40,
).filter(lambda s: not any(ch.isspace() for ch in s))
_ncname = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    epr=_token,
    types=st.lists(
        st.tuples(st.just("") | _token.filter(lambda s: not {"{", "}"} & set(s)), _ncname),
        max_size=4,
    ),
    scopes=st.lists(_token, max_size=6),
    xaddrs=st.lists(_token, max_size=3),
    version=st.integers(0, 2**32 - 1),
    numbers=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
)
def test_round_trip_any_values(
    epr: str,
    types: list[tuple[str, str]],
    scopes: list[str],
    xaddrs: list[str],
    version: int,
    numbers: tuple[int, int],
) -> None:
    target = DiscoveryTarget(
        epr,
        tuple(QName(ns, local) for ns, local in types),
        tuple(scopes),
        tuple(xaddrs),
        version,
    )
    message = ProbeMatches("urn:uuid:m", "urn:uuid:p", (target,), AppSequence(*numbers))
    assert parse(serialize(message)) == message


# ---- captured camera messages ----------------------------------------------------------------


def test_hikvision_probe_matches() -> None:
    message = parse(HIKVISION_PROBE_MATCHES)
    assert isinstance(message, ProbeMatches)
    assert message.relates_to == "uuid:0a6dc791-2be6-4991-9af1-454778a1917a"
    assert message.app_sequence == AppSequence(1700000100, 12)
    (match,) = message.matches
    assert match.endpoint_reference == "urn:uuid:cf3b5e6a-1dd1-11b2-8a3c-a41437b2c3d4"
    assert match.types == (NVT, DEVICE)
    assert "onvif://www.onvif.org/name/HIKVISION%20DS-2CD2143G0-I" in match.scopes
    assert len(match.scopes) == 6
    assert match.xaddrs == (
        "http://192.0.2.64/onvif/device_service",
        "http://[2001:db8::64]/onvif/device_service",
    )
    assert match.metadata_version == 10
    assert matches(Probe("x", (NVT,), ("onvif://www.onvif.org/hardware/DS-2CD2143G0-I",)), match)


def test_axis_probe_matches() -> None:
    message = parse(AXIS_PROBE_MATCHES)
    assert isinstance(message, ProbeMatches)
    assert message.message_id == "uuid:7b3e1c2a-0c8f-4a7e-9d6b-accc8e000001"
    assert message.app_sequence == AppSequence(1460972484, 68)
    (match,) = message.matches
    assert match.types == (NVT, DEVICE)  # "tdn:" resolves to the same namespace as "dn:"
    assert match.xaddrs == ("http://192.0.2.90/onvif/device_service",)
    assert matches(Probe("x", (NVT,), ("onvif://www.onvif.org/name/AXIS%20M1065-L",)), match)


def test_client_probe_with_default_namespaces() -> None:
    message = parse(CLIENT_PROBE)
    assert message == Probe("uuid:d7a0b5b8-9a2e-4bf4-b3b1-2b3c4d5e6f70", (NVT,), ())


def test_types_resolve_by_namespace_not_prefix() -> None:
    body = (
        f"<d:Hello>{_EPR}"
        '<d:Types xmlns:x="http://www.onvif.org/ver10/network/wsdl"'
        ' xmlns="http://www.onvif.org/ver10/device/wsdl">x:NetworkVideoTransmitter Device</d:Types>'
        "</d:Hello>"
    )
    message = parse(_envelope(_header(), body))
    assert isinstance(message, Hello)
    assert message.target.types == (NVT, DEVICE)
    assert message.target.metadata_version == 1  # absent: the default


def test_undeclared_well_known_prefix_is_tolerated_unknown_is_not() -> None:
    body = f"<d:Hello>{_EPR}<d:Types>dn:NetworkVideoTransmitter</d:Types></d:Hello>"
    message = parse(_envelope(_header(), body))
    assert isinstance(message, Hello)
    assert message.target.types == (NVT,)
    bad = f"<d:Hello>{_EPR}<d:Types>zz:NetworkVideoTransmitter</d:Types></d:Hello>"
    with pytest.raises(ProtocolError, match="undeclared prefix"):
        parse(_envelope(_header(), bad))


# ---- matching --------------------------------------------------------------------------------

ONVIF = "onvif://www.onvif.org/"


@pytest.mark.parametrize(
    ("probe_scope", "target_scope", "expected"),
    [
        (ONVIF + "name", ONVIF + "name/Cam1", True),
        (ONVIF + "name/Cam1", ONVIF + "name/Cam1", True),
        (ONVIF + "name/Cam", ONVIF + "name/Cam1", False),  # segment-wise, not a string prefix
        (ONVIF + "name/Cam1/x", ONVIF + "name/Cam1", False),
        ("ONVIF://WWW.ONVIF.ORG/name", ONVIF + "name/Cam1", True),  # scheme, authority: any case
        (ONVIF + "Name", ONVIF + "name/Cam1", False),  # path: case-sensitive
        (ONVIF + "hardware/SIM%2D1", ONVIF + "hardware/SIM-1", True),  # unescaped first
        (ONVIF + "location/", ONVIF + "location/site/hall", True),
        (ONVIF + "name?x=1#f", ONVIF + "name/Cam1", True),  # query and fragment ignored
        (ONVIF + "name/../type", ONVIF + "name/../type/x", False),  # dot segments never match
        ("onvif://other.example/name", ONVIF + "name/Cam1", False),
        ("http://www.onvif.org/name", ONVIF + "name/Cam1", False),
        (ONVIF, ONVIF + "name/Cam1", True),
    ],
)
def test_rfc3986_scope_rule(probe_scope: str, target_scope: str, expected: bool) -> None:
    assert match_scope(probe_scope, target_scope) is expected
    assert match_scope(probe_scope, target_scope, MATCH_RFC2396) is expected


def test_strcmp0_and_unsupported_rules() -> None:
    assert match_scope(ONVIF + "name/A", ONVIF + "name/A", MATCH_STRCMP0)
    assert not match_scope(ONVIF + "name", ONVIF + "name/A", MATCH_STRCMP0)
    assert not match_scope(ONVIF + "NAME/A", ONVIF + "name/A", MATCH_STRCMP0)
    ldap = "http://schemas.xmlsoap.org/ws/2005/04/discovery/ldap"
    assert not match_scope(ONVIF + "name/A", ONVIF + "name/A", ldap)


def test_type_rule() -> None:
    assert match_types([], [NVT])
    assert match_types([NVT], [NVT, DEVICE])
    assert match_types([QName(NS_DN, "NetworkVideoTransmitter")], [NVT])
    assert not match_types([QName(NS_TDS, "NetworkVideoTransmitter")], [NVT])
    assert not match_types([NVT, QName(NS_DN, "Other")], [NVT, DEVICE])


def test_probe_matches_target() -> None:
    assert matches(Probe("p"), TARGET)
    assert matches(
        Probe("p", (NVT,), (ONVIF + "name/Front%20Door", ONVIF + "location/site")), TARGET
    )
    assert not matches(
        Probe("p", (NVT,), (ONVIF + "name/Front%20Door", ONVIF + "location/x")), TARGET
    )
    assert not matches(Probe("p", (QName(NS_DN, "Other"),)), TARGET)
    assert not matches(Probe("p", (), (ONVIF + "name/Back",), MATCH_STRCMP0), TARGET)


def test_onvif_scopes_are_percent_encoded() -> None:
    scopes = onvif_scopes(name="Front Door/1", hardware="SIM 1", location="site/hall")
    assert ONVIF + "name/Front%20Door%2F1" in scopes
    assert ONVIF + "hardware/SIM%201" in scopes
    assert ONVIF + "location/site/hall" in scopes
    assert ONVIF + "Profile/Streaming" in scopes


def test_endpoint_reference_is_stable() -> None:
    assert endpoint_reference("SN1") == endpoint_reference("SN1") != endpoint_reference("SN2")
    assert endpoint_reference("SN1").startswith("urn:uuid:")


def test_retransmit_schedule() -> None:
    for seed in range(20):
        delays = retransmit_delays(3, random.Random(seed))
        assert len(delays) == 3
        assert UDP_MIN_DELAY <= delays[0] <= UDP_MAX_DELAY
        assert delays[1] == min(delays[0] * 2, UDP_UPPER_DELAY)
        assert delays[2] == min(delays[1] * 2, UDP_UPPER_DELAY)
    assert retransmit_delays(0) == ()


# ---- building bad values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: DiscoveryTarget("", (), (), ()),
        lambda: DiscoveryTarget("urn:uuid:1", (), ("two words",), ()),
        lambda: DiscoveryTarget("urn:uuid:1", (), (), ("http://x\x00",)),
        lambda: DiscoveryTarget("urn:uuid:1", (QName(NS_DN, "a:b"),), (), ()),
        lambda: DiscoveryTarget("urn:uuid:1", (), ("s",) * 65, ()),
        lambda: DiscoveryTarget("urn:uuid:1", (), (), (), -1),
        lambda: Probe("id with space"),
        lambda: AppSequence(2**32, 1),
        lambda: Probe("urn:uuid:\ud800"),
        lambda: Probe("urn:uuid:\uffff"),
        lambda: DiscoveryTarget("urn:uuid:1", (QName("urn:{x}", "T"),), (), ()),
    ],
)
def test_invalid_values_are_refused(make: object) -> None:
    with pytest.raises(InvalidArgument):
        make()  # type: ignore[operator]


def test_serialize_refuses_oversized_message() -> None:
    long_xaddrs = tuple(f"http://127.0.0.1/{'x' * 1100}/{i}" for i in range(60))
    target = DiscoveryTarget("urn:uuid:1", (NVT,), (), long_xaddrs)
    with pytest.raises(LimitExceeded):
        serialize(Hello("urn:uuid:h", target))


# ---- hostile input ---------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">&lol2;</s:Envelope>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE e [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">&xxe;</s:Envelope>"""

PLAIN_DTD = b"""<?xml version="1.0"?><!DOCTYPE s:Envelope>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"/>"""


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (BILLION_LAUGHS, "malformed XML"),
        (EXTERNAL_ENTITY, "malformed XML"),
        (PLAIN_DTD, "malformed XML"),
        (b"", "malformed XML"),
        (b"\x00\xff\x10garbage", "malformed XML"),
        (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\r\n", "malformed XML"),
        (b"<a><b></a>", "malformed XML"),
        (b'<?xml version="1.0" encoding="UTF-8"?><x>\xc3\x28</x>', "malformed XML"),
        (b"<html><body>hi</body></html>", "not a SOAP 1.2 envelope"),
        (
            _envelope(
                _header(), f"<d:Hello>{_EPR}</d:Hello>", "http://schemas.xmlsoap.org/soap/envelope/"
            ),
            "not a SOAP 1.2 envelope",
        ),
        (
            _envelope(
                _header(),
                '<h:Hello xmlns:h="http://docs.oasis-open.org/ws-dd/ns/discovery/2009/01">'
                f"{_EPR}</h:Hello>",
            ),
            "unsupported body element",
        ),
        (_envelope(_header("Bye"), f"<d:Hello>{_EPR}</d:Hello>"), "does not fit"),
        (_envelope(_header(message_id=""), f"<d:Hello>{_EPR}</d:Hello>"), "MessageID"),
        (_envelope("", f"<d:Hello>{_EPR}</d:Hello>"), "MessageID"),
        (_envelope(_header("ProbeMatches"), "<d:ProbeMatches/>"), "RelatesTo"),
        (_envelope(_header(), "<d:Hello/>"), "Address missing"),
        (_envelope(_header(), f"<d:Hello>{_EPR}</d:Hello><d:Bye>{_EPR}</d:Bye>"), "exactly one"),
        (_envelope(_header(), ""), "exactly one"),
        (
            _envelope(_header(), "<s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code></s:Fault>"),
            "unsupported body element",
        ),
        (
            _envelope(
                _header(), f"<d:Hello>{_EPR}<d:MetadataVersion>x1</d:MetadataVersion></d:Hello>"
            ),
            "unsigned integer",
        ),
        (
            _envelope(
                _header(), f"<d:Hello>{_EPR}<d:MetadataVersion>\u00b2</d:MetadataVersion></d:Hello>"
            ),
            "unsigned integer",
        ),
        (
            _envelope(
                _header(),
                f"<d:Hello>{_EPR}<d:MetadataVersion>{'9' * 5000}</d:MetadataVersion></d:Hello>",
            ),
            "unsigned integer",
        ),
        (
            _envelope(
                _header(),
                f"<d:Hello>{_EPR}<d:MetadataVersion>4294967296</d:MetadataVersion></d:Hello>",
            ),
            "out of range",
        ),
        (
            _envelope(_header(extra='<d:AppSequence InstanceId="1"/>'), f"<d:Bye>{_EPR}</d:Bye>"),
            "MessageNumber",
        ),
        (
            _envelope(_header(), f"<d:Hello>{_EPR}<d:Types>:Bad</d:Types></d:Hello>"),
            "bad QName",
        ),
    ],
)
def test_hostile_or_malformed_input(data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        parse(data)


def test_huge_datagram_is_refused_before_parsing() -> None:
    with pytest.raises(LimitExceeded):
        parse(b"<" + b"a" * MAX_DATAGRAM + b"/>")


def test_limits_on_structure() -> None:
    deep = "<x>" * 40 + "</x>" * 40
    with pytest.raises(LimitExceeded, match="deeper"):
        parse(_envelope(_header(), f"<d:Hello>{_EPR}{deep}</d:Hello>"))
    many = "".join(f'<x xmlns:p{i}="urn:{i}"/>' for i in range(300))
    with pytest.raises(LimitExceeded, match="namespace"):
        parse(_envelope(_header(), f"<d:Hello>{_EPR}{many}</d:Hello>"))
    elements = "<x/>" * 3000
    with pytest.raises(LimitExceeded, match="elements"):
        parse(_envelope(_header(), f"<d:Hello>{_EPR}{elements}</d:Hello>"))
    scopes = " ".join(f"s{i}" for i in range(65))
    with pytest.raises(LimitExceeded, match="scopes"):
        parse(_envelope(_header(), f"<d:Hello>{_EPR}<d:Scopes>{scopes}</d:Scopes></d:Hello>"))
    match = f"<d:ProbeMatch>{_EPR}</d:ProbeMatch>"
    relates = "<a:RelatesTo>urn:uuid:p</a:RelatesTo>"
    with pytest.raises(LimitExceeded, match="ProbeMatch"):
        parse(
            _envelope(
                _header("ProbeMatches", extra=relates),
                f"<d:ProbeMatches>{match * 65}</d:ProbeMatches>",
            )
        )


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_messages_parse_or_raise_protocol_error(data: st.DataObject) -> None:
    original = bytearray(
        data.draw(st.sampled_from([HIKVISION_PROBE_MATCHES, AXIS_PROBE_MATCHES, CLIENT_PROBE]))
    )
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(original) - 1))
        original[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(original)))
    with contextlib.suppress(ProtocolError):
        parse(bytes(original[:cut]))
