"""agent.proto.cloud: message codec, signed texts, activation bodies, QR payloads."""

from __future__ import annotations

import contextlib
import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import AuthError, LimitExceeded, ProtocolError
from agent.proto import cloud as pc

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()


@pytest.mark.parametrize(
    "msg",
    [
        pc.Challenge(pc.b64encode(os.urandom(pc.NONCE_BYTES)), 1_700_000_000_000),
        pc.Login("12", "c2ln"),
        pc.Welcome(20, "sim-cloud"),
        pc.Error("invalid_message", "not JSON"),
        pc.Request(1, "hello", {"version": "0.1.0", "agent_type": "router"}),
        pc.Response(1, True, {"x": [1, 2]}),
        pc.Response(2, False, {}, pc.Error("busy", "later")),
        pc.Event("description", {"local_ip": "10.0.0.2", "cameras": []}),
        pc.Ping(5),
        pc.Pong(5),
    ],
)
def test_round_trip(msg: pc.Message) -> None:
    text = pc.encode(msg)
    assert pc.decode(text) == msg
    assert pc.decode(text.encode()) == msg


@pytest.mark.parametrize(
    "frame",
    [
        "",
        "not json",
        "[1, 2]",
        '"text"',
        "{}",
        '{"type": 3}',
        '{"type": "bogus"}',
        '{"type": "ping"}',
        '{"type": "ping", "ts_ms": -1}',
        '{"type": "ping", "ts_ms": true}',
        '{"type": "ping", "ts_ms": 1.5}',
        '{"type": "ping", "ts_ms": NaN}',
        '{"type": "request", "command": "hello"}',
        '{"type": "request", "id": 1, "command": 5}',
        '{"type": "request", "id": 1, "command": "hello", "payload": []}',
        '{"type": "response", "id": 1, "ok": "yes"}',
        '{"type": "response", "id": 1, "ok": false, "error": {"message": "x"}}',
        '{"type": "login", "agent_id": 1, "signature": "x"}',
        '{"type": "challenge", "nonce": "short", "server_time_ms": 1}',
        b"\xff\xfe\x00",
        "[" * 5000 + "]" * 5000,
        json.dumps(
            {
                "type": "event",
                "command": "description",
                "payload": {"a": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]},
            }
        ),
    ],
)
def test_garbage_refused(frame: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        pc.decode(frame)


def test_unknown_command_carries_id() -> None:
    with pytest.raises(pc.UnknownCommand) as info:
        pc.decode('{"type": "request", "id": 7, "command": "self_destruct", "payload": {}}')
    assert info.value.request_id == 7
    with pytest.raises(pc.UnknownCommand) as info:
        pc.decode('{"type": "event", "command": "nope"}')
    assert info.value.request_id is None
    assert pc.request_id_of('{"type": "request", "id": 9, "command": 1}') == 9
    assert pc.request_id_of("junk") is None


def test_oversize_refused() -> None:
    big = json.dumps(
        {"type": "event", "command": "description", "payload": {"x": "a" * pc.MAX_MESSAGE}}
    )
    with pytest.raises(LimitExceeded):
        pc.decode(big)
    with pytest.raises(LimitExceeded):
        pc.encode(pc.Event("description", {"x": "a" * pc.MAX_MESSAGE}))


@given(st.binary(max_size=300))
def test_never_crashes_on_bytes(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        pc.decode(data)


@given(st.text(max_size=300))
def test_never_crashes_on_text(data: str) -> None:
    with contextlib.suppress(ProtocolError):
        pc.decode(data)


def test_login_signature_purposes() -> None:
    nonce = pc.b64encode(os.urandom(32))
    pub = pc.public_key_b64(KEY)
    sig = pc.sign(KEY, pc.login_text("endpoint", "12", nonce))
    pc.verify(pub, sig, pc.login_text("endpoint", "12", nonce))
    with pytest.raises(AuthError):  # wrong purpose
        pc.verify(pub, sig, pc.login_text("streampoint", "12", nonce))
    with pytest.raises(AuthError):  # wrong agent
        pc.verify(pub, sig, pc.login_text("endpoint", "13", nonce))
    with pytest.raises(AuthError):  # wrong key
        pc.verify(pc.public_key_b64(OTHER), sig, pc.login_text("endpoint", "12", nonce))
    with pytest.raises(AuthError):  # garbage signature
        pc.verify(pub, "!!!", pc.login_text("endpoint", "12", nonce))
    with pytest.raises(AuthError):
        pc.verify(pub, None, pc.login_text("endpoint", "12", nonce))
    assert pc.login_text("endpoint", "12", nonce).split(b"\n")[0] == b"camera-agent/endpoint/v1"
    with pytest.raises(ProtocolError):
        pc.login_text("endpoint", "12\ncamera-agent/activate/v1", nonce)


def test_activation_request_round_trip_and_verify() -> None:
    cam = pc.CameraInfo(id="c1", rtsp_url="rtsp://192.168.1.64:554/live/main")
    req = pc.make_activation(KEY, "TOK", serial="SN1", version="0.1.0", camera=cam)
    parsed = pc.parse_activation(json.dumps(req.to_dict()))
    assert parsed == req
    parsed.verify()
    assert parsed.text().split(b"\n") == [
        b"camera-agent/activate/v1",
        b"TOK",
        req.public_key.encode(),
        b"SN1",
    ]
    # Signature from another key, or for another token, does not verify.
    forged = pc.ActivationRequest("TOK", pc.public_key_b64(OTHER), req.signature, serial="SN1")
    with pytest.raises(AuthError):
        forged.verify()
    other_token = pc.make_activation(KEY, "TOK2", serial="SN1")
    with pytest.raises(AuthError):
        pc.ActivationRequest(
            "TOK", other_token.public_key, other_token.signature, serial="SN1"
        ).verify()


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"token": "", "public_key": pc.public_key_b64(KEY), "signature": "x"},
        {"token": "T", "public_key": "AAAA", "signature": "x"},
        {"token": "T", "public_key": pc.public_key_b64(KEY), "signature": 5},
        {"token": "T", "public_key": pc.public_key_b64(KEY), "signature": "x", "camera": "c"},
        {"token": "T", "public_key": pc.public_key_b64(KEY), "signature": "x", "camera": {}},
        {"token": ["T"], "public_key": pc.public_key_b64(KEY), "signature": "x"},
    ],
)
def test_activation_request_refused(body: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        pc.parse_activation(body)


def test_activation_result_round_trip() -> None:
    res = pc.ActivationResult(
        "1", "ws://h/agent/v1/endpoint", "streampoint-1", "ws://h/sp", "s1", "srv"
    )
    assert pc.parse_activation_result(pc.dumps(res.to_dict())) == res
    with pytest.raises(ProtocolError):
        pc.parse_activation_result({"agent_id": 1})


def test_qr_round_trip() -> None:
    p = pc.QrPayload("to ken&x", url="http://127.0.0.1:8080", ssid="home net", psk="p&ss=")
    text = pc.build_qr(p)
    assert text.startswith("camera-agent://activate?token=to%20ken%26x&url=")
    assert pc.parse_qr(text) == p
    assert pc.parse_qr("camera-agent://activate?token=abc") == pc.QrPayload("abc")
    assert pc.parse_qr("camera-agent://activate?token=abc&ssid=n&psk=") == pc.QrPayload(
        "abc", None, "n", ""
    )


@pytest.mark.parametrize(
    "text",
    [
        "https://example.com/?token=abc",
        "camera-agent://other?token=abc",
        "camera-agent://activate?url=http://127.0.0.1",
        "camera-agent://activate?token=",
        "camera-agent://activate/x?token=abc",
        "camera-agent://activate?token=" + "a" * 5000,
        "WIFI:S:net;T:WPA;P:pw;;",
        "",
    ],
)
def test_qr_not_ours(text: str) -> None:
    assert pc.parse_qr(text) is None


def test_qr_url_policy() -> None:
    assert pc.activation_url_allowed("https://cloud.example.com")
    assert pc.activation_url_allowed("http://127.0.0.1:8080")
    assert pc.activation_url_allowed("http://192.168.1.10")
    assert not pc.activation_url_allowed("http://8.8.8.8")
    assert not pc.activation_url_allowed("http://cloud.example.com")
    assert pc.activation_url_allowed("http://cloud.example.com/", "http://cloud.example.com")
    assert not pc.activation_url_allowed("ftp://127.0.0.1")
    assert not pc.activation_url_allowed("https://user:pw@cloud.example.com")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://example.net", True),
        ("https://a.example.net/base", True),
        ("https://x.y.example.net:8443", True),
        ("https://EXAMPLE.NET", True),  # case
        ("https://Act.Example.Net./", True),  # trailing dot
        ("https://badexample.net", False),  # a suffix match is on a label boundary
        ("https://example.net.evil.com", False),
        ("https://evil.com/example.net", False),
        ("https://evil.com?x=.example.net", False),
        ("https://evil.com#.example.net", False),
        ("https://example.net@evil.com", False),  # userinfo
        ("https://@example.net", False),  # empty userinfo
        ("https://a.example.net%2eevil.com", False),  # not a host name
        ("https://a.example.net%00.evil.com", False),
        ("https://example.net..", False),
        ("https://a..example.net", False),
        ("https://example.net:0", False),
        ("https://example.net:99999", False),
        ("https://example.net:https", False),
        ("https://example.net\\@evil.com", False),
        ("https://bücher.example.net", True),  # IDN, compared in its ASCII form
        ("https://xn--bcher-kva.example.net", True),
        ("https://bücher.example.org", False),
        ("https://exämple.net", False),  # a look-alike is another name
        ("https://10.0.0.5", False),  # not in the list
        ("http://10.0.0.5", False),
        ("https://192.0.2.7:8443", True),  # listed as an address: that address only
        ("https://1.192.0.2.7", False),
        ("https://2.7", False),
        ("ftp://example.net", False),
        ("", False),
        ("https://", False),
    ],
)
def test_activation_hosts_policy(url: str, allowed: bool) -> None:
    hosts = ("example.net", "192.0.2.7", "xn--strae-oqa.example")
    assert pc.activation_url_allowed(url, hosts=hosts) is allowed, url


