"""Fuzz tunnel frames: the frame decoder, and a live session fed random frames."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from agent.errors import AgentError, ProtocolError
from agent.proto.mux import (
    Data,
    MuxConfig,
    MuxSession,
    Role,
    StreamOpened,
    StreamState,
    Terminated,
)
from agent.proto.mux_frames import (
    HEADER_SIZE,
    MAX_DATA,
    AcceptFrame,
    CloseFrame,
    DataFrame,
    FinFrame,
    Frame,
    FrameDecoder,
    GoAwayFrame,
    OpenFrame,
    PingFrame,
    PongFrame,
    RefuseFrame,
    ResetFrame,
    Target,
    TargetKind,
    WindowUpdateFrame,
    encode,
)
from tests.fuzz._support import InputCount, fuzz_settings, mutated, splits

COUNT = InputCount("tunnel frames")

CAM = Target("127.0.0.1", 554, TargetKind.RTSP, "req-1")
SEEDS = [
    encode(OpenFrame(2, CAM, 65536)) + encode(DataFrame(2, b"OPTIONS * RTSP/1.0\r\n\r\n")),
    encode(AcceptFrame(1, 1 << 20)) + encode(WindowUpdateFrame(1, 4096)) + encode(FinFrame(1)),
    encode(RefuseFrame(3, 2, "not allowed")) + encode(ResetFrame(5, 1, "cancel")),
    encode(PingFrame(b"12345678")) + encode(PongFrame(bytes(8))) + encode(CloseFrame(7)),
    encode(GoAwayFrame(9, 0, "bye")),
]

_ids = st.integers(0, 12)
_text = st.text(max_size=8)
_frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(
        OpenFrame,
        _ids,
        st.builds(
            Target,
            st.sampled_from(["127.0.0.1", "cam.local", "::1"]),
            st.integers(1, 65535),
            st.sampled_from(list(TargetKind)),
        ),
        st.integers(0, 2**31 - 1),
    ),
    st.builds(AcceptFrame, _ids, st.integers(0, 2**31 - 1)),
    st.builds(RefuseFrame, _ids, st.integers(0, 12), _text),
    st.builds(DataFrame, _ids, st.binary(max_size=300)),
    st.builds(WindowUpdateFrame, _ids, st.integers(1, 2**31 - 1)),
    st.builds(FinFrame, _ids),
    st.builds(CloseFrame, _ids),
    st.builds(ResetFrame, _ids, st.integers(0, 12), _text),
    st.builds(PingFrame, st.binary(min_size=8, max_size=8)),
    st.builds(PongFrame, st.binary(min_size=8, max_size=8)),
    st.builds(GoAwayFrame, _ids, st.integers(0, 12), _text),
)


def _encoded(frame: Frame) -> bytes:
    try:
        return encode(frame)
    except AgentError:  # a combination the encoder refuses (stream 0 for a stream frame...)
        return b""


@COUNT.fuzzes
def _decode(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder()
    try:
        for chunk in splits(data, cuts):
            decoder.feed(chunk)
            assert decoder.buffered <= HEADER_SIZE + MAX_DATA
    except ProtocolError:
        pass


@COUNT.fuzzes
def _session(chunks: list[bytes], role: Role) -> None:
    """receive_data never raises for bad input: violations become one Terminated event."""
    session = MuxSession(role, MuxConfig(max_streams=8))
    terminated = 0
    for chunk in chunks:
        if session.terminated:
            break
        for event in session.receive_data(chunk):
            if (
                isinstance(event, StreamOpened)
                and session.state(event.stream_id) is StreamState.OPENING
            ):
                # a later frame of the same read may already have reset the stream
                if event.stream_id % 3:
                    session.accept(event.stream_id)
                else:
                    session.refuse(event.stream_id)
            elif isinstance(event, Data):
                session.consumed(event.stream_id, len(event.data))
            terminated += isinstance(event, Terminated)
        assert session.stream_count <= 8
        session.data_to_send()
    assert terminated <= 1


@fuzz_settings(2000)
@given(mutated(SEEDS), st.lists(st.integers(0, 1 << 10), max_size=5))
def test_mutated_frames(data: bytes, cuts: list[int]) -> None:
    _decode(data, cuts)


@fuzz_settings(1500)
@given(st.binary(max_size=300), st.lists(st.integers(0, 1 << 10), max_size=3))
def test_random_bytes(data: bytes, cuts: list[int]) -> None:
    _decode(data, cuts)
    _decode(b"\x01" + data, cuts)


@fuzz_settings(1000)
@given(st.lists(_frames, max_size=12), st.sampled_from(list(Role)))
def test_session_random_frames(frames: list[Frame], role: Role) -> None:
    _session([_encoded(f) for f in frames], role)


@fuzz_settings(1000)
@given(st.lists(mutated(SEEDS), max_size=4), st.sampled_from(list(Role)))
def test_session_mutated_bytes(chunks: list[bytes], role: Role) -> None:
    _session(chunks, role)


def test_record_count(record_reliability: Callable[..., None]) -> None:
    COUNT.record(record_reliability)
