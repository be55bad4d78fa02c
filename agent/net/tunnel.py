"""Byte tunnels between TCP sockets and one multiplexed message connection (docs/tunnel.md).

`MuxPeer` drives a sans-I/O `MuxSession`: the connection's reader hands it binary messages
(`feed`), its flusher task writes what the session queued through `send`. Each tunnel end is a
TCP socket served by an `asyncio.Protocol` (no stream wrappers, no per-chunk tasks): socket bytes
go straight into the session's output buffer while the stream's credit window allows, and the
socket stops being read when it does not; bytes from the peer are written to the socket and
their credit is returned only once the socket's write buffer is below its high-water mark.
Either end can be slow without anything else buffering more than one window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from agent.errors import AgentError, LimitExceeded, NotFound, Unavailable
from agent.net.taskgroup import TaskGroup
from agent.proto import mux
from agent.proto.mux_frames import ErrorCode, Target

log = logging.getLogger(__name__)

#: Largest message handed to `send` at once.
MAX_MESSAGE = 256 * 1024
#: Largest socket read; one buffer of this size per MuxPeer is reused for every read.
READ_BUFFER = 256 * 1024
#: A tunnel with no byte either way for this long is reset.
IDLE_TIMEOUT = 60.0
#: How long connecting to a target, or waiting for the peer's ACCEPT, may take.
CONNECT_TIMEOUT = 5.0
#: A closed stream whose peer never confirms is forgotten after this long.
CLOSE_TIMEOUT = 10.0

Send = Callable[[bytes], Awaitable[None]]


class Refused(AgentError):
    """A tunnel open the policy refuses: `code` goes into the REFUSE frame."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


#: Decides where an incoming OPEN goes: (host, port) to connect to, or raises Refused.
Resolver = Callable[[Target], tuple[str, int]]


@dataclass
class TunnelCounters:
    opened: int = 0
    refused: int = 0
    failed: int = 0
    reset: int = 0
    idle_closed: int = 0
    bytes_in: int = 0  # from the peer to sockets
    bytes_out: int = 0  # from sockets to the peer
    last_refusal: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(eq=False)
