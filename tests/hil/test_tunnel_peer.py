"""The tunnel adapter (`agent.net.tunnel.MuxPeer`) with real TCP sockets on loopback.

Two peers are joined back to back (each one's output is the other's input, through a bounded
in-memory pipe that behaves like a WebSocket: ordered messages, awaitable send). The streampoint
side accepts client sockets on a loopback port and tunnels them; the agent side connects to a
target server through a resolver, as the agent does with its tunnel policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import random
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from agent.net.tunnel import MuxPeer, Refused
from agent.proto import mux
from agent.proto.mux_frames import (
    HEADER,
    VERSION,
    DataFrame,
    ErrorCode,
    FrameType,
    OpenFrame,
    Target,
    TargetKind,
    WindowUpdateFrame,
    encode,
)


class Pipe:
    """Carries one side's messages to the other's `feed`, at most `depth` in flight."""

    def __init__(self, depth: int = 8) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(depth)
        self.sent = 0

    async def send(self, data: bytes) -> None:
        self.sent += len(data)
        await self.queue.put(data)

    async def pump(self, into: MuxPeer) -> None:
        while True:
            into.feed(await self.queue.get())


@dataclass
class Pair:
    sp: MuxPeer  # streampoint side: opens tunnels for client sockets
    agent: MuxPeer  # agent side: connects to the target
    port: int  # clients connect here
    target: Target
    tasks: list[asyncio.Task[None]]

    async def client(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def pair(
    handler: Handler = _echo,
    *,
    idle: float = 30.0,
    resolver: Callable[[Target], tuple[str, int]] | None = None,
    config: mux.MuxConfig | None = None,
) -> AsyncIterator[Pair]:
    target_server = await asyncio.start_server(handler, "127.0.0.1", 0)
    tport = int(target_server.sockets[0].getsockname()[1])
    target = Target("127.0.0.1", tport, TargetKind.RTSP, "cam")

    def allow(t: Target) -> tuple[str, int]:
        if (t.host, t.port) != ("127.0.0.1", tport):
            raise Refused(ErrorCode.NOT_ALLOWED, "not a camera of this agent")
        return t.host, t.port

    to_agent, to_sp = Pipe(), Pipe()
    sp = MuxPeer(mux.Role.STREAMPOINT, to_agent.send, name="sp", idle_timeout=idle, config=config)
    agent = MuxPeer(
        mux.Role.AGENT,
        to_sp.send,
        resolver=resolver or allow,
        name="agent",
        idle_timeout=idle,
        config=config,
    )
    opens: set[asyncio.Task[int]] = set()

    class Accepted(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            transport.pause_reading()
            task = asyncio.create_task(sp.open(target, transport))
            opens.add(task)
            task.add_done_callback(opens.discard)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Accepted, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    tasks = [
        asyncio.create_task(sp.run()),
        asyncio.create_task(agent.run()),
        asyncio.create_task(to_agent.pump(agent)),
        asyncio.create_task(to_sp.pump(sp)),
    ]
    try:
        yield Pair(sp, agent, port, target, tasks)
    finally:
        for t in [*tasks, *opens]:
            t.cancel()
        await asyncio.gather(*tasks, *opens, return_exceptions=True)
        server.close()
        target_server.close()
        await server.wait_closed()
        await target_server.wait_closed()


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_bytes_cross_both_ways_intact() -> None:
    async with pair() as p:
        reader, writer = await p.client()
        payload = os.urandom(8 * 1024 * 1024 + 123)

        async def send() -> None:
            writer.write(payload)
            await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        got = bytearray()
        while chunk := await reader.read(1 << 20):
            got += chunk
        await sender
        writer.close()
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        await _until(lambda: p.agent.tunnel_count == 0 and p.sp.tunnel_count == 0)
        assert p.agent.session.stream_count == 0
        assert p.agent.counters.bytes_in == len(payload) == p.agent.counters.bytes_out


async def test_half_close_lets_the_answer_through() -> None:
    async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()  # until EOF
        writer.write(b"got " + str(len(request)).encode())
        await writer.drain()
        writer.close()

    async with pair(answer_after_eof) as p:
        reader, writer = await p.client()
        writer.write(b"x" * 5000)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b"got 5000"
        writer.close()
        await _until(lambda: p.agent.tunnel_count == 0)


async def test_target_outside_the_policy_is_refused() -> None:
    async with pair() as p:
        with pytest.raises(Refused) as err:
            await p.sp.open(Target("127.0.0.9", 22, TargetKind.RTSP), await _socket_transport())
        assert err.value.code == ErrorCode.NOT_ALLOWED
        assert "not a camera" in str(err.value)
        assert p.agent.counters.refused == 1
        assert p.agent.tunnel_count == 0


async def _socket_transport() -> asyncio.Transport:
    """An accepted-side transport of a fresh loopback connection (what a listener hands over)."""
    accepted: asyncio.Future[asyncio.Transport] = asyncio.get_running_loop().create_future()

    class Grab(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            accepted.set_result(transport)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Grab, "127.0.0.1", 0)
    sport = int(server.sockets[0].getsockname()[1])
    _, writer = await asyncio.open_connection("127.0.0.1", sport)
    transport = await accepted
    server.close()
    writer.close()
    return transport


async def test_unreachable_target_is_refused_with_connect_failed() -> None:
    free = await asyncio.start_server(_echo, "127.0.0.1", 0)
    dead_port = int(free.sockets[0].getsockname()[1])
    free.close()
    await free.wait_closed()
    async with pair(resolver=lambda t: ("127.0.0.1", dead_port)) as p:
        with pytest.raises(Refused) as err:
            await p.sp.open(p.target, await _socket_transport())
        assert err.value.code == ErrorCode.CONNECT_FAILED
        assert p.agent.counters.failed == 1


async def test_silent_camera_is_closed_after_the_idle_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async with pair(silent, idle=0.5) as p:
        reader, writer = await p.client()
        writer.write(b"DESCRIBE rtsp://cam/ RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, not hanging
        writer.close()
        await _until(lambda: p.agent.tunnel_count == 0)
        assert p.agent.counters.idle_closed == 1


async def test_slow_reader_stalls_only_its_own_tunnel() -> None:
    stuck: list[asyncio.StreamWriter] = []

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.read(1)
        if first == b"s":  # the slow client's target: sends as fast as it can
            stuck.append(writer)
            chunk = b"v" * 65536
            with contextlib.suppress(ConnectionError):
                while True:
                    writer.write(chunk)
                    await writer.drain()
        else:
            await _echo(reader, writer)

    cfg = mux.MuxConfig(initial_window=128 * 1024)
    async with pair(firehose, config=cfg) as p:
        _slow_reader, slow_writer = await p.client()
        slow_writer.write(b"s")  # and then never read
        await slow_writer.drain()
        await asyncio.sleep(1.0)
        fast_reader, fast_writer = await p.client()
        fast_writer.write(b"f" + b"z" * 100_000)
        await fast_writer.drain()
        got = b""
        async with asyncio.timeout(5):
            while len(got) < 100_000:
                got += await fast_reader.read(65536)
        assert got == b"z" * 100_000  # the target took the first byte
        # What the agent holds for the stuck tunnel is bounded by the window, not growing.
        held_before = p.agent.session.bytes_pending
        await asyncio.sleep(0.5)
        assert p.agent.session.bytes_pending <= cfg.max_buffered
        assert p.agent.session.bytes_pending == held_before or held_before < cfg.max_buffered
        info = p.agent.session.info(min(p.agent.session.stream_ids()))
        assert info.send_window == 0  # the stuck one used its window and waits
        assert stuck
        for w in (slow_writer, fast_writer):
            w.close()


async def test_a_thousand_open_close_cycles_leak_nothing() -> None:
    async with pair() as p:
        await _cycle(p, 20)  # warm up: first-use allocations, caches
        tasks0 = len(asyncio.all_tasks())
        fds0 = len(os.listdir("/proc/self/fd"))
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            await _cycle(p, 1000)
            await _until(lambda: p.agent.tunnel_count == 0 and p.sp.tunnel_count == 0)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert len(asyncio.all_tasks()) <= tasks0
        assert len(os.listdir("/proc/self/fd")) <= fds0
        assert p.agent.session.stream_count == 0 and p.sp.session.stream_count == 0
        assert grown < 512 * 1024, f"{grown} bytes kept after 1000 tunnels"
        assert p.agent.counters.opened >= 1020


async def _cycle(p: Pair, n: int) -> None:
    for i in range(n):
        reader, writer = await p.client()
        message = f"ping {i}".encode()
        writer.write(message)
        await writer.drain()
        assert await reader.readexactly(len(message)) == message
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    await _until(lambda: p.agent.tunnel_count == 0 and p.sp.tunnel_count == 0)


def _garbage(rng: random.Random, open_ids: list[int]) -> bytes:
    """One hostile message: random bytes, oversize headers, frames out of window or protocol."""
    kind = rng.randrange(6)
    sid = rng.choice(open_ids) if open_ids else 2
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 200))
    if kind == 1:  # a DATA header claiming far more than allowed
        return HEADER.pack(VERSION, FrameType.DATA, 0, sid, 1 << 30)
    if kind == 2:  # more DATA than the window allows
        return b"".join(encode(DataFrame(sid, b"\0" * 65536)) for _ in range(8))
    if kind == 3:  # an impossible window
        return encode(WindowUpdateFrame(sid, 0x7FFFFFFF)) * 2
    if kind == 4:  # OPEN with the agent's own parity
        return encode(OpenFrame(3, Target("127.0.0.1", 554, TargetKind.RTSP), 1024))
    return HEADER.pack(9, 99, 7, sid, 4) + b"\xff" * 4  # bad version and type


def _agent_bytes() -> int:
    """Traced memory allocated by the agent's own modules, after a full collection."""
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/agent/*")])
    return sum(stat.size for stat in snap.statistics("filename"))


async def test_a_thousand_hostile_frames_never_crash_or_leak(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A violation ends at worst that connection: the peer reports it and stops; nothing raises
    out of `feed`, nothing is kept. Stream-level faults only reset their stream."""
    caplog.set_level(logging.CRITICAL, logger="agent.net.tunnel")  # records would be kept
    rng = random.Random(5)

    async def discard(data: bytes) -> None:
        del data

    async def hostile(frames: int) -> int:
        fed = terminated = 0
        while fed < frames:
            peer = MuxPeer(mux.Role.AGENT, discard, resolver=lambda t: ("127.0.0.1", 9))
            runner = asyncio.create_task(peer.run())
            await asyncio.sleep(0)
            while fed < frames and not peer.session.terminated:
                peer.feed(_garbage(rng, [2, 4, 6]))
                fed += 1
            if peer.session.terminated:
                terminated += 1
                with pytest.raises(ConnectionError):
                    await asyncio.wait_for(runner, 5)
            else:
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
            assert peer.tunnel_count == 0
        return terminated

    tracemalloc.start()
    try:
        await hostile(100)  # warm up
        baseline = _agent_bytes()
        terminated = await hostile(1000)
        grown = _agent_bytes() - baseline
    finally:
        tracemalloc.stop()
    assert terminated > 10
    assert grown < 64 * 1024, f"{grown} bytes kept after 1000 hostile frames"


async def test_a_violation_leaves_other_connections_working() -> None:
    rng = random.Random(7)
    async with pair() as p, pair() as q:
        reader, writer = await q.client()
        for _ in range(50):
            p.agent.feed(_garbage(rng, p.agent.session.stream_ids()))
        assert p.agent.session.terminated
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(p.tasks[1], 5)
        writer.write(b"still here")
        assert await asyncio.wait_for(reader.readexactly(10), 5) == b"still here"
        writer.close()
