"""Tunnel multiplexer session: many byte streams over one ordered message connection.

Sans-I/O: `receive_data()` takes bytes and returns events, the app's calls queue frames, and
`data_to_send()` hands the bytes to write. Per-stream credit windows bound what either side
buffers. Stream ids: the agent opens odd ids, the streampoint even ones. See docs/tunnel.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from agent.errors import InvalidArgument, LimitExceeded, NotFound, ProtocolError, Unavailable
from agent.proto.mux_frames import (
    HEADER,
    MAX_DATA,
    MAX_STREAM_ID,
    MAX_TEXT,
    MAX_WINDOW,
    PING_SIZE,
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
    WindowUpdateFrame,
    encode,
)

DEFAULT_WINDOW = 256 * 1024


class Role(Enum):
    """Which end of the connection this session is; fixes the parity of the ids it opens."""

    AGENT = "agent"  # odd ids
    STREAMPOINT = "streampoint"  # even ids


class StreamState(Enum):
    OPENING = "opening"  # OPEN sent or received, no ACCEPT yet
    OPEN = "open"
    HALF_CLOSED_LOCAL = "half_closed_local"  # we sent FIN
    HALF_CLOSED_REMOTE = "half_closed_remote"  # we received FIN
    CLOSING = "closing"  # we sent CLOSE, waiting for the peer's CLOSE
    CLOSED = "closed"
    RESET = "reset"


@dataclass(frozen=True, slots=True)
class MuxConfig:
    """Limits of one session. `max_buffered` caps unsent output that `send_data` adds to."""

    initial_window: int = DEFAULT_WINDOW
    max_data_frame: int = MAX_DATA
    max_streams: int = 128
    max_buffered: int = 1024 * 1024
    update_threshold: int = 0  # 0: a quarter of initial_window

    def __post_init__(self) -> None:
        if not 0 <= self.initial_window <= MAX_WINDOW:
            raise InvalidArgument("initial_window out of range")
        if not 1 <= self.max_data_frame <= MAX_DATA:
            raise InvalidArgument("max_data_frame must be 1..65536")
        if self.max_streams < 1 or self.max_buffered < 1 or self.update_threshold < 0:
            raise InvalidArgument("max_streams and max_buffered must be positive")

    @property
    def threshold(self) -> int:
        return self.update_threshold or max(1, self.initial_window // 4)


# Events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer asks for a tunnel: answer with `accept()` or `refuse()`."""

    stream_id: int
    target: Target


@dataclass(frozen=True, slots=True)
class StreamAccepted:
    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamRefused:
    stream_id: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Data:
    """Bytes for the app; call `consumed()` once they are handed on, to reopen the window."""

    stream_id: int
    data: memoryview


@dataclass(frozen=True, slots=True)
class WindowOpened:
    """The peer granted credit: `send_data()` may accept more."""

    stream_id: int
    window: int


@dataclass(frozen=True, slots=True)
class RemoteFin:
    """The peer sends no more data on this stream (it may still read)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """Both directions are done (FIN both ways, or the peer sent CLOSE); the id is released."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class Reset:
    """The stream was aborted: by the peer (`remote`) or by us for a peer's violation."""

    stream_id: int
    code: int
    reason: str
    remote: bool


@dataclass(frozen=True, slots=True)
class Ping:
    opaque: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    opaque: bytes


@dataclass(frozen=True, slots=True)
class GoAway:
    """The peer opens no more streams and accepts none above `last_stream_id`."""

    last_stream_id: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Terminated:
    """A connection-level violation: a GOAWAY is queued, close the connection after sending."""

    code: int
    reason: str


