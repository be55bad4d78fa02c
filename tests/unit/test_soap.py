"""SOAP layer of the simulated camera: parsing (also hostile XML), faults, WS-Security,
access classes and dispatch, plus the camera model's validated state (faults, users, ports).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree as ET

import pytest
from lxml import etree  # type: ignore[import-untyped]
from zeep.wsse.username import UsernameToken as ZeepUsernameToken

from agent.errors import AuthError, InvalidArgument, LimitExceeded, ProtocolError
from agent.sim.camera.model import CameraModel, Faults, NetworkProtocol, User, UserLevel
from agent.sim.camera.onvif_http import OnvifEndpoint
from agent.sim.camera.soap import (
    MAX_BODY,
    MAX_CREATED_SKEW,
    NS,
    SERVICES,
    Access,
    NonceCache,
    SoapFault,
    SoapVersionMismatch,
    UsernameToken,
    fault_for,
    parse_duration,
    parse_envelope,
    parse_security,
    password_digest,
    verify,
)

ENV = NS["env"]
PASSWORD_DIGEST = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordDigest"
)


def soap(body: str, header: str = "") -> bytes:
    return (
        f'<s:Envelope xmlns:s="{ENV}" xmlns:tds="{NS["tds"]}" xmlns:tt="{NS["tt"]}">'
        f"<s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def security(
    user: str, password: str, *, nonce: bytes | None = None, created: str | None = None
) -> str:
    """A UsernameToken header computed here, independently of the code under test."""
    nonce = nonce or hashlib.sha256(str(time.perf_counter_ns()).encode()).digest()[:16]
    created = created or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest())
    return (
        f'<wsse:Security xmlns:wsse="{NS["wsse"]}" xmlns:wsu="{NS["wsu"]}"><wsse:UsernameToken>'
        f"<wsse:Username>{user}</wsse:Username>"
        f'<wsse:Password Type="{PASSWORD_DIGEST}">{digest.decode()}</wsse:Password>'
        f"<wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce>"
        f"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"
    )


# ---------------------------------------------------------------------------- parsing


def test_parse_envelope_finds_operation_and_header() -> None:
    env = parse_envelope(soap("<tds:GetDeviceInformation/>", security("admin", "pw")))
    assert env.operation == "GetDeviceInformation"
    assert env.namespace == NS["tds"]
    assert env.header is not None
    token = parse_security(env.header)
    assert token is not None
    assert token.username == "admin"
    assert token.digest
    assert token.nonce is not None
    assert len(token.nonce) == 16


def test_parse_envelope_rejects_soap11_and_non_envelopes() -> None:
    soap11 = b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><x/></e:Body></e:Envelope>'
    with pytest.raises(SoapVersionMismatch):
        parse_envelope(soap11)
    with pytest.raises(ProtocolError, match=r"not a SOAP 1\.2 Envelope"):
        parse_envelope(b"<html><body/></html>")
    with pytest.raises(ProtocolError, match="Body"):
        parse_envelope(f'<s:Envelope xmlns:s="{ENV}"><s:Body/></s:Envelope>'.encode())


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><x>&lol9;</x></s:Body></s:Envelope>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><x>&xxe;</x></s:Body></s:Envelope>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE s:Envelope SYSTEM "http://127.0.0.1:9/evil.dtd">
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><x/></s:Body></s:Envelope>"""

UNDECLARED_ENTITY = soap("<x>&undeclared;</x>")


@pytest.mark.parametrize(
    "data",
    [BILLION_LAUGHS, XXE, EXTERNAL_DTD, UNDECLARED_ENTITY, b"\x00\xff garbage", b"", b"<a><b></a>"],
    ids=[
        "billion-laughs",
        "xxe",
        "external-dtd",
        "undeclared-entity",
        "binary",
        "empty",
        "mismatch",
    ],
)
def test_hostile_or_malformed_xml_is_refused_quickly(data: bytes) -> None:
    start = time.perf_counter()
    with pytest.raises(ProtocolError) as info:
        parse_envelope(data)
    assert time.perf_counter() - start < 0.5
    assert "root:" not in str(info.value)  # nothing of /etc/passwd leaks


def test_deep_nesting_is_refused() -> None:
    depth = 5000
    data = soap("<a>" * depth + "</a>" * depth)
    with pytest.raises(LimitExceeded, match="deeper"):
        parse_envelope(data)


def test_too_many_elements_are_refused() -> None:
    with pytest.raises(LimitExceeded, match="elements"):
        parse_envelope(soap("<tds:GetUsers>" + "<x/>" * 30000 + "</tds:GetUsers>"))


