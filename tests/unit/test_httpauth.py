"""HTTP Digest and Basic authentication, server and client side."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import ProtocolError
from agent.proto.httpauth import (
    HttpAuthenticator,
    basic_authorization,
    digest_authorization,
    digest_response,
    parse_challenges,
)

URI = "rtsp://127.0.0.1:554/main"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(users: dict[str, str] | None = None, **kwargs: Any) -> tuple[HttpAuthenticator, Clock]:
    clock = Clock()
    table = {"admin": "s3cret"} if users is None else users
    auth = HttpAuthenticator("IP Camera", table.get, clock=clock, **kwargs)
    return auth, clock


def digest_challenge(auth: HttpAuthenticator) -> str:
    return next(v for v in auth.challenge() if v.startswith("Digest"))


def test_rfc2617_vector() -> None:
    response = digest_response(
        username="Mufasa",
        password="Circle Of Life",
        realm="testrealm@host.com",
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    challenge = (
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    header = digest_authorization(
        "Mufasa",
        "Circle of Life",
        "GET",
        "/dir/index.html",
        challenge,
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    [(scheme, params)] = parse_challenges([header])
    assert scheme == "Digest"
    assert params["response"] == expected
    assert params["qop"] == "auth"
    assert params["nc"] == "00000001"
    assert params["opaque"] == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


def test_challenge_lists_digest_then_basic() -> None:
    auth, _ = make()
    parsed = parse_challenges(auth.challenge())
    assert [scheme for scheme, _ in parsed] == ["Digest", "Basic"]
    digest = parsed[0][1]
    assert digest["realm"] == "IP Camera"
    assert digest["qop"] == "auth"
    assert digest["algorithm"] == "MD5"
    assert "stale" not in digest
    assert parse_challenges(auth.challenge(stale=True))[0][1]["stale"] == "true"
    no_basic, _ = make(allow_basic=False)
    assert [s for s, _ in parse_challenges(no_basic.challenge())] == ["Digest"]


def test_digest_accepts_right_password_and_rejects_wrong_ones() -> None:
    auth, _ = make()
    challenge = digest_challenge(auth)
    assert (
        auth.check(
            "DESCRIBE", URI, digest_authorization("admin", "s3cret", "DESCRIBE", URI, challenge)
        )
        == "admin"
    )
    assert (
        auth.check(
            "DESCRIBE",
            URI,
            digest_authorization("admin", "wrong", "DESCRIBE", URI, challenge, nc=2),
        )
        is None
    )
    assert (
        auth.check(
            "DESCRIBE",
            URI,
            digest_authorization("nobody", "s3cret", "DESCRIBE", URI, challenge, nc=3),
        )
        is None
    )
    # The response covers the method and the URI.
    header = digest_authorization("admin", "s3cret", "DESCRIBE", URI, challenge, nc=4)
    assert auth.check("SETUP", URI, header) is None
    assert auth.check("DESCRIBE", URI + "/other", header) is None


def test_nonce_count_replay_is_refused() -> None:
    auth, _ = make()
    challenge = digest_challenge(auth)
    first = digest_authorization("admin", "s3cret", "OPTIONS", URI, challenge, nc=1)
    assert auth.check("OPTIONS", URI, first) == "admin"
    assert auth.check("OPTIONS", URI, first) is None  # replayed
    second = digest_authorization("admin", "s3cret", "PLAY", URI, challenge, nc=2)
    assert auth.check("PLAY", URI, second) == "admin"
    assert auth.check("OPTIONS", URI, first) is None  # older count


def test_expired_nonce_is_stale_only_with_the_right_password() -> None:
    auth, clock = make(nonce_ttl=60)
    challenge = digest_challenge(auth)
    clock.now += 61
    good = auth.verify("PLAY", URI, digest_authorization("admin", "s3cret", "PLAY", URI, challenge))
    assert (good.username, good.stale) == (None, True)
    bad = auth.verify(
        "PLAY", URI, digest_authorization("admin", "nope", "PLAY", URI, challenge, nc=2)
    )
    assert (bad.username, bad.stale) == (None, False)
    fresh = digest_challenge(auth)
    assert (
        auth.check("PLAY", URI, digest_authorization("admin", "s3cret", "PLAY", URI, fresh))
        == "admin"
    )


def test_unknown_or_evicted_nonce_is_stale() -> None:
    auth, _ = make(max_nonces=2)
    first = digest_challenge(auth)
    digest_challenge(auth)
    digest_challenge(auth)  # evicts the first nonce
    result = auth.verify("PLAY", URI, digest_authorization("admin", "s3cret", "PLAY", URI, first))
    assert (result.username, result.stale) == (None, True)
    forged = 'Digest realm="IP Camera", nonce="bm9wZQ=="'
    result = auth.verify("PLAY", URI, digest_authorization("admin", "s3cret", "PLAY", URI, forged))
    assert result.stale


def test_old_clients_without_qop() -> None:
    auth, _ = make()
    params = parse_challenges([digest_challenge(auth)])[0][1]
    del params["qop"]
    header = digest_authorization("admin", "s3cret", "DESCRIBE", URI, params)
    assert "nc=" not in header
    assert auth.check("DESCRIBE", URI, header) == "admin"


def test_path_form_uri_matches_absolute_request_uri() -> None:
    auth, _ = make()
    header = digest_authorization("admin", "s3cret", "GET", "/snapshot.jpg", digest_challenge(auth))
    assert auth.check("GET", "http://127.0.0.1:8080/snapshot.jpg", header) == "admin"


def test_wrong_realm_and_unknown_algorithm() -> None:
    auth, _ = make()
    params = parse_challenges([digest_challenge(auth)])[0][1]
    other = dict(params, realm="elsewhere")
    assert (
        auth.check("PLAY", URI, digest_authorization("admin", "s3cret", "PLAY", URI, other)) is None
    )
    with pytest.raises(ProtocolError):
        digest_authorization("admin", "s3cret", "PLAY", URI, dict(params, algorithm="MD4"))
    header = digest_authorization("admin", "s3cret", "PLAY", URI, params).replace("MD5", "MD4")
    assert auth.check("PLAY", URI, header) is None


def test_basic() -> None:
    auth, _ = make()
    assert auth.check("GET", "/", basic_authorization("admin", "s3cret")) == "admin"
    assert auth.check("GET", "/", basic_authorization("admin", "s3cre")) is None
    assert auth.check("GET", "/", basic_authorization("ghost", "s3cret")) is None
    assert auth.check("GET", "/", "Basic !!!") is None
    assert auth.check("GET", "/", "Basic YWRtaW4=") is None  # no colon
    no_basic, _ = make(allow_basic=False)
    assert no_basic.check("GET", "/", basic_authorization("admin", "s3cret")) is None


def test_password_changes_take_effect_at_once() -> None:
    users = {"admin": "old"}
    auth, _ = make(users)
    assert auth.check("GET", "/", basic_authorization("admin", "old")) == "admin"
    users["admin"] = "new"
    assert auth.check("GET", "/", basic_authorization("admin", "old")) is None
    assert auth.check("GET", "/", basic_authorization("admin", "new")) == "admin"


def test_parse_challenges_quoting_and_several_schemes() -> None:
    parsed = parse_challenges(['Digest realm="a \\"b\\", c", nonce=xyz, Basic realm="r"'])
    assert parsed == [("Digest", {"realm": 'a "b", c', "nonce": "xyz"}), ("Basic", {"realm": "r"})]
    assert parse_challenges(["Basic dTpw=="]) == [("Basic", {"token": "dTpw=="})]
    user = 'we"ird\\user'
    header = digest_authorization(user, "pw", "GET", "/", 'Digest realm="r", nonce="n"')
    assert parse_challenges([header])[0][1]["username"] == user
    with pytest.raises(ProtocolError):
        parse_challenges(["x" * 5000])
    with pytest.raises(ProtocolError):
        parse_challenges(['=broken"'])


@given(st.text(max_size=300))
def test_garbage_authorization_never_raises(text: str) -> None:
    auth, _ = make()
    assert auth.check("PLAY", URI, text) is None
    assert auth.check("PLAY", URI, "Digest " + text) is None