Event = (
    StreamOpened
    | StreamAccepted
    | StreamRefused
    | Data
    | WindowOpened
    | RemoteFin
    | StreamClosed
    | Reset
    | Ping
    | Pong
    | GoAway
    | Terminated
)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A snapshot of one stream's state and flow-control counters."""

    state: StreamState
    send_window: int  # bytes we may still send
    recv_window: int  # bytes the peer may still send
    unconsumed: int  # delivered to the app, not yet consumed
    unacked: int  # consumed, not yet returned to the peer by WINDOW_UPDATE


class _Stream:
    __slots__ = (
        "closing",
        "id",
        "local",
        "local_fin",
        "opening",
        "recv_window",
        "remote_fin",
        "send_window",
        "unacked",
        "unconsumed",
    )

    def __init__(self, stream_id: int, local: bool, send_window: int, recv_window: int) -> None:
        self.id = stream_id
        self.local = local  # opened by this side
        self.opening = True
        self.local_fin = False
        self.remote_fin = False
        self.closing = False
        self.send_window = send_window
        self.recv_window = recv_window
        self.unconsumed = 0
        self.unacked = 0

    @property
    def state(self) -> StreamState:
        if self.closing:
            return StreamState.CLOSING
        if self.opening:
            return StreamState.OPENING
        if self.local_fin:
            return StreamState.HALF_CLOSED_LOCAL
        if self.remote_fin:
            return StreamState.HALF_CLOSED_REMOTE
        return StreamState.OPEN


