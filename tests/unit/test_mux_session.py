"""Tunnel multiplexer sessions wired back to back: lifecycle, flow control, violations, limits."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import InvalidArgument, LimitExceeded, NotFound, ProtocolError, Unavailable
from agent.proto.mux import (
    Data,
    Event,
    GoAway,
    MuxConfig,
    MuxSession,
    Ping,
    Pong,
    RemoteFin,
    Reset,
    Role,
    StreamAccepted,
    StreamClosed,
    StreamOpened,
    StreamRefused,
    StreamState,
    Terminated,
    WindowOpened,
)
from agent.proto.mux_frames import (
    HEADER,
    HEADER_SIZE,
    VERSION,
    AcceptFrame,
    CloseFrame,
    DataFrame,
    ErrorCode,
    FinFrame,
    Frame,
    FrameType,
    GoAwayFrame,
    OpenFrame,
    PongFrame,
    RefuseFrame,
    ResetFrame,
    Target,
    TargetKind,
    WindowUpdateFrame,
    decode_all,
    encode,
)

CAM = Target("127.0.0.1", 554, TargetKind.RTSP, "r1")


def pair(**kwargs: int) -> tuple[MuxSession, MuxSession]:
    """(streampoint, agent) sessions sharing one config."""
    config = MuxConfig(**kwargs)
    return MuxSession(Role.STREAMPOINT, config), MuxSession(Role.AGENT, config)


def pump(src: MuxSession, dst: MuxSession) -> list[Event]:
    return dst.receive_data(bytes(src.data_to_send()))


def sent_frames(session: MuxSession) -> list[Frame]:
    return decode_all(bytes(session.data_to_send()))


def tunnel(sp: MuxSession, agent: MuxSession) -> int:
    sid = sp.open_stream(CAM)
    assert pump(sp, agent) == [StreamOpened(sid, CAM)]
    agent.accept(sid)
    assert pump(agent, sp) == [StreamAccepted(sid)]
    return sid


# Lifecycle ----------------------------------------------------------------------------


def test_open_accept_data_and_half_close() -> None:
    sp, agent = pair()
    sid = tunnel(sp, agent)
    assert sid % 2 == 0
    assert sp.state(sid) is StreamState.OPEN
    assert sp.send_data(sid, b"DESCRIBE rtsp://cam RTSP/1.0\r\n\r\n") == 32
    (ev,) = pump(sp, agent)
    assert isinstance(ev, Data) and bytes(ev.data) == b"DESCRIBE rtsp://cam RTSP/1.0\r\n\r\n"
    assert agent.info(sid).unconsumed == 32
    agent.consumed(sid, 32)
    assert agent.info(sid).unacked == 32  # below the batching threshold
    sp.fin(sid)
    assert sp.state(sid) is StreamState.HALF_CLOSED_LOCAL
    with pytest.raises(InvalidArgument):
        sp.send_data(sid, b"more")
    assert pump(sp, agent) == [RemoteFin(sid)]
    assert agent.state(sid) is StreamState.HALF_CLOSED_REMOTE
    assert agent.send_data(sid, b"RTSP/1.0 200 OK\r\n\r\n") == 19
    agent.fin(sid)
    assert agent.state(sid) is StreamState.CLOSED
    events = pump(agent, sp)
    assert [type(e) for e in events] == [Data, RemoteFin, StreamClosed]
    assert sp.stream_count == 0 and agent.stream_count == 0
    assert sp.state(sid) is StreamState.CLOSED


def test_agent_opens_odd_ids() -> None:
    sp, agent = pair()
    first = agent.open_stream(CAM)
    second = agent.open_stream(CAM)
    assert (first, second) == (1, 3)
    assert [type(e) for e in pump(agent, sp)] == [StreamOpened, StreamOpened]


def test_refuse() -> None:
    sp, agent = pair()
    sid = sp.open_stream(CAM)
    pump(sp, agent)
    with pytest.raises(InvalidArgument):
        sp.accept(sid)  # only the receiving side answers
    agent.refuse(sid, ErrorCode.CONNECT_FAILED, "connection refused")
    assert pump(agent, sp) == [StreamRefused(sid, ErrorCode.CONNECT_FAILED, "connection refused")]
    assert sp.stream_count == agent.stream_count == 0


def test_no_data_before_accept() -> None:
    sp, _ = pair()
    sid = sp.open_stream(CAM)
    assert sp.send_window(sid) == 0
    assert sp.send_data(sid, b"early") == 0
    assert sp.state(sid) is StreamState.OPENING


def test_unknown_stream_calls() -> None:
    sp, _ = pair()
    with pytest.raises(NotFound):
        sp.send_data(5, b"x")
    with pytest.raises(NotFound):
        sp.state(5)
    with pytest.raises(NotFound):
        sp.info(2)
    sp.reset(2)  # unknown ids are ignored
    assert sp.bytes_pending == 0


def test_close_drops_data_in_flight_and_is_confirmed() -> None:
    sp, agent = pair()
    sid = tunnel(sp, agent)
    agent.send_data(sid, b"frame data")
    sp.close(sid)
    assert sp.state(sid) is StreamState.CLOSING
    assert pump(agent, sp) == []  # dropped: we closed
    assert pump(sp, agent) == [StreamClosed(sid)]
    assert agent.stream_count == 0
    assert pump(agent, sp) == []  # the confirming CLOSE
    assert sp.stream_count == 0


def test_close_crossing() -> None:
    sp, agent = pair()
    sid = tunnel(sp, agent)
    sp.close(sid)
    agent.close(sid)
    assert pump(sp, agent) == []
    assert pump(agent, sp) == []
    assert sp.stream_count == agent.stream_count == 0
    assert sp.bytes_pending == agent.bytes_pending == 0


def test_close_after_fin_while_peer_fin_in_flight() -> None:
    sp, agent = pair()
    sid = tunnel(sp, agent)
    sp.fin(sid)
    agent.fin(sid)
    sp.close(sid)
    assert pump(agent, sp) == []  # the peer's FIN completes the close
    assert [type(e) for e in pump(sp, agent)] == [RemoteFin, StreamClosed]
    assert pump(sp, agent) == []  # our late CLOSE is ignored
    assert sp.stream_count == agent.stream_count == 0


def test_close_while_peer_refuses() -> None:
    sp, agent = pair()
    sid = sp.open_stream(CAM)
    pump(sp, agent)
    agent.refuse(sid)
    sp.close(sid)
    assert pump(agent, sp) == []
    assert sp.stream_count == 0


def test_reset_and_late_data() -> None:
    sp, agent = pair()
    sid = tunnel(sp, agent)
    agent.send_data(sid, b"in flight")
    sp.reset(sid, ErrorCode.CANCEL, "viewer left")
    assert sp.stream_count == 0
    assert pump(sp, agent) == [Reset(sid, ErrorCode.CANCEL, "viewer left", remote=True)]
    assert pump(agent, sp) == []  # late data: answered with RESET, no event
    assert pump(sp, agent) == []  # that RESET is ignored on a closed stream
    assert agent.bytes_pending == 0


def test_ping_pong() -> None:
    sp, agent = pair()
    sp.ping(b"12345678")
    assert pump(sp, agent) == [Ping(b"12345678")]
    assert pump(agent, sp) == [Pong(b"12345678")]
    with pytest.raises(InvalidArgument):
        sp.ping(b"short")


def test_go_away() -> None:
    sp, agent = pair()
    kept = tunnel(sp, agent)
    pending = sp.open_stream(CAM)  # not yet seen by the agent
    agent.go_away(ErrorCode.NORMAL, "shutting down")
    events = pump(agent, sp)
    assert events == [
        GoAway(kept, ErrorCode.NORMAL, "shutting down"),
        StreamRefused(pending, ErrorCode.GOING_AWAY, "shutting down"),
    ]
    with pytest.raises(Unavailable):
        sp.open_stream(CAM)
    assert pump(sp, agent) == []  # the pending OPEN is refused by the agent too
    assert sent_frames(agent) == [RefuseFrame(pending, ErrorCode.GOING_AWAY)]
    assert sp.send_data(kept, b"still works") == 11
    assert [type(e) for e in pump(sp, agent)] == [Data]


def test_stream_cap_refuses_extra_opens() -> None:
    sp, agent = pair(max_streams=2)
    ids = [sp.open_stream(CAM), sp.open_stream(CAM)]
    with pytest.raises(LimitExceeded):
        sp.open_stream(CAM)
    raw = bytearray(sp.data_to_send())
    raw += encode(OpenFrame(6, CAM, 1000))  # a misbehaving peer goes beyond the cap
    events = agent.receive_data(bytes(raw))
    assert [e.stream_id for e in events if isinstance(e, StreamOpened)] == ids
    assert agent.stream_count == 2
    assert sent_frames(agent) == [RefuseFrame(6, ErrorCode.TOO_MANY_STREAMS)]


# Flow control -------------------------------------------------------------------------


def test_send_is_limited_by_the_window_and_reopened_by_consumption() -> None:
    sp, agent = pair(initial_window=1000, max_data_frame=300, update_threshold=400)
    sid = tunnel(sp, agent)
    assert sp.send_data(sid, bytes(1500)) == 1000
    assert sp.send_data(sid, b"x") == 0
    frames = decode_all(bytes(sp.data_to_send()))
    assert [len(f.payload) for f in frames if isinstance(f, DataFrame)] == [300, 300, 300, 100]
    for f in frames:
        agent.receive_data(encode(f))
    agent.consumed(sid, 399)
    assert agent.bytes_pending == 0
    agent.consumed(sid, 1)
    assert pump(agent, sp) == [WindowOpened(sid, 400)]
    assert sp.info(sid).send_window == 400
    with pytest.raises(InvalidArgument):
        agent.consumed(sid, 601)  # more than was delivered
    agent.consumed(sid, 600)
    pump(agent, sp)
    assert sp.info(sid).send_window == 1000
    assert agent.info(sid).recv_window == 1000


def test_flush_window_returns_small_credit() -> None:
    sp, agent = pair(initial_window=1000)
    sid = tunnel(sp, agent)
    sp.send_data(sid, b"abc")
    pump(sp, agent)
    agent.consumed(sid, 3)
    agent.flush_window(sid)
    assert pump(agent, sp) == [WindowOpened(sid, 1000)]


def test_output_buffer_cap() -> None:
    sp, agent = pair(initial_window=10_000, max_buffered=4000)
    a, b = tunnel(sp, agent), tunnel(sp, agent)
    assert sp.send_data(a, bytes(3000)) == 3000
    assert sp.bytes_pending > 3000
    assert sp.send_data(b, bytes(3000)) < 1000
    assert sp.send_window(b) == 0
    sp.data_to_send()
    assert sp.send_window(b) > 0


def test_data_to_send_limit() -> None:
    sp, agent = pair()
    sid = tunnel(sp, agent)
    sp.send_data(sid, b"0123456789")
    first = sp.data_to_send(5)
    rest = sp.data_to_send()
    assert len(first) == 5
    assert [
        bytes(e.data) for e in agent.receive_data(bytes(first + rest)) if isinstance(e, Data)
    ] == [b"0123456789"]


# Violations ---------------------------------------------------------------------------


def raw_frame(ftype: int, sid: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(VERSION, ftype, 0, sid, len(payload)) + payload


def test_data_beyond_window_resets_the_stream() -> None:
    sp, agent = pair(initial_window=100)
    sid = tunnel(sp, agent)
    events = agent.receive_data(encode(DataFrame(sid, bytes(101))))
    assert events == [Reset(sid, ErrorCode.FLOW_CONTROL, "DATA beyond the window", remote=False)]
    assert sent_frames(agent) == [ResetFrame(sid, ErrorCode.FLOW_CONTROL, "DATA beyond the window")]
    assert agent.stream_count == 0 and not agent.terminated


def test_data_after_fin_resets_the_stream() -> None:
    sp, agent = pair()
    sid = tunnel(sp, agent)
    events = agent.receive_data(encode(FinFrame(sid)) + encode(DataFrame(sid, b"x")))
    assert [type(e) for e in events] == [RemoteFin, Reset]


def test_data_before_accept_resets_the_stream() -> None:
    sp, agent = pair()
    sid = sp.open_stream(CAM)
    wire = bytes(sp.data_to_send()) + encode(DataFrame(sid, b"too early"))
    events = agent.receive_data(wire)
    assert events[1:] == [Reset(sid, ErrorCode.PROTOCOL, "DATA before ACCEPT", remote=False)]
    assert [type(e) for e in pump(agent, sp)] == [Reset]
    assert sp.stream_count == agent.stream_count == 0
    agent.flush_window(sid)  # gone: ignored
    agent.consumed(sid, 5)


def test_window_overflow_resets_the_stream() -> None:
    sp, agent = pair()
    sid = tunnel(sp, agent)
    events = sp.receive_data(encode(WindowUpdateFrame(sid, 2**31 - 1)))
    assert [type(e) for e in events] == [Reset]


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (encode(OpenFrame(3, CAM, 10)), "parity"),  # agent-side id from the agent's peer
        (encode(FinFrame(9)), "unknown stream"),
        (encode(DataFrame(4, b"x")), "unknown stream"),
        (raw_frame(42, 1), "unknown mux frame type"),
        (raw_frame(FrameType.DATA, 2, bytes(70_000)), "exceeds"),
    ],
)
def test_connection_errors(wire: bytes, reason: str) -> None:
    sp, agent = pair()
    tunnel(sp, agent)  # stream 2 exists
    events = agent.receive_data(encode(FinFrame(2)) + wire)
    assert isinstance(events[0], RemoteFin)  # frames before the bad one are kept
    assert isinstance(events[-1], Terminated) and reason in events[-1].reason
    assert agent.terminated and agent.stream_count == 0
    (goaway,) = sent_frames(agent)
    assert isinstance(goaway, GoAwayFrame) and goaway.code != ErrorCode.NORMAL
    with pytest.raises(ProtocolError):
        agent.receive_data(b"")
    with pytest.raises(Unavailable):
        agent.open_stream(CAM)


def test_duplicate_open_id_is_a_connection_error() -> None:
    sp, agent = pair()
    sid = tunnel(sp, agent)
    events = agent.receive_data(encode(OpenFrame(sid, CAM, 10)))
    assert isinstance(events[-1], Terminated) and "reuses" in events[-1].reason


def test_answers_to_wrong_streams() -> None:
    sp, agent = pair()
    sid = tunnel(sp, agent)
    # ACCEPT for a stream the agent did not open: that stream is reset, the session lives
    events = agent.receive_data(encode(AcceptFrame(sid, 10)))
    assert [type(e) for e in events] == [Reset]
    assert not agent.terminated


def test_thousand_hostile_frames_keep_tables_bounded() -> None:
    rng = random.Random(1234)
    agent = MuxSession(Role.AGENT, MuxConfig(max_streams=16, initial_window=4096))
    next_id = 2
    seen: dict[type, int] = {}
    for i in range(1000):
        kind = i % 4
        if kind == 0:  # a flood of opens
            wire = encode(OpenFrame(next_id, CAM, 4096))
            next_id += 2
        elif kind == 1:  # data, often beyond the window, on live or dead streams
            sid = rng.randrange(2, next_id, 2)
            wire = encode(DataFrame(sid, bytes(rng.randint(1, 8192))))
        elif kind == 2:  # window updates and closes on old ids
            sid = rng.randrange(2, next_id, 2)
            wire = encode(WindowUpdateFrame(sid, rng.randint(1, 2**31 - 1)))
            wire += encode(CloseFrame(sid))
        else:
            wire = encode(PongFrame(rng.randbytes(8)))
        for event in agent.receive_data(wire):
            seen[type(event)] = seen.get(type(event), 0) + 1
            if isinstance(event, StreamOpened) and rng.random() < 0.7:
                agent.accept(event.stream_id)
            assert not isinstance(event, Terminated)
        assert agent.stream_count <= 16
        assert agent.bytes_pending < 4096
        agent.data_to_send()
    assert not agent.terminated
    assert seen[Reset] > 20 and seen[Data] > 10 and seen[StreamClosed] > 10


@given(st.binary(min_size=1, max_size=200))
@settings(max_examples=300)
def test_garbage_after_a_valid_prelude(blob: bytes) -> None:
    sp, agent = pair()
    sid = tunnel(sp, agent)
    try:
        events = agent.receive_data(encode(DataFrame(sid, b"ok")) + blob)
    except ProtocolError:
        pytest.fail("receive_data must report errors as events")
    assert isinstance(events[0], Data)
    assert sum(isinstance(e, Terminated) for e in events) <= 1
    assert agent.stream_count <= 1 + len(blob) // HEADER_SIZE


# Random interleavings -----------------------------------------------------------------

Key = tuple[int, int]  # (writing side, stream id)


class Pair:
    """Two sessions, the bytes in flight between them, and what each app wrote and read."""

    def __init__(self, config: MuxConfig) -> None:
        self.cfg = config
        self.s = [MuxSession(Role.AGENT, config), MuxSession(Role.STREAMPOINT, config)]
        self.pipe = [bytearray(), bytearray()]  # pipe[i]: from side i to side 1 - i
        self.sent: dict[Key, bytearray] = {}
        self.got: dict[Key, bytearray] = {}
        self.unconsumed: dict[Key, int] = {}
        self.usable: list[set[int]] = [set(), set()]  # side i may write on these
        self.fin_sent: set[Key] = set()
        self.fin_seen: set[Key] = set()
        self.closed: list[set[int]] = [set(), set()]

    def _track(self, sid: int) -> None:
        for side in (0, 1):
            self.sent.setdefault((side, sid), bytearray())
            self.got.setdefault((side, sid), bytearray())
            self.unconsumed.setdefault((side, sid), 0)

    def open(self, side: int) -> None:
        session = self.s[side]
        if session.stream_count < self.cfg.max_streams:
            self._track(session.open_stream(CAM))

    def write(self, side: int, sid: int, size: int) -> None:
        window = self.s[side].send_window(sid)
        payload = os.urandom(size)
        taken = self.s[side].send_data(sid, payload)
        assert taken == min(size, window)
        self.sent[(side, sid)] += payload[:taken]

    def fin(self, side: int, sid: int) -> None:
        self.s[side].fin(sid)
        self.fin_sent.add((side, sid))
        self.usable[side].discard(sid)
        if (1 - side, sid) in self.fin_seen:
            self.closed[side].add(sid)
            assert self.s[side].state(sid) is StreamState.CLOSED

    def consume(self, reader: int, sid: int, n: int) -> None:
        key = (1 - reader, sid)
        if sid not in self.closed[reader]:
            assert self.s[reader].info(sid).unconsumed == self.unconsumed[key]
        self.s[reader].consumed(sid, n)
        self.unconsumed[key] -= n

    def deliver(self, side: int, k: int | None = None) -> None:
        self.pipe[side] += self.s[side].data_to_send()
        k = len(self.pipe[side]) if k is None else min(k, len(self.pipe[side]))
        chunk = bytes(self.pipe[side][:k])
        del self.pipe[side][:k]
        reader = 1 - side
        for ev in self.s[reader].receive_data(chunk):
            self._event(reader, ev)

    def _event(self, reader: int, ev: Event) -> None:
        writer = 1 - reader
        if isinstance(ev, StreamOpened):
            self._track(ev.stream_id)
            self.s[reader].accept(ev.stream_id)
            self.usable[reader].add(ev.stream_id)
        elif isinstance(ev, StreamAccepted):
            self.usable[reader].add(ev.stream_id)
        elif isinstance(ev, StreamRefused):
            assert ev.code == ErrorCode.TOO_MANY_STREAMS
        elif isinstance(ev, Data):
            key = (writer, ev.stream_id)
            self.got[key] += ev.data
            self.unconsumed[key] += len(ev.data)
            assert self.sent[key].startswith(self.got[key])
        elif isinstance(ev, RemoteFin):
            key = (writer, ev.stream_id)
            assert key in self.fin_sent and self.got[key] == self.sent[key]
            self.fin_seen.add(key)
        elif isinstance(ev, StreamClosed):
            sid = ev.stream_id
            assert (writer, sid) in self.fin_seen and (reader, sid) in self.fin_sent
            self.closed[reader].add(sid)
        else:
            assert isinstance(ev, WindowOpened), ev

    def check_windows(self) -> None:
        for key, sent in self.sent.items():
            consumed = len(self.got[key]) - self.unconsumed[key]
            assert len(sent) - consumed <= self.cfg.initial_window, key

    def settle(self) -> None:
        for _ in range(10_000):
            for side in (0, 1):
                self.deliver(side)
            for (writer, sid), n in list(self.unconsumed.items()):
                if n:
                    self.consume(1 - writer, sid, n)
            if not (self.s[0].bytes_pending or self.s[1].bytes_pending):
                return
        pytest.fail("sessions never settled")


@given(st.data())
@settings(max_examples=120, deadline=None)
def test_random_interleavings(data: st.DataObject) -> None:
    config = MuxConfig(
        initial_window=data.draw(st.integers(1, 2000)),
        max_data_frame=data.draw(st.integers(1, 300)),
        max_streams=4,
        max_buffered=3000,
        update_threshold=data.draw(st.integers(0, 1500)),
    )
    p = Pair(config)
    actions = ["open", "write", "write", "deliver", "deliver", "consume", "consume", "fin", "flush"]
    for _ in range(data.draw(st.integers(1, 80))):
        side = data.draw(st.integers(0, 1))
        action = data.draw(st.sampled_from(actions))
        usable = sorted(p.usable[side])
        if action == "open":
            p.open(side)
        elif action == "deliver":
            p.deliver(side, data.draw(st.integers(0, 4000)))
        elif action == "consume":
            pending = sorted(k for k, n in p.unconsumed.items() if n and k[0] != side)
            if pending:
                key = data.draw(st.sampled_from(pending))
                p.consume(side, key[1], data.draw(st.integers(1, p.unconsumed[key])))
        elif usable and action in ("write", "fin", "flush"):
            sid = data.draw(st.sampled_from(usable))
            if action == "write":
                p.write(side, sid, data.draw(st.integers(1, 3000)))
            elif action == "fin":
                p.fin(side, sid)
            else:
                p.s[side].flush_window(sid)
        p.check_windows()

    # everything consumed and all credit returned: windows are back to the initial size
    p.settle()
    for side in (0, 1):
        for sid in p.s[side].stream_ids():
            p.s[side].flush_window(sid)
    p.settle()
    for side in (0, 1):
        session = p.s[side]
        for sid in session.stream_ids():
            info = session.info(sid)
            if info.state in (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE):
                assert info.send_window == config.initial_window
            if info.state in (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL):
                assert info.recv_window == config.initial_window
                assert info.unacked == info.unconsumed == 0

    # both sides half-close everything: all data arrived in order, every stream is released
    for side in (0, 1):
        for sid in sorted(p.usable[side]):
            p.fin(side, sid)
    p.settle()
    for key, sent in p.sent.items():
        assert p.got[key] == sent, key
    assert p.s[0].stream_count == p.s[1].stream_count == 0


# Bulk data (its cost is measured by tests/bench/bench_mux.py) ------------------------


def test_bulk_data_is_delivered_whole() -> None:
    sp, agent = pair()
    sid = tunnel(sp, agent)
    chunk = os.urandom(64 * 1024)
    total = 64 * 1024 * 1024
    sent = got = 0
    while sent < total:
        sent += sp.send_data(sid, chunk)
        for ev in agent.receive_data(sp.data_to_send()):
            if isinstance(ev, Data):
                got += len(ev.data)
                agent.consumed(sid, len(ev.data))
        update = agent.data_to_send()
        if update:
            sp.receive_data(update)
    assert got == sent >= total
