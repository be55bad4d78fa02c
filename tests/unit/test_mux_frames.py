"""Tunnel multiplexer frame codec: round trips, arbitrary splits, strict validation, fuzzing."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import InvalidArgument, LimitExceeded, ProtocolError
from agent.proto.mux_frames import (
    HEADER,
    HEADER_SIZE,
    MAX_DATA,
    MAX_WINDOW,
    VERSION,
    AcceptFrame,
    CloseFrame,
    DataFrame,
    ErrorCode,
    FinFrame,
    Frame,
    FrameDecoder,
    FrameType,
    GoAwayFrame,
    OpenFrame,
    PingFrame,
    PongFrame,
    RefuseFrame,
    ResetFrame,
    Target,
    TargetKind,
    WindowUpdateFrame,
    data_header,
    decode_all,
    encode,
    write_data,
)

stream_ids = st.integers(1, 2**32 - 1)
windows = st.integers(0, MAX_WINDOW)
codes = st.integers(0, 0xFFFF)
reasons = st.text(max_size=60)  # up to 240 UTF-8 bytes, under the 256 limit
hosts = st.from_regex(r"[A-Za-z0-9._:%-]{1,253}", fullmatch=True)
request_ids = st.from_regex(r"[\x21-\x7e]{0,64}", fullmatch=True)
targets = st.builds(Target, hosts, st.integers(1, 65535), st.sampled_from(TargetKind), request_ids)
opaques = st.binary(min_size=8, max_size=8)

frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(OpenFrame, stream_ids, targets, windows),
    st.builds(AcceptFrame, stream_ids, windows),
    st.builds(RefuseFrame, stream_ids, codes, reasons),
    st.builds(DataFrame, stream_ids, st.binary(min_size=1, max_size=2048)),
    st.builds(WindowUpdateFrame, stream_ids, st.integers(1, MAX_WINDOW)),
    st.builds(FinFrame, stream_ids),
    st.builds(CloseFrame, stream_ids),
    st.builds(ResetFrame, stream_ids, codes, reasons),
    st.builds(PingFrame, opaques),
    st.builds(PongFrame, opaques),
    st.builds(GoAwayFrame, st.integers(0, 2**32 - 1), codes, reasons),
)


def header(
    ftype: int, stream_id: int, length: int, *, version: int = VERSION, flags: int = 0
) -> bytes:
    return HEADER.pack(version, ftype, flags, stream_id, length)


def test_every_type_has_a_frame_class() -> None:
    samples: list[Frame] = [
        OpenFrame(1, Target("10.0.0.1", 80, TargetKind.HTTP), 5),
        AcceptFrame(1, 5),
        RefuseFrame(1, ErrorCode.CONNECT_FAILED, "refused"),
        DataFrame(1, b"x"),
        WindowUpdateFrame(1, 5),
        FinFrame(1),
        CloseFrame(1),
        ResetFrame(1, ErrorCode.CANCEL),
        PingFrame(bytes(8)),
        PongFrame(bytes(8)),
        GoAwayFrame(0, ErrorCode.NORMAL),
    ]
    types = {HEADER.unpack_from(encode(f))[1] for f in samples}
    assert types == set(FrameType)


@given(frames)
def test_round_trip(frame: Frame) -> None:
    wire = encode(frame)
    (back,) = decode_all(wire)
    assert back == frame
    assert encode(back) == wire


@given(st.lists(frames, max_size=12), st.data())
@settings(max_examples=200)
def test_arbitrary_split_points(batch: list[Frame], data: st.DataObject) -> None:
    wire = b"".join(encode(f) for f in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    decoder = FrameDecoder()
    out: list[Frame] = []
    prev = 0
    for cut in [*cuts, len(wire)]:
        out += decoder.feed(wire[prev:cut])
        prev = cut
        assert decoder.buffered <= HEADER_SIZE + MAX_DATA
    assert out == batch
    assert decoder.buffered == 0


def test_byte_by_byte() -> None:
    batch: list[Frame] = [
        OpenFrame(2, Target("cam.local", 554, TargetKind.RTSP, "req-1"), 1000),
        DataFrame(2, b"x" * 300),
        ResetFrame(2, ErrorCode.CANCEL, "bye \u00e9"),
    ]
    wire = b"".join(encode(f) for f in batch)
    decoder = FrameDecoder()
    out: list[Frame] = []
    for i in range(len(wire)):
        out += decoder.feed(wire[i : i + 1])
    assert out == batch


def test_data_payload_is_a_view_of_the_input() -> None:
    out = bytearray()
    write_data(out, 7, b"hello")
    write_data(out, 9, memoryview(b"world!"))
    wire = bytes(out)
    first, second = FrameDecoder().feed(wire)
    assert isinstance(first, DataFrame) and isinstance(second, DataFrame)
    assert isinstance(first.payload, memoryview) and first.payload.obj is wire
    assert bytes(first.payload) == b"hello" and second.stream_id == 9


def test_data_header_matches_encode() -> None:
    assert data_header(5, 3) + b"abc" == encode(DataFrame(5, b"abc"))


def test_spanning_frame_is_assembled() -> None:
    wire = encode(DataFrame(3, b"a" * 1000)) + encode(FinFrame(3))
    decoder = FrameDecoder()
    assert decoder.feed(wire[:500]) == []
    assert decoder.buffered == 500
    out = decoder.feed(wire[500:])
    assert out == [DataFrame(3, b"a" * 1000), FinFrame(3)]


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (header(FrameType.FIN, 1, 0, version=2), ProtocolError),
        (header(0, 1, 0), ProtocolError),
        (header(12, 1, 0), ProtocolError),
        (header(FrameType.FIN, 1, 0, flags=1), ProtocolError),
        (header(FrameType.FIN, 0, 0), ProtocolError),
        (header(FrameType.PING, 1, 8) + bytes(8), ProtocolError),
        (header(FrameType.GOAWAY, 3, 6) + bytes(6), ProtocolError),
        (header(FrameType.DATA, 1, 0), ProtocolError),
        (header(FrameType.DATA, 1, MAX_DATA + 1), LimitExceeded),
        (header(FrameType.FIN, 1, 1) + b"x", LimitExceeded),
        (header(FrameType.OPEN, 1, 4000), LimitExceeded),
        (header(FrameType.RESET, 1, 300), LimitExceeded),
        (header(FrameType.ACCEPT, 1, 3) + bytes(3), ProtocolError),
        (header(FrameType.ACCEPT, 1, 4) + struct.pack("!I", MAX_WINDOW + 1), ProtocolError),
        (header(FrameType.WINDOW_UPDATE, 1, 4) + bytes(4), ProtocolError),
        (header(FrameType.RESET, 1, 3) + b"\x00\x01\xff", ProtocolError),
        (header(FrameType.PING, 0, 7) + bytes(7), ProtocolError),
    ],
)
def test_bad_headers_and_payloads(wire: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        FrameDecoder().feed(wire)


def _open_payload(
    host: bytes, port: int = 554, kind: int = 1, rid: bytes = b"", host_len: int | None = None
) -> bytes:
    hlen = len(host) if host_len is None else host_len
    body = struct.pack("!IHBB", 1000, port, kind, hlen) + host + bytes([len(rid)]) + rid
    return header(FrameType.OPEN, 1, len(body)) + body


@pytest.mark.parametrize(
    "wire",
    [
        _open_payload(b"cam", kind=9),
        _open_payload(b"cam", port=0),
        _open_payload(b"c am"),
        _open_payload(b"cam\xff"),
        _open_payload(b"cam", rid=b"a b"),
        _open_payload(b"cam", host_len=200),
        _open_payload(b"cam", host_len=2),
        _open_payload(b"cam", host_len=0),
        _open_payload(b"cam") + b"extra",
    ],
)
def test_bad_open_payloads(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_all(wire)


def test_oversize_is_caught_from_the_header_alone() -> None:
    decoder = FrameDecoder()
    with pytest.raises(LimitExceeded):
        decoder.feed(header(FrameType.DATA, 1, 2**31))
    assert decoder.buffered == 0


def test_smaller_data_limit() -> None:
    decoder = FrameDecoder(max_data=100)
    assert decoder.feed(encode(DataFrame(1, bytes(100))))
    with pytest.raises(LimitExceeded):
        decoder.feed(header(FrameType.DATA, 1, 101))


def test_decoder_stays_failed() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(header(99, 1, 0))
    with pytest.raises(ProtocolError):
        decoder.feed(encode(FinFrame(1)))


def test_feed_until_error_keeps_frames_before_the_bad_one() -> None:
    wire = encode(FinFrame(1)) + encode(CloseFrame(3)) + header(99, 1, 0)
    got, error = FrameDecoder().feed_until_error(wire)
    assert got == [FinFrame(1), CloseFrame(3)]
    assert isinstance(error, ProtocolError)


def test_truncated_buffer() -> None:
    with pytest.raises(ProtocolError):
        decode_all(encode(DataFrame(1, b"ab"))[:-1])


@pytest.mark.parametrize(
    "frame",
    [
        DataFrame(0, b"x"),
        DataFrame(1, b""),
        DataFrame(1, bytes(MAX_DATA + 1)),
        AcceptFrame(1, MAX_WINDOW + 1),
        WindowUpdateFrame(1, 0),
        RefuseFrame(1, 0x10000),
        ResetFrame(1, 1, "x" * 257),
        PingFrame(b"short"),
        GoAwayFrame(-1, 0),
        FinFrame(2**32),
    ],
)
def test_encode_rejects_out_of_range(frame: Frame) -> None:
    with pytest.raises(InvalidArgument):
        encode(frame)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": "", "port": 1},
        {"host": "a" * 254, "port": 1},
        {"host": "cam/x", "port": 1},
        {"host": "cam", "port": 70000},
        {"host": "cam", "port": 1, "request_id": "has space"},
    ],
)
def test_target_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        Target(kind=TargetKind.HTTP, **kwargs)  # type: ignore[arg-type]


@given(st.binary(max_size=400), st.integers(1, 50))
@settings(max_examples=300)
def test_garbage_raises_only_protocol_errors(blob: bytes, step: int) -> None:
    decoder = FrameDecoder()
    try:
        for i in range(0, len(blob), step):
            decoder.feed(blob[i : i + step])
    except ProtocolError:
        pass
    assert decoder.buffered <= HEADER_SIZE + MAX_DATA


@given(st.lists(frames, min_size=1, max_size=5), st.data())
@settings(max_examples=300)
def test_mutated_valid_streams_raise_only_protocol_errors(
    batch: list[Frame], data: st.DataObject
) -> None:
    wire = bytearray(b"".join(encode(f) for f in batch))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(wire) - 1))
        wire[pos] = data.draw(st.integers(0, 255))
    with contextlib.suppress(ProtocolError):
        decode_all(bytes(wire))