def test_activation_hosts_patterns_are_normalised() -> None:
    assert pc.host_pattern("Example.NET.") == "example.net"
    assert pc.host_pattern("Bücher.example") == "xn--bcher-kva.example"
    assert pc.host_pattern("  straße.example ") == "xn--strae-oqa.example"
    assert pc.host_pattern("::1") == "::1"
    assert pc.host_pattern("192.0.2.7") == "192.0.2.7"
    for bad in ("", ".", "*.example.net", "example.net:443", "https://example.net", "a/b",
                "ex ample.net", "a..b", "-a.example", "x" * 64 + ".net", "1.2"):  # fmt: skip
        with pytest.raises(ProtocolError):
            pc.host_pattern(bad)
    # Unicode patterns match hosts written either way, and only the same name.
    unicode = ("straße.example",)
    assert pc.activation_url_allowed("https://xn--strae-oqa.example", hosts=unicode)
    assert pc.activation_url_allowed("https://a.straße.example", hosts=unicode)
    assert not pc.activation_url_allowed("https://strasse.example", hosts=unicode)


def test_activation_hosts_keep_the_http_rule_and_the_configured_url() -> None:
    # http stays limited to loopback and private addresses, listed or not.
    assert pc.activation_url_allowed("http://127.0.0.1:8080", hosts=("127.0.0.1",))
    assert not pc.activation_url_allowed("http://127.0.0.2:8080", hosts=("127.0.0.1",))
    assert not pc.activation_url_allowed("http://example.net", hosts=("example.net",))
    # The configured activation URL is always allowed, whatever the list says.
    configured = "https://act.other.org/v1"
    assert pc.activation_url_allowed("https://act.other.org", configured, hosts=("example.net",))
    assert pc.activation_url_allowed("https://ACT.other.org:443/", configured, hosts=("x.net",))
    assert not pc.activation_url_allowed("https://act.other.org:8443", configured, hosts=("x.net",))
    assert not pc.activation_url_allowed("http://act.other.org", configured, hosts=("x.net",))
    # An empty list is any https host (the mobile app's default).
    assert pc.activation_url_allowed("https://anything.example.com")