class _ConnectionError(Exception):
    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class MuxSession:
    """One multiplexed connection; see the module docstring."""

    def __init__(self, role: Role, config: MuxConfig | None = None) -> None:
        self.role = role
        self.config = config or MuxConfig()
        self._decoder = FrameDecoder(self.config.max_data_frame)
        self._streams: dict[int, _Stream] = {}
        self._out = bytearray()
        self._next_local = 1 if role is Role.AGENT else 2
        self._highest_remote = 0
        self._going_away = False  # we sent GOAWAY
        self._peer_going_away = False  # we received GOAWAY
        self._terminated: str | None = None

    # Introspection ---------------------------------------------------------------------

    @property
    def bytes_pending(self) -> int:
        """Output bytes not yet taken by `data_to_send()`."""
        return len(self._out)

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    @property
    def terminated(self) -> bool:
        return self._terminated is not None

    def stream_ids(self) -> list[int]:
        return list(self._streams)

    def info(self, stream_id: int) -> StreamInfo:
        """The stream's counters; NotFound once it is closed, reset or never existed."""
        s = self._streams.get(stream_id)
        if s is None:
            raise NotFound(f"no mux stream {stream_id}")
        return StreamInfo(s.state, s.send_window, s.recv_window, s.unconsumed, s.unacked)

    def state(self, stream_id: int) -> StreamState:
        """The stream's state; CLOSED for ids that were used and are gone."""
        s = self._streams.get(stream_id)
        if s is not None:
            return s.state
        if self._was_used(stream_id):
            return StreamState.CLOSED
        raise NotFound(f"no mux stream {stream_id}")

    def data_to_send(self, limit: int | None = None) -> bytearray:
        """Take up to `limit` (default all) queued output bytes."""
        if limit is None or limit >= len(self._out):
            out, self._out = self._out, bytearray()
            return out
        if limit < 0:
            raise InvalidArgument("limit must not be negative")
        chunk = self._out[:limit]
        del self._out[:limit]
        return chunk

    # App actions -----------------------------------------------------------------------

    def open_stream(self, target: Target) -> int:
        """Ask the peer for a tunnel to `target`; returns the new stream id."""
        self._check_alive()
        if self._going_away or self._peer_going_away:
            raise Unavailable("mux session is going away")
        if len(self._streams) >= self.config.max_streams:
            raise LimitExceeded(f"more than {self.config.max_streams} mux streams")
        stream_id = self._next_local
        if stream_id > MAX_STREAM_ID:
            raise Unavailable("mux stream ids exhausted")
        self._next_local += 2
        self._streams[stream_id] = _Stream(stream_id, True, 0, self.config.initial_window)
        self._out += encode(OpenFrame(stream_id, target, self.config.initial_window))
        return stream_id

    def accept(self, stream_id: int) -> None:
        s = self._get(stream_id)
        if s.local or not s.opening:
            raise InvalidArgument(f"mux stream {stream_id} is not waiting for an answer")
        s.opening = False
        self._out += encode(AcceptFrame(stream_id, s.recv_window))

    def refuse(self, stream_id: int, code: int = ErrorCode.REFUSED, reason: str = "") -> None:
        s = self._get(stream_id)
        if s.local or not s.opening:
            raise InvalidArgument(f"mux stream {stream_id} is not waiting for an answer")
        self._out += encode(RefuseFrame(stream_id, code, reason))
        del self._streams[stream_id]

    def send_window(self, stream_id: int) -> int:
        """What `send_data()` would accept now (0 before ACCEPT or when output is full)."""
        s = self._get(stream_id)
        if s.opening or s.local_fin or s.closing:
            return 0
        return max(0, min(s.send_window, self.config.max_buffered - len(self._out)))

    def send_data(self, stream_id: int, data: bytes | bytearray | memoryview) -> int:
        """Queue what the window allows of `data`; returns how many bytes were taken."""
        s = self._get(stream_id)
        if s.local_fin or s.closing:
            raise InvalidArgument(f"mux stream {stream_id} is closed for sending")
        if s.opening:
            return 0
        view = memoryview(data).cast("B")
        total = min(len(view), s.send_window, self.config.max_buffered - len(self._out))
        if total <= 0:
            return 0
        out, step, pos = self._out, self.config.max_data_frame, 0
        while pos < total:
            n = min(step, total - pos)
            out += HEADER.pack(VERSION, FrameType.DATA, 0, stream_id, n)
            out += view[pos : pos + n]
            pos += n
        s.send_window -= total
        return total

    def consumed(self, stream_id: int, n: int) -> None:
        """The app has handed on `n` received bytes; returns credit to the peer in batches."""
        s = self._streams.get(stream_id)
        if s is None or s.closing:
            return  # gone: nothing to give back
        if not 0 < n <= s.unconsumed:
            raise InvalidArgument(f"consumed {n} of {s.unconsumed} delivered bytes")
        s.unconsumed -= n
        if s.remote_fin or s.closing:
            return
        s.unacked += n
        if s.unacked >= self.config.threshold:
            self._update(s)

    def flush_window(self, stream_id: int) -> None:
        """Return all consumed credit now, below the batching threshold too."""
        s = self._streams.get(stream_id)
        if s is not None and s.unacked and not (s.remote_fin or s.closing):
            self._update(s)

    def fin(self, stream_id: int) -> None:
        """Half-close: we send no more data. Releases the stream if the peer's FIN came first."""
        s = self._get(stream_id)
        if s.opening or s.local_fin or s.closing:
            raise InvalidArgument(f"mux stream {stream_id} cannot be half-closed now")
        s.local_fin = True
        self._out += encode(FinFrame(stream_id))
        if s.remote_fin:
            del self._streams[stream_id]

    def close(self, stream_id: int) -> None:
        """Close both ways, not an error: data in flight to us is dropped, the peer confirms."""
        s = self._get(stream_id)
        if s.closing:
            return
        s.closing = True
        s.unconsumed = s.unacked = 0
        self._out += encode(CloseFrame(stream_id))

    def reset(self, stream_id: int, code: int = ErrorCode.CANCEL, reason: str = "") -> None:
        """Abort the stream; unknown or finished ids are ignored."""
        if self._streams.pop(stream_id, None) is not None:
            self._out += encode(ResetFrame(stream_id, code, reason))

    def ping(self, opaque: bytes) -> None:
        if len(opaque) != PING_SIZE:
            raise InvalidArgument("ping payload must be 8 bytes")
        self._check_alive()
        self._out += encode(PingFrame(bytes(opaque)))

    def go_away(self, code: int = ErrorCode.NORMAL, reason: str = "") -> None:
        """Refuse new streams from now on; existing ones continue."""
        self._check_alive()
        self._going_away = True
        self._out += encode(GoAwayFrame(self._highest_remote, code, reason))

    # Input -----------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Process bytes from the peer. DATA views alias `data`: do not modify it afterwards."""
        if self._terminated is not None:
            raise ProtocolError(f"mux session terminated: {self._terminated}")
        frames, error = self._decoder.feed_until_error(data)
        events: list[Event] = []
        try:
            for frame in frames:
                self._handle(frame, events)
            if error is not None:
                code = (
                    ErrorCode.FRAME_SIZE if isinstance(error, LimitExceeded) else ErrorCode.PROTOCOL
                )
                raise _ConnectionError(code, str(error))
        except _ConnectionError as exc:
            self._terminate(exc.code, exc.reason, events)
        return events

    def _handle(self, frame: Frame, events: list[Event]) -> None:
        if isinstance(frame, DataFrame):
            self._on_data(frame, events)
        elif isinstance(frame, WindowUpdateFrame):
            self._on_window(frame, events)
        elif isinstance(frame, OpenFrame):
            self._on_open(frame, events)
        elif isinstance(frame, PingFrame):
            self._out += encode(PongFrame(frame.opaque))
            events.append(Ping(frame.opaque))
        elif isinstance(frame, PongFrame):
            events.append(Pong(frame.opaque))
        elif isinstance(frame, GoAwayFrame):
            self._on_goaway(frame, events)
        else:
            self._on_stream_control(frame, events)

    def _on_open(self, frame: OpenFrame, events: list[Event]) -> None:
        sid = frame.stream_id
        if sid % 2 == self._next_local % 2:
            raise _ConnectionError(ErrorCode.PROTOCOL, f"OPEN with our id parity ({sid})")
        if sid <= self._highest_remote:
            raise _ConnectionError(ErrorCode.PROTOCOL, f"OPEN reuses stream id {sid}")
        self._highest_remote = sid
        if self._going_away:
            self._out += encode(RefuseFrame(sid, ErrorCode.GOING_AWAY))
        elif len(self._streams) >= self.config.max_streams:
            self._out += encode(RefuseFrame(sid, ErrorCode.TOO_MANY_STREAMS))
        else:
            self._streams[sid] = _Stream(sid, False, frame.window, self.config.initial_window)
            events.append(StreamOpened(sid, frame.target))

    def _on_data(self, frame: DataFrame, events: list[Event]) -> None:
        s = self._known(frame.stream_id)
        if s is None:
            self._out += encode(ResetFrame(frame.stream_id, ErrorCode.STREAM_CLOSED))
            return
        if s.closing:
            return
        n = len(frame.payload)
        if s.opening:
            self._violation(s, ErrorCode.PROTOCOL, "DATA before ACCEPT", events)
        elif s.remote_fin:
            self._violation(s, ErrorCode.STREAM_CLOSED, "DATA after FIN", events)
        elif n > s.recv_window:
            self._violation(s, ErrorCode.FLOW_CONTROL, "DATA beyond the window", events)
        else:
            s.recv_window -= n
            s.unconsumed += n
            payload = frame.payload
            events.append(
                Data(s.id, payload if isinstance(payload, memoryview) else memoryview(payload))
            )

    def _on_window(self, frame: WindowUpdateFrame, events: list[Event]) -> None:
        s = self._known(frame.stream_id)
        if s is None or s.closing:
            return
        if s.send_window + frame.increment > MAX_WINDOW:
            self._violation(s, ErrorCode.FLOW_CONTROL, "window beyond 2^31-1", events)
            return
        s.send_window += frame.increment
        if not (s.opening or s.local_fin):
            events.append(WindowOpened(s.id, s.send_window))

    def _on_stream_control(self, frame: Frame, events: list[Event]) -> None:
        assert isinstance(frame, AcceptFrame | RefuseFrame | FinFrame | CloseFrame | ResetFrame)
        s = self._known(frame.stream_id)
        if s is None:
            if isinstance(frame, AcceptFrame):  # we gave up on it first
                self._out += encode(ResetFrame(frame.stream_id, ErrorCode.STREAM_CLOSED))
            return
        if isinstance(frame, ResetFrame):
            del self._streams[s.id]
            events.append(Reset(s.id, frame.code, frame.reason, remote=True))
        elif isinstance(frame, CloseFrame):
            del self._streams[s.id]
            if not s.closing:
                self._out += encode(CloseFrame(s.id))
                events.append(StreamClosed(s.id))
        elif s.closing:
            # the peer finished its side and will not answer our CLOSE
            if isinstance(frame, RefuseFrame) or (isinstance(frame, FinFrame) and s.local_fin):
                del self._streams[s.id]
        elif isinstance(frame, FinFrame):
            if s.opening or s.remote_fin:
                self._violation(s, ErrorCode.PROTOCOL, "unexpected FIN", events)
                return
            s.remote_fin = True
            s.unacked = 0
            events.append(RemoteFin(s.id))
            if s.local_fin:
                del self._streams[s.id]
                events.append(StreamClosed(s.id))
        elif not (s.local and s.opening):
            self._violation(s, ErrorCode.PROTOCOL, "answer to a stream not opening", events)
        elif isinstance(frame, AcceptFrame):
            s.opening = False
            s.send_window = frame.window
            events.append(StreamAccepted(s.id))
        else:
            del self._streams[s.id]
            events.append(StreamRefused(s.id, frame.code, frame.reason))

    def _on_goaway(self, frame: GoAwayFrame, events: list[Event]) -> None:
        self._peer_going_away = True
        events.append(GoAway(frame.last_stream_id, frame.code, frame.reason))
        for s in list(self._streams.values()):
            if s.local and s.opening and s.id > frame.last_stream_id:
                del self._streams[s.id]
                events.append(StreamRefused(s.id, ErrorCode.GOING_AWAY, frame.reason))

    # Helpers ---------------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self._terminated is not None:
            raise Unavailable(f"mux session terminated: {self._terminated}")

    def _get(self, stream_id: int) -> _Stream:
        self._check_alive()
        s = self._streams.get(stream_id)
        if s is None:
            raise NotFound(f"no mux stream {stream_id}")
        return s

    def _was_used(self, stream_id: int) -> bool:
        if stream_id % 2 == self._next_local % 2:
            return 0 < stream_id < self._next_local
        return 0 < stream_id <= self._highest_remote

    def _known(self, stream_id: int) -> _Stream | None:
        """The live stream, None if it was used and is gone; a connection error if never used."""
        s = self._streams.get(stream_id)
        if s is None and not self._was_used(stream_id):
            raise _ConnectionError(ErrorCode.PROTOCOL, f"frame on unknown stream {stream_id}")
        return s

    def _update(self, s: _Stream) -> None:
        self._out += encode(WindowUpdateFrame(s.id, s.unacked))
        s.recv_window += s.unacked
        s.unacked = 0

    def _violation(self, s: _Stream, code: ErrorCode, reason: str, events: list[Event]) -> None:
        del self._streams[s.id]
        self._out += encode(ResetFrame(s.id, code, reason))
        events.append(Reset(s.id, code, reason, remote=False))

    def _terminate(self, code: ErrorCode, reason: str, events: list[Event]) -> None:
        self._terminated = reason
        self._streams.clear()
        text = reason.encode()[:MAX_TEXT].decode(errors="ignore")
        self._out += encode(GoAwayFrame(self._highest_remote, code, text))
        events.append(Terminated(code, reason))
