"""The Sofia codec (agent/proto/sofia.py): framing, JSON bodies, limits, Ret codes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import AuthError, InvalidArgument, LimitExceeded, ProtocolError, Unavailable
from agent.proto import sofia
from agent.proto.sofia import Msg, Ret


def _hash_by_definition(password: str) -> str:
    # MD5, bytes summed in pairs, each sum modulo 62 into 0-9A-Za-z.
    alphabet = "0123456789" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "abcdefghijklmnopqrstuvwxyz"
    md5 = hashlib.md5(password.encode()).digest()
    return "".join(alphabet[(md5[2 * i] + md5[2 * i + 1]) % 62] for i in range(8))


@pytest.mark.parametrize("password", ["", "admin", "pässwörd", "x" * 200])
def test_sofia_hash(password: str) -> None:
    got = sofia.sofia_hash(password)
    assert len(got) == 8 and got.isalnum()
    assert got == _hash_by_definition(password)
    assert got != sofia.sofia_hash(password + "1")


def test_header_layout_is_little_endian_20_bytes() -> None:
    raw = sofia.encode(0x5F2, b"abc", session=0x01020304, sequence=7, total=0, current=1)
    assert len(raw) == 23 and raw[0] == 0xFF and raw[1] == 0 and raw[2:4] == b"\0\0"
    assert raw[4:8] == bytes([4, 3, 2, 1])
    assert struct.unpack_from("<I", raw, 8)[0] == 7
    assert raw[12:14] == b"\x00\x01"
    assert struct.unpack_from("<HI", raw, 14) == (0x5F2, 3)
    assert raw[20:] == b"abc"


def test_round_trip_json_and_incremental_feed() -> None:
    body = {"Name": "OPSystemUpgrade", "OPSystemUpgrade": {"Action": "Start", "Type": "System"}}
    wire = sofia.encode_json(Msg.UPGRADE_REQ, body, session=0x1A, sequence=3)
    wire += sofia.encode(Msg.UPGRADE_DATA, b"\x00" * 5000, session=0x1A, sequence=4)
    wire += sofia.encode(Msg.UPGRADE_DATA, session=0x1A, sequence=5, current=1)
    dec = sofia.Decoder()
    frames: list[sofia.Frame] = []
    for i in range(0, len(wire), 7):  # byte dribble across header and body boundaries
        frames += dec.feed(wire[i : i + 7])
    assert dec.buffered == 0
    assert [f.msg for f in frames] == [1520, 1522, 1522]
    assert frames[0].json() == body and frames[0].session == 0x1A and frames[0].sequence == 3
    assert frames[0].data.endswith(b"\n\0")
    assert frames[1].data == b"\x00" * 5000
    assert (frames[2].data, frames[2].current) == (b"", 1)


@pytest.mark.parametrize("tail", [b"\n\0", b"\0", b"", b"\n"])
def test_json_terminators_accepted(tail: bytes) -> None:
    assert sofia.decode_json(b'{"Ret":100}' + tail) == {"Ret": 100}


@pytest.mark.parametrize(
    "data",
    [b"not json\0", b"[1,2]\n\0", b'"x"', b"\xff\xfe{", b'{"a":1'],
)
def test_bad_json_bodies(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        sofia.decode_json(data)


def test_json_limits() -> None:
    with pytest.raises(LimitExceeded):
        sofia.decode_json(b"[" * 40 + b"]" * 40)
    assert sofia.decode_json(b'{"a":"[[[[[[[[[[[[[[[[[[[[[[[["}') == {"a": "[" * 24}
    big = json.dumps({"a": "x" * sofia.MAX_JSON}).encode()
    with pytest.raises(LimitExceeded):
        sofia.decode_json(big)


def test_decoder_refuses_garbage_and_oversize() -> None:
    with pytest.raises(ProtocolError, match="0xFF"):
        sofia.Decoder().feed(b"GET / HTTP/1.1\r\n\r\n....")
    with pytest.raises(ProtocolError, match="version"):
        sofia.Decoder().feed(b"\xff\x07" + b"\0" * 18)
    head = struct.pack("<BBxxIIBBHI", 0xFF, 0, 0, 0, 0, 0, 1001, sofia.MAX_DATA + 1)
    with pytest.raises(LimitExceeded):
        sofia.Decoder().feed(head)
    with pytest.raises(LimitExceeded):
        sofia.Decoder(max_data=10).feed(sofia.encode(1001, b"x" * 11))
    with pytest.raises(LimitExceeded):
        sofia.encode(1522, b"x" * (sofia.MAX_DATA + 1))


def test_session_ids() -> None:
    assert sofia.session_hex(0x1A) == "0x0000001A"
    assert sofia.parse_session("0x0000001A") == 0x1A
    for bad in (None, 26, "1A", "0x", "0xZZ", "0x" + "1" * 20):
        with pytest.raises(ProtocolError):
            sofia.parse_session(bad)


def test_ret_codes_map_to_typed_errors() -> None:
    assert sofia.check_ret({"Ret": 100}, "login") == 100
    ok = frozenset({Ret.OK, Ret.UPGRADE_STARTED})
    assert sofia.check_ret({"Ret": 511}, "start", ok) == 511
    for code in (203, 205, 106):
        with pytest.raises(AuthError, match=f"Ret {code}"):
            sofia.check_ret({"Ret": code}, "login")
    with pytest.raises(InvalidArgument, match="refused the image"):
        sofia.check_ret({"Ret": 513}, "upgrade")
    for code in (512, 514):
        with pytest.raises(Unavailable):
            sofia.check_ret({"Ret": code}, "upgrade")
    with pytest.raises(ProtocolError, match="Ret 999"):
        sofia.check_ret({"Ret": 999}, "upgrade")
    for body in ({}, {"Ret": "100"}, {"Ret": True}):
        with pytest.raises(ProtocolError):
            sofia.check_ret(body, "x")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=12))
def test_decoder_fuzz_never_raises_anything_else(chunks: list[bytes]) -> None:
    dec = sofia.Decoder(max_data=4096)
    try:
        for chunk in chunks:
            for frame in dec.feed(chunk):
                assert len(frame.data) <= 4096
                with contextlib.suppress(ProtocolError):
                    frame.json()
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 0xFFFF),
    st.binary(max_size=2000),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(1, 64),
)
def test_round_trip_any_frame(msg: int, data: bytes, session: int, seq: int, cut: int) -> None:
    wire = sofia.encode(msg, data, session=session, sequence=seq) * 2
    dec = sofia.Decoder()
    frames = [f for i in range(0, len(wire), cut) for f in dec.feed(wire[i : i + cut])]
    assert frames == [sofia.Frame(msg, session, seq, data)] * 2


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_json_fuzz_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        assert isinstance(sofia.decode_json(data), dict)


def test_message_ids() -> None:
    ids = [int(m) for m in (Msg.LOGIN_REQ, Msg.UPGRADE_REQ, Msg.UPGRADE_DATA, Msg.UPGRADE_PROGRESS)]
    assert ids == [1000, 0x5F0, 0x5F2, 0x5F4] and int(Ret.UPGRADE_DONE) == 515