def test_pinned_activation_server() -> None:
    """After activation only the activation server in use: same scheme, host and port."""
    pinned = "https://act.example.net"
    assert pc.activation_url_allowed("https://act.example.net/", pinned=pinned)
    assert pc.activation_url_allowed("https://ACT.example.net.:443/other/path", pinned=pinned)
    for other in ("https://act.example.net:8443", "http://act.example.net",
                  "https://b.act.example.net", "https://example.net", "https://act.example.com",
                  "https://u@act.example.net", "not a url"):  # fmt: skip
        assert not pc.activation_url_allowed(other, pinned=pinned), other
    # The pin wins over the list and the configured URL.
    assert not pc.activation_url_allowed(
        "https://b.example.net", "https://b.example.net", hosts=("example.net",), pinned=pinned
    )
    assert pc.activation_url_allowed("http://127.0.0.1:9000/", pinned="http://127.0.0.1:9000")
    assert not pc.activation_url_allowed("http://127.0.0.1:9001", pinned="http://127.0.0.1:9000")
    idn = ("https", "xn--bcher-kva.example", 8443)
    assert pc.url_origin("https://Bücher.example:8443/x") == idn
    assert pc.url_origin("http://[::1]:80") == ("http", "::1", 80)
    assert pc.url_origin("https://u:p@example.net") is None


def test_b64_strict() -> None:
    assert pc.b64decode(pc.b64encode(b"abc")) == b"abc"
    for bad in ("YWJj!", "YWJ", 5, "é"):
        with pytest.raises(ProtocolError):
            pc.b64decode(bad)