def test_oversized_body_is_refused_before_parsing() -> None:
    data = soap("<x>" + "a" * MAX_BODY + "</x>")
    with pytest.raises(LimitExceeded, match="larger"):
        parse_envelope(data)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT5S", 5.0), ("PT0.5S", 0.5), ("PT1M30S", 90.0), ("P1DT1H", 90000.0), ("PT0S", 0.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "5", "PT-5S", "P1Y", "PT5X", "PTS"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_duration(text)


# ---------------------------------------------------------------------------- faults


def fault_parts(xml: bytes) -> tuple[str, list[str], str]:
    root = ET.fromstring(xml)
    fault = root.find(f"{{{ENV}}}Body/{{{ENV}}}Fault")
    assert fault is not None
    code = fault.findtext(f"{{{ENV}}}Code/{{{ENV}}}Value") or ""
    subs = [v.text or "" for v in fault.iter(f"{{{ENV}}}Value")][1:]
    reason = fault.findtext(f"{{{ENV}}}Reason/{{{ENV}}}Text") or ""
    return code, subs, reason


def test_soap_fault_codes_and_http_status() -> None:
    sender = SoapFault(("ter:InvalidArgVal", "ter:NoProfile"), "no profile x")
    assert sender.code == "env:Sender"
    assert sender.http_status == 400
    assert fault_parts(sender.to_xml()) == (
        "env:Sender",
        ["ter:InvalidArgVal", "ter:NoProfile"],
        "Argument Value Invalid: no profile x",
    )
    receiver = SoapFault("ter:ActionNotSupported")
    assert (receiver.code, receiver.http_status) == ("env:Receiver", 500)
    assert "Action Not Implemented" in receiver.reason


def test_fault_reason_is_escaped() -> None:
    xml = SoapFault("ter:InvalidArgVal", '<bad> & "quoted"').to_xml()
    assert fault_parts(xml)[2].endswith('<bad> & "quoted"')


def test_fault_for_uses_most_specific_registration() -> None:
    from agent.sim.camera.ptz import UnknownPreset

    assert fault_for(UnknownPreset("x")).subcodes == ("ter:InvalidArgVal", "ter:NoToken")  # type: ignore[union-attr]
    assert fault_for(InvalidArgument("x")).subcodes == ("ter:InvalidArgVal",)  # type: ignore[union-attr]
    assert fault_for(RuntimeError("bug")) is None


# ---------------------------------------------------------------------------- WS-Security


def test_password_digest_matches_onvif_programmers_guide_vector() -> None:
    nonce = base64.b64decode("LKqI6G/AikKCQrN0zqZFlg==")
    assert (
        password_digest(nonce, "2010-09-16T07:50:45Z", "userpassword")
        == "tuOSpGlFlIXsozq4HFNeeGeFLEI="
    )


def _users(name: str) -> User | None:
    return {"admin": User("admin", "s3cret", UserLevel.ADMINISTRATOR)}.get(name)


def test_token_from_zeep_verifies() -> None:
    """A header made by zeep (what onvif-zeep-async sends) passes verification."""
    env = etree.Element(f"{{{ENV}}}Envelope", nsmap={"s": ENV})
    etree.SubElement(env, f"{{{ENV}}}Header")
    etree.SubElement(etree.SubElement(env, f"{{{ENV}}}Body"), "GetUsers")
    zeep_token = ZeepUsernameToken("admin", "s3cret", use_digest=True, zulu_timestamp=True)  # type: ignore[no-untyped-call]
    zeep_token.apply(env, {})  # type: ignore[no-untyped-call]
    token = parse_security(parse_envelope(etree.tostring(env)).header)
    assert token is not None
    assert token.digest
    user = verify(token, lookup=_users, camera_now=time.time(), nonces=NonceCache(), now=0.0)
    assert user.username == "admin"


def _token(
    password: str = "s3cret", *, created: datetime | None = None, nonce: bytes = b"n" * 16
) -> UsernameToken:
    stamp = (created or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return UsernameToken("admin", password_digest(nonce, stamp, password), True, nonce, stamp)


def test_verify_accepts_digest_and_rejects_replay() -> None:
    nonces = NonceCache()
    token = _token()
    assert (
        verify(token, lookup=_users, camera_now=time.time(), nonces=nonces, now=1.0).level
        is UserLevel.ADMINISTRATOR
    )
    with pytest.raises(AuthError, match="replayed"):
        verify(token, lookup=_users, camera_now=time.time(), nonces=nonces, now=2.0)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "no WS-Security"),
        (_token("wrong"), "wrong password"),
        (UsernameToken("nobody", "x", True, b"n", "2020-01-01T00:00:00Z"), "unknown user"),
        (UsernameToken("admin", "x", True, None, None), "without Nonce"),
        (UsernameToken("admin", "wrong", False), "wrong password"),
    ],
)
def test_verify_rejects(token: UsernameToken | None, reason: str) -> None:
    with pytest.raises(AuthError, match=reason):
        verify(token, lookup=_users, camera_now=time.time(), nonces=NonceCache(), now=0.0)


