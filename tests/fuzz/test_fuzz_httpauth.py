"""Fuzz HTTP auth headers: challenge parsing (client), Authorization checks (server)."""

from __future__ import annotations

import base64
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from agent.errors import ProtocolError
from agent.proto.httpauth import (
    AuthResult,
    HttpAuthenticator,
    digest_authorization,
    parse_challenges,
)
from tests.fuzz._support import InputCount, fuzz_settings, mutated

COUNT = InputCount("HTTP auth headers")

_AUTH = HttpAuthenticator("cam", {"admin": "fuzz-pw"}.get, algorithms=("MD5", "SHA-256"))
_CHALLENGES = _AUTH.challenge()
SEEDS = [
    *(c.encode() for c in _CHALLENGES),
    digest_authorization("admin", "fuzz-pw", "GET", "/onvif/device", _CHALLENGES[0]).encode(),
    digest_authorization("admin", "fuzz-pw", "GET", "/x", _CHALLENGES[1]).encode(),
    b"Basic " + base64.b64encode(b"admin:fuzz-pw"),
    b'Digest realm="a\\"b", nonce=abc, qop="auth,auth-int", Basic realm=x, Bearer tok68==',
]


@COUNT.fuzzes
def _headers(value: str) -> None:
    try:
        for scheme, params in parse_challenges([value]):
            if scheme.lower() == "digest":
                digest_authorization("u", "p", "GET", "/", params)
    except ProtocolError:
        pass
    for method, uri in (("GET", "/onvif/device"), ("DESCRIBE", "rtsp://127.0.0.1/x")):
        result = _AUTH.verify(method, uri, value)  # never raises: a refusal is a result
        assert isinstance(result, AuthResult)
        assert result.username in (None, "admin")


@fuzz_settings(2000)
@given(mutated(SEEDS))
def test_mutated_headers(data: bytes) -> None:
    _headers(data.decode("utf-8", "replace"))


@fuzz_settings(1500)
@given(st.text(max_size=200))
def test_random_text(value: str) -> None:
    _headers(value)


@fuzz_settings(300)
@given(st.text(max_size=20), st.integers(1, 600))
def test_many_params(name: str, count: int) -> None:
    _headers("Digest " + ", ".join(f'p{i}="{name}"' for i in range(count)))


def test_record_count(record_reliability: Callable[..., None]) -> None:
    COUNT.record(record_reliability)