class _Leg(asyncio.BufferedProtocol):
    """The TCP socket of one tunnel. Reads go into the peer's one read buffer, whose bytes are
    copied into the session (or `pending`) before the next read: no buffer per read."""

    peer: MuxPeer
    stream_id: int = 0
    transport: asyncio.Transport | None = None
    ready: bool = False  # accepted: socket bytes may flow into the mux
    pending: bytearray = field(default_factory=bytearray)  # socket bytes the window refused
    eof: bool = False  # the socket sent EOF; FIN follows once `pending` is sent
    write_paused: bool = False
    owed: int = 0  # bytes written to the socket whose credit is not returned yet
    last: float = field(default_factory=time.monotonic)
    closing_since: float = 0.0
    target: tuple[str, int] | None = None  # what the agent side connected to
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.ready:
            transport.pause_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.peer._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.peer._from_socket(self, self.peer._read_buffer[:nbytes])

    def data_received(self, data: bytes) -> None:  # transports without buffered reads
        self.peer._from_socket(self, data)

    def eof_received(self) -> bool:
        self.peer._socket_eof(self)
        return True  # keep the write side open: half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        self.peer._socket_lost(self, exc)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.peer._socket_drained(self)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class MuxPeer:
    """One end of the tunnel connection. Use as: start `run()` as a task, call `feed()` for each
    binary message received, `open()` to tunnel a socket to the peer (streampoint side), and
    give a `resolver` to accept the peer's opens (agent side)."""

    def __init__(
        self,
        role: mux.Role,
        send: Send,
        *,
        resolver: Resolver | None = None,
        config: mux.MuxConfig | None = None,
        name: str = "tunnel",
        idle_timeout: float = IDLE_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        ping_every: float = 0.0,
        target_bytes: dict[tuple[str, int], int] | None = None,
    ) -> None:
        self.session = mux.MuxSession(role, config)
        #: Bytes read from each target (host, port) and sent to the peer, for per-camera figures.
        self.target_bytes = target_bytes
        self.name = name
        self.counters = TunnelCounters()
        self._send = send
        self._resolver = resolver
        self._idle = idle_timeout
        self._connect_timeout = connect_timeout
        self._ping_every = ping_every
        self._legs: dict[int, _Leg] = {}
        self._blocked: dict[int, _Leg] = {}
        self._waiting: dict[int, asyncio.Future[None]] = {}  # our opens awaiting ACCEPT
        self._connects: dict[int, asyncio.Task[None]] = {}  # peer opens being connected
        self._dirty = asyncio.Event()
        self._read_buffer = memoryview(bytearray(READ_BUFFER))
        self._failed: BaseException | None = None
        self._closed = False

    # ------------------------------------------------------------------ public

    @property
    def tunnel_count(self) -> int:
        return len(self._legs) + len(self._connects)

    def status(self) -> dict[str, Any]:
        return {"tunnels": self.tunnel_count, **self.counters.to_json()}

    def open_targets(self) -> dict[tuple[str, int], int]:
        """Open tunnels (connected to their target) by target (host, port)."""
        out: dict[tuple[str, int], int] = {}
        for leg in self._legs.values():
            if leg.target is not None:
                out[leg.target] = out.get(leg.target, 0) + 1
        return out

    async def run(self) -> None:
        """Flush output and watch idle tunnels until cancelled, or raise ConnectionError when the
        connection fails (a send error or a protocol violation by the peer)."""
        try:
            async with TaskGroup() as group:
                group.create_task(self._flusher())
                group.create_task(self._watchdog())
                if self._ping_every > 0:
                    group.create_task(self._pinger())
        except* ConnectionError as eg:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # cancelled meanwhile: that comes first
                raise asyncio.CancelledError from None
            raise eg.exceptions[0] from None
        finally:
            self.close()

    def feed(self, data: bytes) -> None:
        """Process one binary message from the peer."""
        if self.session.terminated:
            return
        for event in self.session.receive_data(data):
            try:
                self._on_event(event)
            except (OSError, AgentError) as exc:  # one socket's trouble ends only its tunnel
                sid = getattr(event, "stream_id", 0)
                log.info("%s: tunnel %d failed: %s", self.name, sid, exc)
                self._abort(sid)
        self._dirty.set()

    async def open(self, target: Target, transport: asyncio.Transport) -> int:
        """Ask the peer for a tunnel to `target` and bind it to an accepted socket; returns the
        stream id. Raises Refused (the peer's code and reason), or Unavailable on timeout or when
        the connection is gone; the socket is closed then."""
        leg = _Leg(self)
        transport.set_protocol(leg)
        leg.connection_made(transport)
        return await self._open_leg(target, leg)

    def close(self) -> None:
        """Abort every tunnel; the connection is going away."""
        if self._closed:
            return
        self._closed = True
        for task in self._connects.values():
            task.cancel()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(Unavailable("tunnel connection closed"))
        for leg in list(self._legs.values()):
            leg.abort()
        self._legs.clear()
        self._blocked.clear()
        self._waiting.clear()

    # ------------------------------------------------------------------ opening

    async def _open_leg(self, target: Target, leg: _Leg) -> int:
        if self._closed or self.session.terminated:
            leg.abort()
            raise Unavailable("tunnel connection closed")
        try:
            sid = self.session.open_stream(target)
        except (Unavailable, LimitExceeded):
            leg.abort()
            raise
        leg.stream_id = sid
        self._legs[sid] = leg
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[sid] = fut
        self._dirty.set()
        try:
            async with asyncio.timeout(self._connect_timeout):
                await fut
        except TimeoutError:
            self.session.reset(sid, ErrorCode.TIMEOUT, "no answer")
            self._drop(leg)
            leg.abort()
            raise Unavailable(f"no answer within {self._connect_timeout:g} s") from None
        except BaseException:
            self.session.reset(sid, ErrorCode.CANCEL, "")
            self._drop(leg)
            leg.abort()
            raise
        finally:
            self._waiting.pop(sid, None)
            self._dirty.set()
        self._start(leg)
        return sid

    def _on_opened(self, sid: int, target: Target) -> None:
        try:
            if self.session.state(sid) != mux.StreamState.OPENING:
                return  # opened and reset in the same read: nothing to answer
        except NotFound:
            return
        try:
            if self._resolver is None:
                raise Refused(ErrorCode.NOT_ALLOWED, "this end accepts no tunnels")
            host, port = self._resolver(target)
        except Refused as exc:
            self.counters.refused += 1
            self.counters.last_refusal = str(exc)[:200]
            self.session.refuse(sid, exc.code, str(exc)[:200])
            return
        task = asyncio.create_task(self._connect(sid, host, port), name=f"{self.name} open {sid}")
        self._connects[sid] = task

    async def _connect(self, sid: int, host: str, port: int) -> None:
        leg = _Leg(self, stream_id=sid, target=(host, port))
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                await loop.create_connection(lambda: leg, host, port)
        except (OSError, TimeoutError) as exc:
            self.counters.failed += 1
            reason = "timeout" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            log.info("%s: tunnel %d to %s:%d failed: %s", self.name, sid, host, port, reason)
            if self.session.state(sid) == mux.StreamState.OPENING:
                self.session.refuse(sid, ErrorCode.CONNECT_FAILED, f"connect failed: {reason}")
            self._dirty.set()
            return
        finally:
            self._connects.pop(sid, None)
        if self._closed or self.session.state(sid) != mux.StreamState.OPENING:
            leg.abort()  # the peer gave up meanwhile
            return
        self.session.accept(sid)
        self._legs[sid] = leg
        self._start(leg)
        self._dirty.set()

    def _start(self, leg: _Leg) -> None:
        self.counters.opened += 1
        leg.ready = True
        leg.last = time.monotonic()
        if leg.transport is not None and not leg.transport.is_closing():
            leg.transport.resume_reading()

    # ------------------------------------------------------------------ socket side

    def _from_socket(self, leg: _Leg, data: bytes | memoryview) -> None:
        leg.last = time.monotonic()
        if leg.pending or not leg.ready:
            leg.pending += data
            self._block(leg)
            return
        try:
            n = self.session.send_data(leg.stream_id, data)
        except AgentError:
            leg.abort()
            return
        self.counters.bytes_out += n
        if leg.target is not None and self.target_bytes is not None:
            self.target_bytes[leg.target] = self.target_bytes.get(leg.target, 0) + n
        if n < len(data):
            leg.pending += data[n:]
            self._block(leg)
        self._dirty.set()

    def _block(self, leg: _Leg) -> None:
        if leg.transport is not None:
            leg.transport.pause_reading()
        self._blocked[leg.stream_id] = leg

    def _retry_blocked(self) -> None:
        for sid, leg in list(self._blocked.items()):
            if sid not in self._legs:
                del self._blocked[sid]
                continue
            if leg.pending:
                try:
                    n = self.session.send_data(sid, leg.pending)
                except AgentError:
                    del self._blocked[sid]
                    leg.abort()
                    continue
                if n:
                    del leg.pending[:n]
                    self.counters.bytes_out += n
                    if leg.target is not None and self.target_bytes is not None:
                        self.target_bytes[leg.target] = self.target_bytes.get(leg.target, 0) + n
                    self._dirty.set()
                if leg.pending:
                    continue
            del self._blocked[sid]
            if leg.eof:
                self._send_fin(leg)
            elif leg.transport is not None and not leg.transport.is_closing():
                leg.transport.resume_reading()

    def _socket_eof(self, leg: _Leg) -> None:
        leg.eof = True
        if not leg.pending and leg.ready:
            self._send_fin(leg)

    def _send_fin(self, leg: _Leg) -> None:
        if self.session.state(leg.stream_id) in (
            mux.StreamState.OPEN,
            mux.StreamState.HALF_CLOSED_REMOTE,
        ):
            self.session.fin(leg.stream_id)
            self._dirty.set()
        self._maybe_release(leg)

    def _socket_lost(self, leg: _Leg, exc: Exception | None) -> None:
        sid = leg.stream_id
        if self._legs.get(sid) is not leg or self.session.terminated:
            return
        state = self.session.state(sid)
        if state in (mux.StreamState.CLOSED, mux.StreamState.RESET):
            self._drop(leg)
        elif exc is not None or state == mux.StreamState.OPENING:
            self.session.reset(sid, ErrorCode.CANCEL, "socket closed")
            self._drop(leg)
            fut = self._waiting.get(sid)
            if fut is not None and not fut.done():
                fut.set_exception(Unavailable("the socket closed before the tunnel opened"))
        elif state != mux.StreamState.CLOSING:
            self.session.close(sid)  # waits for the peer's CLOSE, then StreamClosed drops it
            leg.closing_since = time.monotonic()
        self._dirty.set()

    def _socket_drained(self, leg: _Leg) -> None:
        if leg.owed and leg.stream_id in self._legs:
            self.session.consumed(leg.stream_id, leg.owed)
            leg.owed = 0
            self._dirty.set()

    def _maybe_release(self, leg: _Leg) -> None:
        if self.session.state(leg.stream_id) == mux.StreamState.CLOSED:
            self._drop(leg)
            if leg.transport is not None:
                leg.transport.close()

    def _abort(self, sid: int) -> None:
        self.session.reset(sid, ErrorCode.INTERNAL, "socket error")
        leg = self._legs.pop(sid, None)
        if leg is not None:
            self._drop(leg)
            leg.abort()

    def _drop(self, leg: _Leg) -> None:
        self._legs.pop(leg.stream_id, None)
        self._blocked.pop(leg.stream_id, None)
        leg.pending.clear()

    # ------------------------------------------------------------------ mux side

    def _on_event(self, event: mux.Event) -> None:
        if isinstance(event, mux.Data):
            self._to_socket(event.stream_id, event.data)
        elif isinstance(event, mux.WindowOpened):
            if event.stream_id in self._blocked:
                self._retry_blocked()
        elif isinstance(event, mux.StreamOpened):
            self._on_opened(event.stream_id, event.target)
        elif isinstance(event, mux.StreamAccepted):
            fut = self._waiting.get(event.stream_id)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif isinstance(event, mux.StreamRefused):
            self._refused(event)
        elif isinstance(event, mux.RemoteFin):
            leg = self._legs.get(event.stream_id)
            if leg is not None and leg.transport is not None and leg.transport.can_write_eof():
                with contextlib.suppress(OSError):
                    leg.transport.write_eof()
            if leg is not None:
                self._maybe_release(leg)
        elif isinstance(event, mux.StreamClosed):
            leg = self._legs.pop(event.stream_id, None)
            if leg is not None:
                self._drop(leg)
                if leg.transport is not None:
                    leg.transport.close()
        elif isinstance(event, mux.Reset):
            self._on_reset(event)
        elif isinstance(event, mux.Terminated):
            log.warning("%s: peer violated the tunnel protocol: %s", self.name, event.reason)
            self._failed = ConnectionError(f"tunnel protocol error: {event.reason}")
        elif isinstance(event, mux.GoAway):
            log.info("%s: peer is going away (%s)", self.name, event.reason or event.code)

    def _to_socket(self, sid: int, data: memoryview) -> None:
        leg = self._legs.get(sid)
        n = len(data)
        if leg is None or leg.transport is None or leg.transport.is_closing():
            self.session.consumed(sid, n)  # nobody to deliver to; the stream is being torn down
            return
        leg.last = time.monotonic()
        self.counters.bytes_in += n
        leg.transport.write(data)
        if leg.write_paused:
            leg.owed += n
        else:
            self.session.consumed(sid, n)

    def _refused(self, event: mux.StreamRefused) -> None:
        fut = self._waiting.get(event.stream_id)
        if fut is not None and not fut.done():
            fut.set_exception(Refused(event.code, event.reason or "refused"))
        leg = self._legs.pop(event.stream_id, None)
        if leg is not None:
            self._drop(leg)
            leg.abort()

    def _on_reset(self, event: mux.Reset) -> None:
        self.counters.reset += 1
        fut = self._waiting.get(event.stream_id)
        if fut is not None and not fut.done():
            fut.set_exception(Refused(event.code, event.reason or "reset"))
        task = self._connects.pop(event.stream_id, None)
        if task is not None:
            task.cancel()
        leg = self._legs.pop(event.stream_id, None)
        if leg is not None:
            self._drop(leg)
            leg.abort()

    # ------------------------------------------------------------------ tasks

    async def _flusher(self) -> None:
        session = self.session
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            while session.bytes_pending:
                chunk = session.data_to_send(MAX_MESSAGE)
                try:
                    await self._send(cast(bytes, chunk))  # fresh, never modified: no copy
                except (ConnectionError, OSError, RuntimeError) as exc:
                    raise ConnectionError(f"tunnel connection send failed: {exc}") from None
                if self._blocked:
                    self._retry_blocked()
            if self._blocked:
                self._retry_blocked()
            if self._failed is not None:
                raise ConnectionError(str(self._failed))

    async def _watchdog(self) -> None:
        step = max(0.05, min(self._idle, CLOSE_TIMEOUT) / 4)
        while True:
            await asyncio.sleep(step)
            now = time.monotonic()
            for sid, leg in list(self._legs.items()):
                if leg.closing_since and now - leg.closing_since > CLOSE_TIMEOUT:
                    self.session.reset(sid, ErrorCode.TIMEOUT, "close not confirmed")
                    self._drop(leg)
                elif leg.ready and now - leg.last > self._idle:
                    self.counters.idle_closed += 1
                    log.info("%s: tunnel %d idle for %.0f s, closed", self.name, sid, self._idle)
                    self.session.reset(sid, ErrorCode.TIMEOUT, "idle")
                    self._drop(leg)
                    leg.abort()
                else:
                    continue
                self._dirty.set()

    async def _pinger(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(self._ping_every)
            n += 1
            with contextlib.suppress(AgentError):
                self.session.ping(n.to_bytes(8, "big"))
            self._dirty.set()