def test_verify_accepts_password_text() -> None:
    token = UsernameToken("admin", "s3cret", False)
    assert (
        verify(token, lookup=_users, camera_now=0.0, nonces=NonceCache(), now=0.0).username
        == "admin"
    )


def test_verify_checks_created_against_camera_clock() -> None:
    now = datetime.now(UTC)
    skew = 3600.0
    camera_now = now.timestamp() + skew
    stale = _token(created=now)
    with pytest.raises(AuthError, match="camera clock"):
        verify(stale, lookup=_users, camera_now=camera_now, nonces=NonceCache(), now=0.0)
    corrected = _token(created=now + timedelta(seconds=skew), nonce=b"m" * 16)
    assert verify(corrected, lookup=_users, camera_now=camera_now, nonces=NonceCache(), now=0.0)
    edge = _token(created=now + timedelta(seconds=skew - MAX_CREATED_SKEW + 2), nonce=b"e" * 16)
    assert verify(edge, lookup=_users, camera_now=camera_now, nonces=NonceCache(), now=0.0)


def test_rejected_token_does_not_burn_its_nonce() -> None:
    nonces = NonceCache()
    with pytest.raises(AuthError):
        verify(_token("wrong"), lookup=_users, camera_now=time.time(), nonces=nonces, now=0.0)
    assert len(nonces) == 0


def test_nonce_cache_is_bounded_and_expires() -> None:
    cache = NonceCache(size=3, ttl=10.0)
    assert all(cache.add(bytes([i]), now=0.0) for i in range(5))
    assert len(cache) == 3
    assert not cache.add(bytes([4]), now=1.0)
    assert cache.add(bytes([0]), now=1.0)  # evicted earlier, so new again
    assert cache.add(bytes([4]), now=30.0)  # expired
    assert len(cache) == 1


def test_malformed_tokens_are_auth_errors() -> None:
    bad_nonce = security("admin", "pw").replace("<wsse:Nonce>", "<wsse:Nonce>!!!")
    with pytest.raises(AuthError, match="base64"):
        parse_security(parse_envelope(soap("<x/>", bad_nonce)).header)
    huge = security("admin", "pw").replace("<wsse:Username>admin", "<wsse:Username>" + "a" * 1000)
    with pytest.raises(AuthError, match="oversized"):
        parse_security(parse_envelope(soap("<x/>", huge)).header)
    token = UsernameToken("admin", "s3cret", False, None, "yesterday")
    with pytest.raises(AuthError, match="ISO 8601"):
        verify(token, lookup=_users, camera_now=0.0, nonces=NonceCache(), now=0.0)


def test_access_classes() -> None:
    assert Access.PRE_AUTH.allows(None)
    assert not Access.READ.allows(None)
    assert Access.READ.allows(UserLevel.USER)
    assert not Access.ACTUATE.allows(UserLevel.USER)
    assert Access.ACTUATE.allows(UserLevel.OPERATOR)
    assert not Access.ADMIN.allows(UserLevel.OPERATOR)
    assert Access.ADMIN.allows(UserLevel.ADMINISTRATOR)


# ---------------------------------------------------------------------------- dispatch


class Hooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def encoder_changed(self, profile_token: str) -> None:
        self.calls.append(("encoder_changed", profile_token))

    def schedule_reboot(self, seconds: float) -> None:
        self.calls.append(("schedule_reboot", seconds))

    def protocols_changed(self) -> None:
        self.calls.append(("protocols_changed", None))


@pytest.fixture
def endpoint() -> OnvifEndpoint:
    model = CameraModel(username="admin", password="s3cret", http_port=8080, rtsp_port=8554)
    model.create_users([User("viewer", "view", UserLevel.USER)])
    return OnvifEndpoint(model, Hooks())


def call(
    ep: OnvifEndpoint, body: str, user: str | None = "admin", password: str = "s3cret"
) -> tuple[int, bytes]:
    header = security(user, password) if user else ""
    return ep.dispatch("device", soap(body, header), "127.0.0.1", "test")


