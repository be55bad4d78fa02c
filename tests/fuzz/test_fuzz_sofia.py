"""Fuzz the Sofia (XM/DVRIP) frame decoder and its JSON bodies."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from agent.errors import AgentError, ProtocolError
from agent.proto.sofia import (
    HEADER,
    MAX_DATA,
    Decoder,
    Msg,
    check_ret,
    decode_json,
    encode,
    encode_json,
    parse_session,
)
from tests.fuzz._support import InputCount, fuzz_settings, mutated, splits

COUNT = InputCount("Sofia frames")

SEEDS = [
    encode_json(Msg.LOGIN_RSP, {"Ret": 100, "SessionID": "0x0000001A", "AliveInterval": 20}),
    encode_json(Msg.LOGIN_REQ, {"EncryptType": "MD5", "LoginType": "DVRIP-Web", "UserName": "a"})
    + encode(Msg.UPGRADE_DATA, bytes(64), session=0x1A, sequence=3),
    encode_json(Msg.UPGRADE_PROGRESS, {"Ret": 515, "Name": "", "SessionID": "0x1A"}, session=1)
    + encode_json(Msg.KEEPALIVE_RSP, {"Ret": 100, "Name": "KeepAlive", "Data": [[{"a": [1]}]]}),
]


@COUNT.fuzzes
def _decode(data: bytes, cuts: list[int]) -> None:
    decoder = Decoder()
    try:
        for chunk in splits(data, cuts):
            for frame in decoder.feed(chunk):
                _body(frame.data)
            assert decoder.buffered <= HEADER.size + MAX_DATA
    except ProtocolError:
        pass


def _body(data: bytes) -> None:
    try:
        body = decode_json(data)
    except ProtocolError:
        return
    with contextlib.suppress(ProtocolError):
        parse_session(body.get("SessionID"))
    with contextlib.suppress(AgentError):
        check_ret(body, "fuzz")


@fuzz_settings(2000)
@given(mutated(SEEDS), st.lists(st.integers(0, 1 << 12), max_size=5))
def test_mutated_frames(data: bytes, cuts: list[int]) -> None:
    _decode(data, cuts)


@fuzz_settings(1500)
@given(st.binary(max_size=300), st.lists(st.integers(0, 1 << 12), max_size=3))
def test_random_bytes(data: bytes, cuts: list[int]) -> None:
    _decode(b"\xff\x00" + data[:18] + len(data[18:]).to_bytes(4, "little") + data[18:], cuts)
    _decode(data, cuts)


@fuzz_settings(1500)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.integers(1, 5000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
        st.integers(1, 5000).map(lambda n: b"[" * n),
    )
)
@COUNT.fuzzes
def test_json_bodies(data: bytes) -> None:
    _body(data)


def test_record_count(record_reliability: Callable[..., None]) -> None:
    COUNT.record(record_reliability)
