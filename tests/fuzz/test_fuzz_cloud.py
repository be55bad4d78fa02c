"""Fuzz the cloud protocol decoder: control messages, activation bodies and answers."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import AgentError, ProtocolError
from agent.proto.cloud import (
    Challenge,
    Event,
    Ping,
    Request,
    Response,
    Welcome,
    b64encode,
    decode,
    encode,
    make_activation,
    parse_activation,
    parse_activation_result,
    request_id_of,
)
from tests.fuzz._support import InputCount, fuzz_settings, mutated

COUNT = InputCount("control messages")

_ACT = make_activation(Ed25519PrivateKey.generate(), "tok-1", serial="S1").to_dict()
SEEDS = [
    encode(Challenge(b64encode(bytes(32)), 1_700_000_000_000)).encode(),
    encode(Welcome(20, "srv")).encode(),
    encode(
        Request(7, "camera_ptz", {"camera_id": "c1", "pan": 0.5, "x": [1, {"y": None}]})
    ).encode(),
    encode(Response(7, True, {"ok": True})).encode(),
    encode(Event("camera_status", {"cameras": [{"id": "c1", "state": "online"}]})).encode(),
    encode(Ping(5)).encode(),
    b'{"type":"login","agent_id":"a","signature":"c2ln"}',
    b'{"type":"response","id":1,"ok":false,"error":{"code":"x","message":"y"}}',
    json.dumps(_ACT).encode(),
    b'{"agent_id":"a","endpoint_url":"wss://h/","streampoint":{"hostname":"h","url":"wss://h"},'
    b'"stream_name":"s"}',
]


@COUNT.fuzzes
def _decode(data: bytes | str) -> None:
    with contextlib.suppress(ProtocolError):
        decode(data)
    id_ = request_id_of(data)
    assert id_ is None or id_ >= 0
    for parse in (parse_activation, parse_activation_result):
        with contextlib.suppress(ProtocolError):
            parse(data)
    with contextlib.suppress(AgentError):  # ProtocolError, or AuthError for a bad signature
        parse_activation(data).verify()


@fuzz_settings(2000)
@given(mutated(SEEDS))
def test_mutated_messages(data: bytes) -> None:
    _decode(data)


@fuzz_settings(1000)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_random(data: bytes | str) -> None:
    _decode(data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@fuzz_settings(400)
@given(
    st.sampled_from(
        [
            "challenge",
            "login",
            "welcome",
            "error",
            "request",
            "event",
            "response",
            "ping",
            "pong",
            "other",
        ]
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "id",
                "command",
                "payload",
                "ok",
                "result",
                "error",
                "nonce",
                "ts_ms",
                "heartbeat_s",
                "server_time_ms",
                "agent_id",
                "signature",
                "code",
            ]
        ),
        _json,
    ),
)
def test_fields_of_any_type(kind: str, fields: dict[str, object]) -> None:
    _decode(json.dumps({"type": kind, **fields}))


@fuzz_settings(100)
@given(st.integers(17, 100_000))
def test_deep_nesting(depth: int) -> None:
    _decode('{"type":"event","command":"x","payload":' + '{"a":' * depth + "1" + "}" * (depth + 1))
    _decode(b"[" * depth)


def test_record_count(record_reliability: Callable[..., None]) -> None:
    COUNT.record(record_reliability)