def test_pre_auth_operations_need_no_credentials(endpoint: OnvifEndpoint) -> None:
    status, xml = call(endpoint, "<tds:GetSystemDateAndTime/>", user=None)
    assert status == 200
    assert b"UTCDateTime" in xml
    status, xml = call(endpoint, "<tds:GetDeviceInformation/>", user=None)
    assert status == 400
    assert fault_parts(xml)[:2] == ("env:Sender", ["ter:NotAuthorized"])


def test_access_levels_are_enforced(endpoint: OnvifEndpoint) -> None:
    assert call(endpoint, "<tds:GetDeviceInformation/>", "viewer", "view")[0] == 200
    status, xml = call(endpoint, "<tds:GetUsers/>", "viewer", "view")
    assert status == 400
    assert fault_parts(xml)[1] == ["ter:NotAuthorized"]
    assert call(endpoint, "<tds:GetUsers/>")[0] == 200


def test_unknown_operation_is_action_not_supported(endpoint: OnvifEndpoint) -> None:
    status, xml = call(endpoint, "<tds:FormatHardDisk/>")
    assert status == 500
    assert fault_parts(xml)[:2] == ("env:Receiver", ["ter:ActionNotSupported"])


def test_malformed_request_is_a_sender_fault(endpoint: OnvifEndpoint) -> None:
    status, xml = endpoint.dispatch("device", XXE, "127.0.0.1", "test")
    assert status == 400
    assert fault_parts(xml)[:2] == ("env:Sender", ["ter:WellFormed"])
    status, xml = endpoint.dispatch(
        "device", b"<e:Envelope xmlns:e='http://schemas.xmlsoap.org/soap/envelope/'/>", "h", "t"
    )
    assert status == 500
    assert fault_parts(xml)[0] == "env:VersionMismatch"


def test_forced_fault_from_faults(endpoint: OnvifEndpoint) -> None:
    endpoint.model.faults = Faults.from_json(
        {"soap_faults": {"GetDeviceInformation": "ter:Action"}}
    )
    status, xml = call(endpoint, "<tds:GetDeviceInformation/>")
    assert status == 500
    assert fault_parts(xml)[:2] == ("env:Receiver", ["ter:Action"])
    assert call(endpoint, "<tds:GetScopes/>")[0] == 200


def test_handler_bug_is_a_receiver_fault_logged_once(
    endpoint: OnvifEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    device = SERVICES["device"]

    def broken(ctx: object, req: object) -> str:
        raise ZeroDivisionError("secret internals")

    device.operation("BrokenForTest", access=Access.PRE_AUTH)(broken)
    try:
        with caplog.at_level(logging.DEBUG, logger="agent.sim.camera.onvif_http"):
            for _ in range(3):
                status, xml = call(endpoint, "<tds:BrokenForTest/>")
                assert status == 500
                assert b"secret internals" not in xml
                assert b"Traceback" not in xml
                assert fault_parts(xml)[0] == "env:Receiver"
    finally:
        del device.operations["BrokenForTest"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None


def test_auth_failures_never_log_secrets(
    endpoint: OnvifEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    header = security("admin", "wrong-password")
    digest = header.split('PasswordDigest">')[1].split("<")[0]
    with caplog.at_level(logging.DEBUG):
        status, _ = endpoint.dispatch("device", soap("<tds:GetUsers/>", header), "h", "peer")
    assert status == 400
    text = caplog.text
    assert "wrong password" in text
    assert "s3cret" not in text
    assert "wrong-password" not in text
    assert digest not in text


def test_users_lifecycle_through_soap(endpoint: OnvifEndpoint) -> None:
    create = (
        "<tds:CreateUsers><tds:User><tt:Username>op</tt:Username><tt:Password>pw</tt:Password>"
        "<tt:UserLevel>Operator</tt:UserLevel></tds:User></tds:CreateUsers>"
    )
    assert call(endpoint, create)[0] == 200
    status, xml = call(endpoint, create)
    assert status == 400
    assert fault_parts(xml)[1] == ["ter:OperationProhibited", "ter:UsernameClash"]
    assert call(endpoint, "<tds:GetUsers/>", "op", "pw")[0] == 400  # Operator is not admin
    delete_admin = "<tds:DeleteUsers><tds:Username>admin</tds:Username></tds:DeleteUsers>"
    assert fault_parts(call(endpoint, delete_admin)[1])[1] == ["ter:InvalidArgVal", "ter:FixedUser"]
    assert (
        call(endpoint, "<tds:DeleteUsers><tds:Username>op</tds:Username></tds:DeleteUsers>")[0]
        == 200
    )
    assert endpoint.model.user("op") is None
    assert endpoint.model.user("admin") is not None


def test_set_network_protocols_validates_and_notifies(endpoint: OnvifEndpoint) -> None:
    def body(name: str, enabled: str, port: int) -> str:
        return (
            "<tds:SetNetworkProtocols><tds:NetworkProtocols>"
            f"<tt:Name>{name}</tt:Name><tt:Enabled>{enabled}</tt:Enabled><tt:Port>{port}</tt:Port>"
            "</tds:NetworkProtocols></tds:SetNetworkProtocols>"
        )

    assert call(endpoint, body("RTSP", "true", 10554))[0] == 200
    assert endpoint.model.rtsp_port == 10554
    assert endpoint.hooks.calls == [("protocols_changed", None)]  # type: ignore[attr-defined]
    status, xml = call(endpoint, body("HTTPS", "true", 443))
    assert status == 400
    assert fault_parts(xml)[1] == ["ter:InvalidArgVal", "ter:ServiceNotSupported"]
    status, xml = call(endpoint, body("RTSP", "true", 8080))
    assert status == 400
    assert fault_parts(xml)[1] == ["ter:InvalidArgVal", "ter:PortAlreadyInUse"]
    assert endpoint.model.rtsp_port == 10554
    assert len(endpoint.hooks.calls) == 1  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- model


def test_faults_from_json_validates_and_round_trips() -> None:
    faults = Faults.from_json(
        {
            "soap_latency": 0.5,
            "soap_faults": {"GetProfiles": "ter:ActionNotSupported"},
            "clock_skew": -30,
        }
    )
    assert faults.soap_latency == 0.5
    assert faults.clock_skew == -30.0
    assert Faults.from_json(faults.to_json()) == faults
    partial = Faults.from_json({"rtp_stall": True}, base=faults)
    assert partial.rtp_stall
    assert partial.soap_latency == 0.5


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"unknown": 1},
        {"soap_latency": "1"},
        {"soap_latency": True},
        {"soap_latency": -1},
        {"soap_latency": float("nan")},
        {"soap_garbage": 1},
        {"soap_faults": {"GetProfiles": "not a qname"}},
        {"soap_faults": {"Get Profiles": "ter:Action"}},
        {"soap_faults": ["GetProfiles"]},
        {"clock_skew": 1e12},
    ],
)
def test_faults_from_json_rejects(data: object) -> None:
    with pytest.raises(InvalidArgument):
        Faults.from_json(data)


def test_model_identity_is_stable_per_serial() -> None:
    a = CameraModel(username="u", password="p", serial_number="X1")
    b = CameraModel(username="u", password="p", serial_number="X1")
    c = CameraModel(username="u", password="p", serial_number="X2")
    assert a.endpoint_reference == b.endpoint_reference != c.endpoint_reference
    assert a.endpoint_reference.startswith("urn:uuid:")
    assert a.interface.mac == b.interface.mac != c.interface.mac
    assert int(a.interface.mac.split(":")[0], 16) & 0x02  # locally administered


def test_model_clock_includes_skew() -> None:
    model = CameraModel(username="u", password="p", clock=lambda: 1000.0)
    model.faults = Faults(clock_skew=60.0)
    assert model.now() == 1060.0


def test_model_encoder_update_is_validated() -> None:
    model = CameraModel(username="u", password="p")
    assert model.update_encoder("VideoEncoder_sub", width=320, height=180, fps_limit=10) == ["sub"]
    assert (model.profile("sub").encoder.width, model.profile("sub").encoder.fps_limit) == (320, 10)
    for bad in ({"width": 333}, {"fps_limit": 31}, {"gov_length": 0}, {"encoding": "H265"}):
        with pytest.raises(InvalidArgument):
            model.update_encoder("VideoEncoder_sub", **bad)
    assert model.profile("sub").encoder.width == 320
    assert [p.token for p in model.media_profiles(media2=False)] == ["main", "sub"]
    assert [p.token for p in model.media_profiles(media2=True)] == ["main", "sub", "h265"]


def test_set_protocols_keeps_http() -> None:
    model = CameraModel(username="u", password="p", http_port=80, rtsp_port=554)
    with pytest.raises(InvalidArgument):
        model.set_protocols([NetworkProtocol("HTTP", False, (80,))])
    with pytest.raises(InvalidArgument):
        model.set_protocols([NetworkProtocol("RTSP", True, (70000,))])
    assert (model.http_port, model.rtsp_port) == (80, 554)


@pytest.fixture(autouse=True)
def _no_leaked_operations() -> Iterator[None]:
    before = {k: set(s.operations) for k, s in SERVICES.items()}
    yield
    assert {k: set(s.operations) for k, s in SERVICES.items()} == before
